"""Swarm bus throughput: claim→complete cycles and post_finding calls per second with 8
worker processes, signatures on and off in the same run, over the Redis round trip.

Three workloads run in every round, in a new shuffled order each round (``measure``'s
``shuffled_rounds``), so machine noise hits them alike:

- ``signatures off``: agents without keys, ``USE_SWARM_SIGNATURE_ENFORCEMENT`` off (unsigned
  custody entries are hashed and chained, not signed or verified);
- ``signatures on``: every agent signs its custody entries with Ed25519 and every read is
  verified against the registry, enforcement on;
- ``floor``: the same 8 processes sending ``PING`` (redis-py, one connection each): the
  round trip no bus operation can beat. A claim→complete cycle is 3 round trips (take the
  next entry with the task, claim, complete), a finding 1.

Each worker process times each cycle (``get_unassigned_task`` + ``complete_task``) and each
``post_finding``; throughput is operations / wall time from a common start to the last
worker's end. Tasks are queued before a round starts (not timed).

Redis: a ``redis-server`` this script starts on a free loopback port (no persistence: the
bus is measured, not the disk), or ``--redis-url`` (keys go under a fresh prefix, deleted
afterwards).

Run (from the repository root)::

    .venv/bin/python benchmarks/swarm_throughput.py
    .venv/bin/python benchmarks/swarm_throughput.py --rounds 5 --tasks-per-worker 500

Prints a table and one JSON line per workload (``grep '^{'``). Target (issue 20): at least
2,000 cycles/s with p99 <= 10 ms, signatures off; exit status 1 if missed.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import logging
import multiprocessing
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

from measure import emit, load_average, shuffled_rounds, summary, table

from flags import USE_SWARM_SIGNATURE_ENFORCEMENT, FlagEvaluator
from memory.swarm import AgentKey, SwarmBus, SwarmUnavailableError, connect

TARGET_CYCLES_PER_SECOND = 2000.0
TARGET_P99_MS = 10.0
# One swarm per workload: a queue of unsigned tasks is never read by enforcing workers.
SWARMS = {"signatures off": "bench-off", "signatures on": "bench-on"}
WORKLOADS = ("signatures off", "signatures on", "floor")

# One bus per workload in each worker process, made on first use (not timed).
_buses: dict[str, SwarmBus] = {}


def _flags(enforce: bool) -> FlagEvaluator:
    return FlagEvaluator(environ={USE_SWARM_SIGNATURE_ENFORCEMENT: "on" if enforce else "off"})


def _bus(url: str, prefix: str, workload: str) -> SwarmBus:
    bus = _buses.get(workload)
    if bus is None:
        # Unsigned envelopes are warned about by design while enforcement is off: not news here.
        logging.getLogger("memory.swarm").setLevel(logging.ERROR)
        signed = workload == "signatures on"
        key = AgentKey.generate() if signed else None
        agent = f"worker-{os.getpid()}"
        bus = SwarmBus.open(
            url, SWARMS[workload], agent, key=key, prefix=prefix, flags=_flags(signed),
            lease=timedelta(seconds=30),
        )  # fmt: skip
        if key is not None:
            bus.register_agent(agent, key.public_key)
        _buses[workload] = bus
    return bus


def _wait(start_at: float) -> None:
    time.sleep(max(0.0, start_at - time.time()))


def cycles(url: str, prefix: str, workload: str, start_at: float) -> tuple[list[float], float]:
    """Claim→complete until the queue is empty: each cycle's ms, and when this worker ended."""
    bus = _bus(url, prefix, workload)
    times: list[float] = []
    _wait(start_at)
    while True:
        started = time.perf_counter()
        claim = bus.get_unassigned_task()
        if claim is None:
            return times, time.time()
        bus.complete_task(claim, {"ok": True})
        times.append((time.perf_counter() - started) * 1000)


def findings(
    url: str, prefix: str, workload: str, task_id: str, count: int, start_at: float
) -> tuple[list[float], float]:
    """``count`` findings on ``task_id``: each call's ms, and when this worker ended."""
    bus = _bus(url, prefix, workload)
    times: list[float] = []
    _wait(start_at)
    for n in range(count):
        started = time.perf_counter()
        bus.post_finding(task_id, f"claim {n % 50}", 0.5 + (n % 5) / 10, ["if://citation/b"])
        times.append((time.perf_counter() - started) * 1000)
    return times, time.time()


