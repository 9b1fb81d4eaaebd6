"""SpokeStore over real databases (a SQLite file and PostgreSQL per node): deltas, apply
once, conflicts resolved the same way everywhere, tombstones, re-embedding, the outbox,
and batches a hostile peer could send refused with nothing applied."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import numpy as np
import pytest
import sqlalchemy as sa

from memory import HashingEmbedder, Memory
from memory.core.errors import InvalidInputError
from memory.ops import table_checksums
from memory.store.tables import Base
from memory.sync.clocks import ClockDriftError, ConflictResolution, VersionVector, hlc_pack
from memory.sync.items import MemorySyncBatch, MemorySyncItem, SyncOperation
from memory.sync.spoke import SpokeStore


def sync(source: SpokeStore, target: SpokeStore) -> None:
    """Bring ``target`` up to ``source`` (a delta computed against its vector)."""
    for batch in source.delta(target.vector()):
        target.apply(batch)


def everything(spoke: SpokeStore) -> dict[str, MemorySyncItem]:
    """Every memory's version the spoke holds, by id across nodes."""
    return {
        item.memory_id: item
        for batch in spoke.delta(VersionVector())
        for item in batch.items
    }


def table_state(spoke: SpokeStore) -> dict[str, object]:
    with spoke.memory.engine.connect() as connection:
        return dict(table_checksums(connection, sorted(Base.metadata.tables)))


def contents(spoke: SpokeStore, user: str = "ada") -> list[str]:
    return sorted(m.content for m in spoke.memory.scope(user, "planner").list())


def test_a_write_reaches_another_node_and_a_batch_applies_once(
    node: Callable[..., SpokeStore],
) -> None:
    first, second = node(), node()
    scope = first.memory.scope("ada", "planner", "s1")
    scope.add("ada drinks tea", tier="semantic", metadata={"source": "chat"})
    scope.add("call the bank", tier="working", ttl=timedelta(hours=1))
    batches = first.delta(second.vector())
    assert {batch.tier for batch in batches} == {"semantic", "working"}

    reports = [second.apply(batch) for batch in batches]
    assert [r.applied for r in reports] == [1, 1]
    before = table_state(second)
    again = [second.apply(batch) for batch in batches]
    assert all(r.duplicate and r.applied == 0 for r in again)
    assert table_state(second) == before  # applying twice changed nothing at all

    received = second.memory.scope("ada", "planner", "s1").list()
    assert sorted(m.content for m in received) == ["ada drinks tea", "call the bank"]
    tea = next(m for m in received if m.tier == "semantic")
    assert tea.metadata == {"source": "chat"}
    assert next(m for m in received if m.tier == "working").expires_at is not None
    assert second.memory.scope("ada", "planner", "s1").search("tea")[0].memory.id == tea.id
    assert second.vector().dominates(first.vector())
    assert first.checksum() == second.checksum()
    assert first.delta(second.vector()) == []


def test_updates_metadata_changes_and_deletes_follow(node: Callable[..., SpokeStore]) -> None:
    first, second = node(), node()
    scope = first.memory.scope("ada", "planner")
    note = scope.add("draft the report")
    sync(first, second)
    scope.update(note.id, version=note.version, metadata={"status": "done"})
    (item,) = [i for b in first.delta(second.vector()) for i in b.items]
    assert item.operation is SyncOperation.UPDATE_META and item.version == 2
    sync(first, second)
    assert second.memory.scope("ada", "planner").list()[0].metadata == {"status": "done"}
    scope.delete(note.id)
    sync(first, second)
    assert contents(second) == []
    assert everything(second)[item.memory_id].operation is SyncOperation.DELETE
    assert first.checksum() == second.checksum()


def test_changes_relay_through_a_third_node(node: Callable[..., SpokeStore]) -> None:
    spoke, hub, other = node(), node(), node()
    spoke.memory.scope("ada", "planner").add("relayed through the hub")
    sync(spoke, hub)
    sync(hub, other)
    assert contents(other) == ["relayed through the hub"]
    assert other.vector() == spoke.vector()


def _concurrent_edit(first: SpokeStore, second: SpokeStore) -> str:
    """One memory on both nodes, then edited on each before they talk again."""
    original = first.memory.scope("ada", "planner").add("the meeting is at noon")
    sync(first, second)
    copy = second.memory.scope("ada", "planner").list()[0]
    first.memory.scope("ada", "planner").update(
        original.id, version=original.version, content="the meeting is at one"
    )
    second.memory.scope("ada", "planner").update(
        copy.id, version=copy.version, content="the meeting is at two"
    )
    return "the meeting is at two"  # the later write (its clock is ahead)


