"""Retention: cleanup removes what the policy says and nothing else, consolidates old working
memories into episodic summaries that name every id they replace, is idempotent, is safe
while agents write, records its runs; the background worker; ``memctl cleanup``; the
extractive summarizer.

Cleanup sweeps every user, so each test has a database to itself: a new SQLite file or
``:memory:`` database, or the module's PostgreSQL database emptied first. Rows are made
"old" by writing their timestamps with SQL, or by giving cleanup a later ``now``.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner, Result
from hypothesis import given
from hypothesis import strategies as st

import memory
import memory.ops
from memory import HashingEmbedder, InvalidInputError, Memory, NotFoundError, SchemaError
from memory.cli import main
from memory.ops import (
    RetentionPolicy,
    RetentionWorker,
    cleanup,
    extractive_summary,
    last_cleanup_run,
)
from memory.store.schema import MEMORIES_REVISION
from memory.store.tables import Base

BACKENDS = ["sqlite-file", "sqlite-memory", "postgresql"]
# Threads need a database that more than one connection can open.
PERSISTENT_BACKENDS = ["sqlite-file", "postgresql"]
# What a cleanup may change (besides its own run log).
CHANGED_TABLES = (
    "memories",
    "memory_metadata",
    "memory_terms",
    "memory_embeddings",
    "memory_changes",
    "session_state",
)
NO_CHANGES = {
    "expired_memories": 0,
    "working_memories": 0,
    "summaries": 0,
    "episodic_memories": 0,
    "semantic_memories": 0,
    "expired_session_state": 0,
    "session_state": 0,
    "expired_grants": 0,
    "idempotent_requests": 0,
}
HOUR = timedelta(hours=1)
WAIT_SECONDS = 30.0

memories_table = Base.metadata.tables["memories"]
metadata_table = Base.metadata.tables["memory_metadata"]
session_table = Base.metadata.tables["session_state"]


def _emptied(url: str) -> str:
    """Empty every table of the database at ``url`` (a TRUNCATE is much cheaper than a
    database per test, which PostgreSQL is slow to drop)."""
    engine = sa.create_engine(url)
    try:
        with engine.begin() as connection:
            names = set(sa.inspect(connection).get_table_names()) - {"alembic_version"}
            if names:
                quoted = ", ".join(f'"{name}"' for name in sorted(names))
                connection.execute(sa.text(f"TRUNCATE {quoted} RESTART IDENTITY CASCADE"))
    finally:
        engine.dispose()
    return url


def _fresh_url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """A database that holds nothing but what the test writes: cleanup sweeps every user."""
    if backend == "postgresql":
        return _emptied(str(request.getfixturevalue("postgres_url")))
    if backend == "sqlite-file":
        return f"sqlite:///{tmp_path / 'memory.db'}"
    assert backend == "sqlite-memory", backend
    return "sqlite://"


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Memory]:
    """A store at head in a database to itself, with the fast hashing embedder."""
    url = _fresh_url(request.param, tmp_path, request)
    with Memory.open(url, embedder=HashingEmbedder()) as opened:
        yield opened


@pytest.fixture(params=PERSISTENT_BACKENDS)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of an empty database that several connections can share."""
    return _fresh_url(request.param, tmp_path, request)


@pytest.fixture
def shared_store(store_url: str) -> Iterator[Memory]:
    with Memory.open(store_url, embedder=HashingEmbedder()) as opened:
        yield opened


# -- helpers ------------------------------------------------------------------------------------


def _ago(hours: float) -> datetime:
    return datetime.now(UTC) - timedelta(hours=hours)


def make_old(store: Memory, ids: Sequence[int], hours: float = 30) -> None:
    """Make memories look created and last changed ``hours`` ago."""
    when = _ago(hours)
    with store.engine.begin() as connection:
        connection.execute(
            sa.update(memories_table)
            .where(memories_table.c.id.in_(list(ids)))
            .values(created_at=when, updated_at=when)
        )


