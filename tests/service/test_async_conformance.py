"""The store conformance suite, unchanged, through ``AsyncMemory``: embedded on a SQLite
file and on PostgreSQL (each call in a worker thread) and remote on a real ``memctl serve``
(httpx's ``AsyncClient``). The suite is synchronous: each of its calls runs the coroutine
on an event loop of this module's own thread and waits for it, so every operation it checks
went through the asynchronous API."""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from memory import (
    AsyncMemory,
    AsyncScope,
    EmbeddedOnlyError,
    HashingEmbedder,
    KnowledgeGraph,
    NotFoundError,
    Scope,
    StoreClosedError,
)
from memory import ops as ops
from tests.service.processes import Server
from tests.store.test_store_conformance import *  # noqa: F403 - the suite, collected here too


class Loop:
    """An event loop running on a thread of its own."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coroutine: Coroutine[Any, Any, Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout=60)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()


class BlockingScope:
    """The suite's view of an ``AsyncScope``: each operation waits for its coroutine."""

    def __init__(self, loop: Loop, scope: AsyncScope) -> None:
        self._loop, self._scope = loop, scope

    def __getattr__(self, name: str) -> Any:
        member = getattr(self._scope, name)
        if not inspect.iscoroutinefunction(member):
            return member
        call: Callable[..., Any] = lambda *args, **kwargs: self._loop.run(member(*args, **kwargs))  # noqa: E731
        return call


class BlockingMemory:
    """The suite's view of an ``AsyncMemory``: its scopes, and the database's engine for
    the suite's direct looks at the rows."""

    def __init__(self, loop: Loop, memory: AsyncMemory, engine: sa.Engine) -> None:
        self.loop, self.memory, self.engine = loop, memory, engine

    def scope(self, user: str, agent: str, session: str | None = None) -> BlockingScope:
        return BlockingScope(self.loop, self.memory.scope(user, agent, session))


@pytest.fixture(scope="module")
def loop() -> Iterator[Loop]:
    running = Loop()
    yield running
    running.close()


@pytest.fixture(params=["sqlite-file", "postgresql", "remote"])
def memory(
    request: pytest.FixtureRequest, loop: Loop, url_for: Callable[[str], str]
) -> Iterator[BlockingMemory]:
    """An ``AsyncMemory`` in place of the suite's ``Memory``, on each backend."""
    if request.param == "remote":
        hub: Server = request.getfixturevalue("hub")
        postgres_url: str = request.getfixturevalue("postgres_url")
        secret = ops.create_key(postgres_url, "async-conformance", role="admin").secret
        opened = loop.run(AsyncMemory.open(hub.url, api_key=secret))
        engine = sa.create_engine(postgres_url)
    else:
        opened = loop.run(AsyncMemory.open(url_for(request.param), embedder=HashingEmbedder()))
        engine = opened.memory.engine
    try:
        yield BlockingMemory(loop, opened, engine)
    finally:
        loop.run(opened.close())
        if request.param == "remote":
            engine.dispose()


def test_the_suite_runs_through_the_asynchronous_api(memory: BlockingMemory) -> None:
    scope = memory.scope("ada", "planner")
    assert isinstance(scope._scope, AsyncScope)
    assert inspect.iscoroutinefunction(AsyncScope.add)
    # The coroutines carry the embedded methods' signatures.
    assert inspect.signature(AsyncScope.search) == inspect.signature(
        inspect.unwrap(Scope.search)
    )


def test_graphs_and_closing(memory: BlockingMemory, loop: Loop, user: str) -> None:
    async def scenario() -> None:
        graph = memory.memory.graph(user)
        await graph.create_entities([{"name": "Ada", "entityType": "person"}])
        assert [entity.name for entity in (await graph.read_graph()).entities] == ["Ada"]
        with pytest.raises(NotFoundError, match="Nobody"):
            await graph.create_relations([{"from": "Ada", "to": "Nobody", "relationType": "r"}])
        assert await memory.memory.graph(user + "-other").read_graph() == KnowledgeGraph()
        # Many calls at once: each its own, none blocking the loop.
        scope = memory.memory.scope(user, "planner")
        added = await asyncio.gather(*(scope.add(f"note {n}") for n in range(20)))
        assert len({record.id for record in added}) == 20

    loop.run(scenario())
    if memory.memory.backend == "remote":
        with pytest.raises(EmbeddedOnlyError, match=r"^AsyncMemory\.memory exists only"):
            memory.memory.memory  # noqa: B018
    loop.run(memory.memory.close())
    with pytest.raises(StoreClosedError):
        loop.run(memory.memory.scope(user, "planner").list())
