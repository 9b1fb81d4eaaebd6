"""An OpenFeature provider, so that applications using OpenFeature can read our flags.

:class:`OpenFeatureFlagProvider` answers OpenFeature's boolean resolutions through a
:class:`flags.FlagEvaluator`, so an OpenFeature client sees exactly what the memory layer
sees (the same providers, environment switches, overrides and buckets):

>>> from openfeature import api
>>> from openfeature.evaluation_context import EvaluationContext
>>> api.set_provider(OpenFeatureFlagProvider(FlagEvaluator(environ={})))  # doctest: +SKIP
>>> api.get_client().get_boolean_value(                                   # doctest: +SKIP
...     "USE_ENHANCED_INJECTION", False,
...     EvaluationContext(targeting_key="u-1", attributes={"session_id": "s-9"}))
False

The evaluation context maps as: ``targeting_key`` -> user id, attribute ``session_id`` ->
session id, ``agent_id`` -> agent id; every other string, number or boolean attribute is
kept (as text) for custom stickiness. The resolution reason comes from the rule that
decided (see :class:`flags.Rule`):

- ``DEFAULT``: no provider has supplied the flag; the registry default decided;
- ``DISABLED``: the flag is off for everyone (rollout 0 %, or an environment kill switch);
- ``TARGETING_MATCH``: any other rule (rollout bucket, allow or deny list, session
  override, parent flag, environment switch on, Unleash's engine);
- ``ERROR``: the flag does not exist (``FLAG_NOT_FOUND``), the context is malformed
  (``INVALID_CONTEXT``), evaluation failed (``GENERAL``) or a non-boolean value was asked
  for (``TYPE_MISMATCH``); the caller's default value is returned.

``flag_metadata`` carries ``rule``, ``detail`` (the explanation :meth:`FlagEvaluator.explain`
gives) and ``stale`` (True while the evaluator's provider is failing and the last known
state answers).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import TypeVar

from flags._context import EvaluationContext
from flags._evaluator import FlagEvaluator
from flags._exceptions import FlagValueError, MissingPackageError
from flags._flagset import Rule

try:
    from openfeature.evaluation_context import EvaluationContext as OpenFeatureContext
    from openfeature.exception import ErrorCode
    from openfeature.flag_evaluation import FlagResolutionDetails, FlagValueType, Reason
    from openfeature.provider import AbstractProvider, Metadata
except ImportError as exc:  # an optional extra: say how to install it
    raise MissingPackageError(
        "the OpenFeature flag provider", "openfeature-sdk", "openfeature"
    ) from exc

__all__ = ["OpenFeatureFlagProvider"]

T = TypeVar("T")

# Attributes that fill the evaluation context's own fields rather than free attributes.
_SESSION_ATTRIBUTE = "session_id"
_AGENT_ATTRIBUTE = "agent_id"


class _InvalidContext(Exception):
    """An OpenFeature context attribute cannot be used as an identifier."""


def _identifier(name: str, value: object) -> str | None:
    if value is None or isinstance(value, str):
        return value or None
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise _InvalidContext(f"attribute {name!r} must be a string, got {type(value).__name__}")


def _attribute_text(value: object) -> str | None:
    """Text for a free attribute, as Unleash's context would hold it; None to drop it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    return None  # lists and objects cannot be a stickiness value


def to_flags_context(context: OpenFeatureContext | None) -> EvaluationContext:
    """Map an OpenFeature evaluation context to ours (see the module docstring)."""
    if context is None:
        return EvaluationContext()
    attributes = context.attributes or {}
    free: dict[str, str] = {}
    for name, value in attributes.items():
        if name in (_SESSION_ATTRIBUTE, _AGENT_ATTRIBUTE):
            continue
        text = _attribute_text(value)
        if text is not None:
            free[name] = text
    return EvaluationContext(
        user_id=_identifier("targeting_key", context.targeting_key),
        session_id=_identifier(_SESSION_ATTRIBUTE, attributes.get(_SESSION_ATTRIBUTE)),
        agent_id=_identifier(_AGENT_ATTRIBUTE, attributes.get(_AGENT_ATTRIBUTE)),
        attributes=free,
    )


