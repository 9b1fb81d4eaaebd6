"""Event sourcing (issue 18): events carry sealed changes, a replay rebuilds the database
from them, point-in-time recovery, crypto-shredding, and the migration of older events.

Every test runs on a SQLite file and on the real PostgreSQL server, each source and
target a database of its own; the comparison is the backup module's table checksum of
every data table, except the change log ``memory_changes`` (derived, with numbers of its
own, rebuilt) and the tables no event covers yet: the flag tables (flag changes are audited
in ``flag_audit``, not in the event log; a new store seeds them) and ``maintenance_runs``
(the record of retention runs, whose changes are events).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import memory.ops
from memory import HashingEmbedder, Memory, MemoryStoreError
from memory.cli import main
from memory.store.archive import TableChecksum, table_checksums
from memory.store.backup import _data_tables
from memory.store.changes import EVENT_KEY_ENV
from memory.store.events import event_table, verify_chain
from memory.store.tables import SYNC_TABLES

EVENT_KEY = "an-event-key-for-tests-only-0123456789abcdef"
BACKENDS = ["sqlite-file", "postgresql"]
# The sync tables are the node's own state, not replayed: a rebuilt database is a node of
# its own (memory.store.sync).
NOT_COMPARED = {
    "memory_changes", "flag_state", "flag_audit", "flag_session_overrides", "maintenance_runs",
    *SYNC_TABLES,
}
CANARY = "canary-7f3a9c-zanzibar"


@pytest.fixture(scope="module", autouse=True)
def _event_key() -> Iterator[None]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(EVENT_KEY_ENV, EVENT_KEY)
        yield


@pytest.fixture(params=BACKENDS)
def new_url(request: pytest.FixtureRequest) -> Iterator[Callable[[], str]]:
    """A factory of new, empty databases on the backend."""
    directory = Path(tempfile.mkdtemp(prefix="tiered-memory-replay-"))
    count = iter(range(10**6))
    if request.param == "postgresql":
        make: Callable[[], str] = request.getfixturevalue("make_postgres_database")
        yield make
    else:
        yield lambda: f"sqlite:///{directory / f'db{next(count)}.db'}"
    for path in directory.iterdir():
        path.unlink()
    directory.rmdir()


def _open(url: str) -> Memory:
    return Memory.open(url, embedder=HashingEmbedder(), role="admin")


def checksums(url: str) -> dict[str, TableChecksum]:
    engine = memory.ops.create_engine(url)
    try:
        with engine.connect() as connection:
            names = [name for name in _data_tables(connection) if name not in NOT_COMPARED]
            return table_checksums(connection, names)
    finally:
        engine.dispose()


def head(url: str) -> int:
    engine = memory.ops.create_engine(url)
    try:
        with engine.connect() as connection:
            return int(connection.execute(sa.text("SELECT max(seq) FROM memory_events")).scalar()
                       or 0)
    finally:
        engine.dispose()


def execute(url: str, statement: str) -> None:
    engine = memory.ops.create_engine(url)
    try:
        with engine.begin() as connection:
            connection.execute(sa.text(statement))
    finally:
        engine.dispose()


# -- a workload of random operations --------------------------------------------------------

# The forgotten user's id has a '-', which base64 (the sealed changes) never produces, so a
# search of the log's text for it cannot match ciphertext by chance.
BOB = "bob-forgotten"
USERS = ("ada", BOB)
operation = st.one_of(
    st.tuples(st.just("add"), st.sampled_from(USERS), st.integers(0, 5),
              st.sampled_from(["working", "episodic", "semantic"]), st.booleans()),
    st.tuples(st.just("update"), st.sampled_from(USERS), st.integers(0, 9), st.integers(0, 5)),
    st.tuples(st.just("delete"), st.sampled_from(USERS), st.integers(0, 9)),
    st.tuples(st.just("pref"), st.sampled_from(USERS), st.sampled_from("xyz"), st.integers()),
    st.tuples(st.just("unpref"), st.sampled_from(USERS), st.sampled_from("xyz")),
    st.tuples(st.just("state"), st.sampled_from(USERS), st.integers(0, 3)),
    st.tuples(st.just("pattern"), st.sampled_from(USERS), st.sampled_from("pq")),
    st.tuples(st.just("share"), st.sampled_from(USERS), st.integers(0, 9)),
    st.tuples(st.just("revoke"), st.sampled_from(USERS), st.integers(0, 9)),
)


def apply(store: Memory, step: tuple[Any, ...]) -> None:
    kind, user = step[0], step[1]
    scope = store.scope(user=user, agent="planner", session=f"s-{user}")
    mine = scope.list(limit=50)
    try:
        if kind == "add":
            scope.add(f"note {step[2]} of {user} {CANARY}", tier=step[3],
                      metadata={"canary": CANARY, "n": step[2]} if step[4] else None)
        elif kind == "update" and mine:
            record = mine[step[2] % len(mine)]
            scope.update(record.id, version=record.version, content=f"edited {step[3]} {user}",
                         metadata={"v": step[3]})
        elif kind == "delete" and mine:
            scope.delete(mine[step[2] % len(mine)].id)
        elif kind == "pref":
            scope.set_preference(step[2], {"value": step[3], "canary": CANARY})
        elif kind == "unpref":
            scope.delete_preference(step[2])
        elif kind == "state":
            scope.save_state({"step": step[2], "canary": CANARY})
        elif kind == "pattern":
            scope.record_pattern("python", f"pattern-{step[2]}", f"print('{CANARY}')")
        elif kind == "share" and mine:
            scope.share(memory_id=mine[step[2] % len(mine)].id, agents=["helper"])
        elif kind == "revoke":
            grants = scope.grants()
            if grants:
                scope.revoke(grants[step[2] % len(grants)].id)
    except MemoryStoreError:
        pass  # a refused step (a duplicate, nothing to delete) changes nothing


# Every kind of step once, deletions included, besides the random ones.
EVERY_STEP = [
    ("add", "ada", 1, "episodic", True), ("add", "ada", 2, "working", True),
    ("update", "ada", 0, 3), ("delete", "ada", 1), ("pref", "ada", "x", 1),
    ("pref", "ada", "y", 2), ("unpref", "ada", "x"), ("state", "ada", 1), ("state", "ada", 2),
    ("pattern", "ada", "p"), ("pattern", "ada", "p"), ("share", "ada", 0), ("share", "ada", 0),
    ("revoke", "ada", 0), ("add", BOB, 1, "working", True), ("pref", BOB, "z", 3),
]


@settings(max_examples=5, deadline=None, suppress_health_check=list(HealthCheck))
@example(steps=EVERY_STEP, cut=7, forget=False)
@example(steps=EVERY_STEP, cut=3, forget=True)
@given(
    steps=st.lists(operation, min_size=1, max_size=16),
    cut=st.integers(0, 15),
    forget=st.booleans(),
)
def test_replay_of_a_random_workload_equals_the_database(
    new_url: Callable[[], str], steps: list[tuple[Any, ...]], cut: int, forget: bool
) -> None:
    source, full, partial = new_url(), new_url(), new_url()
    snapshot: tuple[int, dict[str, TableChecksum]] | None = None
    with _open(source) as store:
        for index, step in enumerate(steps):
            apply(store, step)
            if index == min(cut, len(steps) - 1):
                snapshot = head(source), checksums(source)
        if forget:
            store.forget_user(BOB)
        assert store.verify_events().ok

    report = memory.ops.replay(source, full, embedder=HashingEmbedder())
    assert report.ok and report.without_change == {}, report.as_dict()
    assert checksums(full) == checksums(source)

    # The database as it was at a point in the log (a forget after it removes the user's
    # rows there too: their keys are gone, so only a forget-free log is compared).
    assert snapshot is not None
    if not forget:
        seq, expected = snapshot
        report = memory.ops.replay(
            source, partial, memory.ops.ReplayPoint(seq=seq), embedder=HashingEmbedder()
        )
        assert report.ok and report.last_seq == seq
        assert checksums(partial) == expected


def test_replay_after_retention_equals_the_database(new_url: Callable[[], str]) -> None:
    """Retention's removals, its summaries and removed checkpoints are replayed too."""
    source, target = new_url(), new_url()
    with _open(source) as store:
        scope = store.scope(user="ada", agent="planner", session="s-ada")
        for n in range(6):
            scope.add(f"working note {n} {CANARY}", metadata={"n": n})
        scope.add("kept for an hour", ttl=timedelta(hours=1), tier="semantic")
        for step in range(3):
            scope.save_state({"step": step})
        later = datetime.now(UTC) + timedelta(days=30)
        report = memory.ops.cleanup(
            store, memory.ops.RetentionPolicy(session_state=timedelta(days=1)), now=later
        )
        assert sum(report.counts.values()) >= 7, report.counts
    replayed = memory.ops.replay(source, target, embedder=HashingEmbedder())
    assert replayed.ok and replayed.without_change == {}, replayed.as_dict()
    assert checksums(target) == checksums(source)


