"""Feature-flag state in the memory database: the default flag provider, and the operator's
writes with their audit trail.

Every agent process on every host reads the same three tables (revision 0007):

``flag_state``
    One row per flag an operator has touched. A flag without a row is decided by the
    built-in registry (``flags.BUILTIN_FLAGS``: every rollout flag off). The first write to a
    flag copies its definition (description, stickiness, group, parent) from the registry.
    ``enabled`` false is the kill switch: off for everyone, allow list and session overrides
    included (only the host's environment variable can still force it on). ``enabled`` true
    applies the rules of :class:`flags.FlagSet`: deny list, parent, session override, allow
    list, then ``rollout``.
``flag_session_overrides``
    A flag forced on or off for one session, optionally until ``expires_at``.
``flag_audit``
    Append-only: every change, with who, when, the old and the new value and the reason.

With an event key (``$MEMORY_EVENT_KEY``), each write also appends a ``flag.<action>``
event to the event log (revision 0012 on) that carries the flag's rows as the write left
them (its state, its session overrides, the audit rows it added), sealed under the
operator's data key (``memory.store.changes.OPERATOR``), so that a replay rebuilds the
flags as well as the data.

Each write (:meth:`DatabaseFlagProvider.set_flag`, ``override``, ``set_agent``, ``reset``)
validates everything first, then changes the state and appends its audit row in ONE
transaction (the flag's row is locked, so concurrent operators serialise), and after the
commit logs one structured line on the ``memory.flags`` logger. A bad input raises
``InvalidInputError`` naming the problem and writes nothing.

Agents do not read these tables per evaluation: :class:`flags.FlagEvaluator` caches the
:meth:`~DatabaseFlagProvider.snapshot` and refreshes it every 10 s by default.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine, RowMapping

from flags import BUILTIN_FLAGS, FlagDefinition, FlagEvaluator, FlagValueError, SessionOverride
from memory.core.errors import InvalidInputError, SchemaError
from memory.core.inputs import canonical_json, checked_count
from memory.core.types import ID_LENGTH
from memory.store.changes import EVENT_KEY_INFO, OPERATOR, delete, deployment_key, upsert
from memory.store.db import Database
from memory.store.events import AUDIT_KEY_INFO, append_event
from memory.store.schema import (
    CHANGES_REVISION,
    FLAGS_REVISION,
    current_revision,
    database_revision,
    revision_at_least,
)
from memory.store.tables import Base, utcnow

__all__ = [
    "DatabaseFlagProvider",
    "FlagAuditEntry",
    "StoredFlag",
    "has_traffic",
    "start_new_store",
]

logger = logging.getLogger("memory.flags")

MAX_REASON_CHARS = 1_000
MAX_OVERRIDE_TTL = timedelta(days=365)
AuditAction = Literal["set", "override", "allow", "deny", "reset"]
AgentList = Literal["allow", "deny"]

flag_state = Base.metadata.tables["flag_state"]
flag_overrides = Base.metadata.tables["flag_session_overrides"]
flag_audit = Base.metadata.tables["flag_audit"]


@dataclass(frozen=True, slots=True)
class StoredFlag:
    """A flag as the database holds it (``stored`` false: no row, the registry decides).

    ``overrides`` lists the unexpired session overrides, by session id.
    """

    name: str
    description: str
    default_enabled: bool
    enabled: bool
    rollout: int
    stickiness: str
    group_id: str
    parent: str | None
    allowed_agents: tuple[str, ...]
    denied_agents: tuple[str, ...]
    overrides: tuple[SessionOverride, ...]
    stored: bool
    updated_at: datetime | None
    updated_by: str | None

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data (``memctl flags list --json``)."""
        return {
            "name": self.name,
            "description": self.description,
            "default_enabled": self.default_enabled,
            "enabled": self.enabled,
            "rollout": self.rollout,
            "stickiness": self.stickiness,
            "group_id": self.group_id,
            "parent": self.parent,
            "allowed_agents": list(self.allowed_agents),
            "denied_agents": list(self.denied_agents),
            "overrides": [_override_value(o) for o in self.overrides],
            "stored": self.stored,
            "updated_at": self.updated_at.isoformat() if self.updated_at else None,
            "updated_by": self.updated_by,
        }


