"""What the hash-chained event log costs a write: ``add`` and ``add_many`` with and without it.

Every write appends its event to ``memory_events`` in the same transaction (on PostgreSQL
after taking the chain's advisory lock and reading its head). The baseline is the same store,
in the same process and run, with the append replaced by a no-op: the only difference
between the two is the event log. Rounds alternate the order of the two variants so that
machine noise hits them alike; each round times ``--adds`` single adds (each its own
transaction) and one ``add_many`` of ``--batch`` memories, wall time and this process' CPU
time (the database server's CPU is in the wall time only).

Run (from the repository root)::

    .venv/bin/python benchmarks/event_log_cost.py
    .venv/bin/python benchmarks/event_log_cost.py --backends sqlite --rounds 20

Output: a table per backend (median and p95 per variant, the log's cost in %) and one JSON
line each (``grep '^{'``). The log has no target of its own: the figures say what it costs.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from _scratch import scratch_database

import memory.store.memories as store_module
from memory import HashingEmbedder, Memory, Scope

DEFAULT_POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
VARIANTS = ("with the log", "without the log")


def p95(values: Sequence[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def timed(work: Callable[[Any], object], argument: Any) -> tuple[float, float]:
    """Wall and CPU milliseconds of one call ``work(argument)``."""
    wall, cpu = time.perf_counter(), time.process_time()
    work(argument)
    return (time.perf_counter() - wall) * 1000, (time.process_time() - cpu) * 1000


def run_backend(backend: str, args: argparse.Namespace) -> dict[str, Any]:
    real_append = store_module.append_events
    samples: dict[str, dict[str, list[float]]] = {
        variant: {"add wall": [], "add cpu": [], "add_many wall": [], "add_many cpu": []}
        for variant in VARIANTS
    }
    with (
        scratch_database(backend, args.postgres_url, "eventbench") as url,
        Memory.open(url, embedder=HashingEmbedder()) as memory,
    ):
        try:
            for round_number in range(args.warmup + args.rounds):
                order = VARIANTS if round_number % 2 == 0 else VARIANTS[::-1]
                for variant in order:
                    store_module.append_events = (
                        real_append if variant == VARIANTS[0] else lambda connection, drafts: []
                    )
                    scope: Scope = memory.scope("bench-user", "planner", uuid.uuid4().hex[:12])
                    for _ in range(args.adds):
                        wall, cpu = timed(scope.add, f"single {uuid.uuid4().hex}")
                        if round_number >= args.warmup:
                            samples[variant]["add wall"].append(wall)
                            samples[variant]["add cpu"].append(cpu)
                    batch = [f"batch {uuid.uuid4().hex}" for _ in range(args.batch)]
                    wall, cpu = timed(scope.add_many, batch)
                    if round_number >= args.warmup:
                        samples[variant]["add_many wall"].append(wall)
                        samples[variant]["add_many cpu"].append(cpu)
        finally:
            store_module.append_events = real_append
    result: dict[str, Any] = {"benchmark": "event_log_cost", "backend": backend}
    print(f"\n{backend}: {args.rounds} rounds of {args.adds} adds and one add_many of "
          f"{args.batch}; ms")  # fmt: skip
    print(f"{'measure':<16}{'with median':>12}{'p95':>9}{'without median':>16}{'p95':>9}"
          f"{'cost median':>13}{'p95':>8}")  # fmt: skip
    for measure in samples[VARIANTS[0]]:
        on, off = samples[VARIANTS[0]][measure], samples[VARIANTS[1]][measure]
        row = {
            "with_median_ms": round(statistics.median(on), 3),
            "with_p95_ms": round(p95(on), 3),
            "without_median_ms": round(statistics.median(off), 3),
            "without_p95_ms": round(p95(off), 3),
        }
        row["cost_median"] = round(row["with_median_ms"] / row["without_median_ms"] - 1, 4)
        row["cost_p95"] = round(row["with_p95_ms"] / row["without_p95_ms"] - 1, 4)
        result[measure] = row
        print(f"{measure:<16}{row['with_median_ms']:>12.2f}{row['with_p95_ms']:>9.2f}"
              f"{row['without_median_ms']:>16.2f}{row['without_p95_ms']:>9.2f}"
              f"{row['cost_median']:>+13.1%}{row['cost_p95']:>+8.1%}")  # fmt: skip
    result["loadavg"] = [round(x, 2) for x in os.getloadavg()]
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--rounds", type=int, default=10, help="measured rounds per variant")
    parser.add_argument("--warmup", type=int, default=2, help="rounds not measured")
    parser.add_argument("--adds", type=int, default=50, help="single adds per round")
    parser.add_argument("--batch", type=int, default=1000, help="memories per add_many")
    parser.add_argument("--postgres-url", default=DEFAULT_POSTGRES_URL)
    args = parser.parse_args(argv)
    print(f"event_log_cost: cpus={os.cpu_count()} "
          f"loadavg={[round(x, 2) for x in os.getloadavg()]}")  # fmt: skip
    for backend in args.backends.split(","):
        print(json.dumps(run_backend(backend, args), sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
