"""Memories: add, read, update, delete, share and consolidate them, with their metadata,
keyword terms, embeddings and events, each in one transaction. Preferences and code
patterns are ``memory.store.preferences``; session state is ``memory.store.sessions``.

Inputs arrive validated (``memory.core.inputs``); each public method is one transaction.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.engine import Connection, RowMapping
from sqlalchemy.exc import IntegrityError

from memory.core.errors import (
    ConflictError,
    NotFoundError,
    PermissionDeniedError,
    QuotaExceededError,
    StaleVersionError,
)
from memory.core.inputs import (
    QUOTA_MEMORIES_ENV,
    CodePatternQuery,
    MemoryChanges,
    MemoryQuery,
    NewMemory,
    Quotas,
    canonical_json,
    content_hash,
)
from memory.core.types import (
    CodePattern,
    MemoryEvent,
    MemoryRecord,
    Owner,
    Preference,
    SessionCheckpoint,
)
from memory.store import sharing as sharing
from memory.store.changes import memory_changes, upsert
from memory.store.db import Database
from memory.store.events import (
    PENDING_KEY,
    NewEvent,
    append_event,
    append_events,
    events_of,
    memory_target,
    record_reads,
)
from memory.store.indexing import IndexEntry, log_changes, replace_index, write_index
from memory.store.preferences import find_patterns, list_preferences
from memory.store.sessions import latest_checkpoint, unexpired_checkpoint
from memory.store.sharing import Grant, NewGrant, visible
from memory.store.tables import Base, utcnow

memories = Base.metadata.tables["memories"]
metadata_table = Base.metadata.tables["memory_metadata"]


class _NothingToConsolidate(Exception):
    """Raised inside a consolidation to roll it back: too few rows were still unchanged."""


@dataclass(frozen=True, slots=True)
class Embedded:
    """Embeddings computed before a write: content -> unit vector, and the model's name."""

    model: str
    vectors: dict[str, np.ndarray]


def _owned(owner: Owner) -> list[sa.ColumnElement[bool]]:
    return [memories.c.user_id == owner.user, memories.c.agent_id == owner.agent]


def has_metadata(key: str, value: Any) -> sa.ColumnElement[bool]:
    """The memory has metadata ``key`` equal to ``value``.

    Correlated EXISTS rather than ``id IN (…)``: the planner walks the owner's memories
    newest first and probes the metadata primary key, so the cost is bounded by the
    owner's rows and stops at the limit, instead of growing with every user's matches.
    """
    return (
        sa.select(metadata_table.c.memory_id)
        .where(
            metadata_table.c.memory_id == memories.c.id,
            metadata_table.c.key == key,
            metadata_table.c.value_json == canonical_json(value),
        )
        .exists()
    )


def unexpired(now: datetime) -> sa.ColumnElement[bool]:
    """The memories that have not expired at ``now``."""
    return sa.or_(memories.c.expires_at.is_(None), memories.c.expires_at > now)


def _record(row: RowMapping, metadata: dict[str, Any]) -> MemoryRecord:
    return MemoryRecord(
        id=row["id"],
        user_id=row["user_id"],
        agent_id=row["agent_id"],
        session_id=row["session_id"] or None,
        tier=row["tier"],
        content=row["content"],
        content_hash=row["content_hash"],
        importance=row["importance"],
        visibility=row["visibility"],
        metadata=metadata,
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        last_accessed_at=row["last_accessed_at"],
        access_count=row["access_count"],
        expires_at=row["expires_at"],
        version=row["version"],
    )


def _committed_earlier(
    connection: Connection, memory_id: int, operation: str, request: str
) -> bool:
    """Whether an earlier attempt of this call (its events carry ``request``) committed
    ``operation`` on the memory although its COMMIT raised: the connection was lost after
    the server committed. That attempt's event was never published (``Database`` publishes
    only once the commit has returned); it is published after this transaction instead."""
    for event in events_of(connection, memory_target(memory_id)):
        if event.operation == operation and (event.data or {}).get("request") == request:
            connection.info.setdefault(PENDING_KEY, []).append(event)
            return True
    return False


