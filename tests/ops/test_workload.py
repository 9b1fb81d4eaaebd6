"""``memctl workload``: the real /metrics endpoint carries every instrument after a short run;
the knobs that make it slow or failing do what they say."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from memory import HashingEmbedder, InvalidInputError, Memory
from memory.ops import read_snapshot
from memory.ops.workload import WorkloadConfig, run_workload, workload_flags
from memory.telemetry import instruments as telemetry
from memory.telemetry import snapshots
from tests.ops.test_dashboards import SYNC_SERIES

# The console script next to this interpreter: the workload runs as operators run it.
MEMCTL = str(Path(sys.executable).with_name("memctl"))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def series_names(body: str) -> set[str]:
    return {line.split("{")[0].split(" ")[0] for line in body.splitlines() if line[:1] != "#"}


@pytest.fixture(params=["sqlite-file", "postgresql"])
def store(request: pytest.FixtureRequest, url_for: Any) -> Iterator[Memory]:
    # Every rollout flag on: injection (behind USE_ENHANCED_INJECTION) runs for everyone.
    flags = workload_flags("on")
    with Memory.open(url_for(request.param), embedder=HashingEmbedder(), flags=flags) as opened:
        yield opened


def test_a_running_workload_serves_every_instrument_and_writes_a_snapshot(
    tmp_path: Path,
) -> None:
    port = free_port()
    snapshot_path = tmp_path / "metrics.json"
    command = [
        MEMCTL, "--database-url", f"sqlite:///{tmp_path / 'memory.db'}",
        "workload", "--duration", "12", "--rate", "40", "--embedder", "hashing",
        "--metrics-port", str(port), "--snapshot", str(snapshot_path),
        "--snapshot-interval", "1", "--json",
    ]  # fmt: skip
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONWARNINGS": "error"},
    )
    wanted = set(telemetry.PROMETHEUS_SERIES.values()) - SYNC_SERIES  # only a syncing process
    seen: set[str] = set()
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and process.poll() is None and not wanted <= seen:
            try:
                body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5)
                seen = series_names(body.read().decode())
            except OSError:
                pass  # not serving yet
            time.sleep(0.5)
        assert snapshot_path.exists() or process.poll() is None  # rewritten during the run
        stdout, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, stderr
    # Counters exist at 0 before their first event (errors, overflows, resumptions …).
    missing = wanted - seen
    assert not missing, f"not served by a running workload: {sorted(missing)}"
    summary = json.loads(stdout)
    assert summary["total"] > 100 and summary["injected_faults"] == 0
    assert summary["other_failures"] == {}
    assert {"add", "inject", "search"} <= set(summary["operations"])
    snapshot = read_snapshot(snapshot_path)
    assert snapshot.injection_latency.count > 50
    assert snapshot.db_query_duration.count > snapshot.injection_latency.count
    assert snapshot.error_rate == 0.0
    # The tool loop repeats each question: most injections come from the cache.
    assert snapshot.cache_hit_rate is not None and snapshot.cache_hit_rate > 0.6
    assert set(snapshot.flags) == {
        "USE_CROSS_AGENT_SHARING",
        "USE_ENHANCED_INJECTION",
        "USE_HIERARCHICAL_TIERS",
        "USE_SWARM_SIGNATURE_ENFORCEMENT",
    }
    assert f"serving metrics at http://127.0.0.1:{port}/metrics" in stderr


def test_error_rate_fails_that_share_of_operations(store: Memory) -> None:
    window = snapshots.SnapshotWindow()
    report = run_workload(store, WorkloadConfig(duration=2, rate=60, workers=2, error_rate=1.0))
    snapshot = window.snapshot()

    assert report.total > 10
    assert report.injected_faults == report.total  # every operation failed on purpose
    assert snapshot.operations == report.total and snapshot.errors == report.total
    assert snapshot.error_rate == 1.0

    window.restart()
    healthy = run_workload(store, WorkloadConfig(duration=2, rate=60, workers=2, seed=7))
    assert healthy.injected_faults == 0 and not healthy.other_failures
    assert window.snapshot().errors == 0


def test_inject_delay_slows_every_injection(store: Memory) -> None:
    before = telemetry.totals().histogram(telemetry.INJECTION_LATENCY)
    run_workload(store, WorkloadConfig(duration=2, rate=30, workers=2, inject_delay_ms=60))
    latency = telemetry.totals().histogram(telemetry.INJECTION_LATENCY)
    assert latency is not None
    during = latency.minus(before)

    assert during.count > 5
    below_50ms = sum(
        count
        for bound, count in zip(during.boundaries, during.buckets, strict=False)
        if bound <= 50.0
    )
    assert below_50ms == 0  # no injection escaped the delay
    assert during.quantile(0.5) is not None and during.quantile(0.5) >= 50.0


def test_workload_paces_to_the_rate(store: Memory) -> None:
    report = run_workload(store, WorkloadConfig(duration=3, rate=20, workers=3))
    # Never faster than asked (a loaded machine may make it slower).
    assert report.total <= 20 * 3 + 3
    assert report.total >= 10


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"duration": 0, "rate": 1}, "duration: must be > 0"),
        ({"duration": 1, "rate": -1}, "rate: must be > 0"),
        ({"duration": 1, "rate": 1, "error_rate": 1.5}, "error_rate: must be between 0 and 1"),
        ({"duration": 1, "rate": 1, "workers": 0}, "workers: must be between 1 and 64"),
    ],
)
def test_bad_workload_settings_are_refused(options: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        WorkloadConfig(**options)


def test_cli_refuses_a_bad_error_rate(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            MEMCTL, "--database-url", f"sqlite:///{tmp_path / 'memory.db'}",
            "workload", "--error-rate", "2",
        ],  # fmt: skip
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert "--error-rate" in result.stderr and "0<=x<=1" in result.stderr
    assert not (tmp_path / "memory.db").exists()  # refused before touching the database
