"""The transport under MEMSHADOW frames: asyncio TCP streams (TLS when given a certificate),
node credentials, and the handshake every connection starts with.

A node proves its id with a token, ``HMAC-SHA256(cluster secret, node id)``
(:func:`node_token`): the hub and the peers hold the secret, so the id a connection acts
for comes from its credential, and every batch it sends must name that id as its source.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import ssl
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import structlog

from memory import InvalidInputError
from memory.sync.items import BatchFlags, MemorySyncBatch
from memory.sync.wire import (
    DEFAULT_MAX_FRAME_BYTES,
    Frame,
    FrameError,
    MessageType,
    encode,
    read_frame,
)
from memory.telemetry.instruments import SYNC_REJECTION_REASONS, instruments

# Each line a JSON object, handed to the standard library's logger "memory.sync": a library
# must not print, so where the lines go is the application's choice (memctl serve sends
# them to standard error with its own; see log_to).
LOGGER = logging.getLogger("memory.sync")
log = structlog.wrap_logger(
    LOGGER,
    wrapper_class=structlog.stdlib.BoundLogger,
    processors=[
        structlog.stdlib.filter_by_level,
        structlog.stdlib.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.JSONRenderer(),
    ],
)


def log_to(stream: TextIO, level: int = logging.INFO) -> None:
    """Write memory.sync's log lines (JSON) to ``stream`` from ``level`` on."""
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(message)s"))
    LOGGER.addHandler(handler)
    LOGGER.setLevel(level)


#: The cluster secret of ``memctl sync`` (node tokens derive from it).
SECRET_ENV = "MEMORY_SYNC_SECRET"
#: Bodies at least this large travel zstd-compressed.
COMPRESS_AT = 4096


def node_token(secret: str, node_id: str) -> str:
    """The credential of ``node_id`` in the cluster whose secret is ``secret``."""
    return hmac.new(secret.encode(), node_id.encode(), hashlib.sha256).hexdigest()


def token_is_valid(secret: str, node_id: str, token: object) -> bool:
    return isinstance(token, str) and hmac.compare_digest(node_token(secret, node_id), token)


def count_rejection(reason: str) -> None:
    instruments().sync_frames_rejected.add(1, _REASONS[reason])


# Module-level attribute dicts: the metrics queue sums increments by their identity.
_REASONS = {reason: {"reason": reason} for reason in SYNC_REJECTION_REASONS}


def server_tls(cert: Path | None, key: Path | None) -> ssl.SSLContext | None:
    """A server TLS context for ``cert``/``key`` (PEM), or None for plain TCP."""
    if cert is None or key is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context


def client_tls(ca: Path | None) -> ssl.SSLContext | None:
    """A client TLS context trusting ``ca`` (PEM), or None for plain TCP."""
    if ca is None:
        return None
    return ssl.create_default_context(cafile=str(ca))


@dataclass(frozen=True)
class Endpoint:
    """Where a node listens: ``host:port``."""

    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> Endpoint:
        host, _, port = text.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"endpoint {text!r}: expected HOST:PORT")
        return cls(host, int(port))

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


class Connection:
    """One stream of frames; reads count and raise what they refuse."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.max_frame_bytes = max_frame_bytes
        self._write_lock = asyncio.Lock()

    @classmethod
    async def open(
        cls,
        endpoint: Endpoint,
        tls: ssl.SSLContext | None = None,
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
        timeout: float = 5.0,
    ) -> Connection:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(
                endpoint.host,
                endpoint.port,
                ssl=tls,
                server_hostname=endpoint.host if tls else None,
                limit=1 << 20,
            ),
            timeout,
        )
        return cls(reader, writer, max_frame_bytes)

    async def send(self, frame: Frame | bytes) -> None:
        """Send ``frame`` (or a frame already encoded, to send one to many links)."""
        data = frame if isinstance(frame, bytes) else encode(frame, compress_at=COMPRESS_AT)
        async with self._write_lock:
            self.writer.write(data)
            await self.writer.drain()

    async def receive(self) -> Frame | None:
        """The next frame, None at a clean end of stream; a refused frame is counted and
        raised (:class:`FrameError`): the stream cannot be trusted past it."""
        try:
            return await read_frame(self.reader, self.max_frame_bytes)
        except FrameError as error:
            count_rejection(error.reason)
            raise

    async def refuse(self, node: str, error: FrameError) -> None:
        """Tell the other side why it is being cut off, then close."""
        log.warning("sync frame refused", reason=error.reason, error=str(error), peer=self.peer)
        try:
            await self.send(
                Frame(
                    MessageType.SYNC_ERROR,
                    node,
                    "",
                    {"reason": error.reason, "message": str(error)},
                )
            )
        except (OSError, RuntimeError):
            pass
        await self.close()

    @property
    def peer(self) -> str:
        name: Any = self.writer.get_extra_info("peername")
        return f"{name[0]}:{name[1]}" if isinstance(name, tuple) else str(name)

    async def close(self) -> None:
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except (OSError, ConnectionError):
            pass


def batch_frame(
    kind: MessageType,
    sender: str,
    target: str,
    batches: Sequence[MemorySyncBatch],
    flags: BatchFlags = BatchFlags.NONE,
) -> Frame:
    """A frame carrying ``batches`` (one, or several merged), sent by ``sender``."""
    first = batches[0]
    one = len(batches) == 1
    return Frame(
        kind,
        sender,
        target,
        [batch.to_wire() for batch in batches],
        tier=first.tier if all(b.tier == first.tier for b in batches) else None,
        priority=min(batch.priority for batch in batches),
        flags=flags,
        batch_id=first.batch_id.bytes if one else uuid.uuid4().bytes,
        timestamp_ns=first.timestamp_ns,
    )


def batches_of(frame: Frame) -> list[MemorySyncBatch]:
    """The batches a MEMORY_SYNC / MEMORY_STORE frame carries, each checked (fields and its
    own checksum); a bad one refuses the whole frame, so nothing of it is applied."""
    if not isinstance(frame.body, list) or not frame.body:
        raise FrameError("malformed", "a batch frame's body must be a non-empty list of batches")
    try:
        return [MemorySyncBatch.from_wire(wire) for wire in frame.body]
    except InvalidInputError as error:
        reason = "checksum" if "checksum" in str(error) else "malformed"
        count_rejection(reason)
        raise FrameError(reason, str(error)) from None


async def hub_status(
    hub: Endpoint,
    node_id: str,
    secret: str,
    tls: ssl.SSLContext | None = None,
    timeout: float = 5.0,
) -> dict[str, Any]:
    """The hub's statistics (``HubGateway.status``), asked as ``node_id``: an observer
    that registers no tiers and takes no deliveries."""
    link = await Connection.open(hub, tls, timeout=timeout)
    try:
        body = {"token": node_token(secret, node_id), "tiers": [], "observer": True}
        await link.send(Frame(MessageType.NODE_REGISTER, node_id, "", body))
        await link.send(Frame(MessageType.MEMORY_QUERY, node_id, "", {"status": True}))
        while True:
            frame = await asyncio.wait_for(link.receive(), timeout)
            if frame is None:
                raise ConnectionError("the hub closed the connection")
            if frame.type is MessageType.SYNC_ERROR and isinstance(frame.body, dict):
                raise PermissionError(str(frame.body.get("message")))
            if frame.type is MessageType.MEMORY_RESPONSE and isinstance(frame.body, dict):
                return frame.body
    finally:
        await link.close()
