"""Hub-spoke sync in the database: this node's state, delta batches, applying batches
(idempotent, with conflict resolution), the outbox and conflict records.

Every function here is one transaction on a ``Database``. The change log they read is
filled by ``memory.store.synclog`` in the transaction of each local write.

Deltas. ``delta_batches`` sends, for each change range the other side lacks
(``compute_delta``), the *current* state of every memory a change in the range touched,
as an item stamped by the change that made that state. A change superseded since is
thereby covered by the state that superseded it, so the receiver may count the whole
range as had (``covers``) once it applied the batch.

Applying. ``apply_batch`` refuses a batch for another node, one whose clock is too far
ahead, and an item that would move a memory to another user, with nothing applied. A
batch id applied before changes nothing. For each item it compares the stored version
with the incoming one (``resolve``): the winner becomes the memory (written with its
event, ``memory.sync``, so the log, replay, the retrieval index and subscribers see it),
the loser of concurrent versions is kept in ``sync_conflicts``.

Memory ids across nodes are derived from the scope and content a memory was created with
(``synclog``), so the same content added on two nodes is one memory, and a conflict.
A version whose content another memory of its scope (under another id) already holds is
not taken (``shadowed``; one scope keeps one copy of a content): the nodes then disagree
about that memory until one of the two changes. Only an update of content on two nodes
into the same text can lead there.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.engine import Connection, RowMapping

from memory.core.errors import InvalidInputError, SchemaError
from memory.core.inputs import canonical_json
from memory.core.sync_clocks import (
    MAX_CLOCK_DRIFT_MS,
    ChangeRange,
    ConflictResolution,
    HybridLogicalClock,
    Stamp,
    VersionInfo,
    VersionVector,
    apply_ranges,
    compute_delta,
    resolve,
)
from memory.core.sync_items import (
    ALL_NODES,
    MAX_BATCH_ITEMS,
    CompressedEmbedding,
    EmbeddingEncoding,
    MemorySyncBatch,
    MemorySyncItem,
    SyncOperation,
    SyncPriority,
)
from memory.core.types import NO_SESSION, TIERS, Tier
from memory.store.changes import memory_changes
from memory.store.db import Database, lock_user
from memory.store.events import NewEvent, append_events, lock_chain, memory_target
from memory.store.indexing import IndexEntry, log_changes, replace_index
from memory.store.memories import Store
from memory.store.synclog import (
    SYNC_APPLY_OPERATION,
    changes,
    create_node,
    has_sync_tables,
    lock_node,
    log_change,
    log_memory_rows,
    read_node,
    read_vector,
    save_clock,
    save_states,
    save_vector,
    states,
    wall_ms,
)
from memory.store.tables import Base, utcnow

memories = Base.metadata.tables["memories"]
metadata_table = Base.metadata.tables["memory_metadata"]
embeddings = Base.metadata.tables["memory_embeddings"]
applied = Base.metadata.tables["sync_applied_batches"]
outbox_table = Base.metadata.tables["sync_outbox"]
conflicts_table = Base.metadata.tables["sync_conflicts"]


@dataclass(frozen=True, slots=True)
class LocalNode:
    """This store as a sync node: its id, its clock's last timestamp, its vector."""

    node_id: str
    hlc: int
    vector: VersionVector


