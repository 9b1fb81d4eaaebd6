"""Load driver: many concurrent agent sessions on one store, with a realistic mix of calls.

For each backend (SQLite file, PostgreSQL) and each pre-loaded size (10,000 and 100,000
memories by default), the driver loads the store with sentence-like synthetic memories
(seeded), ``add_many`` in batches of 1,000, one batch per (user, agent, session) scope, and
then measures in one of two ways.

Open loop (``--loop open``, the default): degradation, the checklist's "< 5 % under 100
concurrent sessions". Every session's calls arrive as a Poisson stream at a fixed rate
whatever the latency, as agents' calls do (an agent does not call faster because the store
is fast); a call starts at its scheduled time, or at once if the session's previous call
ran past it, and its latency counts from the scheduled time, so queueing shows in the
figures instead of slowing the load down (no coordinated omission).

1. ``--sessions`` sessions (100) at ``--session-rate`` calls/s each (0.1: an agent calls the
   memory layer about twice per ~20 s turn; see ``SESSION_RATE``), 10 calls/s in all,
   against ONE session at ``--baseline-rate`` (5/s: faster than one agent, for enough
   calls in a short run, yet one call at a time on an idle store), over ``--rounds``
   rounds of ``--duration`` seconds each, the two in a new shuffled order every round so
   that the machine's noise hits both alike: p50 / p95 / p99 per operation and of all calls,
   and the change of p95;
2. the highest total rate at which the p95 over all calls is shown to degrade less than
   ``--limit`` (5 %) without errors: the upper end of the degradation's 95 % bootstrap
   confidence interval (``measure.degradation_interval``) is below the limit. The rates
   double from the realistic one up to ``--top-rate`` (10, 20, 40, ... 320 calls/s),
   searched by bisection (``measure.highest_passing``), each measured as in 1. The
   single session's p95 at every rate tried (the same calls each time) spreads as the
   machine's noise does: printed as the run's noise floor.

Closed loop (``--loop closed``): saturation. The mix with ONE session for ``--duration``
seconds, then with ``--sessions`` sessions, as threads sharing one ``Memory`` in this
process (``threads``: how an agent host embeds the library) and/or as ``--processes``
processes x sessions/processes threads, each process with its own ``Memory``
(``processes``: several agent hosts on one store). The next call of a session starts when
its previous one returns: the load is the most the machine can serve, and latency at N
sessions is mostly queueing (Little's law: latency ~ sessions / throughput).

Every exception a call raises is counted by operation and type and printed; a healthy run
reports ``errors: 0`` (exit status 1 otherwise). Latencies are those of the calls that
returned; failed calls are only counted. Results: tables per (backend, size), then one JSON
line per (backend, size, rate) or (backend, size, mode) (``grep '^{'``; ``--json PATH`` also
writes them). A run on a machine that other jobs share measures their noise too: its
degradations are upper bounds (the load average is printed per rate).

The mix is a table (``MIX``): operation name, default weight, a function of the session, and
the ``Scope`` method it needs (rows whose method does not exist are skipped). ``search`` and
``inject`` are in the table with weight 0: enable them with ``--mix search=10,inject=5``
(with ``--embedder none`` they answer from keywords alone).

The default closed-loop run (2 backends x 2 sizes x 3 runs of 15 s, plus loading 110,000
memories per backend) takes 6-10 minutes on 2 cores, depending on what else the machine
runs (18 minutes at load average 10-14). An open-loop rate takes ``2 x --rounds x
--duration`` seconds (90 s by default) and a search 3-4 rates.

Run (from the repository root)::

    .venv/bin/python benchmarks/load.py --sizes 10000       # open loop, both backends
    .venv/bin/python benchmarks/load.py --backends sqlite --sizes 10000 --duration 20
    .venv/bin/python benchmarks/load.py --loop closed       # saturation, both backends
    .venv/bin/python benchmarks/load.py --loop closed --backends sqlite --sizes 10000 \
        --mode threads --duration 10 --mix get=50,list=50
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import os
import platform
import random
import sqlite3
import sys
import threading
import time
import traceback
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

# Runnable as a plain script from a checkout: make the repository root importable.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import sqlalchemy as sa  # noqa: E402
from _scratch import DEFAULT_POSTGRES_URL, scratch_database  # noqa: E402
from measure import (  # noqa: E402
    RunQueueWait,
    arrivals,
    degradation_interval,
    doublings,
    emit,
    highest_passing,
    load_average,
    machine_cpu_seconds,
    shuffled_rounds,
    summary,
    table,
)

from memory import Memory, NotFoundError, Scope  # noqa: E402

PRELOAD_BATCH = 1000
AGENTS = ("planner", "coder", "reviewer", "researcher")
TIERS = ("working", "episodic", "semantic")
TIER_WEIGHTS = (0.5, 0.3, 0.2)
TOPICS = (
    "billing", "auth", "search", "onboarding", "infra", "payments", "mobile", "data",
    "security", "release", "support", "pricing",
)  # fmt: skip
PROJECTS = ("atlas", "borealis", "cobalt", "dynamo", "equinox", "fathom")
PREFERENCE_KEYS = (
    "answer_style", "code_style", "language", "timezone", "review_depth", "test_framework",
    "summary_length", "units",
)  # fmt: skip
WORKING_TTL = timedelta(hours=24)
# Calls per second of one agent session. A session calls the memory layer about twice per
# turn (context in when a turn starts, an observation or a checkpoint out when it ends), and
# a turn takes some 20 s: a model completion of several seconds, tool runs, a person reading.
SESSION_RATE = 0.1
# The single session the open loop compares against runs faster than one agent would, so
# that a short run holds enough calls for a p95; its calls still almost never overlap (one
# call at a time, tens of ms each), so they meet an idle store, as one session's would.
BASELINE_RATE = 5.0
MAX_REMEMBERED = 500

# -- sentence-like synthetic content -------------------------------------------------------------

PEOPLE = (
    "Ada", "Grace", "Linus", "Margaret", "Priya", "Tomas", "Chen", "Fatima", "Kwame", "Ingrid",
    "Diego", "Yuki", "Olu", "Sofia", "Rahul", "Hannah",
)  # fmt: skip
SYSTEMS = (
    "billing export", "invoice renderer", "token refresh", "nightly ETL job", "search index",
    "rate limiter", "onboarding emails", "CSV importer", "flag rollout", "latency dashboard",
    "payment webhook", "settings page", "audit log", "Kafka consumer", "retry policy",
    "session cache", "GraphQL schema", "Terraform module", "CI pipeline", "pricing engine",
)  # fmt: skip
ACTIONS = (
    "refactored", "migrated", "fixed", "reviewed", "documented", "benchmarked", "split",
    "deployed", "rewrote", "tested", "profiled", "simplified", "hardened", "rolled back",
)  # fmt: skip
REASONS = (
    "after the p95 latency doubled", "because the customer demo is on Friday",
    "to unblock the schema migration", "since the on-call pager fired twice",
    "before the code freeze", "to cut the cloud bill", "after a GDPR review",
    "because the tests were flaky", "to support the new region", "after the last incident",
)  # fmt: skip
FOLLOW_UPS = (
    "wants smaller pull requests", "asked for a rollback plan", "prefers short summaries",
    "will review it tomorrow", "asked to keep the old endpoint for a month",
    "wants more test coverage first", "signed off on the change", "flagged a security concern",
)  # fmt: skip


def sentence(rng: random.Random, number: int) -> str:
    """One memory's text, 80-160 characters; ``number`` makes it unique."""
    person, other = rng.sample(PEOPLE, 2)
    return (
        f"{person} {rng.choice(ACTIONS)} the {rng.choice(SYSTEMS)} {rng.choice(REASONS)}; "
        f"{other} {rng.choice(FOLLOW_UPS)} (ticket {rng.choice(PROJECTS).upper()}-{number})"
    )


