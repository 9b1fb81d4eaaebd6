"""Flag verbs: what an operator runs to roll a feature out, and back (``memctl flags``).

The state lives in the memory database (:class:`DatabaseFlagProvider`), so one change
reaches every agent process on every host within its refresh interval (10 s by default).
Every change is audited with who (``actor``), when, old, new and why (``reason``).

The rollout rule lives here, in :func:`set_flag`: raising a rollout moves one stage at a time
(10 -> 50 -> 100 %) and only when the gate of the stage it leaves is GO
(:mod:`memory.ops.gates`), judged on evidence from that stage only, once agents use the
store: on a store no agent has written to yet there is no stage to protect, and any change
goes ahead (the audit reason says so). ``force`` goes past a failing, skipped or
unevaluated gate, and the audit reason says so. Lowering a rollout or switching a flag off
is never held.

A rollback starts with :func:`reset_flags`: every flag back to its built-in default (off),
every allow/deny list and session override gone.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy.engine import Engine

from flags import (
    BUILTIN_FLAGS,
    Decision,
    EnvironmentOverride,
    EvaluationContext,
    FlagEvaluator,
    FlagValueError,
    read_environment,
)
from memory.core.errors import DatabaseUnavailableError, InvalidInputError
from memory.ops.gates import GateOptions, GateReport, RefusedError, check_gate, gate_for_raise
from memory.store.changes import event_key
from memory.store.engine import EngineOrUrl, engine_for
from memory.store.events import audit_key
from memory.store.flags import DatabaseFlagProvider, FlagAuditEntry, StoredFlag, has_traffic

__all__ = [
    "DatabaseFlagProvider",
    "FlagAuditEntry",
    "FlagChange",
    "FlagListing",
    "ListedFlag",
    "StoredFlag",
    "allow_agent",
    "audit_flags",
    "deny_agent",
    "explain_flag",
    "list_flags",
    "override_flag",
    "reset_flags",
    "set_flag",
]


@dataclass(frozen=True, slots=True)
class ListedFlag:
    """A stored flag and the value of its environment variable in the caller's environment,
    which overrides the database there (None: not set)."""

    flag: StoredFlag
    environment: str | None
    # The environment's value, parsed: what it forces (on or off) or the rollout it sets.
    override: EnvironmentOverride | None = None

    @property
    def effective(self) -> tuple[bool, int]:
        """Whether the flag is on and at what rollout for an agent in this environment: the
        environment's value where it is set, else the stored state."""
        if self.override is not None and self.override.forced is not None:
            return self.override.forced, 100 if self.override.forced else 0
        if self.override is not None and self.override.rollout is not None:
            return True, self.override.rollout
        return self.flag.enabled, self.flag.rollout

    @property
    def source(self) -> str:
        """Where the flag's state comes from here: environment, database or default."""
        if self.environment is not None:
            return "environment"
        return "database" if self.flag.stored else "default"


@dataclass(frozen=True, slots=True)
class FlagListing:
    """Every flag, and the environment variables that were set but could not be parsed (they
    are ignored, as agents ignore them)."""

    flags: tuple[ListedFlag, ...]
    warnings: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class FlagChange:
    """A flag after :func:`set_flag`; the gate evaluated to allow it (None: no gate was
    evaluated) and the note added to the audit reason when no gate held the change:
    ``force`` went past one, or the store has no traffic yet."""

    flag: StoredFlag
    gate_report: GateReport | None
    note: str | None


def _writer(engine: Engine) -> DatabaseFlagProvider:
    """The provider a write goes through: with the deployment's keys from the environment,
    which digest and seal its event as the store's own writes are."""
    return DatabaseFlagProvider(
        engine, audit_key=audit_key(os.environ), event_key=event_key(os.environ)
    )


def list_flags(database: EngineOrUrl, environ: Mapping[str, str] | None = None) -> FlagListing:
    """Every flag with its stored state, and its environment variable in ``environ``
    (default ``os.environ``): the state an agent started in that environment would see."""
    with engine_for(database) as engine:
        stored = DatabaseFlagProvider(engine).flags()
    environment, errors = read_environment(
        [flag.name for flag in stored], os.environ if environ is None else environ
    )
    listed = tuple(
        ListedFlag(
            flag,
            environment[flag.name].value if flag.name in environment else None,
            environment.get(flag.name),
        )
        for flag in stored
    )
    return FlagListing(listed, tuple(str(error) for error in errors))


def set_flag(
    database: EngineOrUrl,
    name: str,
    *,
    on: bool | None = None,
    rollout: int | None = None,
    actor: str,
    reason: str | None = None,
    force: bool = False,
    gate: GateOptions | None = None,
) -> FlagChange:
    """Switch ``name`` on or off (``on``), or roll it out to ``rollout`` percent of users
    (sessions for a session-sticky flag); exactly one of the two.

    Raising a rollout needs the gate of the current stage (measured from ``gate``'s source);
    otherwise :class:`RefusedError`, carrying the gate's report when one was evaluated.
    With ``force`` the change goes ahead and the audit reason records which gate was passed
    over and why.
    """
    if (on is None) == (rollout is None):
        raise RefusedError("give exactly one of --on, --off and --rollout N")
    if on is not None and not isinstance(on, bool):
        raise InvalidInputError(f"on: must be True or False, not {on!r}")
    with engine_for(database) as engine:
        provider = _writer(engine)
        stored = next((flag for flag in provider.flags() if flag.name == name), None)
        wanted = rollout if rollout is not None else (100 if on else 0)
        note: str | None = None
        report: GateReport | None = None
        # An unknown flag or a bad percentage: provider.set_flag names the problem.
        if stored is not None and type(wanted) is int and 0 <= wanted <= 100:
            current = stored.rollout if stored.enabled else 0
            note, report = _gate_rollout(
                engine, name, current, wanted, force=force, options=gate or GateOptions()
            )
        flag = provider.set_flag(
            name,
            on=on,
            rollout=rollout,
            actor=actor,
            reason="; ".join(part for part in (reason, note) if part) or None,
        )
    return FlagChange(flag, report, note)