def test_concurrent_updates_resolve_the_same_way_everywhere(
    node: Callable[..., SpokeStore],
) -> None:
    first, second = node(), node()
    later = _concurrent_edit(first, second)
    sync(first, second)
    sync(second, first)
    assert contents(first) == contents(second) == [later]
    assert first.checksum() == second.checksum()
    for spoke, lost in ((first, "the meeting is at one"), (second, "the meeting is at one")):
        (conflict,) = spoke.conflicts()
        assert conflict.resolution is ConflictResolution.LAST_WRITER
        assert conflict.loser.content == lost  # the losing version is kept whole
        assert spoke.conflict_counts() == {ConflictResolution.LAST_WRITER: 1}


def test_the_same_content_added_on_two_nodes_is_one_memory(
    node: Callable[..., SpokeStore],
) -> None:
    first, second = node(), node()
    first.memory.scope("ada", "planner").add("buy milk", metadata={"from": "first"})
    second.memory.scope("ada", "planner").add("buy milk", metadata={"from": "second"})
    sync(first, second)
    sync(second, first)
    assert contents(first) == contents(second) == ["buy milk"]
    assert first.checksum() == second.checksum()
    assert len(everything(first)) == 1


def test_a_tombstone_beats_an_older_update_and_loses_to_a_newer_one(
    node: Callable[..., SpokeStore],
) -> None:
    first, second = node(), node()
    kept = first.memory.scope("ada", "planner").add("keep me")
    gone = first.memory.scope("ada", "planner").add("delete me")
    sync(first, second)
    copies = {m.content: m for m in second.memory.scope("ada", "planner").list()}
    # "delete me": updated on the second node, then deleted (later) on the first.
    second.memory.scope("ada", "planner").update(
        copies["delete me"].id, version=1, metadata={"late": "no"}
    )
    first.memory.scope("ada", "planner").delete(gone.id)
    # "keep me": deleted on the first node, then updated (later) on the second.
    first.memory.scope("ada", "planner").delete(kept.id)
    second.memory.scope("ada", "planner").update(
        copies["keep me"].id, version=1, content="keep me, updated"
    )
    sync(first, second)
    sync(second, first)
    assert contents(first) == contents(second) == ["keep me, updated"]
    assert first.checksum() == second.checksum()
    resolutions = {c.resolution for c in first.conflicts()} | {
        c.resolution for c in second.conflicts()
    }
    assert resolutions == {ConflictResolution.TOMBSTONE, ConflictResolution.LAST_WRITER}


def test_a_receiver_with_another_model_embeds_again(node: Callable[..., SpokeStore]) -> None:
    first, second = node(HashingEmbedder(64)), node(HashingEmbedder(32))
    first.memory.scope("ada", "planner").add("vectors travel as int8")
    (batch,) = first.delta(second.vector())
    assert batch.items[0].embedding is not None
    assert batch.items[0].embedding.model == "hashing-64"
    second.apply(batch)
    with second.memory.engine.connect() as connection:
        models = connection.execute(sa.text("SELECT model, dimension FROM memory_embeddings"))
        assert [tuple(row) for row in models] == [("hashing-32", 32)]
    third = node(HashingEmbedder(64))
    third.apply(batch)
    with third.memory.engine.connect() as connection:
        (stored,) = connection.execute(sa.text("SELECT vector FROM memory_embeddings"))
    expected = HashingEmbedder(64).embed(["vectors travel as int8"])[0]
    received = np.frombuffer(stored[0], dtype=np.float32)
    assert float(received @ expected) > 0.99  # the int8 copy, not a re-embedding


def test_the_outbox_keeps_offline_writes_until_acknowledged(
    node: Callable[..., SpokeStore],
) -> None:
    spoke, hub = node(), node()
    spoke.memory.scope("ada", "planner").add("written offline")
    queued = spoke.queue_local()
    assert len(queued) == 1
    # Nothing delivered: the same batch (same id) is still pending, after a restart too.
    url = spoke.memory.engine.url.render_as_string(hide_password=False)
    spoke.memory.close()
    spoke = SpokeStore(Memory.open(url, embedder=HashingEmbedder()))
    try:
        assert [b.batch_id for b in spoke.queue_local()] == [queued[0].batch_id]
        spoke.memory.scope("ada", "planner").add("written later", tier="episodic")
        pending = spoke.queue_local()
        assert len(pending) == 2
        for batch in pending:
            hub.apply(batch)
            assert spoke.acknowledge(batch.batch_id)
        assert spoke.pending() == [] and spoke.queue_local() == []
        assert not spoke.acknowledge(pending[0].batch_id)
        assert contents(hub) == ["written later", "written offline"]
    finally:
        spoke.memory.close()


