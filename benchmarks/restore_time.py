"""Backup, verify and restore times at 100,000 memories, against the recovery time objective.

For each backend (SQLite: a file in a temporary directory; PostgreSQL: a throwaway database)
the benchmark builds a store through the public API and then times, with ``memory.ops.backup``,
``memory.ops.verify_backup`` and ``memory.ops.restore_backup``:

- backup: a consistent online backup (the SQLite backup API; on PostgreSQL ``pg_dump``
  and, separately, the logical JSON Lines export);
- verify: the check an operator runs before relying on a backup;
- restore: into a new, empty database, which includes everything ``memctl restore`` does:
  verifying the backup, restoring it, and checking every restored table's row count and
  checksum and the revision against the manifest.

The restore time is the recovery time: it is compared with the rollout checklist's recovery
time objective of 30 minutes (PASS / FAIL).

The data: 100,000 distinct memories written with ``Scope.add_many`` in batches of 1,000,
spread over 25 users x 4 agents and one session per batch; sentence-like contents of
60-200 characters built from word lists with a seeded RNG (the same data on every run and
backend), all three tiers (working memories with a 24 h TTL), 1-3 metadata keys per
memory, plus preferences, code patterns, session checkpoints and an entity graph per user.
Embeddings are stored as in production: 384 float32 values (1,536 bytes) per memory, as
dense as a real model's (seeded noise, which compresses no better than MiniLM's vectors;
``--embedder minilm`` uses the real model, much slower to build, same sizes; ``hashing``
gives sparse vectors that compress unrealistically well).

Run (from the repository root)::

    .venv/bin/python benchmarks/restore_time.py
    .venv/bin/python benchmarks/restore_time.py --backends sqlite --memories 10000

Output: a table, then one JSON line per backend and method (``grep '^{'``). The exit status
is 1 when a restore misses the objective.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import random
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
from _scratch import DEFAULT_POSTGRES_URL, scratch_database
from measure import emit, load_average, table, timed

import memory
import memory.ops
from memory import Memory

RTO_SECONDS = 30 * 60
BATCH = 1000
USERS = 25
AGENTS = ("planner", "coder", "reviewer", "researcher")
EMBEDDING_DIMENSION = 384

PEOPLE = ("Ada", "Grace", "Linus", "Priya", "Tomás", "Chen", "Fatima", "Kwame", "Yuki", "Sofia")
THINGS = (
    "billing export",
    "OAuth token refresh",
    "nightly ETL job",
    "search index",
    "rate limiter",
    "CSV importer",
    "feature flag rollout",
    "latency dashboard",
    "payment webhook handler",
    "audit log table",
    "retry policy",
    "session cache",
    "GraphQL schema",
    "CI pipeline",
    "database migration",
    "health check endpoint",
)
VERBS = (
    ("refactor", "refactored"),
    ("migrate", "migrated"),
    ("fix", "fixed"),
    ("review", "reviewed"),
    ("document", "documented"),
    ("benchmark", "benchmarked"),
    ("deploy", "deployed"),
    ("rewrite", "rewrote"),
    ("test", "tested"),
    ("simplify", "simplified"),
    ("roll back", "rolled back"),
    ("instrument", "instrumented"),
)
DEADLINES = ("Friday", "the end of the sprint", "tomorrow morning", "the customer demo")
REACTIONS = (
    "approved the plan",
    "asked for smaller pull requests",
    "wanted more tests first",
    "asked to keep the old endpoint for a month",
    "signed off on the schema change",
    "requested a rollback plan",
    "liked the shorter summary format",
)
FACTS = (
    "runs on PostgreSQL 15 behind PgBouncer",
    "is deployed to eu-west-1 every Tuesday",
    "keeps 30 days of audit logs",
    "has a p95 latency budget of 200 ms",
    "is owned by the payments team",
    "shares its Redis cluster with the session service",
)
TEMPLATES = {
    "working": (
        "{person} asked the {agent} to {verb} the {thing} before {deadline} ({ticket})",
        "Currently working on the {thing}; {n} tests still failing on branch fix/{ticket}",
        "Next step: {verb} the {thing}, then {verb2} the {thing2} for {ticket}",
    ),
    "episodic": (
        "On day {n} the {agent} {verbed} the {thing} and {person} {reaction} ({ticket})",
        "{person} reported that the {thing} broke after the deploy; the fix landed in {ticket}",
        "Session recap: we {verbed} the {thing2} and left {ticket} open for {person}",
    ),
    "semantic": (
        "The {thing} {fact}; see {ticket} for the history",
        "{person} prefers that the {agent} {verb}s the {thing} before touching the {thing2}",
        "Decision {ticket}: always {verb} the {thing} with the {thing2} in the same change",
    ),
}


class DenseEmbedder:
    """Unit vectors as dense as a real model's (float32 noise seeded by the text), so backup
    sizes and compression are realistic without the model's CPU cost."""

    model_name = f"benchmark-dense-{EMBEDDING_DIMENSION}"
    dimension = EMBEDDING_DIMENSION

    def embed(self, texts: Any) -> Any:
        vectors = np.empty((len(texts), self.dimension), dtype=np.float32)
        for row, text in enumerate(texts):
            seed = int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")
            vectors[row] = np.random.default_rng(seed).standard_normal(self.dimension)
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def _sentence(rng: random.Random, tier: str, agent: str, number: int) -> str:
    verb, verbed = rng.choice(VERBS)
    text = rng.choice(TEMPLATES[tier]).format(
        person=rng.choice(PEOPLE),
        agent=agent,
        verb=verb,
        verbed=verbed,
        verb2=rng.choice(VERBS)[0],
        thing=rng.choice(THINGS),
        thing2=rng.choice(THINGS),
        deadline=rng.choice(DEADLINES),
        reaction=rng.choice(REACTIONS),
        fact=rng.choice(FACTS),
        n=rng.randint(2, 40),
        ticket=f"MEM-{number:06d}",
    )
    while len(text) < 60:
        text += f"; {rng.choice(PEOPLE)} {rng.choice(REACTIONS)}"
    # Unique within its scope (the store de-duplicates), and at most 200 characters.
    return f"{text[:186]} [#{number:06d}]"