# The audit note of a rollout raised on a store that no agent has written to yet.
NO_TRAFFIC_NOTE = "no traffic yet: no stage to protect"


def _gate_rollout(
    engine: Engine,
    flag: str,
    current: int,
    wanted: int,
    *,
    force: bool,
    options: GateOptions,
) -> tuple[str | None, GateReport | None]:
    """The audit note for raising ``flag`` from ``current`` to ``wanted`` percent (None: the
    gate allowed it) and the gate's report, if one was evaluated; :class:`RefusedError`
    when the rollout rule says no and ``force`` is not given."""
    try:
        gate = gate_for_raise(current, wanted)
    except InvalidInputError as error:
        if force:
            return f"forced: {error}", None
        if not has_traffic(engine):
            return NO_TRAFFIC_NOTE, None
        raise RefusedError(
            f"{error}; the store has traffic, so each stage must pass its gate "
            "(--force to override; it is audited)"
        ) from error
    if gate is None:
        return None, None
    if not has_traffic(engine):
        return NO_TRAFFIC_NOTE, None
    if not options.given:
        if force:
            return f"forced past gate {gate} without evaluating it", None
        raise RefusedError(
            f"{flag}: raising the rollout {current}% -> {wanted}% needs gate {gate}; "
            "give --prometheus URL or --snapshot FILE to evaluate it (or --force)"
        )
    report = check_gate(engine, gate, options, flag=flag)
    if report.go:
        return None, report
    failed = ", ".join(
        result.criterion + ("" if result.checked else " (not checked)")
        for result in report.results
        if not result.passed
    )
    if force:
        return f"forced past gate {gate} (NO-GO: {failed})", report
    raise RefusedError(
        f"{flag}: gate {gate} is NO-GO ({failed}); the rollout stays at {current}% "
        "(--force to override; it is audited)",
        report,
    )


def override_flag(
    database: EngineOrUrl,
    name: str,
    *,
    session: str,
    on: bool | None = None,
    clear: bool = False,
    ttl: timedelta | None = None,
    actor: str,
    reason: str | None = None,
) -> StoredFlag:
    """Force ``name`` on or off (``on``) for one session, until ``ttl`` passes (None: until
    cleared), or ``clear`` the session's override; exactly one of the two."""
    if (on is not None) == clear:
        raise RefusedError("give exactly one of --on, --off and --clear")
    with engine_for(database) as engine:
        return _writer(engine).override(
            name, session=session, on=on, ttl=ttl, actor=actor, reason=reason
        )


def allow_agent(
    database: EngineOrUrl,
    name: str,
    agent: str,
    *,
    remove: bool = False,
    actor: str,
    reason: str | None = None,
) -> StoredFlag:
    """Always turn ``name`` on for ``agent`` (the deny list still wins), or ``remove`` the
    agent from the allow list."""
    with engine_for(database) as engine:
        return _writer(engine).set_agent(
            name, agent, kind="allow", present=not remove, actor=actor, reason=reason
        )


def deny_agent(
    database: EngineOrUrl,
    name: str,
    agent: str,
    *,
    remove: bool = False,
    actor: str,
    reason: str | None = None,
) -> StoredFlag:
    """Always turn ``name`` off for ``agent``, whatever else says on, or ``remove`` the agent
    from the deny list."""
    with engine_for(database) as engine:
        return _writer(engine).set_agent(
            name, agent, kind="deny", present=not remove, actor=actor, reason=reason
        )


def audit_flags(
    database: EngineOrUrl, name: str | None = None, *, limit: int = 50
) -> list[FlagAuditEntry]:
    """The newest flag changes (of ``name`` only, when given), newest first."""
    with engine_for(database) as engine:
        return DatabaseFlagProvider(engine).audit(name, limit=limit)


def reset_flags(database: EngineOrUrl, *, actor: str, reason: str | None = None) -> list[str]:
    """Every flag back to its built-in default (off), lists and overrides removed: the first
    step of every rollback. Returns the flags that changed."""
    with engine_for(database) as engine:
        return _writer(engine).reset(actor=actor, reason=reason)


def explain_flag(
    database: EngineOrUrl,
    name: str,
    *,
    user: str | None = None,
    session: str | None = None,
    agent: str | None = None,
) -> Decision:
    """Which rule decides ``name`` for this user, session and agent, as an agent in this
    process's environment would evaluate it now."""
    if name not in BUILTIN_FLAGS:
        raise InvalidInputError(
            f"unknown flag {name!r}; known flags: {', '.join(sorted(BUILTIN_FLAGS))}"
        )
    with engine_for(database) as engine:
        provider = DatabaseFlagProvider(engine)
        provider.require_schema()
        try:
            evaluator = FlagEvaluator(provider)
        except FlagValueError as error:  # the environment holds a value that is no setting
            raise InvalidInputError(str(error)) from error
        if evaluator.stale:
            raise DatabaseUnavailableError("cannot read the flag state from the database")
        return evaluator.explain(
            name, EvaluationContext(user_id=user, session_id=session, agent_id=agent)
        )