@dataclass(frozen=True, slots=True)
class FlagAuditEntry:
    """One row of the flag audit: who changed which flag when, from what to what, and why."""

    id: int
    at: datetime
    actor: str
    flag: str
    action: str
    old: Any
    new: Any
    reason: str | None

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data (``memctl flags audit --json``)."""
        return {
            "id": self.id,
            "at": self.at.isoformat(),
            "actor": self.actor,
            "flag": self.flag,
            "action": self.action,
            "old": self.old,
            "new": self.new,
            "reason": self.reason,
        }


def _override_value(override: SessionOverride) -> dict[str, Any]:
    return {
        "session_id": override.session_id,
        "enabled": override.enabled,
        "expires_at": override.expires_at.isoformat() if override.expires_at else None,
    }


def _agents(text: str) -> tuple[str, ...]:
    return tuple(json.loads(text))


def _switch(row: RowMapping) -> dict[str, Any]:
    return {"enabled": row["enabled"], "rollout": row["rollout"]}


class DatabaseFlagProvider:
    """Flag state in the memory database: a :class:`flags.FlagProvider` plus operator writes.

    ``registry`` names the flags that exist and supplies their definitions and defaults
    (``flags.BUILTIN_FLAGS`` unless told otherwise); writes to any other name are refused.

    >>> provider = DatabaseFlagProvider(memory.engine)  # doctest: +SKIP
    >>> provider.set_flag("USE_ENHANCED_INJECTION", rollout=10, actor="ops", reason="phase 1")
    """

    def __init__(
        self,
        engine: Engine,
        registry: Mapping[str, FlagDefinition] = BUILTIN_FLAGS,
        *,
        audit_key: bytes | None = None,
        event_key: bytes | None = None,
    ) -> None:
        # The deployment's keys digest and seal the events of the writes (module docstring).
        self._db = Database(engine, audit_key, event_key)
        self._registry = dict(registry)

    # -- reading ------------------------------------------------------------------------------

    def snapshot(self) -> Mapping[str, FlagDefinition]:
        """Every stored flag as a definition (the :class:`flags.FlagProvider` interface).

        Raises when the tables are missing or unreadable; the evaluator then keeps its last
        known state.
        """
        now = utcnow()
        definitions = {}
        for stored in self._db.read(lambda connection: self._read(connection, now)):
            if not stored.stored:
                continue
            # The kill switch: nothing but the environment turns a disabled flag on.
            live = stored.enabled
            definitions[stored.name] = FlagDefinition(
                name=stored.name,
                description=stored.description,
                default=stored.default_enabled,
                rollout=stored.rollout if live else 0,
                stickiness=stored.stickiness,
                group_id=stored.group_id,
                parent=stored.parent,
                allowed_agents=stored.allowed_agents if live else (),
                denied_agents=stored.denied_agents,
                session_overrides=stored.overrides if live else (),
            )
        return definitions

    def flags(self) -> list[StoredFlag]:
        """Every registry flag and every stored flag, by name, with its unexpired overrides."""
        self.require_schema()
        now = utcnow()
        return self._db.read(lambda connection: self._read(connection, now))

    def audit(self, flag: str | None = None, *, limit: int = 100) -> list[FlagAuditEntry]:
        """The newest ``limit`` audit rows (of ``flag`` only, when given), newest first."""
        checked_count("limit", limit, 10_000)
        if flag is not None:
            self._known(flag)
        self.require_schema()
        statement = sa.select(flag_audit).order_by(flag_audit.c.id.desc()).limit(limit)
        if flag is not None:
            statement = statement.where(flag_audit.c.flag_name == flag)

        return self._db.read(
            lambda connection: [
                _audit_entry(row) for row in connection.execute(statement).mappings()
            ]
        )

    def changes_since(
        self, since: datetime, actions: Sequence[str], *, flag: str | None = None
    ) -> list[FlagAuditEntry]:
        """The audit rows of ``actions`` (``set``, ``reset``, ...) at or after ``since`` (of
        ``flag`` only, when given), oldest first: what the rollout gates read to find
        rollbacks and when a flag's current stage began."""
        if flag is not None:
            self._known(flag)
        self.require_schema()
        statement = (
            sa.select(flag_audit)
            .where(flag_audit.c.at >= since, flag_audit.c.action.in_(tuple(actions)))
            .order_by(flag_audit.c.id)
        )
        if flag is not None:
            statement = statement.where(flag_audit.c.flag_name == flag)
        return self._db.read(
            lambda connection: [
                _audit_entry(row) for row in connection.execute(statement).mappings()
            ]
        )

    def _read(self, connection: Connection, now: datetime) -> list[StoredFlag]:
        rows = {row["name"]: row for row in connection.execute(sa.select(flag_state)).mappings()}
        overrides: dict[str, list[SessionOverride]] = {}
        live = sa.or_(flag_overrides.c.expires_at.is_(None), flag_overrides.c.expires_at > now)
        statement = sa.select(flag_overrides).where(live).order_by(flag_overrides.c.session_id)
        for row in connection.execute(statement).mappings():
            overrides.setdefault(row["flag_name"], []).append(
                SessionOverride(row["session_id"], row["enabled"], row["expires_at"])
            )
        flags = []
        for name in sorted({*self._registry, *rows}):
            if name not in rows:
                flags.append(self._unstored(self._registry[name]))
                continue
            row = rows[name]
            flags.append(
                StoredFlag(
                    name=name,
                    description=row["description"],
                    default_enabled=row["default_enabled"],
                    enabled=row["enabled"],
                    rollout=row["rollout"],
                    stickiness=row["stickiness"],
                    group_id=row["group_id"],
                    parent=row["parent"],
                    allowed_agents=_agents(row["allowed_agents_json"]),
                    denied_agents=_agents(row["denied_agents_json"]),
                    overrides=tuple(overrides.get(name, ())),
                    stored=True,
                    updated_at=row["updated_at"],
                    updated_by=row["updated_by"],
                )
            )
        return flags

    @staticmethod
    def _unstored(definition: FlagDefinition) -> StoredFlag:
        # Decided by its default, which is what "on" or "off" means for it.
        return StoredFlag(
            name=definition.name,
            description=definition.description,
            default_enabled=definition.default,
            enabled=definition.default,
            rollout=100 if definition.default else 0,
            stickiness=definition.stickiness,
            group_id=definition.group_id,
            parent=definition.parent,
            allowed_agents=tuple(sorted(definition.allowed_agents)),
            denied_agents=tuple(sorted(definition.denied_agents)),
            overrides=(),
            stored=False,
            updated_at=None,
            updated_by=None,
        )

    # -- writing ------------------------------------------------------------------------------

    def set_flag(
        self,
        name: str,
        *,
        on: bool | None = None,
        rollout: int | None = None,
        actor: str,
        reason: str | None = None,
    ) -> StoredFlag:
        """Switch a flag: exactly one of ``on=True`` (everyone, rollout 100), ``on=False``
        (the kill switch) or ``rollout=N`` (on for N % of stickiness values, 0..100).

        This is the one write path of every switch and rollout change; ``memctl flags set``
        checks the rollout gates (``memory.ops.set_flag``) before it calls it.
        """
        if (on is None) == (rollout is None):
            raise InvalidInputError("give exactly one of on (True or False) and rollout")
        if on is not None and not isinstance(on, bool):
            raise InvalidInputError(f"on: must be True or False, not {on!r}")
        if rollout is not None and (
            isinstance(rollout, bool) or not isinstance(rollout, int) or not 0 <= rollout <= 100
        ):
            raise InvalidInputError(
                f"rollout: must be a whole percentage from 0 to 100, not {rollout!r}"
            )
        self._known(name)
        who, why = _actor(actor), _reason(reason)
        wanted = (
            {"enabled": True, "rollout": rollout}
            if rollout is not None
            else ({"enabled": True, "rollout": 100} if on else {"enabled": False, "rollout": 0})
        )

        self.require_schema()
        old = self._db.write(lambda connection: self._set(connection, name, wanted, who, why))
        _log(who, name, "set", old, wanted, why)
        return self._flag(name)

    def _set(
        self, connection: Connection, name: str, wanted: dict[str, Any], who: str, why: str | None
    ) -> dict[str, Any] | None:
        """Switch ``name`` to ``wanted`` and audit it, in the caller's transaction; returns
        the switch before (None: the flag had no stored state, its built-in default decided
        it)."""
        now = utcnow()
        row, created = self._locked(connection, name, who, now)
        old = None if created else _switch(row)
        connection.execute(
            sa.update(flag_state)
            .where(flag_state.c.name == name)
            .values(**wanted, updated_at=now, updated_by=who)
        )
        audit = self._append(connection, now, who, name, "set", old, wanted, why)
        _record(connection, who, "set", [name], [audit])
        return old

    def override(
        self,
        name: str,
        *,
        session: str,
        on: bool | None,
        ttl: timedelta | None = None,
        actor: str,
        reason: str | None = None,
    ) -> StoredFlag:
        """Force ``name`` on (``on=True``) or off for one session, for ``ttl`` (None: until
        cleared); ``on=None`` clears the session's override."""
        if on is not None and not isinstance(on, bool):
            raise InvalidInputError(f"on: must be True, False or None (clear), not {on!r}")
        if (
            not isinstance(session, str)
            or not 1 <= len(session) <= ID_LENGTH
            or session != session.strip()
        ):
            raise InvalidInputError(
                f"session: must be a session id of 1 to {ID_LENGTH} characters without "
                f"surrounding spaces, not {session!r}"
            )
        if ttl is not None and (
            not isinstance(ttl, timedelta) or not timedelta(0) < ttl <= MAX_OVERRIDE_TTL
        ):
            raise InvalidInputError(
                f"ttl: must be a positive duration of at most {MAX_OVERRIDE_TTL.days} days, "
                f"not {ttl!r}"
            )
        if on is None and ttl is not None:
            raise InvalidInputError("ttl: clearing an override takes no ttl")
        self._known(name)
        who, why = _actor(actor), _reason(reason)

        def write(connection: Connection) -> tuple[Any, Any]:
            now = utcnow()
            self._locked(connection, name, who, now)
            key = sa.and_(
                flag_overrides.c.flag_name == name, flag_overrides.c.session_id == session
            )
            before = connection.execute(sa.select(flag_overrides).where(key)).mappings().first()
            old = (
                _override_value(SessionOverride(session, before["enabled"], before["expires_at"]))
                if before is not None
                else None
            )
            connection.execute(sa.delete(flag_overrides).where(key))
            new = None
            if on is not None:
                expires_at = now + ttl if ttl is not None else None
                connection.execute(
                    flag_overrides.insert().values(
                        flag_name=name,
                        session_id=session,
                        enabled=on,
                        expires_at=expires_at,
                        created_at=now,
                        created_by=who,
                    )
                )
                new = _override_value(SessionOverride(session, on, expires_at))
            audit = self._append(connection, now, who, name, "override", old, new, why)
            _record(connection, who, "override", [name], [audit])
            return old, new

        self.require_schema()
        old, new = self._db.write(write)
        _log(who, name, "override", old, new, why)
        return self._flag(name)

    def set_agent(
        self,
        name: str,
        agent: str,
        *,
        kind: AgentList,
        present: bool = True,
        actor: str,
        reason: str | None = None,
    ) -> StoredFlag:
        """Put ``agent`` on the flag's allow or deny list (``kind``), or take it off
        (``present=False``). A change that changes nothing writes nothing."""
        if kind not in ("allow", "deny"):
            raise InvalidInputError(f"kind: must be 'allow' or 'deny', not {kind!r}")
        if not isinstance(present, bool):
            raise InvalidInputError(f"present: must be True or False, not {present!r}")
        self._known(name)
        try:
            # The definition's own rules for agent ids (length, no surrounding spaces).
            FlagDefinition(name, allowed_agents=(agent,))
        except FlagValueError as error:
            raise InvalidInputError(f"agent: {error}") from None
        who, why = _actor(actor), _reason(reason)
        column = (
            flag_state.c.allowed_agents_json if kind == "allow" else flag_state.c.denied_agents_json
        )
        field = f"{'allowed' if kind == 'allow' else 'denied'}_agents"

        def write(connection: Connection) -> tuple[tuple[str, ...], tuple[str, ...]]:
            now = utcnow()
            row, _ = self._locked(connection, name, who, now)
            before = _agents(row[column.name])
            after = tuple(sorted({*before, agent} if present else set(before) - {agent}))
            if after == before:
                return before, after
            connection.execute(
                sa.update(flag_state)
                .where(flag_state.c.name == name)
                .values(
                    {column.name: canonical_json(list(after)), "updated_at": now, "updated_by": who}
                )
            )
            audit = self._append(
                connection, now, who, name, kind, {field: list(before)}, {field: list(after)}, why
            )
            _record(connection, who, kind, [name], [audit])
            return before, after

        self.require_schema()
        before, after = self._db.write(write)
        if before != after:
            _log(who, name, kind, {field: list(before)}, {field: list(after)}, why)
        return self._flag(name)

    def reset(self, *, actor: str, reason: str | None = None) -> list[str]:
        """Put every flag back to its built-in default: state, lists and overrides removed.

        The first step of every rollback. Returns the flags that changed (an audit row each).
        """
        who, why = _actor(actor), _reason(reason)

        def write(connection: Connection) -> dict[str, StoredFlag]:
            now = utcnow()
            # Locks every stored row for the rest of the transaction (SQLite: the whole file).
            statement = sa.select(flag_state.c.name).order_by(flag_state.c.name).with_for_update()
            names = list(connection.execute(statement).scalars())
            before = {flag.name: flag for flag in self._read(connection, now)}
            audits = [
                self._append(connection, now, who, name, "reset", before[name].as_dict(), None, why)
                for name in names
            ]
            connection.execute(sa.delete(flag_overrides))
            connection.execute(sa.delete(flag_state))
            _record(connection, who, "reset", names, audits)
            return {name: before[name] for name in names}

        self.require_schema()
        reset = self._db.write(write)
        for name, flag in reset.items():
            _log(who, name, "reset", flag.as_dict(), None, why)
        return list(reset)

    # -- helpers ------------------------------------------------------------------------------

    def require_schema(self) -> None:
        """Raise ``SchemaError`` unless the database has the flag tables (revision 0007)."""
        revision = database_revision(self._db.engine)
        if not revision_at_least(revision, FLAGS_REVISION):
            raise SchemaError(
                f"feature flags need schema revision {FLAGS_REVISION}; the database is at "
                f"{revision or 'an empty schema'}: run `memctl migrate`"
            )

    def _known(self, name: object) -> str:
        if not isinstance(name, str) or name not in self._registry:
            known = ", ".join(sorted(self._registry))
            raise InvalidInputError(f"flag: unknown flag {name!r}; known flags: {known}")
        return name

    def _flag(self, name: str) -> StoredFlag:
        return next(flag for flag in self.flags() if flag.name == name)

    def _locked(
        self, connection: Connection, name: str, actor: str, now: datetime
    ) -> tuple[RowMapping, bool]:
        """The flag's row, locked until commit, and whether it was just created from the
        registry (the flag had no stored state)."""
        definition = self._registry[name]
        created = connection.execute(
            self._db.insert(flag_state)
            .values(
                name=name,
                description=definition.description,
                default_enabled=definition.default,
                # A new row decides everyone not listed exactly as the default did, as a
                # rollout of 0 or 100 %, so that an allow list or an override on a flag
                # that was never switched takes effect (a disabled row ignores them).
                enabled=True,
                rollout=100 if definition.default else 0,
                stickiness=definition.stickiness,
                group_id=definition.group_id,
                parent=definition.parent,
                allowed_agents_json=canonical_json(sorted(definition.allowed_agents)),
                denied_agents_json=canonical_json(sorted(definition.denied_agents)),
                updated_at=now,
                updated_by=actor,
            )
            .on_conflict_do_nothing(index_elements=["name"])
            .returning(flag_state.c.name)
        ).scalar()
        statement = sa.select(flag_state).where(flag_state.c.name == name).with_for_update()
        return connection.execute(statement).mappings().one(), created is not None

    @staticmethod
    def _append(
        connection: Connection,
        now: datetime,
        actor: str,
        name: str,
        action: AuditAction,
        old: Any,
        new: Any,
        reason: str | None,
    ) -> RowMapping:
        """Append one audit row; returns it as stored."""
        return connection.execute(
            flag_audit.insert()
            .values(
                at=now,
                actor=actor,
                flag_name=name,
                action=action,
                old_value_json=canonical_json(old) if old is not None else None,
                new_value_json=canonical_json(new) if new is not None else None,
                reason=reason,
            )
            .returning(*flag_audit.c)
        ).mappings().one()


