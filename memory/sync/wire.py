"""MEMSHADOW v2 framing: the bytes of one message between sync nodes, and the checks a
receiver makes before it believes any of them.

A frame is a 32-byte header followed by ``payload length`` bytes of payload. The header is
one ``struct`` format, big-endian, fixed for version 2::

    HEADER = ">IHHHHHQQH"
    offset size field
         0    4 magic          0x4D534857 ("MSHW")
         4    2 version        2
         6    2 priority       SyncPriority: 0 EMERGENCY, 1 CRITICAL, 2 HIGH, 3 NORMAL, 4 LOW
         8    2 message type   MessageType
        10    2 flags          BatchFlags bits
        12    2 batch count    batches in the body (a list), else 0; saturates at 65535
        14    8 payload length bytes after the header
        22    8 timestamp      nanoseconds since the epoch (a batch frame: its first batch's)
        30    2 reserved       0

The design's field list added up to 42 bytes; these widths keep every field in 32 (the
``struct`` size is asserted at import).

The payload, in order::

    16 bytes           batch id (a UUID's bytes; a single batch's own id)
    2 + n bytes        source node id, UTF-8, length-prefixed (big-endian u16)
    2 + n bytes        target node id or "*", UTF-8, length-prefixed
    1 byte             tier: 0 working, 1 episodic, 2 semantic, 255 none
    rest - 32 bytes    body: msgpack; zstd-compressed when the COMPRESSED flag is set
    32 bytes           SHA-256 of every payload byte before it

The checksum covers the body as sent, so it is verified before anything is decompressed or
unpacked, and a compressed body may expand to at most the receiver's frame limit. The
body of MEMORY_SYNC and MEMORY_STORE is a list of batches in ``MemorySyncBatch.to_wire``
form (each with its own SHA-256 over its items, checked by ``from_wire``): one batch, or
several with the BATCHED flag (the hub's merged LOW traffic).

Message types: MEMORY_STORE 0x0301 (batches the receiver stores and does not relay: the
copy of a peer-to-peer delivery sent to the hub), MEMORY_QUERY 0x0302 (a catch-up request
with the asker's version vector, or a status request), MEMORY_RESPONSE 0x0303 (its answer),
MEMORY_SYNC 0x0304 (batches to apply and, at the hub, route to their target).
Registration and acknowledgement have their own types: NODE_REGISTER 0x0101 (a node's
token, tiers and peer endpoint; the first frame on every connection), NODE_REGISTERED
0x0102 (the hub's answer: the peers it knows), SYNC_ACK 0x0305 (these batch ids are
durably applied), SYNC_ERROR 0x0306 (a refusal and its reason).

Flags: ENCRYPTED (0x1; reserved: sealing bodies is not implemented, so a frame carrying it
is refused as unsupported; confidentiality comes from TLS), COMPRESSED (0x2, zstd),
BATCHED (0x4, the body holds several batches), REQUIRES_ACK (0x8, answer with SYNC_ACK
once applied).

A frame that fails a check raises :class:`FrameError` with its ``reason``: magic, version,
checksum, truncated, oversized, malformed, unsupported here; replayed and unauthorized are
the receiver's checks (it knows which batch ids it applied and who is on the line). The
receiver counts each refusal and applies nothing of the frame.
"""

from __future__ import annotations

import asyncio
import hashlib
import struct
import time
import uuid
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

import msgpack
import zstandard

from memory.core.types import TIERS, Tier
from memory.sync.items import BatchFlags, SyncPriority

# One list of reasons: the rejection counter declares a series for each.
from memory.telemetry.instruments import SYNC_REJECTION_REASONS as REJECTION_REASONS

HEADER = struct.Struct(">IHHHHHQQH")
assert HEADER.size == 32, HEADER.size
MAGIC = 0x4D534857
VERSION = 2
CHECKSUM_BYTES = 32
BATCH_ID_BYTES = 16
#: The default largest payload a receiver accepts (and a compressed body may expand to).
DEFAULT_MAX_FRAME_BYTES = 16 * 1024 * 1024
_LENGTH = struct.Struct(">H")
_NO_TIER = 0xFF


def is_direct(priority: SyncPriority) -> bool:
    """Whether batches of ``priority`` go straight to the peers (CRITICAL, EMERGENCY)."""
    return priority <= SyncPriority.CRITICAL


