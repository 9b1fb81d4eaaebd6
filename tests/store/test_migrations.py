"""The migrations: standard Alembic checks, data kept through every upgrade and downgrade,
archives that bring dropped rows back, the Phase 1 API unchanged by revision 0004, and the
``memctl`` commands an operator runs.

Every test runs on a SQLite file and on PostgreSQL, each with a database of its own.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner, Result
from pytest_alembic.tests import (  # noqa: F401 - collected as tests of this module
    test_model_definitions_match_ddl,
    test_single_head_revision,
    test_up_down_consistency,
    test_upgrade,
)

import memory
import memory.ops
from memory import ArchiveError, HashingEmbedder, Memory, MemoryStoreError, SchemaError
from memory.cli import main
from memory.store.events import ChainReport, event_table, rechain, verify_chain
from memory.store.schema import alembic_config as packaged_alembic_config
from memory.store.schema import database_revision
from memory.store.tables import PHASE_1_TABLES, PHASE_2_TABLES, Base

# Migrations change what is on disk, so the in-process SQLite database is left out.
PERSISTENT_BACKENDS = ["sqlite-file", "postgresql"]
PHASE_1_REVISION = "0003"
PHASE_2_REVISION = "0004"
TIERS = ("working", "episodic", "semantic")
USERS = ("ada", "grace", "zoë")
# 3 users x 100 entities x 34 observations = 10,200 observations.
ENTITIES_PER_USER = 100
OBSERVATIONS_PER_ENTITY = 34


def _fresh_database_url(backend: str, tmp_path: Path, request: pytest.FixtureRequest,
                        name: str = "memory.db") -> str:
    """A database nobody else uses: a new SQLite file, or a new PostgreSQL database."""
    if backend == "sqlite-file":
        return f"sqlite:///{tmp_path / name}"
    assert backend == "postgresql", backend
    make_database: Callable[[], str] = request.getfixturevalue("make_postgres_database")
    return make_database()


@pytest.fixture(params=PERSISTENT_BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def database_url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """An empty database of its own for each test."""
    return _fresh_database_url(backend, tmp_path, request)


@pytest.fixture
def engine(database_url: str) -> Iterator[sa.Engine]:
    engine = memory.ops.create_engine(database_url)
    yield engine
    engine.dispose()


# -- pytest-alembic's standard checks ------------------------------------------------------------


@pytest.fixture
def alembic_config() -> Any:
    """The packaged scripts, exactly as ``memctl`` finds them."""
    return packaged_alembic_config()


@pytest.fixture
def alembic_engine(database_url: str) -> Iterator[sa.Engine]:
    """The engine pytest-alembic hands to ``env.py``, configured exactly as ``memctl``'s."""
    engine = memory.ops.create_engine(database_url)
    try:
        yield engine
    finally:
        engine.dispose()


# -- helpers ------------------------------------------------------------------------------------


def _table_names(engine: sa.Engine) -> set[str]:
    """The tables whose rows must survive: not Alembic's, not the index-change log (a log
    of events, rebuilt with new sequence numbers), not FTS5's internal tables."""
    with engine.connect() as connection:
        names = set(sa.inspect(connection).get_table_names())
    return {
        name
        for name in names
        if name not in {"alembic_version", "memory_changes"} and not name.startswith("memory_fts")
    }


def _checksums(
    engine: sa.Engine, tables: Iterable[str] | None = None
) -> dict[str, memory.ops.TableChecksum]:
    """Checksums of ``tables``, by default of every table the database holds now."""
    names = sorted(_table_names(engine)) if tables is None else list(tables)
    with engine.connect() as connection:
        return memory.ops.table_checksums(connection, names)


def _observation_text(user: str, entity: int, number: int) -> str:
    return f"observation {number} of entity {entity} for {user}: naïve café ☕, 日本語, Ωμέγα"