def _record(
    connection: Connection,
    actor: str,
    action: AuditAction,
    names: Sequence[str],
    audits: Sequence[RowMapping],
) -> None:
    """Append the ``flag.<action>`` event of a write to ``names``, in its transaction: each
    flag's state row as the write left it (or its deletion), its overrides (all deleted,
    then those there now), and the audit rows the write added. A schema from before the
    changes events carry (revision 0012; flags work from 0007) gets no event, nor does a
    deployment without an event key: there would be no change to carry, and the flag audit
    records the write already."""
    if (
        not names
        or deployment_key(connection) is None
        or not revision_at_least(current_revision(connection), CHANGES_REVISION)
    ):
        return
    change: list[dict[str, Any]] = []
    for name in names:
        state = connection.execute(
            sa.select(flag_state).where(flag_state.c.name == name)
        ).mappings().first()
        # Overrides first on a delete, state first on an upsert: the overrides' foreign key.
        change.append(delete(flag_overrides, {"flag_name": name}))
        if state is None:
            change.append(delete(flag_state, {"name": name}))
            continue
        change.append(upsert(flag_state, state))
        overrides = connection.execute(
            sa.select(flag_overrides)
            .where(flag_overrides.c.flag_name == name)
            .order_by(flag_overrides.c.session_id)
        ).mappings()
        change.extend(upsert(flag_overrides, row) for row in overrides)
    change.extend(upsert(flag_audit, row) for row in audits)
    target = f"flag:{names[0]}" if len(names) == 1 else "flags"
    append_event(
        connection, OPERATOR, actor, f"flag.{action}", target,
        {"flags": list(names), "action": action}, change,
    )


