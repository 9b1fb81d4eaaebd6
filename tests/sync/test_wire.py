"""MEMSHADOW v2 frames: the exact 32-byte header, round trips, and every refusal."""

from __future__ import annotations

import asyncio
import hashlib
import struct

import msgpack
import pytest
import zstandard
from hypothesis import given
from hypothesis import strategies as st

from memory.core.types import TIERS, Tier
from memory.sync.items import BatchFlags as Flag
from memory.sync.items import SyncPriority as Priority
from memory.sync.wire import (
    HEADER,
    MAGIC,
    Frame,
    FrameError,
    MessageType,
    decode,
    encode,
    read_frame,
)

ITEMS = [{"memory_id": f"m{i}", "content": "x" * 50, "version": i} for i in range(3)]


def frame(**changes: object) -> Frame:
    fields: dict[str, object] = dict(
        type=MessageType.MEMORY_SYNC, source="spoke-1", target="*", body=ITEMS, tier="episodic",
        priority=Priority.CRITICAL, flags=Flag.REQUIRES_ACK, batch_id=bytes(range(16)),
        timestamp_ns=1_700_000_000_123_456_789,
    )  # fmt: skip
    fields.update(changes)
    return Frame(**fields)  # type: ignore[arg-type]


def test_the_header_is_the_documented_32_bytes() -> None:
    assert HEADER.format == ">IHHHHHQQH" and HEADER.size == 32
    raw = encode(frame())
    magic, version, priority, kind, flags, count, length, timestamp, reserved = struct.unpack(
        ">IHHHHHQQH", raw[:32]
    )
    assert raw[:4] == b"MSHW" and magic == MAGIC == 0x4D534857
    assert (version, priority, kind) == (2, 1, 0x0304)  # CRITICAL is 1
    assert flags == Flag.REQUIRES_ACK | Flag.BATCHED
    assert (count, length, timestamp, reserved) == (3, len(raw) - 32, 1_700_000_000_123_456_789, 0)
    # The payload: batch id, prefixed source and target, tier, msgpack body, SHA-256.
    payload = raw[32:]
    assert payload[:16] == bytes(range(16))
    assert payload[16:18] == b"\x00\x07" and payload[18:25] == b"spoke-1"
    assert payload[25:27] == b"\x00\x01" and payload[27:28] == b"*"
    assert payload[28] == 1
    assert msgpack.unpackb(payload[29:-32]) == ITEMS
    assert payload[-32:] == hashlib.sha256(payload[:-32]).digest()


@given(
    body=st.lists(
        st.dictionaries(
            st.text(max_size=8), st.integers(-(2**63), 2**64 - 1) | st.text() | st.binary()
        ),
        max_size=5,
    ),
    source=st.text(min_size=1, max_size=30),
    tier=st.sampled_from(TIERS),
    priority=st.sampled_from(Priority),
    compress=st.booleans(),
)
def test_frames_round_trip(
    body: list[dict[str, object]], source: str, tier: Tier, priority: Priority, compress: bool
) -> None:
    sent = frame(body=body, source=source, tier=tier, priority=priority)
    received = decode(encode(sent, compress_at=0 if compress else None))
    assert received.body == body and received.source == source and received.tier == tier
    assert received.priority == priority and received.batch_id == sent.batch_id
    assert bool(received.flags & Flag.COMPRESSED) == compress


def test_large_bodies_travel_compressed() -> None:
    big = [{"content": "the same words " * 200} for _ in range(50)]
    raw = encode(frame(body=big), compress_at=4096)
    assert len(raw) < len(msgpack.packb(big)) / 10
    assert decode(raw).body == big


def refused(raw: bytes, reason: str, max_frame_bytes: int = 1 << 20) -> FrameError:
    with pytest.raises(FrameError) as caught:
        decode(raw, max_frame_bytes)
    assert caught.value.reason == reason
    return caught.value


def test_a_wrong_magic_is_refused() -> None:
    raw = bytearray(encode(frame()))
    raw[0:4] = b"HTTP"
    assert "magic 0x48545450, expected 0x4D534857" in str(refused(bytes(raw), "magic"))


def test_a_wrong_version_is_refused() -> None:
    raw = bytearray(encode(frame()))
    raw[4:6] = (1).to_bytes(2, "big")
    assert "version 1, this node speaks 2" in str(refused(bytes(raw), "version"))


def test_a_bad_checksum_is_refused() -> None:
    raw = bytearray(encode(frame()))
    raw[40] ^= 0xFF  # a byte of the source id
    refused(bytes(raw), "checksum")


def test_a_truncated_frame_is_refused() -> None:
    raw = encode(frame())
    assert "header says" in str(refused(raw[:-1], "truncated"))
    refused(raw[:20], "truncated")


def test_an_oversized_length_is_refused_before_the_payload_is_read() -> None:
    raw = bytearray(encode(frame()))
    raw[14:22] = (1 << 40).to_bytes(8, "big")
    assert "the limit is 1048576" in str(refused(bytes(raw[:32]), "oversized"))


def test_a_compressed_body_may_not_expand_past_the_limit() -> None:
    bomb = zstandard.ZstdCompressor().compress(msgpack.packb(["a" * (2 << 20)]))
    sent = encode(frame(body=["x"]))
    # Rebuild the frame around the bomb with a valid checksum: only the size stops it.
    payload = bytes(range(16)) + b"\x00\x01a\x00\x01*\x00" + bomb
    bomb_payload = payload + hashlib.sha256(payload).digest()
    header = HEADER.pack(MAGIC, 2, 3, 0x0304, int(Flag.COMPRESSED), 1,
                         len(bomb_payload), 0, 0)  # fmt: skip
    assert decode(sent).body == ["x"]
    assert "expands past the limit" in str(refused(header + bomb_payload, "oversized"))


def test_an_encrypted_flag_is_refused_as_unsupported() -> None:
    assert "use TLS" in str(refused(encode(frame(flags=Flag.ENCRYPTED)), "unsupported"))


def test_a_batch_count_that_disagrees_with_the_body_is_refused() -> None:
    raw = bytearray(encode(frame()))
    raw[12:14] = (7).to_bytes(2, "big")
    refused(bytes(raw), "malformed")


def test_a_stream_reads_frames_and_refuses_a_cut_one() -> None:
    async def read(data: bytes) -> list[Frame | None]:
        reader = asyncio.StreamReader()
        reader.feed_data(data)
        reader.feed_eof()
        frames = []
        while (got := await read_frame(reader)) is not None:
            frames.append(got)
        return frames

    first, second = encode(frame()), encode(frame(tier="semantic", body=[]))
    assert [f.tier for f in asyncio.run(read(first + second))] == ["episodic", "semantic"]  # type: ignore[union-attr]
    with pytest.raises(FrameError, match="stream ended after 10 of") as caught:
        asyncio.run(read(first + second[:42]))
    assert caught.value.reason == "truncated"