def _populate_phase_1(url: str) -> int:
    """Load every user's graph through the public API; returns the observations stored."""
    stored = 0
    with Memory.open(url, embedder=HashingEmbedder()) as store:
        for user in USERS:
            graph = store.graph(user)
            created = graph.create_entities(
                {
                    "name": f"entity-{index:03d} – Ünïcødé 日本",
                    "entityType": ("person", "project", "ツール")[index % 3],
                    "observations": [
                        _observation_text(user, index, number)
                        for number in range(OBSERVATIONS_PER_ENTITY)
                    ],
                }
                for index in range(ENTITIES_PER_USER)
            )
            assert len(created) == ENTITIES_PER_USER
            stored += sum(len(entity.observations) for entity in created)
            name = [entity.name for entity in created]
            graph.create_relations(
                [
                    {"from": name[i], "to": name[(i + 1) % len(name)], "relationType": "knows"}
                    for i in range(len(name))
                ]
                + [
                    {"from": name[i], "to": name[(i * 7 + 3) % len(name)],
                     "relationType": "dépend de"}
                    for i in range(len(name))
                ]
            )
            # Deletions leave gaps in the ids, which archives and restores must keep.
            graph.delete_observations(
                [{"entityName": name[5], "observations": [_observation_text(user, 5, 0)]}]
            )
            graph.delete_relations([{"from": name[1], "to": name[2], "relationType": "knows"}])
            graph.delete_entities([name[50]])
            stored -= 1 + OBSERVATIONS_PER_ENTITY
            graph.add_observations(
                [{"entityName": name[0], "contents": ["added later – ✓", "another one"]}]
            )
            stored += 2
    return stored


def _populate_phase_2(url: str) -> dict[str, int]:
    """Store memories (with metadata, in every tier), preferences, code patterns and session
    state for several users; returns the largest id used in each table that has ids."""
    largest: dict[str, int] = {"memories": 0, "code_patterns": 0}
    with Memory.open(url, embedder=HashingEmbedder()) as store:
        for number, user in enumerate(USERS):
            scope = store.scope(user=user, agent="planner", session=f"session-{number}")
            records = scope.add_many(
                {
                    "content": f"{tier} memory {index} of {user} – “quoted” ✓ 漢字",
                    "tier": tier,
                    "importance": round(0.1 + 0.2 * index, 2),
                    "visibility": ("private", "shared")[index % 2],
                    "metadata": {"topic": f"tópico-{index}", "index": index, "tier": tier,
                                 "nested": {"list": [1, 2.5, None, "ü"]}},
                    "ttl": timedelta(hours=12) if tier == "working" else None,
                }
                for tier in TIERS
                for index in range(4)
            )
            scope.update(records[0].id, version=records[0].version,
                         content=f"updated memory of {user} – é", metadata={"edited": True})
            scope.get(records[2].id)  # counts an access
            scope.delete(records[1].id)  # a gap in the ids
            largest["memories"] = max(largest["memories"], *(record.id for record in records))
            scope.set_preference("language", "Français – ça va", confidence=0.75)
            scope.set_preference("style", {"verbosity": "short", "emoji": "🙂"})
            scope.set_preference("style", {"verbosity": "long"})  # an update in place
            pattern = scope.record_pattern(
                "python", f"retry-{user}", "for attempt in range(3):\n    try_it()",
                description="Réessayer avec une attente", tags=["retry", "résilience"],
            )
            scope.use_pattern(pattern.id)
            largest["code_patterns"] = max(largest["code_patterns"], pattern.id)
            scope.save_state({"step": 1, "plan": ["lire", "écrire"]})
            scope.save_state({"step": 2, "note": "終わり"}, ttl=timedelta(hours=1))
    return largest


def _manifest(directory: Path) -> dict[str, Any]:
    manifest: dict[str, Any] = json.loads((directory / "manifest.json").read_text("utf-8"))
    return manifest


# -- data survives every migration --------------------------------------------------------------


