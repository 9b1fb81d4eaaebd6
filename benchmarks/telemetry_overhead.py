"""What the metrics cost: store and injection operations with metrics on and off, in one run.

Every operation is called alternately with metrics recording (``on``: the library's
in-process reader plus a Prometheus ``/metrics`` endpoint attached, as in production) and
with recording turned off (``off``: ``memory.telemetry.instruments.set_enabled(False)``;
the engine's statement hooks still fire but return at once), in a random order per pair of calls, so
machine noise hits both alike. Three figures per operation, each as median and p95:

- wall time of the call;
- CPU time of the calling thread during the call (other processes' load cannot inflate it);
- that CPU plus the call's share of the recording: measurements are queued by the call and
  handed to the OpenTelemetry SDK in batches by a background thread; here the benchmark
  holds that thread off and records each block's queue itself, timing it.

The target is an overhead under 5 % on the median of the last figure.

Operations, on one user with ``--memories`` memories (HashingEmbedder vectors, so the model
does not dominate):

- ``add``: ``Scope.add`` of new content (one write transaction);
- ``get``: ``Scope.get`` (a read plus the access update);
- ``list``: ``Scope.list(tier="working", limit=20)``;
- ``inject (miss)``: ``Scope.inject`` with a budget never used before, so the result cache
  misses and the whole context is built (state, preferences, working memory, search,
  patterns);
- ``inject (hit)``: the same injection again, answered from the cache (one SQL statement).

Run from the repository root::

    .venv/bin/python benchmarks/telemetry_overhead.py
    .venv/bin/python benchmarks/telemetry_overhead.py --backends sqlite,postgresql --rounds 30

Prints a table per backend and one JSON line per backend (``grep '^{'``). Exit status 1 when
an operation's median overhead is 5 % or more.
"""

from __future__ import annotations

import argparse
import gc
import os
import random
import signal
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any

from _scratch import DEFAULT_POSTGRES_URL, scratch_database
from measure import emit, load_average, shuffled_rounds, summary, table, timed

from memory import HashingEmbedder, Memory, Scope
from memory.ops import start_prometheus_endpoint
from memory.ops.workload import workload_flags
from memory.telemetry import instruments as telemetry

TARGET_OVERHEAD = 0.05
MODES = ("off", "on")


def prepare(scope: Scope, memories: int, rng: random.Random) -> None:
    topics = ["export", "billing", "login", "search", "retry", "schema", "cache", "webhook"]
    scope.save_state({"step": "implement", "open_files": ["export.py"]})
    scope.set_preference("answer_style", "concise")
    scope.record_pattern("python", "retry", "for attempt in range(5): ...", tags=["network"])
    batch = [
        f"note {i}: the {rng.choice(topics)} job {rng.choice(['broke', 'passed', 'slowed'])} "
        f"after change {rng.randrange(10_000)}"
        for i in range(memories)
    ]
    # Most of the user's memories are episodic; the session holds a dozen working ones.
    for start in range(0, len(batch), 500):
        scope.add_many([{"content": c, "tier": "episodic"} for c in batch[start : start + 500]])
    scope.add_many([{"content": f"working note {i} on the export job"} for i in range(12)])


def operations(scope: Scope, counter: list[int]) -> dict[str, Callable[[], object]]:
    ids = [record.id for record in scope.list(limit=200)]

    def add() -> object:
        counter[0] += 1
        return scope.add(f"benchmark note {counter[0]} {uuid.uuid4().hex}", tier="episodic")

    def inject_miss() -> object:
        counter[0] += 1
        return scope.inject("export job retries", budget_tokens=1_000 + counter[0])

    def inject_hit() -> object:
        return scope.inject("export job retries", budget_tokens=600)

    scope.inject("export job retries", budget_tokens=600)  # fills the cache for the hits
    return {
        "add": add,
        "get": lambda: scope.get(ids[counter[0] % len(ids)]),
        "list": lambda: scope.list(tier="working", limit=20),
        "inject (miss)": inject_miss,
        "inject (hit)": inject_hit,
    }


KINDS = ("off", "on", "off_cpu", "on_cpu", "recording_cpu")


def measure(
    scope: Scope, rounds: int, block: int, warmup: int, rng: random.Random
) -> dict[str, dict[str, list[float]]]:
    counter = [0]
    ops = operations(scope, counter)
    samples: dict[str, dict[str, list[float]]] = {op: {k: [] for k in KINDS} for op in ops}
    for op in ops.values():  # warm caches, pools and the vector index
        for _ in range(warmup):
            op()
    for order in shuffled_rounds(ops, rounds, rng):
        gc.collect()
        for name in order:
            op, kept = ops[name], samples[name]
            telemetry.flush()
            # Calls alternate on/off in a random order, so both see the same machine.
            for modes in shuffled_rounds(MODES, block, rng):
                for mode in modes:
                    telemetry.set_enabled(mode == "on")
                    _, timing = timed(op, cpu=time.thread_time)
                    kept[mode].append(timing.wall)
                    kept[f"{mode}_cpu"].append(timing.cpu)
            # The block's measurements, handed to the SDK in one batch as the background
            # thread does (it is held off, see main): the recording's CPU per "on" call.
            _, flush = timed(telemetry.flush, cpu=time.thread_time)
            kept["recording_cpu"].append(flush.cpu / block)
    telemetry.set_enabled(True)
    return samples


