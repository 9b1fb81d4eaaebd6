"""What the hash-chained event log costs a write, with and without the changes events carry,
and how fast a replay rebuilds a database from the log.

Write cost. Every write appends its event to ``memory_events`` in the same transaction (on
PostgreSQL after taking the chain's advisory lock and reading its head); with
``$MEMORY_EVENT_KEY`` set (as here) the event also carries the rows the write left, sealed
with AES-GCM under the user's data key (issue 18). Three variants of the same store, in the
same process and run: "changes" (as shipped), "identifiers" (the events as before issue 18:
no data key, so the change is not sealed nor stored) and "no log" (the append replaced by a
no-op). Hub-spoke sync (issue 21) adds two: "no sync hook" (the sync change log's hook
replaced by a no-op: the write path as before sync existed) and "sync on" (the same writes
into a second store where sync was enabled, ``memory.ops.sync.enable``, so each write also
logs its sync change). "changes" runs on a store where sync was never enabled: what every
store that does not sync pays.
Each round runs them in a shuffled order so that machine noise hits them alike, and times
``--adds`` single adds (each its own transaction) and one ``add_many`` of ``--batch``
memories, wall time and this process' CPU time (the server's CPU is in the wall time only).
Target: "changes" at most +30-40 % over "identifiers"; "changes" (sync off) within noise of
"no sync hook".

Replay speed. A source with ``--replay-events`` events (memories added ``--batch`` at a
time) is replayed into a new database ``--replay-rounds`` times (derived tables rebuilt,
no re-embedding); the baseline, in the same run, is walking and verifying the same chain
without applying anything (``memory.store.events.verify_chain``). Target: at least 5,000
events/s.

Run (from the repository root)::

    .venv/bin/python benchmarks/event_log_cost.py
    .venv/bin/python benchmarks/event_log_cost.py --backends sqlite --rounds 20
    .venv/bin/python benchmarks/event_log_cost.py --replay-events 1000000 --replay-rounds 1

Output: tables per backend (median and p95 per variant, costs in %; events/s) and one JSON
line each (``grep '^{'``).
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

import memory.ops
import memory.ops.sync as sync_ops
import memory.store.events as events_module
import memory.store.memories as store_module
from memory import HashingEmbedder, Memory, Scope
from memory.store.changes import EVENT_KEY_ENV
from memory.store.events import verify_chain

VARIANTS = ("changes", "identifiers", "no log", "no sync hook", "sync on")
# The variants' prefixes in the JSON line.
PREFIXES = ("changes", "identifiers", "nolog", "nosynchook", "syncon")
# A key for the benchmark's scratch databases only.
BENCH_EVENT_KEY = "event-log-cost-benchmark-key-0123456789abcdef"


def _no_data_key(connection: Any, user: str, *, create: bool) -> None:
    # No data key: the event is written without its change, as before issue 18 (the row
    # images are still built in memory, a few microseconds, counted as today's cost).
    return None




def run_backend(backend: str, args: argparse.Namespace) -> dict[str, Any]:
    real_append = store_module.append_events
    real_data_key = events_module.data_key
    real_sync_hook = events_module.record_memory_changes
    samples: dict[str, dict[str, list[float]]] = {
        variant: {"add wall": [], "add cpu": [], "add_many wall": [], "add_many cpu": []}
        for variant in VARIANTS
    }
    with (
        scratch_database(backend, args.postgres_url, "eventbench") as url,
        scratch_database(backend, args.postgres_url, "eventbenchsync") as synced_url,
        Memory.open(url, embedder=HashingEmbedder()) as memory,
        Memory.open(synced_url, embedder=HashingEmbedder()) as synced,
    ):
        sync_ops.enable(synced)
        try:
            rounds = shuffled_rounds(VARIANTS, args.warmup + args.rounds, random.Random(0))
            for round_number, order in enumerate(rounds):
                for variant in order:
                    store_module.append_events = (
                        real_append if variant != "no log" else lambda connection, drafts: []
                    )
                    events_module.data_key = (  # type: ignore[assignment]
                        _no_data_key if variant == "identifiers" else real_data_key
                    )
                    events_module.record_memory_changes = (  # type: ignore[assignment]
                        real_sync_hook if variant != "no sync hook" else lambda c, d: None
                    )
                    store = synced if variant == "sync on" else memory
                    scope: Scope = store.scope("bench-user", "planner", uuid.uuid4().hex[:12])
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
            events_module.data_key = real_data_key
            events_module.record_memory_changes = real_sync_hook
    result: dict[str, Any] = {"benchmark": "event_log_cost", "backend": backend}
    rows = []
    for measure in samples[VARIANTS[0]]:
        row = {
            f"{prefix}_{name}": value
            for prefix, variant in zip(PREFIXES, VARIANTS, strict=True)
            for name, value in summary(samples[variant][measure], ("median", "p95")).items()
        }
        for stat in ("median", "p95"):
            changes, ids, none = (
                row[f"{p}_{stat}_ms"] for p in ("changes", "identifiers", "nolog")
            )
            before_sync, sync_on = (row[f"{p}_{stat}_ms"] for p in ("nosynchook", "syncon"))
            # What the richer events add to a write, and what the log costs, then and now;
            # what the sync hook costs a store that does not sync, and one that does.
            row[f"changes_vs_identifiers_{stat}"] = round(changes / ids - 1, 4)
            row[f"log_cost_identifiers_{stat}"] = round(ids / none - 1, 4)
            row[f"log_cost_changes_{stat}"] = round(changes / none - 1, 4)
            row[f"sync_off_vs_no_hook_{stat}"] = round(changes / before_sync - 1, 4)
            row[f"sync_on_vs_no_hook_{stat}"] = round(sync_on / before_sync - 1, 4)
        result[measure] = row
        rows.append([
            measure,
            *(row[f"{p}_{stat}_ms"] for p in PREFIXES for stat in ("median", "p95")),
            *(f"{row[f'{name}_{stat}']:+.1%}" for name in
              ("changes_vs_identifiers", "log_cost_identifiers", "log_cost_changes",
               "sync_off_vs_no_hook", "sync_on_vs_no_hook")
              for stat in ("median", "p95")),
        ])  # fmt: skip
    print(f"\n{backend}: {args.rounds} rounds of {args.adds} adds and one add_many of "
          f"{args.batch}; ms")  # fmt: skip
    header = [
        "measure", "changes med", "p95", "identifiers med", "p95", "no log med", "p95",
        "no sync hook med", "p95", "sync on med", "p95",
        "changes/ids med", "p95", "log cost then med", "p95", "log cost now med", "p95",
        "sync off/no hook med", "p95", "sync on/no hook med", "p95",
    ]
    print(table(header, rows))
    if args.replay_events:
        result["replay"] = run_replay(backend, args)
    return result


def run_replay(backend: str, args: argparse.Namespace) -> dict[str, Any]:
    """Replay speed at ``--replay-events`` events, against verifying the chain alone."""
    with scratch_database(backend, args.postgres_url, "replaybench") as source:
        with Memory.open(source, embedder=None) as store:
            scope = store.scope("bench-user", "planner", "replay")
            for start in range(0, args.replay_events, args.batch):
                count = min(args.batch, args.replay_events - start)
                scope.add_many([f"replayed {start + n} {uuid.uuid4().hex}" for n in range(count)])
        engine = memory.ops.create_engine(source)
        # Seconds per run: their p95 is the slow tail, turned into events/s below.
        verify: list[float] = []
        replay: list[float] = []
        events = 0
        for _ in range(args.replay_rounds):
            with engine.connect() as connection:
                report, walk = timed(verify_chain, connection)
            verify.append(walk.wall / 1000)
            with scratch_database(backend, args.postgres_url, "replaytarget") as target:
                replayed, run = timed(memory.ops.replay, source, target, None, None)
            assert replayed.ok, replayed.as_dict()
            assert report.checked == replayed.events
            events = replayed.events
            replay.append(run.wall / 1000)
        engine.dispose()
    result: dict[str, Any] = {"events": events}
    rows = []
    for name, seconds in (("replay", replay), ("verify_only", verify)):
        times = summary(seconds, ("n", "median", "p95"), unit="s")
        result[name] = {
            **times,
            "median_events_per_s": round(events / times["median_s"]),
            "p95_events_per_s": round(events / times["p95_s"]),
        }
        rows.append([name, times["median_s"], times["p95_s"], result[name]["median_events_per_s"],
                     result[name]["p95_events_per_s"]])  # fmt: skip
    print(f"\n{backend}: replay of {events} events, {args.replay_rounds} rounds (replay: "
          "apply and rebuild the keyword terms; verify_only, the baseline: walk the chain)")
    print(table(["measure", "median s", "p95 s", "events/s at median", "at p95"], rows))
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--rounds", type=int, default=10, help="measured rounds per variant")
    parser.add_argument("--warmup", type=int, default=2, help="rounds not measured")
    parser.add_argument("--adds", type=int, default=50, help="single adds per round")
    parser.add_argument("--batch", type=int, default=1000, help="memories per add_many")
    parser.add_argument("--postgres-url", default=DEFAULT_POSTGRES_URL)
    parser.add_argument("--replay-events", type=int, default=100_000,
                        help="events in the replayed log (0: no replay)")
    parser.add_argument("--replay-rounds", type=int, default=3)
    args = parser.parse_args(argv)
    os.environ.setdefault(EVENT_KEY_ENV, BENCH_EVENT_KEY)
    print(f"event_log_cost: cpus={os.cpu_count()} loadavg={load_average()}")
    for backend in args.backends.split(","):
        emit(run_backend(backend, args), sort_keys=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
