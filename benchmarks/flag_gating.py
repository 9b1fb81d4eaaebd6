"""Benchmark: what the rollout flags cost a Scope call, with the default evaluator.

Run from the repository root::

    python benchmarks/flag_gating.py            # table + one JSON line
    python benchmarks/flag_gating.py --check    # exit 1 if a target is missed

A store on a SQLite file in a temporary directory, opened with the default evaluator (the
database provider of the same store, refreshed every 10 s), the three flags switched on by
``DatabaseFlagProvider.set_flag`` as an operator would, and 200 memories in one scope. Each
measurement times batches of ``--batch-size`` calls and reports the median and 95th
percentile of the per-call time over ``--batches`` batches (garbage collector paused in a
batch); the batches of a pair are interleaved, in a shuffled order per round, so that
machine noise hits both alike (``benchmarks/measure.py``).

- ``flag_enabled``: ``Memory.flag_enabled(name, scope)``, the check every gated call makes,
  against ``FlagEvaluator.is_enabled`` on the same evaluator (the baseline).
- ``gating work``: what a gated read does per call before it queries: evaluate
  USE_HIERARCHICAL_TIERS and USE_CROSS_AGENT_SHARING for the scope and build the reader
  (``Scope._reader``), as a share of the median ``Scope.list(limit=20)``.
- ``Scope.list``: ``scope.list(limit=20)`` against the same query through the store directly
  (``Store.list_memories``: no flag, no validation, no telemetry), reported, not judged: the
  difference includes input validation and the per-call metrics, and on a busy machine the
  noise of two ~10 ms queries exceeds a microsecond of flag checks.

It also counts the SQL statements the engine runs during the ``flag_enabled`` batches: the
flag state is cached, so the target is none.

Targets: ``flag_enabled`` median at most 5 µs; the gating work at most 1 % of the median
``Scope.list``; no statement per evaluation.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

# Runnable as a plain script from a checkout: make the repository root importable.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import sqlalchemy as sa  # noqa: E402
from measure import call_each, emit, interleaved, load_average, summary, table  # noqa: E402

from flags import BUILTIN_FLAGS, USE_HIERARCHICAL_TIERS  # noqa: E402
from memory import HashingEmbedder, Memory, Scope  # noqa: E402
from memory.core.inputs import MemoryQuery  # noqa: E402
from memory.ops import DatabaseFlagProvider  # noqa: E402


def per_call_us(
    contenders: dict[str, tuple[Callable[[Any], object], Sequence[Any]]], count: int
) -> dict[str, dict[str, float]]:
    """Median and p95 µs per call of each ``call(argument)`` over ``count`` batches of its
    arguments, the contenders interleaved."""
    batches = interleaved(
        {name: lambda _, c=c, a=a: call_each(c, a) for name, (c, a) in contenders.items()},
        count,
        random.Random(0),
    )
    return {
        name: summary(
            [ms * 1000 / len(contenders[name][1]) for ms in values], ("median", "p95"), "us"
        )
        for name, values in batches.items()
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batches", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--list-batch-size", type=int, default=20)
    parser.add_argument("--check", action="store_true", help="exit 1 if a target is missed")
    options = parser.parse_args()
    for name in BUILTIN_FLAGS:  # the database alone decides, as on an agent host
        os.environ.pop(name, None)

    with tempfile.TemporaryDirectory(prefix="flag-gating-") as directory:
        url = f"sqlite:///{Path(directory) / 'bench.db'}"
        with Memory.open(url, embedder=HashingEmbedder()) as store:
            operator = DatabaseFlagProvider(store.engine)
            for name in BUILTIN_FLAGS:
                operator.set_flag(name, on=True, actor="benchmark")
            store.flags.refresh()
            scope = store.scope("bench-user", "planner", "s-1")
            scope.add_many([f"memory {i} about the export job" for i in range(200)])
            context = scope.flag_context
            assert store.flag_enabled(USE_HIERARCHICAL_TIERS, scope)

            statements = 0

            def count(*_: Any) -> None:
                nonlocal statements
                statements += 1

            sa.event.listen(store.engine, "before_cursor_execute", count)
            results = per_call_us(
                {
                    "flag_enabled": (
                        lambda s: store.flag_enabled(USE_HIERARCHICAL_TIERS, s),
                        [scope] * options.batch_size,
                    ),
                    "FlagEvaluator.is_enabled (baseline)": (
                        lambda c: store.flags.is_enabled(USE_HIERARCHICAL_TIERS, c),
                        [context] * options.batch_size,
                    ),
                },
                options.batches,
            )
            sa.event.remove(store.engine, "before_cursor_execute", count)

            results |= per_call_us(
                {"gating work (Scope._reader)": (Scope._reader, [scope] * options.batch_size)},
                options.batches,
            )
            owner = scope._reader()
            query = MemoryQuery(limit=20)
            results |= per_call_us(
                {
                    "Scope.list(limit=20)": (
                        lambda s: s.list(limit=20),
                        [scope] * options.list_batch_size,
                    ),
                    "Store.list_memories (baseline)": (
                        lambda o: store._store.list_memories(o, query),
                        [owner] * options.list_batch_size,
                    ),
                },
                options.batches,
            )

    share = (
        results["gating work (Scope._reader)"]["median_us"]
        / results["Scope.list(limit=20)"]["median_us"]
    )
    print(f"load average: {load_average()}")
    rows = [[name, *figures.values()] for name, figures in results.items()]
    print(table(["measurement", "median µs", "p95 µs"], rows, digits=3))
    print(f"gating work / Scope.list median: {share * 100:.3f} %")
    print(f"SQL statements during {options.batches * options.batch_size} flag checks: "
          f"{statements}")  # fmt: skip
    emit(
        {
            "benchmark": "flag_gating",
            "results": results,
            "gating_share_of_list": round(share, 6),
            "statements_during_flag_checks": statements,
        }
    )
    missed = []
    if results["flag_enabled"]["median_us"] > 5:
        missed.append("flag_enabled median above 5 µs")
    if share > 0.01:
        missed.append("the gating work is more than 1 % of Scope.list")
    if statements:
        missed.append("flag checks ran SQL")
    for target in missed:
        print(f"MISSED: {target}")
    return 1 if options.check and missed else 0


if __name__ == "__main__":
    sys.exit(main())
