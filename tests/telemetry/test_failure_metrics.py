"""The failures the critical alerts watch are counted where they happen: a connection that
cannot be made, a migration that fails, an archive or backup whose checksum does not match,
and every retention cleanup run, by status."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import sqlalchemy as sa

from memory import Memory
from memory.core.errors import ArchiveError, SchemaError
from memory.ops import cleanup
from memory.search.embeddings import HashingEmbedder
from memory.store import schema
from memory.store.archive import verify_archive
from memory.store.backup import backup, verify_backup
from memory.store.engine import create_engine
from memory.telemetry import instruments as telemetry


def counted(name: str, **match: str) -> float:
    return telemetry.totals().counter(name, **match)


def test_a_connection_that_cannot_be_made_is_counted() -> None:
    # Port 1 on the loopback refuses at once: a real connection attempt that fails.
    engine = create_engine("postgresql+psycopg://postgres@127.0.0.1:1/test")
    before = counted(telemetry.DB_CONNECTION_FAILURES, backend="postgresql")
    try:
        with pytest.raises(sa.exc.OperationalError), engine.connect():
            pass
    finally:
        engine.dispose()
    assert counted(telemetry.DB_CONNECTION_FAILURES, backend="postgresql") == before + 1


def test_statements_that_fail_are_not_connection_failures(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'x.db'}")
    before = counted(telemetry.DB_CONNECTION_FAILURES)
    try:
        with pytest.raises(sa.exc.OperationalError), engine.connect() as connection:
            connection.exec_driver_sql("SELECT * FROM no_such_table")
    finally:
        engine.dispose()
    assert counted(telemetry.DB_CONNECTION_FAILURES) == before


def test_a_failed_migration_is_counted(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'x.db'}")
    try:
        schema.upgrade(engine)
        with engine.begin() as connection:
            connection.exec_driver_sql("UPDATE alembic_version SET version_num = 'zzzz'")
        before = counted(telemetry.MIGRATION_FAILURES)
        with pytest.raises(SchemaError, match="zzzz"):
            schema.upgrade(engine)
        assert counted(telemetry.MIGRATION_FAILURES) == before + 1
        with engine.begin() as connection:
            connection.exec_driver_sql(
                f"UPDATE alembic_version SET version_num = '{schema.head_revision()}'"
            )
        schema.upgrade(engine)  # nothing to do, nothing failed
        assert counted(telemetry.MIGRATION_FAILURES) == before + 1
    finally:
        engine.dispose()


def test_an_archive_that_does_not_match_its_manifest_is_counted(tmp_path: Path) -> None:
    (tmp_path / "memories.jsonl").write_text('{"id": 1}\n', "utf-8")
    manifest = {
        "format": 1,
        "tables": {"memories": {"file": "memories.jsonl", "rows": 1, "sha256": "0" * 64}},
    }
    (tmp_path / "manifest.json").write_text(json.dumps(manifest), "utf-8")
    before = counted(telemetry.INTEGRITY_FAILURES, check="archive")
    with pytest.raises(ArchiveError, match="corrupt"):
        verify_archive(tmp_path)
    assert counted(telemetry.INTEGRITY_FAILURES, check="archive") == before + 1


def test_a_backup_that_fails_verification_is_counted(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'x.db'}"
    with Memory.open(url, embedder=HashingEmbedder()) as memory:
        memory.scope("ada", "planner").add("a memory")
    engine = create_engine(url)
    try:
        backup(engine, tmp_path / "backup")
    finally:
        engine.dispose()
    verify_backup(tmp_path / "backup")  # intact: not counted
    before = counted(telemetry.INTEGRITY_FAILURES, check="backup")
    copy = next(path for path in (tmp_path / "backup").iterdir() if path.suffix == ".db")
    damaged = bytearray(copy.read_bytes())
    damaged[len(damaged) // 2] ^= 0xFF  # one flipped byte: the checksum no longer matches
    copy.write_bytes(bytes(damaged))
    with pytest.raises(ArchiveError, match="corrupt"):
        verify_backup(tmp_path / "backup")
    assert counted(telemetry.INTEGRITY_FAILURES, check="backup") == before + 1


def test_cleanup_runs_are_counted_by_status(tmp_path: Path) -> None:
    with Memory.open(f"sqlite:///{tmp_path / 'x.db'}", embedder=HashingEmbedder()) as memory:
        before = counted(telemetry.CLEANUP_RUNS, status="ok")
        assert cleanup(memory).status == "ok"
        assert counted(telemetry.CLEANUP_RUNS, status="ok") == before + 1
        cleanup(memory, dry_run=True)  # a dry run is not a run
        assert counted(telemetry.CLEANUP_RUNS, status="ok") == before + 1
