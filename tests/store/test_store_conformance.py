"""The store API's required behaviour, run unchanged against every backend."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from memory import (
    ConflictError,
    InvalidInputError,
    Memory,
    NotFoundError,
    StaleVersionError,
)


def count_rows(memory: Memory, table: str, user: str) -> int:
    with memory.engine.connect() as connection:
        return connection.execute(
            sa.text(f"SELECT COUNT(*) FROM {table} WHERE user_id = :user"), {"user": user}
        ).scalar_one()


# -- memories -----------------------------------------------------------------------------------


def test_add_then_get_returns_every_field(memory: Memory, user: str) -> None:
    scope = memory.scope(user, "planner", "s1")
    before = datetime.now(UTC)
    added = scope.add(
        "Ada prefers tea", tier="semantic", importance=0.75, metadata={"topic": "drinks", "n": 2}
    )
    fetched = scope.get(added.id)

    assert (fetched.user_id, fetched.agent_id, fetched.session_id) == (user, "planner", "s1")
    assert (fetched.content, fetched.tier, fetched.importance) == (
        "Ada prefers tea",
        "semantic",
        0.75,
    )
    assert fetched.metadata == {"topic": "drinks", "n": 2}
    assert fetched.visibility == "private"
    assert fetched.version == 1
    assert fetched.created_at.tzinfo is not None and fetched.created_at >= before - timedelta(1)
    assert fetched.access_count == 1 and fetched.last_accessed_at is not None
    assert added.access_count == 0 and added.last_accessed_at is None


def test_same_content_in_same_scope_is_stored_once(memory: Memory, user: str) -> None:
    scope = memory.scope(user, "planner", "s1")
    first = scope.add("the build is green")
    again = scope.add("the build is green", tier="semantic", metadata={"ignored": True})

    assert again.id == first.id and again.tier == "working" and again.metadata == {}
    assert count_rows(memory, "memories", user) == 1


def test_same_content_in_other_scopes_is_stored_separately(memory: Memory, user: str) -> None:
    contents = {
        memory.scope(user, "planner", "s1").add("shared fact").id,
        memory.scope(user, "planner", "s2").add("shared fact").id,
        memory.scope(user, "planner").add("shared fact").id,
        memory.scope(user, "coder", "s1").add("shared fact").id,
    }
    assert len(contents) == 4


def test_add_many_is_all_or_nothing_and_deduplicates(memory: Memory, user: str) -> None:
    scope = memory.scope(user, "planner", "s1")
    existing = scope.add("one")
    added = scope.add_many(["one", "two", {"content": "three", "tier": "episodic"}, "two"])

    assert [item.content for item in added] == ["one", "two", "three", "two"]
    assert added[0].id == existing.id and added[1].id == added[3].id
    assert added[2].tier == "episodic"
    with pytest.raises(InvalidInputError, match=r"items\[1\]\.tier"):
        scope.add_many(["four", {"content": "five", "tier": "frozen"}])
    assert count_rows(memory, "memories", user) == 3


def test_scopes_cannot_read_other_users_or_agents_memories(memory: Memory, user: str) -> None:
    mine = memory.scope(user, "planner", "s1").add("private to planner")
    for other in (memory.scope(user, "coder", "s1"), memory.scope(user + "-x", "planner", "s1")):
        with pytest.raises(NotFoundError):
            other.get(mine.id)
        with pytest.raises(NotFoundError):
            other.delete(mine.id)
        with pytest.raises(NotFoundError):
            other.update(mine.id, version=1, importance=0.1)
        assert other.list() == []
    assert memory.scope(user, "planner", "s1").get(mine.id).importance == 0.5


def test_a_scope_sees_its_memories_across_sessions(memory: Memory, user: str) -> None:
    memory.scope(user, "planner", "s1").add("from s1")
    memory.scope(user, "planner", "s2").add("from s2")
    scope = memory.scope(user, "planner", "s3")

    assert {item.content for item in scope.list()} == {"from s1", "from s2"}
    assert [item.content for item in scope.list(session="s2")] == ["from s2"]


def test_update_uses_optimistic_locking(memory: Memory, user: str) -> None:
    scope = memory.scope(user, "planner", "s1")
    item = scope.add("draft", metadata={"a": 1})
    updated = scope.update(
        item.id, version=1, content="final", tier="episodic", importance=0.9, metadata={"b": [1, 2]}
    )

    assert (updated.content, updated.tier, updated.importance) == ("final", "episodic", 0.9)
    assert updated.metadata == {"b": [1, 2]} and updated.version == 2
    assert updated.content_hash != item.content_hash
    with pytest.raises(StaleVersionError, match="version 2, not 1") as caught:
        scope.update(item.id, version=1, importance=0.1)
    assert caught.value.current == 2
    assert scope.get(item.id).importance == 0.9


def test_update_without_metadata_keeps_it(memory: Memory, user: str) -> None:
    scope = memory.scope(user, "planner", "s1")
    item = scope.add("note", metadata={"keep": "me"})
    assert scope.update(item.id, version=1, importance=0.2).metadata == {"keep": "me"}
    assert scope.update(item.id, version=2, metadata={}).metadata == {}


def test_update_to_content_that_exists_in_scope_is_a_conflict(memory: Memory, user: str) -> None:
    scope = memory.scope(user, "planner", "s1")
    scope.add("taken")
    other = scope.add("free")
    with pytest.raises(ConflictError, match="already has that content"):
        scope.update(other.id, version=1, content="taken")
    assert scope.get(other.id).content == "free"


def test_update_and_delete_of_missing_memory(memory: Memory, user: str) -> None:
    scope = memory.scope(user, "planner", "s1")
    with pytest.raises(NotFoundError):
        scope.update(987654321, version=1, importance=0.3)
    with pytest.raises(NotFoundError):
        scope.delete(987654321)
    with pytest.raises(NotFoundError):
        scope.get(987654321)


def test_delete_removes_memory_and_metadata(memory: Memory, user: str) -> None:
    scope = memory.scope(user, "planner", "s1")
    item = scope.add("gone soon", metadata={"k": "v"})
    scope.delete(item.id)

    with pytest.raises(NotFoundError):
        scope.get(item.id)
    with memory.engine.connect() as connection:
        left = connection.execute(
            sa.text("SELECT COUNT(*) FROM memory_metadata WHERE memory_id = :id"), {"id": item.id}
        ).scalar_one()
    assert left == 0


def test_list_filters_and_orders_newest_first(memory: Memory, user: str) -> None:
    scope = memory.scope(user, "planner", "s1")
    a = scope.add("a", tier="working", metadata={"ticket": "T-1", "prio": 1})
    b = scope.add("b", tier="episodic", metadata={"ticket": "T-1", "prio": 2})
    c = scope.add("c", tier="episodic", metadata={"ticket": "T-2"})

    assert [m.id for m in scope.list()] == [c.id, b.id, a.id]
    assert [m.id for m in scope.list(tier="episodic")] == [c.id, b.id]
    assert [m.id for m in scope.list(metadata={"ticket": "T-1"})] == [b.id, a.id]
    assert [m.id for m in scope.list(metadata={"ticket": "T-1", "prio": 2})] == [b.id]
    assert scope.list(metadata={"prio": "2"}) == []  # JSON values compare by type too
    assert [m.id for m in scope.list(tier="working", metadata={"ticket": "T-1"})] == [a.id]
    assert [m.id for m in scope.list(limit=2)] == [c.id, b.id]
    assert [m.id for m in scope.list(before_id=b.id)] == [a.id]


def test_list_filters_by_creation_time(memory: Memory, user: str) -> None:
    scope = memory.scope(user, "planner", "s1")
    item = scope.add("timed")
    assert scope.list(created_after=item.created_at - timedelta(seconds=1)) == [item]
    assert scope.list(created_before=item.created_at) == []
    assert scope.list(created_after=item.created_at + timedelta(seconds=1)) == []


def test_expired_memories_are_invisible(memory: Memory, user: str) -> None:
    scope = memory.scope(user, "planner", "s1")
    item = scope.add("short-lived", ttl=timedelta(seconds=60))
    assert item.expires_at is not None
    assert scope.list() == [item]
    with memory.engine.begin() as connection:
        connection.execute(
            sa.text("UPDATE memories SET expires_at = :past WHERE id = :id"),
            {"past": datetime(2000, 1, 1), "id": item.id},
        )
    assert scope.list() == []
    with pytest.raises(NotFoundError):
        scope.get(item.id)


# -- preferences --------------------------------------------------------------------------------


def test_one_current_preference_per_user_and_key(memory: Memory, user: str) -> None:
    planner = memory.scope(user, "planner")
    coder = memory.scope(user, "coder")
    planner.set_preference("style", "short", confidence=0.6)
    latest = coder.set_preference("style", {"length": "short", "code": True}, confidence=0.9)

    assert latest.value == {"length": "short", "code": True}
    assert latest.source_agent == "coder" and latest.confidence == 0.9
    assert planner.get_preference("style") == latest
    assert [p.key for p in planner.list_preferences()] == ["style"]
    assert count_rows(memory, "user_preferences", user) == 1
    assert memory.scope(user + "-x", "planner").get_preference("style") is None


def test_preferences_list_and_delete(memory: Memory, user: str) -> None:
    scope = memory.scope(user, "planner")
    scope.set_preference("b", 2)
    scope.set_preference("a", [1, "x", None])
    assert [(p.key, p.value) for p in scope.list_preferences()] == [("a", [1, "x", None]), ("b", 2)]
    scope.delete_preference("a")
    assert scope.get_preference("a") is None
    with pytest.raises(NotFoundError):
        scope.delete_preference("a")


# -- code patterns ------------------------------------------------------------------------------


def test_code_patterns_record_find_and_use(memory: Memory, user: str) -> None:
    scope = memory.scope(user, "coder")
    retry = scope.record_pattern(
        "python",
        "retry",
        "for i in range(3): call()",
        description="Retry with Backoff",
        tags=["net", "resilience"],
    )
    scope.record_pattern("rust", "newtype", "struct Meters(f64);", tags=["types"])
    used = scope.use_pattern(retry.id)

    assert used.usage_count == 1 and used.last_used_at is not None
    assert [p.name for p in scope.find_patterns()] == ["retry", "newtype"]
    assert [p.name for p in scope.find_patterns(language="rust")] == ["newtype"]
    assert [p.name for p in scope.find_patterns(tag="net")] == ["retry"]
    assert [p.name for p in scope.find_patterns(text="BACKOFF")] == ["retry"]
    assert scope.find_patterns(text="nothing like it") == []
    assert [p.name for p in memory.scope(user, "planner").find_patterns(tag="types")] == ["newtype"]
    assert memory.scope(user + "-x", "coder").find_patterns() == []


def test_recording_a_pattern_again_replaces_it_and_keeps_usage(memory: Memory, user: str) -> None:
    scope = memory.scope(user, "coder")
    first = scope.record_pattern("python", "retry", "v1", tags=["a"])
    scope.use_pattern(first.id)
    second = scope.record_pattern("python", "retry", "v2", tags=["b", "b"])

    assert second.id == first.id and second.snippet == "v2" and second.tags == ("b",)
    assert second.usage_count == 1
    assert count_rows(memory, "code_patterns", user) == 1
    with pytest.raises(NotFoundError):
        memory.scope(user + "-x", "coder").use_pattern(first.id)


# -- session state ------------------------------------------------------------------------------


def test_session_state_checkpoints_count_up(memory: Memory, user: str) -> None:
    planner = memory.scope(user, "planner", "s1")
    coder = memory.scope(user, "coder", "s1")
    assert planner.load_state() is None
    planner.save_state({"step": 1})
    saved = coder.save_state({"step": 2, "files": ["a.py"]})

    assert saved.checkpoint_seq == 2 and saved.agent_id == "coder"
    assert planner.load_state() == saved
    assert memory.scope(user, "planner", "s2").load_state() is None
    assert memory.scope(user + "-x", "planner", "s1").load_state() is None


def test_expired_session_state_is_not_loaded(memory: Memory, user: str) -> None:
    scope = memory.scope(user, "planner", "s1")
    scope.save_state({"step": 1}, ttl=timedelta(hours=1))
    assert scope.load_state() is not None
    with memory.engine.begin() as connection:
        connection.execute(
            sa.text("UPDATE session_state SET expires_at = :past WHERE user_id = :user"),
            {"past": datetime(2000, 1, 1), "user": user},
        )
    assert scope.load_state() is None


def test_session_state_needs_a_session(memory: Memory, user: str) -> None:
    with pytest.raises(InvalidInputError, match="session"):
        memory.scope(user, "planner").save_state({"step": 1})


def test_ids_of_deleted_memories_are_never_reused(memory: Memory, user: str) -> None:
    scope = memory.scope(user, "planner", "s1")
    newest = scope.add("the newest memory")
    scope.delete(newest.id)
    assert scope.add("added after the delete").id > newest.id