def pings(url: str, count: int, start_at: float) -> tuple[list[float], float]:
    """``count`` PINGs on one connection: each round trip's ms, and when this worker ended."""
    client = connect(url)
    client.ping()
    times: list[float] = []
    _wait(start_at)
    for _ in range(count):
        started = time.perf_counter()
        client.ping()
        times.append((time.perf_counter() - started) * 1000)
    client.close()
    return times, time.time()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start_redis() -> tuple[str, subprocess.Popen[bytes], Path]:
    executable = shutil.which("redis-server")
    if executable is None:
        sys.exit("redis-server is not installed (apt-get install redis-server)")
    directory = Path(tempfile.mkdtemp(prefix="swarm-throughput-"))
    port = _free_port()
    process = subprocess.Popen(
        [
            executable,
            "--bind",
            "127.0.0.1",
            "--port",
            str(port),
            "--dir",
            str(directory),
            "--save",
            "",
            "--appendonly",
            "no",
        ],  # fmt: skip
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            SwarmBus.open(url, "probe", "probe").close()
            return url, process, directory
        except SwarmUnavailableError:  # not up yet
            time.sleep(0.05)
    process.kill()
    sys.exit("redis-server did not start within 15 s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--redis-url", default=None, help="Use this Redis instead of starting one.")
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--tasks-per-worker", type=int, default=250)
    parser.add_argument("--findings-per-worker", type=int, default=250)
    parser.add_argument("--pings-per-worker", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=20)
    args = parser.parse_args(argv)
    logging.getLogger("memory.swarm").setLevel(logging.ERROR)

    server = None
    if args.redis_url is None:
        url, process, directory = start_redis()
        server = (process, directory)
    else:
        url = args.redis_url
    prefix = f"swarm-bench-{uuid.uuid4().hex[:8]}:"
    key = AgentKey.generate()
    planners = {
        "signatures off": SwarmBus.open(
            url, SWARMS["signatures off"], "planner-off", prefix=prefix, flags=_flags(False)
        ),
        "signatures on": SwarmBus.open(
            url, SWARMS["signatures on"], "planner-on", key=key, prefix=prefix, flags=_flags(True)
        ),
    }
    planners["signatures on"].register_agent("planner-on", key.public_key)

    samples: dict[str, dict[str, list[float]]] = {
        w: {"cycle": [], "finding": [], "ping": []} for w in WORKLOADS
    }
    rates: dict[str, dict[str, list[float]]] = {
        w: {"cycle": [], "finding": [], "ping": []} for w in WORKLOADS
    }
    context = multiprocessing.get_context("spawn")
    rng = random.Random(args.seed)
    try:
        with concurrent.futures.ProcessPoolExecutor(args.workers, mp_context=context) as pool:
            # Warm-up: start every process and make its buses (not measured); each job holds
            # its process a second, so that every process gets one.
            list(pool.map(_warm, [(url, prefix)] * args.workers))
            for order in shuffled_rounds(WORKLOADS, args.rounds, rng):
                for workload in order:
                    run_round(pool, args, url, prefix, workload, planners, samples, rates)
    finally:
        client = connect(url)
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()
        if server is not None:
            server[0].kill()
            server[0].wait(timeout=10)
            shutil.rmtree(server[1], ignore_errors=True)

    rows, ok = [], True
    for workload in WORKLOADS:
        for operation in ("cycle", "finding", "ping"):
            values = samples[workload][operation]
            if not values:
                continue
            figures = summary(values, ("n", "p50", "p95", "p99"), unit="ms")
            per_second = sum(rates[workload][operation]) / len(rates[workload][operation])
            name = {"cycle": "claim→complete", "finding": "post_finding", "ping": "PING"}[operation]
            rows.append([workload, name, round(per_second), *list(figures.values())[1:]])
            emit(
                {
                    "benchmark": "swarm_throughput",
                    "workload": workload,
                    "operation": name,
                    "workers": args.workers,
                    "per_second": round(per_second, 1),
                    **figures,
                }
            )
            if workload == "signatures off" and operation == "cycle":
                ok = per_second >= TARGET_CYCLES_PER_SECOND and figures["p99_ms"] <= TARGET_P99_MS
    print(f"\n{args.workers} workers, {args.rounds} rounds, load average {load_average()}")
    print(
        table(
            ["workload", "operation", "ops/s", "p50 ms", "p95 ms", "p99 ms"],
            rows,
            digits=3,
            labels=2,
        )
    )
    verdict = "met" if ok else "MISSED"
    print(
        f"target: >= {TARGET_CYCLES_PER_SECOND:,.0f} cycles/s with p99 <= {TARGET_P99_MS} ms "
        f"(signatures off): {verdict}"
    )
    return 0 if ok else 1


def _warm(arguments: tuple[str, str]) -> int:
    url, prefix = arguments
    for workload in WORKLOADS[:2]:
        _bus(url, prefix, workload)
    time.sleep(1.0)
    return os.getpid()


def run_round(
    pool: concurrent.futures.ProcessPoolExecutor,
    args: argparse.Namespace,
    url: str,
    prefix: str,
    workload: str,
    planners: dict[str, SwarmBus],
    samples: dict[str, dict[str, list[float]]],
    rates: dict[str, dict[str, list[float]]],
) -> None:
    """One round of one workload: the cycles, then the findings (or the PINGs)."""
    workers = args.workers

    def measure(
        operation: str, jobs: list[concurrent.futures.Future[Any]], start_at: float
    ) -> None:
        results = [job.result() for job in jobs]
        times = [t for worker_times, _ in results for t in worker_times]
        ended = max(end for _, end in results)
        samples[workload][operation].extend(times)
        rates[workload][operation].append(len(times) / (ended - start_at))

    if workload == "floor":
        start_at = time.time() + 0.5
        jobs = [pool.submit(pings, url, args.pings_per_worker, start_at) for _ in range(workers)]
        measure("ping", jobs, start_at)
        return
    planner = planners[workload]
    for n in range(workers * args.tasks_per_worker):
        planner.create_task(f"bench {n}", {"n": n})
    start_at = time.time() + 0.5
    measure(
        "cycle",
        [pool.submit(cycles, url, prefix, workload, start_at) for _ in range(workers)],
        start_at,
    )
    task = planner.create_task("findings")
    start_at = time.time() + 0.5
    jobs = [
        pool.submit(findings, url, prefix, workload, task.id, args.findings_per_worker, start_at)
        for _ in range(workers)
    ]
    measure("finding", jobs, start_at)
    # Off the queue, so that the next round's cycles are the bench tasks only.
    claim = planner.claim_task(task.id)
    assert claim is not None
    planner.complete_task(claim)


if __name__ == "__main__":
    sys.exit(main())
