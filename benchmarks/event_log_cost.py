"""What the hash-chained event log costs a write: ``add`` and ``add_many`` with and without it.

Every write appends its event to ``memory_events`` in the same transaction (on PostgreSQL
after taking the chain's advisory lock and reading its head). The baseline is the same store,
in the same process and run, with the append replaced by a no-op: the only difference
between the two is the event log. Each round runs the two variants in a shuffled order so
that machine noise hits them alike; each round times ``--adds`` single adds (each its own
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
import os
import random
import sys
import time
import uuid
from collections.abc import Sequence
from typing import Any

from _scratch import DEFAULT_POSTGRES_URL, scratch_database
from measure import emit, load_average, shuffled_rounds, summary, table, timed

import memory.store.memories as store_module
from memory import HashingEmbedder, Memory, Scope

VARIANTS = ("with the log", "without the log")


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
            rounds = shuffled_rounds(VARIANTS, args.warmup + args.rounds, random.Random(0))
            for round_number, order in enumerate(rounds):
                for variant in order:
                    store_module.append_events = (
                        real_append if variant == VARIANTS[0] else lambda connection, drafts: []
                    )
                    scope: Scope = memory.scope("bench-user", "planner", uuid.uuid4().hex[:12])
                    for _ in range(args.adds):
                        content = f"single {uuid.uuid4().hex}"
                        _, add = timed(scope.add, content, cpu=time.process_time)
                        if round_number >= args.warmup:
                            samples[variant]["add wall"].append(add.wall)
                            samples[variant]["add cpu"].append(add.cpu)
                    batch = [f"batch {uuid.uuid4().hex}" for _ in range(args.batch)]
                    _, many = timed(scope.add_many, batch, cpu=time.process_time)
                    if round_number >= args.warmup:
                        samples[variant]["add_many wall"].append(many.wall)
                        samples[variant]["add_many cpu"].append(many.cpu)
        finally:
            store_module.append_events = real_append
    result: dict[str, Any] = {"benchmark": "event_log_cost", "backend": backend}
    rows = []
    for measure in samples[VARIANTS[0]]:
        row = {
            f"{prefix}_{name}": value
            for prefix, variant in zip(("with", "without"), VARIANTS, strict=True)
            for name, value in summary(samples[variant][measure], ("median", "p95")).items()
        }
        row["cost_median"] = round(row["with_median_ms"] / row["without_median_ms"] - 1, 4)
        row["cost_p95"] = round(row["with_p95_ms"] / row["without_p95_ms"] - 1, 4)
        result[measure] = row
        *figures, cost_median, cost_p95 = row.values()
        rows.append([measure, *figures, f"{cost_median:+.1%}", f"{cost_p95:+.1%}"])
    print(f"\n{backend}: {args.rounds} rounds of {args.adds} adds and one add_many of "
          f"{args.batch}; ms")  # fmt: skip
    header = ["measure", "with median", "p95", "without median", "p95", "cost median", "p95"]
    print(table(header, rows))
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
    print(f"event_log_cost: cpus={os.cpu_count()} loadavg={load_average()}")
    for backend in args.backends.split(","):
        emit(run_backend(backend, args), sort_keys=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
