"""Flag definitions: immutable, validated on construction.

A definition only describes a flag; deciding whether it is on for a context is the job of
:class:`flags.FlagSet`. Every check here raises :class:`FlagDefinitionError` with the flag,
the field and the limit in the message, so a bad row or a typo in a test fails loudly at the
point where the flag is defined rather than as a silently-off feature later.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

from flags._exceptions import FlagDefinitionError, FlagDependencyError

__all__ = [
    "FlagDefinition",
    "SessionOverride",
    "Stickiness",
    "check_dependencies",
]

MAX_NAME_LENGTH = 100
MAX_DESCRIPTION_LENGTH = 1000
# Letters, digits and ``_ . -``: names travel as environment variables, database keys and
# Unleash toggle names, and this is the set that all three accept without quoting.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]*")


class Stickiness(StrEnum):
    """The identifier a percentage rollout hashes; any other string names a context attribute.

    ``DEFAULT`` uses the user id when the context has one and the session id otherwise, as
    Unleash's ``default`` stickiness does (without Unleash's random fallback: a context with
    neither id is outside every rollout below 100 %).
    """

    DEFAULT = "default"
    USER_ID = "userId"
    SESSION_ID = "sessionId"


def _check_name(flag: str | None, field_name: str, value: object) -> str:
    if not isinstance(value, str):
        raise FlagDefinitionError(flag, field_name, f"must be a string, got {type(value).__name__}")
    if not 1 <= len(value) <= MAX_NAME_LENGTH:
        raise FlagDefinitionError(
            flag, field_name, f"must be 1..{MAX_NAME_LENGTH} characters long, got {len(value)}"
        )
    if not _NAME.fullmatch(value):
        raise FlagDefinitionError(
            flag,
            field_name,
            f"must start with a letter or digit and contain only letters, digits, '_', '.' "
            f"and '-', got {value!r}",
        )
    return value


def _check_text(flag: str | None, field_name: str, value: object, limit: int) -> str:
    if not isinstance(value, str):
        raise FlagDefinitionError(flag, field_name, f"must be a string, got {type(value).__name__}")
    if not value or value != value.strip():
        raise FlagDefinitionError(
            flag, field_name, f"must be non-empty without surrounding spaces, got {value!r}"
        )
    if len(value) > limit:
        raise FlagDefinitionError(
            flag, field_name, f"must be at most {limit} characters long, got {len(value)}"
        )
    return value


def _check_bool(flag: str | None, field_name: str, value: object) -> bool:
    # bool is checked by type: 0/1 or "false" slipping in from a loosely typed source would
    # otherwise turn into the opposite of what the operator meant.
    if not isinstance(value, bool):
        raise FlagDefinitionError(
            flag, field_name, f"must be True or False, got {value!r} ({type(value).__name__})"
        )
    return value


def _check_agents(flag: str, field_name: str, value: object) -> frozenset[str]:
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        # A bare string is iterable too, and would silently become a set of its letters.
        raise FlagDefinitionError(
            flag, field_name, f"must be a collection of agent ids, got {type(value).__name__}"
        )
    return frozenset(_check_text(flag, f"{field_name} entry", a, MAX_NAME_LENGTH) for a in value)


@dataclass(frozen=True, slots=True)
class SessionOverride:
    """Force a flag on or off for one session, optionally until ``expires_at``.

    ``expires_at`` must be timezone-aware; it is stored in UTC. An override whose expiry has
    passed is ignored by evaluation (the remaining rules decide), so a forgotten override
    cannot pin a session forever.
    """

    session_id: str
    enabled: bool
    expires_at: datetime | None = None

    def __post_init__(self) -> None:
        _check_text(None, "session override session_id", self.session_id, MAX_NAME_LENGTH * 4)
        _check_bool(None, "session override enabled", self.enabled)
        expires_at = self.expires_at
        if expires_at is not None:
            if not isinstance(expires_at, datetime):
                raise FlagDefinitionError(
                    None,
                    "session override expires_at",
                    f"must be a datetime or None, got {type(expires_at).__name__}",
                )
            if expires_at.tzinfo is None or expires_at.utcoffset() is None:
                raise FlagDefinitionError(
                    None,
                    "session override expires_at",
                    f"must be timezone-aware (UTC), got naive {expires_at.isoformat()}",
                )
            object.__setattr__(self, "expires_at", expires_at.astimezone(UTC))

    def is_active(self, now: datetime) -> bool:
        """Return True while the override applies at ``now`` (an aware datetime)."""
        return self.expires_at is None or now < self.expires_at


@dataclass(frozen=True, slots=True)
class FlagDefinition:
    """What a flag is and who gets it.

    Evaluation applies the rules in this order (see :class:`flags.FlagSet`): deny list,
    parent flag, environment switch, session override, allow list, percentage rollout.

    - ``default``: the value used when no provider has ever supplied this flag (or evaluation
      itself failed); a provider-supplied flag is decided by its rules, not by ``default``.
    - ``rollout``: whole percent 0..100 of stickiness values that are on.
    - ``stickiness``: ``"default"``, ``"userId"``, ``"sessionId"`` or the name of a context
      attribute (see :class:`Stickiness`).
    - ``group_id``: the hashing group; empty means the flag name. Flags sharing a group put
      the same users in the same buckets.
    - ``parent``: a flag that must be on (for the same context) for this one to be on.
    - ``allowed_agents`` / ``denied_agents``: agent ids always on / always off. An agent on
      both lists is denied: the deny list wins over everything.
    - ``session_overrides``: per-session forced values, see :class:`SessionOverride`.

    Collections are stored as ``frozenset`` (agents) and a tuple sorted by session id
    (overrides), so definitions are hashable and compare by value.

    >>> FlagDefinition("USE_X", rollout=25, stickiness="sessionId").group_id
    'USE_X'
    """

    name: str
    description: str = ""
    default: bool = False
    rollout: int = 0
    stickiness: str = Stickiness.DEFAULT.value
    group_id: str = ""
    parent: str | None = None
    allowed_agents: Collection[str] = frozenset()
    denied_agents: Collection[str] = frozenset()
    session_overrides: Collection[SessionOverride] = ()

    def __post_init__(self) -> None:
        name = _check_name(None, "name", self.name)
        if not isinstance(self.description, str):
            raise FlagDefinitionError(
                name, "description", f"must be a string, got {type(self.description).__name__}"
            )
        if len(self.description) > MAX_DESCRIPTION_LENGTH:
            raise FlagDefinitionError(
                name,
                "description",
                f"must be at most {MAX_DESCRIPTION_LENGTH} characters long, "
                f"got {len(self.description)}",
            )
        _check_bool(name, "default", self.default)
        rollout = self.rollout
        if isinstance(rollout, bool) or not isinstance(rollout, int) or not 0 <= rollout <= 100:
            raise FlagDefinitionError(
                name, "rollout", f"must be a whole percentage in 0..100, got {self.rollout!r}"
            )
        _check_text(name, "stickiness", self.stickiness, MAX_NAME_LENGTH)
        group_id = self.group_id or name
        _check_text(name, "group_id", group_id, MAX_NAME_LENGTH * 2)
        if self.parent is not None:
            _check_name(name, "parent", self.parent)
            if self.parent == name:
                raise FlagDependencyError(name, "parent", "names the flag itself: a cycle")
        allowed = _check_agents(name, "allowed_agents", self.allowed_agents)
        denied = _check_agents(name, "denied_agents", self.denied_agents)
        overrides = self.session_overrides
        if isinstance(overrides, str | bytes | SessionOverride) or not isinstance(
            overrides, Iterable
        ):
            raise FlagDefinitionError(
                name,
                "session_overrides",
                f"must be a collection of SessionOverride, got {type(overrides).__name__}",
            )
        by_session: dict[str, SessionOverride] = {}
        for override in overrides:
            if not isinstance(override, SessionOverride):
                raise FlagDefinitionError(
                    name,
                    "session_overrides",
                    f"entries must be SessionOverride, got {type(override).__name__}",
                )
            if override.session_id in by_session:
                raise FlagDefinitionError(
                    name,
                    "session_overrides",
                    f"has two overrides for session {override.session_id!r}; keep one",
                )
            by_session[override.session_id] = override
        set_ = object.__setattr__
        set_(self, "group_id", group_id)
        set_(self, "allowed_agents", allowed)
        set_(self, "denied_agents", denied)
        set_(self, "session_overrides", tuple(by_session[s] for s in sorted(by_session)))

    def override_for(self, session_id: str | None) -> SessionOverride | None:
        """Return the override recorded for ``session_id`` (expired or not), if any."""
        for override in self.session_overrides:
            if override.session_id == session_id:
                return override
        return None


def check_dependencies(definitions: Mapping[str, FlagDefinition]) -> None:
    """Raise :class:`FlagDependencyError` unless every parent exists and parents form no cycle.

    ``definitions`` maps names to definitions; each key must equal its definition's name.
    """
    for key, definition in definitions.items():
        if not isinstance(definition, FlagDefinition):
            raise FlagDefinitionError(
                key, "definition", f"must be a FlagDefinition, got {type(definition).__name__}"
            )
        if key != definition.name:
            raise FlagDefinitionError(
                key, "name", f"is {definition.name!r} but the flag is registered as {key!r}"
            )
        if definition.parent is not None and definition.parent not in definitions:
            raise FlagDependencyError(
                key, "parent", f"names {definition.parent!r}, which is not a defined flag"
            )
    # Walk each parent chain; revisiting a flag already on the current path is a cycle.
    finished: set[str] = set()
    for start in definitions:
        path: list[str] = []
        current: str | None = start
        while current is not None and current not in finished:
            if current in path:
                cycle = " -> ".join([*path[path.index(current) :], current])
                raise FlagDependencyError(current, "parent", f"chain forms a cycle: {cycle}")
            path.append(current)
            current = definitions[current].parent
        finished.update(path)
