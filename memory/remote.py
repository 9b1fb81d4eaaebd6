"""The remote store: ``Memory.open("http://host:8080", api_key=...)`` (or
``grpc://host:5714``) talks to ``memctl serve`` and hands out scopes with the embedded
``Scope``'s methods, types and errors.

A :class:`RemoteScope` is a ``Scope`` whose operations send their keyword arguments to the
hub through a :class:`Transport` (``POST /v1/{operation}`` over HTTP, one RPC per operation
over gRPC: :class:`GrpcTransport`) and read the result back into the same records (pydantic
validates the JSON into the dataclasses); an error reply raises the library error of the same
name, so code written against the embedded store runs unchanged. A :class:`RemoteGraph` does the
same for the entity graph (``Memory.graph(user)``). What exists only embedded (a scope's
``subscribe``, the graph's JSONL import and export, the store's maintenance members) raises
``EmbeddedOnlyError`` naming the member. This module also names the operations the
service serves (:data:`SCOPE_OPERATIONS`, :data:`GRAPH_OPERATIONS`), so the two sides
share one list.

Several endpoints, comma-separated (``http://a:8080,http://b:8080``), are replicas: a call
goes to the one that answered last, and to the next when it cannot be reached. A write
carries an ``Idempotency-Key``, the same on every attempt, so the service applies a
retried write once. Every call tells the hub the client's timeout (``X-Request-Timeout``):
past it the hub answers 504, which raises ``DeadlineExceededError``, having written nothing.
"""

from __future__ import annotations

import inspect
import json
import math
import threading
import typing
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from pydantic import TypeAdapter
from pydantic_core import PydanticSerializationError, to_jsonable_python

from flags import EvaluationContext
from memory.core import errors
from memory.core.errors import (
    DatabaseUnavailableError,
    EmbeddedOnlyError,
    InvalidInputError,
    MemoryStoreError,
    StaleVersionError,
    StoreClosedError,
)
from memory.core.types import MemoryEvent, Owner
from memory.scope import Scope
from memory.store.graph import EntityGraph
from memory.updates import Subscription

if TYPE_CHECKING:
    import httpx

OperationClass = Literal["read", "write", "search"]
T = TypeVar("T")

# Every Scope operation the service serves, by class: writes carry idempotency keys, and
# the service can bound each class apart.
SCOPE_OPERATIONS: dict[str, OperationClass] = {
    "add": "write",
    "add_many": "write",
    "get": "read",
    "update": "write",
    "list": "read",
    "delete": "write",
    "share": "write",
    "revoke": "write",
    "grants": "read",
    "search": "search",
    "inject": "search",
    "resume": "read",
    "set_preference": "write",
    "get_preference": "read",
    "list_preferences": "read",
    "delete_preference": "write",
    "record_pattern": "write",
    "use_pattern": "write",
    "find_patterns": "read",
    "save_state": "write",
    "load_state": "read",
    "merge_context": "write",
    "record_event": "write",
}
# The entity graph's operations (``Memory.graph(user)``), served as ``graph_<name>``.
GRAPH_OPERATIONS: dict[str, OperationClass] = {
    "create_entities": "write",
    "create_relations": "write",
    "add_observations": "write",
    "delete_entities": "write",
    "delete_observations": "write",
    "delete_relations": "write",
    "read_graph": "read",
    "search_nodes": "read",
    "open_nodes": "read",
}
GRAPH_PREFIX = "graph_"
IDEMPOTENCY_KEY = "Idempotency-Key"
# Seconds the hub may spend on a request before it answers 504 having written nothing.
REQUEST_TIMEOUT = "X-Request-Timeout"
HTTP_SCHEMES = ("http://", "https://")
GRPC_SCHEMES = ("grpc://", "grpcs://")
REMOTE_SCHEMES = HTTP_SCHEMES + GRPC_SCHEMES


def is_remote(url: object) -> bool:
    """Whether ``url`` names a hub service rather than a database."""
    return isinstance(url, str) and url.startswith(REMOTE_SCHEMES)


def open_transport(url: str, api_key: str | None, timeout: float = 30.0) -> Transport:
    """The synchronous transport to the replicas ``url`` lists, by their scheme."""
    if url.strip().startswith(GRPC_SCHEMES):
        return GrpcTransport(url, api_key, timeout)
    return HttpTransport(url, api_key, timeout)


