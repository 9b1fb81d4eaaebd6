"""The design's five scenarios with real processes on loopback ports: a hub (``memctl
serve`` with its sync gateway over PostgreSQL) and spokes over SQLite files.

1. a write on spoke 1 reaches spoke 2 through the hub;
2. NORMAL is relayed by the hub, CRITICAL goes straight to the peer with a copy to the hub;
3. concurrent writes on two spokes are resolved the same way everywhere;
4. tiers: a hot-tier CRITICAL write arrives at once, cold-tier LOW writes wait and travel
   merged and compressed;
5. hub offline: CRITICAL goes on peer to peer, and the hub gets its copy when it returns;
   spoke offline: writes wait in the outbox / at the hub and arrive on reconnect.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.sync.processes import Hub, Spoke, eventually, hub_process, spokes

pytestmark = pytest.mark.slow


@pytest.fixture
def hub(make_postgres_database: Callable[[], str], tmp_path: Path) -> Iterator[Hub]:
    with hub_process(make_postgres_database(), tmp_path / "hub.log") as running:
        yield running


def has(spoke: Spoke, content: str) -> bool:
    return content in spoke.state()["contents"]


def series(metrics: str, name: str, **labels: str) -> float:
    """The sum of a Prometheus series' samples whose labels include ``labels``."""
    total = 0.0
    for line in metrics.splitlines():
        match = re.match(rf"{name}(?:{{(.*)}})? (\S+)$", line)
        if match and all(f'{k}="{v}"' in (match.group(1) or "") for k, v in labels.items()):
            total += float(match.group(2))
    return total


def test_a_write_on_one_spoke_reaches_the_other_through_the_hub(hub: Hub, tmp_path: Path) -> None:
    with spokes(tmp_path, hub.endpoint, 2) as (one, two):
        one.call("add", content="the deploy key rotates on Mondays", tier="episodic")
        eventually(lambda: has(two, "the deploy key rotates on Mondays"), what="relayed")
        assert two.state()["relayed_received"] >= 1
        eventually(lambda: one.state()["backlog"] == 0, what="the hub acknowledged it")
        status = hub.status()
        assert status["nodes"][one.node]["received"]["episodic"] >= 1
        assert status["relayed"] >= 1
        # The hub holds it too: the global state; all three checksums agree.
        eventually(lambda: one.state()["checksum"] == two.state()["checksum"])
        metrics = hub.metrics()
        assert series(metrics, "memshadow_sync_frequency_total", tier="episodic") >= 1
        assert series(metrics, "memshadow_sync_latency_ms_count") >= 1
        assert series(metrics, "memshadow_batch_size_count") >= 1
        assert 'memshadow_deliveries_total{path="relayed"}' in metrics
        applied = [line for line in hub.server.log_lines() if "sync batch applied" in line]
        assert applied and one.node in applied[0]


def test_normal_is_relayed_and_critical_goes_peer_to_peer_with_a_copy(
    hub: Hub, tmp_path: Path
) -> None:
    with spokes(tmp_path, hub.endpoint, 2) as (one, two):
        eventually(lambda: two.node in one.state()["peers"], what="peers known from the hub")
        one.call("add", content="a normal note", priority="NORMAL")
        eventually(lambda: has(two, "a normal note"))
        before = two.state()
        assert before["relayed_received"] >= 1 and before["p2p_received"] == 0
        one.call("add", content="the database is on fire", priority="CRITICAL")
        eventually(lambda: has(two, "the database is on fire"), seconds=10)
        after = two.state()
        assert after["p2p_received"] == 1
        # The hub was told: it holds the CRITICAL write and counts a peer-to-peer copy.
        status = eventually(lambda: (s := hub.status())["p2p_copies"] >= 1 and s)
        assert 0 < status["p2p_ratio"] < 1
        eventually(lambda: one.state()["backlog"] == 0)


def test_concurrent_writes_resolve_the_same_way_everywhere(
    make_postgres_database: Callable[[], str], tmp_path: Path
) -> None:
    database = make_postgres_database()
    # Both spokes write while the hub is down, so neither sees the other's version.
    with spokes(tmp_path, None, 2) as (one, two):
        one.call("add", content="the build uses python 3.12", metadata={"by": "one"})
        two.call("add", content="the build uses python 3.12", metadata={"by": "two"})
    with (
        hub_process(database, tmp_path / "hub.log") as hub,
        spokes(tmp_path, hub.endpoint, 2) as (
            one,
            two,
        ),
    ):
        eventually(lambda: one.state()["checksum"] == two.state()["checksum"], what="converged")
        first, second = one.state(), two.state()
        assert first["metadata"] == second["metadata"]
        assert first["metadata"]["the build uses python 3.12"]["by"] in ("one", "two")
        # Detected and counted where it was resolved.
        conflicts = {**first["conflicts"]}
        for key, value in second["conflicts"].items():
            conflicts[key] = conflicts.get(key, 0) + value
        for key, value in hub.status()["conflicts"].items():
            conflicts[key] = conflicts.get(key, 0) + value
        assert sum(conflicts.values()) >= 1


