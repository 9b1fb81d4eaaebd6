"""Sync is opt-in per store (``memory.ops.sync.enable``): a store where it was never enabled
logs nothing; enabling logs the memories already there; enabling from another ``Memory``
while one writes loses no change. Real SQLite files and the real PostgreSQL server."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

import memory.ops.sync as sync
import memory.store.sync
from memory import HashingEmbedder, Memory, SchemaError

from .conftest import copied_sqlite

SYNC_TABLES = ("sync_node", "sync_vectors", "sync_changes", "sync_memories")


@pytest.fixture(params=["sqlite-file", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh migrated database of its own on the backend."""
    if request.param == "sqlite-file":
        return copied_sqlite(request.getfixturevalue("sqlite_template"), tmp_path)
    factory: Callable[[], str] = request.getfixturevalue("postgres_template")
    return factory()


@pytest.fixture
def opener(database_url: str) -> Iterator[Callable[[], Memory]]:
    """Opens ``Memory`` objects over the database (each its own engine), all closed after."""
    opened: list[Memory] = []

    def open_() -> Memory:
        store = Memory.open(database_url, embedder=HashingEmbedder())
        opened.append(store)
        return store

    yield open_
    for store in opened:
        store.close()


def _counts(database_url: str) -> dict[str, int]:
    engine = sa.create_engine(database_url)
    try:
        with engine.connect() as connection:
            return {
                name: connection.execute(sa.text(f"SELECT count(*) FROM {name}")).scalar_one()
                for name in SYNC_TABLES
            }
    finally:
        engine.dispose()


def _logged_as_stored(database_url: str) -> bool:
    """Whether the live sync states are exactly the stored memories: no add, and no
    delete, that the seed and the writes failed to log."""
    engine = sa.create_engine(database_url)
    try:
        with engine.connect() as connection:
            stored = set(connection.execute(sa.text("SELECT id FROM memories")).scalars())
            live = connection.execute(
                sa.text("SELECT memory_id FROM sync_memories WHERE NOT deleted")
            ).scalars().all()
    finally:
        engine.dispose()
    return len(live) == len(set(live)) and set(live) == stored


def test_a_store_without_sync_logs_nothing(
    opener: Callable[[], Memory], database_url: str
) -> None:
    store = opener()
    scope = store.scope(user="ada", agent="planner")
    first = scope.add("the deploy runs on fridays")
    scope.add_many([f"note {n}" for n in range(5)])
    scope.delete(first.id)

    assert _counts(database_url) == dict.fromkeys(SYNC_TABLES, 0)
    with pytest.raises(SchemaError, match="sync is not enabled"):
        sync.local_node(store)


def test_enabling_logs_the_memories_already_there_once(
    opener: Callable[[], Memory], database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Seeded 3 memories per statement set, so that 7 take three.
    monkeypatch.setattr(memory.store.sync, "_SEED_CHUNK", 3)
    store = opener()
    scope = store.scope(user="ada", agent="planner")
    scope.add_many([f"note {n}" for n in range(7)])
    gone = scope.add("deleted before sync was enabled")
    scope.delete(gone.id)

    node = sync.enable(store)

    counts = _counts(database_url)
    assert counts == {"sync_node": 1, "sync_vectors": 1, "sync_changes": 7, "sync_memories": 7}
    assert _logged_as_stored(database_url)
    assert [seq for _, seq in node.vector.items()] == [7]  # one tier, changes 1..7
    # Idempotent: the same node, nothing logged twice.
    assert sync.enable(opener()) == node
    assert _counts(database_url) == counts
    # From now on writes are logged.
    scope.add("written after enabling")
    assert _counts(database_url)["sync_changes"] == 8
    assert _logged_as_stored(database_url)


def test_enabling_while_another_memory_writes_loses_no_change(
    opener: Callable[[], Memory], database_url: str
) -> None:
    writer, enabler = opener(), opener()
    scope = writer.scope(user="ada", agent="planner")
    scope.add_many([f"before {n}" for n in range(20)])
    started = threading.Event()
    failures: list[BaseException] = []
    written: list[int] = []

    def write() -> None:
        try:
            for n in range(60):
                memory = scope.add(f"during {n}")
                written.append(memory.id)
                if n == 5:
                    started.set()
                if n % 7 == 0:
                    scope.delete(written.pop(0))
        except BaseException as error:  # reported by the main thread
            failures.append(error)
            started.set()

    thread = threading.Thread(target=write)
    thread.start()
    assert started.wait(30)
    node = sync.enable(enabler)
    thread.join(60)
    assert not thread.is_alive() and failures == []

    # Every memory has its live sync state and every deleted one its tombstone; the
    # node's sequences count exactly the changes logged (gapless).
    assert _logged_as_stored(database_url)
    vector = sync.local_node(writer).vector
    counts = _counts(database_url)
    assert sum(seq for _, seq in vector.items()) == counts["sync_changes"]
    assert {key for key, _ in vector.items()} == {key for key, _ in node.vector.items()}