def _library_error(kind: str, message: str, details: Any) -> MemoryStoreError | None:
    """The library error named ``kind``, or None when there is none of that name."""
    if kind == "StaleVersionError":
        return StaleVersionError(details["memory_id"], details["expected"], details["current"])
    found = getattr(errors, kind, None)
    if isinstance(found, type) and issubclass(found, MemoryStoreError):
        return found(message)
    return None


def _error(response: httpx.Response) -> MemoryStoreError:
    """The library error an error reply describes."""
    try:
        error = response.json()["error"]
        kind, message, details = error["type"], str(error["message"]), error["details"]
    except (ValueError, KeyError, TypeError):
        return DatabaseUnavailableError(
            f"the hub answered {response.status_code} without an error description"
        )
    found = _library_error(kind, message, details)
    if found is not None:
        return found
    if response.status_code == 503:  # every replica busy: unavailable for now
        return DatabaseUnavailableError(message)
    return MemoryStoreError(f"{kind}: {message}")


class _Replicas:
    """What the synchronous and the asynchronous transports share: the replicas and the
    API key, the request each attempt sends, and what each answer means."""

    SCHEMES = HTTP_SCHEMES

    def __init__(self, url: str, api_key: str | None, timeout: float) -> None:
        if not api_key:
            raise InvalidInputError("api_key: a remote store needs one (memctl keys create)")
        if (
            isinstance(timeout, bool)
            or not isinstance(timeout, int | float)
            or not math.isfinite(timeout)
            or timeout <= 0
        ):
            raise InvalidInputError(f"timeout: must be a number of seconds > 0, not {timeout!r}")
        endpoints = [item.strip().rstrip("/") for item in url.split(",") if item.strip()]
        for endpoint in endpoints:
            if not endpoint.startswith(self.SCHEMES):
                raise InvalidInputError(
                    f"url: {endpoint!r} is not an {' or '.join(self.SCHEMES)} URL "
                    "(the replicas of one store speak one protocol)"
                )
        self.endpoints = endpoints
        self.timeout = timeout
        self.headers = {"Authorization": f"Bearer {api_key}"}
        self._preferred = 0
        self._lock = threading.Lock()
        self.closed = False

    @staticmethod
    def _httpx() -> Any:
        # httpx is the 'service' extra's: imported here, so that `import memory` stays as
        # light as the embedded store needs (telemetry's exporters do the same).
        try:
            import httpx
        except ImportError:
            raise InvalidInputError(
                "url: a remote store needs the 'service' extra: "
                "pip install 'tiered-memory[service]'"
            ) from None
        return httpx

    def _request(self, body: dict[str, Any], write: bool) -> tuple[bytes, dict[str, str]]:
        """The content and headers of a call, the same on every attempt."""
        if self.closed:
            raise StoreClosedError("this memory store is closed; open it again with Memory.open")
        content = json.dumps(body, ensure_ascii=False, allow_nan=False).encode()
        # The hub gives up (504, nothing written) a little before this client would stop
        # waiting, so that its answer still arrives.
        hub_timeout = self.timeout - min(1.0, self.timeout / 5)
        headers = {"Content-Type": "application/json", REQUEST_TIMEOUT: f"{hub_timeout:.3f}"}
        if write:
            headers[IDEMPOTENCY_KEY] = uuid.uuid4().hex
        return content, headers

    def _order(self) -> list[int]:
        """The replicas to try, the one that answered last first."""
        with self._lock:
            first = self._preferred
        return [(first + step) % len(self.endpoints) for step in range(len(self.endpoints))]

    def _answer(self, index: int, response: httpx.Response, attempt: _Attempt) -> bytes | None:
        """The result in ``response`` from replica ``index``; None to try the next replica
        (this one's bulkhead is full); raises the library error the service replied with."""
        if response.status_code == 503 and "Retry-After" in response.headers:
            attempt.failures.append(f"{self.endpoints[index]}: busy")
            attempt.last_busy = response
            return None
        with self._lock:
            self._preferred = index
        if response.status_code == 200:
            return response.content
        raise _error(response)


