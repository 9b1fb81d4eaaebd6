"""Cold start (issue 17, item 7): a user's in-process index is written to a snapshot file
and a restarted store reads it back instead of reading every memory again, caught up from
the change log; a stale, corrupt, foreign or planted file is never used, and forget
deletes the user's file.
"""

from __future__ import annotations

import logging
import os
import shutil
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from memory import HashingEmbedder, Memory
from memory.search.postings import UserTerms
from memory.search.snapshots import CACHE_DIR_ENV, file_name, snapshot_directory
from memory.search.vectors import UserVectors

QUESTIONS = ["launch plan budget", "who reviewed the billing migration", "staging outage"]
CANARY = "zanzibarquokka"


@pytest.fixture(params=["sqlite-file", "postgresql"])
def url(
    request: pytest.FixtureRequest,
    url_for: Callable[[str], str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[str]:
    """A database on each backend whose index is held in process; on PostgreSQL the
    snapshots go to a configured directory (there is no default there)."""
    if request.param == "postgresql":
        monkeypatch.setenv(CACHE_DIR_ENV, str(tmp_path / "cache"))
    yield url_for(request.param)


def _directory(url: str) -> Path:
    from sqlalchemy.engine import make_url

    found = snapshot_directory(make_url(url), os.environ)
    assert found is not None
    return found


def _fill(store: Memory, user: str, count: int = 120) -> None:
    for agent in ("planner", "coder"):
        scope = store.scope(user, agent, session=f"{agent}-s1")
        scope.add_many(
            [
                f"{agent} note {n}: the launch plan budget {n % 7}, billing migration "
                f"reviewed by person{n % 5}, staging outage {n % 3}"
                for n in range(count // 2)
            ]
        )


def _results(store: Memory, user: str) -> list[list[tuple[int, float]]]:
    scope = store.scope(user, "planner")
    return [
        [(hit.memory.id, round(hit.score, 9)) for hit in scope.search(question, limit=10)]
        for question in QUESTIONS
    ]


def _fresh_results(
    url: str, user: str, monkeypatch: pytest.MonkeyPatch
) -> list[list[tuple[int, float]]]:
    """What a store that reads everything from the database answers."""
    with monkeypatch.context() as patched:
        patched.setenv(CACHE_DIR_ENV, "off")
        with Memory.open(url, embedder=HashingEmbedder()) as store:
            assert store._retriever._snapshots is None
            return _results(store, user)


def test_a_restarted_store_reads_the_snapshot_and_answers_alike(
    url: str, user: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with Memory.open(url, embedder=HashingEmbedder()) as store:
        _fill(store, user)
        before = _results(store, user)
        built = store._retriever._users[user], store._retriever._terms[user]
    directory = _directory(url)
    path = directory / file_name(user)
    # Written on close, 0600 in a 0700 directory, named by a digest only.
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert user not in path.name
    with Memory.open(url, embedder=HashingEmbedder()) as store:
        retriever = store._retriever
        # The file fills empty indexes exactly as they were built.
        vectors, terms = UserVectors(built[0].dimension), UserTerms()
        model = HashingEmbedder().model_name
        assert retriever._snapshots is not None
        loaded = store._db.read(
            lambda connection: retriever._snapshots.load(  # type: ignore[union-attr]
                connection, user, built[0].last_seq, model, vectors, terms
            )
        )
        assert loaded
        assert vectors.last_seq == built[0].last_seq
        for name, array in built[0].state().items():
            np.testing.assert_array_equal(vectors.state()[name], array, err_msg=name)
        for name, array in built[1].state().items():
            np.testing.assert_array_equal(terms.state()[name], array, err_msg=name)
        assert vectors.order._ids == built[0].order._ids
        assert _results(store, user) == before
        # Nothing changed since the file: nothing to write on close.
        assert retriever._unsaved[user] == 0
    assert before == _fresh_results(url, user, monkeypatch)


def test_changes_after_the_snapshot_are_caught_up_from_the_change_log(
    url: str, user: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with Memory.open(url, embedder=HashingEmbedder()) as store:
        _fill(store, user)
        _results(store, user)
    path = _directory(url) / file_name(user)
    written = path.stat().st_mtime_ns
    # Another process writes and deletes while this one is down, with snapshots off.
    with monkeypatch.context() as patched:
        patched.setenv(CACHE_DIR_ENV, "off")
        with Memory.open(url, embedder=HashingEmbedder()) as other:
            scope = other.scope(user, "planner", session="planner-s1")
            gone = scope.search("launch plan budget", limit=3)[0].memory.id
            scope.delete(gone)
            scope.add_many([f"the launch plan budget was cut by person{n}" for n in range(5)])
            changed = scope.search("staging outage", limit=1)[0].memory
            scope.update(changed.id, content="billing", version=changed.version)
    assert path.stat().st_mtime_ns == written
    with Memory.open(url, embedder=HashingEmbedder()) as store:
        after = _results(store, user)
        assert gone not in {memory_id for hits in after for memory_id, _ in hits}
        assert store._retriever._unsaved[user] > 0  # the snapshot was behind
    assert after == _fresh_results(url, user, monkeypatch)
    assert path.stat().st_mtime_ns != written  # written again on close


def _planted(
    url: str,
    user: str,
    plant: Callable[[Path], None],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> str:
    """Plant something at ``user``'s snapshot, restart, and return the warning logged."""
    with Memory.open(url, embedder=HashingEmbedder()) as store:
        _fill(store, user)
        _results(store, user)
    path = _directory(url) / file_name(user)
    plant(path)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="memory.search.snapshots"):
        with Memory.open(url, embedder=HashingEmbedder()) as store:
            answered = _results(store, user)
    assert answered == _fresh_results(url, user, monkeypatch)
    return " ".join(record.getMessage() for record in caplog.records)


def test_a_corrupt_snapshot_is_logged_deleted_and_rebuilt(
    url: str, user: str, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    def corrupt(path: Path) -> None:
        data = bytearray(path.read_bytes())
        middle = len(data) // 2
        data[middle : middle + 64] = bytes(64)  # inside an array: its CRC catches it
        path.write_bytes(bytes(data))

    logged = _planted(url, user, corrupt, caplog, monkeypatch)
    assert "not used (unreadable" in logged
    assert file_name(user) in logged and user not in logged


def test_a_truncated_snapshot_is_not_used(
    url: str, user: str, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    def truncate(path: Path) -> None:
        os.truncate(path, path.stat().st_size // 3)

    assert "not used (unreadable" in _planted(url, user, truncate, caplog, monkeypatch)


def test_another_users_snapshot_under_this_users_name_is_not_used(
    url: str, user: str, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = f"{user}-other"
    with Memory.open(url, embedder=HashingEmbedder()) as store:
        store.scope(other, "planner").add_many([f"{CANARY} secret {n}" for n in range(30)])
        store.scope(other, "planner").search(CANARY)

    def swap(path: Path) -> None:
        shutil.copyfile(path.with_name(file_name(other)), path)

    logged = _planted(url, user, swap, caplog, monkeypatch)
    assert "not used" in logged
    with Memory.open(url, embedder=HashingEmbedder()) as store:
        hits = store.scope(user, "planner").search(CANARY, limit=50)
        assert hits and {hit.memory.user_id for hit in hits} == {user}
        assert not [hit for hit in hits if CANARY in hit.memory.content]


def test_a_planted_symlink_is_not_followed(
    url: str,
    user: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    target = tmp_path / "precious.txt"
    target.write_text("keep me")

    def plant(path: Path) -> None:
        path.unlink()
        path.symlink_to(target)

    assert "not used (unreadable" in _planted(url, user, plant, caplog, monkeypatch)
    assert target.read_text() == "keep me"
    path = _directory(url) / file_name(user)
    assert path.exists() and not path.is_symlink()  # replaced by a real snapshot on close


def test_a_directory_that_is_a_symlink_is_not_written_through(
    url: str, user: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    directory = _directory(url)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    directory.parent.mkdir(parents=True, exist_ok=True)
    directory.symlink_to(elsewhere)
    with caplog.at_level(logging.WARNING, logger="memory.search.snapshots"):
        with Memory.open(url, embedder=HashingEmbedder()) as store:
            _fill(store, user)
            assert _results(store, user)[0]
    assert list(elsewhere.iterdir()) == []
    assert "not written" in caplog.text


def test_forget_deletes_the_users_snapshot(url: str, user: str) -> None:
    kept = f"{user}-kept"
    with Memory.open(url, embedder=HashingEmbedder(), role="admin") as store:
        store.scope(user, "planner").add_many([f"{CANARY} diary {n}" for n in range(40)])
        store.scope(kept, "planner").add_many([f"ordinary note {n}" for n in range(40)])
        store.scope(user, "planner").search(CANARY)
        store.scope(kept, "planner").search("note")
    directory = _directory(url)
    assert (directory / file_name(user)).exists()
    with Memory.open(url, embedder=HashingEmbedder(), role="admin") as store:
        store.scope(user, "planner").add(f"{CANARY} one more")
        store.scope(user, "planner").search(CANARY)  # held, with a change not saved yet
        assert store._retriever._unsaved[user] == 1
        store.forget_user(user)
        assert not (directory / file_name(user)).exists()
        assert store._retriever.save_snapshots() == 0  # closing writes nothing of theirs
    assert (directory / file_name(kept)).exists()
    for path in directory.iterdir():
        assert CANARY.encode() not in path.read_bytes()


def test_a_user_forgotten_by_another_process_is_never_served_from_the_file(
    url: str, user: str, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    with Memory.open(url, embedder=HashingEmbedder()) as store:
        store.scope(user, "planner").add_many([f"{CANARY} diary {n}" for n in range(40)])
        store.scope(user, "planner").search(CANARY)
    path = _directory(url) / file_name(user)
    assert path.exists()
    # Another host forgets the user (its own cache directory, no bus) and they come back.
    with monkeypatch.context() as patched:
        patched.setenv(CACHE_DIR_ENV, "off")
        with Memory.open(url, embedder=HashingEmbedder(), role="admin") as other:
            other.forget_user(user)
            other.scope(user, "planner").add_many([f"{CANARY} fresh start {n}" for n in range(45)])
    assert path.exists()
    with caplog.at_level(logging.WARNING, logger="memory.search.snapshots"):
        with Memory.open(url, embedder=HashingEmbedder()) as store:
            found = {
                hit.memory.content for hit in store.scope(user, "planner").search(CANARY, limit=50)
            }
    assert found == {f"{CANARY} fresh start {n}" for n in range(45)}
    assert "no longer in the change log" in caplog.text


def test_hearing_of_a_forget_elsewhere_sweeps_the_snapshots_that_no_longer_match(
    url: str, user: str
) -> None:
    kept = f"{user}-kept"
    with Memory.open(url, embedder=HashingEmbedder()) as store:
        for name in (user, kept):
            store.scope(name, "planner").add_many([f"{CANARY} {name} {n}" for n in range(30)])
            store.scope(name, "planner").search(CANARY)
    directory = _directory(url)
    with Memory.open(url, embedder=HashingEmbedder(), role="admin") as store:
        # Forgotten as by another process: the rows go, the file stays until the sweep.
        from memory.store.forget import forget_user

        forget_user(store._db, user, "admin")
        assert (directory / file_name(user)).exists()
        store._retriever.forget(None)  # what hearing a user.forget event does
        assert not (directory / file_name(user)).exists()
        assert (directory / file_name(kept)).exists()


def test_a_snapshot_newer_than_a_restored_database_is_not_used(
    url_for: Callable[[str], str],
    user: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Restored from a backup, the database numbers its next changes and memories as the
    lost ones were: the snapshot of the lost ones matches by numbers, not by content."""
    url = url_for("sqlite-file")
    database = tmp_path / "memory.db"
    with Memory.open(url, embedder=HashingEmbedder()) as store:
        store.scope(user, "planner").add_many([f"kept note {n}" for n in range(20)])
    shutil.copyfile(database, tmp_path / "backup.db")
    with Memory.open(url, embedder=HashingEmbedder()) as store:
        store.scope(user, "planner").add_many([f"lost {CANARY} note {n}" for n in range(20)])
        store.scope(user, "planner").search(CANARY)  # the snapshot holds the lost notes
    for leftover in tmp_path.glob("memory.db-*"):
        leftover.unlink()
    shutil.copyfile(tmp_path / "backup.db", database)
    (tmp_path / "backup.db").unlink()
    with monkeypatch.context() as patched:
        patched.setenv(CACHE_DIR_ENV, "off")
        with Memory.open(url, embedder=HashingEmbedder()) as store:
            store.scope(user, "planner").add_many([f"rewritten note {n}" for n in range(20)])
    with caplog.at_level(logging.WARNING, logger="memory.search.snapshots"):
        with Memory.open(url, embedder=HashingEmbedder()) as store:
            hits = store.scope(user, "planner").search(f"{CANARY} rewritten", limit=5)
    assert "restored from a backup" in caplog.text
    assert hits and all(hit.keyword_score > 0 for hit in hits)
    assert all("rewritten" in hit.memory.content for hit in hits)
