"""Hub-spoke sync's units of transfer: ``MemorySyncItem`` (one version of one memory) and
``MemorySyncBatch`` (items of one tier from one node, checksummed), with their plain-dict
wire forms.

Public through ``memory.sync.items``; it lives in ``core`` because the store applies
items inside one transaction and may not import ``memory.sync``.

Wire form. ``to_wire()`` gives dicts of str, int, float, bytes, None and lists only, ready
for msgpack (``use_bin_type=True``); ``from_wire()`` takes that shape from an untrusted
peer and checks every type, size and invariant, raising ``InvalidInputError`` naming the
field. Metadata travels as its canonical JSON text, so the encoding of a batch is one
byte string whatever the key order a sender used.

Checksum. ``MemorySyncBatch.checksum`` is the SHA-256 of the msgpack encoding of
``[covers, items]`` in wire form (``batch_checksum``). A batch object always carries the
right one: the constructor recomputes and compares it, so a batch read off the wire with a
bad checksum never exists.

Items carry the whole state of the memory (not a diff), so an ``update_meta`` can be
applied on a node that never saw the memory, and applying the greater ``Stamp`` of any set
of items gives the same state in any order. A ``delete`` carries no content: it is the
tombstone.
"""

from __future__ import annotations

import hashlib
import math
import struct
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import IntEnum, IntFlag, StrEnum
from typing import Any, TypeVar, cast

from pydantic import TypeAdapter, ValidationError

from memory.core.errors import InvalidInputError
from memory.core.inputs import Content, Identifier, Metadata, canonical_json, content_hash
from memory.core.sync_clocks import (
    HLC_MAX,
    MAX_SEQ,
    ChangeRange,
    Stamp,
    VersionInfo,
    check_node_id,
    check_tier,
)
from memory.core.types import ID_LENGTH, VISIBILITIES, Tier, Visibility

MAX_BATCH_ITEMS = 10_000
MAX_BATCH_RANGES = 4_096
MAX_EMBEDDING_DIMS = 4_096
ALL_NODES = "*"
_UINT64_MAX = 2**64 - 1
# A memory's version is an INTEGER column (memories.version) on every backend.
MAX_VERSION = 2**31 - 1
_T = TypeVar("_T")

_identifier: TypeAdapter[str] = TypeAdapter(Identifier)
_content: TypeAdapter[str] = TypeAdapter(Content)
_metadata: TypeAdapter[dict[str, Any]] = TypeAdapter(Metadata)


class SyncOperation(StrEnum):
    """What the write that made an item's version did."""

    UPSERT = "upsert"
    UPDATE_META = "update_meta"
    DELETE = "delete"


class SyncPriority(IntEnum):
    """How urgently a batch travels; 0 is the most urgent. EMERGENCY and CRITICAL go
    peer to peer (with a copy to the hub); HIGH and NORMAL are relayed; LOW waits to be
    batched."""

    EMERGENCY = 0
    CRITICAL = 1
    HIGH = 2
    NORMAL = 3
    LOW = 4


class BatchFlags(IntFlag):
    """How a batch's frame is encoded (MEMSHADOW v2 header flags)."""

    NONE = 0
    ENCRYPTED = 1
    COMPRESSED = 2  # zstd
    BATCHED = 4
    REQUIRES_ACK = 8


class EmbeddingEncoding(StrEnum):
    """How an embedding is packed: int8 with one scale (1 byte a dimension, the smallest)
    or IEEE float16 (2 bytes, closer)."""

    INT8 = "int8"
    FLOAT16 = "float16"


_E = TypeVar("_E", SyncOperation, SyncPriority, EmbeddingEncoding)
_WIDTH = {EmbeddingEncoding.INT8: 1, EmbeddingEncoding.FLOAT16: 2}