class OpenFeatureFlagProvider(AbstractProvider):
    """An OpenFeature provider backed by a :class:`flags.FlagEvaluator`.

    Only boolean flags exist; resolving a string, number or object returns the caller's
    default with error ``TYPE_MISMATCH``. Never raises while resolving.
    """

    def __init__(self, evaluator: FlagEvaluator, *, name: str = "tiered-memory flags") -> None:
        if not isinstance(evaluator, FlagEvaluator):
            raise FlagValueError(
                f"evaluator must be a flags.FlagEvaluator, got {type(evaluator).__name__}"
            )
        super().__init__()
        self._evaluator = evaluator
        self._metadata = Metadata(name=name)
        # Effective rollouts by flag, for the flag set they were read from: rebuilt only
        # when a refresh replaces the set, not on every resolution.
        self._rollouts: tuple[object, dict[str, int]] = (None, {})

    @property
    def evaluator(self) -> FlagEvaluator:
        """The evaluator that answers every resolution."""
        return self._evaluator

    def get_metadata(self) -> Metadata:
        """Return the provider's name, as OpenFeature reports it."""
        return self._metadata

    def resolve_boolean_details(
        self,
        flag_key: str,
        default_value: bool,
        evaluation_context: OpenFeatureContext | None = None,
    ) -> FlagResolutionDetails[bool]:
        """Resolve ``flag_key`` for the context; the reason says which kind of rule decided."""
        try:
            context = to_flags_context(evaluation_context)
        except _InvalidContext as exc:
            return _error(default_value, ErrorCode.INVALID_CONTEXT, str(exc))
        decision = self._evaluator.explain(flag_key, context)
        if decision.rule is Rule.UNKNOWN_FLAG:
            return _error(default_value, ErrorCode.FLAG_NOT_FOUND, decision.detail)
        if decision.rule is Rule.ERROR:
            return _error(default_value, ErrorCode.GENERAL, decision.detail)
        if decision.rule is Rule.DEFAULT:
            reason = Reason.DEFAULT
        elif not decision.enabled and self._off_for_everyone(flag_key, decision.rule):
            reason = Reason.DISABLED
        else:
            reason = Reason.TARGETING_MATCH
        return FlagResolutionDetails(
            value=decision.enabled,
            reason=reason,
            variant="on" if decision.enabled else "off",
            flag_metadata={
                "rule": decision.rule.value,
                "detail": decision.detail,
                "stale": self._evaluator.stale,
            },
        )

    def _off_for_everyone(self, flag_key: str, rule: Rule) -> bool:
        if rule is Rule.ENVIRONMENT:
            return True  # an environment switch that decides "off" is the kill switch
        if rule is not Rule.ROLLOUT:
            return False
        flags = self._evaluator.flags
        source, rollouts = self._rollouts
        if source is not flags:
            # The effective rollout (an environment percentage included) is in the export.
            rollouts = {s["name"]: s["rollout"] for s in self._evaluator.export_state()}
            self._rollouts = (flags, rollouts)
        return rollouts.get(flag_key) == 0

    def resolve_string_details(
        self,
        flag_key: str,
        default_value: str,
        evaluation_context: OpenFeatureContext | None = None,
    ) -> FlagResolutionDetails[str]:
        """Flags are boolean: return the default with ``TYPE_MISMATCH``."""
        return _not_boolean(flag_key, default_value)

    def resolve_integer_details(
        self,
        flag_key: str,
        default_value: int,
        evaluation_context: OpenFeatureContext | None = None,
    ) -> FlagResolutionDetails[int]:
        """Flags are boolean: return the default with ``TYPE_MISMATCH``."""
        return _not_boolean(flag_key, default_value)

    def resolve_float_details(
        self,
        flag_key: str,
        default_value: float,
        evaluation_context: OpenFeatureContext | None = None,
    ) -> FlagResolutionDetails[float]:
        """Flags are boolean: return the default with ``TYPE_MISMATCH``."""
        return _not_boolean(flag_key, default_value)

    def resolve_object_details(
        self,
        flag_key: str,
        default_value: Sequence[FlagValueType] | Mapping[str, FlagValueType],
        evaluation_context: OpenFeatureContext | None = None,
    ) -> FlagResolutionDetails[Sequence[FlagValueType] | Mapping[str, FlagValueType]]:
        """Flags are boolean: return the default with ``TYPE_MISMATCH``."""
        return _not_boolean(flag_key, default_value)


def _error(default_value: T, code: ErrorCode, message: str) -> FlagResolutionDetails[T]:
    return FlagResolutionDetails(
        value=default_value, reason=Reason.ERROR, error_code=code, error_message=message
    )


def _not_boolean(flag_key: str, default_value: T) -> FlagResolutionDetails[T]:
    return _error(
        default_value,
        ErrorCode.TYPE_MISMATCH,
        f"flag {flag_key!r} is boolean; ask for it with get_boolean_value",
    )