def query_text(rng: random.Random) -> str:
    return f"{rng.choice(SYSTEMS)} {rng.choice(REASONS).split()[-1]}"


# -- the data set ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Chunk:
    """One pre-load batch: 1,000 memories of one (user, agent, session) scope."""

    user: str
    agent: str
    session: str


def chunks(size: int) -> list[Chunk]:
    """Users get the four agents in turn; every 1,000 memories is a past session."""
    return [
        Chunk(f"user-{number // len(AGENTS):03d}", AGENTS[number % len(AGENTS)], f"past-{number}")
        for number in range(max(1, size // PRELOAD_BATCH))
    ]


def memory_item(rng: random.Random, number: int) -> dict[str, Any]:
    tier = rng.choices(TIERS, TIER_WEIGHTS)[0]
    item: dict[str, Any] = {
        "content": sentence(rng, number),
        "tier": tier,
        "importance": round(rng.random(), 2),
    }
    if tier == "working":
        item["ttl"] = WORKING_TTL
    if rng.random() < 0.8:
        item["metadata"] = {"topic": rng.choice(TOPICS), "project": rng.choice(PROJECTS)}
    return item


def preload(memory: Memory, size: int, seed: int) -> float:
    """Load ``size`` memories (and analyze them on PostgreSQL); returns the load rate in
    memories per second."""
    rng = random.Random(seed)
    started = time.perf_counter()
    number = 0
    for chunk in chunks(size):
        scope = memory.scope(chunk.user, chunk.agent, chunk.session)
        items = []
        for _ in range(PRELOAD_BATCH):
            items.append(memory_item(rng, number))
            number += 1
        scope.add_many(items)
    rate = size / (time.perf_counter() - started)
    if memory.backend == "postgresql":
        # This server runs with autovacuum off: without statistics the planner would pick
        # plans for empty tables. In production autovacuum analyzes after a bulk load.
        with memory.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as db:
            db.exec_driver_sql("VACUUM (ANALYZE)")
    return rate


def catalog(memory: Memory) -> dict[tuple[str, str], list[int]]:
    """The ids of the memories each (user, agent) holds: what ``get`` asks for."""
    found: dict[tuple[str, str], list[int]] = defaultdict(list)
    with memory.engine.connect() as connection:
        for memory_id, user, agent in connection.execute(
            sa.text("SELECT id, user_id, agent_id FROM memories")
        ):
            found[(user, agent)].append(memory_id)
    return dict(found)


# -- sessions and the mix ----------------------------------------------------------------------


class Session:
    """One agent session: a scope on a pre-loaded (user, agent), with its own session id."""

    def __init__(
        self,
        memory: Memory,
        number: int,
        size: int,
        ids: dict[tuple[str, str], list[int]],
        run: str,
        seed: int,
    ) -> None:
        all_chunks = chunks(size)
        chunk = all_chunks[number % len(all_chunks)]
        self.memory = memory
        self.user, self.agent, self.past_session = chunk.user, chunk.agent, chunk.session
        self.session = f"{run}-{number}"
        self.scope = memory.scope(self.user, self.agent, self.session)
        self.known = ids[(self.user, self.agent)]
        self.mine: list[int] = []
        self.rng = random.Random(seed)
        self.number = number
        self.writes = 0
        self.step = 0
        self.since = datetime.now(UTC) - timedelta(days=1)
        self.compaction = False  # set when the mix compacts memories away (inject)

    def remember(self, ids: Sequence[int]) -> None:
        """Keep up to ``MAX_REMEMBERED`` ids of this session's own memories for ``get``
        (bounded, so that a long soak does not grow the driver's own memory)."""
        for memory_id in ids:
            if len(self.mine) < MAX_REMEMBERED:
                self.mine.append(memory_id)
            else:
                self.mine[self.rng.randrange(MAX_REMEMBERED)] = memory_id

    def next_number(self) -> int:
        # Unique across sessions and runs: content must not collide with what exists.
        self.writes += 1
        return (self.number + 1) * 10_000_000 + self.writes


def op_get(session: Session) -> None:
    pool = session.mine if session.mine and session.rng.random() < 0.3 else session.known
    memory_id = session.rng.choice(pool)
    try:
        session.scope.get(memory_id)
    except NotFoundError:
        if not session.compaction:  # nothing in the mix deletes memories: a real error
            raise
        # Injection compacts old working memories into an episodic summary: this one is
        # gone by design. (The lists are shared by sessions; another may have removed it.)
        with contextlib.suppress(ValueError):
            pool.remove(memory_id)


def op_list(session: Session) -> None:
    rng = session.rng
    variant = rng.randrange(4)
    if variant == 0:
        session.scope.list(tier=rng.choice(TIERS), limit=20)
    elif variant == 1:
        session.scope.list(metadata={"topic": rng.choice(TOPICS)}, limit=20)
    elif variant == 2:
        session.scope.list(session=session.past_session, tier="episodic", limit=20)
    else:
        session.scope.list(session=session.session, created_after=session.since, limit=20)


def op_add(session: Session) -> None:
    record = session.scope.add(**memory_item(session.rng, session.next_number()))
    session.remember([record.id])


def op_add_many(session: Session) -> None:
    items = [memory_item(session.rng, session.next_number()) for _ in range(10)]
    session.remember([record.id for record in session.scope.add_many(items)])


def op_set_preference(session: Session) -> None:
    rng = session.rng
    session.scope.set_preference(
        rng.choice(PREFERENCE_KEYS),
        {"value": rng.choice(FOLLOW_UPS), "set_by_session": session.session},
        confidence=round(rng.uniform(0.5, 1.0), 2),
    )


def op_save_state(session: Session) -> None:
    session.step += 1
    session.scope.save_state(
        {
            "step": session.step,
            "goal": f"finish the {session.rng.choice(SYSTEMS)} work",
            "plan": ["gather context", "edit", "run tests", "summarise"],
            "cursor": {"file": "src/app.py", "line": session.rng.randrange(1, 2000)},
            "known_ids": session.mine[:10],
        }
    )


def op_load_state(session: Session) -> None:
    # A resume: a fresh handle on the same session (an agent restarted) reads its checkpoint.
    session.memory.scope(session.user, session.agent, session.session).load_state()


def op_search(session: Session) -> None:
    session.scope.search(query_text(session.rng), limit=10)


def op_inject(session: Session) -> None:
    session.scope.inject(query_text(session.rng), budget_tokens=512)


@dataclass(frozen=True)
class Operation:
    name: str
    weight: float
    run: Callable[[Session], None]
    needs: str  # the Scope method it calls: rows whose method does not exist are skipped


MIX: tuple[Operation, ...] = (
    Operation("get", 25, op_get, "get"),
    Operation("list", 25, op_list, "list"),
    Operation("add", 20, op_add, "add"),
    Operation("add_many", 5, op_add_many, "add_many"),
    Operation("set_preference", 5, op_set_preference, "set_preference"),
    Operation("save_state", 12, op_save_state, "save_state"),
    Operation("load_state", 8, op_load_state, "load_state"),
    # Retrieval came after the mix was fixed: present, off by default (--mix search=10).
    Operation("search", 0, op_search, "search"),
    Operation("inject", 0, op_inject, "inject"),
)


def parse_mix(text: str) -> dict[str, float]:
    weights = {operation.name: operation.weight for operation in MIX}
    for part in filter(None, text.split(",")):
        name, _, value = part.partition("=")
        if name not in weights:
            raise SystemExit(f"--mix: unknown operation {name!r}; known: {sorted(weights)}")
        weights[name] = float(value)
    return weights


def active_mix(weights: dict[str, float]) -> list[Operation]:
    return [
        Operation(operation.name, weights[operation.name], operation.run, operation.needs)
        for operation in MIX
        if weights[operation.name] > 0 and hasattr(Scope, operation.needs)
    ]


# -- running sessions --------------------------------------------------------------------------


@dataclass
class Outcome:
    """Latencies (seconds) per operation, errors by (operation, type), CPU used."""

    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    errors: Counter[tuple[str, str]] = field(default_factory=Counter)
    examples: dict[str, str] = field(default_factory=dict)  # error type -> one traceback
    wall: float = 0.0
    cpu: float = 0.0  # CPU seconds of the processes that ran the sessions
    cpu_wait: float = 0.0  # seconds the session threads were runnable but had no CPU

    def merge(self, other: Outcome) -> None:
        for name, values in other.latencies.items():
            self.latencies[name].extend(values)
        self.errors.update(other.errors)
        for kind, text in other.examples.items():
            self.examples.setdefault(kind, text)
        self.wall = max(self.wall, other.wall)
        self.cpu += other.cpu
        self.cpu_wait += other.cpu_wait


def run_sessions(
    memory: Memory,
    numbers: Sequence[int],
    size: int,
    ids: dict[tuple[str, str], list[int]],
    mix: list[Operation],
    duration: float,
    rate: float | None,
    run: str,
    seed: int,
    start: Callable[[], None] = lambda: None,
    live: list[Outcome] | None = None,
    compaction: bool = False,
) -> Outcome:
    """Run one thread per session number until ``duration`` has passed; ``start`` is called
    once every session is ready, just before the clock starts. ``live``, if given, receives
    the sessions' own outcomes while they run (a soak drains their latencies as it goes).
``compaction``: memories may disappear under the sessions (a cleanup runs meanwhile), so
``get`` finding one gone is not an error; the mix's ``inject`` implies it.

    ``rate`` None: closed loop, each session's next call starts when its previous one
    returns. A ``rate`` (calls per second per session): open loop, each session's calls
    are scheduled as a Poisson stream at that rate (``measure.arrivals``); a call starts at
    its time, or at once when the session's previous call ran past it, and its latency
    counts from its scheduled time."""
    sessions = [Session(memory, n, size, ids, run, seed * 1_000_003 + n) for n in numbers]
    for session in sessions:
        session.compaction = compaction or any(operation.name == "inject" for operation in mix)
    outcomes = [Outcome() for _ in sessions]
    if live is not None:
        live.extend(outcomes)
    names = [operation.name for operation in mix]
    weights = [operation.weight for operation in mix]
    runners = {operation.name: operation.run for operation in mix}
    gate = threading.Barrier(len(sessions) + 1)
    began, deadline = [0.0], [0.0]  # set once every session is ready

    def body(session: Session, outcome: Outcome) -> None:
        gate.wait()
        run_queue = RunQueueWait(("thread-self",))  # this session's thread
        waited = run_queue()
        rng = session.rng
        schedule = arrivals(random.Random(rng.random()), rate) if rate else None
        while True:
            if schedule is None:
                intended = time.perf_counter()
            else:
                intended = began[0] + next(schedule)
                time.sleep(max(0.0, min(intended, deadline[0]) - time.perf_counter()))
            if time.perf_counter() >= deadline[0]:  # a backlog left at the end is not run
                break
            name = rng.choices(names, weights)[0]
            try:
                runners[name](session)
            except Exception as error:  # every error is a finding: count it, keep going
                kind = f"{type(error).__module__}.{type(error).__qualname__}"
                outcome.errors[(name, kind)] += 1
                outcome.examples.setdefault(kind, traceback.format_exc())
            else:
                outcome.latencies[name].append(time.perf_counter() - intended)
        outcome.cpu_wait = run_queue() - waited
        run_queue.close()

    threads = [
        threading.Thread(target=body, args=(session, outcome), daemon=True)
        for session, outcome in zip(sessions, outcomes, strict=True)
    ]
    for thread in threads:
        thread.start()
    start()
    cpu_before = time.process_time()
    began[0] = time.perf_counter()
    deadline[0] = began[0] + duration
    gate.wait()
    for thread in threads:
        thread.join()
    total = Outcome(cpu=time.process_time() - cpu_before)
    for outcome in outcomes:
        total.merge(outcome)
    total.wall = time.perf_counter() - began[0]
    return total


def process_main(
    url: str,
    numbers: list[int],
    size: int,
    ids: dict[tuple[str, str], list[int]],
    weights: dict[str, float],
    duration: float,
    rate: float | None,
    run: str,
    seed: int,
    embedder: str,
    barrier: Any,
    results: Any,
) -> None:
    """One agent host: its own ``Memory``, ``len(numbers)`` session threads."""
    try:
        with open_memory(url, embedder) as memory:
            outcome = run_sessions(
                memory,
                numbers,
                size,
                ids,
                active_mix(weights),
                duration,
                rate,
                run,
                seed,
                start=lambda: barrier.wait(),
            )
        results.put(("ok", outcome))
    except BaseException:
        results.put(("crashed", traceback.format_exc()))
        raise


def run_processes(
    url: str,
    sessions: int,
    processes: int,
    size: int,
    ids: dict[tuple[str, str], list[int]],
    weights: dict[str, float],
    duration: float,
    rate: float | None,
    run: str,
    seed: int,
    embedder: str,
) -> Outcome:
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(processes + 1)
    results = context.Queue()
    groups = [list(range(sessions))[index::processes] for index in range(processes)]
    workers = [
        context.Process(
            target=process_main,
            args=(url, group, size, ids, weights, duration, rate, run, seed, embedder)
            + (barrier, results),
            daemon=True,
        )
        for group in groups
    ]
    for worker in workers:
        worker.start()
    total = Outcome()
    try:
        barrier.wait(timeout=120)  # every process imported, opened and built its sessions
        for _ in workers:
            status, payload = results.get(timeout=duration + 120)
            if status != "ok":
                raise RuntimeError(f"a load process crashed:\n{payload}")
            total.merge(payload)
    finally:
        for worker in workers:
            worker.join(timeout=30)
            if worker.is_alive():
                worker.kill()
                worker.join()
    return total


# -- reporting ------------------------------------------------------------------------------------


def summarise(outcome: Outcome, duration: float) -> dict[str, Any]:
    ops = {}
    for name, values in sorted(outcome.latencies.items()):
        ops[name] = {
            "count": len(values),
            "ops_per_s": round(len(values) / duration, 1),
            **summary([1000 * value for value in values], ("p50", "p95", "p99")),
        }
    calls = sum(len(values) for values in outcome.latencies.values())
    return {
        "calls": calls,
        "ops_per_s": round(calls / duration, 1),
        "errors": sum(outcome.errors.values()),
        "errors_by_operation_and_type": {
            f"{name}: {kind}": count for (name, kind), count in sorted(outcome.errors.items())
        },
        "benchmark_cpu_cores": round(outcome.cpu / duration, 2),
        # Session threads runnable but without a CPU, on average: > 0 means the CPUs (not
        # the GIL, whose waiters sleep) were the limit.
        "threads_waiting_for_cpu": round(outcome.cpu_wait / duration, 2),
        "ops": ops,
    }


def change(value: float, base: float) -> str:
    if not base:
        return "n/a"
    return f"{100 * (value / base - 1):+.0f}%"


def print_table(
    backend: str, size: int, single: dict[str, Any], runs: dict[str, dict[str, Any]]
) -> None:
    print(f"\n== {backend}, {size:,} memories: ops/s and latency (ms); change vs 1 session ==")
    rows = []
    for name in sorted(single["ops"]):
        base = single["ops"][name]
        figures = ("ops_per_s", "p50_ms", "p95_ms", "p99_ms")
        rows.append([name, "1 session", *(base[key] for key in figures), "", ""])
        for label, result in runs.items():
            if (row := result["ops"].get(name)) is not None:
                changes = (change(row[key], base[key]) for key in ("p50_ms", "p95_ms"))
                rows.append(["", label, *(row[key] for key in figures), *changes])
    header = ["operation", "run", "ops/s", "p50", "p95", "p99", "p50 chg", "p95 chg"]
    print(table(header, rows, labels=2))
    print(
        f"{'ALL':<15} {'1 session':<22} {single['ops_per_s']:>8.1f}"
        f"   (benchmark CPU {single['benchmark_cpu_cores']:.2f} cores, "
        f"{single['threads_waiting_for_cpu']:.2f} threads waiting for a CPU, machine busy "
        f"{single['machine_busy_cores']:.2f} of {os.cpu_count()}), errors: {single['errors']}"
    )
    for label, result in runs.items():
        print(
            f"{'':<15} {label:<22} {result['ops_per_s']:>8.1f} "
            f"({change(result['ops_per_s'], single['ops_per_s'])} throughput; benchmark CPU "
            f"{result['benchmark_cpu_cores']:.2f} cores, "
            f"{result['threads_waiting_for_cpu']:.2f} threads waiting for a CPU, machine busy "
            f"{result['machine_busy_cores']:.2f} of {os.cpu_count()}), "
            f"errors: {result['errors']}"
        )
        for key, count in result["errors_by_operation_and_type"].items():
            print(f"{'':<15}   ERROR {count} x {key}")


# -- databases ----------------------------------------------------------------------------------


def open_memory(url: str, embedder: str) -> Memory:
    return Memory.open(url) if embedder == "default" else Memory.open(url, embedder=None)


def measure(label: str, work: Callable[[], Outcome]) -> tuple[dict[str, Any], Outcome]:
    """Run ``work`` and summarise it, with the machine's CPU use meanwhile."""
    busy, began = machine_cpu_seconds()[0], time.perf_counter()
    outcome = work()
    busy_cores = (machine_cpu_seconds()[0] - busy) / (time.perf_counter() - began)
    result = summarise(outcome, outcome.wall)
    result["machine_busy_cores"] = round(busy_cores, 2)
    result["label"] = label
    return result, outcome


def run_closed(
    args: argparse.Namespace, backend: str, size: int
) -> tuple[list[dict[str, Any]], int]:
    """Closed loop: pre-load one database, run the single session and every mode on it;
    returns the results for the JSON lines and the number of errors."""
    weights = parse_mix(args.mix)
    mix = active_mix(weights)
    modes = ["threads", "processes"] if args.mode == "both" else [args.mode]
    lines = []
    outcomes: dict[str, Outcome] = {}
    runs: dict[str, dict[str, Any]] = {}
    with (
        scratch_database(backend, args.postgres_url, "memload") as url,
        open_memory(url, args.embedder) as memory,
    ):
        rate = preload(memory, size, args.seed)
        ids = catalog(memory)
        print(f"\n{backend} {size:,}: pre-loaded at {rate:,.0f} memories/s", flush=True)
        common = (size, ids, mix, args.duration, None)  # None: closed loop
        single, outcomes["1 session"] = measure(
            "1 session", partial(run_sessions, memory, [0], *common, "single", args.seed)
        )
        for mode in modes:
            run = f"{mode}-{uuid.uuid4().hex[:6]}"
            if mode == "threads":
                label = f"{args.sessions} threads"
                sessions = range(1, args.sessions + 1)
                work = partial(run_sessions, memory, sessions, *common, run, args.seed)
            else:
                label = f"{args.processes} proc x {args.sessions // args.processes} threads"
                work = partial(
                    run_processes,
                    url,
                    args.sessions,
                    args.processes,
                    size,
                    ids,
                    weights,
                    args.duration,
                    None,
                    run,
                    args.seed,
                    args.embedder,
                )
            runs[label], outcomes[label] = measure(label, work)
            result = runs[label]
            line = {
                "benchmark": "load",
                "backend": backend,
                "size": size,
                "mode": mode,
                "sessions": args.sessions,
                "processes": args.processes if mode == "processes" else 1,
                "duration_s": args.duration,
                "embedder": args.embedder,
                "preload_per_s": round(rate),
                "throughput_change_vs_single": round(
                    result["ops_per_s"] / single["ops_per_s"] - 1, 3
                ),
                "result": result,
                "single_session": single,
            }
            lines.append(line)
    print_table(backend, size, single, runs)
    errors = 0
    for label, outcome in outcomes.items():
        for kind, text in outcome.examples.items():
            print(f"\nfirst {kind} ({label}):\n{text}")
        errors += sum(outcome.errors.values())
    return lines, errors


# -- open loop: degradation -------------------------------------------------------------------


@dataclass
class Trial:
    """One total rate: the sessions and the single session, over the same rounds."""

    total_rate: float
    single: dict[str, Any]
    loaded: dict[str, Any]
    interval: tuple[float, float]  # the degradation's 95 % bootstrap confidence interval
    load_average: float
    examples: dict[str, str]

    @property
    def degradation(self) -> float:
        """How much worse the p95 of every call is under load than alone (0.05: 5 %)."""
        return float(self.loaded["p95_ms"] / self.single["p95_ms"] - 1)

    @property
    def errors(self) -> int:
        return int(self.single["errors"] + self.loaded["errors"])


def shown_below(trial: Trial, limit: float) -> bool:
    """The data show the p95 degradation below ``limit``: the upper end of its 95 %
    confidence interval is, and no call failed. (A point estimate under the limit with an
    interval reaching past it is noise that happened to fall low.)"""
    return trial.interval[1] < limit and not trial.errors


def run_trial(
    memory: Memory,
    args: argparse.Namespace,
    size: int,
    ids: dict[tuple[str, str], list[int]],
    mix: list[Operation],
    total_rate: float,
) -> Trial:
    """``--rounds`` rounds, each running (in a new shuffled order) the single session at
    ``--baseline-rate`` and the ``--sessions`` sessions at ``total_rate`` together, for
    ``--duration`` seconds each: machine noise hits both alike."""
    single, loaded = Outcome(), Outcome()
    rng = random.Random(f"{args.seed}-{total_rate}")
    for number, order in enumerate(shuffled_rounds(("single", "loaded"), args.rounds, rng)):
        seed = args.seed + number
        for label in order:
            run = f"{label}-{uuid.uuid4().hex[:6]}"
            if label == "single":
                single.merge(
                    run_sessions(
                        memory, [0], size, ids, mix, args.duration, args.baseline_rate, run, seed
                    )
                )
            else:
                loaded.merge(
                    run_sessions(
                        memory,
                        range(1, args.sessions + 1),
                        size,
                        ids,
                        mix,
                        args.duration,
                        total_rate / args.sessions,
                        run,
                        seed,
                    )
                )
    elapsed = args.rounds * args.duration
    results, every = [], []
    for outcome in (single, loaded):
        result = summarise(outcome, elapsed)
        every.append([1000 * value for values in outcome.latencies.values() for value in values])
        result.update(summary(every[-1], ("p50", "p95", "p99")))
        results.append(result)
    interval = degradation_interval(every[0], every[1])
    examples = {**loaded.examples, **single.examples}
    return Trial(total_rate, results[0], results[1], interval, load_average()[0], examples)


def print_trial(trial: Trial, sessions: int) -> None:
    single, loaded = trial.single, trial.loaded
    print(
        f"  {trial.total_rate:g} calls/s ({sessions} x {trial.total_rate / sessions:g}): "
        f"{loaded['calls']:,} calls, p95 {loaded['p95_ms']:.1f} ms against "
        f"{single['p95_ms']:.1f} ms alone ({single['calls']:,} calls): "
        f"{100 * trial.degradation:+.1f} % (95 % CI {100 * trial.interval[0]:+.0f} to "
        f"{100 * trial.interval[1]:+.0f} %), errors {trial.errors}, load average "
        f"{trial.load_average:.1f}",
        flush=True,
    )


def print_operations(backend: str, size: int, trial: Trial, sessions: int) -> None:
    print(
        f"\n== {backend}, {size:,} memories: {sessions} sessions at "
        f"{trial.total_rate / sessions:g} calls/s each against 1 session: latency (ms) =="
    )
    rows = []
    single, loaded = trial.single, trial.loaded
    for name in sorted(single["ops"]):
        alone, busy = single["ops"][name], loaded["ops"].get(name)
        figures = [alone[key] for key in ("count", "p50_ms", "p95_ms", "p99_ms")]
        if busy is None:
            rows.append([name, *figures, "", "", "", "", ""])
            continue
        rows.append(
            [name, *figures, *(busy[key] for key in ("count", "p50_ms", "p95_ms", "p99_ms")),
             change(busy["p95_ms"], alone["p95_ms"])]  # fmt: skip
        )
    rows.append(
        ["ALL", *(single[key] for key in ("calls", "p50_ms", "p95_ms", "p99_ms")),
         *(loaded[key] for key in ("calls", "p50_ms", "p95_ms", "p99_ms")),
         change(loaded["p95_ms"], single["p95_ms"])]  # fmt: skip
    )
    header = ["operation", "1: calls", "p50", "p95", "p99", f"{sessions}: calls", "p50", "p95",
              "p99", "p95 chg"]  # fmt: skip
    print(table(header, rows))


def run_open(args: argparse.Namespace, backend: str, size: int) -> tuple[list[dict[str, Any]], int]:
    """Open loop: pre-load one database, measure the sessions at the realistic rate against
    one session, then search the total rates for the highest whose p95 degrades less than
    ``--limit``; returns the results for the JSON lines and the number of errors."""
    mix = active_mix(parse_mix(args.mix))
    realistic = args.sessions * args.session_rate
    trials: dict[float, Trial] = {}
    with (
        scratch_database(backend, args.postgres_url, "memload") as url,
        open_memory(url, args.embedder) as memory,
    ):
        preload_rate = preload(memory, size, args.seed)
        ids = catalog(memory)
        print(f"\n{backend} {size:,}: pre-loaded at {preload_rate:,.0f} memories/s", flush=True)

        def trial(total_rate: float) -> Trial:
            if total_rate not in trials:
                trials[total_rate] = run_trial(memory, args, size, ids, mix, total_rate)
                print_trial(trials[total_rate], args.sessions)
            return trials[total_rate]

        def passes(total_rate: float) -> bool:
            found = trial(total_rate)
            return shown_below(found, args.limit)

        base = trial(realistic)
        highest = highest_passing(doublings(realistic, args.top_rate), passes)
    print_operations(backend, size, base, args.sessions)
    verdict = (
        "none: at no rate tried do the data show it, not even the realistic one"
        if highest is None
        else f"{highest:g} calls/s ({args.sessions} sessions x {highest / args.sessions:g})"
    )
    print(f"highest total rate with p95 shown degraded < {100 * args.limit:g} %: {verdict}")
    alone = [found.single["p95_ms"] for found in trials.values()]
    # Every rate measures its own single session, the same calls each time: how far their
    # p95s spread is this run's noise, the finest degradation it can tell from none.
    print(
        f"the single session's p95 across the {len(alone)} rates: {min(alone):.1f}-"
        f"{max(alone):.1f} ms ({change(max(alone), min(alone))} between the extremes)"
    )
    lines = [
        {
            "benchmark": "load",
            "loop": "open",
            "backend": backend,
            "size": size,
            "sessions": args.sessions,
            "total_rate_per_s": found.total_rate,
            "session_rate_per_s": found.total_rate / args.sessions,
            "baseline_rate_per_s": args.baseline_rate,
            "rounds": args.rounds,
            "duration_s": args.duration,
            "degradation_p95": round(found.degradation, 4),
            "degradation_p95_ci95": [round(value, 4) for value in found.interval],
            "passes": shown_below(found, args.limit),
            "highest_passing_rate_per_s": highest,
            "load_average": found.load_average,
            "preload_per_s": round(preload_rate),
            "result": found.loaded,
            "single_session": found.single,
        }
        for found in sorted(trials.values(), key=lambda found: found.total_rate)
    ]
    for found in trials.values():
        for kind, text in found.examples.items():
            print(f"\nfirst {kind} ({found.total_rate:g} calls/s):\n{text}")
    return lines, sum(found.errors for found in trials.values())


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--loop", choices=("open", "closed"), default="open")
    parser.add_argument("--sessions", type=int, default=100)
    parser.add_argument("--session-rate", type=float, default=SESSION_RATE,
                        help="open loop: calls per second per session")  # fmt: skip
    parser.add_argument("--baseline-rate", type=float, default=BASELINE_RATE,
                        help="open loop: calls per second of the single session")  # fmt: skip
    parser.add_argument("--top-rate", type=float, default=320.0,
                        help="open loop: the highest total rate searched")  # fmt: skip
    parser.add_argument("--rounds", type=int, default=3, help="open loop: rounds per rate")
    parser.add_argument("--limit", type=float, default=0.05, help="open loop: p95 degradation")
    parser.add_argument("--mode", choices=("threads", "processes", "both"), default="both",
                        help="closed loop: sessions as threads, processes or both")  # fmt: skip
    parser.add_argument("--processes", type=int, default=4, help="for --mode processes")
    parser.add_argument("--duration", type=float, default=15.0, help="seconds per run")
    parser.add_argument("--mix", default="", help="weights, e.g. search=10,add_many=0")
    parser.add_argument("--embedder", choices=("none", "default"), default="none")
    parser.add_argument("--postgres-url", default=DEFAULT_POSTGRES_URL)
    parser.add_argument("--seed", type=int, default=20240611)
    parser.add_argument("--json", type=Path, help="also write the JSON lines here")
    args = parser.parse_args(argv)
    if min(args.session_rate, args.baseline_rate, args.top_rate, args.rounds) <= 0:
        raise SystemExit("--session-rate, --baseline-rate, --top-rate and --rounds: positive")

    weights = parse_mix(args.mix)
    skipped = [op.name for op in MIX if weights[op.name] > 0 and not hasattr(Scope, op.needs)]
    how = (
        f"open loop ({args.session_rate:g} calls/s per session, 1 session at "
        f"{args.baseline_rate:g}/s, {args.rounds} rounds of {args.duration:g} s each)"
        if args.loop == "open"
        else f"closed loop, mode {args.mode} (processes: {args.processes} x "
        f"{args.sessions // args.processes} threads), {args.duration:g} s per run"
    )
    print(
        f"load: {args.sessions} sessions, {how}, "
        f"embedder {args.embedder}; Python {platform.python_version()}, "
        f"SQLite {sqlite3.sqlite_version}, {os.cpu_count()} CPUs, load average "
        f"{load_average()[0]:.1f} at start"
    )
    print("mix: " + ", ".join(f"{op.name} {op.weight:g}" for op in active_mix(weights)))
    if skipped:
        print(f"skipped (no such Scope method): {skipped}")

    lines: list[dict[str, Any]] = []
    errors = 0
    for backend in args.backends.split(","):
        for size in [int(value) for value in args.sizes.split(",")]:
            run = run_open if args.loop == "open" else run_closed
            found, failed = run(args, backend, size)
            lines += found
            errors += failed
    print(f"\nerrors: {errors}   (load average {load_average()[0]:.1f} at the end)\n")
    printed = [emit(line, sort_keys=True) for line in lines]
    if args.json:
        args.json.write_text("".join(line + "\n" for line in printed))
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