@dataclass(frozen=True, slots=True)
class CompressedEmbedding:
    """A memory's embedding, packed little-endian, with the model that computed it: a
    receiver whose model differs embeds the content again instead of using it."""

    model: str
    encoding: EmbeddingEncoding
    dims: int
    scale: float
    data: bytes

    def __post_init__(self) -> None:
        _printable("embedding model", self.model)
        if self.encoding not in _WIDTH:
            raise InvalidInputError(
                f"embedding encoding must be int8 or float16, not {self.encoding!r:.40}"
            )
        _int("embedding dims", self.dims, 1, MAX_EMBEDDING_DIMS)
        if not isinstance(self.scale, float) or not math.isfinite(self.scale) or self.scale <= 0:
            raise InvalidInputError("embedding scale must be a positive finite float")
        if not isinstance(self.data, bytes) or len(self.data) != self.dims * _WIDTH[self.encoding]:
            raise InvalidInputError(
                f"embedding data must be {self.dims * _WIDTH[self.encoding]} bytes for "
                f"{self.dims} {self.encoding} dimensions"
            )
        if not all(math.isfinite(value) for value in self.decompress()):
            raise InvalidInputError("embedding holds a NaN or an infinity")

    @classmethod
    def compress(
        cls, vector: Sequence[float], model: str, encoding: EmbeddingEncoding
    ) -> CompressedEmbedding:
        """Pack ``vector`` (computed by ``model``).

        >>> packed = CompressedEmbedding.compress([0.5, -1.0], "m", EmbeddingEncoding.INT8)
        >>> [round(v, 2) for v in packed.decompress()]
        [0.5, -1.0]
        """
        dims = len(vector)
        if encoding is EmbeddingEncoding.FLOAT16:
            try:
                data = struct.pack(f"<{dims}e", *vector)
            except (OverflowError, struct.error) as exc:
                raise InvalidInputError(f"embedding does not fit float16: {exc}") from None
            return cls(model, encoding, dims, 1.0, data)
        peak = max((abs(value) for value in vector), default=0.0)
        scale = peak / 127 if peak > 0 else 1.0
        quantised = [max(-127, min(127, round(value / scale))) for value in vector]
        return cls(model, encoding, dims, float(scale), struct.pack(f"<{dims}b", *quantised))

    def decompress(self) -> list[float]:
        """The vector, as floats."""
        if self.encoding is EmbeddingEncoding.FLOAT16:
            return list(struct.unpack(f"<{self.dims}e", self.data))
        return [value * self.scale for value in struct.unpack(f"<{self.dims}b", self.data)]

    def to_wire(self) -> dict[str, Any]:
        """The msgpack-ready dict."""
        return {
            "model": self.model,
            "encoding": self.encoding.value,
            "dims": self.dims,
            "scale": self.scale,
            "data": self.data,
        }

    @classmethod
    def from_wire(cls, value: object) -> CompressedEmbedding:
        """Read ``to_wire``'s shape from an untrusted peer."""
        wire = _record("embedding", value, ("model", "encoding", "dims", "scale", "data"))
        return cls(
            model=wire["model"],
            encoding=_enum("embedding encoding", EmbeddingEncoding, wire["encoding"]),
            dims=wire["dims"],
            scale=wire["scale"],
            data=wire["data"],
        )


