"""The sync change log every memory write appends to, in the write's own transaction, once
sync is enabled on the store.

``append_events`` (``memory.store.events``) calls ``record_memory_changes`` with the events
it appends: every write of a memory (add, update, delete, consolidate, promote, retention)
already puts the rows it left, or the keys it deleted, in its event's change
(``memory.store.changes``), so this one hook sees them all. For each memory row changed it
stamps the change with this node's hybrid logical clock, numbers it in this node's change
sequence of the memory's tier, logs it (``sync_changes``) and records the memory's new
version (``sync_memories``; a delete leaves the tombstone). Events of items applied from
other nodes (``SYNC_APPLY_OPERATION``) are skipped: ``memory.store.sync`` logs those under
the change that made them.

Opt-in. A store is a sync node once ``memory.store.sync.enable`` made its ``sync_node`` row
(and logged the memories already there as its first changes); a store that does not sync
pays one primary-key read of that table per memory write, finds no row, and logs nothing
and locks nothing. That read is not cached: it is made in every write, after the write
changed its memory rows, and ``enable`` takes a lock that conflicts with every memory
write before it reads the memories it seeds and makes the row (PostgreSQL: ``LOCK TABLE
memories IN SHARE ROW EXCLUSIVE MODE``, which waits for every transaction that wrote
``memories`` to end and makes later writers of it wait for the enable to commit; SQLite:
``BEGIN IMMEDIATE``, one writer at a time). So a write either ended before ``enable``
read the memories (its memory is seeded, or its delete is seen) or reads the node row in
a statement after ``enable`` committed (PostgreSQL's READ COMMITTED: each statement sees
what committed before it) and logs its change. No change falls between, whichever
process enables and whichever writes; a forget of a user either precedes the seed or
deletes what it seeded.

Once enabled, the node row is locked for the rest of the transaction (``FOR UPDATE`` on
PostgreSQL; SQLite has one writer), so sequences are issued in commit order and a reader
never sees change n+1 without n. The readers of the log (``memory.store.sync``: delta
batches, the outbox) lock the row too, so they wait for a write in flight. Local writes
already hold the chain lock, which every writer of the event log takes, so the row lock
adds a statement to a write but no waiting: writes were serialised on PostgreSQL before
sync (the chain's head is read and extended by one writer at a time).

A database before the sync revision has no ``sync_node`` table: nothing is logged there.
Whether it has one is read once per pooled connection (tables change only by migration).
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from memory.core.errors import SchemaError
from memory.core.inputs import canonical_json
from memory.core.sync_clocks import HybridLogicalClock, VersionVector
from memory.core.sync_items import SyncOperation
from memory.core.types import Tier
from memory.store.engine import dialect_insert
from memory.store.tables import Base, utcnow

nodes = Base.metadata.tables["sync_node"]
vectors = Base.metadata.tables["sync_vectors"]
changes = Base.metadata.tables["sync_changes"]
states = Base.metadata.tables["sync_memories"]

# The event operation of a memory written by applying another node's item.
SYNC_APPLY_OPERATION = "memory.sync"
_TABLES_INFO = "memory.sync_tables"
_NODE = sa.select(nodes.c.node_id, nodes.c.hlc).where(nodes.c.id == 1)


def has_sync_tables(connection: Connection) -> bool:
    """Whether the database has the sync tables (read once per pooled connection)."""
    known = connection.info.get(_TABLES_INFO)
    if known is None:
        known = sa.inspect(connection).has_table("sync_node")
        connection.info[_TABLES_INFO] = known
    return bool(known)


def wall_ms(now: datetime) -> int:
    """``now`` in Unix milliseconds: the wall time the clock is given."""
    return int(now.timestamp() * 1000)


def read_node(connection: Connection) -> tuple[str, HybridLogicalClock] | None:
    """This store's node id and clock, or None if sync was never enabled (no lock taken)."""
    row = connection.execute(_NODE).first()
    return None if row is None else (row.node_id, HybridLogicalClock(row.hlc))


