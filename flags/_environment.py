"""Environment variables that switch flags: the layer with the highest precedence.

A variable named like the flag (``USE_ENHANCED_INJECTION=off``) overrides whatever the
provider says, so an operator can turn a feature off on one host with a restart and no
database or Unleash access. Accepted values, case-insensitive and trimmed:

- ``on``, ``true``, ``1``: on for every context, except a deny-listed agent or a context
  whose parent flag is off;
- ``off``, ``false``, ``0``: off for every context (the kill switch: nothing turns it on);
- ``N%`` with whole N in 0..100 in ASCII digits: the rollout becomes N percent; the flag's
  deny list, session overrides and allow list still apply. So ``0%`` keeps allow-listed
  agents on, ``off`` does not;
- empty: as if the variable were unset.

Anything else is a mistake that must not pass silently: :class:`flags.FlagEvaluator` raises
:class:`EnvironmentOverrideError` naming the variable and the value when it is constructed
or refreshed explicitly. A bad value that appears later, during the automatic refresh of a
running evaluator, cannot raise (evaluation never does): it is logged once and ignored, so
the provider's state applies until the value is fixed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from flags._exceptions import EnvironmentOverrideError

__all__ = ["EnvironmentOverride", "parse_environment_override", "read_environment"]

_ON = frozenset({"on", "true", "1"})
_OFF = frozenset({"off", "false", "0"})
# ASCII digits only: \d and int() also take other scripts' digits ("٥٠%" would be 50 %).
_PERCENT = re.compile(r"([0-9]{1,3})\s*%", re.ASCII)


@dataclass(frozen=True, slots=True)
class EnvironmentOverride:
    """A parsed environment setting: exactly one of ``forced`` and ``rollout`` is set."""

    variable: str
    value: str
    forced: bool | None = None
    rollout: int | None = None


def parse_environment_override(variable: str, value: str) -> EnvironmentOverride | None:
    """Parse ``value`` of environment variable ``variable``; None if it is empty.

    Raises :class:`EnvironmentOverrideError` (a ``ValueError``) naming the variable and the
    value when it is neither a switch nor a percentage 0%..100%.

    >>> parse_environment_override("USE_X", " 25% ").rollout
    25
    >>> parse_environment_override("USE_X", "TRUE").forced
    True
    """
    text = value.strip().lower()
    if not text:
        return None
    if text in _ON:
        return EnvironmentOverride(variable, value, forced=True)
    if text in _OFF:
        return EnvironmentOverride(variable, value, forced=False)
    match = _PERCENT.fullmatch(text)
    if match is not None and int(match.group(1)) <= 100:
        return EnvironmentOverride(variable, value, rollout=int(match.group(1)))
    raise EnvironmentOverrideError(variable, value)


def read_environment(
    names: Iterable[str], environ: Mapping[str, str]
) -> tuple[dict[str, EnvironmentOverride], list[EnvironmentOverrideError]]:
    """Parse the variables named after ``names`` in ``environ``.

    Returns the valid overrides by flag name and the errors for invalid ones (sorted by
    variable name), so the caller decides whether a bad value raises or is logged.
    """
    overrides: dict[str, EnvironmentOverride] = {}
    errors: list[EnvironmentOverrideError] = []
    for name in sorted(set(names)):
        raw = environ.get(name)
        if raw is None:
            continue
        try:
            parsed = parse_environment_override(name, raw)
        except EnvironmentOverrideError as exc:
            errors.append(exc)
            continue
        if parsed is not None:
            overrides[name] = parsed
    return overrides, errors
