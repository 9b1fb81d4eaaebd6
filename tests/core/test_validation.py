"""Every validation rule has a test, and a refused write leaves the database unchanged."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import pytest

from memory import InvalidInputError, Memory, Scope
from memory.ops import table_checksums
from memory.store.tables import PHASE_1_TABLES, PHASE_2_TABLES


def snapshot(memory: Memory) -> dict[str, Any]:
    with memory.engine.connect() as connection:
        return table_checksums(connection, PHASE_1_TABLES + PHASE_2_TABLES)


ADD_CASES = [
    ({"content": ""}, "content: must be at least 1 characters"),
    ({"content": "   \n"}, "content: must not be blank"),
    ({"content": "x" * 32_769}, "content: must be at most 32768 characters (got 32769)"),
    ({"content": b"\xff\xfeabc"}, "content: is not valid UTF-8"),
    ({"content": "a\udcffb"}, "content: is not valid Unicode"),
    ({"content": "nul\x00byte"}, "content: contains a NUL character"),
    ({"content": 42}, "content: Input should be a valid string"),
    ({"content": "x", "tier": "cold"}, "tier: Input should be 'working', 'episodic' or 'semantic'"),
    ({"content": "x", "importance": float("nan")}, "importance: Input should be a finite number"),
    ({"content": "x", "importance": float("inf")}, "importance: Input should be a finite number"),
    ({"content": "x", "importance": 1.5}, "importance: Input should be less than or equal to 1"),
    ({"content": "x", "importance": -0.1}, "importance: Input should be greater than or equal"),
    ({"content": "x", "importance": "0.5"}, "importance: Input should be a valid number"),
    ({"content": "x", "visibility": "public"}, "visibility: Input should be 'private' or"),
    ({"content": "x", "metadata": {"k": object()}}, "metadata: is not JSON-serialisable"),
    ({"content": "x", "metadata": {"k": float("nan")}}, "metadata: is not JSON-serialisable"),
    ({"content": "x", "metadata": {"k" * 129: 1}}, "must be at most 128 characters (got 129)"),
    ({"content": "x", "metadata": {"": 1}}, "must be at least 1 characters"),
    ({"content": "x", "metadata": {"k\n": 1}}, "must not contain control characters"),
    (
        {"content": "x", "metadata": {str(i): i for i in range(33)}},
        "metadata: must have at most 32 keys (got 33)",
    ),
    (
        {"content": "x", "metadata": {"k": "v" * 1100}},
        "metadata: value of 'k' must be at most 1024 bytes as JSON",
    ),
    ({"content": "x", "metadata": {"k": "\udcff"}}, "metadata: is not valid Unicode"),
    ({"content": "x", "ttl": timedelta(seconds=-1)}, "ttl: must be positive"),
    ({"content": "x", "ttl": timedelta(days=4000)}, "ttl: must be positive and at most 3650"),
]


@pytest.mark.parametrize(("arguments", "message"), ADD_CASES, ids=[m for _, m in ADD_CASES])
def test_add_rejects_bad_input_and_writes_nothing(
    memory: Memory, user: str, arguments: dict[str, Any], message: str
) -> None:
    scope = memory.scope(user, "planner", "s1")
    scope.add("already there")
    before = snapshot(memory)
    with pytest.raises(InvalidInputError) as caught:
        scope.add(**arguments)
    assert message in str(caught.value)
    assert snapshot(memory) == before


@pytest.mark.parametrize(
    ("user", "agent", "session", "message"),
    [
        ("", "a", None, "user: must be at least 1 characters"),
        ("u" * 129, "a", None, "user: must be at most 128 characters"),
        ("u", "a\tb", None, "agent: must not contain control characters"),
        ("u", " a", None, "agent: must not start or end with white space"),
        ("u", "a", "s\x00", "session: contains a NUL character"),
        (7, "a", None, "user: Input should be a valid string"),
    ],
)
def test_scope_ids_are_checked(
    memory: Memory, user: Any, agent: Any, session: Any, message: str
) -> None:
    with pytest.raises(InvalidInputError, match=message):
        memory.scope(user, agent, session)


def _calls(scope: Scope) -> list[tuple[Callable[[], object], str]]:
    return [
        (lambda: scope.get(0), "memory_id: must be a positive integer"),
        (lambda: scope.get(True), "memory_id: must be a positive integer"),
        (lambda: scope.get(2**63), "memory_id: must be a positive integer"),
        (lambda: scope.update(1, version=0), "version: Input should be greater than or equal to 1"),
        (lambda: scope.update(1, version=1, content=""), "content: must be at least 1"),
        (lambda: scope.update(1, version=1, tier="hot"), "tier: Input should be"),  # type: ignore[arg-type]
        (lambda: scope.list(limit=0), "limit: Input should be greater than or equal to 1"),
        (lambda: scope.list(limit=10_000), "limit: Input should be less than or equal to 1000"),
        (lambda: scope.list(created_after=datetime(2020, 1, 1)), "created_after: must be timezone"),
        (lambda: scope.list(metadata={"k": {1, 2}}), "metadata: is not JSON-serialisable"),
        (lambda: scope.add_many("not a list"), "items: must be a list, not str"),
        (lambda: scope.add_many(["ok"] * 10_001), "items: at most 10000 items per call"),
        (lambda: scope.set_preference("k", object()), "value: is not JSON-serialisable"),
        (lambda: scope.set_preference("k", "x" * 17_000), "value: must be at most 16384 bytes"),
        (lambda: scope.set_preference("k", 1, confidence=2), "confidence: Input should be less"),
        (lambda: scope.set_preference("", 1), "key: must be at least 1 characters"),
        (lambda: scope.record_pattern("python", "n", ""), "snippet: must be at least 1"),
        (lambda: scope.record_pattern("py" * 40, "n", "s"), "language: must be at most 64"),
        (lambda: scope.record_pattern("python", "n", "s", tags="t"), "tags: must be a list"),
        (
            lambda: scope.record_pattern("python", "n", "s", tags=[str(i) for i in range(33)]),
            "tags: must be at most 32 items",
        ),
        (lambda: scope.find_patterns(limit=-1), "limit: Input should be greater than or equal"),
        (lambda: scope.save_state({"k": object()}), "state: is not JSON-serialisable"),
        (lambda: scope.save_state({"k": "x" * 1_048_577}), "state: must be at most 1048576 bytes"),
        (lambda: scope.save_state(["not", "a", "dict"]), "state: Input should be a valid dict"),  # type: ignore[arg-type]
    ]


def test_every_other_entry_point_rejects_bad_input_and_writes_nothing(
    memory: Memory, user: str
) -> None:
    scope = memory.scope(user, "planner", "s1")
    scope.add("already there")
    before = snapshot(memory)
    for call, message in _calls(scope):
        with pytest.raises(InvalidInputError) as caught:
            call()
        assert message in str(caught.value), (message, str(caught.value))
    assert snapshot(memory) == before


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (
            lambda g: g.create_entities([{"name": "x"}]),
            r"entities\[0\]\.entityType: Field required",
        ),
        (
            lambda g: g.create_entities([{"name": "x", "entityType": "t", "extra": 1}]),
            r"entities\[0\]\.extra: Extra inputs are not permitted",
        ),
        (lambda g: g.create_entities({"name": "x"}), "entities: must be a list, not dict"),
        (
            lambda g: g.create_entities([{"name": "x", "entityType": "t", "observations": [""]}]),
            r"entities\[0\]\.observations\.0: must be at least 1",
        ),
        (lambda g: g.create_relations([{"from": "a", "to": "b"}]), "relationType: Field required"),
        (
            lambda g: g.add_observations([{"entityName": "a", "contents": "text"}]),
            "contents: Input should be a valid list",
        ),
        (lambda g: g.delete_entities("Ada"), "entity names: must be a list, not str"),
        (lambda g: g.open_nodes([None]), "name: Input should be a valid string"),
        (lambda g: g.search_nodes(None), "query: must be a string"),
    ],
)
def test_graph_rejects_bad_input_and_writes_nothing(
    memory: Memory, user: str, call: Callable[[Any], object], message: str
) -> None:
    graph = memory.graph(user)
    graph.create_entities([{"name": "Ada", "entityType": "person", "observations": ["x"]}])
    before = snapshot(memory)
    with pytest.raises(InvalidInputError, match=message):
        call(graph)
    assert snapshot(memory) == before