@dataclass
class _Attempt:
    """What the replicas tried for one call said, for the error when none answered."""

    failures: list[str] = field(default_factory=list)
    last_busy: httpx.Response | None = None
    busy: MemoryStoreError | None = None  # gRPC's: the error a full bulkhead answered

    def unreachable(self, endpoint: str, error: Exception) -> None:
        self.failures.append(f"{endpoint}: {type(error).__name__}")

    def give_up(self) -> MemoryStoreError:
        if self.last_busy is not None:
            return _error(self.last_busy)
        if self.busy is not None:
            return self.busy
        return DatabaseUnavailableError(f"no hub replica answered ({'; '.join(self.failures)})")


class Transport(_Replicas, ABC):
    """Synchronous calls to one or more replicas of the hub, with the API key: the JSON
    result of an operation, whichever the protocol."""

    @abstractmethod
    def call(self, operation: str, body: dict[str, Any], *, write: bool) -> bytes:
        """The JSON result of ``operation``, trying each replica in turn when one cannot
        be reached; raises the library error the service replied with."""

    def admin(self, operation: str, body: dict[str, Any], result: type[T]) -> T:
        """An admin verb of ``Memory`` (the hub refuses it unless the key is an admin's)."""
        return TypeAdapter(result).validate_json(self.call(operation, body, write=True))

    @abstractmethod
    def close(self) -> None:
        """Close the connections; every later call raises ``StoreClosedError``."""


class HttpTransport(Transport):
    """HTTP calls to one or more replicas of the hub, with the API key."""

    def __init__(self, url: str, api_key: str | None, timeout: float = 30.0) -> None:
        super().__init__(url, api_key, timeout)
        httpx = self._httpx()
        self._unreachable: type[Exception] = httpx.TransportError
        self._clients = [
            httpx.Client(base_url=endpoint, headers=self.headers, timeout=timeout)
            for endpoint in self.endpoints
        ]

    def call(self, operation: str, body: dict[str, Any], *, write: bool) -> bytes:
        content, headers = self._request(body, write)
        attempt = _Attempt()
        for index in self._order():
            try:
                response = self._clients[index].post(
                    f"/v1/{operation}", content=content, headers=headers
                )
            except self._unreachable as error:
                attempt.unreachable(self.endpoints[index], error)
                continue
            result = self._answer(index, response, attempt)
            if result is not None:
                return result
        raise attempt.give_up()

    def close(self) -> None:
        self.closed = True
        for client in self._clients:
            client.close()