@pytest.mark.slow
def test_data_survives_upgrade_downgrade_and_restore(
    engine: sa.Engine, database_url: str, tmp_path: Path
) -> None:
    memory.ops.upgrade(engine, PHASE_1_REVISION)
    assert database_revision(engine) == PHASE_1_REVISION
    stored = _populate_phase_1(database_url)
    phase_1 = _checksums(engine, PHASE_1_TABLES)
    assert phase_1["observations"].rows == stored >= 10_000
    assert phase_1["entities"].rows == len(USERS) * (ENTITIES_PER_USER - 1)
    assert phase_1["relations"].rows > 0

    memory.ops.upgrade(engine)
    assert database_revision(engine) == memory.ops.head_revision()
    assert _checksums(engine, PHASE_1_TABLES) == phase_1

    largest = _populate_phase_2(database_url)
    before = _checksums(engine)
    assert set(PHASE_2_TABLES) <= set(before)
    assert all(before[name].rows > 0 for name in PHASE_2_TABLES), before

    archive = tmp_path / "archive"
    memory.ops.downgrade(engine, PHASE_1_REVISION, archive)
    assert database_revision(engine) == PHASE_1_REVISION
    assert _table_names(engine) == set(PHASE_1_TABLES)
    assert _checksums(engine, PHASE_1_TABLES) == phase_1
    manifest = _manifest(archive)
    assert set(PHASE_2_TABLES) <= set(manifest["tables"])
    for name in PHASE_2_TABLES:
        entry = manifest["tables"][name]
        assert entry["revision"] == PHASE_2_REVISION
        assert (entry["rows"], entry["sha256"]) == (before[name].rows, before[name].sha256), name
        assert (archive / entry["file"]).is_file()
    verified = memory.ops.verify_archive(archive)
    # The event log is archived by 0008, after 0010 re-hashed it in the form 0008 knows
    # (the hash covers the target, not its digest): the same events, other hashes. The
    # restore below brings the current form back.
    assert verified.pop("memory_events").rows == before["memory_events"].rows
    assert verified == {
        name: before[name] for name in manifest["tables"] if name != "memory_events"
    }

    with Memory.open(database_url, embedder=HashingEmbedder()) as store:
        assert store.revision == PHASE_1_REVISION
        with pytest.raises(SchemaError, match="memctl migrate"):
            store.scope(user="ada", agent="planner")
        # The Phase 1 graph keeps working on the rolled-back schema.
        assert len(store.graph("ada").read_graph().entities) == ENTITIES_PER_USER - 1

    memory.ops.upgrade(engine)
    assert all(_checksums(engine, PHASE_2_TABLES)[name].rows == 0 for name in PHASE_2_TABLES)
    restored = memory.ops.restore_archive(engine, archive)
    assert restored == {name: before[name].rows for name in manifest["tables"]}
    assert _checksums(engine) == before

    # New rows after the restore get fresh ids (PostgreSQL's sequences were moved on).
    with Memory.open(database_url, embedder=HashingEmbedder()) as store:
        scope = store.scope(user="ada", agent="planner", session="session-0")
        added = scope.add("written after the restore", tier="episodic",
                          metadata={"after": "restore"})
        assert added.id > largest["memories"]
        assert scope.get(added.id).metadata == {"after": "restore"}
        pattern = scope.record_pattern("sql", "upsert", "INSERT ... ON CONFLICT DO NOTHING")
        assert pattern.id > largest["code_patterns"]
        assert scope.set_preference("new-key", [1, 2]).value == [1, 2]
        checkpoint = scope.save_state({"step": 3})
        assert checkpoint.checkpoint_seq == 3
        other = store.scope(user="new-user", agent="planner", session="s")
        assert other.set_preference("language", "en").key == "language"
        assert other.save_state({"fresh": True}).checkpoint_seq == 1
        assert [memory_.content for memory_ in scope.list(metadata={"edited": True})] == [
            "updated memory of ada – é"
        ]
    after = _checksums(engine, PHASE_2_TABLES)
    assert after["memories"].rows == before["memories"].rows + 1
    assert after["user_preferences"].rows == before["user_preferences"].rows + 2
    assert after["session_state"].rows == before["session_state"].rows + 2


# -- downgrades never drop rows they have not archived ----------------------------------------


def test_downgrade_without_archive_refuses_to_drop_rows(
    engine: sa.Engine, database_url: str
) -> None:
    memory.ops.upgrade(engine)
    with Memory.open(database_url, embedder=HashingEmbedder()) as store:
        store.scope(user="ada", agent="planner").add("a memory that must not be lost")
    before = _checksums(engine)

    # The first table with rows on the way down: the sync change log (0013) or the event
    # log (0008) logged the add.
    with pytest.raises(
        ArchiveError, match="(sync_[a-z]+|memory_events|memories|memory_embeddings).*archive"
    ):
        memory.ops.downgrade(engine, PHASE_1_REVISION)

    assert database_revision(engine) == memory.ops.head_revision()
    assert _checksums(engine) == before
    assert before["memories"].rows == 1


def test_downgrade_without_archive_passes_when_tables_are_empty(
    engine: sa.Engine, database_url: str
) -> None:
    # The graph written by a Phase 1 store: at head, its writes would fill the event log.
    memory.ops.upgrade(engine, PHASE_1_REVISION)
    with Memory.open(database_url, embedder=HashingEmbedder()) as store:
        store.graph("ada").create_entities(
            [{"name": "Ada", "entityType": "person", "observations": ["writes Python"]}]
        )
    memory.ops.upgrade(engine)
    phase_1 = _checksums(engine, PHASE_1_TABLES)

    memory.ops.downgrade(engine, PHASE_1_REVISION)

    assert database_revision(engine) == PHASE_1_REVISION
    assert _table_names(engine) == set(PHASE_1_TABLES)
    assert _checksums(engine, PHASE_1_TABLES) == phase_1