def expire(store: Memory, ids: Sequence[int]) -> None:
    with store.engine.begin() as connection:
        connection.execute(
            sa.update(memories_table)
            .where(memories_table.c.id.in_(list(ids)))
            .values(expires_at=_ago(0.1))
        )


def age_checkpoints(
    store: Memory, user: str, session: str, seqs: Sequence[int], hours: float = 30
) -> None:
    with store.engine.begin() as connection:
        connection.execute(
            sa.update(session_table)
            .where(
                session_table.c.user_id == user,
                session_table.c.session_id == session,
                session_table.c.checkpoint_seq.in_(list(seqs)),
            )
            .values(created_at=_ago(hours))
        )


def expire_checkpoints(store: Memory, user: str, session: str, seqs: Sequence[int]) -> None:
    with store.engine.begin() as connection:
        connection.execute(
            sa.update(session_table)
            .where(
                session_table.c.user_id == user,
                session_table.c.session_id == session,
                session_table.c.checkpoint_seq.in_(list(seqs)),
            )
            .values(expires_at=_ago(0.1))
        )


def memory_rows(store: Memory) -> dict[int, sa.RowMapping]:
    with store.engine.connect() as connection:
        rows = connection.execute(sa.select(memories_table)).mappings().all()
    return {row["id"]: row for row in rows}


def checkpoints(store: Memory) -> list[tuple[str, str, int]]:
    with store.engine.connect() as connection:
        rows = connection.execute(
            sa.select(
                session_table.c.user_id, session_table.c.session_id, session_table.c.checkpoint_seq
            ).order_by(session_table.c.user_id, session_table.c.session_id, "checkpoint_seq")
        ).all()
    return [tuple(row) for row in rows]  # type: ignore[misc]


def summaries(store: Memory) -> list[dict[str, Any]]:
    """Every consolidated memory with the ids it names, oldest first."""
    with store.engine.connect() as connection:
        rows = connection.execute(
            sa.select(memories_table, metadata_table.c.value_json)
            .join(metadata_table, metadata_table.c.memory_id == memories_table.c.id)
            .where(metadata_table.c.key == "consolidated_from")
            .order_by(memories_table.c.id)
        ).mappings()
        return [dict(row, sources=json.loads(row["value_json"])) for row in rows]


def checksums(store: Memory) -> dict[str, memory.ops.TableChecksum]:
    with store.engine.connect() as connection:
        return memory.ops.table_checksums(connection, CHANGED_TABLES)


def wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


# -- what cleanup removes and keeps ---------------------------------------------------------------


