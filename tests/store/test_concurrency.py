"""Concurrent writers on one SQLite file and on PostgreSQL: no lost writes, no duplicates,
and no "database is locked" (or any other error) reaching the caller.

8 threads (sharing one ``Memory``) and 4 processes (``spawn``, each with its own ``Memory``)
start together on a barrier and add overlapping contents to the same user, agent and
session, so the overlaps collide on the unique key. Then: one row per distinct content,
every content present, the same id handed to every worker that added a content, and the
metadata stored exactly once. Checkpoints saved at once from 8 threads on one session get
distinct consecutive numbers, none lost; preferences set at once keep one row per key.
"""

from __future__ import annotations

import json
import multiprocessing
import queue
import random
import threading
import time
import traceback
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from memory import HashingEmbedder, Memory
from tests.store.worker_processes import stop_workers

BACKENDS = ["sqlite-file", "postgresql"]
THREADS = 8
PROCESSES = 4
SHARED_CONTENTS = 200  # every worker adds all of these, in its own shuffled order
UNIQUE_CONTENTS = 20  # and these, which only it adds
AGENT = "writer"
SESSION = "s1"
BARRIER_TIMEOUT = 60.0  # spawning 4 interpreters on 2 busy cores takes a few seconds
RESULT_TIMEOUT = 120.0

Ids = dict[str, list[int]]
Outcome = tuple[Ids, list[str], float, float]  # ids, errors, start and end (time.time())


def shared_content(number: int) -> str:
    return f"shared content {number:03d}"


def unique_content(worker: str, number: int) -> str:
    return f"content only {worker} adds, #{number:02d}"


def metadata_of(content: str) -> dict[str, Any]:
    """Every worker that adds a content gives it the same metadata (or none)."""
    number = sum(map(ord, content))
    return {"n": number, "parity": number % 2} if number % 3 == 0 else {}


def all_contents(workers: list[str]) -> set[str]:
    return {shared_content(n) for n in range(SHARED_CONTENTS)} | {
        unique_content(worker, n) for worker in workers for n in range(UNIQUE_CONTENTS)
    }


def add_overlapping(memory: Memory, user: str, worker: str, seed: int) -> Outcome:
    """Add the shared and this worker's unique contents in a shuffled order, as a mix of
    single ``add`` calls and ``add_many`` batches (each batch repeats its first item).
    Returns the ids received per content, the errors raised (as text), and when the
    work started and ended."""
    start = time.time()
    rng = random.Random(seed)
    contents = [shared_content(n) for n in range(SHARED_CONTENTS)]
    contents += [unique_content(worker, n) for n in range(UNIQUE_CONTENTS)]
    rng.shuffle(contents)
    scope = memory.scope(user, AGENT, SESSION)
    ids: Ids = defaultdict(list)
    errors: list[str] = []
    position = 0
    while position < len(contents):
        chunk = contents[position : position + rng.choice((1, 1, 2, 3, 8))]
        position += len(chunk)
        try:
            if len(chunk) == 1:
                added = [chunk[0]]
                records = [scope.add(chunk[0], metadata=metadata_of(chunk[0]))]
            else:
                added = [*chunk, chunk[0]]
                records = scope.add_many(
                    [{"content": text, "metadata": metadata_of(text)} for text in added]
                )
        except Exception:
            errors.append(traceback.format_exc())
            continue
        if [record.content for record in records] != added:
            errors.append(f"{worker}: asked for {added}, got {[r.content for r in records]}")
        for record in records:
            ids[record.content].append(record.id)
    return dict(ids), errors, start, time.time()


def process_worker(
    url: str, user: str, worker: str, seed: int, barrier: Any, results: Any
) -> None:
    """The body of each spawned process (module level, so that ``spawn`` can import it)."""
    outcome: Outcome
    try:
        with open_memory(url) as memory:
            barrier.wait(BARRIER_TIMEOUT)
            outcome = add_overlapping(memory, user, worker, seed)
    except BaseException:
        outcome = ({}, [traceback.format_exc()], 0.0, 0.0)
    results.put((worker, outcome))


def open_memory(url: str) -> Memory:
    # The hashing embedder: twelve workers each loading the real model would take minutes.
    return Memory.open(url, embedder=HashingEmbedder())


def database_url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    if backend == "sqlite-file":
        return f"sqlite:///{tmp_path / 'memory.db'}"
    return str(request.getfixturevalue("postgres_url"))


