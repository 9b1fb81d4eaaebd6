"""``memory.ops.drive_workload`` without the CLI: a run stopped early by its caller still
returns its report and writes its snapshot."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from memory import HashingEmbedder
from memory import ops as ops


def test_a_run_stopped_by_its_caller_still_reports_and_writes_its_snapshot(
    tmp_path: Path,
) -> None:
    snapshot_path = tmp_path / "metrics.json"
    timers: list[threading.Timer] = []

    def stop_soon(driver: ops.Workload) -> None:
        timers.append(threading.Timer(1.0, driver.stop))
        timers[0].start()

    started = time.monotonic()
    run = ops.drive_workload(
        f"sqlite:///{tmp_path / 'memory.db'}",
        ops.WorkloadConfig(duration=60, rate=20, users=1, workers=1),
        embedder=HashingEmbedder(),
        snapshot_path=snapshot_path,
        snapshot_interval=0.2,
        started=stop_soon,
    )

    assert time.monotonic() - started < 30  # far less than the 60 s asked for
    assert 0 < run.report.total < 60 * 20
    assert run.snapshot_path == snapshot_path
    assert ops.read_snapshot(snapshot_path) == run.snapshot
    assert run.snapshot.operations > 0
