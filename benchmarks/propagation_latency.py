"""Propagation latency of ``memory:updates``: from commit to the subscriber's callback.

For each backend a writer commits memories one at a time (``Scope.add``) and a subscriber
receives the events:

- ``inprocess``: writer and subscriber threads in this process (SQLite file);
- ``postgresql``: LISTEN/NOTIFY; the subscriber is another process (PostgreSQL store);
- ``redis``: Redis pub/sub on a ``redis-server`` this script starts on a free loopback port
  (never the shared one on 6379); the subscriber is another process (SQLite file store).

Latency is measured from the moment the writer's transaction has committed (stamped by
an observer the store calls right after commit, before publishing) to the moment the
callback runs, on one clock (both processes on this machine, ``time.time()``).

Each backend is compared with a baseline measured in the same run, the bare transport
without the library: a ``queue.SimpleQueue`` hand-off between threads, a raw
``NOTIFY``→``LISTEN`` round trip (psycopg, two processes), and a raw ``PUBLISH``→
``SUBSCRIBE`` round trip (redis-py, two processes). The difference is what the library adds
(serialisation, the order and gap checks, the callback thread).

Run (from the repository root)::

    .venv/bin/python benchmarks/propagation_latency.py
    .venv/bin/python benchmarks/propagation_latency.py --events 2000 --interval-ms 2

Prints a table (p50 / p95 / p99 / max, ms) and one JSON line per backend (``grep '^{'``).
Target: p99 < 50 ms on every backend (the seeds ask for < 1 s). Exit status 1 if missed.
"""

from __future__ import annotations

import argparse
import os
import queue
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _scratch import DEFAULT_POSTGRES_URL, scratch_database
from measure import emit, load_average, summary, table
from sqlalchemy.engine import make_url

from memory import Memory, MemoryEvent

TARGET_P99_MS = 50.0
CHANNEL = "memory:updates"
BASELINE_CHANNEL = "propagation_baseline"

# The subscriber process: prints READY, then "<key> <time.time()>" per message received.
SUBSCRIBER = r"""
import sys, time, json
mode, url, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
out = sys.stdout
if mode == "memory":
    import threading
    from memory import Memory
    done = threading.Event()
    got = [0]
    def callback(event):
        out.write(f"{event.seq} {time.time()}\n")
        got[0] += 1
        if got[0] >= count:
            done.set()
    updates = sys.argv[4]
    with Memory.open(url, embedder=None, updates=updates, role="admin") as store:
        with store.subscribe(callback):
            time.sleep(0.5)  # the listener is connected
            print("READY", flush=True)
            done.wait(300)
elif mode == "raw-redis":
    import redis
    client = redis.Redis.from_url(url)
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe("propagation_baseline")
    print("READY", flush=True)
    for _ in range(count):
        message = None
        while message is None:
            message = pubsub.get_message(timeout=5)
        out.write(f"{message['data'].decode()} {time.time()}\n")
elif mode == "raw-pg":
    import psycopg
    connection = psycopg.connect(url, autocommit=True)
    connection.execute('LISTEN "propagation_baseline"')
    print("READY", flush=True)
    received = 0
    while received < count:
        for notify in connection.notifies(timeout=5, stop_after=count - received):
            out.write(f"{notify.payload} {time.time()}\n")
            received += 1
out.flush()
"""


STATS = ("n", "p50", "p95", "p99", "max")