def test_refused_downgrade_through_several_revisions_changes_nothing(
    engine: sa.Engine, database_url: str
) -> None:
    """Revision 0004's tables are empty and could go, but 0002 would drop relations that
    hold rows: the whole downgrade is one transaction, so nothing at all is dropped."""
    # The graph written by a Phase 1 store: at head, its writes would fill the event log.
    memory.ops.upgrade(engine, PHASE_1_REVISION)
    with Memory.open(database_url, embedder=HashingEmbedder()) as store:
        graph = store.graph("ada")
        graph.create_entities([{"name": "Ada", "entityType": "person"},
                               {"name": "Babbage", "entityType": "person"}])
        graph.create_relations([{"from": "Ada", "to": "Babbage", "relationType": "knows"}])
    memory.ops.upgrade(engine)
    tables = _table_names(engine)
    before = _checksums(engine)

    with pytest.raises(ArchiveError, match="relations"):
        memory.ops.downgrade(engine, "base")

    assert database_revision(engine) == memory.ops.head_revision()
    assert _table_names(engine) == tables
    assert _checksums(engine) == before


# -- restoring archives -------------------------------------------------------------------------


def _archived_phase_2(
    engine: sa.Engine, url: str, directory: Path
) -> dict[str, memory.ops.TableChecksum]:
    """Fill Phase 2, roll it back into ``directory``, migrate again; returns the checksums
    from before the rollback."""
    memory.ops.upgrade(engine)
    _populate_phase_2(url)
    before = _checksums(engine)
    memory.ops.downgrade(engine, PHASE_1_REVISION, directory)
    memory.ops.upgrade(engine)
    return before


def _phase_2_rows(engine: sa.Engine) -> dict[str, int]:
    return {name: value.rows for name, value in _checksums(engine, PHASE_2_TABLES).items()}