# -- forgetting: crypto-shredding --------------------------------------------------------------


def _all_text(url: str, table: str) -> str:
    engine = memory.ops.create_engine(url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(sa.text(f"SELECT * FROM {table}")).all()
    finally:
        engine.dispose()
    return "\n".join(repr(tuple(row)) for row in rows)


def test_forget_shreds_the_key_and_replay_leaves_no_trace(new_url: Callable[[], str]) -> None:
    source, target = new_url(), new_url()
    with _open(source) as store:
        for step in [("add", BOB, 1, "working", True), ("pref", BOB, "x", 1),
                     ("state", BOB, 1), ("pattern", BOB, "p"), ("add", "ada", 2, "working",
                                                                  False)]:
            apply(store, step)
        assert CANARY not in _all_text(source, "memory_events")  # sealed, not in clear
        assert BOB in _all_text(source, "memory_event_keys")
        report = store.forget_user(BOB)
        assert report.rows["memory_event_keys"] == 1
        assert store.verify_events().ok
    log = _all_text(source, "memory_events")
    assert CANARY not in log and BOB not in log
    assert BOB not in _all_text(source, "memory_event_keys")

    replayed = memory.ops.replay(source, target, embedder=HashingEmbedder())
    assert replayed.ok and replayed.forgotten == 4 and replayed.applied == 1
    for table in checksums(target):
        text = _all_text(target, table)
        assert CANARY not in text or table == "memories", table  # ada's note has the canary
        assert BOB not in text, table
    with _open(target) as rebuilt:
        assert rebuilt.verify_events().ok
        assert rebuilt.scope(user=BOB, agent="planner").list() == []


def test_a_replay_with_another_event_key_is_refused_and_writes_nothing(
    new_url: Callable[[], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    source, target = new_url(), new_url()
    with _open(source) as store:
        apply(store, ("add", "ada", 1, "working", False))
    monkeypatch.setenv(EVENT_KEY_ENV, "x" * 40)
    with pytest.raises(MemoryStoreError, match="does not open"):
        memory.ops.replay(source, target, embedder=None)
    assert {checksum.rows for checksum in checksums(target).values()} == {0}


# -- tampering stops the replay ----------------------------------------------------------------

TAMPERING = {
    "edited": ["UPDATE memory_events SET agent_id = 'intruder' WHERE seq = 3"],
    "deleted": ["DELETE FROM memory_events WHERE seq = 3"],
    "reordered": [
        "UPDATE memory_events SET seq = -1 WHERE seq = 3",
        "UPDATE memory_events SET seq = 3 WHERE seq = 4",
        "UPDATE memory_events SET seq = 4 WHERE seq = -1",
    ],
}


@pytest.mark.parametrize("how", sorted(TAMPERING))
def test_a_tampered_event_stops_the_replay_there(new_url: Callable[[], str], how: str) -> None:
    source, target = new_url(), new_url()
    with _open(source) as store:
        for n in range(5):
            apply(store, ("add", "ada", n, "working", False))
    for statement in TAMPERING[how]:
        execute(source, statement)
    report = memory.ops.replay(source, target, embedder=None)
    assert report.broken is not None and report.broken.first_bad_seq == 3, report.as_dict()
    assert (report.events, report.last_seq) == (2, 2)
    assert checksums(target)["memories"].rows == 2


# -- point-in-time recovery: a backup, then the events after it -----------------------------


def test_restore_then_replay_reaches_a_point_after_the_backup(
    new_url: Callable[[], str], tmp_path: Path
) -> None:
    source, target = new_url(), new_url()
    with _open(source) as store:
        apply(store, ("add", "ada", 1, "working", True))
        memory.ops.backup(source, tmp_path / "backup")
        apply(store, ("pref", "ada", "x", 5))
        apply(store, ("add", "ada", 2, "semantic", False))
        point, expected = head(source), checksums(source)
        apply(store, ("delete", "ada", 0))
    result = CliRunner().invoke(
        main,
        ["--database-url", target, "restore", str(tmp_path / "backup"),
         "--replay-until", str(point), "--events-from", source, "--no-reembed", "--json"],
    )
    assert result.exit_code == 0, result.output
    assert f'"last_seq": {point}' in result.stdout
    got = checksums(target)
    assert {name: got[name] for name in expected if name != "memory_embeddings"} == {
        name: value for name, value in expected.items() if name != "memory_embeddings"
    }


def test_memctl_replay_json_and_bad_until(new_url: Callable[[], str]) -> None:
    source, target = new_url(), new_url()
    with _open(source) as store:
        apply(store, ("add", "ada", 1, "working", False))
    runner = CliRunner()
    result = runner.invoke(
        main, ["--database-url", source, "replay", "--to", target, "--until", "yesterday"]
    )
    assert result.exit_code == 1 and "--until 'yesterday'" in result.output
    assert "Traceback" not in result.output
    result = runner.invoke(
        main, ["--database-url", source, "replay", "--to", target, "--no-reembed", "--json"]
    )
    assert result.exit_code == 0, result.output
    assert '"ok": true' in result.stdout and '"applied": 1' in result.stdout


# -- the migration of older events ------------------------------------------------------------


def test_replay_across_the_migration_of_older_events(
    new_url: Callable[[], str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source, target = new_url(), new_url()
    with _open(source) as store:
        apply(store, ("add", "ada", 1, "working", True))
        apply(store, ("pref", "ada", "x", 1))
    before = _event_rows(source)
    # Down to 0011: the sealed changes and keys go to the archive, the chain is re-hashed.
    memory.ops.rollback(source, "0011", tmp_path / "archive")
    assert (tmp_path / "archive" / "memory_event_changes.jsonl").read_text().count("\n") == 2
    engine = memory.ops.create_engine(source)
    with engine.connect() as connection:
        assert verify_chain(connection, event_table(with_target_digest=True)).ok
    engine.dispose()
    assert [_without_change(row) for row in _event_rows(source)] == [
        _without_change(row) for row in before
    ]
    memory.ops.migrate(source)
    assert {row["change_format"] for row in _event_rows(source)} == {0}
    with _open(source) as store:
        assert store.verify_events().ok
        apply(store, ("add", "ada", 2, "working", False))
    report = memory.ops.replay(source, target, embedder=None)
    assert report.ok and report.applied == 1
    assert report.without_change == {"memory.add": 1, "preference.set": 1}
    with _open(target) as rebuilt:
        assert rebuilt.verify_events().ok


def _event_rows(url: str) -> list[dict[str, Any]]:
    engine = memory.ops.create_engine(url)
    try:
        with engine.connect() as connection:
            return [
                dict(row)
                for row in connection.execute(
                    sa.text("SELECT * FROM memory_events ORDER BY seq")
                ).mappings()
            ]
    finally:
        engine.dispose()


def _without_change(row: dict[str, Any]) -> dict[str, Any]:
    return {
        name: value
        for name, value in row.items()
        if name not in {"hash", "prev_hash", "change_format", "change_sealed"}
    }
