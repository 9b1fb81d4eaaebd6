"""8 worker processes x 1,000 tasks each (8,000 tasks) on the real Redis, with workers
SIGKILLed mid-task: every task completed exactly once, none lost, the killed workers' tasks
reclaimed after their lease."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import IO

import pytest

from memory.swarm import AgentKey, TaskStatus
from tests.swarm.conftest import REDIS_URL, Swarm

WORKERS = 8
TASKS = WORKERS * 1000
LEASE = timedelta(seconds=1)
# Three workers hang mid-task after this many completions and are SIGKILLed; one more is
# SIGKILLed at a moment of the test's choosing, whatever it is doing.
STALLS = (50, 300, 600)
DEADLINE_SECONDS = 120.0
REPOSITORY = Path(__file__).resolve().parents[2]


def _lines(stream: IO[str], name: str, into: queue.Queue[tuple[str, str]]) -> None:
    for line in stream:
        into.put((name, line.strip()))


@pytest.mark.slow
def test_every_task_is_completed_exactly_once_through_sigkills(
    swarm: Swarm, tmp_path: Path
) -> None:
    planner = swarm.bus("planner")
    ids = [planner.create_task(f"task {n}", {"n": n}).id for n in range(TASKS)]
    lines: queue.Queue[tuple[str, str]] = queue.Queue()
    processes: dict[str, subprocess.Popen[str]] = {}
    readers: list[threading.Thread] = []
    environment = os.environ | {"USE_SWARM_SIGNATURE_ENFORCEMENT": "on"}

    def start(agent: str, stall_after: int = -1) -> None:
        key = AgentKey.generate()
        planner.register_agent(agent, key.public_key)
        keyfile = tmp_path / f"{agent}.pem"
        keyfile.write_bytes(key.pem())
        keyfile.chmod(0o600)
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.swarm.worker",
                REDIS_URL,
                swarm.prefix,
                swarm.name,
                agent,
                str(keyfile),
                str(int(LEASE.total_seconds() * 1000)),
                str(stall_after),
            ],  # fmt: skip
            cwd=REPOSITORY,
            env=environment,
            stdout=subprocess.PIPE,
            text=True,
        )
        processes[agent] = process
        assert process.stdout is not None
        reader = threading.Thread(target=_lines, args=(process.stdout, agent, lines), daemon=True)
        reader.start()
        readers.append(reader)

    stalls = dict(zip(range(WORKERS), STALLS, strict=False))
    for n in range(WORKERS):
        start(f"worker-{n}", stalls.get(n, -1))
    killed: dict[str, str | None] = {}  # agent -> the task it held, when known
    deadline = time.monotonic() + DEADLINE_SECONDS
    try:
        while time.monotonic() < deadline:
            try:
                agent, line = lines.get(timeout=0.2)
            except queue.Empty:
                agent, line = "", ""
            if line.startswith("STALLED "):
                processes[agent].send_signal(signal.SIGKILL)
                killed[agent] = line.split()[1]
                start(f"replacement-{len(killed)}")
            if len(killed) == len(STALLS) and "worker-7" not in killed:
                processes["worker-7"].send_signal(signal.SIGKILL)
                killed["worker-7"] = None
                start("replacement-last")
            if all(process.poll() is not None for process in processes.values()):
                break
        else:
            pytest.fail(f"the workers did not finish {TASKS} tasks in {DEADLINE_SECONDS} s")
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.kill()
            process.wait(timeout=10)
        for reader in readers:
            reader.join(timeout=10)
        for process in processes.values():
            assert process.stdout is not None
            process.stdout.close()

    assert len(killed) == len(STALLS) + 1
    with swarm.client.pipeline(transaction=False) as pipe:
        for task_id in ids:
            pipe.hmget(f"{swarm.prefix}task:{task_id}", "status", "completions", "assignee")
        rows = pipe.execute()
    statuses = {row[0] for row in rows}
    assert statuses == {TaskStatus.COMPLETED.value}, statuses
    assert {row[1] for row in rows} == {"1"}  # exactly once, none lost
    assert swarm.client.xlen(planner.queue_key) == 0
    assert swarm.client.xpending(planner.queue_key, "workers")["pending"] == 0
    # Each task held by a stalled worker was reclaimed after its lease and finished by another.
    for agent, task_id in killed.items():
        if task_id is None:
            continue
        hops = [(e.agent, e.action.value) for e in planner.custody(task_id)]
        assert hops[1] == (agent, "AGREE"), hops
        assert hops[-1][1] == "CONFIRM" and hops[-1][0] != agent, hops
        assert hops[-2] == (hops[-1][0], "AGREE"), hops