def lock_node(connection: Connection) -> tuple[str, HybridLogicalClock]:
    """This store's node id and clock; the row stays locked until the transaction ends.
    Refused on a store where sync was never enabled."""
    row = connection.execute(_NODE.with_for_update()).first()
    if row is None:
        raise SchemaError(
            "hub-spoke sync is not enabled on this store: enable it first "
            "(memory.ops.sync.enable, or open it as a SpokeStore)"
        )
    return row.node_id, HybridLogicalClock(row.hlc)


def create_node(connection: Connection, node: str, clock: HybridLogicalClock) -> None:
    """Make this store the sync node ``node`` (``memory.store.sync.enable``)."""
    connection.execute(
        nodes.insert().values(id=1, node_id=node, hlc=clock.last, created_at=utcnow())
    )


def save_clock(connection: Connection, clock: HybridLogicalClock) -> None:
    """Store the clock's last timestamp (the node row is locked by ``lock_node``)."""
    connection.execute(sa.update(nodes).where(nodes.c.id == 1).values(hlc=clock.last))


def read_vector(connection: Connection) -> VersionVector:
    """This store's version vector."""
    rows = connection.execute(sa.select(vectors.c.node_id, vectors.c.tier, vectors.c.seq))
    return VersionVector({(row.node_id, row.tier): row.seq for row in rows})


def save_vector(connection: Connection, before: VersionVector, after: VersionVector) -> None:
    """Write the entries of ``after`` that differ from ``before``."""
    moved = [
        {"node_id": node, "tier": tier, "seq": seq}
        for (node, tier), seq in after.items()
        if before.seq(node, tier) != seq
    ]
    if moved:
        insert = dialect_insert(connection.dialect.name, vectors)
        connection.execute(
            insert.on_conflict_do_update(
                index_elements=["node_id", "tier"], set_={"seq": insert.excluded.seq}
            ),
            moved,
        )


def log_change(
    connection: Connection,
    node: str,
    tier: Tier,
    seq: int,
    hlc: int,
    memory_gid: str,
    operation: SyncOperation,
) -> None:
    """Log change ``seq`` of ``node`` in ``tier`` (kept as it is if already logged)."""
    connection.execute(
        dialect_insert(connection.dialect.name, changes)
        .values(
            node_id=node, tier=tier, seq=seq, hlc=hlc, memory_gid=memory_gid,
            operation=operation.value,
        )
        .on_conflict_do_nothing(index_elements=["node_id", "tier", "seq"])
    )


def save_states(connection: Connection, rows: Sequence[Mapping[str, Any]]) -> None:
    """Insert or replace memories' sync states (``sync_memories`` rows, one per memory,
    each with every column)."""
    if not rows:
        return
    insert = dialect_insert(connection.dialect.name, states)
    connection.execute(
        insert.on_conflict_do_update(
            index_elements=["memory_gid"],
            set_={name: insert.excluded[name] for name in rows[0] if name != "memory_gid"},
        ),
        list(rows),
    )


def record_memory_changes(connection: Connection, drafts: Iterable[Any]) -> None:
    """Log, as changes of this node, the memory rows the ``drafts`` (``NewEvent``s about
    to be appended) changed; see the module docstring. A handful of statements whatever
    the number of memories: states are read and written in sets."""
    touched = [
        entry
        for draft in drafts
        if draft.operation != SYNC_APPLY_OPERATION and draft.change
        for entry in draft.change
        if entry["table"] == "memories"
    ]
    if not touched or not has_sync_tables(connection) or read_node(connection) is None:
        return  # sync was never enabled here: see the module docstring
    log_memory_rows(connection, touched)