@dataclass(frozen=True, slots=True)
class MemorySyncItem:
    """One version of one memory, as a node sends it.

    ``memory_id`` is the memory's id across nodes (local row ids differ per node).
    ``hlc`` and ``origin`` are the ``Stamp`` of the write that made this version,
    ``seq`` its number in the origin's change sequence of ``tier``, ``version`` the
    per-memory counter (previous + 1). ``content``, ``content_hash`` and ``embedding`` are
    None for a delete. ``expires_at_ms`` is the memory's expiry (Unix milliseconds).
    """

    memory_id: str
    user_id: str
    agent_id: str
    session_id: str | None
    tier: Tier
    operation: SyncOperation
    content: str | None
    content_hash: str | None
    importance: float
    visibility: Visibility
    metadata: Mapping[str, Any]
    embedding: CompressedEmbedding | None
    expires_at_ms: int | None
    hlc: int
    version: int
    origin: str
    seq: int

    def __post_init__(self) -> None:
        _printable("memory_id", self.memory_id)
        for name in ("user_id", "agent_id"):
            _validated(name, _identifier, getattr(self, name))
        if self.session_id is not None:
            _validated("session_id", _identifier, self.session_id)
        check_tier(self.tier)
        operation = _enum("operation", SyncOperation, self.operation)
        if operation is SyncOperation.DELETE:
            if self.content is not None or self.content_hash is not None or self.embedding:
                raise InvalidInputError("a delete item carries no content, hash or embedding")
        else:
            _validated("content", _content, self.content)
            if self.content_hash != content_hash(cast(str, self.content)):
                raise InvalidInputError("content_hash is not the SHA-256 of content")
        if (
            not isinstance(self.importance, float)
            or not math.isfinite(self.importance)
            or not 0.0 <= self.importance <= 1.0
        ):
            raise InvalidInputError("importance must be a float in 0..1")
        if self.visibility not in VISIBILITIES:
            raise InvalidInputError(f"visibility must be one of {', '.join(VISIBILITIES)}")
        if not isinstance(self.metadata, Mapping):
            raise InvalidInputError("metadata must be a mapping")
        _validated("metadata", _metadata, dict(self.metadata))
        if self.embedding is not None and not isinstance(self.embedding, CompressedEmbedding):
            raise InvalidInputError("embedding must be a CompressedEmbedding or None")
        if self.expires_at_ms is not None:
            _int("expires_at_ms", self.expires_at_ms, 0, _UINT64_MAX)
        _int("hlc", self.hlc, 1, HLC_MAX)
        _int("version", self.version, 1, MAX_VERSION)
        check_node_id(self.origin)
        _int("seq", self.seq, 1, MAX_SEQ)

    @property
    def stamp(self) -> Stamp:
        """Who wrote this version and when: what conflict resolution orders by."""
        return Stamp(self.hlc, self.origin)

    @property
    def version_info(self) -> VersionInfo:
        """What ``resolve`` needs of this version."""
        return VersionInfo(self.stamp, self.version, self.operation is SyncOperation.DELETE)

    def to_wire(self) -> dict[str, Any]:
        """The msgpack-ready dict (metadata as canonical JSON text)."""
        return {
            "memory_id": self.memory_id,
            "user_id": self.user_id,
            "agent_id": self.agent_id,
            "session_id": self.session_id,
            "tier": self.tier,
            "operation": self.operation.value,
            "content": self.content,
            "content_hash": self.content_hash,
            "importance": self.importance,
            "visibility": self.visibility,
            "metadata": canonical_json(dict(self.metadata)),
            "embedding": None if self.embedding is None else self.embedding.to_wire(),
            "expires_at_ms": self.expires_at_ms,
            "hlc": self.hlc,
            "version": self.version,
            "origin": self.origin,
            "seq": self.seq,
        }

    @classmethod
    def from_wire(cls, value: object) -> MemorySyncItem:
        """Read ``to_wire``'s shape from an untrusted peer."""
        wire = _record("item", value, _ITEM_FIELDS)
        metadata_text = wire["metadata"]
        if not isinstance(metadata_text, str) or len(metadata_text) > _MAX_METADATA_TEXT:
            raise InvalidInputError(f"metadata must be JSON text of at most {_MAX_METADATA_TEXT}")
        metadata = _validated("metadata", _metadata, metadata_text, json=True)
        if canonical_json(metadata) != metadata_text:
            raise InvalidInputError("metadata must be canonical JSON (sorted keys, no spaces)")
        embedding = wire["embedding"]
        fields = {
            **wire,
            "metadata": metadata,
            "operation": _enum("operation", SyncOperation, wire["operation"]),
            "embedding": None if embedding is None else CompressedEmbedding.from_wire(embedding),
        }
        return cls(**fields)


_ITEM_FIELDS = tuple(MemorySyncItem.__dataclass_fields__)
# Every value at most its byte limit, plus keys and punctuation: well above any valid one.
_MAX_METADATA_TEXT = 64 * 1024


