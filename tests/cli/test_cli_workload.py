"""``memctl workload`` ends early on SIGTERM (the handler the CLI installs around
``memory.ops.drive_workload``), and still prints its summary and writes its snapshot."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

# The console script next to this interpreter: the workload runs as operators run it.
MEMCTL = str(Path(sys.executable).with_name("memctl"))


def test_memctl_workload_ends_early_on_sigterm_with_its_summary(tmp_path: Path) -> None:
    snapshot_path = tmp_path / "metrics.json"
    process = subprocess.Popen(
        [
            MEMCTL, "--database-url", f"sqlite:///{tmp_path / 'memory.db'}",
            "workload", "--duration", "120", "--rate", "20", "--users", "1", "--workers", "1",
            "--embedder", "hashing", "--metrics-port", "0", "--snapshot", str(snapshot_path),
            "--json",
        ],  # fmt: skip
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not snapshot_path.exists() and time.monotonic() < deadline:
            time.sleep(0.2)  # the run has started once the first snapshot is written
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, stderr
    summary = json.loads(stdout)
    assert summary["elapsed_seconds"] < 100 and summary["total"] > 0
    assert summary["snapshot"] == str(snapshot_path)
    assert "Traceback" not in stderr

