"""Several processes, each with many writer threads, on one SQLite file: no caller sees a
lock error, no call waits past the timeout, and every acknowledged write is stored.

Each process has its own ``Memory`` (as several agent hosts sharing one file would) and runs
writer threads in a closed loop: an ``add``, then a write that holds the lock for 30 ms (as
a slow disk or a busy CPU stretches a real one), so every process always has writers queued
for SQLite's one write lock. Within a process they queue in order (``memory.store.db``) and the
next one takes the lock within a fraction of a millisecond of the last commit; between
processes the lock can only be polled. Polled by SQLite's busy handler, every 100 ms once it
has waited a while, the lock is almost never found free: a process was shut out for more
than the 5 s bound and its callers failed (``DatabaseUnavailableError``, in every one of
several runs). Polled every millisecond (``memory.store.engine``), the slowest call took ~1.5 s.
"""

from __future__ import annotations

import multiprocessing
import queue
import threading
import time
import traceback
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from memory import HashingEmbedder, Memory
from memory.store.engine import BUSY_TIMEOUT_SECONDS
from tests.store.worker_processes import stop_workers

PROCESSES = 4
THREADS = 8
DURATION_SECONDS = 10.0
HOLD_SECONDS = 0.03  # how long a slow write holds the lock
BARRIER_TIMEOUT = 60.0  # spawning 4 interpreters on 2 busy cores takes a few seconds
RESULT_TIMEOUT = 120.0
# A call that waited its whole budget for the lock may still run its own transaction.
CALL_BOUND_SECONDS = BUSY_TIMEOUT_SECONDS + 1.5
AGENT = "writer"

# errors (as text), writes acknowledged (memories added, slow writes), the slowest call (s)
Outcome = tuple[list[str], int, int, float]


def write_in_a_loop(memory: Memory, user: str, worker: str, until: float) -> Outcome:
    """Add a memory, then make a slow write, until ``until`` (``time.monotonic()``)."""
    scope = memory.scope(user, AGENT, worker)
    errors: list[str] = []
    added = held = 0
    slowest = 0.0
    step = 0

    def slow_write(connection: sa.Connection) -> None:
        connection.execute(
            sa.text("INSERT INTO slow_writes (worker, step) VALUES (:worker, :step)"),
            {"worker": worker, "step": step},
        )
        time.sleep(HOLD_SECONDS)

    while time.monotonic() < until:
        step += 1
        began = time.monotonic()
        try:
            if step % 2:
                scope.add(f"{worker} wrote note {step}")
                added += 1
            else:
                memory._db.write(slow_write)
                held += 1
        except Exception:
            errors.append(traceback.format_exc())
        slowest = max(slowest, time.monotonic() - began)
    return errors, added, held, slowest


def process_main(url: str, user: str, name: str, barrier: Any, results: Any) -> None:
    """One agent host (module level, so that ``spawn`` can import it)."""
    outcomes: list[Outcome] = []
    try:
        with Memory.open(url, embedder=HashingEmbedder()) as memory:
            barrier.wait(BARRIER_TIMEOUT)
            until = time.monotonic() + DURATION_SECONDS

            def body(index: int) -> None:
                try:
                    outcomes.append(write_in_a_loop(memory, user, f"{name}-{index}", until))
                except BaseException:
                    outcomes.append(([traceback.format_exc()], 0, 0, 0.0))

            threads = [threading.Thread(target=body, args=(n,)) for n in range(THREADS)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
    except BaseException:
        outcomes.append(([traceback.format_exc()], 0, 0, 0.0))
    results.put((name, outcomes))


def test_writer_threads_in_several_processes_see_no_lock_errors(
    tmp_path: Path, user: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path / 'memory.db'}"
    with Memory.open(url, embedder=HashingEmbedder()) as memory:  # before anyone races
        with memory.engine.begin() as connection:
            connection.execute(sa.text("CREATE TABLE slow_writes (worker TEXT, step INTEGER)"))
    # The spawned interpreters import this module: they must not leave bytecode behind.
    monkeypatch.setenv("PYTHONDONTWRITEBYTECODE", "1")
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(PROCESSES)
    results = context.Queue()
    names = [f"process-{n}" for n in range(PROCESSES)]
    processes = [
        context.Process(target=process_main, args=(url, user, name, barrier, results))
        for name in names
    ]
    reported: dict[str, list[Outcome]] = {}
    try:
        for process in processes:
            process.start()
        deadline = time.monotonic() + RESULT_TIMEOUT
        while len(reported) < PROCESSES and time.monotonic() < deadline:
            try:
                name, found = results.get(timeout=0.5)
            except queue.Empty:
                if not any(process.is_alive() for process in processes) and results.empty():
                    break
                continue
            reported[name] = found
        for process in processes:
            process.join(RESULT_TIMEOUT)
    finally:
        stop_workers(processes, results)

    assert sorted(reported) == names, f"exit codes {[p.exitcode for p in processes]}"
    outcomes = [outcome for found in reported.values() for outcome in found]
    assert len(outcomes) == PROCESSES * THREADS
    errors = [error for found, *_ in outcomes for error in found]
    distinct = sorted({error.strip().splitlines()[-1] for error in errors})
    assert errors == [], f"{len(errors)} error(s) reached callers: {distinct}\n{errors[0]}"
    slowest = max(outcome[3] for outcome in outcomes)
    assert slowest < CALL_BOUND_SECONDS, f"a call took {slowest:.1f} s"
    for name, found in reported.items():  # no process was shut out of the lock
        assert sum(outcome[2] for outcome in found) >= THREADS, f"{name} barely wrote"
    engine = sa.create_engine(url)
    try:
        with engine.connect() as connection:
            added = connection.execute(
                sa.text("SELECT COUNT(*) FROM memories WHERE user_id = :user"), {"user": user}
            ).scalar_one()
            held = connection.execute(sa.text("SELECT COUNT(*) FROM slow_writes")).scalar_one()
    finally:
        engine.dispose()
    # Every acknowledged write is there, once.
    assert (added, held) == (
        sum(outcome[1] for outcome in outcomes),
        sum(outcome[2] for outcome in outcomes),
    )
