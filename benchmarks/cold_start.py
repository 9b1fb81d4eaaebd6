"""Cold start: the first search after a restart, from index snapshots vs loading the index
from the database (issue 17, item 7; target: within 2 s at 1M memories).

For each size (``--sizes``, memories in all) and layout, on SQLite:

- ``one``: one user holds every memory; the first search of that user is timed;
- ``many``: ``--users`` users share them evenly; the first searches of ``--probes`` of them
  are timed, one after the other (each loads that user's index).

Each round is a restart: a fresh interpreter opens the store, warms the embedder and the
connection, and times its first searches; nothing else runs in it. The baseline is today's
load from the database (``MEMORY_INDEX_CACHE_DIR=off``), measured in the same run, its
rounds shuffled with the snapshot rounds (``measure.shuffled_rounds``) so machine noise
hits both alike. Before the rounds one process loads every user and closes, which writes
the snapshots. Reported: p50 / p95 / max of the first-search times, the snapshot files'
size, and the load average.

Data: ``retrieval_latency.bulk_load`` writes the rows straight into the library's tables as
``Store.add_memories`` would (memories, metadata, terms and FTS5, embeddings, the change
log), from template sentences. Vectors come from the hashing embedder (384 dimensions,
like MiniLM): what a load reads and holds does not depend on the model, and the model's
start-up would otherwise dominate a fresh process. The operating system's page cache is
warm in every round (a restarted replica on the same host); a cold disk adds its read time
of the snapshot files (``snapshot_mb``).

Run from the repository root::

    .venv/bin/python benchmarks/cold_start.py --sizes 100000 --rounds 5
    .venv/bin/python benchmarks/cold_start.py --sizes 1000000 --rounds 3

Output: a table per case, one JSON line per case (``grep '^{'``). Exit status 1 if a
snapshot first search at 1M (one user) exceeds the 2 s target.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from typing import Any

import numpy as np
from _scratch import DEFAULT_POSTGRES_URL, scratch_database
from measure import emit, load_average, shuffled_rounds, summary, table
from retrieval_latency import Corpus, bulk_load, finish_load
from sqlalchemy.engine import make_url

from memory import HashingEmbedder, Memory
from memory.search.snapshots import CACHE_DIR_ENV, snapshot_directory

TARGET_FIRST_SEARCH_MS = 2000.0  # at 1M memories, one user
# MiniLM's: a memory's vector costs in the index what a real model's would.
DIMENSION = 384
QUESTION = "What did we decide about the billing service migration in staging?"

# A restarted process: open, warm what is not the index, time the first searches.
RESTART = r"""
import json, sys, time
from memory import HashingEmbedder, Memory

url, users, question = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
DIMENSION = int(sys.argv[4])
embedder = HashingEmbedder(DIMENSION)
embedder.embed([question])
store = Memory.open(url, embedder=embedder)
store.scope(users[0], "assistant").list(limit=1)  # the pool's first connection
timings = []
for user in users:
    start, cpu = time.perf_counter(), time.process_time()
    hits = store.scope(user, "assistant").search(question, limit=10)
    timings.append(((time.perf_counter() - start) * 1000, (time.process_time() - cpu) * 1000))
    assert hits, user