class GrpcTransport(Transport):
    """One unary RPC per operation (``memory/wire/memory.proto``), the key and idempotency
    key in the call's metadata, the timeout as the call's deadline (the hub answers
    DEADLINE_EXCEEDED a little before it, having written nothing); ``grpcs://`` is TLS,
    checked against the system's roots or ``$GRPC_DEFAULT_SSL_ROOTS_FILE_PATH``."""

    SCHEMES = GRPC_SCHEMES

    def __init__(self, url: str, api_key: str | None, timeout: float = 30.0) -> None:
        super().__init__(url, api_key, timeout)
        # grpcio and protobuf are the 'service' extra's, imported here as httpx is.
        try:
            import grpc

            from memory import wire
            from memory.wire import memory_pb2, memory_pb2_grpc
        except ImportError:
            raise InvalidInputError(
                "url: a remote store needs the 'service' extra: "
                "pip install 'tiered-memory[service]'"
            ) from None
        self._grpc = grpc
        self._wire = wire
        self._messages = memory_pb2
        self._channels = []
        self._stubs = []
        # A reply is as large as what was asked for (a long list): the hub bounds requests.
        options = [("grpc.max_receive_message_length", -1)]
        for endpoint in self.endpoints:
            scheme, _, address = endpoint.partition("://")
            channel = (
                grpc.secure_channel(address, grpc.ssl_channel_credentials(), options)
                if scheme == "grpcs"
                else grpc.insecure_channel(address, options)
            )
            self._channels.append(channel)
            # grpcio-tools writes no type stub for the service module.
            self._stubs.append(memory_pb2_grpc.MemoryHubStub(channel))  # type: ignore[no-untyped-call]

    def call(self, operation: str, body: dict[str, Any], *, write: bool) -> bytes:
        _content, headers = self._request(body, write)  # the closed check, the same key
        wire = self._wire
        method = wire.method_name(operation)
        try:
            request = wire.to_message(body, getattr(self._messages, f"{method}Request"))
        except ValueError as error:
            raise InvalidInputError(f"arguments: {error}") from None
        metadata = [(wire.AUTHORIZATION, self.headers["Authorization"])]
        if IDEMPOTENCY_KEY in headers:
            metadata.append((wire.IDEMPOTENCY_KEY, headers[IDEMPOTENCY_KEY]))
        attempt = _Attempt()
        for index in self._order():
            try:
                reply = getattr(self._stubs[index], method)(
                    request, metadata=metadata, timeout=self.timeout
                )
            except self._grpc.RpcError as error:
                refusal = self._refusal(error)
                if isinstance(refusal, _Unreachable):
                    attempt.failures.append(f"{self.endpoints[index]}: {refusal}")
                    continue
                if isinstance(refusal, _Busy):
                    attempt.failures.append(f"{self.endpoints[index]}: busy")
                    attempt.busy = refusal.error
                    continue
                with self._lock:
                    self._preferred = index
                raise refusal from None
            with self._lock:
                self._preferred = index
            result = wire.from_message(reply, absent=True)["result"]
            return json.dumps(result, ensure_ascii=False).encode()
        raise attempt.give_up()

    def _refusal(self, error: Any) -> Exception:
        """The library error a refused call's trailers name, or why the replica is out."""
        trailers = dict(error.trailing_metadata() or ())
        kind = trailers.get(self._wire.ERROR_TYPE)
        code = error.code()
        if kind is None:
            if code == self._grpc.StatusCode.RESOURCE_EXHAUSTED:
                return InvalidInputError(f"request: {error.details()}")
            if code in (self._grpc.StatusCode.UNAVAILABLE, self._grpc.StatusCode.DEADLINE_EXCEEDED):
                return _Unreachable(code.name)
            return DatabaseUnavailableError(f"the hub answered {code.name}: {error.details()}")
        if kind == "ServiceBusy":  # this replica's bulkhead is full
            return _Busy(DatabaseUnavailableError(error.details() or "busy"))
        details = json.loads(trailers.get(self._wire.ERROR_DETAILS, "{}"))
        found = _library_error(kind, error.details() or "", details)
        if found is not None:
            return found
        return MemoryStoreError(f"{kind}: {error.details()}")

    def close(self) -> None:
        self.closed = True
        for channel in self._channels:
            channel.close()


class _Unreachable(Exception):
    """This replica did not answer: try the next."""


class _Busy(Exception):
    """This replica's bulkhead is full: another may have room; ``error`` if none has."""

    def __init__(self, error: MemoryStoreError) -> None:
        super().__init__(str(error))
        self.error = error


class AsyncTransport(_Replicas):
    """:class:`Transport` for asyncio code: httpx's ``AsyncClient``, the same failover,
    idempotency keys and timeout (``memory.aio``)."""

    def __init__(self, url: str, api_key: str | None, timeout: float = 30.0) -> None:
        super().__init__(url, api_key, timeout)
        httpx = self._httpx()
        self._unreachable: type[Exception] = httpx.TransportError
        self._clients = [
            httpx.AsyncClient(base_url=endpoint, headers=self.headers, timeout=timeout)
            for endpoint in self.endpoints
        ]

    async def call(self, operation: str, body: dict[str, Any], *, write: bool) -> bytes:
        """As :meth:`Transport.call`, without blocking the event loop."""
        content, headers = self._request(body, write)
        attempt = _Attempt()
        for index in self._order():
            try:
                response = await self._clients[index].post(
                    f"/v1/{operation}", content=content, headers=headers
                )
            except self._unreachable as error:
                attempt.unreachable(self.endpoints[index], error)
                continue
            result = self._answer(index, response, attempt)
            if result is not None:
                return result
        raise attempt.give_up()

    async def close(self) -> None:
        self.closed = True
        for client in self._clients:
            await client.aclose()