def _log(
    actor: str, name: str, action: AuditAction, old: Any, new: Any, reason: str | None
) -> None:
    """One structured line per change, after its commit: the audit row as JSON, and as
    ``record.flag_change`` for a JSON log formatter."""
    record = {
        "event": "flag_change",
        "flag": name,
        "action": action,
        "actor": actor,
        "old": old,
        "new": new,
        "reason": reason,
    }
    logger.info("flag change %s", canonical_json(record), extra={"flag_change": record})


NEW_STORE_ACTOR = "memory"
NEW_STORE_REASON = (
    "a new store: no Phase 1 data to protect, so the features start on "
    "(memctl flags set NAME --off switches one off)"
)


def start_new_store(
    connection: Connection, audit_key: bytes | None = None, event_key: bytes | None = None
) -> None:
    """Switch every rollout flag on in a database this library has just created, in the
    transaction that created its schema, and audit it (actor ``memory``).

    The flags start off to protect a store that already serves Phase 1 agents during a
    staged rollout; a new store has no such traffic, and a user who creates one expects
    the features its documentation describes. A database upgraded from an older schema
    keeps them off (the rollout runbook raises them stage by stage).

    ``audit_key`` and ``event_key``: the deployment's (``Database``'s), so that the events
    of these first changes are digested and sealed as every later one is (a replay
    rebuilds the flags from them).
    """
    connection.info[AUDIT_KEY_INFO] = audit_key
    connection.info[EVENT_KEY_INFO] = event_key
    provider = DatabaseFlagProvider(connection.engine)
    for name in sorted(BUILTIN_FLAGS):
        provider._set(
            connection, name, {"enabled": True, "rollout": 100}, NEW_STORE_ACTOR, NEW_STORE_REASON
        )


