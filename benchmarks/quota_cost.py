"""What the per-user quotas cost a write (issue 16, finding 8).

With ``$MEMORY_MAX_BYTES_PER_USER`` set, every write of a user measures what the user
stores before and after it (``memory.store.usage.stored_bytes``: one statement summing the
user's text in every table), so its cost grows with the user's data; with either per-user
quota set, a user's writes also hold the user's lock exclusively (PostgreSQL). This script
fills one user with ``--memories`` memories (60-200 characters, one metadata key each),
then times ``Scope.add`` of a new memory through three stores on the same database, in
shuffled order each round (``measure.interleaved``): no quota (the baseline), the memory
quota, and the byte quota (both set far above what the user holds, so no write is
refused).

Run (from the repository root)::

    .venv/bin/python benchmarks/quota_cost.py
    .venv/bin/python benchmarks/quota_cost.py --backend postgresql --memories 10000

Output: a table, then one JSON line per store (``grep '^{'``).
"""

from __future__ import annotations

import argparse
import os
import random
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from _scratch import DEFAULT_POSTGRES_URL, scratch_database
from measure import emit, interleaved, load_average, summary, table

from memory import Memory

WORDS = "agent plan budget deploy tests cache vector session branch review merge".split()
SETTINGS = {
    "no quota": {},
    "memory quota": {"MEMORY_MAX_MEMORIES_PER_USER": "100000000"},
    "byte quota": {"MEMORY_MAX_BYTES_PER_USER": "100000000000"},
}
QUOTA_NAMES = ("MEMORY_MAX_MEMORIES_PER_USER", "MEMORY_MAX_BYTES_PER_USER")


@contextmanager
def opened(url: str, environment: dict[str, str]) -> Iterator[Memory]:
    """A store opened with exactly the quotas in ``environment`` (read at open)."""
    saved = {name: os.environ.pop(name, None) for name in QUOTA_NAMES}
    os.environ.update(environment)
    try:
        store = Memory.open(url, embedder=None)
    finally:
        for name, value in saved.items():
            os.environ.pop(name, None)
            if value is not None:
                os.environ[name] = value
    with store:
        yield store


def sentence(rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(10, 30)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--backend", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--postgres-url", default=DEFAULT_POSTGRES_URL)
    parser.add_argument("--memories", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=300)
    arguments = parser.parse_args()
    rng = random.Random(16)

    with scratch_database(arguments.backend, arguments.postgres_url, "quota_cost") as url:
        with opened(url, {}) as filler:
            scope = filler.scope("u", "planner")
            for start in range(0, arguments.memories, 1_000):
                count = min(1_000, arguments.memories - start)
                scope.add_many(
                    [
                        {"content": f"{n} {sentence(rng)}", "metadata": {"n": n}}
                        for n in range(start, start + count)
                    ]
                )
        with (
            opened(url, SETTINGS["no quota"]) as plain,
            opened(url, SETTINGS["memory quota"]) as counted,
            opened(url, SETTINGS["byte quota"]) as measured,
        ):
            stores = {"no quota": plain, "memory quota": counted, "byte quota": measured}
            scopes = {name: store.scope("u", "planner") for name, store in stores.items()}

            def adder(name: str) -> Callable[[int], object]:
                return lambda number: scopes[name].add(f"{name} round {number} {sentence(rng)}")

            ops = {name: adder(name) for name in scopes}
            samples = interleaved(ops, arguments.rounds, rng, warmup=20)

    baseline = summary(samples["no quota"], ("median",))["median_ms"]
    rows = []
    for name, values in samples.items():
        figures = summary(values, ("n", "median", "p95", "p99"))
        result = {
            "benchmark": "quota_cost",
            "backend": arguments.backend,
            "memories": arguments.memories,
            "store": name,
            **figures,
            "median_over_baseline_ms": round(figures["median_ms"] - baseline, 3),
            "load_average": load_average(),
        }
        rows.append(result)
    header = ["store", "n", "median_ms", "p95_ms", "p99_ms", "median_over_baseline_ms"]
    print(table(header, [[row[key] for key in header] for row in rows], digits=3))
    for row in rows:
        emit(row)


if __name__ == "__main__":
    main()
