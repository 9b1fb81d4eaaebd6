"""Per-user quotas (issue 16, finding 8, in part): a configurable limit on memories per
user, and the shared context of a session held to the state limit, each with a clear
error that writes nothing.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
import sqlalchemy as sa

from memory import HashingEmbedder, InvalidInputError, Memory, QuotaExceededError
from memory.core.inputs import MAX_STATE_BYTES
from memory.store.graph import MAX_IMPORT_LINE_CHARS


def _events(store: Memory) -> int:
    with store.engine.connect() as connection:
        return int(connection.execute(sa.text("SELECT count(*) FROM memory_events")).scalar_one())


@pytest.mark.parametrize("backend", ["sqlite-file", "postgresql"])
def test_the_memory_quota_refuses_the_write_past_it(
    backend: str, url_for: Callable[[str], str], user: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MEMORY_MAX_MEMORIES_PER_USER", "3")
    with Memory.open(url_for(backend), embedder=HashingEmbedder()) as store:
        scope = store.scope(user, "planner")
        for number in range(3):
            scope.add(f"note {number}")
        scope.add("note 0")  # already held: costs nothing
        before = _events(store)
        with pytest.raises(QuotaExceededError, match="quota is 3.*MEMORY_MAX_MEMORIES_PER_USER"):
            scope.add("one too many")
        with pytest.raises(QuotaExceededError):
            scope.add_many(["a", "b"])
        assert len(scope.list()) == 3 and _events(store) == before
        # Another user has a quota of their own.
        store.scope(f"other-{user}", "planner").add("fine")


def test_a_bad_quota_setting_is_named(
    url_for: Callable[[str], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MEMORY_MAX_MEMORIES_PER_USER", "٣")
    with pytest.raises(InvalidInputError, match="MEMORY_MAX_MEMORIES_PER_USER"):
        Memory.open(url_for("sqlite-file"), embedder=None)


@pytest.mark.parametrize("backend", ["sqlite-file", "postgresql"])
def test_merge_context_keeps_to_the_state_limit(
    backend: str, url_for: Callable[[str], str], user: str
) -> None:
    with Memory.open(url_for(backend), embedder=None) as store:
        scope = store.scope(user, "planner", "s1")
        chunk = "x" * (MAX_STATE_BYTES // 3)
        for key in ("a", "b"):
            scope.merge_context({key: chunk})
        before = _events(store)
        with pytest.raises(QuotaExceededError, match="merged context would be"):
            scope.merge_context({"c": chunk, "d": chunk})
        assert _events(store) == before
        assert set(scope.load_state().state) == {"a", "b"}  # type: ignore[union-attr]
        scope.merge_context({"a": None, "c": chunk})  # making room works


def test_import_mcp_refuses_a_huge_line_before_parsing_it(
    url_for: Callable[[str], str], user: str
) -> None:
    line = json.dumps({"type": "entity", "name": "big", "entityType": "t",
                       "observations": ["x" * 30_000] * (MAX_IMPORT_LINE_CHARS // 30_000 + 1)})
    with Memory.open(url_for("sqlite-file"), embedder=None) as store:
        graph = store.graph(user)
        with pytest.raises(InvalidInputError, match="line 2: .* at most"):
            graph.import_jsonl(['{"type": "entity", "name": "small", "entityType": "t"}', line])
        assert not graph.read_graph().entities


@pytest.mark.parametrize("backend", ["sqlite-file", "postgresql"])
def test_only_the_newest_checkpoints_are_kept(
    backend: str, url_for: Callable[[str], str], user: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MEMORY_MAX_CHECKPOINTS_PER_SESSION", "3")
    with Memory.open(url_for(backend), embedder=None) as store:
        planner, coder = store.scope(user, "planner", "s1"), store.scope(user, "coder", "s1")
        for step in range(5):
            planner.save_state({"step": step})
        coder.save_state({"coder": 1})
        planner.save_state({"step": 5})
        with store.engine.connect() as connection:
            kept = connection.execute(
                sa.text(
                    "SELECT agent_id, checkpoint_seq FROM session_state WHERE user_id = :u "
                    "ORDER BY checkpoint_seq"
                ),
                {"u": user},
            ).all()
        assert [tuple(row) for row in kept] == [
            ("planner", 4), ("planner", 5), ("coder", 6), ("planner", 7)
        ]
        assert planner.load_state().state == {"step": 5}  # type: ignore[union-attr]