def batch_checksum(covers: Sequence[ChangeRange], items: Sequence[MemorySyncItem]) -> bytes:
    """SHA-256 of the msgpack encoding of ``[covers, items]`` in wire form."""
    return hashlib.sha256(
        _packb([_range_to_wire(change) for change in covers], [i.to_wire() for i in items])
    ).digest()


@dataclass(frozen=True, slots=True)
class MemorySyncBatch:
    """Items of one tier that ``source`` sends to ``target`` (a node id, or ``"*"`` for
    every node), and the change ranges of that tier the items complete (``covers``): a
    receiver that applies the batch has everything those ranges wrote, or newer.

    ``batch_id`` makes re-delivery harmless: a store applies a batch id once. Build one
    with ``MemorySyncBatch.create``; the constructor checks the ``checksum``.
    """

    batch_id: uuid.UUID
    source: str
    target: str
    tier: Tier
    priority: SyncPriority
    flags: BatchFlags
    timestamp_ns: int
    covers: tuple[ChangeRange, ...]
    items: tuple[MemorySyncItem, ...]
    checksum: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.batch_id, uuid.UUID):
            raise InvalidInputError("batch_id must be a UUID")
        check_node_id(self.source)
        if self.target != ALL_NODES:
            check_node_id(self.target)
        check_tier(self.tier)
        _enum("priority", SyncPriority, self.priority)
        if not isinstance(self.flags, BatchFlags):
            raise InvalidInputError("flags must be BatchFlags")
        _int("timestamp_ns", self.timestamp_ns, 0, _UINT64_MAX)
        if not isinstance(self.covers, tuple) or len(self.covers) > MAX_BATCH_RANGES:
            raise InvalidInputError(f"covers must be a tuple of at most {MAX_BATCH_RANGES}")
        for change in self.covers:
            if not isinstance(change, ChangeRange) or change.tier != self.tier:
                raise InvalidInputError(f"covers must be ChangeRanges of tier {self.tier}")
        if not isinstance(self.items, tuple) or len(self.items) > MAX_BATCH_ITEMS:
            raise InvalidInputError(f"items must be a tuple of at most {MAX_BATCH_ITEMS}")
        if not all(isinstance(item, MemorySyncItem) for item in self.items):
            raise InvalidInputError("items must be MemorySyncItems")
        if len({item.memory_id for item in self.items}) != len(self.items):
            raise InvalidInputError("a batch holds at most one version of each memory")
        if not isinstance(self.checksum, bytes) or len(self.checksum) != 32:
            raise InvalidInputError("checksum must be 32 bytes (SHA-256)")
        if self.checksum != batch_checksum(self.covers, self.items):
            raise InvalidInputError("checksum does not match the batch's items: refused")

    @classmethod
    def create(
        cls,
        *,
        source: str,
        target: str,
        tier: Tier,
        items: Sequence[MemorySyncItem],
        covers: Sequence[ChangeRange] = (),
        priority: SyncPriority = SyncPriority.NORMAL,
        flags: BatchFlags = BatchFlags.NONE,
        timestamp_ns: int,
        batch_id: uuid.UUID | None = None,
    ) -> MemorySyncBatch:
        """A new batch (a random id unless given), its checksum computed."""
        covers, items = tuple(covers), tuple(items)
        return cls(
            batch_id=batch_id or uuid.uuid4(),
            source=source,
            target=target,
            tier=tier,
            priority=priority,
            flags=flags,
            timestamp_ns=timestamp_ns,
            covers=covers,
            items=items,
            checksum=batch_checksum(covers, items),
        )

    def to_wire(self) -> dict[str, Any]:
        """The msgpack-ready dict; ``batch_id`` as its 16 bytes."""
        return {
            "batch_id": self.batch_id.bytes,
            "source": self.source,
            "target": self.target,
            "tier": self.tier,
            "priority": int(self.priority),
            "flags": int(self.flags),
            "timestamp_ns": self.timestamp_ns,
            "covers": [_range_to_wire(change) for change in self.covers],
            "items": [item.to_wire() for item in self.items],
            "checksum": self.checksum,
        }

    @classmethod
    def from_wire(cls, value: object) -> MemorySyncBatch:
        """Read ``to_wire``'s shape from an untrusted peer: every field checked, and the
        checksum; ``InvalidInputError`` names what is wrong."""
        wire = _record("batch", value, _BATCH_FIELDS)
        batch_id = wire["batch_id"]
        if not isinstance(batch_id, bytes) or len(batch_id) != 16:
            raise InvalidInputError("batch_id must be 16 bytes")
        covers, items = wire["covers"], wire["items"]
        if not isinstance(covers, list) or len(covers) > MAX_BATCH_RANGES:
            raise InvalidInputError(f"covers must be a list of at most {MAX_BATCH_RANGES}")
        if not isinstance(items, list) or len(items) > MAX_BATCH_ITEMS:
            raise InvalidInputError(f"items must be a list of at most {MAX_BATCH_ITEMS}")
        tier = wire["tier"]
        check_tier(tier)
        flags = wire["flags"]
        _int("flags", flags, 0, int(~BatchFlags.NONE))
        return cls(
            batch_id=uuid.UUID(bytes=batch_id),
            source=wire["source"],
            target=wire["target"],
            tier=tier,
            priority=_enum("priority", SyncPriority, wire["priority"]),
            flags=BatchFlags(flags),
            timestamp_ns=wire["timestamp_ns"],
            covers=tuple(_range_from_wire(tier, change) for change in covers),
            items=tuple(MemorySyncItem.from_wire(item) for item in items),
            checksum=wire["checksum"],
        )


