"""Forget clears the bytes from the SQLite files, or says it has not yet (issue 16, finding
3): ``secure_delete`` on every connection whatever the build's default, a bounded retry of
the checkpoint a reader blocks, a report and a metric when the WAL still holds the rows, a
background retry that finishes the job, and ``memctl forget --json`` saying all of it.
"""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from memory import HashingEmbedder, Memory
from memory.cli import main
from memory.store import forget as forget_module
from memory.telemetry import instruments as telemetry


def _raw(database: Path) -> bytes:
    found = b""
    for suffix in ("", "-wal", "-journal"):
        path = database.with_name(database.name + suffix)
        if path.exists():
            found += path.read_bytes()
    return found


def _populate(store: Memory, user: str, canary: str) -> None:
    scope = store.scope(user, "planner", f"s-{canary}")
    scope.add(f"the launch code is {canary}", metadata={"secret": canary})
    scope.set_preference(f"pref-{canary}", canary)
    scope.save_state({"note": canary})
    scope.merge_context({"patch": canary})
    scope.record_pattern("python", f"pattern-{canary}", f"print('{canary}')")
    store.graph(user).create_entities(
        [{"name": f"entity-{canary}", "entityType": "t", "observations": [f"seen {canary}"]}]
    )


@contextmanager
def _reader_holding_a_snapshot(database: Path) -> Iterator[None]:
    """Another process's reader in the middle of a read transaction."""
    reader = sqlite3.connect(database, isolation_level=None)
    try:
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM memories").fetchone()
        yield
    finally:
        reader.execute("COMMIT")
        reader.close()


def _incomplete() -> float:
    return telemetry.totals().counter("memory.forget.incomplete")


def test_a_reader_blocks_the_checkpoint_and_forget_says_so_then_finishes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(forget_module, "CHECKPOINT_WAIT_SECONDS", 0.3)
    monkeypatch.setattr(forget_module, "BACKGROUND_RETRY_SECONDS", 0.1)
    database = tmp_path / "memory.db"
    canary = f"canary{uuid.uuid4().hex}"
    user = f"victim-{canary}"
    before = _incomplete()
    with Memory.open(f"sqlite:///{database}", embedder=HashingEmbedder(), role="admin") as store:
        _populate(store, user, canary)
        with _reader_holding_a_snapshot(database):
            report = store.forget_user(user)
            assert report.found and report.bytes_cleared is False and not report.complete
            assert canary.encode() in _raw(database)  # the WAL still has it: said, not hidden
            if telemetry.enabled():
                assert _incomplete() == before + 1
        # The reader let go: the background checkpoint finishes the job.
        deadline = time.monotonic() + 10
        while canary.encode() in _raw(database):
            assert time.monotonic() < deadline, "the background checkpoint never cleared it"
            time.sleep(0.05)
    assert user.encode() not in _raw(database)


def test_without_a_reader_the_bytes_are_gone_at_once(tmp_path: Path) -> None:
    database = tmp_path / "memory.db"
    canary = f"canary{uuid.uuid4().hex}"
    with Memory.open(f"sqlite:///{database}", embedder=HashingEmbedder(), role="admin") as store:
        _populate(store, f"victim-{canary}", canary)
        report = store.forget_user(f"victim-{canary}")
        assert report.bytes_cleared is True and report.complete
        assert canary.encode() not in _raw(database)


def test_secure_delete_forced_off_at_connect_leaves_no_canary(tmp_path: Path) -> None:
    """SQLite's stock default is secure_delete off (this machine's build has it on): rows
    deleted or rewritten before the forget, by ordinary calls on any connection, must not
    leave their old bytes in free pages."""
    database = tmp_path / "memory.db"
    canary = f"canary{uuid.uuid4().hex}"
    user = f"victim-{canary}"
    with Memory.open(f"sqlite:///{database}", embedder=HashingEmbedder(), role="admin") as store:

        def stock_default(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.execute("PRAGMA secure_delete=OFF")

        # First among the connect hooks: the build's default, before the library's settings.
        sa.event.listen(store.engine, "connect", stock_default, insert=True)
        store.engine.dispose()
        try:
            _populate(store, user, canary)
            scope = store.scope(user, "planner", f"s-{canary}")
            scope.delete_preference(f"pref-{canary}")
            store.graph(user).delete_observations(
                [{"entityName": f"entity-{canary}", "observations": [f"seen {canary}"]}]
            )
            for record in scope.list():
                scope.delete(record.id)
            report = store.forget_user(user)
        finally:
            sa.event.remove(store.engine, "connect", stock_default)
        assert report.bytes_cleared is True
    raw = _raw(database)
    for needle in (canary, user, f"pref-{canary}", f"s-{canary}"):
        assert needle.encode() not in raw, needle


def test_memctl_forget_json_reports_what_it_removed_and_the_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(forget_module, "CHECKPOINT_WAIT_SECONDS", 0.3)
    database = tmp_path / "memory.db"
    url = f"sqlite:///{database}"
    canary = f"canary{uuid.uuid4().hex}"
    with Memory.open(url, embedder=HashingEmbedder()) as store:
        _populate(store, "ada", canary)
    runner = CliRunner()
    command = ["--database-url", url, "forget", "--user", "ada", "--yes", "--json"]

    with _reader_holding_a_snapshot(database):
        held = runner.invoke(main, command)
    assert held.exit_code == 3, held.output
    report = json.loads(held.stdout)
    assert report["user"] == "ada" and report["found"] is True
    assert report["rows"]["memories"] == 1 and report["rows"]["user_preferences"] == 1
    assert report["rows_removed"] == sum(report["rows"].values())
    assert report["bytes_cleared"] is False and report["complete"] is False

    again = runner.invoke(main, command)
    assert again.exit_code == 0, again.output
    report = json.loads(again.stdout)
    assert report["found"] is False and report["bytes_cleared"] is True
    assert canary.encode() not in _raw(database)

    text = runner.invoke(main, ["--database-url", url, "forget", "--user", "ada", "--yes"])
    assert text.exit_code == 0
    assert "nothing to forget: user 'ada' has no rows or events" in text.stdout
    assert "0 rows removed" not in text.stdout
    assert "the bytes are gone from the database files" in text.stdout
