"""The hub gateway on a real loopback port over a real PostgreSQL store, fed raw frames by a
test client: every bad frame is refused with a clear error, counted, and nothing of it is
applied; a good batch is acknowledged; TLS; the per-node rate limit."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from memory import HashingEmbedder, Memory
from memory.sync.hub import HubGateway
from memory.sync.items import BatchFlags, MemorySyncBatch
from memory.sync.network import (
    Connection,
    Endpoint,
    batch_frame,
    client_tls,
    hub_status,
    node_token,
    server_tls,
)
from memory.sync.spoke import SpokeStore
from memory.sync.spoke_client import SpokeClient
from memory.sync.wire import HEADER, Frame, MessageType, encode, read_frame
from memory.telemetry.instruments import SYNC_FRAMES_REJECTED, totals
from tests.swarm.conftest import make_certificates
from tests.sync.processes import SECRET, eventually


@pytest.fixture
def hub_store(make_postgres_database: Callable[[], str]) -> Iterator[SpokeStore]:
    with Memory.open(make_postgres_database(), embedder=HashingEmbedder()) as memory:
        yield SpokeStore(memory)


@pytest.fixture
def edge(tmp_path: Path) -> Iterator[SpokeStore]:
    with Memory.open(f"sqlite:///{tmp_path / 'edge.db'}", embedder=HashingEmbedder()) as memory:
        yield SpokeStore(memory)


def written(edge: SpokeStore, *contents: str) -> MemorySyncBatch:
    """A real batch of ``contents`` from ``edge``'s outbox."""
    scope = edge.memory.scope("ada", "planner")
    for content in contents:
        scope.add(content)
    (batch,) = edge.queue_local()
    return batch


@asynccontextmanager
async def gateway(store: SpokeStore, **options: object) -> AsyncIterator[HubGateway]:
    hub = HubGateway(store, SECRET, max_frame_bytes=64 * 1024, **options)  # type: ignore[arg-type]
    await hub.start()
    try:
        yield hub
    finally:
        await hub.stop()


async def registered(hub: HubGateway, node: str, token: str | None = None) -> Connection:
    link = await Connection.open(Endpoint("127.0.0.1", hub.port))
    body = {"token": token or node_token(SECRET, node), "tiers": ["working"], "endpoint": None}
    await link.send(Frame(MessageType.NODE_REGISTER, node, "", body))
    return link


async def answer(link: Connection, kind: MessageType) -> Frame:
    """The next frame of ``kind`` on ``link`` (peer lists are skipped)."""
    while True:
        frame = await asyncio.wait_for(read_frame(link.reader), 10)
        assert frame is not None, "the hub closed the connection without answering"
        if frame.type is kind:
            return frame


def rejected(reason: str) -> float:
    return totals().counter(SYNC_FRAMES_REJECTED, reason=reason)


def tampered(raw: bytes, reason: str) -> bytes:
    data = bytearray(raw)
    if reason == "magic":
        data[0:4] = b"XXXX"
    elif reason == "version":
        data[4:6] = (3).to_bytes(2, "big")
    elif reason == "checksum":
        data[-40] ^= 0x01  # a byte of the body
    elif reason == "oversized":
        data[14:22] = (65 * 1024).to_bytes(8, "big")
    return bytes(data)


@pytest.mark.parametrize("reason", ["magic", "version", "checksum", "oversized", "truncated"])
def test_a_bad_frame_is_refused_counted_and_not_applied(
    reason: str, hub_store: SpokeStore, edge: SpokeStore
) -> None:
    batch = written(edge, "the invoices go out on Fridays")
    raw = encode(batch_frame(MessageType.MEMORY_SYNC, edge.node_id, "*", [batch]))

    async def scenario() -> Frame | None:
        async with gateway(hub_store) as hub:
            link = await registered(hub, edge.node_id)
            if reason == "truncated":
                link.writer.write(raw[: HEADER.size + 20])
                link.writer.write_eof()  # the sender vanished mid-frame
            else:
                link.writer.write(tampered(raw, reason))
            await link.writer.drain()
            try:
                return await answer(link, MessageType.SYNC_ERROR)
            except AssertionError:
                return None  # closed without a word: a truncated frame's sender is gone
            finally:
                await link.close()

    before = rejected(reason)
    refusal = asyncio.run(scenario())
    assert eventually(lambda: rejected(reason) == before + 1, seconds=5)
    if refusal is not None:
        assert refusal.body["reason"] == reason and reason in refusal.body["message"]
    assert hub_store.vector() == {}  # nothing applied
    assert hub_store.memory.scope("ada", "planner").list() == []