_BATCH_FIELDS = tuple(MemorySyncBatch.__dataclass_fields__)


def _range_to_wire(change: ChangeRange) -> list[Any]:
    return [change.node, change.first, change.last]


def _range_from_wire(tier: Tier, value: object) -> ChangeRange:
    if not isinstance(value, list) or len(value) != 3:
        raise InvalidInputError("a covered range must be [node, first, last]")
    node, first, last = value
    _int("range first", first, 1, MAX_SEQ)
    _int("range last", last, 1, MAX_SEQ)
    return ChangeRange(node, tier, first, last)


def _packb(*values: Any) -> bytes:
    try:
        import msgpack
    except ImportError:  # pragma: no cover - the extra is part of `test`
        raise InvalidInputError(
            "hub-spoke sync needs msgpack: pip install 'tiered-memory[sync]'"
        ) from None
    return cast(bytes, msgpack.packb(list(values), use_bin_type=True))


def _record(what: str, value: object, fields: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InvalidInputError(f"{what} must be a map")
    if set(value) != set(fields):
        missing = sorted(set(fields) - set(value))
        extra = sorted(str(key)[:40] for key in set(value) - set(fields))
        raise InvalidInputError(f"{what} fields wrong: missing {missing}, unknown {extra}")
    return value


def _int(what: str, value: object, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidInputError(f"{what} must be an integer in {low}..{high}")


def _printable(what: str, value: object) -> None:
    if not isinstance(value, str) or not 1 <= len(value) <= ID_LENGTH or not value.isprintable():
        raise InvalidInputError(f"{what} must be 1..{ID_LENGTH} printable characters")


def _enum(what: str, kind: type[_E], value: object) -> _E:
    try:
        return kind(value)  # type: ignore[arg-type]  # a wrong type is the ValueError below
    except (ValueError, TypeError):
        names = ", ".join(str(member.value) for member in kind)
        raise InvalidInputError(f"{what} must be one of {names} (got {value!r:.40})") from None


def _validated(what: str, adapter: TypeAdapter[_T], value: object, json: bool = False) -> _T:
    try:
        if json:
            return adapter.validate_json(cast(str, value))
        return adapter.validate_python(value, strict=True)
    except ValidationError as exc:
        problem = exc.errors()[0]["msg"]
        raise InvalidInputError(f"{what}: {problem}") from None
