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
- the sync state of the user's memories, their tombstones, their entries in the change
  log and the conflicts kept about them (revision 0013). Nothing is sent to other nodes:
  each node that holds the user's memories forgets them itself;

deletes the user's data key (``memory.store.changes.shred``: the changes their events carry,
sealed under it, can no longer be opened), redacts the user's events in ``memory_events``
(``memory.store.events.redact_user``: user id, target and payload blanked, digests kept, so
the chain still verifies), replaces the user's
session ids in the ``flag_audit`` entries of their session overrides by ``[forgotten]``
(the entries stay: who changed which flag when), then appends one ``user.forget`` event
with the counts and no user id.

Nothing recoverable, on SQLite: every connection runs with ``PRAGMA secure_delete = ON``
(``memory.store.engine``), so freed cells and pages are overwritten with zeros instead of
left in place, whichever connection deletes; the FTS5 index is merged (``optimize``),
because FTS5 deletes by appending delete markers and the old index segments would otherwise
keep the user's terms; and a ``wal_checkpoint(TRUNCATE)`` after the commit copies the
zeroed pages into the database file and empties the WAL, which still held the pages as
they were before. A reader holding an old snapshot blocks that checkpoint: it waits for up
to ``CHECKPOINT_WAIT_SECONDS``, and if still blocked the report says the bytes are
not cleared yet (``bytes_cleared=False``, the ``memory.forget.incomplete`` metric), and
``BackgroundCheckpoint`` keeps trying. On PostgreSQL the rows are deleted in the same way,
and the dead tuples stay in the table files (and the server's WAL) until ``VACUUM FULL``
rewrites them, which the library does not run: ``bytes_cleared`` is None (see
SECURITY.md).

Concurrent writes. The forget holds the user's lock exclusively from its first statement
(``memory.store.db.lock_user``; every write of a user's rows holds it shared), so a write
of the user is either committed before the forget reads anything, and forgotten whole, or
waits and commits after it, with its events numbered after ``user.forget``. The redaction
then holds the chain's lock and redacts exactly the events it listed.

The caller drops the user from its in-process caches (``Memory.forget_user`` does).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from memory.core.inputs import canonical_json
from memory.store.changes import shred
from memory.store.db import Database, lock_user
from memory.store.engine import BUSY_TIMEOUT_SECONDS, is_memory_sqlite
from memory.store.events import append_event, redact_user
from memory.store.keys import forget_user_in_keys
from memory.store.synclog import forget_user_in_sync, has_sync_tables
from memory.store.tables import SQLITE_FTS_TABLE, Base
from memory.telemetry import instruments as telemetry

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
# How long forget waits for a WAL checkpoint that a reader blocks before reporting the
# bytes as not cleared yet, and how often ``BackgroundCheckpoint`` tries again after that.
CHECKPOINT_WAIT_SECONDS = 5.0
BACKGROUND_RETRY_SECONDS = 1.0


@dataclass(frozen=True, slots=True)
class ForgetReport:
    """What ``forget_user`` removed: rows per table, and how many events it redacted."""

    rows: dict[str, int]
    events_redacted: int
    # flag_audit entries whose session id was replaced (the entries themselves stay).
    audit_entries_redacted: int = 0
    # Whether the user's bytes are gone from the database files too. True: SQLite, zeroed
    # and the WAL emptied (or a database in memory); False: the WAL still holds them, a
    # reader blocked the checkpoint (it is retried in the background); None: PostgreSQL,
    # where dead row versions stay in the files until VACUUM FULL.
    bytes_cleared: bool | None = None

    @property
    def complete(self) -> bool:
        """False while the bytes are known to be still in the files."""
        return self.bytes_cleared is not False

    @property
    def found(self) -> bool:
        """Whether the user had anything to forget: rows or events."""
        return bool(self.total or self.events_redacted or self.audit_entries_redacted)

    def as_dict(self) -> dict[str, Any]:
        """The report as JSON-ready values (``memctl forget --json``)."""
        return {
            "found": self.found,
            "rows_removed": self.total,
            "rows": {name: count for name, count in sorted(self.rows.items()) if count},
            "events_redacted": self.events_redacted,
            "flag_audit_entries_redacted": self.audit_entries_redacted,
            "bytes_cleared": self.bytes_cleared,
            "complete": self.complete,
        }

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
    # Writes of the user that began before this point commit first (and are forgotten);
    # those that begin later wait for the commit (and come after it). See ``lock_user``.
    lock_user(connection, user, exclusive=True)
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
    if has_sync_tables(connection):  # revision 0013 and later
        rows.update(forget_user_in_sync(connection, user))
    audited = _redact_flag_audit(connection, sessions)
    redacted = redact_user(connection, user, actor)
    # Crypto-shredding: the sealed changes stay in the chain, and nothing opens them now.
    rows["memory_event_keys"] = shred(connection, user)
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
    return ForgetReport(rows, redacted, audited)


def forget_user(
    db: Database, user: str, actor: str, wait: float | None = None
) -> ForgetReport:
    """Remove every row of ``user`` (see the module docstring); ``actor`` is logged. On a
    SQLite file, waits up to ``wait`` seconds (default ``CHECKPOINT_WAIT_SECONDS``) for the
    checkpoint that clears the WAL."""
    if wait is None:
        wait = CHECKPOINT_WAIT_SECONDS
    sqlite = db.dialect == "sqlite"
    report = db.write(lambda connection: _forget(connection, user, actor, sqlite))
    if not sqlite:
        return report
    cleared = is_memory_sqlite(db.engine.url) or checkpoint(db, wait)
    if not cleared:
        telemetry.instruments().forget_incomplete.add(1)
        logger.warning(
            "forget: a reader holds an old snapshot, so the WAL still holds the forgotten "
            "rows; the checkpoint is retried in the background"
        )
    return dataclasses.replace(report, bytes_cleared=cleared)


def checkpoint(db: Database, wait: float) -> bool:
    """Copy the WAL into the SQLite file and empty it, waiting up to ``wait`` seconds for
    readers that block it; True once done.

    TRUNCATE waits for readers through the busy handler, so the connection's busy timeout
    is the bound (set to ``wait`` for this statement, and back after).
    """
    with db.engine.connect() as connection:
        connection.exec_driver_sql(f"PRAGMA busy_timeout={int(wait * 1000)}")
        try:
            busy, _, _ = connection.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)").one()
        finally:
            connection.exec_driver_sql(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_SECONDS * 1000)}")
    return not busy


class BackgroundCheckpoint:
    """Finishes the checkpoints forgets could not: a thread that retries every
    ``BACKGROUND_RETRY_SECONDS`` until one succeeds or ``close()``."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def pending(self) -> bool:
        """Whether a checkpoint is still to be done."""
        with self._lock:
            return self._thread is not None and self._thread.is_alive()

    def request(self) -> None:
        """Start retrying, unless already retrying."""
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return
            self._thread = threading.Thread(
                target=self._run, name="memory-forget-checkpoint", daemon=True
            )
            self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(BACKGROUND_RETRY_SECONDS):
            try:
                if checkpoint(self._db, 0):
                    logger.info("forget: the delayed WAL checkpoint is done")
                    return
            except sa.exc.DBAPIError:  # the database went away: the next forget tries again
                logger.exception("forget: the delayed WAL checkpoint failed")
                return

    def close(self) -> None:
        """Stop retrying and wait for the thread."""
        self._stop.set()
        with self._lock:
            thread = self._thread
        if thread is not None:
            thread.join(10)