@dataclass(frozen=True, slots=True)
class ApplyReport:
    """What applying one batch did. ``duplicate``: the batch id was applied before, and
    nothing changed. ``applied``: items that became the stored version; ``superseded``:
    items older than (or the same as) what is stored; ``shadowed``: winners not written
    because their scope already holds the same content under another id; ``conflicts``:
    concurrent versions, by resolution."""

    batch_id: uuid.UUID
    duplicate: bool
    applied: int = 0
    superseded: int = 0
    shadowed: int = 0
    conflicts: Mapping[ConflictResolution, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    """Local changes queued for ``target``: this node's ``first``..``last`` of ``tier``,
    sent as batch ``batch_id`` until acknowledged."""

    batch_id: uuid.UUID
    target: str
    tier: Tier
    first: int
    last: int
    priority: SyncPriority
    created_at: datetime
    acknowledged_at: datetime | None


@dataclass(frozen=True, slots=True)
class ConflictRecord:
    """A resolved conflict: the winner's stamp and the losing version, whole."""

    id: int
    memory_gid: str
    resolution: ConflictResolution
    winner: Stamp
    loser: MemorySyncItem
    batch_id: uuid.UUID
    created_at: datetime


def _require_tables(connection: Connection) -> None:
    if not has_sync_tables(connection):
        raise SchemaError("hub-spoke sync needs the sync schema revision: run memctl migrate")


# Memories logged per statement set when sync is enabled on a store that has some.
_SEED_CHUNK = 1000


def enable(db: Database) -> LocalNode:
    """Make this store a sync node if it is not one yet, and return it (idempotent).

    Enabling makes the node (a new random id) and logs every memory already stored as one
    of its changes, so what was written before sync was enabled is sent like anything
    written after. It takes the lock every memory write conflicts with (see
    ``memory.store.synclog``): memory writes wait for it, once.
    """

    def operation(connection: Connection) -> LocalNode:
        _require_tables(connection)
        if read_node(connection) is None:
            if connection.dialect.name == "postgresql":
                connection.execute(sa.text("LOCK TABLE memories IN SHARE ROW EXCLUSIVE MODE"))
            # Read again under the lock: another process may have enabled sync meanwhile.
            if read_node(connection) is None:
                create_node(connection, uuid.uuid4().hex, HybridLogicalClock(0))
                _seed(connection)
        node, clock = lock_node(connection)
        return LocalNode(node, clock.last, read_vector(connection))

    return db.write(operation)


def _seed(connection: Connection) -> None:
    """Log every stored memory as a change of this (new) node, in id order."""
    columns = [
        memories.c[name]
        for name in ("id", "user_id", "agent_id", "session_id", "tier", "content_hash", "version")
    ]
    after = 0
    while True:
        rows = connection.execute(
            sa.select(*columns).where(memories.c.id > after).order_by(memories.c.id)
            .limit(_SEED_CHUNK)
        ).mappings().all()
        if not rows:
            return
        log_memory_rows(
            connection, [{"table": "memories", "op": "upsert", "row": dict(row)} for row in rows]
        )
        after = rows[-1]["id"]


def local_node(db: Database) -> LocalNode:
    """This store's node id, clock and version vector (sync must be enabled)."""

    def operation(connection: Connection) -> LocalNode:
        _require_tables(connection)
        node, clock = lock_node(connection)
        return LocalNode(node, clock.last, read_vector(connection))

    return db.write(operation)


def delta_batches(
    db: Database,
    remote: VersionVector,
    *,
    target: str = ALL_NODES,
    tiers: Sequence[Tier] = TIERS,
    priority: SyncPriority = SyncPriority.NORMAL,
    encoding: EmbeddingEncoding = EmbeddingEncoding.INT8,
    max_items: int = MAX_BATCH_ITEMS,
) -> list[MemorySyncBatch]:
    """Batches with everything this store has of ``tiers`` that a node at ``remote``
    lacks, at most ``max_items`` items each, in the order to apply them (see the module
    docstring)."""
    if not 1 <= max_items <= MAX_BATCH_ITEMS:
        raise InvalidInputError(f"max_items must be 1..{MAX_BATCH_ITEMS}")

    def operation(connection: Connection) -> list[MemorySyncBatch]:
        _require_tables(connection)
        node, _ = lock_node(connection)
        ranges = [
            change
            for change in compute_delta(read_vector(connection), remote)
            if change.tier in tiers
        ]
        return _batches(connection, node, target, ranges, priority, encoding, max_items)

    return db.write(operation)


def _batches(
    connection: Connection,
    source: str,
    target: str,
    ranges: Sequence[ChangeRange],
    priority: SyncPriority,
    encoding: EmbeddingEncoding,
    max_items: int,
    batch_ids: Sequence[uuid.UUID] | None = None,
) -> list[MemorySyncBatch]:
    """One batch per run of ranges of one tier, each range cut to ``max_items`` changes
    (a change names one memory, so a batch never holds more items than that)."""
    pieces = [
        ChangeRange(change.node, change.tier, first, min(first + max_items - 1, change.last))
        for change in ranges
        for first in range(change.first, change.last + 1, max_items)
    ]
    groups: list[list[ChangeRange]] = []
    for piece in pieces:
        group = groups[-1] if groups else None
        if (
            group is not None
            and group[0].tier == piece.tier
            and sum(c.last - c.first + 1 for c in group) + piece.last - piece.first < max_items
        ):
            group.append(piece)
        else:
            groups.append([piece])
    timestamp_ns = int(datetime.now(UTC).timestamp() * 1e9)
    batches = []
    for index, group in enumerate(groups):
        gids = _gids_in(connection, group)
        batches.append(
            MemorySyncBatch.create(
                source=source,
                target=target,
                tier=group[0].tier,
                items=_items(connection, gids, encoding),
                covers=group,
                priority=priority,
                timestamp_ns=timestamp_ns,
                batch_id=batch_ids[index] if batch_ids is not None else None,
            )
        )
    return batches


def _gids_in(connection: Connection, ranges: Sequence[ChangeRange]) -> list[str]:
    found = connection.execute(
        sa.select(changes.c.memory_gid)
        .where(
            sa.or_(
                *(
                    sa.and_(
                        changes.c.node_id == change.node,
                        changes.c.tier == change.tier,
                        changes.c.seq.between(change.first, change.last),
                    )
                    for change in ranges
                )
            )
        )
        .distinct()
    ).scalars()
    return sorted(found)


def _items(
    connection: Connection, gids: Sequence[str], encoding: EmbeddingEncoding
) -> list[MemorySyncItem]:
    """The current version of each memory in ``gids`` as an item."""
    if not gids:
        return []
    rows = connection.execute(
        sa.select(
            states,
            memories.c.session_id,
            memories.c.content,
            memories.c.importance,
            memories.c.visibility,
            memories.c.expires_at,
            embeddings.c.model,
            embeddings.c.vector,
            changes.c.operation,
        )
        .select_from(
            states.outerjoin(memories, memories.c.id == states.c.memory_id)
            .outerjoin(embeddings, embeddings.c.memory_id == states.c.memory_id)
            .outerjoin(
                changes,
                sa.and_(
                    changes.c.node_id == states.c.origin,
                    changes.c.tier == states.c.tier,
                    changes.c.seq == states.c.seq,
                ),
            )
        )
        .where(states.c.memory_gid.in_(list(gids)))
        .order_by(states.c.memory_gid)
    ).mappings().all()
    metadata = Store.metadata_of(
        connection, [row["memory_id"] for row in rows if row["memory_id"] is not None]
    )
    return [_item(row, metadata, encoding) for row in rows]


def _item(
    row: RowMapping, metadata: Mapping[int, dict[str, Any]], encoding: EmbeddingEncoding
) -> MemorySyncItem:
    live = not row["deleted"] and row["content"] is not None
    embedding = None
    if live and row["vector"] is not None:
        vector = np.frombuffer(row["vector"], dtype=np.float32)
        embedding = CompressedEmbedding.compress(vector.tolist(), row["model"], encoding)
    expires = row["expires_at"] if live else None
    return MemorySyncItem(
        memory_id=row["memory_gid"],
        user_id=row["user_id"],
        agent_id=row["agent_id"],
        session_id=(row["session_id"] or None) if live else None,
        tier=row["tier"],
        operation=(
            SyncOperation.DELETE
            if not live
            else SyncOperation.UPDATE_META
            if row["operation"] == SyncOperation.UPDATE_META
            else SyncOperation.UPSERT
        ),
        content=row["content"] if live else None,
        content_hash=row["content_hash"] if live else None,
        importance=float(row["importance"]) if live else 0.0,
        visibility=row["visibility"] if live else "private",
        metadata=metadata.get(row["memory_id"], {}) if live else {},
        embedding=embedding,
        expires_at_ms=wall_ms(expires) if expires is not None else None,
        hlc=row["hlc"],
        version=row["version"],
        origin=row["origin"],
        seq=row["seq"],
    )


def apply_batch(
    db: Database,
    batch: MemorySyncBatch,
    *,
    vectors: Mapping[str, np.ndarray] | None = None,
    model: str | None = None,
    now: datetime | None = None,
    max_drift_ms: int = MAX_CLOCK_DRIFT_MS,
) -> ApplyReport:
    """Apply ``batch`` in one transaction (see the module docstring). ``vectors`` are the
    embeddings (by memory id across nodes) made by ``model`` to store with the items
    written; ``now`` is the wall time the clock is given (default: the current time)."""

    def operation(connection: Connection) -> ApplyReport:
        _require_tables(connection)
        key = batch.batch_id.hex
        # As every write of users' rows: their locks (shared, in one order) first, so a
        # forget of one of them is either before this batch or after it; then the chain's
        # lock before the node's, the order local writes take them in.
        for user in sorted({item.user_id for item in batch.items}):
            lock_user(connection, user)
        lock_chain(connection)
        node, clock = lock_node(connection)
        if batch.target not in (ALL_NODES, node):
            raise InvalidInputError(
                f"batch {key} is for node {batch.target!r}, not this node ({node}): refused"
            )
        seen = sa.select(applied.c.batch_id).where(applied.c.batch_id == key)
        if connection.execute(seen).first() is not None:
            return ApplyReport(batch.batch_id, duplicate=True)
        moment = now or utcnow()
        for item in batch.items:
            clock = clock.receive(item.hlc, wall_ms(moment), max_drift_ms)
        stored = {
            row.memory_gid: row
            for row in connection.execute(
                sa.select(states).where(
                    states.c.memory_gid.in_([item.memory_id for item in batch.items])
                )
            )
        }
        counts = {"applied": 0, "superseded": 0, "shadowed": 0}
        conflicts: dict[ConflictResolution, int] = {}
        written: list[tuple[MemorySyncItem, int]] = []
        for item in batch.items:
            known = stored.get(item.memory_id)
            if known is not None and known.user_id != item.user_id:
                raise InvalidInputError(
                    f"item {item.memory_id} names user {item.user_id!r} but that memory "
                    "belongs to another user: batch refused"
                )
            log_change(
                connection, item.origin, item.tier, item.seq, item.hlc, item.memory_id,
                item.operation,
            )
            if known is None:
                incoming_wins = True
            else:
                outcome = resolve(
                    VersionInfo(Stamp(known.hlc, known.origin), known.version, known.deleted),
                    item.version_info,
                )
                incoming_wins = outcome.incoming_wins
                if outcome.conflict:
                    assert outcome.resolution is not None
                    conflicts[outcome.resolution] = conflicts.get(outcome.resolution, 0) + 1
                    loser = (
                        _items(connection, [item.memory_id], EmbeddingEncoding.INT8)[0]
                        if incoming_wins
                        else item
                    )
                    winner = item.stamp if incoming_wins else Stamp(known.hlc, known.origin)
                    _record_conflict(connection, key, outcome.resolution, winner, loser, moment)
            if not incoming_wins:
                counts["superseded"] += 1
                continue
            memory_id = _write(connection, item, known, vectors or {}, model, moment)
            if memory_id is None and item.operation is not SyncOperation.DELETE:
                counts["shadowed"] += 1
            else:
                counts["applied"] += 1
            if memory_id is not None:
                written.append((item, memory_id))
        _append_events(connection, written)
        before = read_vector(connection)
        save_vector(connection, before, apply_ranges(before, batch.covers))
        connection.execute(
            applied.insert().values(
                batch_id=key, source=batch.source, items=len(batch.items), applied_at=moment
            )
        )
        save_clock(connection, clock)
        return ApplyReport(batch.batch_id, False, conflicts=conflicts, **counts)

    return db.write(operation)


def _write(
    connection: Connection,
    item: MemorySyncItem,
    known: sa.Row[Any] | None,
    vectors: Mapping[str, np.ndarray],
    model: str | None,
    now: datetime,
) -> int | None:
    """Make ``item`` the stored version of its memory; the local memory id written (the
    deleted one for a delete), or None if nothing was (a tombstone of a memory never
    held here, or a shadowed content)."""
    current: int | None = known.memory_id if known is not None else None
    state = {
        "memory_gid": item.memory_id,
        "user_id": item.user_id,
        "agent_id": item.agent_id,
        "tier": item.tier,
        "hlc": item.hlc,
        "origin": item.origin,
        "seq": item.seq,
        "version": item.version,
        "updated_at": now,
    }
    if item.operation is SyncOperation.DELETE:
        if current is not None:
            connection.execute(sa.delete(memories).where(memories.c.id == current))
            log_changes(connection, [(item.user_id, current)])
        save_states(
            connection, [{**state, "memory_id": None, "content_hash": None, "deleted": True}]
        )
        return current
    session = item.session_id or NO_SESSION
    same_content = connection.execute(
        sa.select(memories.c.id).where(
            memories.c.user_id == item.user_id,
            memories.c.agent_id == item.agent_id,
            memories.c.session_id == session,
            memories.c.content_hash == item.content_hash,
        )
    ).scalar()
    if same_content is not None and same_content != current:
        # Another memory of the scope holds this content (the scope keeps one copy): the
        # version is not taken, and this store stays at the one it had.
        return None
    expires = (
        datetime.fromtimestamp(item.expires_at_ms / 1000, UTC)
        if item.expires_at_ms is not None
        else None
    )
    values = {
        "user_id": item.user_id,
        "agent_id": item.agent_id,
        "session_id": session,
        "tier": item.tier,
        "content": item.content,
        "content_hash": item.content_hash,
        "importance": item.importance,
        "visibility": item.visibility,
        "updated_at": now,
        "expires_at": expires,
        "version": item.version,
    }
    content_changed = True
    if current is None:
        current = connection.execute(
            memories.insert()
            .values(**values, created_at=now, last_accessed_at=None, access_count=0)
            .returning(memories.c.id)
        ).scalar_one()
    else:
        content_changed = known is None or known.content_hash != item.content_hash
        connection.execute(sa.update(memories).where(memories.c.id == current).values(**values))
        connection.execute(sa.delete(metadata_table).where(metadata_table.c.memory_id == current))
    if item.metadata:
        connection.execute(
            metadata_table.insert(),
            [
                {"memory_id": current, "key": key, "value_json": canonical_json(value)}
                for key, value in item.metadata.items()
            ],
        )
    if content_changed:
        assert item.content is not None
        entry = IndexEntry(current, item.user_id, item.content, vectors.get(item.memory_id))
        replace_index(connection, entry, model)
    else:
        log_changes(connection, [(item.user_id, current)])
    save_states(
        connection,
        [{**state, "memory_id": current, "content_hash": item.content_hash, "deleted": False}],
    )
    return current


def _append_events(connection: Connection, written: Sequence[tuple[MemorySyncItem, int]]) -> None:
    """One ``memory.sync`` event per memory written, with the rows it left."""
    if not written:
        return
    rows = memory_changes(connection, [memory_id for _, memory_id in written])
    append_events(
        connection,
        [
            NewEvent(
                item.user_id,
                item.agent_id,
                SYNC_APPLY_OPERATION,
                memory_target(memory_id),
                {
                    "memory_id": memory_id,
                    "memory_gid": item.memory_id,
                    "origin": item.origin,
                    "operation": item.operation.value,
                    "version": item.version,
                },
                rows[memory_id],
            )
            for item, memory_id in written
        ],
    )


def _record_conflict(
    connection: Connection,
    batch_key: str,
    resolution: ConflictResolution,
    winner: Stamp,
    loser: MemorySyncItem,
    now: datetime,
) -> None:
    wire = loser.to_wire()
    wire["embedding"] = None  # the losing text and metadata are what a person reviews
    connection.execute(
        conflicts_table.insert().values(
            memory_gid=loser.memory_id,
            user_id=loser.user_id,
            resolution=resolution.value,
            winner_hlc=winner.hlc,
            winner_origin=winner.node,
            loser_hlc=loser.hlc,
            loser_origin=loser.origin,
            loser_json=canonical_json(wire),
            batch_id=batch_key,
            created_at=now,
        )
    )


def queue_outbox(
    db: Database,
    *,
    target: str = ALL_NODES,
    priority: SyncPriority = SyncPriority.NORMAL,
    max_items: int = MAX_BATCH_ITEMS,
) -> list[OutboxEntry]:
    """Queue this node's changes not yet queued for ``target``, per tier, in pieces of at
    most ``max_items`` changes; returns the new entries."""

    def operation(connection: Connection) -> list[OutboxEntry]:
        _require_tables(connection)
        node, _ = lock_node(connection)
        vector = read_vector(connection)
        now = utcnow()
        queued = []
        for tier in TIERS:
            done = connection.execute(
                sa.select(sa.func.coalesce(sa.func.max(outbox_table.c.last_seq), 0)).where(
                    outbox_table.c.target == target, outbox_table.c.tier == tier
                )
            ).scalar_one()
            for first in range(done + 1, vector.seq(node, tier) + 1, max_items):
                last = min(first + max_items - 1, vector.seq(node, tier))
                entry = OutboxEntry(
                    uuid.uuid4(), target, tier, first, last, priority, now, None
                )
                connection.execute(
                    outbox_table.insert().values(
                        batch_id=entry.batch_id.hex, target=target, tier=tier,
                        first_seq=first, last_seq=last, priority=int(priority), created_at=now,
                    )
                )
                queued.append(entry)
        return queued

    return db.write(operation)


def pending_outbox(db: Database, target: str | None = None) -> list[OutboxEntry]:
    """The entries not acknowledged yet (of ``target``, or all), oldest first."""

    def operation(connection: Connection) -> list[OutboxEntry]:
        _require_tables(connection)
        statement = (
            sa.select(outbox_table)
            .where(outbox_table.c.acknowledged_at.is_(None))
            .order_by(outbox_table.c.created_at, outbox_table.c.tier, outbox_table.c.first_seq)
        )
        if target is not None:
            statement = statement.where(outbox_table.c.target == target)
        return [_entry(row) for row in connection.execute(statement).mappings()]

    return db.read(operation)


def _entry(row: RowMapping) -> OutboxEntry:
    return OutboxEntry(
        uuid.UUID(hex=row["batch_id"]),
        row["target"],
        row["tier"],
        row["first_seq"],
        row["last_seq"],
        SyncPriority(row["priority"]),
        row["created_at"],
        row["acknowledged_at"],
    )


def outbox_batches(
    db: Database,
    entries: Sequence[OutboxEntry],
    encoding: EmbeddingEncoding = EmbeddingEncoding.INT8,
) -> list[MemorySyncBatch]:
    """The batches to send for outbox ``entries`` (each keeps its entry's batch id, so a
    resent batch is recognised), with the memories' current state."""

    def operation(connection: Connection) -> list[MemorySyncBatch]:
        _require_tables(connection)
        node, _ = lock_node(connection)
        return [
            _batches(
                connection, node, entry.target,
                [ChangeRange(node, entry.tier, entry.first, entry.last)],
                entry.priority, encoding, entry.last - entry.first + 1, [entry.batch_id],
            )[0]
            for entry in entries
        ]

    return db.write(operation)


def acknowledge(db: Database, batch_id: uuid.UUID) -> bool:
    """Mark outbox batch ``batch_id`` delivered; False if it was not pending."""

    def operation(connection: Connection) -> bool:
        _require_tables(connection)
        result = connection.execute(
            sa.update(outbox_table)
            .where(
                outbox_table.c.batch_id == batch_id.hex, outbox_table.c.acknowledged_at.is_(None)
            )
            .values(acknowledged_at=utcnow())
        )
        return bool(result.rowcount)

    return db.write(operation)


def conflicts(db: Database, limit: int = 100) -> list[ConflictRecord]:
    """The latest conflicts resolved here, newest first."""

    def operation(connection: Connection) -> list[ConflictRecord]:
        _require_tables(connection)
        rows = connection.execute(
            sa.select(conflicts_table).order_by(conflicts_table.c.id.desc()).limit(limit)
        ).mappings()
        return [
            ConflictRecord(
                id=row["id"],
                memory_gid=row["memory_gid"],
                resolution=ConflictResolution(row["resolution"]),
                winner=Stamp(row["winner_hlc"], row["winner_origin"]),
                loser=MemorySyncItem.from_wire(json.loads(row["loser_json"])),
                batch_id=uuid.UUID(hex=row["batch_id"]),
                created_at=row["created_at"],
            )
            for row in rows
        ]

    return db.read(operation)


def conflict_counts(db: Database) -> dict[ConflictResolution, int]:
    """How many conflicts were resolved here, by resolution."""

    def operation(connection: Connection) -> dict[ConflictResolution, int]:
        _require_tables(connection)
        rows = connection.execute(
            sa.select(conflicts_table.c.resolution, sa.func.count()).group_by(
                conflicts_table.c.resolution
            )
        )
        return {ConflictResolution(resolution): count for resolution, count in rows}

    return db.read(operation)


def state_checksum(db: Database) -> str:
    """SHA-256 over the sync view of every memory (live or tombstone) this store holds,
    without embeddings (each node may compute its own): equal on nodes that converged."""

    def operation(connection: Connection) -> str:
        _require_tables(connection)
        gids = connection.execute(
            sa.select(states.c.memory_gid).order_by(states.c.memory_gid)
        ).scalars().all()
        digest = hashlib.sha256()
        for start in range(0, len(gids), 1000):
            for item in _items(connection, gids[start : start + 1000], EmbeddingEncoding.INT8):
                wire = item.to_wire()
                wire["embedding"] = None
                digest.update(canonical_json(wire).encode("utf-8") + b"\n")
        return digest.hexdigest()

    return db.read(operation)