def _change_one_byte(data: bytes) -> bytes:
    """``data`` with one ASCII letter or digit near its middle replaced by another."""
    for position in range(len(data) // 2, len(data)):
        if chr(data[position]).isalnum() and data[position] < 128:
            replacement = b"b" if data[position : position + 1] == b"a" else b"a"
            return data[:position] + replacement + data[position + 1 :]
    raise AssertionError("no ASCII letter or digit to change")


def test_restore_refuses_a_corrupted_archive(
    engine: sa.Engine, database_url: str, tmp_path: Path
) -> None:
    archive = tmp_path / "archive"
    before = _archived_phase_2(engine, database_url, archive)
    empty = {name: 0 for name in PHASE_2_TABLES}
    files = sorted(archive.glob("*.jsonl"))
    assert {path.stem for path in files} >= set(PHASE_2_TABLES)

    for path in files:
        original = path.read_bytes()
        path.write_bytes(_change_one_byte(original))
        with pytest.raises(ArchiveError, match="corrupt"):
            memory.ops.restore_archive(engine, archive)
        assert _phase_2_rows(engine) == empty, path.name
        path.write_bytes(original)

    # A lost line is caught as well.
    path = archive / "memories.jsonl"
    original = path.read_bytes()
    path.write_bytes(b"".join(original.splitlines(keepends=True)[1:]))
    with pytest.raises(ArchiveError, match="corrupt"):
        memory.ops.restore_archive(engine, archive)
    assert _phase_2_rows(engine) == empty
    path.write_bytes(original)

    # The intact archive restores: the refusals above were about the corruption alone.
    memory.ops.restore_archive(engine, archive)
    assert _checksums(engine) == before


def test_restore_is_all_or_nothing(
    engine: sa.Engine, database_url: str, tmp_path: Path
) -> None:
    """An archive that passes verification but fails half-way (a column that no longer
    exists, in a table restored after its parent) leaves every table empty."""
    archive = tmp_path / "archive"
    _archived_phase_2(engine, database_url, archive)
    path = archive / "memory_metadata.jsonl"
    lines = path.read_bytes().splitlines(keepends=True)
    record = json.loads(lines[-1])
    record["dropped_column"] = "x"
    lines[-1] = json.dumps(record, sort_keys=True, separators=(",", ":")).encode() + b"\n"
    tampered = b"".join(lines)
    path.write_bytes(tampered)
    manifest = _manifest(archive)
    manifest["tables"]["memory_metadata"]["sha256"] = hashlib.sha256(tampered).hexdigest()
    (archive / "manifest.json").write_text(json.dumps(manifest), "utf-8")
    memory.ops.verify_archive(archive)  # the manifest agrees with the files

    with pytest.raises(ArchiveError, match="dropped_column"):
        memory.ops.restore_archive(engine, archive)

    # memories is restored before memory_metadata (its parent), and was rolled back.
    assert _phase_2_rows(engine) == {name: 0 for name in PHASE_2_TABLES}


def test_restore_refuses_tables_that_are_not_empty(
    engine: sa.Engine, database_url: str, tmp_path: Path
) -> None:
    archive = tmp_path / "archive"
    before = _archived_phase_2(engine, database_url, archive)

    # A row in the table restored last: every table before it must be rolled back.
    order = [table.name for table in Base.metadata.sorted_tables if table.name in PHASE_2_TABLES]
    writers: dict[str, Callable[[memory.Scope], object]] = {
        "user_preferences": lambda scope: scope.set_preference("theme", "dark"),
        "code_patterns": lambda scope: scope.record_pattern("sql", "select", "SELECT 1"),
        "session_state": lambda scope: scope.save_state({"step": 1}),
    }
    last = [name for name in order if name in writers][-1]
    assert order.index(last) > 0
    with Memory.open(database_url, embedder=HashingEmbedder()) as store:
        writers[last](store.scope(user="someone-else", agent="a", session="s"))
    # The write also logged its event: remove it, so only the table restored last holds a row.
    with engine.begin() as connection:
        connection.execute(sa.text("DELETE FROM memory_events"))

    with pytest.raises(ArchiveError, match=f"{last}.*already has 1 rows"):
        memory.ops.restore_archive(engine, archive)
    assert _phase_2_rows(engine) == {name: int(name == last) for name in PHASE_2_TABLES}

    with engine.begin() as connection:
        connection.execute(sa.text(f"DELETE FROM {last}"))
    memory.ops.restore_archive(engine, archive)
    assert _checksums(engine) == before

    # Restoring the same archive twice is refused and changes nothing.
    with pytest.raises(ArchiveError, match="already has"):
        memory.ops.restore_archive(engine, archive)
    assert _checksums(engine) == before


# -- 0010: the event chain covers target digests ------------------------------------------------

_HASHES = ("hash", "prev_hash", "target_digest")
# Revision 0012's columns (tests/store/test_event_sourcing.py covers them).
_CHANGES = ("change_format", "change_sealed")


def _event_rows(engine: sa.Engine) -> list[dict[str, Any]]:
    """The event log's rows without the columns 0010 recomputes and those 0012 adds."""
    with engine.connect() as connection:
        rows = connection.execute(sa.text("SELECT * FROM memory_events ORDER BY seq")).mappings()
        return [{k: v for k, v in row.items() if k not in _HASHES + _CHANGES} for row in rows]


def _verify_at(engine: sa.Engine, with_target_digest: bool) -> ChainReport:
    with engine.connect() as connection:
        return verify_chain(connection, event_table(with_target_digest))


def _chain_with_a_forgotten_user(database_url: str) -> None:
    with Memory.open(database_url, embedder=HashingEmbedder(), role="admin") as store:
        for user in ("ada", "grace"):
            scope = store.scope(user=user, agent="planner", session=f"session-of-{user}")
            scope.add(f"a note of {user}")
            scope.set_preference(f"key-of-{user}", "value")
            scope.save_state({"step": 1})
        store.forget_user("ada")


def test_0010_keeps_every_event_and_a_verifiable_chain_both_ways(
    engine: sa.Engine, database_url: str, tmp_path: Path
) -> None:
    memory.ops.upgrade(engine)
    _chain_with_a_forgotten_user(database_url)
    events = _event_rows(engine)
    assert [row["target"] for row in events if row["redacted"]] == ["", "", ""]
    assert _verify_at(engine, True).ok

    # The sync state of the writes (0013) is archived on the way down.
    memory.ops.downgrade(engine, "0009", tmp_path / "archive")
    assert database_revision(engine) == "0009"
    with engine.connect() as connection:
        columns = {column["name"] for column in sa.inspect(connection).get_columns("memory_events")}
    assert "target_digest" not in columns
    assert _event_rows(engine) == events
    # The chain in the form 0008 and 0009 verify: the hash covers the target as stored.
    report = _verify_at(engine, False)
    assert (report.ok, report.checked) == (True, len(events))

    memory.ops.upgrade(engine)
    assert _event_rows(engine) == events
    with Memory.open(database_url, embedder=HashingEmbedder()) as store:
        assert store.verify_events().ok
        store.scope(user="grace", agent="planner").add("written after the round trip")
        assert store.verify_events().checked == len(events) + 1


def test_0010_blanks_the_targets_of_users_forgotten_before_it(
    engine: sa.Engine, database_url: str, tmp_path: Path
) -> None:
    memory.ops.upgrade(engine)
    _chain_with_a_forgotten_user(database_url)
    # The sync state of the writes (0013) is archived on the way down.
    memory.ops.downgrade(engine, "0009", tmp_path / "archive")
    # As 0009 left it: a forgotten user's events kept their targets.
    table = event_table(False)
    with engine.begin() as connection:
        connection.execute(
            sa.update(table).where(table.c.redacted.is_(True)).values(target="session:secret")
        )
        rechain(connection, table, with_target_digests=False)
    assert _verify_at(engine, False).ok

    memory.ops.upgrade(engine)
    with engine.connect() as connection:
        targets = connection.execute(
            sa.text("SELECT target FROM memory_events WHERE redacted = :yes"), {"yes": True}
        ).scalars().all()
    assert targets and set(targets) == {""}
    assert _verify_at(engine, True).ok


def test_0010_refuses_to_rehash_a_chain_that_does_not_verify(
    engine: sa.Engine, database_url: str, tmp_path: Path
) -> None:
    memory.ops.upgrade(engine)
    _chain_with_a_forgotten_user(database_url)
    # The sync state of the writes (0013) is archived on the way down.
    memory.ops.downgrade(engine, "0009", tmp_path / "archive")
    with engine.begin() as connection:
        connection.execute(sa.text("UPDATE memory_events SET agent_id = 'intruder' WHERE seq = 2"))
    before = _checksums(engine)

    with pytest.raises(SchemaError, match="first bad event 2"):
        memory.ops.upgrade(engine)

    assert database_revision(engine) == "0009"
    assert _checksums(engine) == before


# -- the Phase 1 API is the same before and after 0004 ------------------------------------------


def _graph_script(url: str) -> list[tuple[str, Any]]:
    """Every Phase 1 operation, with its results (or the error it raised), in order."""
    results: list[tuple[str, Any]] = []

    def record(label: str, call: Callable[[], Any]) -> None:
        try:
            value = call()
        except MemoryStoreError as error:
            value = ("raised", type(error).__name__, str(error))
        results.append((label, value))

    with Memory.open(url, embedder=HashingEmbedder()) as store:
        graph = store.graph("ada")
        other = store.graph("grace")
        people = [
            {"name": "Ada Lovelace", "entityType": "person",
             "observations": ["wrote the first program", "Née Byron – ✓",
                              "wrote the first program"]},
            {"name": "Charles Babbage", "entityType": "person",
             "observations": ["Difference Engine"]},
            {"name": "Analytical Engine", "entityType": "machine", "observations": []},
            {"name": "Ada Lovelace", "entityType": "duplicate", "observations": ["ignored"]},
            {"name": "東京", "entityType": "city", "observations": ["首都", "CAFÉ culture"]},
        ]
        record("create_entities", lambda: graph.create_entities(people))
        record("create_entities again", lambda: graph.create_entities(people[:2]))
        relations = [
            {"from": "Ada Lovelace", "to": "Charles Babbage", "relationType": "worked with"},
            {"from": "Charles Babbage", "to": "Analytical Engine", "relationType": "designed"},
            {"from": "Ada Lovelace", "to": "Analytical Engine", "relationType": "programmed"},
            {"from": "Ada Lovelace", "to": "東京", "relationType": "never visited"},
            {"from": "Ada Lovelace", "to": "Charles Babbage", "relationType": "worked with"},
        ]
        record("create_relations", lambda: graph.create_relations(relations))
        record("create_relations again", lambda: graph.create_relations(relations[:2]))
        record("create_relations to a missing entity", lambda: graph.create_relations(
            [{"from": "Ada Lovelace", "to": "Nobody", "relationType": "knows"}]))
        record("add_observations", lambda: graph.add_observations([
            {"entityName": "Ada Lovelace", "contents": ["Née Byron – ✓", "mathematician"]},
            {"entityName": "Analytical Engine", "contents": ["never built", "café"]},
        ]))
        record("add_observations to a missing entity", lambda: graph.add_observations(
            [{"entityName": "Nobody", "contents": ["x"]}]))
        record("invalid input", lambda: graph.create_entities([{"name": " ", "entityType": "x"}]))
        record("delete_observations", lambda: graph.delete_observations([
            {"entityName": "Ada Lovelace", "observations": ["mathematician", "not there"]},
            {"entityName": "Nobody", "observations": ["x"]},
        ]))
        record("delete_relations", lambda: graph.delete_relations([
            {"from": "Ada Lovelace", "to": "東京", "relationType": "never visited"},
            {"from": "Nobody", "to": "東京", "relationType": "x"},
        ]))
        record("search_nodes", lambda: graph.search_nodes("CAFÉ"))
        record("search_nodes by type", lambda: graph.search_nodes("PERSON"))
        record("search_nodes without match", lambda: graph.search_nodes("zzz"))
        record("open_nodes", lambda: graph.open_nodes(
            ["Ada Lovelace", "Charles Babbage", "Nobody"]))
        record("read_graph", graph.read_graph)
        exported = list(graph.export_jsonl())
        record("export_jsonl", lambda: exported)
        record("import_jsonl", lambda: other.import_jsonl(exported))
        record("import_jsonl again", lambda: other.import_jsonl(exported))
        record("import_jsonl broken", lambda: other.import_jsonl(['{"type": "x"}']))
        record("read_graph of the importer", other.read_graph)
        record("delete_entities", lambda: graph.delete_entities(["Charles Babbage", "Nobody"]))
        record("read_graph after delete_entities", graph.read_graph)
        record("export_jsonl after delete_entities", lambda: list(graph.export_jsonl()))
        record("another user sees nothing", store.graph("nobody").read_graph)
    return results


def test_phase_1_api_is_identical_before_and_after_0004(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    results = {}
    for revision in (PHASE_1_REVISION, "head"):
        url = _fresh_database_url(backend, tmp_path, request, name=f"at-{revision}.db")
        engine = memory.ops.create_engine(url)
        try:
            memory.ops.upgrade(engine, revision)
            assert database_revision(engine) == (
                PHASE_1_REVISION if revision == PHASE_1_REVISION else memory.ops.head_revision()
            )
        finally:
            engine.dispose()
        results[revision] = _graph_script(url)

    old, new = results[PHASE_1_REVISION], results["head"]
    assert [label for label, _ in old] == [label for label, _ in new]
    for (label, before), (_, after) in zip(old, new, strict=True):
        assert after == before, label

    # The script really did something (both runs could not be equally broken).
    outcome = dict(new)
    assert [entity.name for entity in outcome["create_entities"]] == [
        "Ada Lovelace", "Charles Babbage", "Analytical Engine", "東京"
    ]
    assert outcome["create_entities again"] == []
    assert len(outcome["create_relations"]) == 4
    assert outcome["create_relations again"] == []
    assert outcome["create_relations to a missing entity"][:2] == ("raised", "NotFoundError")
    assert outcome["invalid input"][:2] == ("raised", "InvalidInputError")
    assert [entity.name for entity in outcome["search_nodes"].entities] == [
        "Analytical Engine", "東京"
    ]
    assert outcome["import_jsonl"] == (4, 3)
    assert outcome["import_jsonl again"] == (0, 0)
    assert outcome["read_graph of the importer"] == outcome["read_graph"]
    assert [entity.name for entity in outcome["read_graph after delete_entities"].entities] == [
        "Ada Lovelace", "Analytical Engine", "東京"
    ]
    assert len(outcome["read_graph after delete_entities"].relations) == 1
    assert outcome["another user sees nothing"] == memory.KnowledgeGraph()


# -- memctl ---------------------------------------------------------------------------------------


def _memctl(url: str, *args: str) -> Result:
    return CliRunner().invoke(main, ["--database-url", url, *args])


def test_memctl_migrate_check_rollback_and_restore(
    engine: sa.Engine, database_url: str, tmp_path: Path
) -> None:
    head = memory.ops.head_revision()
    with engine.connect():  # an empty database (a missing SQLite file is refused, not created)
        pass

    result = _memctl(database_url, "current")
    assert (result.exit_code, result.stdout.strip()) == (0, f"empty (head is {head})")
    result = _memctl(database_url, "check")
    assert result.exit_code == 1
    assert "NOT AT HEAD" in result.stderr

    result = _memctl(database_url, "migrate", "--to", PHASE_1_REVISION)
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == f"migrated: empty -> {PHASE_1_REVISION}"
    assert _memctl(database_url, "check").exit_code == 1
    result = _memctl(database_url, "current")
    assert result.stdout.strip() == f"{PHASE_1_REVISION} (head is {head})"

    result = _memctl(database_url, "migrate")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == f"migrated: {PHASE_1_REVISION} -> {head}"
    result = _memctl(database_url, "check")
    assert (result.exit_code, result.stdout.strip()) == (0, f"ok: at head {head}")
    assert _memctl(database_url, "current").stdout.strip() == f"{head} (head)"

    result = _memctl(database_url, "history")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    revisions = [line[2:].split()[0] for line in lines]
    assert revisions == [item.revision for item in memory.ops.history()]
    assert revisions[:4] == ["0001", "0002", "0003", "0004"]
    assert [line[0] for line in lines] == ["*" if r == head else " " for r in revisions]

    _populate_phase_2(database_url)
    before = _checksums(engine)

    archive = tmp_path / "archive"
    result = _memctl(database_url, "rollback", "--to", PHASE_1_REVISION, "--archive", str(archive))
    assert result.exit_code == 0, result.output
    assert f"rolled back: {head} -> {PHASE_1_REVISION}" in result.stdout
    assert f"memctl restore-archive {archive}" in result.stdout
    assert _memctl(database_url, "check").exit_code == 1
    assert _table_names(engine) == set(PHASE_1_TABLES)
    assert _manifest(archive)["tables"]["memories"]["rows"] == before["memories"].rows

    # Restoring before `migrate` recreated the tables is refused and changes nothing.
    result = _memctl(database_url, "restore-archive", str(archive))
    assert result.exit_code == 1
    assert "does not exist at this schema revision" in result.stderr
    assert _table_names(engine) == set(PHASE_1_TABLES)

    assert _memctl(database_url, "migrate").exit_code == 0
    result = _memctl(database_url, "restore-archive", str(archive))
    assert result.exit_code == 0, result.output
    for name in PHASE_2_TABLES:
        assert f"restored {before[name].rows} rows into {name}" in result.stdout
    assert _checksums(engine) == before
    assert _memctl(database_url, "check").exit_code == 0

    # A second restore is refused with a one-line error, not a traceback.
    result = _memctl(database_url, "restore-archive", str(archive))
    assert result.exit_code == 1
    assert "already has" in result.stderr
    assert "Traceback" not in result.output
    assert _checksums(engine) == before


def test_memctl_rollback_archives_into_the_working_directory_by_default(
    engine: sa.Engine, database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    memory.ops.upgrade(engine)
    with Memory.open(database_url, embedder=HashingEmbedder()) as store:
        store.scope(user="ada", agent="planner").add("kept in the archive")
    monkeypatch.chdir(tmp_path)

    result = _memctl(database_url, "rollback", "--to", "0003")
    assert result.exit_code == 0, result.output

    (archive,) = tmp_path.glob(f"memory-archive-{memory.ops.head_revision()}-*")
    assert _manifest(archive)["tables"]["memories"]["rows"] == 1
    assert str(archive.name) in result.stdout


@pytest.mark.parametrize(
    "args",
    [
        ("migrate", "--to", "9999"),
        ("migrate", "--to", "not-a-revision"),
        ("rollback", "--to", "9999", "--archive", "ARCHIVE"),
        ("migrate", "--to", "+19"),
        ("migrate", "--to", "0001"),
    ],
    ids=["migrate-9999", "migrate-name", "rollback-9999", "migrate-plus-19", "migrate-backwards"],
)
def test_memctl_unknown_revision_is_a_clear_error(
    engine: sa.Engine, database_url: str, tmp_path: Path, args: tuple[str, ...]
) -> None:
    memory.ops.upgrade(engine, PHASE_1_REVISION)
    archive = tmp_path / "archive"
    args = tuple(str(archive) if arg == "ARCHIVE" else arg for arg in args)

    result = _memctl(database_url, *args)

    assert result.exit_code == 1
    assert isinstance(result.exception, SystemExit)  # reported, not a traceback
    expected = {
        "9999": "Error: revision '9999' is unknown; see `memctl history`",
        "not-a-revision": "Error: revision 'not-a-revision' is unknown; see `memctl history`",
        "+19": "Error: cannot migrate: Relative revision +19 didn't produce 19 migrations",
        "0001": f"Error: the database is at {PHASE_1_REVISION}, already past 0001; "
        "to go back, use: memctl rollback --to 0001",
    }
    assert result.stderr.strip() == expected[args[2]]
    assert database_revision(engine) == PHASE_1_REVISION
    assert not archive.exists()


def test_memctl_rollback_of_an_empty_database_is_refused(
    engine: sa.Engine, database_url: str
) -> None:
    with engine.connect():  # an empty database (a missing SQLite file is refused, not created)
        pass
    result = _memctl(database_url, "rollback", "--to", "base")
    assert result.exit_code == 1
    assert "nothing to roll back" in result.stderr
