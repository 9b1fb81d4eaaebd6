"""Pure flag evaluation over an immutable set of definitions.

:class:`FlagSet` holds definitions that have already been validated (cycles rejected) and
answers ``is_enabled`` / ``explain`` in memory without I/O. The rules, first match wins:

1. ``deny_list``: the context's agent is on the flag's deny list -> off;
2. ``parent``: the parent flag is off for the same context -> off;
3. ``environment``: the flag's environment variable says on or off;
4. ``session_override``: an unexpired override for the context's session;
5. ``allow_list``: the context's agent is on the flag's allow list -> on;
6. ``rollout``: on when ``0 < rollout`` and ``normalized_hash(group_id, value) <= rollout``,
   where ``value`` is the stickiness value; with no value, on only at rollout 100;
   ``default`` replaces this rule for a flag that no provider has supplied (only the
   built-in registry knows it): the definition's ``default`` decides.

A provider that returns an :class:`EngineSnapshot` (the Unleash provider) hands the flags
its definitions cannot express to an engine (Unleash's own), which then decides in place of
rule 6 (rule ``engine``); its fast-path flags ask the engine too when the context lacks the
stickiness value, where Unleash's rules (a random bucket, off even at 100 %) differ from a
plain rollout. An environment variable still outranks the engine: ``on``/``off`` decide,
and ``N%`` replaces the toggle's strategies with a rollout of N % by its stickiness.

An unknown flag is off (rule ``unknown_flag``) and logged once; nothing here raises at
evaluation time.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from types import MappingProxyType

from flags._context import EvaluationContext
from flags._definitions import FlagDefinition, SessionOverride, Stickiness, check_dependencies
from flags._engine import EngineSnapshot, FlagEngine
from flags._environment import EnvironmentOverride
from flags._exceptions import FlagDefinitionError
from flags._hashing import GroupHasher
from flags._variant import Variant

__all__ = ["Decision", "FlagSet", "Rule"]

logger = logging.getLogger("flags")


class Rule(StrEnum):
    """The rule that decided an evaluation, as reported by :meth:`FlagSet.explain`."""

    UNKNOWN_FLAG = "unknown_flag"
    DENY_LIST = "deny_list"
    PARENT = "parent"
    ENVIRONMENT = "environment"
    SESSION_OVERRIDE = "session_override"
    ALLOW_LIST = "allow_list"
    ROLLOUT = "rollout"
    DEFAULT = "default"
    ENGINE = "engine"
    ERROR = "error"


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome of one evaluation: the flag, the final value and the rule that decided."""

    flag: str
    enabled: bool
    rule: Rule
    detail: str


def utc_now() -> datetime:
    """Return the current time as an aware UTC datetime."""
    return datetime.now(UTC)


class OnceLog:
    """Log each key once; bounded so that a caller inventing flag names cannot grow it."""

    __slots__ = ("_lock", "_seen", "_limit")

    def __init__(self, limit: int = 1024) -> None:
        self._seen: set[object] = set()
        self._limit = limit
        self._lock = threading.Lock()

    def __call__(
        self, key: object, level: int, message: str, *args: object, exc_info: bool = False
    ) -> None:
        if key in self._seen:
            return
        with self._lock:
            if key in self._seen or len(self._seen) >= self._limit:
                return
            self._seen.add(key)
        logger.log(level, message, *args, exc_info=exc_info)

    def forget(self, key: object) -> None:
        with self._lock:
            self._seen.discard(key)


# Stickiness kinds, resolved once per definition instead of string-compared per call.
_BY_DEFAULT, _BY_USER, _BY_SESSION, _BY_ATTRIBUTE = range(4)
_STICKINESS_KINDS = {
    Stickiness.DEFAULT.value: _BY_DEFAULT,
    Stickiness.USER_ID.value: _BY_USER,
    Stickiness.SESSION_ID.value: _BY_SESSION,
}

# Outcomes are preallocated so that the hot path allocates nothing.
_UNKNOWN = (False, Rule.UNKNOWN_FLAG)
_DENIED = (False, Rule.DENY_LIST)
_PARENT_OFF = (False, Rule.PARENT)
_ENV_ON = (True, Rule.ENVIRONMENT)
_ENV_OFF = (False, Rule.ENVIRONMENT)
_OVERRIDE_ON = (True, Rule.SESSION_OVERRIDE)
_OVERRIDE_OFF = (False, Rule.SESSION_OVERRIDE)
_ALLOWED = (True, Rule.ALLOW_LIST)
_ROLLOUT_ON = (True, Rule.ROLLOUT)
_ROLLOUT_OFF = (False, Rule.ROLLOUT)
_DEFAULT_ON = (True, Rule.DEFAULT)
_DEFAULT_OFF = (False, Rule.DEFAULT)
_ENGINE_ON = (True, Rule.ENGINE)
_ENGINE_OFF = (False, Rule.ENGINE)

