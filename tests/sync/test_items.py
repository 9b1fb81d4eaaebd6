"""MemorySyncItem and MemorySyncBatch: construction, wire round trips, the checksum, and
the strict refusal of what a hostile peer could send."""

from __future__ import annotations

import uuid
from typing import Any

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from memory.core.errors import InvalidInputError
from memory.core.inputs import content_hash
from memory.sync.clocks import ChangeRange, hlc_pack
from memory.sync.items import (
    BatchFlags,
    CompressedEmbedding,
    EmbeddingEncoding,
    MemorySyncBatch,
    MemorySyncItem,
    SyncOperation,
    SyncPriority,
)


def make_item(**changes: Any) -> MemorySyncItem:
    content = changes.pop("content", "the user prefers dark mode")
    fields: dict[str, Any] = {
        "memory_id": "node-a:1",
        "user_id": "alice",
        "agent_id": "assistant",
        "session_id": None,
        "tier": "working",
        "operation": SyncOperation.UPSERT,
        "content": content,
        "content_hash": None if content is None else content_hash(content),
        "importance": 0.5,
        "visibility": "private",
        "metadata": {"source": "chat", "n": 2},
        "embedding": CompressedEmbedding.compress(
            [0.1, -0.2, 0.3], "all-MiniLM-L6-v2", EmbeddingEncoding.INT8
        ),
        "expires_at_ms": None,
        "hlc": hlc_pack(1_700_000_000_000),
        "version": 1,
        "origin": "node-a",
        "seq": 1,
    }
    return MemorySyncItem(**{**fields, **changes})


def make_batch(items: tuple[MemorySyncItem, ...] | None = None) -> MemorySyncBatch:
    return MemorySyncBatch.create(
        source="node-a",
        target="*",
        tier="working",
        items=items if items is not None else (make_item(),),
        covers=(ChangeRange("node-a", "working", 1, 1),),
        priority=SyncPriority.CRITICAL,
        flags=BatchFlags.REQUIRES_ACK,
        timestamp_ns=1_700_000_000_000_000_000,
    )


def through_msgpack(value: Any) -> Any:
    return msgpack.unpackb(msgpack.packb(value, use_bin_type=True), raw=False)


def test_a_batch_survives_msgpack() -> None:
    batch = make_batch()
    again = MemorySyncBatch.from_wire(through_msgpack(batch.to_wire()))
    assert again == batch
    assert again.priority is SyncPriority.CRITICAL and again.flags is BatchFlags.REQUIRES_ACK
    assert len(batch.to_wire()["batch_id"]) == 16 and len(batch.checksum) == 32


def test_a_delete_is_a_tombstone_without_content() -> None:
    tombstone = make_item(
        operation=SyncOperation.DELETE, content=None, content_hash=None, embedding=None
    )
    assert MemorySyncItem.from_wire(through_msgpack(tombstone.to_wire())) == tombstone
    assert tombstone.version_info.deleted
    with pytest.raises(InvalidInputError, match="carries no content"):
        make_item(operation=SyncOperation.DELETE)


def test_the_checksum_covers_every_item_and_range() -> None:
    wire = make_batch().to_wire()
    tampered = {**wire, "items": [{**wire["items"][0], "content_hash": None}]}
    tampered["items"][0]["content"] = "something else"
    tampered["items"][0]["content_hash"] = content_hash("something else")
    with pytest.raises(InvalidInputError, match="checksum does not match"):
        MemorySyncBatch.from_wire(tampered)
    with pytest.raises(InvalidInputError, match="checksum does not match"):
        MemorySyncBatch.from_wire({**wire, "covers": [["node-a", 1, 2]]})
    with pytest.raises(InvalidInputError, match="32 bytes"):
        MemorySyncBatch.from_wire({**wire, "checksum": b"short"})


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"content_hash": "0" * 64}, "not the SHA-256"),
        ({"content": " "}, "content"),
        ({"tier": "cold"}, "tier must be one of"),
        ({"operation": "merge"}, "operation must be one of"),
        ({"importance": 2.0}, "importance"),
        ({"importance": 1}, "importance"),
        ({"visibility": "public"}, "visibility"),
        ({"user_id": ""}, "user_id"),
        ({"user_id": "x" * 129}, "user_id"),
        ({"session_id": "a\x00b"}, "session_id"),
        ({"memory_id": "a\nb"}, "memory_id"),
        ({"hlc": 0}, "hlc"),
        ({"hlc": 2**63}, "hlc"),
        ({"version": True}, "version"),
        ({"seq": 0}, "seq"),
        ({"origin": "*"}, "node id"),
        ({"metadata": {f"k{i}": i for i in range(33)}}, "metadata"),
        ({"metadata": {"big": "x" * 2000}}, "metadata"),
    ],
)
def test_bad_items_are_refused(change: dict[str, Any], problem: str) -> None:
    with pytest.raises(InvalidInputError, match=problem):
        make_item(**change)


