"""The hub gateway: spokes register here and send their batches; the hub applies each one
to its own store (the global sync state, on the service's database) and routes it on.

- **Registration**: a node's first frame is NODE_REGISTER with its token, the tiers it
  holds and, if it takes direct deliveries, its peer endpoint. The hub answers every
  connected node with the peers it knows, so a newcomer is known at once.
- **Scheduling**: CRITICAL and EMERGENCY batches are relayed as they arrive; HIGH and
  NORMAL too, but a node that sends more than ``rate_limit`` batches per second has its
  reads held until it is back under the limit (a token bucket; CRITICAL and EMERGENCY are
  never held); LOW batches wait up to ``low_seconds`` and go out together, one BATCHED
  (and, when large, compressed) frame per destination.
- **Routing**: a batch goes to its target, or to every other connected node holding its
  tier when the target is ``*``. MEMORY_STORE batches (the copy of a peer-to-peer
  delivery) are applied and not relayed. A node that was away catches up with a
  MEMORY_QUERY carrying its version vector: the hub answers with the delta from its own
  store. Spokes ask after registering and then periodically, so a delivery missed on any
  path (a peer that was down, a relay lost with its connection) is repaired.
- **Statistics**: per node and tier, batches and items received and relayed; conflicts by
  resolution; peer-to-peer copies against relayed deliveries; the backlog of held LOW
  batches. A MEMORY_QUERY ``{"status": true}`` answers with them (``memctl sync status``).
"""

from __future__ import annotations

import asyncio
import ssl
import threading
import time
from collections import Counter, OrderedDict, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from memory import InvalidInputError, MemoryStoreError
from memory.core.types import TIERS, Tier
from memory.sync.clocks import VersionVector
from memory.sync.items import ALL_NODES, BatchFlags, MemorySyncBatch, SyncPriority
from memory.sync.network import (
    COMPRESS_AT,
    Connection,
    batch_frame,
    batches_of,
    count_rejection,
    log,
    token_is_valid,
)
from memory.sync.spoke import SpokeStore
from memory.sync.wire import (
    DEFAULT_MAX_FRAME_BYTES,
    Frame,
    FrameError,
    MessageType,
    encode,
    is_direct,
)
from memory.telemetry.instruments import instruments, observe_sync

#: Batch ids remembered to refuse replays.
REMEMBERED_BATCHES = 100_000


class RateLimit:
    """A token bucket: ``rate`` per second, bursts up to ``rate`` (at least 1)."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.capacity = max(rate, 1.0)
        self.tokens = self.capacity
        self.at = time.monotonic()

    def delay(self) -> float:
        """Take a token; the seconds the taker must wait first (0 when under the rate)."""
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.at) * self.rate)
        self.at = now
        self.tokens -= 1
        return 0.0 if self.tokens >= 0 else -self.tokens / self.rate


class SeenBatches:
    """The ids of the last ``size`` batches applied: a replay is refused by id."""

    def __init__(self, size: int = REMEMBERED_BATCHES) -> None:
        self.size = size
        self._ids: OrderedDict[bytes, None] = OrderedDict()

    def __contains__(self, batch_id: bytes) -> bool:
        return batch_id in self._ids

    def add(self, batch_id: bytes) -> None:
        self._ids[batch_id] = None
        if len(self._ids) > self.size:
            self._ids.popitem(last=False)


@dataclass
class NodeState:
    """What the hub knows of one registered node."""

    node_id: str
    tiers: frozenset[Tier]
    endpoint: str | None
    connection: Connection | None
    rate: RateLimit
    observer: bool = False
    last_seen: float = field(default_factory=time.time)


class Refusal(Exception):
    """The other side broke the protocol (not the framing): count, tell it, cut it off."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.error = FrameError(reason, message)


def check_registration(secret: str, frame: Frame) -> dict[str, Any]:
    """The body of a valid NODE_REGISTER ``frame`` (its token checked), else a Refusal."""
    if frame.type is not MessageType.NODE_REGISTER:
        raise Refusal("unauthorized", "the first frame must be NODE_REGISTER")
    body = frame.body if isinstance(frame.body, dict) else {}
    if not token_is_valid(secret, frame.source, body.get("token")):
        raise Refusal("unauthorized", f"no valid token for node {frame.source!r}")
    tiers, endpoint = body.get("tiers", list(TIERS)), body.get("endpoint")
    if not isinstance(tiers, list) or not all(tier in TIERS for tier in tiers):
        raise Refusal("malformed", f"tiers must be a list of {', '.join(TIERS)}")
    if endpoint is not None and not isinstance(endpoint, str):
        raise Refusal("malformed", "endpoint must be HOST:PORT")
    return body


