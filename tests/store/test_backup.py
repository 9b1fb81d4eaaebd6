"""Backups and restores: ``memory.ops.backup`` / ``verify_backup`` / ``restore_backup`` and
``memctl backup`` / ``memctl backup --verify`` / ``memctl restore``.

Every test runs for each way of taking a backup: the SQLite online backup API and the
logical export on a SQLite file, ``pg_dump`` and the logical export on PostgreSQL. Each test
has databases of its own (a new SQLite file, or a new PostgreSQL database).
"""

from __future__ import annotations

import itertools
import json
import os
import stat
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner, Result

import memory
import memory.ops
from memory import ArchiveError, InvalidInputError, Memory, SchemaError
from memory.cli import main
from memory.ops import TableChecksum, backup, restore_backup, verify_backup
from memory.store.schema import database_revision

USER = "ada"
AGENTS = ("planner", "coder")
TIERS = ("working", "episodic", "semantic")
# Tables every backup must hold, whatever later revisions add.
CORE_TABLES = {
    "entities", "observations", "relations", "memories", "memory_metadata",
    "user_preferences", "code_patterns", "session_state",
}
EMBEDDER = memory.HashingEmbedder()
FUTURE_REVISION = "9999_from_the_future"
WRITER_BATCH = 10
WAIT_SECONDS = 120
# The file a flipped byte corrupts, per method.
DATA_FILE = {"sqlite": "memory.db", "pg_dump": "memory.dump", "logical": "tables/memories.jsonl"}

CASES = [
    pytest.param(("sqlite-file", "sqlite"), id="sqlite-file-backup-api"),
    pytest.param(("sqlite-file", "logical"), id="sqlite-file-logical"),
    pytest.param(("postgresql", "pg_dump"), id="postgresql-pg_dump"),
    pytest.param(("postgresql", "logical"), id="postgresql-logical"),
]


@dataclass(frozen=True)
class Case:
    backend: str
    method: str
    new_database: Callable[[], str]

    @property
    def dialect(self) -> str:
        return "sqlite" if self.backend == "sqlite-file" else "postgresql"