def test_cleanup_enforces_the_default_policy(store: Memory, user: str) -> None:
    planner = store.scope(user, "planner", "s1")
    old_texts = [
        "The deploy failed because the cache was cold.",
        "We warmed the cache and retried the deploy.",
        "The deploy went through at noon.",
    ]
    old = planner.add_many(old_texts)
    other_session = store.scope(user, "planner", "s2").add("Rotate the API keys on Monday.")
    other_agent = store.scope(user, "coder").add("The CI tests are flaky on Windows.")
    recent = planner.add("The retry policy allows three attempts.")
    episodic = planner.add("Shipped release 1.4.", tier="episodic")
    semantic = planner.add("Ada prefers short answers.", tier="semantic")
    expiring = planner.add("A note that expires.", tier="semantic", ttl=HOUR)
    make_old(store, [r.id for r in old] + [other_session.id, other_agent.id])
    make_old(store, [episodic.id, semantic.id], hours=24 * 400)
    expire(store, [expiring.id])
    finished = store.scope(user, "planner", "finished")
    finished.save_state({"step": 1})
    finished.save_state({"step": 2})
    age_checkpoints(store, user, "finished", [1, 2])
    live = store.scope(user, "planner", "live")
    live.save_state({"step": 1})
    live.save_state({"step": 2})
    age_checkpoints(store, user, "live", [1])

    report = cleanup(store)

    assert report.counts == {
        **NO_CHANGES,
        "expired_memories": 1,
        "working_memories": 5,
        "summaries": 3,
        "session_state": 3,
    }
    assert (report.status, report.dry_run, report.total) == ("ok", False, 12)
    found = {(s["agent_id"], s["session_id"]): s for s in summaries(store)}
    summary_ids = {s["id"] for s in found.values()}
    rows = memory_rows(store)
    assert set(rows) - summary_ids == {recent.id, episodic.id, semantic.id}
    removed = [r.id for r in old] + [other_session.id, other_agent.id]
    # A summary's id is above every id it names (SQLite would otherwise reuse them).
    assert min(summary_ids) > max(removed)

    assert set(found) == {("planner", "s1"), ("planner", "s2"), ("coder", "")}
    s1 = found[("planner", "s1")]
    assert s1["sources"] == sorted(r.id for r in old)
    assert s1["content"] == extractive_summary(old_texts)
    assert (s1["tier"], s1["user_id"], s1["visibility"], s1["version"]) == (
        "episodic",
        user,
        "private",
        1,
    )
    assert found[("planner", "s2")]["sources"] == [other_session.id]
    assert found[("planner", "s2")]["content"] == "Rotate the API keys on Monday."
    assert found[("coder", "")]["sources"] == [other_agent.id]
    # The summaries are ordinary memories of their scope: listed, searchable, with metadata.
    listed = planner.list(session="s1", tier="episodic")
    assert [m.id for m in listed] == [s1["id"], episodic.id]
    assert listed[0].metadata == {
        "consolidated_from": s1["sources"],
        "consolidated_by": "retention",
    }
    hits = planner.search("cache deploy")
    assert s1["id"] in [hit.memory.id for hit in hits]
    assert not {hit.memory.id for hit in hits} & set(removed)

    assert finished.load_state() is None
    loaded = live.load_state()
    assert loaded is not None and loaded.checkpoint_seq == 2
    assert checkpoints(store) == [(user, "live", 2)]

    run = last_cleanup_run(store)
    assert run is not None
    assert (run.id, run.job, run.status, run.error) == (report.run_id, "retention", "ok", None)
    assert run.counts == report.counts
    assert run.started_at == report.started_at and run.finished_at == report.finished_at
    assert run.started_at <= run.finished_at


def test_time_can_be_given_instead_of_aging_rows(store: Memory, user: str) -> None:
    scope = store.scope(user, "planner", "s1")
    first = scope.add("The build broke after the dependency upgrade.")
    scope.save_state({"step": 1})
    later = datetime.now(UTC) + timedelta(hours=25)

    assert cleanup(store, now=datetime.now(UTC)).total == 0
    report = cleanup(store, now=later)

    assert report.counts == {
        **NO_CHANGES,
        "working_memories": 1,
        "summaries": 1,
        "session_state": 1,
    }
    (summary,) = summaries(store)
    assert summary["sources"] == [first.id]
    assert summary["created_at"] == later


def test_windows_are_set_per_tier_and_none_keeps_forever(store: Memory, user: str) -> None:
    scope = store.scope(user, "planner", "s1")
    working = scope.add("working, 30 hours old")
    old_episodic = scope.add("episodic, 3 hours old", tier="episodic")
    new_episodic = scope.add("episodic, 1 hour old", tier="episodic")
    semantic = scope.add("semantic, a year old", tier="semantic")
    scope.save_state({"step": 1})
    make_old(store, [working.id])
    make_old(store, [old_episodic.id], hours=3)
    make_old(store, [new_episodic.id], hours=1)
    make_old(store, [semantic.id], hours=24 * 365)
    age_checkpoints(store, user, "s1", [1], hours=24 * 365)
    policy = RetentionPolicy(
        tiers={"working": None, "episodic": timedelta(hours=2)}, session_state=None
    )
    assert policy.window("semantic") is None

    report = cleanup(store, policy)

    assert report.counts == {**NO_CHANGES, "episodic_memories": 1}
    assert set(memory_rows(store)) == {working.id, new_episodic.id, semantic.id}
    assert summaries(store) == []
    assert len(checkpoints(store)) == 1

    # A shorter working window takes what is older than it, and nothing younger.
    young = scope.add("working, 30 minutes old")
    make_old(store, [young.id], hours=0.5)
    report = cleanup(store, RetentionPolicy(tiers={"working": HOUR}, session_state=None))
    assert (report.counts["working_memories"], report.counts["summaries"]) == (1, 1)
    assert young.id in memory_rows(store) and working.id not in memory_rows(store)


