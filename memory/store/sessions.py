"""Session state: numbered checkpoints of a session, and its shared context merged from
several agents' patches.

Inputs arrive validated (``memory.core.inputs``); each public method is one transaction.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, RowMapping

from memory.core.errors import QuotaExceededError
from memory.core.inputs import MAX_STATE_BYTES, NewSessionState, Quotas, canonical_json
from memory.core.merge import (
    CONFLICT_OPERATION,
    PATCH_OPERATION,
    MergedContext,
    conflicts_of,
    merge_patches,
)
from memory.core.types import MemoryEvent, Owner, SessionCheckpoint
from memory.store.changes import delete, upsert
from memory.store.db import Database
from memory.store.events import NewEvent, append_event, append_events, events_of
from memory.store.sharing import agent_rows_readable
from memory.store.tables import Base, utcnow

session_state = Base.metadata.tables["session_state"]


class Sessions:
    """Checkpoints of a session's state, shared by the agents working in it."""

    def __init__(self, db: Database, quotas: Quotas | None = None) -> None:
        self.db = db
        self.quotas = quotas or Quotas()

    # -- session state ------------------------------------------------------------------------

    def _insert_checkpoint(
        self,
        connection: Connection,
        owner: Owner,
        session: str,
        state: dict[str, Any],
        ttl: timedelta | None,
    ) -> tuple[SessionCheckpoint, list[dict[str, Any]]]:
        """The new checkpoint, and the change it makes: its row, and the deletion of the
        checkpoints the quota no longer keeps."""
        now = utcnow()
        if self.db.dialect == "postgresql":
            # Agents checkpointing one session at once take turns, so each reads the
            # maximum the previous one wrote. (SQLite writers already take turns.)
            connection.execute(
                sa.text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))"),
                {"key": f"session_state:{owner.user}:{session}"},
            )
        latest = connection.execute(
            sa.select(sa.func.max(session_state.c.checkpoint_seq)).where(
                session_state.c.user_id == owner.user,
                session_state.c.session_id == session,
            )
        ).scalar()
        row = (
            connection.execute(
                self.db.insert(session_state)
                .values(
                    user_id=owner.user,
                    session_id=session,
                    checkpoint_seq=(latest or 0) + 1,
                    agent_id=owner.agent,
                    state_json=canonical_json(state),
                    created_at=now,
                    expires_at=now + ttl if ttl is not None else None,
                )
                .returning(*session_state.c)
            )
            .mappings()
            .one()
        )
        change = [upsert(session_state, row)]
        kept = self.quotas.checkpoints
        if kept is not None:
            # The newest ``kept`` of this agent's checkpoints of the session stay; another
            # agent's are its own to keep (with sharing off it reads only those).
            mine = sa.and_(
                session_state.c.user_id == owner.user,
                session_state.c.session_id == session,
                session_state.c.agent_id == owner.agent,
            )
            newest = (
                sa.select(session_state.c.checkpoint_seq)
                .where(mine)
                .order_by(session_state.c.checkpoint_seq.desc())
                .limit(kept)
            )
            trimmed = connection.execute(
                sa.delete(session_state)
                .where(mine, session_state.c.checkpoint_seq.not_in(newest.scalar_subquery()))
                .returning(session_state.c.checkpoint_seq)
            ).scalars()
            change += [
                delete(
                    session_state,
                    {"user_id": owner.user, "session_id": session, "checkpoint_seq": seq},
                )
                for seq in sorted(trimmed)
            ]
        return checkpoint_of(row), change

    def save_state(self, owner: Owner, session: str, item: NewSessionState) -> SessionCheckpoint:
        """Append the next checkpoint of ``session``."""

        def operation(connection: Connection) -> SessionCheckpoint:
            checkpoint, change = self._insert_checkpoint(
                connection, owner, session, item.state, item.ttl
            )
            append_event(
                connection, owner.user, owner.agent, "state.save", session_target(session),
                {"session": session, "checkpoint_seq": checkpoint.checkpoint_seq}, change,
            )
            return checkpoint

        return self.db.write(operation, user=owner.user)

    def merge_context(
        self,
        owner: Owner,
        session: str,
        patch: dict[str, Any],
        timestamp: datetime,
        seen: int | None,
        ttl: timedelta | None,
    ) -> MergedContext:
        """Apply one agent's ``patch`` to the session's shared context (``memory.core.merge``):
        log it, log each conflict it makes, and checkpoint the merged state, in one
        transaction."""

        def operation(connection: Connection) -> MergedContext:
            target = session_target(session)
            # The checkpoint lock (PostgreSQL) or the write lock (SQLite) is taken first, so
            # patches of one session are read and merged one after the other.
            previous = [
                event for event in events_of(connection, target) if event.user_id == owner.user
            ]
            appended = append_event(
                connection, owner.user, owner.agent, PATCH_OPERATION, target,
                {"session": session, "timestamp": timestamp.isoformat(), "patch": patch,
                 "seen": seen},
            )
            history: list[MemoryEvent] = [*previous, appended]
            conflicts = conflicts_of(history, appended, seen)
            append_events(
                connection,
                [
                    NewEvent(
                        owner.user, owner.agent, CONFLICT_OPERATION, target,
                        {"session": session, "key": conflict.key,
                         "kept": conflict.kept.as_dict(),
                         "overridden": conflict.overridden.as_dict()},
                    )
                    for conflict in conflicts
                ],
            )
            merged = merge_patches(history)
            size = len(canonical_json(merged).encode("utf-8"))
            if size > MAX_STATE_BYTES:
                # The whole context is one checkpoint: held to the limit save_state has.
                raise QuotaExceededError(
                    f"session {session!r}: the merged context would be {size} bytes as JSON; "
                    f"at most {MAX_STATE_BYTES}: remove keys (patch them to null) first"
                )
            checkpoint, change = self._insert_checkpoint(connection, owner, session, merged, ttl)
            # The merged checkpoint is the change; the patch events before it carry none
            # (a replay applies the row, it does not merge again).
            append_event(
                connection, owner.user, owner.agent, "state.merge", target,
                {"session": session, "checkpoint_seq": checkpoint.checkpoint_seq}, change,
            )
            return MergedContext(
                checkpoint.state, checkpoint.checkpoint_seq, appended.seq, tuple(conflicts)
            )

        return self.db.write(operation, user=owner.user)

    def latest(self, owner: Owner, session: str) -> SessionCheckpoint | None:
        """The latest checkpoint of ``session``, expired or not."""
        return self.db.read(lambda connection: latest_checkpoint(connection, owner, session))

    def load_state(self, owner: Owner, session: str) -> SessionCheckpoint | None:
        """The latest live checkpoint of ``session``, or None."""
        return unexpired_checkpoint(self.latest(owner, session))


