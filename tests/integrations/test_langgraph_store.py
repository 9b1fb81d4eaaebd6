"""One LangGraph store behaviour suite, run against LangGraph's own ``InMemoryStore`` and
against ``TieredStore`` on SQLite and on PostgreSQL: the same calls must give the same
results (search ranking aside, where ours is hybrid search and is expected to differ).
Both use the hashing embedder: search quality is not under test here."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime
from langgraph.store.base import BaseStore, GetOp, Item, PutOp, SearchOp
from langgraph.store.memory import InMemoryStore
from typing_extensions import TypedDict

from memory import HashingEmbedder, InvalidInputError, Memory
from memory.integrations.langgraph import TieredStore

EMBEDDER = HashingEmbedder()
STORES = ["langgraph-inmemory", "tiered-sqlite", "tiered-postgresql"]


def _embed(texts: Sequence[str]) -> list[list[float]]:
    return [list(map(float, row)) for row in EMBEDDER.embed(list(texts))]


@pytest.fixture(params=STORES)
def store(request: pytest.FixtureRequest, tmp_path: Path, user: str) -> Iterator[BaseStore]:
    if request.param == "langgraph-inmemory":
        yield InMemoryStore(index={"dims": EMBEDDER.dimension, "embed": _embed})
        return
    if request.param == "tiered-sqlite":
        url = f"sqlite:///{tmp_path / 'memory.db'}"
    else:
        url = str(request.getfixturevalue("postgres_url"))
    with Memory.open(url, embedder=EMBEDDER) as memory:
        yield TieredStore(memory, user=user)


VALUES: dict[str, dict[str, Any]] = {
    "plain": {"text": "deploy on fridays", "n": 3},
    "types": {"i": -(2**70), "f": 0.1 + 0.2, "t": True, "z": None, "e": [], "o": {}},
    "unicode": {"text": "naïve café 🌞 Ölwerk", "emoji": "👩‍💻"},
    "nested": {"a": {"b": {"c": [1, {"d": [2.5, "x"]}]}}, "order": {"z": 1, "a": 2}},
}


def _keys(items: Sequence[Item]) -> list[str]:
    return [item.key for item in items]


@pytest.mark.parametrize("name", list(VALUES))
def test_values_round_trip_exactly(store: BaseStore, name: str) -> None:
    store.put(("docs",), name, VALUES[name])
    item = store.get(("docs",), name)
    assert item is not None
    assert item.value == VALUES[name]
    assert list(item.value) == list(VALUES[name])  # key order too
    assert (item.namespace, item.key) == (("docs",), name)
    assert item.created_at.tzinfo is not None and item.updated_at >= item.created_at


def test_get_put_update_delete(store: BaseStore) -> None:
    assert store.get(("a",), "missing") is None
    store.put(("a", "b"), "k", {"v": 1})
    store.put(("a", "b"), "k", {"v": 2})
    item = store.get(("a", "b"), "k")
    assert item is not None and item.value == {"v": 2}
    assert store.get(("a",), "k") is None  # namespaces do not nest for get
    store.delete(("a", "b"), "k")
    assert store.get(("a", "b"), "k") is None
    store.delete(("a", "b"), "k")  # deleting what is gone is fine


def _fill(store: BaseStore) -> None:
    store.put(("notes", "work"), "deploy", {"text": "deploy on fridays", "n": 3, "tag": "ops"})
    store.put(("notes", "work"), "review", {"text": "review the billing code", "n": 5})
    store.put(("notes", "home"), "tea", {"text": "buy green tea", "n": 7, "tag": "ops"})
    store.put(("notes", "home"), "plants", {"text": "water the plants", "n": 1},
              index=False)
    store.put(("other",), "x", {"text": "green tea elsewhere", "n": 9})


def test_search_by_prefix_filter_offset_and_limit(store: BaseStore) -> None:
    _fill(store)
    assert _keys(store.search(("notes",))) == ["deploy", "review", "tea", "plants"]
    assert _keys(store.search(("notes", "home"))) == ["tea", "plants"]
    assert _keys(store.search(())) == ["deploy", "review", "tea", "plants", "x"]
    assert _keys(store.search(("notes",), limit=2)) == ["deploy", "review"]
    assert _keys(store.search(("notes",), offset=1, limit=2)) == ["review", "tea"]
    assert _keys(store.search(("notes",), filter={"tag": "ops"})) == ["deploy", "tea"]
    assert _keys(store.search(("notes",), filter={"n": {"$gte": 5}})) == [
        "review", "tea"]
    assert _keys(store.search(("notes",), filter={"n": {"$gt": 1, "$lt": 7}})) == [
        "deploy", "review"]
    assert _keys(store.search(("notes",), filter={"tag": {"$ne": "ops"}})) == [
        "review", "plants"]
    assert store.search(("nothing",)) == []


def test_search_with_a_query(store: BaseStore) -> None:
    _fill(store)
    found = store.search(("notes",), query="green tea", limit=10)
    # Ranking aside: the best match leads, unindexed items come last and unscored, and
    # nothing outside the prefix is found.
    assert found[0].key == "tea" and found[0].score is not None
    assert found[-1].key == "plants" and found[-1].score is None
    assert "x" not in _keys(found)
    filtered = store.search(("notes",), query="green tea", filter={"tag": "ops"})
    assert set(_keys(filtered)) <= {"deploy", "tea"} and filtered[0].key == "tea"


def test_list_namespaces(store: BaseStore) -> None:
    _fill(store)
    store.put(("notes", "work", "2026"), "q", {"text": "plan"})
    assert store.list_namespaces() == [
        ("notes", "home"), ("notes", "work"), ("notes", "work", "2026"), ("other",)]
    assert store.list_namespaces(prefix=("notes",), max_depth=2) == [
        ("notes", "home"), ("notes", "work")]
    assert store.list_namespaces(suffix=("work",)) == [("notes", "work")]
    assert store.list_namespaces(prefix=("*", "work")) == [
        ("notes", "work"), ("notes", "work", "2026")]
    assert store.list_namespaces(max_depth=1) == [("notes",), ("other",)]
    assert store.list_namespaces(limit=1, offset=1) == [("notes", "work")]


def test_batch_answers_in_order(store: BaseStore) -> None:
    store.put(("b",), "one", {"v": 1})
    results = store.batch([
        GetOp(("b",), "one"),
        PutOp(("b",), "two", {"v": 2}),
        SearchOp(("b",)),
        GetOp(("b",), "none"),
    ])
    assert isinstance(results[0], Item) and results[0].value == {"v": 1}
    assert results[1] is None and results[3] is None
    assert store.get(("b",), "two") is not None


def test_async_methods(store: BaseStore) -> None:
    async def main() -> Any:
        await store.aput(("a",), "k", {"v": "async"})
        item = await store.aget(("a",), "k")
        found = await store.asearch(("a",))
        namespaces = await store.alist_namespaces()
        await store.adelete(("a",), "k")
        return item, found, namespaces, await store.aget(("a",), "k")

    item, found, namespaces, gone = asyncio.run(main())
    assert item.value == {"v": "async"} and _keys(found) == ["k"]
    assert namespaces == [("a",)] and gone is None


# -- TieredStore only ---------------------------------------------------------------------------


@pytest.fixture
def tiered(memory: Memory, user: str) -> TieredStore:
    return TieredStore(memory, user=user)


def test_identity_is_the_configuration(memory: Memory, user: str) -> None:
    mine, theirs = TieredStore(memory, user=user), TieredStore(memory, user=user + "-2")
    mine.put(("users", user + "-2"), "k", {"note": 1})
    assert theirs.get(("users", user + "-2"), "k") is None
    assert theirs.search(()) == [] and theirs.list_namespaces() == []
    record = memory.scope(user, "langgraph").list()[0]
    assert record.metadata["lg_ns_0"] == "users" and record.metadata["lg_key"] == "k"


@pytest.mark.parametrize(
    "namespace, key, value, message",
    [
        (("a",), "k", {"x": float("nan")}, "must be JSON"),
        (("a",), "k", {"x": object()}, "must be JSON"),
        (("a",), "k", {"text": "password=hunter2"}, "redaction"),
        (("a",), "k", {"x": "y" * 40_000}, "at most 32768"),
        (("a",) * 30, "k", {"x": 1}, "at most 27 labels"),
        (("a" * 2000,), "k", {"x": 1}, "at most 1024 bytes"),
        (("a",), "k\x00", {"x": 1}, "NUL"),
    ],
)
def test_bad_values_are_refused_and_nothing_is_written(
    tiered: TieredStore, namespace: tuple[str, ...], key: str, value: Any, message: str
) -> None:
    with pytest.raises((InvalidInputError, ValueError)) as refused:
        tiered.put(namespace, key, value)
    assert message in str(refused.value)
    assert tiered.search(()) == []


def test_ttl_is_the_memory_expiry(tiered: TieredStore, memory: Memory, user: str) -> None:
    tiered.put(("t",), "k", {"v": 1}, ttl=30)
    [record] = memory.scope(user, "langgraph").list()
    assert record.expires_at is not None
    assert timedelta(minutes=29) < record.expires_at - record.created_at <= timedelta(minutes=30)


def test_abatch_does_not_block_the_event_loop(tiered: TieredStore) -> None:
    """While a slow batch runs, the loop keeps ticking: abatch is in a worker thread."""
    started, release = threading.Event(), threading.Event()
    original = tiered.batch

    def slow_batch(ops: Any) -> Any:
        started.set()
        release.wait(10)
        return original(ops)

    tiered.batch = slow_batch  # type: ignore[method-assign]

    async def main() -> int:
        ticks = 0
        task = asyncio.ensure_future(tiered.aput(("a",), "k", {"v": 1}))
        deadline = time.monotonic() + 10
        while not started.is_set() and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        for _ in range(5):
            await asyncio.sleep(0.01)
            ticks += 1
        release.set()
        await task
        return ticks

    assert asyncio.run(main()) == 5
    assert tiered.get(("a",), "k") is not None


class State(TypedDict):
    user_text: str
    answer: str


def test_a_compiled_state_graph_reads_and_writes_through_the_store(
    tiered: TieredStore,
) -> None:
    def remember(state: State, runtime: Runtime[None]) -> dict[str, Any]:
        assert runtime.store is not None
        runtime.store.put(("facts",), "drink", {"text": state["user_text"]})
        return {}

    def answer(state: State, runtime: Runtime[None]) -> dict[str, Any]:
        assert runtime.store is not None
        found = runtime.store.search(("facts",), query="what does she drink")
        return {"answer": " / ".join(item.value["text"] for item in found)}

    builder = StateGraph(State)
    builder.add_node("remember", remember)
    builder.add_node("answer", answer)
    builder.add_edge(START, "remember")
    builder.add_edge("remember", "answer")
    builder.add_edge("answer", END)
    graph = builder.compile(store=tiered)
    result = graph.invoke({"user_text": "Ada drinks green tea", "answer": ""})
    assert result["answer"] == "Ada drinks green tea"
    stored = tiered.get(("facts",), "drink")
    assert stored is not None and stored.value == {"text": "Ada drinks green tea"}
    again = asyncio.run(graph.ainvoke({"user_text": "Ada drinks coffee now", "answer": ""}))
    assert again["answer"] == "Ada drinks coffee now"