def test_without_summaries_old_working_memories_are_only_removed(store: Memory, user: str) -> None:
    scope = store.scope(user, "planner", "s1")
    old = scope.add_many(["one thing", "another thing"])
    make_old(store, [r.id for r in old])

    report = cleanup(store, RetentionPolicy(summarize=False))

    assert report.counts == {**NO_CHANGES, "working_memories": 2}
    assert memory_rows(store) == {}


def test_an_expired_latest_checkpoint_does_not_bring_back_an_older_one(
    store: Memory, user: str
) -> None:
    scope = store.scope(user, "planner", "s1")
    scope.save_state({"step": 1})
    scope.save_state({"step": 2}, ttl=HOUR)
    expire_checkpoints(store, user, "s1", [2])
    assert scope.load_state() is None

    report = cleanup(store)

    assert report.counts == {**NO_CHANGES, "expired_session_state": 2}
    assert scope.load_state() is None
    assert scope.save_state({"step": 3}).state == {"step": 3}


@pytest.mark.parametrize("batch_size", [7, 500])
def test_summaries_name_every_removed_id_once_across_batches_and_chunks(
    store: Memory, user: str, batch_size: int
) -> None:
    """600 old memories in one scope (more ids than one metadata value holds) and 20 in
    each of two more: every removed id is named by exactly one summary of its own scope,
    and every ``consolidated_from`` fits in one metadata value."""
    big = store.scope(user, "planner", "big")
    old = big.add_many(f"step {n} of the long session" for n in range(600))
    for number in range(2):
        scope = store.scope(user, "planner", f"small-{number}")
        old += scope.add_many(f"note {n} of small session {number}" for n in range(20))
    make_old(store, [r.id for r in old])
    scope_of = {r.id: (r.user_id, r.agent_id, r.session_id or "") for r in old}
    kept = big.add("a recent memory")

    report = cleanup(store, batch_size=batch_size)

    assert report.counts["working_memories"] == len(old)
    assert set(memory_rows(store)) == {kept.id} | {s["id"] for s in summaries(store)}
    found = summaries(store)
    assert report.counts["summaries"] == len(found)
    named = [source for summary in found for source in summary["sources"]]
    assert sorted(named) == sorted(r.id for r in old)  # all of them, each once
    for summary in found:
        assert {scope_of[source] for source in summary["sources"]} == {
            (summary["user_id"], summary["agent_id"], summary["session_id"])
        }
        assert len(summary["value_json"].encode()) <= 1024
    if batch_size == 500:
        # One summary per scope and batch, split only where the ids outgrow 1 KiB.
        assert 4 <= len(found) <= 6
    else:
        assert len(found) >= len(old) / batch_size


# -- idempotence and dry runs ---------------------------------------------------------------------


def _populate_everything(store: Memory, user: str) -> None:
    """Old working memories in two scopes, an expired memory, old and expired checkpoints
    (one session whose latest checkpoint is both), and recent rows of every kind."""
    scope = store.scope(user, "planner", "s1")
    old = scope.add_many(["The cache was cold.", "The deploy failed twice.", "Fixed at noon."])
    old.append(store.scope(user, "coder", "s9").add("Refactored the parser."))
    make_old(store, [r.id for r in old])
    expire(store, [scope.add("short-lived", tier="episodic", ttl=HOUR).id])
    scope.add("recent working memory")
    scope.add("old but episodic", tier="episodic")
    for session in ("a", "b", "c"):
        state = store.scope(user, "planner", session)
        state.save_state({"step": 1})
        state.save_state({"step": 2}, ttl=HOUR)
        state.save_state({"step": 3})
    age_checkpoints(store, user, "a", [1, 2, 3])
    age_checkpoints(store, user, "b", [1, 2])
    expire_checkpoints(store, user, "b", [2])
    expire_checkpoints(store, user, "c", [2])
    age_checkpoints(store, user, "c", [1, 2, 3])