def log_memory_rows(connection: Connection, touched: Sequence[Mapping[str, Any]]) -> None:
    """Log the ``touched`` memory rows (change entries: ``op`` upsert with the ``row`` left,
    or delete with its ``key``) as changes of this node, which must be a node."""
    node, clock = lock_node(connection)
    before = read_vector(connection)
    vector = before
    now = utcnow()
    ids = [_memory_id(entry) for entry in touched]
    by_id = {row["memory_id"]: row for row in _states(connection, states.c.memory_id, ids)}
    derived = {
        entry["row"]["id"]: _derived_gid(entry["row"])
        for entry in touched
        if entry["op"] == "upsert" and entry["row"]["id"] not in by_id
    }
    by_gid = {
        row["memory_gid"]: row
        for row in _states(connection, states.c.memory_gid, derived.values())
    }
    by_gid.update((row["memory_gid"], row) for row in by_id.values())
    logged: list[dict[str, Any]] = []
    written: dict[str, dict[str, Any]] = {}
    for entry in touched:
        memory_id = _memory_id(entry)
        known = by_id.get(memory_id)
        if entry["op"] == "upsert":
            row = entry["row"]
            state = _upserted(row, known, derived.get(memory_id), by_gid)
            unchanged = known is not None and all(
                known[name] == row[name] for name in ("content_hash", "tier")
            )
            operation = SyncOperation.UPDATE_META if unchanged else SyncOperation.UPSERT
        elif known is not None:
            state = {
                **known, "memory_id": None, "content_hash": None,
                "version": known["version"] + 1, "deleted": True,
            }
            operation = SyncOperation.DELETE
        else:  # never logged (no sync state): no tombstone to leave
            continue
        clock = clock.tick(wall_ms(now))
        seq = vector.seq(node, state["tier"]) + 1
        vector = vector.advance(node, state["tier"], seq)
        state.update(hlc=clock.last, origin=node, seq=seq, updated_at=now)
        logged.append(
            {"node_id": node, "tier": state["tier"], "seq": seq, "hlc": clock.last,
             "memory_gid": state["memory_gid"], "operation": operation.value}
        )
        written[state["memory_gid"]] = by_gid[state["memory_gid"]] = state
        if state["deleted"]:
            by_id.pop(memory_id, None)
        else:
            by_id[memory_id] = state
    if logged:
        connection.execute(changes.insert(), logged)
        save_states(connection, list(written.values()))
        save_vector(connection, before, vector)
        save_clock(connection, clock)


def _memory_id(entry: Mapping[str, Any]) -> int:
    key = entry["row"] if entry["op"] == "upsert" else entry["key"]
    return int(key["id"])


def _states(
    connection: Connection, column: sa.Column[Any], values: Iterable[Any]
) -> list[dict[str, Any]]:
    wanted = sorted(set(values))
    if not wanted:
        return []
    rows = connection.execute(sa.select(states).where(column.in_(wanted))).mappings()
    return [dict(row) for row in rows]


def _derived_gid(row: Mapping[str, Any]) -> str:
    """The id across nodes of a memory this node creates: derived from its scope and
    content, so the same content added on two nodes is one memory (a scope keeps one copy
    of a content anyway)."""
    scope = [row["user_id"], row["agent_id"], row["session_id"], row["content_hash"]]
    return hashlib.sha256(canonical_json(scope).encode("utf-8")).hexdigest()[:32]


def _upserted(
    row: Mapping[str, Any],
    known: Mapping[str, Any] | None,
    derived: str | None,
    by_gid: Mapping[str, Mapping[str, Any]],
) -> dict[str, Any]:
    """The sync state of a memory row a local write left."""
    gid, floor = (known["memory_gid"], 0) if known is not None else (derived or "", 0)
    if known is None:
        taken = by_gid.get(gid)
        if taken is not None and not taken["deleted"]:
            # A live memory has that id (it was created with this content and changed
            # since): this one gets a random id.
            gid = uuid.uuid4().hex
        elif taken is not None:
            floor = taken["version"] + 1  # re-added after a delete: continue its count
    return {
        "memory_gid": gid,
        "memory_id": row["id"],
        "user_id": row["user_id"],
        "agent_id": row["agent_id"],
        "tier": row["tier"],
        "content_hash": row["content_hash"],
        "version": max(row["version"], floor),
        "deleted": False,
    }


def forget_user_in_sync(connection: Connection, user: str) -> dict[str, int]:
    """Delete the sync rows about ``user``'s memories (``memory.store.forget``): their
    change log entries, conflicts and sync states (tombstones included). Returns the
    rows deleted per table."""
    conflicts = Base.metadata.tables["sync_conflicts"]
    owned = sa.select(states.c.memory_gid).where(states.c.user_id == user).scalar_subquery()
    deleted = {}
    for table, condition in (
        (changes, changes.c.memory_gid.in_(owned)),
        (conflicts, conflicts.c.user_id == user),
        (states, states.c.user_id == user),
    ):
        deleted[table.name] = int(connection.execute(sa.delete(table).where(condition)).rowcount)
    return deleted