# The tables an agent's traffic writes to: a store with a row in none of them has no users
# yet, so a rollout on it has no stage to protect.
_TRAFFIC_TABLES = ("entities", "memories", "user_preferences", "code_patterns", "session_state")


def has_traffic(engine: Engine) -> bool:
    """Whether any agent has written to this store yet (an entity, a memory, a preference,
    a code pattern or session state)."""
    with engine.connect() as connection:
        for name in _TRAFFIC_TABLES:
            table = Base.metadata.tables[name]
            if connection.execute(sa.select(sa.literal(1)).select_from(table).limit(1)).first():
                return True
    return False


def default_evaluator(engine: Engine, revision: str | None) -> FlagEvaluator:
    """The evaluator ``Memory.open`` gives a store: over the store's own database provider.

    A schema older than revision 0007 has no flag tables: there the built-in defaults (and
    the environment) decide, rather than a provider that fails on every refresh. A store
    is reopened after ``memctl migrate`` anyway (its revision is read at open).
    """
    provider = DatabaseFlagProvider(engine) if revision_at_least(revision, FLAGS_REVISION) else None
    return FlagEvaluator(provider)


def _loads(text: str | None) -> Any:
    return json.loads(text) if text is not None else None


def _actor(actor: object) -> str:
    if not isinstance(actor, str) or not actor.strip() or len(actor) > ID_LENGTH:
        raise InvalidInputError(
            f"actor: must name who makes the change in 1 to {ID_LENGTH} characters, not {actor!r}"
        )
    return actor.strip()


def _reason(reason: object) -> str | None:
    if reason is None:
        return None
    if not isinstance(reason, str) or len(reason) > MAX_REASON_CHARS:
        raise InvalidInputError(
            f"reason: must be text of at most {MAX_REASON_CHARS} characters, not {reason!r}"
        )
    return reason.strip() or None


def _audit_entry(row: RowMapping) -> FlagAuditEntry:
    return FlagAuditEntry(
        id=row["id"],
        at=row["at"],
        actor=row["actor"],
        flag=row["flag_name"],
        action=row["action"],
        old=_loads(row["old_value_json"]),
        new=_loads(row["new_value_json"]),
        reason=row["reason"],
    )