@pytest.mark.parametrize(
    ("mutate", "problem"),
    [
        (lambda w: w.pop("seq"), "missing"),
        (lambda w: w.update(extra=1), "unknown"),
        (lambda w: w.update(metadata='{"b":1, "a":2}'), "canonical JSON"),
        (lambda w: w.update(metadata="[1]"), "metadata"),
        (lambda w: w.update(metadata="{"), "metadata"),
        (lambda w: w.update(embedding={"model": "m"}), "embedding fields wrong"),
        (lambda w: w["embedding"].update(data=b"\x01"), "must be 3 bytes"),
        (lambda w: w["embedding"].update(encoding="int4"), "encoding must be one of"),
        (lambda w: w["embedding"].update(dims=100_000), "dims"),
        (lambda w: w["embedding"].update(scale=float("nan")), "scale"),
    ],
)
def test_bad_wire_items_are_refused(mutate: Any, problem: str) -> None:
    wire = through_msgpack(make_item().to_wire())
    mutate(wire)
    with pytest.raises(InvalidInputError, match=problem):
        MemorySyncItem.from_wire(wire)


@pytest.mark.parametrize(
    ("mutate", "problem"),
    [
        (lambda w: w.update(batch_id=b"x" * 15), "16 bytes"),
        (lambda w: w.update(priority=5), "priority must be one of"),
        (lambda w: w.update(flags=64), "flags"),
        (lambda w: w.update(target=""), "node id"),
        (lambda w: w.update(timestamp_ns=-1), "timestamp_ns"),
        (lambda w: w.update(items={}), "items must be a list"),
        (lambda w: w.update(items=[1] * 10_001), "at most 10000"),
        (lambda w: w.update(covers=[["node-a", 2, 1]]), "first"),
        (lambda w: w.update(covers=[["node-a", 1]]), "node, first, last"),
        (lambda w: w.update(tier="hot"), "tier must be one of"),
        (lambda w: w.update(items=w["items"] * 2), "at most one version"),
    ],
)
def test_bad_wire_batches_are_refused(mutate: Any, problem: str) -> None:
    wire = through_msgpack(make_batch().to_wire())
    mutate(wire)
    with pytest.raises(InvalidInputError, match=problem):
        MemorySyncBatch.from_wire(wire)


def test_a_batch_is_not_a_map_is_refused() -> None:
    with pytest.raises(InvalidInputError, match="batch must be a map"):
        MemorySyncBatch.from_wire([1, 2])


@pytest.mark.parametrize("encoding", list(EmbeddingEncoding))
@given(st.lists(st.floats(-1.0, 1.0), min_size=1, max_size=64))
def test_compressed_embeddings_stay_close(encoding: EmbeddingEncoding, vector: list[float]) -> None:
    packed = CompressedEmbedding.compress(vector, "model", encoding)
    again = CompressedEmbedding.from_wire(through_msgpack(packed.to_wire()))
    assert again == packed
    tolerance = max(abs(v) for v in vector) / 254 + 1e-9 if encoding == "int8" else 1e-3
    assert all(abs(a - b) <= tolerance for a, b in zip(vector, again.decompress(), strict=True))
    assert len(packed.data) == len(vector) * (1 if encoding == "int8" else 2)


def test_a_float16_embedding_with_infinity_is_refused() -> None:
    with pytest.raises(InvalidInputError, match="float16"):
        CompressedEmbedding.compress([1e6], "m", EmbeddingEncoding.FLOAT16)
    with pytest.raises(InvalidInputError, match="NaN or an infinity"):
        CompressedEmbedding("m", EmbeddingEncoding.FLOAT16, 1, 1.0, b"\x00\x7c")


def test_batch_ids_are_unique_and_kept() -> None:
    assert make_batch().batch_id != make_batch().batch_id
    fixed = uuid.UUID(int=7)
    batch = MemorySyncBatch.create(
        source="a", target="b", tier="semantic", items=(), timestamp_ns=0, batch_id=fixed
    )
    assert batch.batch_id == fixed and batch.priority is SyncPriority.NORMAL
    with pytest.raises(InvalidInputError, match="tier semantic"):
        MemorySyncBatch.create(
            source="a",
            target="b",
            tier="semantic",
            items=(),
            covers=(ChangeRange("a", "working", 1, 1),),
            timestamp_ns=0,
        )
