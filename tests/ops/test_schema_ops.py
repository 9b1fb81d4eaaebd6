"""The schema and archive verbs of ``memory.ops``, without the CLI, on SQLite and PostgreSQL:
migrate never goes backwards, rollback needs a schema and archives what it drops, check
raises when the schema is not at head, and an archive comes back through restore_archive."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa

from memory import HashingEmbedder, InvalidInputError, Memory, SchemaError
from memory import ops as ops

PHASE_1_REVISION = "0003"


@pytest.fixture(params=["sqlite-file", "postgresql"])
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database with no schema: a new SQLite file, or a new PostgreSQL database."""
    if request.param == "sqlite-file":
        return f"sqlite:///{tmp_path / 'ops.db'}"
    make: Callable[[], str] = request.getfixturevalue("make_postgres_database")
    return make()


def revision_of(url: str) -> str | None:
    return ops.current(url).revision


def test_migrate_from_empty_then_again_changes_nothing(empty_url: str) -> None:
    first = ops.migrate(empty_url)
    assert (first.before, first.after, first.changed) == (None, ops.head_revision(), True)
    again = ops.migrate(empty_url)
    assert (again.before, again.after, again.changed) == (first.after, first.after, False)


def test_migrate_refuses_to_go_back_and_names_rollback(empty_url: str) -> None:
    ops.migrate(empty_url)
    with pytest.raises(InvalidInputError) as refused:
        ops.migrate(empty_url, PHASE_1_REVISION)
    assert str(refused.value) == (
        f"the database is at {ops.head_revision()}, already past {PHASE_1_REVISION}; "
        f"to go back, use: memctl rollback --to {PHASE_1_REVISION}"
    )
    assert revision_of(empty_url) == ops.head_revision()


def test_migrate_step_by_step_and_to_an_unknown_revision(empty_url: str) -> None:
    assert ops.migrate(empty_url, PHASE_1_REVISION).after == PHASE_1_REVISION
    with pytest.raises(InvalidInputError, match="revision '9999' is unknown"):
        ops.migrate(empty_url, "9999")
    assert revision_of(empty_url) == PHASE_1_REVISION
    assert ops.migrate(empty_url, "head").after == ops.head_revision()


def test_rollback_needs_a_schema(empty_url: str, tmp_path: Path) -> None:
    with pytest.raises(SchemaError, match="the database has no schema; nothing to roll back"):
        ops.rollback(empty_url, archive_dir=tmp_path / "archive")
    assert revision_of(empty_url) is None
    assert not (tmp_path / "archive").exists()


def test_rollback_archives_dropped_rows_and_restore_archive_brings_them_back(
    empty_url: str, tmp_path: Path
) -> None:
    with Memory.open(empty_url, embedder=HashingEmbedder()) as memory:
        memory.scope("ada", "planner").add("Ada prefers short answers", tier="semantic")
    archive = tmp_path / "archive"

    done = ops.rollback(empty_url, PHASE_1_REVISION, archive)

    assert (done.before, done.after, done.archive) == (ops.head_revision(), PHASE_1_REVISION,
                                                       archive)
    assert ops.verify_archive(archive)["memories"].rows == 1
    ops.migrate(empty_url)
    restored = ops.restore_archive(empty_url, archive)
    assert restored["memories"] == 1
    with Memory.open(empty_url, embedder=HashingEmbedder()) as memory:
        contents = [item.content for item in memory.scope("ada", "planner").list()]
    assert contents == ["Ada prefers short answers"]


def test_rollback_of_a_step_that_drops_no_rows_writes_no_archive(
    empty_url: str, tmp_path: Path
) -> None:
    ops.migrate(empty_url, PHASE_1_REVISION)
    done = ops.rollback(empty_url, archive_dir=tmp_path / "archive")
    assert done.before == PHASE_1_REVISION
    assert done.after is not None and done.after != PHASE_1_REVISION
    assert done.archive is None


def test_the_default_archive_directory_names_the_revision_and_the_utc_time() -> None:
    moment = datetime(2026, 12, 7, 16, 5, 9, tzinfo=UTC)
    assert ops.default_archive_directory("0010", moment) == Path(
        "memory-archive-0010-20261207T160509Z"
    )


def test_current_and_check(empty_url: str) -> None:
    empty = ops.current(empty_url)
    assert (empty.revision, empty.head, empty.at_head) == (None, ops.head_revision(), False)
    assert [item.revision for item in empty.revisions] == [
        item.revision for item in ops.history()
    ]
    assert empty.revisions[-1].revision == ops.head_revision()
    with pytest.raises(ops.NotAtHeadError) as behind:
        ops.check(empty_url)
    assert behind.value.status == empty
    assert str(behind.value) == f"database at empty, head is {ops.head_revision()}"

    ops.migrate(empty_url, PHASE_1_REVISION)
    with pytest.raises(ops.NotAtHeadError, match=f"database at {PHASE_1_REVISION}, head is"):
        ops.check(empty_url)

    ops.migrate(empty_url)
    assert ops.check(empty_url).at_head


def test_verbs_accept_an_engine_and_leave_it_open(empty_url: str) -> None:
    engine = ops.create_engine(empty_url)
    try:
        assert ops.migrate(engine).after == ops.head_revision()
        with engine.connect() as connection:  # still usable: the verb did not dispose it
            assert connection.execute(sa.text("SELECT 1")).scalar() == 1
    finally:
        engine.dispose()


def test_backup_and_restore_through_urls(tmp_path: Path) -> None:
    source = f"sqlite:///{tmp_path / 'source.db'}"
    with Memory.open(source, embedder=HashingEmbedder()) as memory:
        memory.scope("ada", "planner").add("kept across the backup", tier="semantic")
    info = ops.backup(source, tmp_path / "backup")
    assert ops.verify_backup(tmp_path / "backup") == info
    target = f"sqlite:///{tmp_path / 'target.db'}"
    result = ops.restore_backup(target, tmp_path / "backup")
    assert (result.rows, result.backup.revision) == (info.rows, ops.head_revision())