class MessageType(IntEnum):
    """What a frame carries (see the module docstring)."""

    NODE_REGISTER = 0x0101
    NODE_REGISTERED = 0x0102
    MEMORY_STORE = 0x0301
    MEMORY_QUERY = 0x0302
    MEMORY_RESPONSE = 0x0303
    MEMORY_SYNC = 0x0304
    SYNC_ACK = 0x0305
    SYNC_ERROR = 0x0306


class FrameError(ValueError):
    """A frame refused; ``reason`` is one of ``REJECTION_REASONS``."""

    def __init__(self, reason: str, message: str) -> None:
        assert reason in REJECTION_REASONS, reason
        super().__init__(f"frame refused ({reason}): {message}")
        self.reason = reason


@dataclass(frozen=True)
class Frame:
    """One decoded (or to-be-encoded) message."""

    type: MessageType
    source: str
    target: str
    body: Any
    tier: Tier | None = None
    priority: SyncPriority = SyncPriority.NORMAL
    flags: BatchFlags = BatchFlags.NONE
    batch_id: bytes = field(default_factory=lambda: uuid.uuid4().bytes)
    timestamp_ns: int = 0

    @property
    def batch_count(self) -> int:
        return min(len(self.body), 0xFFFF) if isinstance(self.body, list) else 0


def _prefixed(text: str) -> bytes:
    raw = text.encode("utf-8")
    if len(raw) > 0xFFFF:
        raise ValueError(f"node id of {len(raw)} bytes: at most 65535")
    return _LENGTH.pack(len(raw)) + raw


def encode(frame: Frame, *, compress_at: int | None = None) -> bytes:
    """The frame's bytes. The body is compressed when the COMPRESSED flag is set, or when
    ``compress_at`` is given and the packed body is at least that many bytes."""
    if len(frame.batch_id) != BATCH_ID_BYTES:
        raise ValueError(f"batch id of {len(frame.batch_id)} bytes: must be {BATCH_ID_BYTES}")
    body = msgpack.packb(frame.body, use_bin_type=True)
    flags = frame.flags
    if compress_at is not None and len(body) >= compress_at:
        flags |= BatchFlags.COMPRESSED
    if flags & BatchFlags.COMPRESSED:
        body = zstandard.ZstdCompressor().compress(body)
    if isinstance(frame.body, list) and len(frame.body) > 1:
        flags |= BatchFlags.BATCHED
    payload = b"".join(
        (
            frame.batch_id,
            _prefixed(frame.source),
            _prefixed(frame.target),
            bytes((_NO_TIER if frame.tier is None else TIERS.index(frame.tier),)),
            body,
        )
    )
    payload += hashlib.sha256(payload).digest()
    header = HEADER.pack(
        MAGIC,
        VERSION,
        int(frame.priority),
        int(frame.type),
        int(flags),
        frame.batch_count,
        len(payload),
        frame.timestamp_ns or time.time_ns(),
        0,
    )
    return header + payload


@dataclass(frozen=True)
class Header:
    priority: int
    type: int
    flags: int
    batch_count: int
    length: int
    timestamp_ns: int


