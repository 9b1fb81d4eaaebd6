"""Benchmark: MiniLM embedding throughput and query latency, built graph vs a baseline graph.

Run from the repository root::

    python benchmarks/embedding_throughput.py --baseline PATH.onnx

``MiniLMEmbedder`` runs the ONNX graph ``bert_graph`` builds from the packaged weights; up to
commit 8ef8b6f it ran a graph exported from PyTorch (``torch.onnx.export`` of transformers'
``BertModel``). To compare the two in one run, pass the export as ``--baseline``: on a
checkout of 8ef8b6f with its ``.venv`` (torch installed), this prints its path::

    .venv/bin/python -c "from memory.search.embeddings import MiniLMEmbedder, exported_model; \\
        print(exported_model(MiniLMEmbedder.model_path()))"

Both graphs run through the same ``MiniLMEmbedder`` code (tokenizer, batching by length,
pooling), only ``graph()`` differs. Operations, interleaved in a new shuffled order each round
(``benchmarks/measure.py``) so that machine noise hits both alike:

- ingest: ``embed`` of ``--texts`` sentences of 4 to 40 words (batches of 32, run side by
  side on every core, as ``Scope.add_many`` does), ``--rounds`` times, reported as texts
  per second from the median round and as round time p50/p95;
- query: ``embed`` of one question of 4 to 12 words, as every search does, ``--queries``
  times, p50/p95/p99.

Each also reports the process CPU time of the median call: the work done, which a busy
machine disturbs less than the wall time.

Before timing, both graphs embed the same texts and the largest difference is printed (the
built graph must match to 1e-6).
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

# Runnable as a plain script from a checkout: make the repository root importable.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.measure import (  # noqa: E402
    Timing,
    emit,
    load_average,
    shuffled_rounds,
    summary,
    table,
    timed,
)
from memory.search.embeddings import MiniLMEmbedder  # noqa: E402

WORDS = (
    "ada bob invoice export billing service deploy friday tuesday database migration staging "
    "production tea coffee allergy peanuts review pull request payment gateway timeout large "
    "accounts customer ticket sprint planner coder tests python retry network flag rollout "
    "session memory search vector keyword budget token context summary preference pattern"
).split()


class GraphEmbedder(MiniLMEmbedder):
    """``MiniLMEmbedder`` running the graph at ``path`` instead of the one it builds."""

    def __init__(self, path: Path, threads: int | None) -> None:
        super().__init__(threads=threads)
        self.path = path

    def graph(self) -> Path:
        return self.path


def sentences(count: int, rng: random.Random, shortest: int, longest: int) -> list[str]:
    return [
        " ".join(rng.choice(WORDS) for _ in range(rng.randint(shortest, longest))).capitalize()
        for _ in range(count)
    ]


def measured(
    ops: dict[str, Callable[[int], object]], rounds: int, rng: random.Random
) -> dict[str, list[Timing]]:
    """Each op's wall and process CPU time, once per round after one warm-up round, in a new
    shuffled order each round. CPU time (every thread of this process) is the work a call
    did; on a shared machine it moves less with the load than wall time does."""
    samples: dict[str, list[Timing]] = {name: [] for name in ops}
    for number, order in enumerate(shuffled_rounds(ops, rounds + 1, rng)):
        for name in order:
            _, timing = timed(ops[name], number, cpu=time.process_time)
            if number:
                samples[name].append(timing)
    return samples


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--baseline", type=Path, required=True, help="the torch-exported graph")
    parser.add_argument("--texts", type=int, default=256, help="sentences per ingest round")
    parser.add_argument("--rounds", type=int, default=9, help="measured rounds")
    parser.add_argument("--queries", type=int, default=200, help="measured queries")
    parser.add_argument("--threads", type=int, default=None, help="MiniLMEmbedder(threads=N)")
    parser.add_argument("--seed", type=int, default=20261207)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.baseline.is_file():
        print(f"--baseline {args.baseline}: no such file", file=sys.stderr)
        return 2
    rng = random.Random(args.seed)
    built = MiniLMEmbedder(threads=args.threads)
    contenders = {
        "built graph": built,
        "torch export (baseline)": GraphEmbedder(args.baseline, args.threads),
    }
    check = sentences(64, rng, 1, 200)
    vectors = {name: embedder.embed(check) for name, embedder in contenders.items()}
    difference = float(np.abs(vectors["built graph"] - vectors["torch export (baseline)"]).max())
    print(f"largest difference between the two graphs' vectors: {difference:.2e}", flush=True)

    ingest = [sentences(args.texts, rng, 4, 40) for _ in range(args.rounds + 1)]
    queries = sentences(args.queries + 1, rng, 4, 12)
    ingest_samples = measured(
        {name: lambda n, e=e: e.embed(ingest[n]) for name, e in contenders.items()},
        args.rounds, rng,
    )  # fmt: skip
    query_samples = measured(
        {name: lambda n, e=e: e.embed([queries[n]]) for name, e in contenders.items()},
        args.queries, rng,
    )  # fmt: skip

    rows = []
    for name in contenders:
        wall = summary([t.wall for t in ingest_samples[name]], ("n", "p50", "p95"))
        cpu = summary([t.cpu for t in ingest_samples[name]], ("p50", "p95"))
        query = summary([t.wall for t in query_samples[name]], ("n", "p50", "p95", "p99"))
        query_cpu = summary([t.cpu for t in query_samples[name]], ("p50", "p95"))
        rate = args.texts / (wall["p50_ms"] / 1000)
        rows.append([name, rate, wall["p50_ms"], wall["p95_ms"], cpu["p50_ms"], query["p50_ms"],
                     query["p95_ms"], query["p99_ms"], query_cpu["p50_ms"]])  # fmt: skip
        emit(
            {
                "benchmark": "embedding_throughput",
                "graph": name,
                "texts_per_round": args.texts,
                "threads": args.threads,
                "ingest_texts_per_s": round(rate, 1),
                "ingest_round_wall": wall,
                "ingest_round_cpu": cpu,
                "query_wall": query,
                "query_cpu": query_cpu,
                "max_vector_difference": difference,
            }
        )
    header = ["graph", "texts/s", "round p50 ms", "p95", "cpu p50 ms",
              "query p50 ms", "p95", "p99", "cpu p50 ms"]  # fmt: skip
    print(table(header, rows))
    print(f"load average {load_average()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