def test_a_good_batch_is_acknowledged_and_a_replay_refused(
    hub_store: SpokeStore, edge: SpokeStore
) -> None:
    batch = written(edge, "the invoices go out on Fridays")
    frame = batch_frame(
        MessageType.MEMORY_SYNC, edge.node_id, "*", [batch], BatchFlags.REQUIRES_ACK
    )

    async def scenario() -> tuple[Frame, Frame]:
        async with gateway(hub_store) as hub:
            link = await registered(hub, edge.node_id)
            await link.send(frame)
            ack = await answer(link, MessageType.SYNC_ACK)
            await link.send(frame)
            replay = await answer(link, MessageType.SYNC_ERROR)
            await link.close()
            return ack, replay

    before = rejected("replayed")
    ack, replay = asyncio.run(scenario())
    assert ack.body["batch_ids"] == [batch.batch_id.bytes]
    assert replay.body == {"reason": "replayed", "batch_id": batch.batch_id.bytes}
    assert rejected("replayed") == before + 1
    contents = [m.content for m in hub_store.memory.scope("ada", "planner").list()]
    assert contents == ["the invoices go out on Fridays"]  # once
    assert hub_store.checksum() == edge.checksum()


@pytest.mark.parametrize("case", ["bad token", "first frame not a registration", "forged source"])
def test_identity_comes_from_the_token(case: str, hub_store: SpokeStore, edge: SpokeStore) -> None:
    batch = written(edge, "the invoices go out on Fridays")

    async def scenario() -> Frame:
        async with gateway(hub_store) as hub:
            if case == "bad token":
                link = await registered(hub, edge.node_id, token="0" * 64)
            elif case == "first frame not a registration":
                link = await Connection.open(Endpoint("127.0.0.1", hub.port))
                await link.send(batch_frame(MessageType.MEMORY_SYNC, edge.node_id, "*", [batch]))
            else:  # a valid node sends a batch that claims to come from another node
                link = await registered(hub, "mallory")
                await link.send(batch_frame(MessageType.MEMORY_SYNC, "mallory", "*", [batch]))
            refusal = await answer(link, MessageType.SYNC_ERROR)
            await link.close()
            return refusal

    before = rejected("unauthorized")
    refusal = asyncio.run(scenario())
    assert refusal.body["reason"] == "unauthorized"
    assert rejected("unauthorized") == before + 1
    assert hub_store.vector() == {}


def test_a_batch_whose_own_checksum_is_wrong_is_refused(
    hub_store: SpokeStore, edge: SpokeStore
) -> None:
    batch = written(edge, "the invoices go out on Fridays")
    wire = batch.to_wire()
    wire["checksum"] = hashlib.sha256(b"something else").digest()
    frame = Frame(MessageType.MEMORY_SYNC, edge.node_id, "*", [wire], tier="working")

    async def scenario() -> Frame:
        async with gateway(hub_store) as hub:
            link = await registered(hub, edge.node_id)
            await link.send(frame)  # the frame's own SHA-256 is right: the batch's is not
            refusal = await answer(link, MessageType.SYNC_ERROR)
            await link.close()
            return refusal

    before = rejected("checksum")
    assert "checksum" in asyncio.run(scenario()).body["message"]
    assert rejected("checksum") == before + 1
    assert hub_store.vector() == {}


def test_sync_runs_over_tls(hub_store: SpokeStore, edge: SpokeStore, tmp_path: Path) -> None:
    certificates = make_certificates(tmp_path)
    written(edge, "sent over TLS")

    async def scenario() -> dict[str, object]:
        tls = server_tls(certificates / "server.pem", certificates / "server.key")
        async with gateway(hub_store, tls=tls) as hub:
            endpoint = Endpoint("127.0.0.1", hub.port)
            client = SpokeClient(
                edge, SECRET, hub=endpoint, hub_tls=client_tls(certificates / "ca.pem")
            )
            await client.start()
            try:
                for _ in range(100):
                    if client.backlog() == 0 and client.connected:
                        break
                    await asyncio.sleep(0.1)
                return await hub_status(
                    endpoint, "memctl", SECRET, client_tls(certificates / "ca.pem")
                )
            finally:
                await client.stop()

    status = asyncio.run(scenario())
    assert status["nodes"][edge.node_id]["received"]["working"] == 1  # type: ignore[index]
    assert hub_store.checksum() == edge.checksum()


def test_the_rate_limit_holds_a_busy_node(hub_store: SpokeStore, edge: SpokeStore) -> None:
    scope = edge.memory.scope("ada", "planner")
    batches = []
    for index in range(12):
        scope.add(f"note {index}")
        (batch,) = edge.queue_local()
        edge.acknowledge(batch.batch_id)
        batches.append(batch)

    async def send_all() -> float:
        async with gateway(hub_store, rate_limit=4.0) as hub:
            link = await registered(hub, edge.node_id)
            started = time.monotonic()
            for batch in batches:
                await link.send(batch_frame(MessageType.MEMORY_SYNC, edge.node_id, "*", [batch],
                                            BatchFlags.REQUIRES_ACK))  # fmt: skip
            for _ in batches:
                await answer(link, MessageType.SYNC_ACK)
            await link.close()
            return time.monotonic() - started

    # 12 NORMAL batches at 4 a second after a burst of 4: the last waits about 2 s.
    assert asyncio.run(send_all()) >= 1.5
    assert len(hub_store.memory.scope("ada", "planner").list()) == 12