def test_the_hot_tier_is_immediate_and_the_cold_tier_batched_and_compressed(
    make_postgres_database: Callable[[], str], tmp_path: Path
) -> None:
    database = make_postgres_database()
    low_wait = "5"
    # Catch-up only at registration here: a periodic one would fetch the LOW writes from
    # the hub's store before their merged frame is due.
    with (
        hub_process(
            database, tmp_path / "hub.log", MEMORY_SERVICE_SYNC_LOW_SECONDS=low_wait
        ) as hub,
        spokes(tmp_path, hub.endpoint, 2, catch_up=600) as (one, two),
    ):
        eventually(lambda: two.node in one.state()["peers"])
        two.call("caught_up")
        long = "a long semantic fact about the payment system's retry policy " * 40
        for index in range(6):
            one.call("add", content=f"{index} {long}", tier="semantic", priority="LOW")
        one.call("add", content="page the on-call now", tier="working", priority="CRITICAL")
        eventually(lambda: has(two, "page the on-call now"), seconds=10)
        eventually(lambda: len(two.state()["contents"]) == 7, seconds=30, what="LOW delivered")

        def frames() -> list[dict[str, object]]:
            lines = two.log.read_text().splitlines()
            return [json.loads(line) for line in lines if "sync frame received" in line]

        # The hot write came straight from the peer, alone; the cold ones were held at
        # the hub and relayed merged (fewer frames than batches), compressed.
        hot = [f for f in frames() if f["tier"] == "working"]
        assert [(f["path"], f["batches"]) for f in hot] == [("p2p", 1)]
        cold = [f for f in frames() if f["tier"] == "semantic"]
        assert sum(f["batches"] for f in cold) == 6  # type: ignore[misc]
        assert len(cold) < 6 and all(f["path"] == "relayed" for f in cold)
        assert any(f["compressed"] and f["batches"] > 1 for f in cold)  # type: ignore[operator]


def test_offline_nodes_catch_up(make_postgres_database: Callable[[], str], tmp_path: Path) -> None:
    database = make_postgres_database()
    with hub_process(database, tmp_path / "hub1.log") as hub:
        sync_port = hub.sync_port
        one, two = (
            Spoke(tmp_path / "spoke1.db", hub.endpoint),
            Spoke(tmp_path / "spoke2.db", hub.endpoint),
        )
        try:
            eventually(lambda: two.node in one.state()["peers"])
            # Spoke 2 goes offline; spoke 1 writes; the hub keeps it for spoke 2.
            two.stop()
            one.call("add", content="written while spoke 2 was away")
            eventually(lambda: one.state()["backlog"] == 0)
            two = Spoke(tmp_path / "spoke2.db", hub.endpoint)
            two.call("caught_up", timeout=30)
            eventually(lambda: has(two, "written while spoke 2 was away"))
        finally:
            one.stop()
            two.stop()
    # The hub goes down: CRITICAL goes on peer to peer; NORMAL waits in the outbox.
    one = Spoke(tmp_path / "spoke1.db", f"127.0.0.1:{sync_port}")
    two = Spoke(tmp_path / "spoke2.db", f"127.0.0.1:{sync_port}")
    try:
        one.call("peer", node=two.node, endpoint=two.listen)
        one.call("add", content="critical while the hub is down", priority="CRITICAL")
        one.call("add", content="normal while the hub is down")
        eventually(lambda: has(two, "critical while the hub is down"), seconds=10)
        assert not has(two, "normal while the hub is down")
        assert one.state()["backlog"] == 2
        with hub_process(database, tmp_path / "hub2.log", sync_port=sync_port) as hub:
            eventually(lambda: has(two, "normal while the hub is down"), what="sent on reconnect")
            eventually(lambda: one.state()["backlog"] == 0)
            assert hub.status()["p2p_copies"] >= 1  # the CRITICAL write's copy arrived
            eventually(lambda: one.state()["checksum"] == two.state()["checksum"])
    finally:
        one.stop()
        two.stop()