def summarise(samples: dict[str, dict[str, list[float]]]) -> dict[str, dict[str, Any]]:
    result: dict[str, dict[str, Any]] = {}
    for name, kinds in samples.items():
        row: dict[str, Any] = {"samples": len(kinds["off"])}
        for kind, values in kinds.items():
            figures = summary(values, ("median", "p95"), digits=4)
            row.update({f"{kind}_{name}": value for name, value in figures.items()})
        # Total CPU of an "on" call: the call itself plus its share of the batched recording.
        recording = statistics.fmean(kinds["recording_cpu"])
        row["on_total_cpu_median_ms"] = round(row["on_cpu_median_ms"] + recording, 4)
        row["on_total_cpu_p95_ms"] = round(row["on_cpu_p95_ms"] + recording, 4)
        for on, off, label in (
            ("on", "off", "latency"),
            ("on_cpu", "off_cpu", "cpu"),
            ("on_total_cpu", "off_cpu", "total_cpu"),
        ):
            for stat in ("median", "p95"):
                row[f"overhead_{label}_{stat}"] = round(
                    row[f"{on}_{stat}_ms"] / row[f"{off}_{stat}_ms"] - 1, 4
                )
        result[name] = row
    return result


def run_backend(backend: str, args: argparse.Namespace) -> dict[str, Any]:
    rng = random.Random(args.seed)
    with scratch_database(backend, args.postgres_url, "membench") as url:
        flags = workload_flags("on")  # injection runs (USE_ENHANCED_INJECTION on)
        with Memory.open(url, embedder=HashingEmbedder(), flags=flags) as memory:
            scope = memory.scope("bench-user", "planner", "s1")
            prepare(scope, args.memories, rng)
            samples = measure(scope, args.rounds, args.block, args.warmup, rng)
    return {"backend": backend, "operations": summarise(samples)}


def _percent(value: float) -> str:
    return f"{value * 100:+.1f}%"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", default="sqlite", help="sqlite,postgresql")
    parser.add_argument("--memories", type=int, default=2_000)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--block", type=int, default=20, help="operations per mode per round")
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--postgres-url", default=DEFAULT_POSTGRES_URL)
    parser.add_argument("--seed", type=int, default=20240601)
    args = parser.parse_args()
    # A terminated run still drops its throwaway PostgreSQL database (the finally blocks).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    # The background thread would record queued measurements at any moment; the benchmark
    # records them itself, at the end of each block, to count what that costs.
    telemetry.FLUSH_INTERVAL_SECONDS = 3600.0
    endpoint = start_prometheus_endpoint(0)  # "on" exports, as a production process does
    print(
        f"python {sys.version.split()[0]}, {os.cpu_count()} cpus, "
        f"load average at start {load_average()[0]:.2f}; /metrics at {endpoint.url}"
    )
    failed = False
    try:
        for backend in args.backends.split(","):
            result = run_backend(backend.strip(), args)
            print(f"\n{backend}: {args.rounds} rounds x {args.block} calls per mode")
            for on, off, label, title in (
                ("on", "off", "latency", "wall time, ms"),
                ("on_cpu", "off_cpu", "cpu", "CPU of the call, ms"),
                ("on_total_cpu", "off_cpu", "total_cpu", "CPU + batched recording, ms"),
            ):
                judged = label == "total_cpu"
                rows = []
                for name, row in result["operations"].items():
                    overhead = row[f"overhead_{label}_median"]
                    failed |= judged and overhead >= TARGET_OVERHEAD
                    verdict = ("PASS" if overhead < TARGET_OVERHEAD else "FAIL") if judged else ""
                    rows.append([
                        f"  {name}", row[f"{off}_median_ms"], row[f"{on}_median_ms"],
                        _percent(overhead), row[f"{off}_p95_ms"], row[f"{on}_p95_ms"],
                        _percent(row[f"overhead_{label}_p95"]), verdict,
                    ])  # fmt: skip
                header = [title, "off p50", "on p50", "ovh", "off p95", "on p95", "ovh", "target"]
                print(table(header if judged else header[:-1] + [""], rows, digits=3))
            emit(result)
    finally:
        endpoint.close()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
