"""Hostile inputs get a clear error from the error tree and write nothing (issue 16,
finding 10): JSON nested past the depth limit, integers past the database's range, and a
database that is full.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from memory import HashingEmbedder, InvalidInputError, Memory, MemoryStoreError, StorageError
from memory.core.inputs import MAX_JSON_DEPTH


def _nested(depth: int) -> Any:
    value: Any = "leaf"
    for _ in range(depth):
        value = {"k": value}
    return value


def _events(memory: Memory) -> int:
    with memory.engine.connect() as connection:
        return int(connection.execute(sa.text("SELECT count(*) FROM memory_events")).scalar_one())


CALLS: dict[str, Callable[[Any, Any], object]] = {
    "metadata": lambda scope, value: scope.add("note", metadata={"deep": value}),
    "preference": lambda scope, value: scope.set_preference("deep", value),
    "state": lambda scope, value: scope.save_state({"deep": value}),
    "merge_context": lambda scope, value: scope.merge_context({"deep": value}),
    "record_event": lambda scope, value: scope.record_event("task.deep", {"deep": value}),
    "update": lambda scope, value: scope.update(
        scope.add("to update").id, version=1, metadata={"deep": value}
    ),
}


@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH + 1, 1_200, 50_000])
@pytest.mark.parametrize("call", sorted(CALLS))
def test_deeply_nested_json_is_refused_by_name(
    memory: Memory, user: str, call: str, depth: int
) -> None:
    scope = memory.scope(user, "planner", "s1")
    before = _events(memory) + (1 if call == "update" else 0)
    with pytest.raises(InvalidInputError, match=f"nested.*at most {MAX_JSON_DEPTH}"):
        CALLS[call](scope, _nested(depth))
    assert _events(memory) == before


def test_json_at_the_depth_limit_is_accepted(memory: Memory, user: str) -> None:
    scope = memory.scope(user, "planner", "s1")
    # The key itself is one level: the value may nest one less.
    scope.set_preference("deep", _nested(MAX_JSON_DEPTH - 1))


@pytest.mark.parametrize("value", [2**63, 2**70, -(2**70)])
def test_integers_past_the_database_range_are_refused(
    memory: Memory, user: str, value: int
) -> None:
    scope = memory.scope(user, "planner", "s1")
    note = scope.add("a note")
    for call in (
        lambda: scope.list(before_id=value),
        lambda: scope.update(note.id, version=value, content="x"),
        lambda: scope.merge_context({"a": 1}, seen=value),
        lambda: scope.get(value),
    ):
        with pytest.raises(InvalidInputError):
            call()


def test_a_full_database_is_a_storage_error_and_writes_nothing(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'memory.db'}"
    with Memory.open(url, embedder=HashingEmbedder()) as memory:
        scope = memory.scope("ada", "planner")
        scope.add("first")
        with memory.engine.connect() as connection:
            pages = int(connection.exec_driver_sql("PRAGMA page_count").scalar_one())

        # A real SQLITE_FULL: the file may not grow past its current size.
        @sa.event.listens_for(memory.engine, "connect")
        def _cap(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.execute(f"PRAGMA max_page_count = {pages}")

        memory.engine.dispose()
        count = len(scope.list())
        with pytest.raises(StorageError, match="full") as raised:
            for number in range(2_000):
                scope.add(f"filler {number} " + "x" * 4_000)
        assert isinstance(raised.value, MemoryStoreError)
        sa.event.remove(memory.engine, "connect", _cap)
        memory.engine.dispose()
        # What failed wrote nothing: every row there has its event, and verifies.
        assert len(scope.list(limit=1000)) >= count
        assert memory.verify_events().ok