class Subscriber:
    """A subscriber process; ``received()`` maps each key to its arrival time."""

    def __init__(self, *args: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", SUBSCRIBER, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline().strip()
        if line != "READY":
            raise RuntimeError(f"subscriber failed: {line} {self.process.stderr.read()}")

    def received(self) -> dict[int, float]:
        out, err = self.process.communicate(timeout=300)
        if self.process.returncode != 0:
            raise RuntimeError(f"subscriber failed: {err}")
        found = {}
        for line in out.splitlines():
            key, stamp = line.split()
            found[int(key)] = float(stamp)
        return found


def paced(count: int, interval: float, send: Callable[[int], None]) -> None:
    for index in range(count):
        started = time.perf_counter()
        send(index)
        remaining = interval - (time.perf_counter() - started)
        if remaining > 0:
            time.sleep(remaining)


def measure_library(
    url: str, updates: str, count: int, interval: float, in_process: bool
) -> list[float]:
    """Commit ``count`` memories; latency from each commit to its callback."""
    committed: dict[int, float] = {}
    with Memory.open(url, embedder=None, updates=updates, role="admin") as store:
        # Stamped right after commit, before the event is published.
        store._updates.observe(
            lambda events: committed.update({event.seq: time.time() for event in events})
        )
        scope = store.scope("bench", "writer", uuid.uuid4().hex[:8])
        if in_process:
            arrived: dict[int, float] = {}
            done = threading.Event()

            def callback(event: MemoryEvent) -> None:
                arrived[event.seq] = time.time()
                if len(arrived) >= count:
                    done.set()

            with store.subscribe(callback):
                paced(count, interval, lambda i: scope.add(f"propagation {i}"))
                done.wait(60)
        else:
            subscriber = Subscriber("memory", url, str(count), updates)
            paced(count, interval, lambda i: scope.add(f"propagation {i}"))
            arrived = subscriber.received()
    missing = set(committed) - set(arrived)
    if missing:
        raise RuntimeError(f"{len(missing)} events never arrived: {sorted(missing)[:5]}")
    return [(arrived[seq] - committed[seq]) * 1000 for seq in committed]


def measure_queue(count: int, interval: float) -> list[float]:
    channel: queue.SimpleQueue[float] = queue.SimpleQueue()
    latencies: list[float] = []

    def consume() -> None:
        for _ in range(count):
            sent = channel.get()
            latencies.append((time.time() - sent) * 1000)

    consumer = threading.Thread(target=consume)
    consumer.start()
    paced(count, interval, lambda i: channel.put(time.time()))
    consumer.join()
    return latencies


def measure_raw(
    mode: str, url: str, count: int, interval: float, send: Callable[[str], None]
) -> list[float]:
    sent: dict[int, float] = {}
    subscriber = Subscriber(mode, url, str(count))

    def one(index: int) -> None:
        sent[index] = time.time()
        send(str(index))

    paced(count, interval, one)
    arrived = subscriber.received()
    return [(arrived[index] - sent[index]) * 1000 for index in sent]


def publisher_of(client: Any) -> Callable[[str], None]:
    """A sender that publishes on the baseline channel through ``client``."""
    return lambda payload: client.publish(BASELINE_CHANNEL, payload)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start_redis(directory: Path) -> tuple[subprocess.Popen[bytes], str]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not installed")
    port = free_port()
    process = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(directory),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    import redis

    client = redis.Redis(port=port)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    client.close()
    return process, f"redis://127.0.0.1:{port}/0"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=1000, help="events per backend")
    parser.add_argument(
        "--interval-ms", type=float, default=5.0, help="pause between commits (default 5 ms)"
    )
    parser.add_argument("--backends", default="inprocess,postgresql,redis")
    parser.add_argument(
        "--postgres-url",
        default=DEFAULT_POSTGRES_URL,
        help="an existing database, used only to CREATE and DROP a throwaway one",
    )
    args = parser.parse_args()
    interval = args.interval_ms / 1000
    backends = args.backends.split(",")
    print(
        f"propagation_latency: events={args.events} interval={args.interval_ms} ms "
        f"cpus={os.cpu_count()} loadavg={load_average()}"
    )

    results: list[dict[str, Any]] = []
    redis_process = None
    with (
        tempfile.TemporaryDirectory(prefix="propagation-") as scratch,
        scratch_database("postgresql", args.postgres_url, "propbench") as pg,
    ):
        try:
            raw_pg = make_url(pg).set(drivername="postgresql").render_as_string(False)
            sqlite_url = f"sqlite:///{Path(scratch) / 'bench.db'}"
            for url in (pg, sqlite_url):
                Memory.open(url, embedder=None).close()
            if "redis" in backends:
                redis_process, redis_url = start_redis(Path(scratch))
            for backend in backends:
                if backend == "inprocess":
                    library = measure_library(
                        sqlite_url, "inprocess", args.events, interval, in_process=True
                    )
                    baseline = measure_queue(args.events, interval)
                    baseline_name = "queue.SimpleQueue hand-off"
                elif backend == "postgresql":
                    library = measure_library(
                        pg, "postgresql", args.events, interval, in_process=False
                    )
                    import psycopg

                    with psycopg.connect(raw_pg, autocommit=True) as notifier:
                        baseline = measure_raw(
                            "raw-pg",
                            raw_pg,
                            args.events,
                            interval,
                            lambda payload: notifier.execute(
                                "SELECT pg_notify(%s, %s)", (BASELINE_CHANNEL, payload)
                            ),
                        )
                    baseline_name = "bare NOTIFY -> LISTEN"
                elif backend == "redis":
                    library = measure_library(
                        sqlite_url, redis_url, args.events, interval, in_process=False
                    )
                    import redis

                    with redis.Redis.from_url(redis_url) as publisher:
                        baseline = measure_raw(
                            "raw-redis",
                            redis_url,
                            args.events,
                            interval,
                            publisher_of(publisher),
                        )
                    baseline_name = "bare PUBLISH -> SUBSCRIBE"
                else:
                    raise SystemExit(f"unknown backend {backend!r}")
                results.append(
                    {
                        "backend": backend,
                        "library": summary(library, STATS),
                        "baseline": {"what": baseline_name, **summary(baseline, STATS)},
                    }
                )
        finally:
            if redis_process is not None:
                redis_process.terminate()
                redis_process.wait(10)

    rows = []
    for result in results:
        library, baseline = result["library"], dict(result["baseline"])
        verdict = "PASS" if library["p99_ms"] < TARGET_P99_MS else "FAIL"
        rows.append([f"{result['backend']} library", *library.values(), verdict])
        what = baseline.pop("what")
        rows.append([f"{result['backend']} baseline: {what}", *baseline.values(), ""])
    header = ["ms", *STATS, f"p99 < {TARGET_P99_MS:g} ms"]
    print("\n" + table(header, rows, digits=3) + "\n")
    for result in results:
        emit(result)
    return 1 if any(row[-1] == "FAIL" for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
