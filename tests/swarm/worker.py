"""A worker process for the swarm load tests: claim, complete, repeat; exit when idle.

``python -m tests.swarm.worker URL PREFIX SWARM AGENT KEYFILE LEASE_MS STALL_AFTER``. With
STALL_AFTER >= 0, after that many completions it claims one more task, prints
``STALLED <task id>`` and hangs holding it, so the test can SIGKILL it mid-task. Prints
``DONE <count>`` when no task has come for a second.
"""

from __future__ import annotations

import sys
import time
from datetime import timedelta
from pathlib import Path

from memory.swarm import AgentKey, LeaseLostError, SwarmBus

IDLE_EXIT_SECONDS = 1.0
STALL_SECONDS = 600.0


def main(argv: list[str]) -> int:
    url, prefix, swarm, agent, keyfile, lease_ms, stall_after = argv
    key = AgentKey.load(Path(keyfile).read_bytes())
    bus = SwarmBus.open(
        url, swarm, agent, key=key, prefix=prefix, lease=timedelta(milliseconds=int(lease_ms))
    )
    completed, idle_since = 0, time.monotonic()
    while time.monotonic() - idle_since < IDLE_EXIT_SECONDS:
        claim = bus.get_unassigned_task(block=timedelta(milliseconds=200))
        if claim is None:
            continue
        idle_since = time.monotonic()
        if completed == int(stall_after):
            print(f"STALLED {claim.task.id}", flush=True)
            time.sleep(STALL_SECONDS)  # the test kills this process here
        try:
            bus.complete_task(claim, {"by": agent})
            completed += 1
        except LeaseLostError:
            pass  # this worker was too slow: the task was reclaimed and is someone else's
    print(f"DONE {completed}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