_EMPTY_CONTEXT = EvaluationContext()


class _Entry:
    """A definition compiled for evaluation (plain attributes: read on every call)."""

    __slots__ = (
        "definition",
        "from_provider",
        "environment",
        "denied",
        "allowed",
        "parent",
        "forced",
        "overrides",
        "rollout",
        "default_outcome",
        "group_id",
        "hasher",
        "stickiness_kind",
        "stickiness",
        "engine",
        "engine_only",
    )

    def __init__(
        self,
        definition: FlagDefinition,
        from_provider: bool,
        environment: EnvironmentOverride | None,
        engine: FlagEngine | None = None,
        engine_only: str | None = None,
    ) -> None:
        self.definition = definition
        self.from_provider = from_provider
        self.environment = environment
        self.denied = frozenset(definition.denied_agents)
        self.allowed = frozenset(definition.allowed_agents)
        self.parent = definition.parent
        self.forced = environment.forced if environment is not None else None
        self.overrides: dict[str, SessionOverride] = {
            o.session_id: o for o in definition.session_overrides
        }
        rollout: int | None = definition.rollout if from_provider else None
        if environment is not None and environment.rollout is not None:
            rollout = environment.rollout
        # None: no provider state, so the registry default decides instead of a rollout.
        self.rollout = rollout
        self.default_outcome = _DEFAULT_ON if definition.default else _DEFAULT_OFF
        self.group_id = definition.group_id
        self.hasher = GroupHasher(definition.group_id)
        self.stickiness = definition.stickiness
        self.stickiness_kind = _STICKINESS_KINDS.get(definition.stickiness, _BY_ATTRIBUTE)
        # An environment variable replaces what the provider says, engine included.
        self.engine = engine if environment is None else None
        # Why only the engine can decide this flag; None when the fast path can.
        self.engine_only = engine_only if self.engine is not None else None

    def stickiness_value(self, context: EvaluationContext) -> str | None:
        kind = self.stickiness_kind
        if kind == _BY_DEFAULT:
            value = context.user_id or context.session_id
        elif kind == _BY_SESSION:
            value = context.session_id
        elif kind == _BY_USER:
            value = context.user_id
        else:
            raw = context.attributes.get(self.stickiness)
            value = None if raw is None else str(raw)
        return value or None