def decode_header(raw: bytes, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> Header:
    """The header in ``raw`` (32 bytes), checked: magic, version, length within the limit."""
    if len(raw) < HEADER.size:
        raise FrameError("truncated", f"header of {len(raw)} bytes, expected {HEADER.size}")
    magic, version, priority, kind, flags, count, length, timestamp, _ = HEADER.unpack(
        raw[: HEADER.size]
    )
    if magic != MAGIC:
        raise FrameError("magic", f"magic 0x{magic:08X}, expected 0x{MAGIC:08X}")
    if version != VERSION:
        raise FrameError("version", f"version {version}, this node speaks {VERSION}")
    if length > max_frame_bytes:
        raise FrameError("oversized", f"payload of {length} bytes, the limit is {max_frame_bytes}")
    return Header(priority, kind, flags, count, length, timestamp)


def _take_prefixed(payload: bytes, at: int) -> tuple[str, int]:
    (size,) = _LENGTH.unpack_from(payload, at)
    start = at + _LENGTH.size
    if start + size > len(payload):
        raise FrameError("malformed", "a node id runs past the payload")
    return payload[start : start + size].decode("utf-8"), start + size


def decode_payload(
    header: Header, payload: bytes, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES
) -> Frame:
    """The frame of ``header`` whose payload is ``payload``, checked: length, checksum,
    supported type and flags, well-formed fields."""
    if len(payload) < header.length:
        raise FrameError(
            "truncated", f"payload of {len(payload)} bytes, header says {header.length}"
        )
    payload = payload[: header.length]
    minimum = BATCH_ID_BYTES + 2 * _LENGTH.size + 1 + CHECKSUM_BYTES
    if len(payload) < minimum:
        raise FrameError("malformed", f"payload of {len(payload)} bytes, at least {minimum}")
    content, checksum = payload[:-CHECKSUM_BYTES], payload[-CHECKSUM_BYTES:]
    if hashlib.sha256(content).digest() != checksum:
        raise FrameError("checksum", "the payload's SHA-256 does not match")
    try:
        kind = MessageType(header.type)
        priority = SyncPriority(header.priority)
        flags = BatchFlags(header.flags)
    except ValueError as error:
        raise FrameError("unsupported", str(error)) from None
    if flags & BatchFlags.ENCRYPTED:
        raise FrameError("unsupported", "ENCRYPTED bodies are not supported; use TLS")
    try:
        at = BATCH_ID_BYTES
        source, at = _take_prefixed(content, at)
        target, at = _take_prefixed(content, at)
        tier_byte, body = content[at], content[at + 1 :]
        if tier_byte != _NO_TIER and tier_byte >= len(TIERS):
            raise FrameError("malformed", f"tier {tier_byte}: expected 0..{len(TIERS) - 1}")
        if flags & BatchFlags.COMPRESSED:
            body = _decompress(body, max_frame_bytes)
        unpacked = msgpack.unpackb(body, raw=False, strict_map_key=False)
    except FrameError:
        raise
    except (
        ValueError,
        IndexError,
        struct.error,
        zstandard.ZstdError,
        msgpack.UnpackException,
    ) as e:
        raise FrameError("malformed", f"{type(e).__name__}: {e}") from None
    # The header's count saturates at 0xFFFF for larger batches.
    count = min(len(unpacked), 0xFFFF) if isinstance(unpacked, list) else 0
    if header.batch_count != count:
        raise FrameError("malformed", f"batch count {header.batch_count}, body holds {count}")
    return Frame(
        type=kind,
        source=source,
        target=target,
        body=unpacked,
        tier=None if tier_byte == _NO_TIER else TIERS[tier_byte],
        priority=priority,
        flags=flags,
        batch_id=bytes(content[:BATCH_ID_BYTES]),
        timestamp_ns=header.timestamp_ns,
    )


def _decompress(body: bytes, limit: int) -> bytes:
    # Streamed in chunks and counted: a one-shot decompress trusts the size the zstd frame
    # header declares, so a small body could expand to any size.
    chunks, total = [], 0
    with zstandard.ZstdDecompressor().stream_reader(body) as reader:
        while chunk := reader.read(65536):
            total += len(chunk)
            if total > limit:
                raise FrameError("oversized", f"the body expands past the limit of {limit} bytes")
            chunks.append(chunk)
    return b"".join(chunks)


def decode(raw: bytes, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> Frame:
    """The frame in ``raw`` (header and payload)."""
    header = decode_header(raw, max_frame_bytes)
    return decode_payload(header, raw[HEADER.size :], max_frame_bytes)


async def read_frame(
    reader: asyncio.StreamReader, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES
) -> Frame | None:
    """The next frame on ``reader``; None when the stream ends cleanly between frames.

    The header is checked before the payload is read, so an oversized length is refused
    without reading (or allocating) it."""
    try:
        raw = await reader.readexactly(HEADER.size)
    except asyncio.IncompleteReadError as error:
        if not error.partial:
            return None
        message = f"stream ended after {len(error.partial)} header bytes"
        raise FrameError("truncated", message) from None
    header = decode_header(raw, max_frame_bytes)
    try:
        payload = await reader.readexactly(header.length)
    except asyncio.IncompleteReadError as error:
        raise FrameError(
            "truncated", f"stream ended after {len(error.partial)} of {header.length} bytes"
        ) from None
    return decode_payload(header, payload, max_frame_bytes)
