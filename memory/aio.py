"""``AsyncMemory``: the agent API for asyncio code, over an embedded store or a hub service.

    memory = await AsyncMemory.open("http://hub:8080", api_key=secret)
    scope = memory.scope("ada", "planner")
    await scope.add("Ada prefers green tea")
    hits = await scope.search("tea")
    await memory.close()

Its scopes (:class:`AsyncScope`) and graphs (:class:`AsyncGraph`) have every operation the
hub serves (``memory.remote.SCOPE_OPERATIONS`` and ``GRAPH_OPERATIONS``) as a coroutine
with the embedded method's signature, records and errors. The methods are generated from
``Scope``'s and ``EntityGraph``'s signatures (``memory.remote.Served``), never copied, so
they cannot drift from the synchronous API.

- **Remote** (an ``http://`` or ``https://`` URL, comma-separated for replicas): httpx's
  ``AsyncClient`` (``memory.remote.AsyncTransport``) with the synchronous client's failover,
  idempotency keys and timeout; nothing blocks the event loop.
- **Embedded** (a database URL): each call runs the embedded store's method in a worker
  thread (``asyncio.to_thread``), because the store's drivers (sqlite3, psycopg) block. A
  call holds one thread of the loop's default executor while it runs, so that executor
  bounds how many run at once; the store's own admission (``memory.store.db``) still orders
  them. The embedded ``Memory`` is :attr:`AsyncMemory.memory`, for what is not a scope or
  graph operation (maintenance, subscriptions).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Coroutine
from types import TracebackType
from typing import Any

from memory.client import Memory
from memory.core.errors import EmbeddedOnlyError, StoreClosedError
from memory.core.inputs import ScopeInput, validate
from memory.core.types import Owner
from memory.remote import (
    GRAPH_OPERATIONS,
    GRAPH_PREFIX,
    SCOPE_OPERATIONS,
    AsyncTransport,
    Served,
    graph_body,
    is_remote,
    scope_body,
)
from memory.scope import Scope
from memory.store.graph import EntityGraph


class AsyncScope:
    """A scope for asyncio code: every operation of :class:`~memory.Scope` the hub serves,
    as a coroutine. Get it from :meth:`AsyncMemory.scope`."""

    def __init__(
        self, owner: Owner, embedded: Scope | None, transport: AsyncTransport | None
    ) -> None:
        self._owner = owner
        self._embedded = embedded
        self._transport = transport

    @property
    def user(self) -> str:
        return self._owner.user

    @property
    def agent(self) -> str:
        return self._owner.agent

    @property
    def session(self) -> str | None:
        return self._owner.session

    async def _call(self, served: Served, arguments: dict[str, Any]) -> Any:
        if self._embedded is not None:
            method = getattr(self._embedded, served.name)
            return await asyncio.to_thread(functools.partial(method, **arguments))
        assert self._transport is not None
        write = SCOPE_OPERATIONS[served.name] == "write"
        answer = await self._transport.call(
            served.name, scope_body(self._owner, arguments), write=write
        )
        return served.result.validate_json(answer)


class AsyncGraph:
    """The entity graph of one user for asyncio code: every operation of
    :class:`~memory.EntityGraph` the hub serves, as a coroutine. Get it from
    :meth:`AsyncMemory.graph`."""

    def __init__(
        self, user: str, embedded: EntityGraph | None, transport: AsyncTransport | None
    ) -> None:
        self.user = user
        self._embedded = embedded
        self._transport = transport

    async def _call(self, served: Served, arguments: dict[str, Any]) -> Any:
        if self._embedded is not None:
            method = getattr(self._embedded, served.name)
            return await asyncio.to_thread(functools.partial(method, **arguments))
        assert self._transport is not None
        write = GRAPH_OPERATIONS[served.name] == "write"
        answer = await self._transport.call(
            GRAPH_PREFIX + served.name, graph_body(self.user, arguments), write=write
        )
        return served.result.validate_json(answer)


def _coroutine(owner: type[Any], name: str) -> Callable[..., Coroutine[Any, Any, Any]]:
    """``owner.<name>`` as a coroutine method of its asynchronous counterpart."""
    served = Served.of(owner, name)

    async def call(self: AsyncScope | AsyncGraph, *args: Any, **kwargs: Any) -> Any:
        return await self._call(served, served.arguments(self, args, kwargs))

    dressed: Callable[..., Coroutine[Any, Any, Any]] = served.dress(call)
    return dressed


for _name in SCOPE_OPERATIONS:
    setattr(AsyncScope, _name, _coroutine(Scope, _name))
for _name in GRAPH_OPERATIONS:
    setattr(AsyncGraph, _name, _coroutine(EntityGraph, _name))


class AsyncMemory:
    """A store for asyncio code: :meth:`open` it, hand out :meth:`scope` and :meth:`graph`,
    :meth:`close` it (or ``async with``)."""

    def __init__(self, memory: Memory | None, transport: AsyncTransport | None) -> None:
        self._memory = memory
        self._transport = transport

    @classmethod
    async def open(
        cls,
        url: str | None = None,
        *,
        api_key: str | None = None,
        timeout: float = 30.0,
        **options: Any,
    ) -> AsyncMemory:
        """Open the hub at ``url`` (an ``http://`` URL, with ``api_key`` and ``timeout`` as
        ``Memory.open`` takes them) or the database there (the other ``options`` of
        ``Memory.open``, opened in a worker thread: it may migrate an empty database)."""
        if is_remote(url):
            assert isinstance(url, str)
            return cls(None, AsyncTransport(url, api_key, timeout))
        opened = functools.partial(Memory.open, url, **options)
        return cls(await asyncio.to_thread(opened), None)

    @property
    def backend(self) -> str:
        """``sqlite``, ``postgresql``, or ``remote`` (a hub service)."""
        return "remote" if self._memory is None else self._memory.backend

    @property
    def memory(self) -> Memory:
        """The embedded store underneath (``EmbeddedOnlyError`` for a hub)."""
        if self._memory is None:
            raise EmbeddedOnlyError("AsyncMemory.memory")
        return self._memory

    def scope(self, user: str, agent: str, session: str | None = None) -> AsyncScope:
        """A handle that reads and writes as ``agent`` for ``user`` in ``session``."""
        if self._memory is not None:
            embedded = self._memory.scope(user, agent, session)
            owner = Owner(embedded.user, embedded.agent, embedded.session)
            return AsyncScope(owner, embedded, None)
        self._require_open()
        checked = validate(ScopeInput, {"user": user, "agent": agent, "session": session})
        owner = Owner(checked.user, checked.agent, checked.session)
        return AsyncScope(owner, None, self._transport)

    def graph(self, user: str) -> AsyncGraph:
        """The entity knowledge graph of ``user``."""
        if self._memory is not None:
            embedded = self._memory.graph(user)
            return AsyncGraph(embedded.user, embedded, None)
        self._require_open()
        checked = validate(ScopeInput, {"user": user, "agent": "graph"})
        return AsyncGraph(checked.user, None, self._transport)

    def _require_open(self) -> None:
        if self._transport is not None and self._transport.closed:
            raise StoreClosedError("this memory store is closed; open it again")

    async def close(self) -> None:
        """Close the store (the embedded one in a worker thread: it flushes pending writes)."""
        if self._transport is not None:
            await self._transport.close()
        elif self._memory is not None:
            await asyncio.to_thread(self._memory.close)

    async def __aenter__(self) -> AsyncMemory:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()