def checkpoint_of(row: RowMapping) -> SessionCheckpoint:
    """The checkpoint a ``session_state`` row holds."""
    return SessionCheckpoint(
        user_id=row["user_id"],
        session_id=row["session_id"],
        agent_id=row["agent_id"],
        checkpoint_seq=row["checkpoint_seq"],
        state=json.loads(row["state_json"]),
        created_at=row["created_at"],
        expires_at=row["expires_at"],
    )


def latest_checkpoint(
    connection: Connection, owner: Owner, session: str
) -> SessionCheckpoint | None:
    """The latest checkpoint of ``session`` that ``owner`` may read, expired or not, inside a
    transaction: any agent's with ``owner.shared`` (USE_CROSS_AGENT_SHARING), else its own
    agent's, as for memories."""
    rules = [
        *agent_rows_readable(owner, session_state.c.user_id, session_state.c.agent_id),
        session_state.c.session_id == session,
    ]
    row = (
        connection.execute(
            sa.select(session_state)
            .where(*rules)
            .order_by(session_state.c.checkpoint_seq.desc())
            .limit(1)
        )
        .mappings()
        .first()
    )
    return checkpoint_of(row) if row is not None else None


def unexpired_checkpoint(checkpoint: SessionCheckpoint | None) -> SessionCheckpoint | None:
    """``checkpoint``, unless it is None or has expired."""
    if checkpoint is None or (
        checkpoint.expires_at is not None and checkpoint.expires_at <= utcnow()
    ):
        return None
    return checkpoint


def session_target(session: str) -> str:
    """The target of events about one session's state and shared context."""
    return f"session:{session}"