def test_a_second_run_changes_nothing(store: Memory, user: str) -> None:
    _populate_everything(store, user)
    first = cleanup(store)
    assert first.counts == {
        **NO_CHANGES,
        "expired_memories": 1,
        "working_memories": 4,
        "summaries": 2,
        # b: 1 and 2 (2 expired); c: 1 and 2 (expired), then 3 (old)
        "expired_session_state": 4,
        # a: all three; c: 3
        "session_state": 4,
    }
    before = checksums(store)

    second = cleanup(store)

    assert second.counts == NO_CHANGES and second.total == 0
    assert checksums(store) == before
    assert second.run_id is not None and first.run_id is not None
    assert second.run_id > first.run_id


def test_a_dry_run_counts_exactly_and_changes_nothing(store: Memory, user: str) -> None:
    _populate_everything(store, user)
    before = checksums(store)

    dry = cleanup(store, dry_run=True)

    assert checksums(store) == before
    assert last_cleanup_run(store) is None  # not even the run log changed
    assert (dry.dry_run, dry.run_id, dry.status) == (True, None, "ok")
    real = cleanup(store)
    assert real.counts == dry.counts
    assert real.total > 0


# -- concurrent writers ---------------------------------------------------------------------------


def test_cleanup_while_agents_write(shared_store: Memory) -> None:
    """Two cleanups (batches of 20) run while one agent adds memories and two update old
    ones. No error reaches anyone but the updaters that lost a race to cleanup (and got
    NotFoundError, as for any concurrent delete); every update that succeeded survives;
    every other old memory is named by exactly one summary."""
    store = shared_store
    user = "writer-user"
    scopes = [store.scope(user, f"agent-{n}", "s1") for n in range(3)]
    old = [
        r
        for n, scope in enumerate(scopes)
        for r in scope.add_many(f"old memory {i} of agent {n}" for i in range(150))
    ]
    make_old(store, [r.id for r in old])
    by_id = {r.id: r for r in old}
    # Cleanup pages up from the oldest (here: the lowest ids); the updaters work down from
    # the highest, so that some updates win and some lose their race with it.
    targets = sorted(random.Random(7).sample([r.id for r in old], 120), reverse=True)
    scope_of = {(s.agent, s.session): s for s in scopes}
    errors: list[str] = []
    updated: dict[int, int] = {}
    lost_race: list[int] = []
    added: list[int] = []
    done = threading.Event()
    start = threading.Barrier(5)

    def record_errors(work: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                start.wait(WAIT_SECONDS)
                work()
            except BaseException as error:  # noqa: BLE001 - reported by the test
                errors.append(repr(error))

        return run

    def add() -> None:
        number = 0
        while not done.is_set():
            added.append(scopes[0].add(f"new memory {number}").id)
            number += 1

    def update(ids: list[int]) -> None:
        for memory_id in ids:
            row = by_id[memory_id]
            scope = scope_of[(row.agent_id, row.session_id)]
            try:
                changed = scope.update(memory_id, version=1, content=f"updated {memory_id}")
            except NotFoundError:
                lost_race.append(memory_id)
            else:
                updated[memory_id] = changed.version

    reports = []

    def slow_summary(texts: Sequence[str]) -> str:
        time.sleep(0.002)  # outside any transaction: writers are not held up
        return extractive_summary(texts)

    def clean() -> None:
        reports.append(cleanup(store, batch_size=20, summarizer=slow_summary))

    threads = [
        threading.Thread(target=record_errors(add)),
        threading.Thread(target=record_errors(lambda: update(targets[0::2]))),
        threading.Thread(target=record_errors(lambda: update(targets[1::2]))),
        threading.Thread(target=record_errors(clean)),
    ]
    for thread in threads:
        thread.start()
    start.wait(WAIT_SECONDS)
    try:
        clean()
    finally:
        while any(thread.is_alive() for thread in threads[1:]):
            time.sleep(0.01)
        done.set()
        for thread in threads:
            thread.join(WAIT_SECONDS)

    assert errors == []
    assert len(reports) == 2 and all(report.status == "ok" for report in reports)
    rows = memory_rows(store)
    for memory_id, version in updated.items():
        assert memory_id in rows, f"memory {memory_id} was updated, then deleted"
        assert (rows[memory_id]["version"], rows[memory_id]["content"]) == (
            version,
            f"updated {memory_id}",
        )
    assert set(added) <= set(rows)
    named = [source for summary in summaries(store) for source in summary["sources"]]
    assert len(named) == len(set(named)), "an id is named by two summaries"
    assert set(named) == {r.id for r in old} - set(updated)
    assert set(lost_race) <= set(named)
    assert sum(report.counts["working_memories"] for report in reports) == len(named)
    assert updated, "no update won a race; the test proved nothing"


# -- the run log, failures and the worker ---------------------------------------------------------


def _broken_summarizer(texts: Sequence[str]) -> str:
    raise RuntimeError("the summarizer is down")


def test_a_failing_run_is_recorded_as_failed(store: Memory, user: str) -> None:
    scope = store.scope(user, "planner", "s1")
    old = scope.add("an old working memory")
    make_old(store, [old.id])
    expire(store, [scope.add("expired", tier="semantic", ttl=HOUR).id])

    with pytest.raises(RuntimeError, match="the summarizer is down"):
        cleanup(store, summarizer=_broken_summarizer)

    run = last_cleanup_run(store)
    assert run is not None
    assert run.status == "failed" and run.finished_at is not None
    assert run.error == "RuntimeError: the summarizer is down"
    # The step before the failure committed; the failed one changed nothing.
    assert run.counts == {**NO_CHANGES, "expired_memories": 1}
    assert set(memory_rows(store)) == {old.id}
    assert last_cleanup_run(store, status="ok") is None

    # A summarizer that returns something unusable fails the same way.
    with pytest.raises(InvalidInputError, match="summarizer returned unusable text"):
        cleanup(store, summarizer=lambda texts: "   ")
    assert set(memory_rows(store)) == {old.id}
    ok = cleanup(store, summarizer=lambda texts: " / ".join(texts))
    assert ok.counts["working_memories"] == 1
    assert last_cleanup_run(store, status="ok") == last_cleanup_run(store)


def test_the_worker_runs_in_the_background_until_stopped(shared_store: Memory) -> None:
    store = shared_store
    old = store.scope("ada", "planner", "s1").add("an old working memory")
    make_old(store, [old.id])

    worker = RetentionWorker(store, interval=0.02)
    worker.start()
    with pytest.raises(RuntimeError, match="already running"):
        worker.start()
    wait_until(lambda: worker.runs >= 2, "two runs")
    worker.stop(timeout=WAIT_SECONDS)

    assert not worker.running
    assert (worker.failures, worker.last_error) == (0, None)
    # The run that stop() caught, if any, ended early as interrupted; the others were ok.
    assert worker.last_report is not None
    assert worker.last_report.status in {"ok", "interrupted"}
    run = last_cleanup_run(store, status="ok")
    assert run is not None and run.finished_at is not None and run.error is None
    assert old.id not in memory_rows(store)
    (summary,) = summaries(store)
    assert summary["sources"] == [old.id]

    # Stopped workers can start again, and a context manager stops them.
    runs = worker.runs
    with worker:
        wait_until(lambda: worker.runs > runs, "one more run")
    assert not worker.running


def test_the_worker_records_failures_and_keeps_going(shared_store: Memory) -> None:
    store = shared_store
    old = store.scope("ada", "planner", "s1").add("an old working memory")
    make_old(store, [old.id])

    with RetentionWorker(store, interval=0.02, summarizer=_broken_summarizer) as worker:
        wait_until(lambda: worker.failures >= 2, "two failed runs")
        assert worker.running
        assert isinstance(worker.last_error, RuntimeError)  # every finished run failed

    assert not worker.running
    with store.engine.connect() as connection:
        failed = connection.execute(
            sa.text("SELECT COUNT(*) FROM maintenance_runs WHERE status = 'failed'")
        ).scalar_one()
    assert failed >= 2
    assert old.id in memory_rows(store)


def test_stopping_the_worker_interrupts_a_run_between_batches(shared_store: Memory) -> None:
    store = shared_store
    old = store.scope("ada", "planner", "s1").add_many(f"memory {n}" for n in range(30))
    make_old(store, [r.id for r in old])
    worker: RetentionWorker

    def summarize_then_stop(texts: Sequence[str]) -> str:
        worker.stop()  # from the worker's own thread: asks, does not wait
        return extractive_summary(texts)

    worker = RetentionWorker(store, interval=3600, summarizer=summarize_then_stop, batch_size=5)
    worker.start()
    wait_until(lambda: not worker.running, "the worker to stop")

    run = last_cleanup_run(store)
    assert run is not None and run.status == "interrupted"
    assert worker.last_report is not None and worker.last_report.status == "interrupted"
    assert (run.counts["working_memories"], run.counts["summaries"]) == (5, 1)
    assert len(memory_rows(store)) == 30 - 5 + 1


# -- validation and schema ----------------------------------------------------------------------


def test_invalid_policies_and_arguments_are_refused(store: Memory) -> None:
    with pytest.raises(InvalidInputError, match="unknown tier 'procedural'"):
        RetentionPolicy(tiers={"procedural": None})
    with pytest.raises(InvalidInputError, match=r"tiers\['working'\]: must be a non-negative"):
        RetentionPolicy(tiers={"working": -HOUR})
    with pytest.raises(InvalidInputError, match="session_state"):
        RetentionPolicy(session_state=24)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="batch_size"):
        cleanup(store, batch_size=0)
    with pytest.raises(InvalidInputError, match="now: must be a timezone-aware"):
        cleanup(store, now=datetime(2030, 1, 1))
    with pytest.raises(InvalidInputError, match="the policy does not summarize"):
        cleanup(store, RetentionPolicy(summarize=False), summarizer=extractive_summary)
    if store.backend == "sqlite" and store.engine.url.database in (None, "", ":memory:"):
        with pytest.raises(InvalidInputError, match=":memory:"):
            RetentionWorker(store)
    else:
        with pytest.raises(InvalidInputError, match="interval"):
            RetentionWorker(store, interval=0)
    assert last_cleanup_run(store) is None


