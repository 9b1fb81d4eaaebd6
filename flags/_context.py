"""The evaluation context: who is asking."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

__all__ = ["EvaluationContext"]

_NO_ATTRIBUTES: Mapping[str, str] = MappingProxyType({})


def _no_attributes() -> Mapping[str, str]:
    return _NO_ATTRIBUTES


@dataclass(frozen=True, slots=True)
class EvaluationContext:
    """The user, session and agent a flag is evaluated for, plus free attributes.

    Nothing here is validated: a context is built on the hot path of every agent call, and
    evaluation treats a missing or empty id as "not known". ``attributes`` feeds custom
    stickiness (a flag whose stickiness is ``"tenant"`` hashes ``attributes["tenant"]``).

    >>> EvaluationContext(user_id="u-1", session_id="s-9", agent_id="planner").agent_id
    'planner'
    """

    user_id: str | None = None
    session_id: str | None = None
    agent_id: str | None = None
    attributes: Mapping[str, str] = field(default_factory=_no_attributes, hash=False)