class RemoteScope(Scope):
    """A :class:`Scope` of a remote store: the same methods, types and errors, answered
    by the hub as the identity of the store's API key."""

    def __init__(self, transport: Transport, owner: Owner) -> None:  # noqa: D107
        self._transport = transport
        self._owner = owner
        self._flag_context = EvaluationContext(
            user_id=owner.user, session_id=owner.session, agent_id=owner.agent
        )

    def _remote(self, operation: str, arguments: dict[str, Any]) -> bytes:
        return self._transport.call(
            operation,
            scope_body(self._owner, arguments),
            write=SCOPE_OPERATIONS[operation] == "write",
        )

    def subscribe(
        self, callback: Callable[[MemoryEvent], None], *, after_seq: int | None = None
    ) -> Subscription:
        raise EmbeddedOnlyError("Scope.subscribe")


class RemoteGraph(EntityGraph):
    """The entity graph of one user in a remote store: the same methods, records and
    errors as :class:`~memory.EntityGraph`, answered by the hub."""

    def __init__(self, transport: Transport, user: str) -> None:  # noqa: D107
        self._transport = transport
        self.user = user

    def _remote(self, operation: str, arguments: dict[str, Any]) -> bytes:
        return self._transport.call(
            GRAPH_PREFIX + operation,
            graph_body(self.user, arguments),
            write=GRAPH_OPERATIONS[operation] == "write",
        )

    def export_jsonl(self) -> Iterator[str]:
        raise EmbeddedOnlyError("EntityGraph.export_jsonl")

    def import_jsonl(self, lines: Iterable[str]) -> tuple[int, int]:
        raise EmbeddedOnlyError("EntityGraph.import_jsonl")


def _wire(arguments: dict[str, Any]) -> Any:
    try:
        return to_jsonable_python(arguments)
    except PydanticSerializationError as error:
        raise InvalidInputError(f"arguments: not JSON-serialisable: {error}") from None


def scope_body(owner: Owner, arguments: dict[str, Any]) -> dict[str, Any]:
    """The body of a call of a ``Scope`` operation for ``owner``."""
    return {
        "user": owner.user,
        "agent": owner.agent,
        "session": owner.session,
        "arguments": _wire(arguments),
    }


def graph_body(user: str, arguments: dict[str, Any]) -> dict[str, Any]:
    """The body of a call of an ``EntityGraph`` operation on ``user``'s graph."""
    return {"user": user, "arguments": _wire(arguments)}


@dataclass(frozen=True)
class Served:
    """An embedded method as the remote clients call it: its signature (the arguments are
    bound to it, so a wrong call is the embedded call's ``TypeError``), its result's type
    (the JSON answer is validated back into the same records) and its docstring."""

    name: str
    signature: inspect.Signature
    result: TypeAdapter[Any]
    doc: str | None

    @classmethod
    def of(cls, owner: type[Any], name: str) -> Served:
        method = inspect.unwrap(getattr(owner, name))
        result: TypeAdapter[Any] = TypeAdapter(typing.get_type_hints(method)["return"])
        return cls(name, inspect.signature(method), result, method.__doc__)

    def arguments(self, target: object, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """The call's arguments by name (``self`` left out)."""
        bound = self.signature.bind(target, *args, **kwargs)
        return {key: value for key, value in bound.arguments.items() if key != "self"}

    def dress(self, function: Callable[..., Any]) -> Callable[..., Any]:
        """``function`` with the embedded method's name, docstring and signature."""
        function.__name__ = function.__qualname__ = self.name
        function.__doc__ = self.doc
        function.__signature__ = self.signature  # type: ignore[attr-defined]
        return function


def _forwarded(owner: type[Any], name: str) -> Callable[..., Any]:
    """``owner.<name>`` as a call to the hub, with the embedded method's signature."""
    served = Served.of(owner, name)

    def forward(self: RemoteScope | RemoteGraph, *args: Any, **kwargs: Any) -> Any:
        arguments = served.arguments(self, args, kwargs)
        return served.result.validate_json(self._remote(name, arguments))

    return served.dress(forward)


for _name in SCOPE_OPERATIONS:
    setattr(RemoteScope, _name, _forwarded(Scope, _name))
for _name in GRAPH_OPERATIONS:
    setattr(RemoteGraph, _name, _forwarded(EntityGraph, _name))