def record_applied(node: str, batch: MemorySyncBatch, conflicts: dict[str, int]) -> None:
    """The metrics of one applied batch."""
    recording = instruments()
    attributes = {"node": batch.source, "tier": batch.tier}
    recording.sync_frequency.add(1, attributes)
    recording.sync_batch_size.record(len(batch.items), {"tier": batch.tier})
    recording.sync_latency.record(max(0, time.time_ns() - batch.timestamp_ns) / 1e6, attributes)
    for resolution, count in conflicts.items():
        recording.sync_conflicts.add(count, {"resolution": resolution})
    log.info("sync batch applied", node=node, source=batch.source, tier=batch.tier,
             batch=str(batch.batch_id), items=len(batch.items), conflicts=conflicts)  # fmt: skip


class HubGateway:
    """Serves MEMSHADOW v2 on ``host:port`` for the hub node whose store is ``store``."""

    def __init__(
        self,
        store: SpokeStore,
        secret: str,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        tls: ssl.SSLContext | None = None,
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
        rate_limit: float = 200.0,
        low_seconds: float = 1.0,
    ) -> None:
        self.store = store
        self.node_id = store.node_id
        self._secret = secret
        self.host, self.port, self.tls = host, port, tls
        self.max_frame_bytes = max_frame_bytes
        self.rate_limit, self.low_seconds = rate_limit, low_seconds
        self.nodes: dict[str, NodeState] = {}
        self._seen = SeenBatches()
        self._low: dict[str, list[MemorySyncBatch]] = defaultdict(list)  # destination ->
        self._server: asyncio.Server | None = None
        self._flusher: asyncio.Task[None] | None = None
        # One writer at a time: batches from one node must apply in the order they came,
        # and the store serialises its transactions anyway.
        self._store_lock = asyncio.Lock()
        self.received: Counter[tuple[str, Tier]] = Counter()  # (source, tier) -> batches
        self.received_items: Counter[tuple[str, Tier]] = Counter()
        self.relayed: Counter[tuple[str, Tier]] = Counter()  # (destination, tier) -> batches
        self.conflicts: Counter[str] = Counter()
        self.p2p_copies = 0
        self.relayed_total = 0
        observe_sync(self)

    # -- the telemetry source -----------------------------------------------------------------

    def backlog(self) -> int:
        return sum(len(batches) for batches in self._low.values())

    def deliveries(self) -> tuple[int, int]:
        return self.p2p_copies, self.relayed_total

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._serve, self.host, self.port, ssl=self.tls, limit=1 << 20
        )
        self.port = self._server.sockets[0].getsockname()[1]
        self._flusher = asyncio.create_task(self._flush_low_forever())
        log.info("sync hub listening", node=self.node_id, host=self.host, port=self.port)

    async def stop(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
        if self._server is not None:
            self._server.close()
        for node in list(self.nodes.values()):
            if node.connection is not None:
                await node.connection.close()
        if self._server is not None:
            await self._server.wait_closed()

    # -- one connection -----------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connection = Connection(reader, writer, self.max_frame_bytes)
        node: NodeState | None = None
        try:
            node = await self._register(connection)
            while (frame := await connection.receive()) is not None:
                node.last_seen = time.time()
                await self._handle(node, frame)
        except FrameError as error:
            await connection.refuse(self.node_id, error)
        except Refusal as refusal:
            count_rejection(refusal.error.reason)
            await connection.refuse(self.node_id, refusal.error)
        except MemoryStoreError as error:
            # The hub's database failed: drop the link; the node resends what was not
            # acknowledged when it reconnects.
            log.warning("sync hub store failed", node=node.node_id if node else None,
                        error=str(error))  # fmt: skip
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            if node is not None and node.connection is connection:
                node.connection = None
                log.info("sync node disconnected", node=node.node_id)
            await connection.close()

    async def _register(self, connection: Connection) -> NodeState:
        frame = await connection.receive()
        if frame is None:  # connected and left without a word (a port probe)
            raise ConnectionError("closed before registering")
        body = check_registration(self._secret, frame)
        if body.get("observer"):
            # memctl sync status: asks for statistics, holds no tiers, is nobody's peer.
            return NodeState(frame.source, frozenset(), None, connection, RateLimit(1.0), True)
        previous = self.nodes.get(frame.source)
        if previous is not None and previous.connection is not None:
            await previous.connection.close()  # the node reconnected: the new link wins
        node = NodeState(
            frame.source,
            frozenset(body.get("tiers", TIERS)),
            body.get("endpoint"),
            connection,
            previous.rate if previous is not None else RateLimit(self.rate_limit),
        )
        self.nodes[node.node_id] = node
        log.info("sync node registered", node=node.node_id, tiers=sorted(node.tiers),
                 endpoint=node.endpoint)  # fmt: skip
        peers = {n.node_id: n.endpoint for n in self.nodes.values() if n.endpoint is not None}
        for other in list(self.nodes.values()):
            await self._send(
                other,
                Frame(
                    MessageType.NODE_REGISTERED,
                    self.node_id,
                    other.node_id,
                    {"hub": self.node_id, "peers": peers},
                ),
            )
        return node

    async def _send(self, node: NodeState, frame: Frame | bytes) -> bool:
        connection = node.connection
        if connection is None:
            return False
        try:
            await connection.send(frame)
            return True
        except (ConnectionError, RuntimeError):
            if node.connection is connection:
                node.connection = None
            return False

    async def _handle(self, node: NodeState, frame: Frame) -> None:
        if node.observer and frame.type is not MessageType.MEMORY_QUERY:
            raise Refusal("unauthorized", "an observer may only ask for the status")
        if frame.type in (MessageType.MEMORY_SYNC, MessageType.MEMORY_STORE):
            await self._receive(node, frame)
        elif frame.type is MessageType.MEMORY_QUERY:
            await self._answer(node, frame)
        elif frame.type is not MessageType.SYNC_ACK:
            # (The hub's own deliveries are repaired by catch-up, not retried on acks.)
            raise Refusal("unsupported", f"{frame.type.name} is not for the hub")

    async def _receive(self, node: NodeState, frame: Frame) -> None:
        batches = batches_of(frame)
        for batch in batches:
            if batch.source != node.node_id:
                message = f"node {node.node_id!r} sent a batch from {batch.source!r}"
                raise Refusal("unauthorized", message)
        if not is_direct(frame.priority):
            delay = node.rate.delay()
            if delay > 0:
                await asyncio.sleep(delay)
        acknowledged = []
        for batch in batches:
            # A batch for one node is routed, not applied: the hub's store holds what is
            # for every node, which is what catch-up sends.
            if batch.target == ALL_NODES and not await self._apply(node, batch):
                continue
            acknowledged.append(batch.batch_id.bytes)
            if frame.type is MessageType.MEMORY_STORE:
                self.p2p_copies += 1
                instruments().sync_deliveries.add(1, _P2P)
            else:
                await self._route(batch)
        if acknowledged and frame.flags & BatchFlags.REQUIRES_ACK:
            await self._send(node, Frame(MessageType.SYNC_ACK, self.node_id, node.node_id,
                                         {"batch_ids": acknowledged}))  # fmt: skip

    async def _apply(self, node: NodeState, batch: MemorySyncBatch) -> bool:
        """Apply ``batch`` to the hub's store; False (counted, and the sender told) if
        its id was applied before."""
        async with self._store_lock:
            duplicate = batch.batch_id.bytes in self._seen
            if not duplicate:
                try:
                    report = await asyncio.to_thread(self.store.apply, batch)
                except InvalidInputError as error:  # the store's checks of the items
                    raise Refusal("malformed", str(error)) from None
                duplicate = report.duplicate
                self._seen.add(batch.batch_id.bytes)
        if duplicate:
            count_rejection("replayed")
            log.warning("sync batch replayed", node=node.node_id, batch=str(batch.batch_id))
            # The sender may have lost our ack: the error names the batch so that it can
            # drop it from its outbox. Nothing was applied again.
            await self._send(node, Frame(MessageType.SYNC_ERROR, self.node_id, node.node_id,
                                         {"reason": "replayed",
                                          "batch_id": batch.batch_id.bytes}))  # fmt: skip
            return False
        key = (batch.source, batch.tier)
        self.received[key] += 1
        self.received_items[key] += len(batch.items)
        conflicts = {str(resolution): count for resolution, count in report.conflicts.items()}
        self.conflicts.update(conflicts)
        record_applied(self.node_id, batch, conflicts)
        return True

    async def _route(self, batch: MemorySyncBatch) -> None:
        destinations = [
            node
            for node in list(self.nodes.values())
            if node.node_id != batch.source
            and node.connection is not None
            and batch.tier in node.tiers
            and batch.target in (ALL_NODES, node.node_id)
        ]
        if batch.priority == SyncPriority.LOW:
            for destination in destinations:
                self._low[destination.node_id].append(batch)
            return
        # One encoding for every destination (the frame names the batch's own target).
        frame = batch_frame(MessageType.MEMORY_SYNC, self.node_id, batch.target, [batch])
        data = encode(frame, compress_at=COMPRESS_AT)
        await asyncio.gather(*(self._relay(node, data, [batch]) for node in destinations))

    async def _relay(
        self, destination: NodeState, frame: Frame | bytes, batches: Sequence[MemorySyncBatch]
    ) -> None:
        if await self._send(destination, frame):
            for batch in batches:
                self.relayed[(destination.node_id, batch.tier)] += 1
            self.relayed_total += len(batches)
            instruments().sync_deliveries.add(len(batches), _RELAYED)

    async def _flush_low_forever(self) -> None:
        while True:
            await asyncio.sleep(self.low_seconds)
            await self.flush_low()

    async def flush_low(self) -> None:
        """Send every held LOW batch now, one frame per destination."""
        waiting, self._low = self._low, defaultdict(list)
        for destination, batches in waiting.items():
            node = self.nodes.get(destination)
            if node is not None and batches:
                frame = batch_frame(MessageType.MEMORY_SYNC, self.node_id, destination, batches)
                await self._relay(node, frame, batches)

    async def _answer(self, node: NodeState, frame: Frame) -> None:
        body = frame.body if isinstance(frame.body, dict) else {}
        if body.get("status"):
            status = await asyncio.to_thread(self.status)
            await self._send(node, Frame(MessageType.MEMORY_RESPONSE, self.node_id, node.node_id,
                                         status))  # fmt: skip
            return
        try:
            since = VersionVector.from_wire(body.get("vector"))
        except InvalidInputError as error:
            raise Refusal("malformed", f"a catch-up query: {error}") from None
        async with self._store_lock:
            delta = await asyncio.to_thread(
                partial(self.store.delta, since, target=node.node_id, tiers=sorted(node.tiers))
            )
        for batch in delta:
            frame_out = batch_frame(MessageType.MEMORY_SYNC, self.node_id, node.node_id, [batch])
            if not await self._send(node, frame_out):
                return
        items = sum(len(batch.items) for batch in delta)
        await self._send(node, Frame(MessageType.MEMORY_RESPONSE, self.node_id, node.node_id,
                                     {"caught_up": True, "batches": len(delta), "items": items},
                                     batch_id=frame.batch_id))  # fmt: skip

    def status(self) -> dict[str, Any]:
        """The hub's statistics, as MEMORY_RESPONSE carries them."""
        per_node: dict[str, Any] = {}
        for node in list(self.nodes.values()):
            per_node[node.node_id] = {
                "connected": node.connection is not None,
                "endpoint": node.endpoint,
                "tiers": sorted(node.tiers),
                "last_seen": node.last_seen,
                "received": {t: self.received[(node.node_id, t)] for t in sorted(node.tiers)},
                "received_items": {
                    t: self.received_items[(node.node_id, t)] for t in sorted(node.tiers)
                },
                "relayed_to": {t: self.relayed[(node.node_id, t)] for t in sorted(node.tiers)},
            }
        total = self.p2p_copies + self.relayed_total
        return {
            "hub": self.node_id,
            "nodes": per_node,
            "vector": self.store.vector().to_wire(),
            "conflicts": dict(self.conflicts),
            "p2p_copies": self.p2p_copies,
            "relayed": self.relayed_total,
            "p2p_ratio": self.p2p_copies / total if total else 0.0,
            "backlog": self.backlog(),
        }


_P2P = {"path": "p2p"}
_RELAYED = {"path": "relayed"}


class BackgroundHub:
    """A :class:`HubGateway` on an event loop of its own thread: ``memctl serve`` runs
    uvicorn on the main one."""

    def __init__(self, gateway: HubGateway) -> None:
        self.gateway = gateway
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="sync-hub", daemon=True)

    def start(self) -> None:
        """Listen; raises (a taken port, say) before returning if the gateway cannot."""
        self._thread.start()
        try:
            asyncio.run_coroutine_threadsafe(self.gateway.start(), self._loop).result(30)
        except OSError as error:
            self.stop()
            raise InvalidInputError(
                f"sync_port: cannot listen on {self.gateway.host}:{self.gateway.port}: {error}"
            ) from None

    def stop(self) -> None:
        if self._loop.is_running():
            asyncio.run_coroutine_threadsafe(self.gateway.stop(), self._loop).result(30)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(30)
        self._loop.close()
