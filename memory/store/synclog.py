"""The sync change log every memory write appends to, in the write's own transaction.

``append_events`` (``memory.store.events``) calls ``record_memory_changes`` with the events
it appends: every write of a memory (add, update, delete, consolidate, promote, retention)
already puts the rows it left, or the keys it deleted, in its event's change
(``memory.store.changes``), so this one hook sees them all. For each memory row changed it
stamps the change with this node's hybrid logical clock, numbers it in this node's change
sequence of the memory's tier, logs it (``sync_changes``) and records the memory's new
version (``sync_memories``; a delete leaves the tombstone). Events of items applied from
other nodes (``SYNC_APPLY_OPERATION``) are skipped: ``memory.store.sync`` logs those under
the change that made them.

The node (``sync_node``) is made by the first write that needs it. Its row is locked for
the rest of the transaction (``FOR UPDATE`` on PostgreSQL; SQLite has one writer), so
sequences are issued in commit order and a reader never sees change n+1 without n.

A database before the sync revision has no ``sync_node`` table: nothing is logged there.
Whether it has one is read once per pooled connection.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

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


def lock_node(connection: Connection) -> tuple[str, HybridLogicalClock]:
    """This store's node id and clock, the node made if it is the first use; the row stays
    locked until the transaction ends."""
    statement = sa.select(nodes.c.node_id, nodes.c.hlc).where(nodes.c.id == 1).with_for_update()
    row = connection.execute(statement).first()
    if row is None:
        connection.execute(
            dialect_insert(connection.dialect.name, nodes)
            .values(id=1, node_id=uuid.uuid4().hex, hlc=0, created_at=utcnow())
            .on_conflict_do_nothing(index_elements=["id"])
        )
        row = connection.execute(statement).one()
    return row.node_id, HybridLogicalClock(row.hlc)


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


def save_state(connection: Connection, state: Mapping[str, Any]) -> None:
    """Insert or replace one memory's sync state (a ``sync_memories`` row)."""
    insert = dialect_insert(connection.dialect.name, states)
    connection.execute(
        insert.values(**state).on_conflict_do_update(
            index_elements=["memory_gid"],
            set_={name: insert.excluded[name] for name in state if name != "memory_gid"},
        )
    )


def record_memory_changes(connection: Connection, drafts: Iterable[Any]) -> None:
    """Log, as changes of this node, the memory rows the ``drafts`` (``NewEvent``s about
    to be appended) changed; see the module docstring."""
    touched = [
        entry
        for draft in drafts
        if draft.operation != SYNC_APPLY_OPERATION and draft.change
        for entry in draft.change
        if entry["table"] == "memories"
    ]
    if not touched or not has_sync_tables(connection):
        return
    node, clock = lock_node(connection)
    before = read_vector(connection)
    vector = before
    now = utcnow()
    for entry in touched:
        if entry["op"] == "upsert":
            row = entry["row"]
            known = _state_of(connection, states.c.memory_id == row["id"])
            same_text = known is not None and known.content_hash == row["content_hash"]
            same_tier = known is not None and known.tier == row["tier"]
            if known is None:
                known = _new_memory_state(connection, row)
            state = {
                "memory_gid": known.memory_gid,
                "memory_id": row["id"],
                "user_id": row["user_id"],
                "agent_id": row["agent_id"],
                "tier": row["tier"],
                "content_hash": row["content_hash"],
                # A memory re-added after a delete continues its tombstone's count.
                "version": max(row["version"], known.version + 1 if known.deleted else 0),
                "deleted": False,
            }
            operation = (
                SyncOperation.UPDATE_META if same_text and same_tier else SyncOperation.UPSERT
            )
        else:
            known = _state_of(connection, states.c.memory_id == entry["key"]["id"])
            if known is None:  # written before the sync revision and never since
                continue
            state = {
                "memory_gid": known.memory_gid,
                "memory_id": None,
                "user_id": known.user_id,
                "agent_id": known.agent_id,
                "tier": known.tier,
                "content_hash": None,
                "version": known.version + 1,
                "deleted": True,
            }
            operation = SyncOperation.DELETE
        tier = state["tier"]
        clock = clock.tick(wall_ms(now))
        seq = vector.seq(node, tier) + 1
        vector = vector.advance(node, tier, seq)
        log_change(connection, node, tier, seq, clock.last, state["memory_gid"], operation)
        save_state(
            connection,
            {**state, "hlc": clock.last, "origin": node, "seq": seq, "updated_at": now},
        )
    save_vector(connection, before, vector)
    save_clock(connection, clock)


def _state_of(connection: Connection, condition: sa.ColumnElement[bool]) -> Any:
    return connection.execute(sa.select(states).where(condition)).first()


@dataclass(frozen=True, slots=True)
class _Fresh:
    memory_gid: str
    version: int = 0
    deleted: bool = False


def _new_memory_state(connection: Connection, row: Mapping[str, Any]) -> Any:
    """The id across nodes of a memory this node just created: derived from its scope and
    content, so the same content added on two nodes is one memory (the scope keeps one
    copy of a content anyway). If a live memory already has that id (it was created
    with this content and changed since), a random one. Returns the tombstone when the
    memory is re-added after a delete."""
    derived = hashlib.sha256(
        canonical_json(
            [row["user_id"], row["agent_id"], row["session_id"], row["content_hash"]]
        ).encode("utf-8")
    ).hexdigest()[:32]
    taken = _state_of(connection, states.c.memory_gid == derived)
    if taken is None:
        return _Fresh(derived)
    if taken.deleted:
        return taken
    return _Fresh(uuid.uuid4().hex)


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