def _refused(spoke: SpokeStore, batch: MemorySyncBatch, error: type[Exception], match: str) -> None:
    before = table_state(spoke)
    with pytest.raises(error, match=match):
        spoke.apply(batch)
    assert table_state(spoke) == before


def test_hostile_batches_are_refused_with_nothing_applied(
    node: Callable[..., SpokeStore],
) -> None:
    first, second = node(), node()
    second.memory.scope("ada", "planner").add("ada's own memory")
    sync(second, first)
    first.memory.scope("ada", "planner").add("a fresh one")
    (batch,) = first.delta(second.vector())
    second.vector()  # the node exists

    def rebuilt(**changes: object) -> MemorySyncBatch:
        fields = {f.name: getattr(batch, f.name) for f in dataclasses.fields(batch)}
        fields.pop("checksum")
        return MemorySyncBatch.create(**{**fields, **changes})  # type: ignore[arg-type]

    _refused(second, rebuilt(target="someone-else"), InvalidInputError, "not this node")
    future = dataclasses.replace(batch.items[0], hlc=hlc_pack(2**46))
    _refused(second, rebuilt(items=(future,)), ClockDriftError, "ahead of ours")
    # An item that names ada's memory but another user: it would move it to mallory.
    (own,) = [i for b in second.delta(VersionVector()) for i in b.items]
    stolen = dataclasses.replace(own, user_id="mallory", hlc=own.hlc + 1, version=2)
    _refused(second, rebuilt(items=(stolen,)), InvalidInputError, "belongs to another user")
    assert second.apply(batch).applied == 1  # the genuine batch still applies


def test_deltas_split_into_bounded_batches_that_complete_the_vector(
    node: Callable[..., SpokeStore],
) -> None:
    first, second = node(), node()
    scope = first.memory.scope("ada", "planner")
    scope.add_many([{"content": f"note {i}", "tier": "episodic"} for i in range(7)])
    small = SpokeStore(first.memory, max_items=3)
    batches = small.delta(second.vector())
    assert [len(b.items) for b in batches] == [3, 3, 1]
    for batch in batches:
        second.apply(batch)
    assert second.vector() == first.vector()
    assert len(contents(second)) == 7
    assert small.delta(second.vector()) == []


def test_a_store_is_one_node_for_its_lifetime(node: Callable[..., SpokeStore]) -> None:
    spoke = node()
    assert uuid.UUID(hex=spoke.node_id)
    assert SpokeStore(spoke.memory).node_id == spoke.node_id


def test_concurrent_local_writes_and_applies_number_every_change_once(
    node: Callable[..., SpokeStore],
) -> None:
    spoke, peer = node(), node()
    peer.memory.scope("bob", "planner").add_many(
        [{"content": f"from the peer {i}", "tier": "episodic"} for i in range(20)]
    )
    incoming = SpokeStore(peer.memory, max_items=2).delta(spoke.vector())

    def write(worker: int) -> None:
        scope = spoke.memory.scope("ada", "planner")
        for i in range(8):
            scope.add(f"worker {worker} note {i}", tier="episodic")

    def apply() -> None:
        for batch in incoming:
            spoke.apply(batch)

    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = [pool.submit(write, worker) for worker in range(3)] + [pool.submit(apply)]
        for future in futures:
            future.result()
    # The spoke's own changes are numbered 1..24 with no gap and no repeat, and a fresh
    # node that takes the delta gets all 44 memories.
    with spoke.memory.engine.connect() as connection:
        seqs = connection.execute(
            sa.text("SELECT seq FROM sync_changes WHERE node_id = :node ORDER BY seq"),
            {"node": spoke.node_id},
        ).scalars().all()
    assert seqs == list(range(1, 25))
    fresh = node()
    sync(spoke, fresh)
    assert len(contents(fresh)) == 24 and len(contents(fresh, "bob")) == 20
    assert fresh.checksum() == spoke.checksum()
