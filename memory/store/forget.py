"""The right to be forgotten: remove every row of one user and leave nothing recoverable.

``forget_user`` runs one write transaction that deletes, for the user:

- memories, with their metadata, embeddings, keyword terms (and so the SQLite FTS5 rows,
  through the triggers of revision 0005, or the PostgreSQL tsvector index entries), the
  grants on them, and the user's rows of the change log;
- preferences, code patterns, session state;
- the Phase 1 entity graph (entities, their observations, relations);
- sharing grants and team memberships;
- the flag overrides of the user's sessions (every session id the user's memories, session
  state or events name);
- the hub service's stored answers to the user's requests (revision 0011), and the user's
  id in API keys' lists of users (a key left with no user is revoked, not widened);

redacts the user's events in ``memory_events`` (``memory.store.events.redact_user``: user id,
target and payload blanked, digests kept, so the chain still verifies), replaces the user's
session ids in the ``flag_audit`` entries of their session overrides by ``[forgotten]``
(the entries stay: who changed which flag when), then appends one ``user.forget`` event
with the counts and no user id.

Nothing recoverable, on SQLite: the transaction runs with ``PRAGMA secure_delete = ON``, so
freed cells and pages are overwritten with zeros instead of left in place; the FTS5 index is
merged (``optimize``), because FTS5 deletes by appending delete markers and the old index
segments would otherwise keep the user's terms; and a ``wal_checkpoint(TRUNCATE)`` after the
commit copies the zeroed pages into the database file and empties the WAL, which still held
the pages as they were before. On PostgreSQL the rows are deleted in the same way, and the
dead tuples stay in the table files until ``VACUUM`` (autovacuum, or ``VACUUM FULL`` to
return the space) rewrites them: see the README.

The caller drops the user from its in-process caches (``Memory.forget_user`` does).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from memory.core.inputs import canonical_json
from memory.store.db import Database
from memory.store.engine import is_memory_sqlite
from memory.store.events import append_event, redact_user
from memory.store.keys import forget_user_in_keys
from memory.store.tables import SQLITE_FTS_TABLE, Base

logger = logging.getLogger("memory.forget")

_tables = Base.metadata.tables
memories = _tables["memories"]
session_state = _tables["session_state"]
flag_overrides = _tables["flag_session_overrides"]
entities = _tables["entities"]
observations = _tables["observations"]
flag_audit = _tables["flag_audit"]
events = _tables["memory_events"]
# What a forgotten session id becomes in the flag audit.
FORGOTTEN = "[forgotten]"
_SESSION_TARGET = "session:"
_CHUNK = 500

# The event a forget appends. It names no user (forget leaves no identifier).
FORGET_OPERATION = "user.forget"


@dataclass(frozen=True, slots=True)
class ForgetReport:
    """What ``forget_user`` removed: rows per table, and how many events it redacted."""

    rows: dict[str, int]
    events_redacted: int
    # flag_audit entries whose session id was replaced (the entries themselves stay).
    audit_entries_redacted: int = 0

    @property
    def total(self) -> int:
        """Rows removed in all tables."""
        return sum(self.rows.values())


def _by_memory(name: str, user: str) -> sa.Delete:
    table = _tables[name]
    owned = sa.select(memories.c.id).where(memories.c.user_id == user)
    return sa.delete(table).where(table.c.memory_id.in_(owned.scalar_subquery()))


def _by_user(name: str, user: str) -> sa.Delete:
    table = _tables[name]
    return sa.delete(table).where(table.c.user_id == user)


def _sessions(connection: Connection, user: str) -> set[str]:
    """Every session id of ``user`` alone: those their memories and session state name, and
    those their events name (a session whose rows retention already removed has events
    left), less those another user names too."""
    found = set(
        connection.execute(
            sa.union(
                sa.select(memories.c.session_id).where(memories.c.user_id == user),
                sa.select(session_state.c.session_id).where(session_state.c.user_id == user),
            )
        ).scalars()
    )
    rows = connection.execute(
        sa.select(events.c.target, events.c.payload_json).where(events.c.user_id == user)
    )
    for target, payload in rows:
        if target.startswith(_SESSION_TARGET):
            found.add(target[len(_SESSION_TARGET):])
        session = json.loads(payload).get("session") if payload else None
        if isinstance(session, str):
            found.add(session)
    found.discard("")
    # A session id another user names too is not this user's to erase (flag overrides and
    # their audit are keyed by session id alone): it identifies neither of them alone.
    for chunk in _chunks(found):
        targets = [_SESSION_TARGET + session for session in chunk]
        found -= set(
            connection.execute(
                sa.union(
                    sa.select(memories.c.session_id).where(
                        memories.c.session_id.in_(chunk), memories.c.user_id != user
                    ),
                    sa.select(session_state.c.session_id).where(
                        session_state.c.session_id.in_(chunk), session_state.c.user_id != user
                    ),
                    sa.select(sa.func.substr(events.c.target, len(_SESSION_TARGET) + 1)).where(
                        events.c.target.in_(targets), events.c.user_id != user
                    ),
                )
            ).scalars()
        )
    return found


def _chunks(values: Iterable[str]) -> Iterable[list[str]]:
    ordered = sorted(values)
    for start in range(0, len(ordered), _CHUNK):
        yield ordered[start : start + _CHUNK]


def _redact_flag_audit(connection: Connection, sessions: set[str]) -> int:
    """Replace ``sessions`` in the flag audit's session-override entries by ``FORGOTTEN``."""
    if not sessions:
        return 0
    rows = connection.execute(
        sa.select(flag_audit.c.id, flag_audit.c.old_value_json, flag_audit.c.new_value_json)
        .where(flag_audit.c.action == "override")
    ).all()
    changed = 0
    for row in rows:
        values = {}
        for column in ("old_value_json", "new_value_json"):
            text = getattr(row, column)
            value = json.loads(text) if text is not None else None
            if isinstance(value, dict) and value.get("session_id") in sessions:
                values[column] = canonical_json({**value, "session_id": FORGOTTEN})
        if values:
            connection.execute(
                sa.update(flag_audit).where(flag_audit.c.id == row.id).values(**values)
            )
            changed += 1
    return changed


