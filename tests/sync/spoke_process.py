"""A spoke as a real process, for the process tests and the benchmark: its own SQLite file,
a ``SpokeClient`` to the hub and a peer listener on a loopback port, driven by JSON lines
on standard input; each command's answer is one JSON line on standard output.

    python tests/sync/spoke_process.py DATABASE_FILE [--hub HOST:PORT] [--catch-up S]

The cluster secret comes from ``$MEMORY_SYNC_SECRET``. The first line out is
``{"node": ID, "listen": PORT}``. Commands: ``{"op": "add", "content", "tier",
"priority", "metadata"}`` (a memory of user ``edge-user``, agent ``edge-agent``, then
queued at ``priority``), ``{"op": "update_meta" | "delete", "content", "priority"}`` (the
memory with that content), ``{"op": "peer", "node", "endpoint"}``, ``{"op": "state"}``
(checksum, contents, counts), ``{"op": "caught_up", "timeout"}``, ``{"op": "arrival",
"content"}`` and ``{"op": "arrivals", "count"}`` (the wall time a content, or that many,
arrived from other nodes), ``{"op": "stop"}``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import Callable
from datetime import datetime
from functools import partial
from typing import Any

from memory import HashingEmbedder, Memory, MemoryRecord
from memory.ops.sync import ApplyReport
from memory.sync.items import MemorySyncBatch, SyncPriority
from memory.sync.network import SECRET_ENV, Endpoint, log_to
from memory.sync.spoke import SpokeStore
from memory.sync.spoke_client import SpokeClient

USER, AGENT = "edge-user", "edge-agent"


class TimedStore(SpokeStore):
    """A spoke store that notes when each content arrived from elsewhere (wall clock, so
    times from processes on one machine compare)."""

    def __init__(self, memory: Memory) -> None:
        super().__init__(memory)
        self.arrived: dict[str, float] = {}

    def apply(self, batch: MemorySyncBatch, *, now: datetime | None = None) -> ApplyReport:
        report = super().apply(batch, now=now)
        at = time.time()
        for item in batch.items:
            if item.content is not None:
                self.arrived.setdefault(item.content, at)
        return report


async def until(check: Callable[[], bool], timeout: float) -> float:
    """Poll ``check`` every millisecond; the wall time it first held."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"not within {timeout} s")
        await asyncio.sleep(0.001)
    return time.time()


def everything(memory: Memory) -> list[MemoryRecord]:
    scope, records = memory.scope(USER, AGENT), []
    while page := scope.list(limit=1000, before_id=records[-1].id if records else None):
        records.extend(page)
    return records


def find(memory: Memory, content: str) -> MemoryRecord:
    for record in everything(memory):
        if record.content == content:
            return record
    raise LookupError(content)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("database")
    parser.add_argument("--hub", default=None)
    parser.add_argument("--catch-up", type=float, default=1.0)
    arguments = parser.parse_args()
    log_to(sys.stderr)
    memory = Memory.open(f"sqlite:///{arguments.database}", embedder=HashingEmbedder())
    store = TimedStore(memory)
    client = SpokeClient(
        store,
        os.environ[SECRET_ENV],
        hub=Endpoint.parse(arguments.hub) if arguments.hub else None,
        listen=Endpoint("127.0.0.1", 0),
        catch_up_seconds=arguments.catch_up,
        auto_queue=None,  # every command queues its write at the priority it names
    )
    await client.start()
    assert client.listen is not None
    print(json.dumps({"node": store.node_id, "listen": client.listen.port}), flush=True)
    loop = asyncio.get_running_loop()
    while line := await loop.run_in_executor(None, sys.stdin.readline):
        command = json.loads(line)
        answer = await run(command, memory, store, client)
        print(json.dumps(answer), flush=True)
        if command["op"] == "stop":
            break
    await client.stop()
    memory.close()


async def run(
    command: dict[str, Any], memory: Memory, store: TimedStore, client: SpokeClient
) -> dict[str, Any]:
    op = command["op"]
    scope = memory.scope(USER, AGENT)
    priority = SyncPriority[command.get("priority", "NORMAL")]
    if op == "add":
        started = time.time()
        written = await asyncio.to_thread(
            partial(scope.add, command["content"], tier=command.get("tier", "working"),
                    metadata=command.get("metadata"))
        )  # fmt: skip
        await client.queue(priority)
        return {"ok": True, "id": written.id, "started": started}
    if op == "add_many":
        tier = command.get("tier", "working")
        await asyncio.to_thread(
            scope.add_many, [{"content": c, "tier": tier} for c in command["contents"]]
        )
        await client.queue(priority)
        return {"ok": True}
    if op == "update_meta":
        record = await asyncio.to_thread(find, memory, command["content"])
        await asyncio.to_thread(
            partial(scope.update, record.id, version=record.version, metadata=command["metadata"])
        )
        await client.queue(priority)
        return {"ok": True}
    if op == "delete":
        record = await asyncio.to_thread(find, memory, command["content"])
        await asyncio.to_thread(scope.delete, record.id)
        await client.queue(priority)
        return {"ok": True}
    if op == "peer":
        client.peers[command["node"]] = Endpoint.parse(command["endpoint"])
        return {"ok": True}
    if op == "arrival":  # when a content arrived from elsewhere
        content = command["content"]
        at = await until(lambda: content in store.arrived, command.get("timeout", 30))
        return {"at": store.arrived.get(content, at)}
    if op == "arrivals":  # when the count of contents arrived reached a number
        count = command["count"]
        at = await until(lambda: len(store.arrived) >= count, command.get("timeout", 600))
        return {"at": at, "count": len(store.arrived)}
    if op == "caught_up":
        await client.caught_up(command.get("timeout", 30))
        return {"ok": True}
    if op == "state":
        records = await asyncio.to_thread(everything, memory)
        return {
            "checksum": await asyncio.to_thread(store.checksum),
            "contents": sorted(r.content for r in records),
            "metadata": {r.content: dict(r.metadata) for r in records},
            "connected": client.connected,
            "backlog": client.backlog(),
            "p2p_received": client.p2p_received,
            "p2p_sent": client.p2p_sent,
            "relayed_received": client.relayed_received,
            "peers": sorted(client.peers),
            "conflicts": {
                str(k): v for k, v in (await asyncio.to_thread(store.conflict_counts)).items()
            },
        }
    if op == "stop":
        return {"ok": True}
    raise ValueError(f"unknown op {op!r}")


if __name__ == "__main__":
    asyncio.run(main())