def _database_factory(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> Callable[[], str]:
    if backend == "postgresql":
        make: Callable[[], str] = request.getfixturevalue("make_postgres_database")
        return make
    counter = itertools.count()
    return lambda: f"sqlite:///{tmp_path / f'database-{next(counter)}.db'}"


@pytest.fixture(params=CASES)
def case(request: pytest.FixtureRequest, tmp_path: Path) -> Case:
    backend, method = request.param
    return Case(backend, method, _database_factory(backend, tmp_path, request))


# -- helpers --------------------------------------------------------------------------------------


def _open(url: str) -> Memory:
    # The deterministic hashing embedder: embeddings are stored (binary columns are backed
    # up too) without loading a model in every test.
    return Memory.open(url, embedder=EMBEDDER)


def _memory_item(agent: str, number: int, prefix: str = "") -> dict[str, Any]:
    tier = TIERS[number % 3]
    return {
        "content": f"{prefix}{agent} noted #{number}: Ada prefers short answers – naïve café ☕, "
        f"日本語 and Ωμέγα in the {('morning', 'evening')[number % 2]}",
        "tier": tier,
        "importance": (number % 10) / 10,
        # Two metadata keys per memory, always: restored data must keep that invariant.
        "metadata": {"topic": f"topic-{number % 4}", "n": number},
        "ttl": timedelta(hours=24) if tier == "working" else None,
    }


def _populate(url: str, memories: int = 30) -> None:
    """Fill every store through the public API (with gaps in the ids from a delete)."""
    with _open(url) as store:
        for agent in AGENTS:
            scope = store.scope(USER, agent, "session-1")
            added = scope.add_many(_memory_item(agent, number) for number in range(memories))
            scope.delete(added[0].id)
            scope.set_preference(
                f"{agent}.tone", {"style": "brief", "émoji": "☕"}, confidence=0.75
            )
            scope.record_pattern(
                "python", f"{agent} retry loop", "for attempt in range(3):\n    try_it()",
                description="bounded retries", tags=["resilience", "io"],
            )
            scope.save_state({"step": 1, "open_files": ["a.py"]})
            scope.save_state({"step": 2, "open_files": ["a.py", "b.py"]}, ttl=timedelta(hours=1))
        graph = store.graph(USER)
        graph.create_entities([
            {"name": "Ada Lovelace", "entityType": "person", "observations": ["née Byron", "☕"]},
            {"name": "Analytical Engine", "entityType": "machine", "observations": ["never built"]},
            {"name": "東京", "entityType": "city", "observations": []},
        ])
        graph.create_relations([
            {"from": "Ada Lovelace", "to": "Analytical Engine", "relationType": "programmed"},
            {"from": "Ada Lovelace", "to": "東京", "relationType": "never visited"},
        ])


@contextmanager
def _engine(url: str) -> Iterator[sa.Engine]:
    engine = memory.ops.create_engine(url)
    try:
        yield engine
    finally:
        engine.dispose()


def _checksums(url: str, tables: Iterable[str]) -> dict[str, TableChecksum]:
    with _engine(url) as engine, engine.connect() as connection:
        return memory.ops.table_checksums(connection, sorted(tables))


def _table_names(url: str) -> set[str]:
    with _engine(url) as engine, engine.connect() as connection:
        return set(sa.inspect(connection).get_table_names())


def _scalar(url: str, sql: str) -> Any:
    with _engine(url) as engine, engine.connect() as connection:
        return connection.execute(sa.text(sql)).scalar_one()


def _taken_backup(case: Case, tmp_path: Path, memories: int = 30) -> tuple[str, Path]:
    source = case.new_database()
    _populate(source, memories)
    directory = tmp_path / "backup"
    backup(source, directory, method=case.method)  # type: ignore[arg-type]
    return source, directory


def _flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def _memctl(*args: str, url: str | None = None) -> Result:
    prefix = ["--database-url", url] if url is not None else []
    return CliRunner().invoke(main, [*prefix, *args])


def _leftovers(parent: Path) -> list[str]:
    return sorted(path.name for path in parent.iterdir() if ".partial-" in path.name)


# -- round trip -----------------------------------------------------------------------------------


def test_backup_verify_and_restore_round_trip(case: Case, tmp_path: Path) -> None:
    source = case.new_database()
    _populate(source)
    directory = tmp_path / "backup"

    info = backup(source, directory, method=case.method)  # type: ignore[arg-type]

    assert (info.directory, info.backend, info.method) == (directory, case.dialect, case.method)
    assert info.revision == memory.ops.head_revision()
    assert info.created_at.tzinfo is not None
    assert CORE_TABLES <= set(info.tables)
    assert "alembic_version" not in info.tables
    assert info.tables["memories"].rows == 2 * 29
    assert info.tables["memory_metadata"].rows == 2 * info.tables["memories"].rows
    assert info.tables["entities"].rows == 3
    if "memory_embeddings" in info.tables:  # revision 0005: binary vectors are backed up too
        assert info.tables["memory_embeddings"].rows == info.tables["memories"].rows
    # Nobody wrote since: the manifest describes the source exactly.
    assert info.tables == _checksums(source, info.tables)
    manifest = json.loads((directory / "manifest.json").read_text("utf-8"))
    assert manifest["format_version"] == 1
    assert (manifest["backend"], manifest["method"]) == (case.dialect, case.method)
    assert manifest["revision"] == info.revision
    assert manifest["tables"]["memories"] == {
        "rows": info.tables["memories"].rows, "sha256": info.tables["memories"].sha256
    }
    assert DATA_FILE[case.method] in manifest["files"]
    assert info.size_bytes == sum(entry["bytes"] for entry in manifest["files"].values())
    assert _leftovers(tmp_path) == []

    assert verify_backup(directory) == info

    target = case.new_database()
    result = restore_backup(target, directory)

    assert result.backup == info
    assert result.backend == case.dialect
    assert result.tables == info.tables
    assert result.rows == info.rows
    assert _checksums(target, info.tables) == _checksums(source, info.tables)
    with _engine(target) as engine:
        assert database_revision(engine) == info.revision

    # The restored store works through the public API, and new rows get new ids (on
    # PostgreSQL the sequences were moved past the restored ones).
    with _open(target) as restored:
        scope = restored.scope(USER, AGENTS[0], "session-1")
        listed = scope.list(limit=500)
        assert len(listed) == 29
        assert scope.get_preference(f"{AGENTS[0]}.tone").value == {"style": "brief", "émoji": "☕"}
        assert scope.load_state().state == {"step": 2, "open_files": ["a.py", "b.py"]}
        graph = restored.graph(USER).read_graph()
        assert sorted(entity.name for entity in graph.entities) == sorted(
            ["Ada Lovelace", "Analytical Engine", "東京"]
        )
        assert len(graph.relations) == 2
        fresh = scope.add("written after the restore")
        assert fresh.id > max(record.id for record in listed)
        assert restored.graph(USER).create_entities(
            [{"name": "Charles Babbage", "entityType": "person", "observations": ["x"]}]
        )


# -- consistency under concurrent writes ----------------------------------------------------------


class Writer(threading.Thread):
    """An agent that keeps adding memories (each with two metadata keys) in batches."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.batches = 0
        self.error: BaseException | None = None
        self.stop = threading.Event()
        self._progress = threading.Condition()

    def run(self) -> None:
        try:
            with _open(self.url) as store:
                scope = store.scope(USER, "writer", "live")
                while not self.stop.is_set():
                    scope.add_many(
                        _memory_item("writer", self.batches * WRITER_BATCH + number, "live ")
                        for number in range(WRITER_BATCH)
                    )
                    with self._progress:
                        self.batches += 1
                        self._progress.notify_all()
        except BaseException as error:  # reported by the test thread
            self.error = error
            with self._progress:
                self._progress.notify_all()

    def wait_for(self, batches: int) -> None:
        """Block until at least ``batches`` batches are committed."""
        deadline = time.monotonic() + WAIT_SECONDS
        with self._progress:
            while self.batches < batches and self.error is None:
                remaining = deadline - time.monotonic()
                assert remaining > 0, f"the writer committed {self.batches} of {batches} batches"
                self._progress.wait(remaining)
        if self.error is not None:
            raise self.error


def test_backup_is_consistent_while_an_agent_keeps_writing(
    case: Case, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = case.new_database()
    _populate(source)
    writer = Writer(source)
    writer.start()
    try:
        writer.wait_for(3)
        # Make the backup span commits: before reading each table, wait for the writer to
        # commit another batch. A backup that did not read one snapshot would then see
        # memories without their metadata, or half batches.
        from memory.store import backup as _backup

        during: list[int] = []

        def after_a_commit() -> None:
            writer.wait_for(writer.batches + 1)
            during.append(writer.batches)

        original_checksums = _backup.table_checksums
        original_archive = _backup.archive_table

        def slow_checksums(connection: Any, names: Iterable[str]) -> dict[str, TableChecksum]:
            result = {}
            for name in names:
                after_a_commit()
                result.update(original_checksums(connection, [name]))
            return result

        def slow_archive(*args: Any) -> TableChecksum:
            after_a_commit()
            return original_archive(*args)

        monkeypatch.setattr(_backup, "table_checksums", slow_checksums)
        monkeypatch.setattr(_backup, "archive_table", slow_archive)
        started = writer.batches
        info = backup(source, tmp_path / "backup", method=case.method)  # type: ignore[arg-type]
        monkeypatch.undo()
        finished = writer.batches
        writer.wait_for(finished + 2)
    finally:
        writer.stop.set()
        writer.join(WAIT_SECONDS)
    assert writer.error is None
    assert len(during) >= len(CORE_TABLES)
    final = writer.batches

    # The snapshot holds whole batches only, taken between the start and end of the backup.
    live_rows = info.tables["memories"].rows - 2 * 29
    assert live_rows % WRITER_BATCH == 0
    assert started <= live_rows // WRITER_BATCH <= finished < final
    # Every memory came with exactly its two metadata rows: one snapshot, not a smear.
    assert info.tables["memory_metadata"].rows == 2 * info.tables["memories"].rows
    assert verify_backup(tmp_path / "backup") == info

    target = case.new_database()
    result = restore_backup(target, tmp_path / "backup")
    assert result.tables == info.tables
    assert _checksums(target, info.tables) == info.tables
    assert _scalar(target, "SELECT count(*) FROM memories") == info.tables["memories"].rows
    assert _scalar(
        target, "SELECT count(*) FROM memories WHERE agent_id = 'writer'"
    ) == live_rows
    # The source went on: it now holds more than the backup.
    assert _scalar(source, "SELECT count(*) FROM memories") == 2 * 29 + final * WRITER_BATCH


# -- refusals -------------------------------------------------------------------------------------


def test_a_corrupted_backup_is_detected_and_never_restored(case: Case, tmp_path: Path) -> None:
    _, directory = _taken_backup(case, tmp_path)
    data = directory / DATA_FILE[case.method]
    _flip_byte(data)

    with pytest.raises(ArchiveError, match="corrupt"):
        verify_backup(directory)
    result = _memctl("backup", "--verify", str(directory))
    assert result.exit_code == 1
    assert "corrupt" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1

    target = case.new_database()
    with pytest.raises(ArchiveError, match="corrupt"):
        restore_backup(target, directory)
    assert _table_names(target) == set()

    # Put the byte back: the refusals were about the corruption alone.
    _flip_byte(data)
    verify_backup(directory)
    restore_backup(target, directory)


def test_a_tampered_manifest_is_detected(case: Case, tmp_path: Path) -> None:
    _, directory = _taken_backup(case, tmp_path)
    path = directory / "manifest.json"
    manifest = json.loads(path.read_text("utf-8"))
    name = DATA_FILE[case.method]
    manifest["files"][name]["sha256"] = "0" * 64
    path.write_text(json.dumps(manifest), "utf-8")
    with pytest.raises(ArchiveError, match=f"{name}.*corrupt"):
        verify_backup(directory)

    path.write_text("{not json", "utf-8")
    with pytest.raises(ArchiveError, match="unreadable manifest"):
        verify_backup(directory)
    path.unlink()
    with pytest.raises(ArchiveError, match="no manifest.json"):
        verify_backup(directory)


def test_restore_refuses_a_revision_newer_than_the_code(case: Case, tmp_path: Path) -> None:
    source = case.new_database()
    _populate(source, memories=5)
    known = tmp_path / "known"
    backup(source, known, method=case.method)  # type: ignore[arg-type]

    # A database that a newer tiered-memory migrated: its backup is fine, but this code
    # cannot restore it.
    with _engine(source) as engine, engine.begin() as connection:
        connection.execute(sa.text(f"UPDATE alembic_version SET version_num = '{FUTURE_REVISION}'"))
    future = tmp_path / "future"
    info = backup(source, future, method=case.method)  # type: ignore[arg-type]
    assert info.revision == FUTURE_REVISION
    assert verify_backup(future) == info

    target = case.new_database()
    with pytest.raises(SchemaError, match=f"{FUTURE_REVISION}.*does not know"):
        restore_backup(target, future)
    result = _memctl("restore", str(future), url=target)
    assert result.exit_code == 1
    assert "does not know" in result.stderr

    # The same refusal when only the manifest claims the newer revision.
    path = known / "manifest.json"
    manifest = json.loads(path.read_text("utf-8"))
    manifest["revision"] = FUTURE_REVISION
    path.write_text(json.dumps(manifest), "utf-8")
    with pytest.raises(SchemaError, match="does not know"):
        restore_backup(target, known)
    assert _table_names(target) == set()


def test_restore_refuses_a_database_that_holds_rows(case: Case, tmp_path: Path) -> None:
    _, directory = _taken_backup(case, tmp_path, memories=5)
    target = case.new_database()
    with _open(target) as store:
        store.graph("someone").create_entities([{"name": "mine", "entityType": "thing"}])
    before = _checksums(target, CORE_TABLES)

    with pytest.raises(ArchiveError, match="not empty.*entities"):
        restore_backup(target, directory)
    assert _checksums(target, CORE_TABLES) == before


def test_restore_into_an_empty_database_that_already_has_a_schema(
    case: Case, tmp_path: Path
) -> None:
    """``Memory.open`` creates the schema at head, ``migrate --to`` an older one: an empty
    database is an empty database, whatever its revision."""
    _, directory = _taken_backup(case, tmp_path, memories=5)
    expected = verify_backup(directory).tables
    for revision in ("head", "0003"):
        target = case.new_database()
        with _engine(target) as engine:
            memory.ops.upgrade(engine, revision)
        result = restore_backup(target, directory)
        assert result.tables == expected
        with _engine(target) as engine:
            assert database_revision(engine) == memory.ops.head_revision()


# -- the backup directory -------------------------------------------------------------------------


def test_backup_refuses_a_directory_that_is_not_empty(case: Case, tmp_path: Path) -> None:
    source = case.new_database()
    _populate(source, memories=3)
    directory = tmp_path / "backup"
    directory.mkdir()
    (directory / "notes.txt").write_text("keep me", "utf-8")
    with pytest.raises(InvalidInputError, match="not empty"):
        backup(source, directory, method=case.method)  # type: ignore[arg-type]
    assert [path.name for path in directory.iterdir()] == ["notes.txt"]

    # An existing empty directory is fine.
    empty = tmp_path / "empty"
    empty.mkdir()
    assert backup(source, empty, method=case.method).tables  # type: ignore[arg-type]


def test_a_failed_backup_leaves_nothing_that_looks_complete(
    case: Case, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from memory.store import backup as _backup

    source = case.new_database()
    _populate(source, memories=3)

    def crash(staging: Path) -> Any:
        assert any(staging.iterdir())  # the data was written, the manifest not yet
        raise RuntimeError("power cut")

    monkeypatch.setattr(_backup, "_describe_files", crash)
    with pytest.raises(RuntimeError, match="power cut"):
        backup(source, tmp_path / "backup", method=case.method)  # type: ignore[arg-type]
    assert sorted(path.name for path in tmp_path.iterdir() if "backup" in path.name) == []


def test_backup_input_errors(tmp_path: Path) -> None:
    missing = tmp_path / "missing.db"
    with pytest.raises(InvalidInputError, match="does not exist"):
        backup(f"sqlite:///{missing}", tmp_path / "backup")
    assert not missing.exists()

    empty = f"sqlite:///{tmp_path / 'empty.db'}"
    with _engine(empty) as engine, engine.connect():
        pass
    with pytest.raises(SchemaError, match="no schema"):
        backup(empty, tmp_path / "backup")
    with pytest.raises(InvalidInputError, match="pg_dump backs up PostgreSQL"):
        backup(empty, tmp_path / "backup", method="pg_dump")
    with pytest.raises(InvalidInputError, match="method: must be one of"):
        backup(empty, tmp_path / "backup", method="tar")  # type: ignore[arg-type]
    assert not (tmp_path / "backup").exists()
    assert _leftovers(tmp_path) == []
    file = tmp_path / "a-file"
    file.write_text("x", "utf-8")
    with pytest.raises(InvalidInputError, match="not a directory"):
        backup(empty, file)


# -- choosing pg_dump or the logical export -------------------------------------------------------


def _fake_pg_dump(directory: Path, version: str) -> None:
    directory.mkdir()
    script = directory / "pg_dump"
    script.write_text(f"#!/bin/sh\necho 'pg_dump (PostgreSQL) {version}'\n", "utf-8")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)


def test_postgresql_falls_back_to_the_logical_export(
    make_postgres_database: Callable[[], str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = make_postgres_database()
    _populate(source, memories=3)
    assert backup(source, tmp_path / "auto").method == "pg_dump"

    # A pg_dump older than the server cannot dump it: auto takes the logical path, and
    # asking for pg_dump explicitly is refused with the reason.
    _fake_pg_dump(tmp_path / "old-bin", "9.6.24")
    monkeypatch.setenv("PATH", f"{tmp_path / 'old-bin'}{os.pathsep}{os.environ['PATH']}")
    assert backup(source, tmp_path / "old").method == "logical"
    with pytest.raises(ArchiveError, match="pg_dump 9 is older than the server"):
        backup(source, tmp_path / "forced", method="pg_dump")

    # No pg_dump at all.
    monkeypatch.setenv("PATH", str(tmp_path / "nowhere"))
    info = backup(source, tmp_path / "none")
    assert info.method == "logical"
    with pytest.raises(ArchiveError, match="pg_dump is not installed"):
        backup(source, tmp_path / "forced", method="pg_dump")
    assert not (tmp_path / "forced").exists()
    assert _leftovers(tmp_path) == []
    # Without pg_restore a logical backup still verifies and restores.
    target = make_postgres_database()
    assert restore_backup(target, tmp_path / "none").tables == info.tables


def test_a_pg_dump_backup_needs_pg_restore(
    make_postgres_database: Callable[[], str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = make_postgres_database()
    _populate(source, memories=3)
    backup(source, tmp_path / "backup", method="pg_dump")
    monkeypatch.setenv("PATH", str(tmp_path / "nowhere"))
    with pytest.raises(ArchiveError, match="pg_restore is not installed"):
        verify_backup(tmp_path / "backup")
    target = make_postgres_database()
    with pytest.raises(ArchiveError, match="pg_restore is not installed"):
        restore_backup(target, tmp_path / "backup")
    assert _table_names(target) == set()


# -- across backends ------------------------------------------------------------------------------


@pytest.mark.parametrize("direction", ["sqlite-to-postgresql", "postgresql-to-sqlite"])
def test_a_logical_backup_moves_between_backends(
    direction: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    source_backend, target_backend = (
        ("sqlite-file", "postgresql") if direction.startswith("sqlite") else
        ("postgresql", "sqlite-file")
    )
    source = _database_factory(source_backend, tmp_path, request)()
    target = _database_factory(target_backend, tmp_path, request)()
    _populate(source)
    info = backup(source, tmp_path / "backup", method="logical")
    result = restore_backup(target, tmp_path / "backup")
    # The canonical form does not depend on the backend: the same rows, the same checksums.
    assert result.tables == info.tables == _checksums(source, info.tables)
    with _open(target) as restored:
        scope = restored.scope(USER, AGENTS[1], "session-1")
        assert len(scope.list(limit=500)) == 29
        assert scope.add("after the move").id > 0


def test_a_native_backup_does_not_cross_backends(
    make_postgres_database: Callable[[], str], tmp_path: Path
) -> None:
    source = f"sqlite:///{tmp_path / 'source.db'}"
    _populate(source, memories=3)
    backup(source, tmp_path / "backup")
    target = make_postgres_database()
    with pytest.raises(InvalidInputError, match="sqlite backup of sqlite cannot be restored into "
                       "postgresql.*--method logical"):
        restore_backup(target, tmp_path / "backup")
    assert _table_names(target) == set()


# -- memctl ---------------------------------------------------------------------------------------


def test_memctl_backup_verify_and_restore(case: Case, tmp_path: Path) -> None:
    source = case.new_database()
    _populate(source, memories=5)
    directory = tmp_path / "backup"

    result = _memctl("backup", "--method", case.method, str(directory), url=source)
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"backup written: {directory}\n")
    assert f"backend {case.dialect}, method {case.method}, revision" in result.stdout
    assert "memories" in result.stdout

    result = _memctl("backup", "--verify", str(directory))
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"backup ok: {directory} matches its manifest\n")

    target = case.new_database()
    result = _memctl("restore", str(directory), url=target)
    assert result.exit_code == 0, result.output
    assert f"restored {directory} into {case.dialect}" in result.stdout
    assert "verified" in result.stdout
    assert _checksums(target, CORE_TABLES) == _checksums(source, CORE_TABLES)

    # Refusals: one line each, exit status 1.
    result = _memctl("restore", str(directory), url=target)
    assert result.exit_code == 1
    assert "not empty" in result.stderr
    result = _memctl("backup", str(directory), url=source)
    assert result.exit_code == 1
    assert "not empty" in result.stderr
    _flip_byte(directory / DATA_FILE[case.method])
    result = _memctl("backup", "--verify", str(directory))
    assert result.exit_code == 1
    assert "corrupt" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