class FlagSet:
    """An immutable, validated set of flags that evaluates in memory.

    ``definitions`` are the provider's flags and are decided by their rules; ``fallbacks``
    (normally the built-in registry) supply flags no provider knows, which are decided by
    their ``default``. A definition in both wins over the fallback. ``environment`` holds
    the parsed environment layer by flag name. ``utcnow`` is the clock for override expiry.
    ``log_once`` is where unknown flags and failures are logged, once per flag.
    ``definitions`` may be an :class:`EngineSnapshot`, whose engine then decides what its
    definitions cannot (see the module docstring).

    Raises :class:`FlagDependencyError` when a parent is missing or parents form a cycle.

    >>> flags = FlagSet([FlagDefinition("USE_X", rollout=100)])
    >>> flags.is_enabled("USE_X", EvaluationContext(user_id="u-1"))
    True
    """

    __slots__ = ("_entries", "_definitions", "_utcnow", "_log_once", "_engine", "_unnamed")

    def __init__(
        self,
        definitions: Iterable[FlagDefinition] | Mapping[str, FlagDefinition] = (),
        *,
        fallbacks: Iterable[FlagDefinition] | Mapping[str, FlagDefinition] = (),
        environment: Mapping[str, EnvironmentOverride] | None = None,
        utcnow: Callable[[], datetime] = utc_now,
        log_once: OnceLog | None = None,
    ) -> None:
        engine: FlagEngine | None = None
        engine_only: Mapping[str, str] = {}
        if isinstance(definitions, EngineSnapshot):
            engine, engine_only = definitions.engine, definitions.engine_only
        provided = _by_name(definitions)
        defaults = _by_name(fallbacks)
        merged = {**defaults, **provided}
        check_dependencies(merged)
        env = environment or {}
        self._entries: dict[str, _Entry] = {
            name: _Entry(definition, False, env.get(name))
            if name not in provided
            else _Entry(definition, True, env.get(name), engine, engine_only.get(name))
            for name, definition in merged.items()
        }
        self._engine = engine
        # Toggles the engine knows under a name that no definition can carry (UTF-8 names):
        # decided by the engine alone, out of reach of the environment layer.
        self._unnamed: Mapping[str, str] = {
            name: reason for name, reason in engine_only.items() if name not in merged
        }
        self._definitions: Mapping[str, FlagDefinition] = MappingProxyType(merged)
        self._utcnow = utcnow
        # A FlagEvaluator passes its own, so that rebuilding the set on every refresh does
        # not repeat the warnings already logged.
        self._log_once = OnceLog() if log_once is None else log_once

    @property
    def definitions(self) -> Mapping[str, FlagDefinition]:
        """Every flag in the set (provider definitions over fallbacks), by name."""
        return self._definitions

    def __contains__(self, name: object) -> bool:
        return name in self._entries or name in self._unnamed

    def __len__(self) -> int:
        return len(self._entries) + len(self._unnamed)

    def is_enabled(self, flag_name: str, context: EvaluationContext | None = None) -> bool:
        """Return whether ``flag_name`` is on for ``context``; unknown flags are off.

        Never raises: an unknown flag or an evaluation failure is logged once per flag and
        evaluates to off (to the flag's default for a failure on a known flag).
        """
        try:
            enabled, rule = self.decide(flag_name, context or _EMPTY_CONTEXT)
        except Exception:  # evaluation must never take the agent down
            return self._failed(flag_name)
        if rule is Rule.UNKNOWN_FLAG:
            self._log_unknown(flag_name)
        return enabled

    def explain(self, flag_name: str, context: EvaluationContext | None = None) -> Decision:
        """Return the :class:`Decision` for ``flag_name``: the value and the rule that decided.

        >>> FlagSet([FlagDefinition("USE_X")]).explain("USE_X").detail
        'rollout 0%: on for nobody'
        """
        try:
            decision = self._explain(flag_name, context or _EMPTY_CONTEXT)
        except Exception as exc:  # evaluation must never take the agent down
            enabled = self._failed(flag_name)
            return Decision(flag_name, enabled, Rule.ERROR, f"evaluation failed: {exc!r}")
        if decision.rule is Rule.UNKNOWN_FLAG:
            self._log_unknown(flag_name)
        return decision

    def variant(self, flag_name: str, context: EvaluationContext | None = None) -> Variant:
        """Return the :class:`Variant` ``context`` gets for ``flag_name``. Never raises.

        A flag the engine decides answers the engine's variant (Unleash's strategy variants,
        stickiness and overrides); any other flag, or one an environment variable switches,
        has no variants: ``"disabled"``, with ``feature_enabled`` from :meth:`is_enabled`.

        >>> FlagSet([FlagDefinition("USE_X", rollout=100)]).variant("USE_X").feature_enabled
        True
        """
        context = context or _EMPTY_CONTEXT
        try:
            entry = self._entries.get(flag_name)
            engine = entry.engine if entry is not None else self._unnamed_engine(flag_name)
            if engine is not None:
                return engine.variant(flag_name, context)
        except Exception:  # evaluation must never take the agent down
            return Variant.disabled(feature_enabled=self._failed(flag_name))
        return Variant.disabled(feature_enabled=self.is_enabled(flag_name, context))

    def _unnamed_engine(self, flag_name: str) -> FlagEngine | None:
        return self._engine if flag_name in self._unnamed else None

    def decide(self, flag_name: str, context: EvaluationContext) -> tuple[bool, Rule]:
        """Return ``(enabled, rule)``: the evaluation without logging or a detail text.

        This is the hot path; unlike :meth:`is_enabled` it may raise on a malformed context.
        """
        entry = self._entries.get(flag_name)
        if entry is None:
            engine = self._unnamed_engine(flag_name)
            if engine is not None:
                return _ENGINE_ON if engine.is_enabled(flag_name, context) else _ENGINE_OFF
            return _UNKNOWN
        agent = context.agent_id
        if agent is not None and agent in entry.denied:
            return _DENIED
        if entry.parent is not None and not self.decide(entry.parent, context)[0]:
            return _PARENT_OFF
        if entry.forced is not None:
            return _ENV_ON if entry.forced else _ENV_OFF
        if entry.overrides:
            session = context.session_id
            if session is not None:
                override = entry.overrides.get(session)
                if override is not None and override.is_active(self._utcnow()):
                    return _OVERRIDE_ON if override.enabled else _OVERRIDE_OFF
        if agent is not None and agent in entry.allowed:
            return _ALLOWED
        rollout = entry.rollout
        if rollout is None:
            return entry.default_outcome
        engine = entry.engine
        if engine is None:
            if rollout >= 100:
                return _ROLLOUT_ON
        elif entry.engine_only is not None:
            return _ENGINE_ON if engine.is_enabled(flag_name, context) else _ENGINE_OFF
        if rollout <= 0:
            return _ROLLOUT_OFF
        value = entry.stickiness_value(context)
        if value is None:
            if engine is not None:
                return _ENGINE_ON if engine.is_enabled(flag_name, context) else _ENGINE_OFF
            return _ROLLOUT_OFF
        return _ROLLOUT_ON if entry.hasher.bucket(value) <= rollout else _ROLLOUT_OFF

    def _log_unknown(self, flag_name: str) -> None:
        self._log_once(
            ("unknown", flag_name), logging.WARNING, "unknown flag %r evaluated as off", flag_name
        )

    def _failed(self, flag_name: str) -> bool:
        entry = self._entries.get(flag_name)
        fallback = entry.definition.default if entry is not None else False
        self._log_once(
            ("failed", flag_name),
            logging.ERROR,
            "evaluating flag %r failed; using %s",
            flag_name,
            "on" if fallback else "off",
            exc_info=True,
        )
        return fallback

    def _explain(self, flag_name: str, context: EvaluationContext) -> Decision:
        enabled, rule = self.decide(flag_name, context)
        state = "on" if enabled else "off"
        entry = self._entries.get(flag_name)
        if entry is None:
            if rule is Rule.ENGINE:
                reason = self._unnamed[flag_name]
                return Decision(flag_name, enabled, rule, f"the engine decides ({reason}): {state}")
            return Decision(flag_name, False, rule, f"no flag named {flag_name!r} is defined")
        if rule is Rule.DENY_LIST:
            detail = f"agent {context.agent_id!r} is on the deny list"
        elif rule is Rule.PARENT:
            parent = self._explain(entry.parent or "", context)
            detail = f"parent flag {parent.flag!r} is off ({parent.rule}: {parent.detail})"
        elif rule is Rule.ENVIRONMENT and entry.environment is not None:
            env = entry.environment
            detail = f"environment variable {env.variable}={env.value!r} turns the flag {state}"
        elif rule is Rule.SESSION_OVERRIDE:
            override = entry.overrides[context.session_id or ""]
            until = (
                f"until {override.expires_at.isoformat()}"
                if override.expires_at is not None
                else "with no expiry"
            )
            detail = f"session {context.session_id!r} is overridden {state} {until}"
        elif rule is Rule.ALLOW_LIST:
            detail = f"agent {context.agent_id!r} is on the allow list"
        elif rule is Rule.DEFAULT:
            detail = f"no provider has supplied this flag; its default is {state}"
        elif rule is Rule.ENGINE:
            reason = entry.engine_only or (
                f"the context has no {entry.stickiness} value to hash, where Unleash's rules "
                "differ from a plain rollout"
            )
            detail = f"the engine decides ({reason}): {state}"
        else:
            detail = self._explain_rollout(entry, context)
        return Decision(flag_name, enabled, rule, detail)

    def _explain_rollout(self, entry: _Entry, context: EvaluationContext) -> str:
        rollout = entry.rollout
        env = entry.environment
        source = (
            f" (set by environment variable {env.variable}={env.value!r})"
            if env is not None and env.rollout is not None
            else ""
        )
        if rollout is None or rollout <= 0:
            return f"rollout 0%{source}: on for nobody"
        if rollout >= 100:
            return f"rollout 100%{source}: on for everyone"
        value = entry.stickiness_value(context)
        if value is None:
            return (
                f"the context has no {entry.stickiness} value to hash and rollout {rollout}%"
                f"{source} is below 100%"
            )
        slot = entry.hasher.bucket(value)
        relation = "<=" if slot <= rollout else ">"
        return (
            f"{entry.stickiness} {value!r} hashes to bucket {slot} in group "
            f"{entry.group_id!r}: {relation} rollout {rollout}%{source}"
        )


def _by_name(
    definitions: Iterable[FlagDefinition] | Mapping[str, FlagDefinition],
) -> dict[str, FlagDefinition]:
    if isinstance(definitions, Mapping):
        return dict(definitions)  # check_dependencies validates keys and values
    result: dict[str, FlagDefinition] = {}
    for definition in definitions:
        if not isinstance(definition, FlagDefinition):
            raise FlagDefinitionError(
                None, "definition", f"must be a FlagDefinition, got {type(definition).__name__}"
            )
        if definition.name in result:
            raise FlagDefinitionError(
                definition.name, "name", "is defined twice; flag names must be unique"
            )
        result[definition.name] = definition
    return result