def _forget(connection: Connection, user: str, actor: str, sqlite: bool) -> ForgetReport:
    if sqlite:
        connection.exec_driver_sql("PRAGMA secure_delete = ON")
    sessions = _sessions(connection, user)
    owned_entities = sa.select(entities.c.id).where(entities.c.user_id == user)
    # Children before parents, so that every count is the table's own rows and nothing
    # depends on ON DELETE CASCADE being enforced by the connection.
    statements = {
        "sharing_grants": _by_user("sharing_grants", user),
        "sharing_teams": _by_user("sharing_teams", user),
        "memory_metadata": _by_memory("memory_metadata", user),
        "memory_embeddings": _by_memory("memory_embeddings", user),
        "memory_terms": _by_memory("memory_terms", user),
        "memory_changes": _by_user("memory_changes", user),
        "memories": _by_user("memories", user),
        "user_preferences": _by_user("user_preferences", user),
        "code_patterns": _by_user("code_patterns", user),
        "session_state": _by_user("session_state", user),
        "relations": _by_user("relations", user),
        "observations": sa.delete(observations).where(
            observations.c.entity_id.in_(owned_entities.scalar_subquery())
        ),
        "entities": _by_user("entities", user),
    }
    rows = {
        "flag_session_overrides": sum(
            int(
                connection.execute(
                    sa.delete(flag_overrides).where(flag_overrides.c.session_id.in_(chunk))
                ).rowcount
            )
            for chunk in _chunks(sessions)
        )
    }
    rows.update(
        (name, int(connection.execute(statement).rowcount))
        for name, statement in statements.items()
    )
    if sa.inspect(connection).has_table("api_keys"):  # revision 0011 and later
        rows["idempotent_requests"] = int(
            connection.execute(_by_user("idempotent_requests", user)).rowcount
        )
        rows["api_keys"] = forget_user_in_keys(connection, user)
    audited = _redact_flag_audit(connection, sessions)
    redacted = redact_user(connection, user, actor)
    if sqlite:
        # Rebuild the full-text index without the delete markers (see the module docstring).
        connection.exec_driver_sql(
            f"INSERT INTO {SQLITE_FTS_TABLE} ({SQLITE_FTS_TABLE}) VALUES ('optimize')"
        )
    append_event(
        connection,
        "",
        actor,
        FORGET_OPERATION,
        "user",
        {
            "rows": {name: count for name, count in rows.items() if count},
            "events": redacted,
            "flag_audit": audited,
        },
    )
    if sqlite:
        connection.exec_driver_sql("PRAGMA secure_delete = OFF")
    return ForgetReport(rows, redacted, audited)


def forget_user(db: Database, user: str, actor: str) -> ForgetReport:
    """Remove every row of ``user`` (see the module docstring); ``actor`` is logged."""
    sqlite = db.dialect == "sqlite"
    report = db.write(lambda connection: _forget(connection, user, actor, sqlite))
    if sqlite and not is_memory_sqlite(db.engine.url):
        with db.engine.connect() as connection:
            busy, _, _ = connection.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)").one()
        if busy:
            # A reader still holds an old snapshot: the WAL could not be emptied yet. The
            # rows are gone from every query; the next checkpoint clears the file.
            logger.warning("forget: the WAL checkpoint was blocked by a reader; retry later")
    return report
