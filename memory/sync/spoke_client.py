"""The spoke's network side: a node's store kept in step with the hub, and with its peers
for what cannot wait.

- **Hub link**: connect, register (token, tiers, peer endpoint), then ask for the delta
  since this store's version vector (MEMORY_QUERY); again every ``catch_up_seconds``, so a
  delivery missed on any path is repaired. A dropped link is reconnected.
- **Outbox**: the store's outbox is durable (it is in the node's own database), so writes
  made offline wait there. NORMAL, HIGH and LOW batches go to the hub as MEMORY_SYNC and
  leave the outbox when the hub acknowledges them. CRITICAL and EMERGENCY batches go
  first straight to every known peer, then to the hub as a MEMORY_STORE copy, which leaves
  the outbox on the hub's ack: with the hub down the peers still get them at once, and
  the hub gets its copy when it returns.
- **Peer listener**: other nodes connect to ``listen`` to deliver their CRITICAL and
  EMERGENCY batches; each connection registers with its node's token first, and every
  batch on it must come from that node.

A batch id this node has applied is refused as a replay (and counted); the store's apply
is idempotent besides.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import uuid
from collections.abc import Mapping, Sequence
from functools import partial

from memory import InvalidInputError, MemoryStoreError
from memory.core.types import TIERS, Tier
from memory.sync.hub import Refusal, SeenBatches, check_registration, record_applied
from memory.sync.items import BatchFlags, MemorySyncBatch, SyncPriority
from memory.sync.network import (
    Connection,
    Endpoint,
    batch_frame,
    batches_of,
    count_rejection,
    log,
    node_token,
)
from memory.sync.spoke import SpokeStore
from memory.sync.wire import DEFAULT_MAX_FRAME_BYTES, Frame, FrameError, MessageType, is_direct
from memory.telemetry.instruments import observe_sync


class SpokeClient:
    """Runs ``store``'s sync: the hub link, the outbox pump and the peer listener."""

    def __init__(
        self,
        store: SpokeStore,
        secret: str,
        *,
        hub: Endpoint | None,
        listen: Endpoint | None = None,
        peers: Mapping[str, Endpoint] | None = None,
        tiers: Sequence[Tier] = TIERS,
        hub_tls: ssl.SSLContext | None = None,
        listen_tls: ssl.SSLContext | None = None,
        peer_tls: ssl.SSLContext | None = None,
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
        catch_up_seconds: float = 5.0,
        reconnect_seconds: float = 0.2,
        auto_queue: SyncPriority | None = SyncPriority.NORMAL,
    ) -> None:
        self.store = store
        self.node_id = store.node_id
        self._secret = secret
        self.hub, self.listen, self.tiers = hub, listen, tuple(tiers)
        self.hub_tls, self.listen_tls, self.peer_tls = hub_tls, listen_tls, peer_tls
        self.max_frame_bytes = max_frame_bytes
        self.catch_up_seconds = catch_up_seconds
        self.reconnect_seconds = reconnect_seconds
        # The priority local writes nobody queued get on the pump's next pass; None: only
        # what queue() queued is sent.
        self.auto_queue = auto_queue
        # Peers from the configuration are known before the hub is reachable.
        self.peers: dict[str, Endpoint] = dict(peers or {})
        self._hub: Connection | None = None
        self._peer_links: dict[str, Connection] = {}
        self._wake = asyncio.Event()
        self._caught_up = asyncio.Event()
        self._answered = asyncio.Event()
        self._in_flight: set[bytes] = set()
        self._delivered_direct: set[bytes] = set()
        self._seen = SeenBatches()
        self._tasks: list[asyncio.Task[None]] = []
        self._server: asyncio.Server | None = None
        self._store_lock = asyncio.Lock()
        self._backlog = 0
        self.p2p_sent = 0
        self.p2p_received = 0
        self.relayed_received = 0
        observe_sync(self)

    # -- the telemetry source -----------------------------------------------------------------

    def backlog(self) -> int:
        return self._backlog

    def deliveries(self) -> tuple[int, int]:
        return self.p2p_received, self.relayed_received

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        if self.listen is not None:
            self._server = await asyncio.start_server(
                self._serve_peer, self.listen.host, self.listen.port, ssl=self.listen_tls,
                limit=1 << 20,
            )  # fmt: skip
            self.listen = Endpoint(self.listen.host, self._server.sockets[0].getsockname()[1])
        if self.hub is not None:
            self._tasks.append(asyncio.create_task(self._hub_forever()))
        self._tasks.append(asyncio.create_task(self._pump_forever()))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._server is not None:
            self._server.close()
        for link in [self._hub, *self._peer_links.values()]:
            if link is not None:
                await link.close()
        if self._server is not None:
            await self._server.wait_closed()

    def notify(self) -> None:
        """Something was written: send the outbox now rather than at the next poll."""
        self._wake.set()

    @property
    def connected(self) -> bool:
        """Whether the hub link is up."""
        return self._hub is not None

    async def caught_up(self, timeout: float) -> None:
        """Wait until the hub has answered a catch-up query on the current link."""
        await asyncio.wait_for(self._caught_up.wait(), timeout)

    # -- the hub link -------------------------------------------------------------------------

    async def _hub_forever(self) -> None:
        assert self.hub is not None
        while True:
            try:
                link = await Connection.open(self.hub, self.hub_tls, self.max_frame_bytes)
            except (TimeoutError, OSError):
                await asyncio.sleep(self.reconnect_seconds)
                continue
            catch_up: asyncio.Task[None] | None = None
            try:
                await link.send(self._register_frame())
                self._hub = link
                log.info("sync hub connected", node=self.node_id, hub=str(self.hub))
                catch_up = asyncio.create_task(self._catch_up_forever(link))
                self._wake.set()
                await self._read(link, peer=None)
            except FrameError as error:
                log.warning("sync hub link refused a frame", node=self.node_id, error=str(error))
            except MemoryStoreError as error:  # the store failed: reconnect and catch up again
                log.warning("sync store failed", node=self.node_id, error=str(error))
            except (ConnectionError, OSError):
                pass
            finally:
                if catch_up is not None:
                    catch_up.cancel()
                self._hub = None
                self._caught_up.clear()
                self._in_flight.clear()
                await link.close()
            await asyncio.sleep(self.reconnect_seconds)

    def _register_frame(self) -> Frame:
        body = {
            "token": node_token(self._secret, self.node_id),
            "tiers": list(self.tiers),
            "endpoint": str(self.listen) if self.listen is not None else None,
        }
        return Frame(MessageType.NODE_REGISTER, self.node_id, "", body)

    async def _catch_up_forever(self, link: Connection) -> None:
        # One query at a time: under load an answer can take longer than the interval,
        # and queries sent meanwhile would carry stale vectors and fetch the same again.
        while True:
            self._answered.clear()
            try:
                vector = await asyncio.to_thread(self.store.vector)
            except MemoryStoreError as error:
                log.warning("sync store failed", node=self.node_id, error=str(error))
                await asyncio.sleep(self.catch_up_seconds)
                continue
            await link.send(Frame(MessageType.MEMORY_QUERY, self.node_id, "",
                                  {"vector": vector.to_wire()}))  # fmt: skip
            await self._answered.wait()
            self._caught_up.set()
            await asyncio.sleep(self.catch_up_seconds)

    # -- reading frames (the hub link and peer links) -----------------------------------------

    async def _read(self, link: Connection, *, peer: str | None) -> None:
        """Handle frames from the hub (``peer`` None) or from the registered ``peer``."""
        while (frame := await link.receive()) is not None:
            if frame.type in (MessageType.MEMORY_SYNC, MessageType.MEMORY_STORE):
                await self._receive(link, frame, peer)
            elif peer is not None:
                raise Refusal("unsupported", f"a peer sends batches, not {frame.type.name}")
            elif frame.type is MessageType.SYNC_ACK and isinstance(frame.body, dict):
                await self._acknowledged(frame.body.get("batch_ids"))
            elif frame.type is MessageType.SYNC_ERROR and isinstance(frame.body, dict):
                if frame.body.get("reason") == "replayed":
                    # The hub applied it before and its ack was lost: it is delivered.
                    await self._acknowledged([frame.body.get("batch_id")])
                else:
                    log.warning("sync refused by the hub", node=self.node_id,
                                error=frame.body.get("message"))  # fmt: skip
            elif frame.type is MessageType.NODE_REGISTERED and isinstance(frame.body, dict):
                self._learn_peers(frame.body.get("peers"))
            elif frame.type is MessageType.MEMORY_RESPONSE and isinstance(frame.body, dict):
                if frame.body.get("caught_up"):
                    self._answered.set()

    def _learn_peers(self, peers: object) -> None:
        if not isinstance(peers, dict):
            return
        for node, endpoint in peers.items():
            if node != self.node_id and isinstance(endpoint, str):
                with contextlib.suppress(ValueError):
                    self.peers[node] = Endpoint.parse(endpoint)

    async def _receive(self, link: Connection, frame: Frame, peer: str | None) -> None:
        batches = batches_of(frame)
        log.info("sync frame received", node=self.node_id, sender=frame.source, tier=frame.tier,
                 batches=len(batches), compressed=bool(frame.flags & BatchFlags.COMPRESSED),
                 path="relayed" if peer is None else "p2p")  # fmt: skip
        applied = []
        for batch in batches:
            if peer is not None and batch.source != peer:
                raise Refusal("unauthorized", f"peer {peer!r} sent a batch from {batch.source!r}")
            key = batch.batch_id.bytes
            async with self._store_lock:
                duplicate = key in self._seen
                if not duplicate:
                    try:
                        report = await asyncio.to_thread(self.store.apply, batch)
                    except InvalidInputError as error:  # the store's checks (a clock too far ahead)
                        count_rejection("malformed")
                        log.warning("sync batch refused by the store", node=self.node_id,
                                    batch=str(batch.batch_id), error=str(error))  # fmt: skip
                        continue
                    duplicate = report.duplicate
                    self._seen.add(key)
            if duplicate:
                count_rejection("replayed")
                log.info("sync batch replayed", node=self.node_id, batch=str(batch.batch_id))
                continue
            path = "relayed" if peer is None else "p2p"
            log.info("sync batch received", node=self.node_id, source=batch.source,
                     tier=batch.tier, batch=str(batch.batch_id), items=len(batch.items),
                     path=path)  # fmt: skip
            if peer is None:
                self.relayed_received += 1
            else:
                self.p2p_received += 1
            conflicts = {str(how): count for how, count in report.conflicts.items()}
            record_applied(self.node_id, batch, conflicts)
            applied.append(key)
        if applied and frame.flags & BatchFlags.REQUIRES_ACK:
            await link.send(Frame(MessageType.SYNC_ACK, self.node_id, frame.source,
                                  {"batch_ids": applied}))  # fmt: skip

    async def _acknowledged(self, batch_ids: object) -> None:
        if not isinstance(batch_ids, list):
            return
        for batch_id in batch_ids:
            if not isinstance(batch_id, bytes) or len(batch_id) != 16:
                continue
            async with self._store_lock:
                if await asyncio.to_thread(self.store.acknowledge, uuid.UUID(bytes=batch_id)):
                    self._backlog = max(0, self._backlog - 1)
            self._in_flight.discard(batch_id)
            self._delivered_direct.discard(batch_id)

    # -- the outbox ---------------------------------------------------------------------------

    async def _pump_forever(self) -> None:
        while True:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), 0.5)
            self._wake.clear()
            try:
                await self.pump()
            except (ConnectionError, OSError, MemoryStoreError) as error:
                # The link or the store failed this pass (a SQLite database locked by a
                # long write, say): what was not sent stays in the outbox for the next.
                log.warning("sync send failed", node=self.node_id, error=str(error))

    async def queue(self, priority: SyncPriority = SyncPriority.NORMAL) -> None:
        """Queue the local writes not queued yet at ``priority`` and send them now."""
        async with self._store_lock:
            await asyncio.to_thread(partial(self.store.queue_local, priority=priority))
        self._wake.set()

    async def pump(self) -> None:
        """Queue the local writes not queued yet (at ``auto_queue``), then send what the
        outbox holds that is not already under way."""
        async with self._store_lock:
            if self.auto_queue is None:
                pending = await asyncio.to_thread(self.store.pending)
            else:
                queue = partial(self.store.queue_local, priority=self.auto_queue)
                pending = await asyncio.to_thread(queue)
        self._backlog = len(pending)
        for batch in pending:
            key = batch.batch_id.bytes
            if key in self._in_flight:
                continue
            direct = is_direct(batch.priority)
            if direct and key not in self._delivered_direct:
                await self._deliver_direct(batch)
                self._delivered_direct.add(key)
            hub = self._hub
            if hub is None:
                continue
            kind = MessageType.MEMORY_STORE if direct else MessageType.MEMORY_SYNC
            self._in_flight.add(key)
            await hub.send(batch_frame(kind, self.node_id, batch.target, [batch],
                                       BatchFlags.REQUIRES_ACK))  # fmt: skip

    async def _deliver_direct(self, batch: MemorySyncBatch) -> None:
        targets = [n for n in list(self.peers) if batch.target in ("*", n) and n != self.node_id]
        results = await asyncio.gather(
            *(self._send_to_peer(node, batch) for node in targets), return_exceptions=True
        )
        for node, result in zip(targets, results, strict=True):
            if isinstance(result, BaseException):
                log.warning("sync peer unreachable", node=self.node_id, peer=node,
                            error=repr(result))  # fmt: skip
            else:
                self.p2p_sent += 1

    async def _send_to_peer(self, node: str, batch: MemorySyncBatch) -> None:
        link = self._peer_links.get(node)
        if link is None:
            link = await Connection.open(self.peers[node], self.peer_tls, self.max_frame_bytes,
                                         timeout=1.0)  # fmt: skip
            await link.send(self._register_frame())
            self._peer_links[node] = link
        try:
            # No ack asked: nothing reads this link back, and the hub's copy plus catch-up
            # repair a direct delivery that got lost.
            await link.send(batch_frame(MessageType.MEMORY_SYNC, self.node_id, node, [batch]))
        except (ConnectionError, OSError, RuntimeError):
            self._peer_links.pop(node, None)
            await link.close()
            raise

    # -- the peer listener --------------------------------------------------------------------

    async def _serve_peer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        link = Connection(reader, writer, self.max_frame_bytes)
        try:
            first = await link.receive()
            if first is None:
                return
            check_registration(self._secret, first)
            await self._read(link, peer=first.source)
        except FrameError as error:
            await link.refuse(self.node_id, error)
        except Refusal as refusal:
            count_rejection(refusal.error.reason)
            await link.refuse(self.node_id, refusal.error)
        except MemoryStoreError as error:  # the peer's copy to the hub and catch-up repair it
            log.warning("sync store failed", node=self.node_id, error=str(error))
        except (ConnectionError, OSError):
            pass
        finally:
            await link.close()
