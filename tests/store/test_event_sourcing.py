"""Event sourcing (issue 18): events carry sealed changes, a replay rebuilds the database
from them, point-in-time recovery, crypto-shredding, and the migration of older events.

Every test runs on a SQLite file and on the real PostgreSQL server, each source and
target a database of its own; the comparison is the backup module's table checksum of
every data table (the graph, the flags and their audit, the run log included; the derived
keyword terms and embeddings are rebuilt and compared too), except:

- ``memory_changes``, the change log the in-process index follows: derived, rebuilt with
  numbers of its own;
- the columns ``memories.access_count`` and ``memories.last_accessed_at``: read statistics,
  which reads (``Scope.get``) and injection's batched uses update without an event (an
  event per read would grow the log with the read rate, and they carry nothing a user
  wrote); a rebuilt database starts them from the last write of each memory.

Not covered yet: the hub's ``api_keys`` and ``idempotent_requests`` carry no change in any
event (compared here, but this workload writes none; a replay rebuilds neither).
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
from flags import BUILTIN_FLAGS
from memory import HashingEmbedder, InvalidInputError, Memory, MemoryStoreError
from memory.cli import main
from memory.store.archive import TableChecksum, table_checksums
from memory.store.backup import _data_tables
from memory.store.changes import EVENT_KEY_ENV, IN_SNAPSHOT, NOT_RECONSTRUCTIBLE
from memory.store.tables import SYNC_TABLES
from tests.stores import upgraded_from_phase_1

EVENT_KEY = "an-event-key-for-tests-only-0123456789abcdef"
BACKENDS = ["sqlite-file", "postgresql"]
# The sync tables are the node's own state, not replayed: a rebuilt database is a node of
# its own (memory.store.sync).
NOT_COMPARED = {"memory_changes", *SYNC_TABLES}
# Read statistics, changed without an event (see the module docstring).
NOT_REPLAYED_COLUMNS = {"memories": {"access_count", "last_accessed_at"}}
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
            columns = {
                name: [
                    column["name"]
                    for column in sa.inspect(connection).get_columns(name)
                    if column["name"] not in skipped
                ]
                for name, skipped in NOT_REPLAYED_COLUMNS.items()
            }
            return table_checksums(connection, names, columns)
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
    st.tuples(st.just("get"), st.sampled_from(USERS), st.integers(0, 9)),
    st.tuples(st.just("use"), st.sampled_from(USERS), st.integers(0, 9)),
    st.tuples(st.just("entity"), st.sampled_from(USERS), st.sampled_from("abc"),
              st.integers(0, 3)),
    st.tuples(st.just("relate"), st.sampled_from(USERS), st.sampled_from("abc"),
              st.sampled_from("abc")),
    st.tuples(st.just("unobserve"), st.sampled_from(USERS), st.sampled_from("abc"),
              st.integers(0, 3)),
    st.tuples(st.just("unrelate"), st.sampled_from(USERS), st.sampled_from("abc"),
              st.sampled_from("abc")),
    st.tuples(st.just("unentity"), st.sampled_from(USERS), st.sampled_from("abc")),
    st.tuples(st.just("flag"), st.just(""), st.sampled_from(sorted(BUILTIN_FLAGS)),
              st.integers(0, 100)),
    st.tuples(st.just("override"), st.just(""), st.sampled_from(sorted(BUILTIN_FLAGS)),
              st.sampled_from([True, False, None])),
)


def apply(store: Memory, step: tuple[Any, ...]) -> None:
    kind, user = step[0], step[1]
    if kind in ("flag", "override"):
        change_flag(store, step)
        return
    if kind in ("entity", "relate", "unobserve", "unrelate", "unentity"):
        change_graph(store, step)
        return
    scope = store.scope(user=user, agent="planner", session=f"s-{user}")
    mine = scope.list(limit=50)
    try:
        if kind == "get" and mine:
            scope.get(mine[step[2] % len(mine)].id)
        elif kind == "use":
            found = scope.find_patterns()
            if found:
                scope.use_pattern(found[step[2] % len(found)].id)
        elif kind == "add":
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


def change_graph(store: Memory, step: tuple[Any, ...]) -> None:
    kind, user = step[0], step[1]
    graph = store.graph(user)
    try:
        if kind == "entity":
            name = f"{step[2]} {CANARY}"
            graph.create_entities([{"name": name, "entityType": "thing",
                                    "observations": [f"seen {step[3]}"]}])
            graph.add_observations([{"entityName": name, "contents": [f"heard {step[3]}"]}])
        elif kind == "relate":
            graph.create_relations([{"from": f"{step[2]} {CANARY}", "to": f"{step[3]} {CANARY}",
                                     "relationType": "knows"}])
        elif kind == "unobserve":
            graph.delete_observations([{"entityName": f"{step[2]} {CANARY}",
                                        "observations": [f"seen {step[3]}"]}])
        elif kind == "unrelate":
            graph.delete_relations([{"from": f"{step[2]} {CANARY}", "to": f"{step[3]} {CANARY}",
                                     "relationType": "knows"}])
        else:
            graph.delete_entities([f"{step[2]} {CANARY}"])
    except MemoryStoreError:
        pass  # a relation between entities that do not exist is refused and writes nothing


def change_flag(store: Memory, step: tuple[Any, ...]) -> None:
    if step[0] == "flag":
        memory.ops.set_flag(store.engine, step[2], rollout=step[3], actor="ops", force=True)
    else:
        memory.ops.override_flag(store.engine, step[2], session="s-ada", on=step[3],
                                 clear=step[3] is None, actor="ops")


# Every kind of step once, deletions included, besides the random ones.
EVERY_STEP = [
    ("add", "ada", 1, "episodic", True), ("add", "ada", 2, "working", True),
    ("update", "ada", 0, 3), ("delete", "ada", 1), ("pref", "ada", "x", 1),
    ("pref", "ada", "y", 2), ("unpref", "ada", "x"), ("state", "ada", 1), ("state", "ada", 2),
    ("pattern", "ada", "p"), ("pattern", "ada", "p"), ("share", "ada", 0), ("share", "ada", 0),
    ("revoke", "ada", 0), ("get", "ada", 0), ("use", "ada", 0),
    ("entity", "ada", "a", 1), ("entity", "ada", "b", 2), ("entity", "ada", "a", 2),
    ("relate", "ada", "a", "b"), ("relate", "ada", "b", "a"), ("unobserve", "ada", "a", 1),
    ("unrelate", "ada", "b", "a"), ("entity", "ada", "c", 0), ("relate", "ada", "c", "a"),
    ("unentity", "ada", "a"), ("flag", "", "USE_ENHANCED_INJECTION", 40),
    ("override", "", "USE_ENHANCED_INJECTION", True),
    ("override", "", "USE_ENHANCED_INJECTION", None),
    ("add", BOB, 1, "working", True), ("pref", BOB, "z", 3), ("entity", BOB, "a", 1),
]


@settings(max_examples=5, deadline=None, suppress_health_check=list(HealthCheck))
@example(steps=EVERY_STEP, cut=18, forget=False)
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
    # Ada's note, and the flags a new store starts with (one event each).
    assert replayed.ok and replayed.forgotten == 4
    assert replayed.applied == 1 + len(BUILTIN_FLAGS), replayed.as_dict()
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

# A new store's log starts with one event per flag it switches on; the memories' events
# follow, and the third memory's is tampered with.
SEEDED = len(BUILTIN_FLAGS)
BAD = SEEDED + 3
TAMPERING = {
    "edited": [f"UPDATE memory_events SET agent_id = 'intruder' WHERE seq = {BAD}"],
    "deleted": [f"DELETE FROM memory_events WHERE seq = {BAD}"],
    "reordered": [
        f"UPDATE memory_events SET seq = -1 WHERE seq = {BAD}",
        f"UPDATE memory_events SET seq = {BAD} WHERE seq = {BAD + 1}",
        f"UPDATE memory_events SET seq = {BAD + 1} WHERE seq = -1",
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
    assert report.broken is not None and report.broken.first_bad_seq == BAD, report.as_dict()
    assert (report.events, report.last_seq) == (BAD - 1, BAD - 1)
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
    assert '"ok": true' in result.stdout
    assert f'"applied": {1 + len(BUILTIN_FLAGS)},' in result.stdout


# -- the migration of older events ------------------------------------------------------------


def test_replay_across_the_migration_of_older_events(
    new_url: Callable[[], str], tmp_path: Path
) -> None:
    """A store used before revision 0012 (a Phase 1 graph, then memories, preferences, a
    deleted memory and flags, with identifier-only events), upgraded: the old events keep
    their bytes, the chain verifies, and a replay of the log rebuilds the database."""
    source, target = new_url(), new_url()
    upgraded_from_phase_1(source)
    with _open(source) as store:
        for step in [("add", "ada", 1, "working", True), ("pref", "ada", "x", 1),
                     ("add", "ada", 2, "semantic", False), ("delete", "ada", 0),
                     ("state", "ada", 1), ("pattern", "ada", "p"), ("share", "ada", 0),
                     ("flag", "", "USE_HIERARCHICAL_TIERS", 30)]:
            apply(store, step)
    # Down to the revision before 0012 (the sealed changes go to the archive and the chain
    # is re-hashed without them): the log holds identifiers and digests only.
    memory.ops.rollback(source, "0011", tmp_path / "archive")
    before = _event_rows(source)
    assert before and all("change_sealed" not in row for row in before)

    memory.ops.migrate(source)
    after = _event_rows(source)
    # The old events' bytes are as they were; only their mark is new.
    assert [_without_change(row) for row in after[: len(before)]] == [
        _without_change(row) for row in before
    ]
    assert [(row["hash"], row["prev_hash"]) for row in after[: len(before)]] == [
        (row["hash"], row["prev_hash"]) for row in before
    ]
    marks = [row["change_format"] for row in after[: len(before)]]
    assert set(marks) == {IN_SNAPSHOT, NOT_RECONSTRUCTIBLE}, marks
    snapshots = [row for row in after[len(before):] if row["operation"] == "events.snapshot"]
    assert snapshots and all(row["change_sealed"] for row in snapshots)
    assert CANARY not in _all_text(source, "memory_events")
    with _open(source) as store:
        assert store.verify_events().ok
        apply(store, ("add", "ada", 3, "working", False))
        apply(store, ("entity", "ada", "b", 1))

    report = memory.ops.replay(source, target, embedder=HashingEmbedder())
    assert report.ok and report.in_snapshot == marks.count(IN_SNAPSHOT), report.as_dict()
    # The deleted memory's add and delete cannot be reconstructed, and need not be.
    assert report.without_change.get("memory.delete") == 1, report.as_dict()
    assert checksums(target) == checksums(source)
    with _open(target) as rebuilt:
        assert rebuilt.verify_events().ok
        assert [entity.name for entity in rebuilt.graph("ada").read_graph().entities] == [
            "Ada", f"b {CANARY}"
        ]

    # Downgrade keeps every event (the snapshot's too) and takes the marks back.
    memory.ops.rollback(source, "-1", tmp_path / "archive-2")
    kept = _event_rows(source)
    assert [row["seq"] for row in kept] == [row["seq"] for row in _event_rows(target)]
    assert IN_SNAPSHOT not in {row["change_format"] for row in kept}


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


# -- rotating the deployment's event key ------------------------------------------------------

NEW_EVENT_KEY = "a-new-event-key-for-tests-only-fedcba9876543210"


def test_rotating_the_event_key_rewraps_the_data_keys_and_leaves_the_events(
    new_url: Callable[[], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    source, target, stale = new_url(), new_url(), new_url()
    with _open(source) as store:
        for step in EVERY_STEP[:4]:
            apply(store, step)
        apply(store, ("add", BOB, 1, "working", True))
        store.forget_user(BOB)
    log, wrapped = _event_rows(source), _all_text(source, "memory_event_keys")

    monkeypatch.setenv("MEMORY_NEW_EVENT_KEY", NEW_EVENT_KEY)
    result = CliRunner().invoke(
        main, ["--database-url", source, "events", "rotate-key", "--json"]
    )
    assert result.exit_code == 0, result.output
    assert '"rewrapped": 2' in result.stdout  # ada's key and the operator's (the flags)
    assert _event_rows(source) == log  # not one byte of the log changed
    assert _all_text(source, "memory_event_keys") != wrapped

    # The old key no longer opens them; the new one does, and the chain verifies.
    with pytest.raises(MemoryStoreError, match="does not open"):
        memory.ops.replay(source, stale, embedder=None)
    monkeypatch.setenv(EVENT_KEY_ENV, NEW_EVENT_KEY)
    report = memory.ops.replay(source, target, embedder=HashingEmbedder())
    assert report.ok and report.forgotten == 1, report.as_dict()
    assert checksums(target) == checksums(source)
    with _open(source) as store:
        assert store.verify_events().ok


def test_a_rotation_that_cannot_open_a_key_changes_nothing(
    new_url: Callable[[], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    source = new_url()
    with _open(source) as store:
        apply(store, ("add", "ada", 1, "working", False))
    wrapped = _all_text(source, "memory_event_keys")
    monkeypatch.setenv(EVENT_KEY_ENV, "not-the-key-the-data-keys-are-wrapped-with")
    monkeypatch.setenv("MEMORY_NEW_EVENT_KEY", NEW_EVENT_KEY)
    with pytest.raises(MemoryStoreError, match="does not open"):
        memory.ops.rotate_event_key(source)
    assert _all_text(source, "memory_event_keys") == wrapped


@pytest.mark.parametrize(
    ("environ", "problem"),
    [
        ({"MEMORY_NEW_EVENT_KEY": NEW_EVENT_KEY}, "MEMORY_EVENT_KEY is not set"),
        ({EVENT_KEY_ENV: EVENT_KEY}, "MEMORY_NEW_EVENT_KEY is not set"),
        ({EVENT_KEY_ENV: EVENT_KEY, "MEMORY_NEW_EVENT_KEY": "short"},
         "MEMORY_NEW_EVENT_KEY: the event key must be at least 32 characters"),
        ({EVENT_KEY_ENV: EVENT_KEY, "MEMORY_NEW_EVENT_KEY": EVENT_KEY}, "is the current key"),
    ],
    ids=["no-current-key", "no-new-key", "short-new-key", "same-key"],
)
def test_a_rotation_refuses_bad_keys(
    tmp_path: Path, environ: dict[str, str], problem: str
) -> None:
    url = f"sqlite:///{tmp_path / 'db.db'}"
    with _open(url) as store:
        apply(store, ("add", "ada", 1, "working", False))
    wrapped = _all_text(url, "memory_event_keys")
    with pytest.raises(InvalidInputError, match=problem):
        memory.ops.rotate_event_key(url, environ)
    assert _all_text(url, "memory_event_keys") == wrapped