def _batch(rng: random.Random, agent: str, start: int) -> list[dict[str, Any]]:
    items = []
    for number in range(start, start + BATCH):
        tier = rng.choices(("working", "episodic", "semantic"), (0.40, 0.35, 0.25))[0]
        metadata: dict[str, Any] = {"source": rng.choice(("chat", "tool", "summary"))}
        if rng.random() < 0.6:
            metadata["topic"] = rng.choice(("performance", "security", "testing", "deploy"))
        if rng.random() < 0.3:
            metadata["priority"] = rng.choice(("low", "normal", "high"))
        items.append(
            {
                "content": _sentence(rng, tier, agent, number),
                "tier": tier,
                "importance": round(rng.random(), 3),
                "metadata": metadata,
                "ttl": timedelta(hours=24) if tier == "working" else None,
            }
        )
    return items


def build(url: str, memories: int, seed: int, embedder: Any) -> int:
    """Fill the store at ``url``; returns the number of memories stored."""
    rng = random.Random(seed)
    stored = 0
    with Memory.open(url, embedder=embedder) as store:
        for batch in range(memories // BATCH):
            user, agent = f"user-{batch % USERS:02d}", AGENTS[batch % len(AGENTS)]
            scope = store.scope(user, agent, f"session-{batch:04d}")
            stored += len(scope.add_many(_batch(rng, agent, batch * BATCH)))
            scope.save_state({"step": batch, "open_files": [f"src/module_{batch}.py"]})
        for index in range(USERS):
            user = f"user-{index:02d}"
            scope = store.scope(user, AGENTS[index % len(AGENTS)])
            for key in ("tone", "language", "timezone", "review_style", "units"):
                scope.set_preference(key, {"value": rng.choice(FACTS), "set_by": "benchmark"})
            for name in ("retry loop", "context manager", "upsert", "pagination", "fixture"):
                scope.record_pattern("python", name, f"# {name}\npass\n", tags=["benchmark"])
            graph = store.graph(user)
            graph.create_entities(
                {
                    "name": f"{thing} ({user})",
                    "entityType": "component",
                    "observations": [f"{thing} {fact}" for fact in FACTS[:3]],
                }
                for thing in THINGS
            )
            graph.create_relations(
                {
                    "from": f"{THINGS[i]} ({user})",
                    "to": f"{THINGS[i + 1]} ({user})",
                    "relationType": "depends on",
                }
                for i in range(len(THINGS) - 1)
            )
    return stored


# -- databases -------------------------------------------------------------------------------------


@contextmanager
def databases(backend: str, postgres_url: str) -> Iterator[Callable[[], str]]:
    """A factory of new, empty databases of ``backend``, all removed afterwards."""
    with ExitStack() as stack:
        yield lambda: stack.enter_context(scratch_database(backend, postgres_url, "bench_restore"))


def measure(
    source: str, method: str, new_database: Callable[[], str], scratch: Path
) -> dict[str, Any]:
    directory = scratch / f"backup-{method}"
    info, backup = timed(lambda: memory.ops.backup(source, directory, method=method))
    _, verify = timed(memory.ops.verify_backup, directory)
    target = new_database()
    result, restore = timed(memory.ops.restore_backup, target, directory)
    restore_seconds = restore.wall / 1000
    assert result.tables == info.tables  # restore_backup checked it; say it again here
    shutil.rmtree(directory)
    return {
        "method": info.method,
        "revision": info.revision,
        "memories": info.tables["memories"].rows,
        "rows": info.rows,
        "tables": len(info.tables),
        "backup_mb": round(info.size_bytes / 1e6, 1),
        "backup_s": round(backup.wall / 1000, 2),
        "verify_s": round(verify.wall / 1000, 2),
        "restore_s": round(restore_seconds, 2),
        "rto_s": RTO_SECONDS,
        "rto": "PASS" if restore_seconds <= RTO_SECONDS else "FAIL",
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--backends", nargs="+", default=["sqlite", "postgresql"], choices=["sqlite", "postgresql"]
    )
    parser.add_argument("--memories", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=20240601)
    parser.add_argument(
        "--embedder", choices=["dense", "hashing", "minilm", "none"], default="dense"
    )
    parser.add_argument("--postgres-url", default=DEFAULT_POSTGRES_URL)
    args = parser.parse_args()
    if args.memories % BATCH:
        parser.error(f"--memories must be a multiple of {BATCH}")
    embedder = {
        "dense": DenseEmbedder,
        "hashing": lambda: memory.HashingEmbedder(EMBEDDING_DIMENSION),
        "minilm": lambda: "default",
        "none": lambda: None,
    }[args.embedder]()

    print(
        f"# restore_time: {args.memories:,} memories, seed {args.seed}, embedder "
        f"{args.embedder}; Python {platform.python_version()}, {os.cpu_count()} CPUs, "
        f"load average {load_average()[0]:.1f}",
        flush=True,
    )
    rows: list[dict[str, Any]] = []
    for backend in args.backends:
        methods = ["auto"] if backend == "sqlite" else ["pg_dump", "logical"]
        with databases(backend, args.postgres_url) as new_database:
            source = new_database()
            stored, built = timed(build, source, args.memories, args.seed, embedder)
            build_seconds = built.wall / 1000
            print(f"# {backend}: built {stored:,} memories in {build_seconds:.0f} s", flush=True)
            scratch = Path(tempfile.mkdtemp(prefix="restore-time-backups-"))
            try:
                for method in methods:
                    row = {"backend": backend, **measure(source, method, new_database, scratch)}
                    row["build_s"] = round(build_seconds, 1)
                    rows.append(row)
                    print(f"# {backend} {row['method']}: done", flush=True)
            finally:
                shutil.rmtree(scratch, ignore_errors=True)

    header = (
        "backend",
        "method",
        "memories",
        "rows",
        "backup MB",
        "backup s",
        "verify s",
        "restore s",
        "RTO 30 min",
    )
    keys = (
        "backend",
        "method",
        "memories",
        "rows",
        "backup_mb",
        "backup_s",
        "verify_s",
        "restore_s",
        "rto",
    )
    print("\n" + table(header, [[row[key] for key in keys] for row in rows], labels=2))
    print()
    for row in rows:
        emit(row, sort_keys=True)
    return 0 if all(row["rto"] == "PASS" for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