class Store:
    """Phase 2 repositories over one database."""

    def __init__(self, db: Database, quotas: Quotas | None = None) -> None:
        self.db = db
        self.quotas = quotas or Quotas()

    def _check_memory_quota(self, connection: Connection, user: str) -> None:
        """Refuse (``QuotaExceededError``, so the transaction rolls back) a write that leaves
        ``user`` with more memories than the quota. Counted after the insert, so content
        that was already stored costs nothing; the writers of a user take turns while a
        quota is set (``Database.write``), so each count includes the others' rows."""
        limit = self.quotas.memories
        if limit is None:
            return
        held = connection.execute(
            sa.select(sa.func.count()).select_from(memories).where(memories.c.user_id == user)
        ).scalar_one()
        if held > limit:
            raise QuotaExceededError(
                f"user {user!r} would hold {held} memories; the quota is {limit} "
                f"(${QUOTA_MEMORIES_ENV}): delete or consolidate memories first"
            )

    # -- memories -----------------------------------------------------------------------------

    def add_memories(
        self, owner: Owner, items: Sequence[NewMemory], vectors: Embedded | None = None
    ) -> list[MemoryRecord]:
        """Insert memories, or return the existing one where the scope already holds the
        same content. The unique key makes concurrent adds of one content yield one row.
        ``vectors`` maps content to its embedding (absent when the embedder failed)."""

        return self.db.write(
            lambda connection: self._insert(connection, owner, items, vectors), user=owner.user
        )

    def _insert(
        self,
        connection: Connection,
        owner: Owner,
        items: Sequence[NewMemory],
        vectors: Embedded | None,
    ) -> list[MemoryRecord]:
        now = utcnow()
        by_hash: dict[str, NewMemory] = {}
        for item in items:
            by_hash.setdefault(content_hash(item.content), item)
        rows = [
            {
                "user_id": owner.user,
                "agent_id": owner.agent,
                "session_id": owner.session_key,
                "tier": item.tier,
                "content": item.content,
                "content_hash": digest,
                "importance": item.importance,
                "visibility": item.visibility,
                "created_at": now,
                "updated_at": now,
                "last_accessed_at": None,
                "access_count": 0,
                "expires_at": now + item.ttl if item.ttl is not None else None,
                "version": 1,
            }
            for digest, item in by_hash.items()
        ]
        statement = (
            self.db.insert(memories)
            .on_conflict_do_nothing(
                index_elements=["user_id", "agent_id", "session_id", "content_hash"]
            )
            .returning(*memories.c)
        )
        stored = connection.execute(statement, rows).mappings().all()
        inserted = {row["content_hash"]: row["id"] for row in stored}
        if inserted:
            self._check_memory_quota(connection, owner.user)
        metadata_rows = [
            {"memory_id": memory_id, "key": key, "value_json": canonical_json(value)}
            for digest, memory_id in inserted.items()
            for key, value in by_hash[digest].metadata.items()
        ]
        if metadata_rows:
            connection.execute(metadata_table.insert(), metadata_rows)
        # The change of a new memory is what was just written: no need to read it back.
        changes = {row["id"]: [upsert(memories, row)] for row in stored}
        for metadata_row in metadata_rows:
            changes[metadata_row["memory_id"]].append(upsert(metadata_table, metadata_row))
        append_events(
            connection,
            [
                NewEvent(
                    owner.user,
                    owner.agent,
                    "memory.add",
                    memory_target(memory_id),
                    {
                        "memory_id": memory_id,
                        "session": owner.session,
                        "tier": by_hash[digest].tier,
                        "content_hash": digest,
                    },
                    changes[memory_id],
                )
                for digest, memory_id in inserted.items()
            ],
        )
        write_index(
            connection,
            [
                IndexEntry(
                    memory_id,
                    owner.user,
                    by_hash[digest].content,
                    vectors.vectors.get(by_hash[digest].content) if vectors else None,
                )
                for digest, memory_id in inserted.items()
            ],
            vectors.model if vectors else None,
        )
        found = self.select_memories(
            connection,
            sa.and_(
                *_owned(owner),
                memories.c.session_id == owner.session_key,
                memories.c.content_hash.in_(list(by_hash)),
            ),
        )
        by_digest = {record.content_hash: record for record in found}
        return [by_digest[content_hash(item.content)] for item in items]

    def select_memories(
        self,
        connection: Connection,
        condition: sa.ColumnElement[bool],
        order: Sequence[sa.ColumnElement[Any]] = (),
        limit: int | None = None,
    ) -> list[MemoryRecord]:
        """Memories matching ``condition``, with their metadata, inside a transaction."""
        statement = sa.select(memories).where(condition).order_by(*order)
        if limit is not None:
            statement = statement.limit(limit)
        rows = connection.execute(statement).mappings().all()
        return self._with_metadata(connection, rows)

    def owning_agent(self, user: str, memory_id: int) -> str | None:
        """The agent that stored memory ``memory_id`` of ``user``, or None if ``user`` has no
        such memory. Reads no grant: only for counting refusals, never to answer a read."""
        statement = sa.select(memories.c.agent_id).where(
            memories.c.id == memory_id, memories.c.user_id == user
        )
        return self.db.read(lambda connection: connection.execute(statement).scalar())

    def _with_metadata(
        self, connection: Connection, rows: Sequence[RowMapping]
    ) -> list[MemoryRecord]:
        metadata = self.metadata_of(connection, [row["id"] for row in rows])
        return [_record(row, metadata[row["id"]]) for row in rows]

    @staticmethod
    def metadata_of(connection: Connection, ids: Sequence[int]) -> dict[int, dict[str, Any]]:
        """The metadata of each of ``ids`` (an empty dict for none)."""
        metadata: dict[int, dict[str, Any]] = {memory_id: {} for memory_id in ids}
        if metadata:
            found = connection.execute(
                sa.select(metadata_table).where(metadata_table.c.memory_id.in_(list(metadata)))
            )
            for item in found:
                metadata[item.memory_id][item.key] = json.loads(item.value_json)
        return metadata

    def get_memory(self, owner: Owner, memory_id: int) -> MemoryRecord:
        """Read one memory of this user and agent and record the access."""

        def operation(connection: Connection) -> MemoryRecord:
            now = utcnow()
            statement = (
                sa.update(memories)
                .where(memories.c.id == memory_id, visible(connection, owner), unexpired(now))
                .values(last_accessed_at=now, access_count=memories.c.access_count + 1)
                .returning(*memories.c)
            )
            row = connection.execute(statement).mappings().first()
            if row is None:
                raise NotFoundError(f"memory {memory_id} does not exist in this scope")
            record = self._with_metadata(connection, [row])[0]
            record_reads(connection, owner.user, owner.agent, [record])
            return record

        return self.db.write(operation, user=owner.user)

    def update_memory(
        self,
        owner: Owner,
        memory_id: int,
        changes: MemoryChanges,
        vectors: Embedded | None = None,
    ) -> MemoryRecord:
        """Apply ``changes`` if ``changes.version`` is still current (optimistic locking).

        A connection lost during COMMIT leaves the outcome unknown, and the retry's version
        check then fails if that attempt did commit. Every attempt of this call logs the
        same ``request`` id in its ``memory.update`` event (committed with the change, or
        not at all), so the retry can tell its own earlier commit from another writer's.
        """
        request = uuid.uuid4().hex

        def operation(connection: Connection) -> MemoryRecord:
            now = utcnow()
            # The owner, or a holder of a live read-write grant, may update; but only the
            # owner changes what grants depend on (tier grants, tag grants on metadata), or
            # a grantee could widen a grant to agents the owner never chose.
            writable = visible(connection, owner, "write")
            if changes.tier is not None or changes.metadata is not None:
                owning = connection.execute(
                    sa.select(memories.c.agent_id).where(
                        memories.c.id == memory_id, writable, unexpired(now)
                    )
                ).scalar()
                if owning is not None and owning != owner.agent:
                    raise PermissionDeniedError(
                        f"memory {memory_id}: only its owner agent may change its tier or "
                        "metadata (grants depend on them); a write grant allows content "
                        "and importance"
                    )
            values: dict[str, Any] = {"updated_at": now, "version": memories.c.version + 1}
            if changes.content is not None:
                values["content"] = changes.content
                values["content_hash"] = content_hash(changes.content)
            if changes.tier is not None:
                values["tier"] = changes.tier
            if changes.importance is not None:
                values["importance"] = changes.importance
            statement = (
                sa.update(memories)
                .where(
                    memories.c.id == memory_id,
                    writable,
                    unexpired(now),
                    memories.c.version == changes.version,
                )
                .values(**values)
                .returning(*memories.c)
            )
            try:
                row = connection.execute(statement).mappings().first()
            except IntegrityError as error:
                raise ConflictError(
                    f"memory {memory_id}: another memory in this scope already has that content"
                ) from error
            if row is None:
                current = connection.execute(
                    sa.select(*memories.c).where(
                        memories.c.id == memory_id, writable, unexpired(now)
                    )
                ).mappings().first()
                if current is None:
                    raise NotFoundError(f"memory {memory_id} does not exist in this scope")
                if _committed_earlier(connection, memory_id, "memory.update", request):
                    return self._with_metadata(connection, [current])[0]
                raise StaleVersionError(memory_id, changes.version, current["version"])
            changed = sorted(
                name for name in ("content", "tier", "importance", "metadata")
                if getattr(changes, name) is not None
            )
            if changes.content is not None:
                vector = vectors.vectors.get(changes.content) if vectors else None
                entry = IndexEntry(memory_id, owner.user, changes.content, vector)
                replace_index(connection, entry, vectors.model if vectors else None)
            else:
                log_changes(connection, [(owner.user, memory_id)])
            if changes.metadata is not None:
                connection.execute(
                    sa.delete(metadata_table).where(metadata_table.c.memory_id == memory_id)
                )
                if changes.metadata:
                    connection.execute(
                        metadata_table.insert(),
                        [
                            {"memory_id": memory_id, "key": key, "value_json": canonical_json(v)}
                            for key, v in changes.metadata.items()
                        ],
                    )
            append_event(
                connection, owner.user, owner.agent, "memory.update", memory_target(memory_id),
                {
                    "memory_id": memory_id, "version": row["version"], "changed": changed,
                    "request": request,
                },
                memory_changes(connection, [memory_id])[memory_id],
            )
            return self._with_metadata(connection, [row])[0]

        return self.db.write(operation, user=owner.user)

    def list_memories(self, owner: Owner, query: MemoryQuery) -> list[MemoryRecord]:
        """The live memories ``owner`` may see (its own, and those shared with it when
        ``owner.shared``) matching ``query``, newest first."""
        return self.db.read(lambda connection: self._list_memories(connection, owner, query))

    def _list_memories(
        self, connection: Connection, owner: Owner, query: MemoryQuery
    ) -> list[MemoryRecord]:
        conditions = [visible(connection, owner), unexpired(utcnow())]
        if query.tier is not None:
            conditions.append(memories.c.tier == query.tier)
        if query.session is not None:
            conditions.append(memories.c.session_id == query.session)
        if query.created_after is not None:
            conditions.append(memories.c.created_at >= query.created_after)
        if query.created_before is not None:
            conditions.append(memories.c.created_at < query.created_before)
        if query.before_id is not None:
            conditions.append(memories.c.id < query.before_id)
        conditions.extend(has_metadata(key, value) for key, value in query.metadata.items())
        return self.select_memories(
            connection, sa.and_(*conditions), [memories.c.id.desc()], query.limit
        )

    def context_sections(
        self, owner: Owner, working: MemoryQuery | None, pattern_query: CodePatternQuery
    ) -> ContextSections:
        """What context injection shows whatever the query, in one read transaction: the
        latest live checkpoint of ``owner.session``, the user's preferences, the memories
        ``working`` selects (the session's recent ones) and the patterns ``pattern_query``
        selects."""

        def operation(connection: Connection) -> ContextSections:
            checkpoint = None
            if owner.session is not None:
                latest = latest_checkpoint(connection, owner, owner.session)
                checkpoint = unexpired_checkpoint(latest)
            return ContextSections(
                checkpoint,
                list_preferences(connection, owner),
                self._list_memories(connection, owner, working) if working is not None else [],
                find_patterns(connection, owner, pattern_query),
            )

        return self.db.read(operation)

    def delete_memory(self, owner: Owner, memory_id: int) -> None:
        """Delete one memory (its metadata goes with it, by cascade).

        As in ``update_memory``, the ``request`` id in the event lets a retry after a lost
        COMMIT tell its own delete from a memory that was never there.
        """
        request = uuid.uuid4().hex

        def operation(connection: Connection) -> None:
            result = connection.execute(
                sa.delete(memories).where(memories.c.id == memory_id, *_owned(owner))
            )
            if result.rowcount == 0:
                if _committed_earlier(connection, memory_id, "memory.delete", request):
                    return
                raise NotFoundError(f"memory {memory_id} does not exist in this scope")
            log_changes(connection, [(owner.user, memory_id)])
            append_event(
                connection, owner.user, owner.agent, "memory.delete", memory_target(memory_id),
                {"memory_id": memory_id, "request": request},
                memory_changes(connection, [memory_id])[memory_id],
            )

        self.db.write(operation, user=owner.user)

    # -- sharing ------------------------------------------------------------------------------

    def share(self, owner: Owner, item: NewGrant) -> list[Grant]:
        """Grant access to what ``item`` names (see ``memory.store.sharing.share``)."""
        return self.db.write(
            lambda connection: sharing.share(connection, self.db.insert, owner, item),
            user=owner.user,
        )

    def revoke(self, owner: Owner, grant_id: int) -> Grant:
        """Revoke one of ``owner``'s grants."""
        return self.db.write(
            lambda connection: sharing.revoke(connection, owner, grant_id), user=owner.user
        )

    def grants(self, owner: Owner, received: bool) -> list[Grant]:
        """The live grants ``owner`` made (or holds, with ``received``)."""
        return self.db.read(lambda connection: sharing.list_grants(connection, owner, received))

    def memory_readable(self, owner: Owner, memory_id: int) -> bool:
        """Whether ``owner`` may read the memory ``memory_id`` now."""
        return self.db.read(
            lambda connection: sharing.memory_readable(connection, owner, memory_id)
        )

    def record_reads(self, owner: Owner, records: Sequence[MemoryRecord]) -> None:
        """Log that ``owner`` read these memories of other agents (``memory.read`` events)."""
        self.db.write(
            lambda connection: record_reads(connection, owner.user, owner.agent, records),
            user=owner.user,
        )

    def consolidate(
        self,
        owner: Owner,
        replaced: Sequence[MemoryRecord],
        summary: NewMemory,
        vectors: tuple[str, dict[str, np.ndarray]] | None,
    ) -> tuple[int, ...]:
        """Replace ``replaced`` by one ``summary`` memory in one transaction.

        A memory changed since it was read (its version moved on) is left alone and not
        counted as replaced, so compaction never discards an update it has not seen.
        """

        def operation(connection: Connection) -> tuple[int, ...]:
            gone = []
            for record in replaced:
                result = connection.execute(
                    sa.delete(memories).where(
                        memories.c.id == record.id, memories.c.version == record.version
                    )
                )
                if result.rowcount:
                    gone.append(record.id)
            if len(gone) < 2:
                raise _NothingToConsolidate
            log_changes(connection, [(owner.user, memory_id) for memory_id in gone])
            item = summary.model_copy(update={"metadata": {"consolidated_from": gone}})
            (stored,) = self._insert(
                connection, owner, [item], Embedded(*vectors) if vectors else None
            )
            removed = memory_changes(connection, gone)
            append_event(
                connection, owner.user, owner.agent, "memory.consolidate",
                memory_target(stored.id), {"memory_id": stored.id, "consolidated_from": gone},
                [entry for memory_id in gone for entry in removed[memory_id]],
            )
            return tuple(gone)

        try:
            return self.db.write(operation, user=owner.user)
        except _NothingToConsolidate:
            return ()

    def promote_used(self, owner: Owner, uses: int, memory_ids: Sequence[int]) -> tuple[int, ...]:
        """Promote those of ``memory_ids`` that are this agent's episodic memories used at
        least ``uses`` times to semantic."""

        def operation(connection: Connection) -> tuple[int, ...]:
            rows = (
                connection.execute(
                    sa.update(memories)
                    .where(
                        *_owned(owner),
                        memories.c.id.in_(list(memory_ids)),
                        memories.c.tier == "episodic",
                        memories.c.access_count >= uses,
                    )
                    .values(tier="semantic", updated_at=utcnow(), version=memories.c.version + 1)
                    .returning(memories.c.id)
                )
                .scalars()
                .all()
            )
            log_changes(connection, [(owner.user, memory_id) for memory_id in rows])
            promoted = memory_changes(connection, list(rows))
            append_events(
                connection,
                [
                    NewEvent(owner.user, owner.agent, "memory.promote", memory_target(memory_id),
                             {"memory_id": memory_id, "tier": "semantic"}, promoted[memory_id])
                    for memory_id in sorted(rows)
                ],
            )
            return tuple(sorted(rows))

        return self.db.write(operation, user=owner.user)

    def record_uses(self, uses: Mapping[int, tuple[int, datetime]]) -> None:
        """Add uses (accesses) to memories, as injection batches them: ``uses`` maps a
        memory id to how many times it was used and when last. One statement per distinct
        count (and per 500 ids), in one transaction."""
        by_count: dict[int, list[int]] = {}
        latest: dict[int, datetime] = {}
        for memory_id, (count, at) in uses.items():
            by_count.setdefault(count, []).append(memory_id)
            latest[count] = max(at, latest.get(count, at))
        column = memories.c.last_accessed_at

        def operation(connection: Connection) -> None:
            for count, ids in sorted(by_count.items()):
                last = sa.literal(latest[count], column.type)
                ids.sort()
                for start in range(0, len(ids), 500):
                    connection.execute(
                        sa.update(memories)
                        .where(memories.c.id.in_(ids[start : start + 500]))
                        .values(
                            access_count=memories.c.access_count + count,
                            # A get may have recorded a later access meanwhile: keep it.
                            last_accessed_at=sa.case(
                                (sa.or_(column.is_(None), column < last), last), else_=column
                            ),
                        )
                    )

        if by_count:
            self.db.write(operation)

    def record_event(
        self,
        owner: Owner,
        event: str,
        data: dict[str, Any],
        item: NewMemory | None,
        vectors: Embedded | None,
    ) -> tuple[MemoryEvent, MemoryRecord | None]:
        """Append an event reported from outside (``memctl record``), and the memory it
        carries, if any, in one transaction; the event names the memory's id."""

        def operation(connection: Connection) -> tuple[MemoryEvent, MemoryRecord | None]:
            stored = self._insert(connection, owner, [item], vectors)[0] if item else None
            payload = dict(data)
            target = "external"
            change: list[dict[str, Any]] = []  # an external event alone changes no row
            if stored is not None:
                payload["memory_id"] = stored.id
                target = memory_target(stored.id)
                change = memory_changes(connection, [stored.id])[stored.id]
            return append_event(
                connection, owner.user, owner.agent, event, target, payload, change
            ), stored

        return self.db.write(operation, user=owner.user)


@dataclass(frozen=True, slots=True)
class ContextSections:
    """What ``Store.context_sections`` reads for context injection, in one transaction."""

    checkpoint: SessionCheckpoint | None
    preferences: list[Preference]
    working: list[MemoryRecord]
    patterns: list[CodePattern]
