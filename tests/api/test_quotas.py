"""Per-user quotas (issue 16, finding 8): configurable limits on the memories and the bytes
a user stores, kept by concurrent writers too, and the shared context of a session held to
the state limit, each with a clear error that writes nothing.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable

import pytest
import sqlalchemy as sa

from memory import HashingEmbedder, InvalidInputError, Memory, QuotaExceededError
from memory.core.inputs import MAX_STATE_BYTES
from memory.store.graph import MAX_IMPORT_LINE_CHARS
from memory.store.usage import stored_bytes


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


@pytest.mark.parametrize("name", ["MEMORY_MAX_MEMORIES_PER_USER", "MEMORY_MAX_BYTES_PER_USER"])
@pytest.mark.parametrize("value", ["٣", "0", "-5", "1e6", "10 MB"])
def test_a_bad_quota_setting_is_named(
    name: str, value: str, url_for: Callable[[str], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(InvalidInputError, match=name):
        Memory.open(url_for("sqlite-file"), embedder=None)


def _stored(store: Memory, user: str) -> int:
    with store.engine.connect() as connection:
        return stored_bytes(connection, user)


@pytest.mark.parametrize("backend", ["sqlite-file", "postgresql"])
def test_the_byte_quota_counts_every_kind_of_write(
    backend: str, url_for: Callable[[str], str], user: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MEMORY_MAX_BYTES_PER_USER", "3000")
    with Memory.open(url_for(backend), embedder=None) as store:
        scope = store.scope(user, "planner", "s1")
        kept = scope.add("é" * 1000, metadata={"k": "v"})  # 2,000 bytes of UTF-8, not 1,000
        assert _stored(store, user) == 2000 + len('k"v"')
        before = _events(store)
        big = "x" * 1000
        attempts: dict[str, Callable[[], object]] = {
            "memory": lambda: scope.add(big),
            "metadata": lambda: scope.update(kept.id, version=1, metadata={"k": big}),
            "preference": lambda: scope.set_preference("style", big),
            "state": lambda: scope.save_state({"draft": big}),
            "context": lambda: scope.merge_context({"draft": big}),
            "pattern": lambda: scope.record_pattern("python", "p", big),
            "graph": lambda: store.graph(user).create_entities(
                [{"name": "e", "entityType": "t", "observations": [big]}]
            ),
        }
        for kind, attempt in attempts.items():
            with pytest.raises(QuotaExceededError, match="quota is 3000.*MAX_BYTES_PER_USER"):
                attempt()
            assert _events(store) == before, kind
        assert _stored(store, user) == 2000 + len('k"v"')
        assert scope.get_preference("style") is None and scope.load_state() is None
        assert not store.graph(user).read_graph().entities
        # Small writes still fit; another user has a quota of their own.
        scope.set_preference("style", "terse")
        store.scope(f"other-{user}", "planner").add(big * 2)
        # A write that shrinks what the user stores always passes, and frees room.
        scope.delete(kept.id)
        scope.add(big)
        assert _stored(store, user) == 1000 + len("style") + len('"terse"')


@pytest.mark.parametrize("backend", ["sqlite-file", "postgresql"])
@pytest.mark.parametrize("quota", ["MEMORY_MAX_BYTES_PER_USER", "MEMORY_MAX_MEMORIES_PER_USER"])
def test_concurrent_writers_cannot_pass_a_quota_together(
    backend: str,
    quota: str,
    url_for: Callable[[str], str],
    user: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Eight writer threads add distinct 100-byte memories for one user at once: each write
    takes the user's lock exclusively while a quota is set, so exactly the quota is kept
    (with a shared lock, writers on PostgreSQL each counted before the others committed)."""
    allowed, threads, per_thread = 10, 8, 5
    monkeypatch.setenv(quota, str(allowed * 100 if quota.endswith("BYTES_PER_USER") else allowed))
    with Memory.open(url_for(backend), embedder=None) as store:
        start = threading.Barrier(threads)
        refused: list[int] = []
        errors: list[str] = []

        def writer(number: int) -> None:
            scope = store.scope(user, f"agent-{number}")
            start.wait()
            for item in range(per_thread):
                try:
                    scope.add(f"{number:02d}-{item:02d}-".ljust(100, "x"))
                except QuotaExceededError:
                    refused.append(1)
                except Exception as error:  # reported by the test, not lost in the thread
                    errors.append(repr(error))

        workers = [threading.Thread(target=writer, args=(n,)) for n in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        assert errors == []
        with store.engine.connect() as connection:
            held = connection.execute(
                sa.text("SELECT count(*) FROM memories WHERE user_id = :u"), {"u": user}
            ).scalar_one()
        assert (held, len(refused)) == (allowed, threads * per_thread - allowed)
        assert _stored(store, user) == allowed * 100


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