def test_cleanup_needs_the_retention_revision(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = memory.ops.create_engine(url)
    try:
        memory.ops.upgrade(engine, "0005")
    finally:
        engine.dispose()
    with Memory.open(url, embedder=None) as store:
        with pytest.raises(SchemaError, match=f"revision {MEMORIES_REVISION}.*memctl migrate"):
            cleanup(store)
        with pytest.raises(SchemaError, match="memctl migrate"):
            last_cleanup_run(store)


# -- memctl cleanup -------------------------------------------------------------------------------


def _memctl(url: str, *args: str) -> Result:
    return CliRunner().invoke(main, ["--database-url", url, "cleanup", *args])


def test_memctl_cleanup(store_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # memctl opens the store with the default embedder; the hashing one is as good here.
    monkeypatch.setattr("memory.client.default_embedder", HashingEmbedder)
    with Memory.open(store_url, embedder=HashingEmbedder()) as store:
        _populate_everything(store, "ada")
        before = checksums(store)

    result = _memctl(store_url, "--dry-run", "--json")
    assert result.exit_code == 0, result.output
    dry = json.loads(result.stdout)
    assert (dry["dry_run"], dry["run_id"], dry["status"]) == (True, None, "ok")
    assert dry["counts"]["working_memories"] == 4
    result = _memctl(store_url, "--dry-run")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == "dry run, nothing changed; a cleanup would change:"
    assert [line.split() for line in lines[1:]] == [
        [name, str(count)] for name, count in dry["counts"].items()
    ]
    with Memory.open(store_url, embedder=HashingEmbedder()) as store:
        assert checksums(store) == before

    result = _memctl(store_url, "--json")
    assert result.exit_code == 0, result.output
    done = json.loads(result.stdout)
    assert done["counts"] == dry["counts"] and isinstance(done["run_id"], int)

    result = _memctl(store_url)
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0] == f"cleanup ok (run {done['run_id'] + 1}):"
    assert all(line.split()[1] == "0" for line in result.stdout.splitlines()[1:])

    # Shorter windows, and no summaries.
    with Memory.open(store_url, embedder=HashingEmbedder()) as store:
        scope = store.scope("ada", "planner", "s1")
        two_hours = scope.add("two hours old")
        make_old(store, [two_hours.id], hours=2)
        scope.save_state({"step": 9})
        age_checkpoints(store, "ada", "s1", [1], hours=2)
    result = _memctl(
        store_url,
        "--working-hours",
        "1",
        "--session-state-hours",
        "1.5",
        "--no-summarize",
        "--json",
    )
    assert result.exit_code == 0, result.output
    counts = json.loads(result.stdout)["counts"]
    assert (counts["working_memories"], counts["summaries"], counts["session_state"]) == (1, 0, 1)

    result = _memctl(store_url, "--working-hours", "-1")
    assert result.exit_code == 2
    assert "--working-hours" in result.stderr


def test_memctl_cleanup_reports_an_old_schema_in_one_line(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = memory.ops.create_engine(url)
    try:
        memory.ops.upgrade(engine, "0005")
    finally:
        engine.dispose()
    result = _memctl(url)
    assert result.exit_code == 1
    assert result.stderr.startswith(f"Error: retention needs schema revision {MEMORIES_REVISION}")
    assert "Traceback" not in result.output


# -- the extractive summarizer ------------------------------------------------------------------


def test_extractive_summary_keeps_the_informative_sentences_in_order() -> None:
    texts = [
        "ok.",
        "The migration of the orders table to PostgreSQL 16 failed on a lock timeout.",
        "thanks!",
        "We retried the orders migration after the nightly vacuum, and it finished.",
        "ok.",
    ]
    # Room for two sentences: the two that carry the content, in their original order.
    summary = extractive_summary(texts, max_chars=155)
    assert summary == "\n".join([texts[1], texts[3]])
    assert extractive_summary(texts, max_chars=155) == summary  # deterministic
    # With room to spare, a sentence adding any new term may join; one adding none never.
    assert extractive_summary(texts, max_chars=1000) == "\n".join(texts[1:4])
    assert extractive_summary(texts, max_chars=80) == texts[1]
    assert extractive_summary(["ok. ok. OK."]) == "ok."
    assert extractive_summary([]) == "" and extractive_summary(["  \n "]) == ""


def test_extractive_summary_cuts_a_sentence_too_long_for_the_budget() -> None:
    text = "A very long sentence that goes on and on about the same deploy problem"
    assert extractive_summary([text], max_chars=30) == "A very long sentence that…"
    assert extractive_summary([text], max_chars=1) == "…"
    with pytest.raises(ValueError, match="max_chars"):
        extractive_summary([text], max_chars=0)
    with pytest.raises(TypeError, match="sequence of strings"):
        extractive_summary(text)


@given(
    texts=st.lists(st.text(max_size=200), max_size=8),
    max_chars=st.integers(min_value=1, max_value=400),
)
def test_extractive_summary_properties(texts: list[str], max_chars: int) -> None:
    summary = extractive_summary(texts, max_chars=max_chars)
    assert len(summary) <= max_chars
    assert summary == extractive_summary(list(texts), max_chars=max_chars)
    assert bool(summary) == any(text.strip() for text in texts)
    if not summary.endswith("…"):
        flat = [" ".join(text.split()) for text in texts]
        lines = summary.split("\n") if summary else []
        positions = []
        for line in lines:
            assert any(line in text for text in flat), line
            positions.append(next(n for n, text in enumerate(flat) if line in text))
        assert positions == sorted(positions)