store._retriever._unsaved.clear()  # measure loading only: write nothing on close
store.close()
print(json.dumps(timings))
"""


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def restart(url: str, users: list[str], snapshots: bool) -> list[list[float]]:
    """The first-search times of ``users`` in a fresh process: [wall, CPU] ms each (on a
    busy machine the CPU time is what an idle one would take, less the reads' waits)."""
    environ = dict(os.environ)
    if snapshots:
        environ.pop(CACHE_DIR_ENV, None)
    else:
        environ[CACHE_DIR_ENV] = "off"
    done = subprocess.run(
        [sys.executable, "-c", RESTART, url, json.dumps(users), QUESTION, str(DIMENSION)],
        capture_output=True,
        text=True,
        check=True,
        env=environ,
    )
    timings: list[list[float]] = json.loads(done.stdout.strip().splitlines()[-1])
    return timings


def populate(url: str, users: list[str], size: int, seed: int) -> None:
    corpus = Corpus(seed)
    sentences = corpus.distinct(2000, corpus.sentence)
    embedder = HashingEmbedder(DIMENSION)
    pool = (sentences, embedder.embed(sentences))
    rng = np.random.default_rng(seed)
    with Memory.open(url, embedder=embedder) as memory:
        each = size // len(users)
        started = time.perf_counter()
        for n, user in enumerate(users):
            bulk_load(memory, pool, user, each, n * each, rng)
        finish_load(memory)
        log(f"  {size:,} memories written in {time.perf_counter() - started:.0f} s")


def write_snapshots(url: str, users: list[str]) -> float:
    """Load every user's index once and close (which writes the snapshots); seconds."""
    started = time.perf_counter()
    with Memory.open(url, embedder=HashingEmbedder(DIMENSION)) as memory:
        for user in users:
            memory.scope(user, "assistant").search(QUESTION, limit=10)
    return time.perf_counter() - started


def run_case(size: int, layout: str, args: argparse.Namespace) -> dict[str, Any]:
    users = ["bench-user"] if layout == "one" else [f"bench-{n:04d}" for n in range(args.users)]
    probes = users if layout == "one" else random.Random(args.seed).sample(users, args.probes)
    with scratch_database("sqlite", DEFAULT_POSTGRES_URL, "cold-start") as scratch:
        url = args.database or scratch
        if args.database:
            log(f"{layout} user(s): measuring {url} as it is ({size:,} memories said)")
        else:
            log(f"{layout} user(s), {size:,} memories: writing rows")
            populate(url, users, size, args.seed)
        log("  writing the snapshots")
        saved_s = write_snapshots(url, users)
        directory = snapshot_directory(make_url(url), {})
        assert directory is not None
        snapshot_bytes = sum(path.stat().st_size for path in directory.iterdir())
        found: dict[str, list[float]] = {"database": [], "snapshot": []}
        first: dict[str, list[float]] = {"database": [], "snapshot": []}
        cpu: dict[str, list[float]] = {"database": [], "snapshot": []}
        rng = random.Random(args.seed)
        for order in shuffled_rounds(["database", "snapshot"], args.rounds, rng):
            for kind in order:
                timings = restart(url, probes, kind == "snapshot")
                log(f"  {kind}: first search {timings[0][0]:.0f} ms (CPU {timings[0][1]:.0f} ms)")
                first[kind].append(timings[0][0])
                found[kind].extend(wall for wall, _ in timings)
                cpu[kind].extend(used for _, used in timings)
    result: dict[str, Any] = {
        "benchmark": "cold_start",
        "backend": "sqlite",
        "memories": size,
        "layout": layout,
        "users": len(users),
        "probes": len(probes),
        "rounds": args.rounds,
        "snapshot_mb": round(snapshot_bytes / 2**20, 1),
        "snapshots_written_s": round(saved_s, 1),
        **{
            f"{kind}_{name}": value
            for kind in found
            for name, value in summary(found[kind], ("n", "p50", "p95", "max"), digits=1).items()
        },
        **{
            f"{kind}_very_first_p50_ms": summary(first[kind], ("p50",), digits=1)["p50_ms"]
            for kind in first
        },
        **{
            f"{kind}_cpu_{name}": value
            for kind in cpu
            for name, value in summary(cpu[kind], ("p50", "p95"), digits=1).items()
        },
        "load_average": load_average(),
    }
    return result


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=lambda v: [int(s) for s in v.split(",")], default=[100_000])
    parser.add_argument("--layouts", type=lambda v: v.split(","), default=["one", "many"])
    parser.add_argument("--users", type=int, default=100, help="users in the 'many' layout")
    parser.add_argument(
        "--probes", type=int, default=10, help="first searches per restart ('many')"
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--database",
        help="a SQLite URL this script populated before (one size, one layout): measured "
        "as it is instead of writing the rows again (1M take ~25 min on this machine)",
    )
    parser.add_argument("--seed", type=int, default=17)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    results = [run_case(size, layout, args) for size in args.sizes for layout in args.layouts]
    failed = False
    for result in results:
        print(
            f"\n{result['memories']:,} memories, {result['layout']} user(s) ({result['users']}), "
            f"snapshots {result['snapshot_mb']} MB"
        )
        print(
            table(
                ["first search (ms)", "n", "p50", "p95", "max", "CPU p50", "CPU p95"],
                [
                    [
                        kind,
                        result[f"{kind}_n"],
                        result[f"{kind}_p50_ms"],
                        result[f"{kind}_p95_ms"],
                        result[f"{kind}_max_ms"],
                        result[f"{kind}_cpu_p50_ms"],
                        result[f"{kind}_cpu_p95_ms"],
                    ]
                    for kind in ("database", "snapshot")
                ],
            )
        )
        emit(result)
        if (
            result["memories"] >= 1_000_000
            and result["layout"] == "one"
            and result["snapshot_p95_ms"] > TARGET_FIRST_SEARCH_MS
        ):
            failed = True
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