def run_threads(
    count: int, body: Callable[[int], Any], barrier: Any = None
) -> tuple[list[Any], list[str]]:
    """Run ``body(i)`` in ``count`` threads that start together (on ``barrier``, which
    other parties may share); returns their results and errors."""
    barrier = barrier if barrier is not None else threading.Barrier(count)
    results: list[Any] = [None] * count
    errors: list[str] = []

    def run(index: int) -> None:
        try:
            barrier.wait(BARRIER_TIMEOUT)
            results[index] = body(index)
        except BaseException:
            errors.append(traceback.format_exc())

    threads = [threading.Thread(target=run, args=(index,)) for index in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(RESULT_TIMEOUT)
    assert not any(thread.is_alive() for thread in threads), "a worker thread hung"
    return results, errors


def report(errors: list[str]) -> str:
    """The distinct errors that reached callers, and the first one in full."""
    if not errors:
        return "no errors"
    distinct = sorted({error.strip().splitlines()[-1] for error in errors})
    return (f"{len(errors)} error(s) reached the callers: {distinct}\nthe first:\n"
            f"{errors[0]}")


def collect(results: Any, processes: list[Any]) -> dict[str, Outcome]:
    """What the processes put on ``results``; stops early if they all died silently."""
    outcomes: dict[str, Outcome] = {}
    deadline = time.monotonic() + RESULT_TIMEOUT
    while len(outcomes) < len(processes) and time.monotonic() < deadline:
        try:
            worker, outcome = results.get(timeout=0.5)
        except queue.Empty:
            if not any(process.is_alive() for process in processes) and results.empty():
                break
            continue
        outcomes[worker] = outcome
    assert len(outcomes) == len(processes), (
        f"only {sorted(outcomes)} reported; exit codes "
        f"{[process.exitcode for process in processes]}"
    )
    return outcomes


# -- tests -------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_threads_and_processes_add_overlapping_content(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest, user: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url = database_url(backend, tmp_path, request)
    open_memory(url).close()  # create the schema once, before anyone races
    # The spawned interpreters import this module: they must not leave bytecode behind.
    monkeypatch.setenv("PYTHONDONTWRITEBYTECODE", "1")
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(THREADS + PROCESSES)
    results = context.Queue()
    thread_names = [f"thread-{n}" for n in range(THREADS)]
    process_names = [f"process-{n}" for n in range(PROCESSES)]
    processes = [
        context.Process(
            target=process_worker, args=(url, user, name, 1000 + n, barrier, results)
        )
        for n, name in enumerate(process_names)
    ]
    outcomes: dict[str, Outcome] = {}
    try:
        for process in processes:
            process.start()
        with open_memory(url) as memory:

            def thread_body(index: int) -> Outcome:
                return add_overlapping(memory, user, thread_names[index], index)

            thread_results, thread_errors = run_threads(THREADS, thread_body, barrier)
            for name, outcome in zip(thread_names, thread_results, strict=True):
                if outcome is not None:
                    outcomes[name] = outcome
            outcomes.update(collect(results, processes))
            for process in processes:
                process.join(RESULT_TIMEOUT)
            exit_codes = [process.exitcode for process in processes]
            assert exit_codes == [0] * PROCESSES, f"process exit codes: {exit_codes}"
            with memory.engine.connect() as connection:
                rows = connection.execute(
                    sa.text(
                        "SELECT id, content FROM memories "
                        "WHERE user_id = :user AND agent_id = :agent AND session_id = :session"
                    ),
                    {"user": user, "agent": AGENT, "session": SESSION},
                ).all()
                stored_metadata = connection.execute(
                    sa.text(
                        "SELECT m.content, d.key, d.value_json FROM memory_metadata d "
                        "JOIN memories m ON m.id = d.memory_id WHERE m.user_id = :user"
                    ),
                    {"user": user},
                ).all()
            # Through the API too: what a reader sees is what the table holds.
            listed = memory.scope(user, AGENT, SESSION).list(limit=1000)
    finally:
        stop_workers(processes, results)

    errors = thread_errors + [error for outcome in outcomes.values() for error in outcome[1]]
    locked = [error for error in errors if "database is locked" in error]
    assert locked == [], "'database is locked': " + report(locked)
    assert errors == [], report(errors)
    assert sorted(outcomes) == sorted(thread_names + process_names)
    # Everyone was still at work when the last one started: the writes really overlapped.
    last_start = max(outcome[2] for outcome in outcomes.values())
    first_end = min(outcome[3] for outcome in outcomes.values())
    assert last_start < first_end, "the workers did not run at the same time"

    expected = all_contents(thread_names + process_names)
    contents = [content for _, content in rows]
    assert len(contents) == len(set(contents)), "a content was stored twice"
    assert set(contents) == expected, "writes were lost (or strangers appeared)"
    stored_id = {content: memory_id for memory_id, content in rows}
    for worker, (ids, *_) in outcomes.items():
        mine = {shared_content(n) for n in range(SHARED_CONTENTS)} | {
            unique_content(worker, n) for n in range(UNIQUE_CONTENTS)
        }
        assert set(ids) == mine, f"{worker} did not get a record for every content"
        wrong = {c: got for c, got in ids.items() if set(got) != {stored_id[c]}}
        assert wrong == {}, f"{worker} got ids other than the stored ones: {wrong}"
    assert {record.content: record.id for record in listed} == stored_id

    expected_metadata = sorted(
        (content, key, json.dumps(value)) for content in expected
        for key, value in metadata_of(content).items()
    )
    assert expected_metadata, "the workload must store some metadata"
    assert sorted((c, k, v) for c, k, v in stored_metadata) == expected_metadata


@pytest.mark.parametrize("backend", BACKENDS)
def test_concurrent_checkpoints_are_consecutive_and_none_is_lost(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest, user: str
) -> None:
    saves_per_thread = 10
    with open_memory(database_url(backend, tmp_path, request)) as memory:

        def save(index: int) -> list[tuple[int, dict[str, Any]]]:
            scope = memory.scope(user, f"agent-{index}", SESSION)
            saved = []
            for step in range(saves_per_thread):
                state = {"thread": index, "step": step}
                checkpoint = scope.save_state(state)
                saved.append((checkpoint.checkpoint_seq, checkpoint.state))
            return saved

        results, errors = run_threads(THREADS, save)
        assert errors == [], report(errors)
        with memory.engine.connect() as connection:
            stored = connection.execute(
                sa.text(
                    "SELECT checkpoint_seq, state_json FROM session_state "
                    "WHERE user_id = :user AND session_id = :session ORDER BY checkpoint_seq"
                ),
                {"user": user, "session": SESSION},
            ).all()
        latest = memory.scope(user, "reader", SESSION).load_state()

    total = THREADS * saves_per_thread
    returned = sorted(seq for saved in results for seq, _ in saved)
    assert returned == list(range(1, total + 1)), "checkpoint numbers repeat or skip"
    assert [seq for seq, _ in stored] == list(range(1, total + 1)), "checkpoints were lost"
    by_seq = {seq: state for saved in results for seq, state in saved}
    assert {seq: json.loads(text) for seq, text in stored} == by_seq
    for saved in results:  # each thread's own checkpoints are numbered in its own order
        assert [seq for seq, _ in saved] == sorted(seq for seq, _ in saved)
    assert latest is not None and latest.checkpoint_seq == total


@pytest.mark.parametrize("backend", BACKENDS)
def test_concurrent_preferences_keep_one_row_per_key(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest, user: str
) -> None:
    keys = [f"key-{n}" for n in range(10)]
    rounds = 5
    orders = []
    for index in range(THREADS):
        order = keys * rounds
        random.Random(index).shuffle(order)
        orders.append(order)
    with open_memory(database_url(backend, tmp_path, request)) as memory:

        def set_all(index: int) -> None:
            scope = memory.scope(user, f"agent-{index}")
            for turn, key in enumerate(orders[index]):
                scope.set_preference(key, {"thread": index, "turn": turn})

        _, errors = run_threads(THREADS, set_all)
        assert errors == [], report(errors)
        with memory.engine.connect() as connection:
            counts = dict(
                connection.execute(
                    sa.text(
                        'SELECT "key", COUNT(*) FROM user_preferences WHERE user_id = :user '
                        'GROUP BY "key"'
                    ),
                    {"user": user},
                ).all()
            )
        preferences = memory.scope(user, "reader").list_preferences()

    assert counts == {key: 1 for key in keys}
    assert [preference.key for preference in preferences] == sorted(keys)
    for preference in preferences:
        thread, turn = preference.value["thread"], preference.value["turn"]
        assert preference.source_agent == f"agent-{thread}"  # value and agent of one write
        # The surviving value is the last that some thread wrote for the key: anything
        # earlier was overwritten by that thread's own later write.
        last_turn = max(t for t, key in enumerate(orders[thread]) if key == preference.key)
        assert turn == last_turn, (preference.key, thread, turn, last_turn)


def test_keyword_terms_are_the_same_from_many_threads() -> None:
    import threading

    from memory.core.text import _stem, terms

    words = [f"running{i} jumping{i} happily{i} connections{i}" for i in range(3000)]
    expected = [terms(text) for text in words]
    _stem.cache_clear()  # make every thread stem for real, at the same time
    found: dict[int, list[list[str]]] = {}
    start = threading.Barrier(8)

    def work(worker: int) -> None:
        start.wait()
        found[worker] = [terms(text) for text in words]

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(result == expected for result in found.values())
