"""Redis SIGKILLed and restarted mid-run, AOF on (fsync always): nothing the bus
acknowledged is lost, and the run finishes with every task completed exactly once."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

from memory.swarm import (
    AgentKey,
    LeaseLostError,
    SwarmBus,
    SwarmUnavailableError,
    TaskStatus,
    connect,
)
from tests.swarm.conftest import RedisServer, enforcement

TASKS = 300
DEADLINE_SECONDS = 60.0


def test_nothing_acknowledged_is_lost_across_a_redis_restart(own_redis: RedisServer) -> None:
    keys = {"planner": AgentKey.generate(), "w1": AgentKey.generate()}
    options = {"flags": enforcement(True), "lease": timedelta(milliseconds=500)}
    planner = SwarmBus.open(own_redis.url, "aof", "planner", key=keys["planner"], **options)
    for agent, key in keys.items():
        planner.register_agent(agent, key.public_key)
    created = [planner.create_task(f"task {n}").id for n in range(TASKS)]
    worker = SwarmBus.open(own_redis.url, "aof", "w1", key=keys["w1"], **options)
    acknowledged: list[str] = []
    outages = 0
    stop = time.monotonic() + DEADLINE_SECONDS

    def work() -> None:
        nonlocal outages
        while len(acknowledged) < TASKS and time.monotonic() < stop:
            try:
                claim = worker.get_unassigned_task(block=timedelta(milliseconds=100))
            except SwarmUnavailableError:
                outages += 1
                time.sleep(0.05)
                continue
            while claim is not None and time.monotonic() < stop:
                try:
                    worker.complete_task(claim)
                    acknowledged.append(claim.task.id)
                    break
                except SwarmUnavailableError:
                    outages += 1  # did it complete? Retrying says: done, or ours to finish
                    time.sleep(0.05)
                except LeaseLostError:
                    break  # completed before the outage, or reclaimed by this same worker

    thread = threading.Thread(target=work)
    thread.start()
    while len(acknowledged) < TASKS // 3 and thread.is_alive():
        time.sleep(0.01)
    before_crash = list(acknowledged)
    own_redis.kill()
    time.sleep(0.3)
    own_redis.start()
    # Straight after the restart: every task exists and every acknowledged completion holds.
    after = SwarmBus.open(own_redis.url, "aof", "planner", key=keys["planner"], **options)
    for task_id in created:
        status = after.check_task_status(task_id)  # verified: custody chains survived intact
        if task_id in before_crash:
            assert status.status is TaskStatus.COMPLETED, task_id
    thread.join(timeout=DEADLINE_SECONDS)
    assert not thread.is_alive()
    assert outages > 0  # the worker did see Redis go away
    assert len(before_crash) >= TASKS // 3
    statuses = [after.check_task_status(task_id) for task_id in created]
    assert {s.status for s in statuses} == {TaskStatus.COMPLETED}
    client = connect(own_redis.url)
    with client.pipeline() as pipe:
        for task_id in created:
            pipe.hget(f"task:{task_id}", "completions")
        assert set(pipe.execute()) == {"1"}
    client.close()
    for bus in (planner, worker, after):
        bus.close()
