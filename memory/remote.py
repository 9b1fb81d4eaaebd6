"""The remote store: ``Memory.open("http://host:8080", api_key=...)`` (or
``grpc://host:5714``) talks to ``memctl serve`` and hands out scopes with the embedded
``Scope``'s methods, types and errors.

A :class:`RemoteScope` is a ``Scope`` whose operations send their keyword arguments to the
hub through a :class:`Transport` (``POST /v1/{operation}`` over HTTP, one RPC per operation
over gRPC) and read the result back into the same records (pydantic validates the JSON into
the dataclasses); an error reply raises the library error of the same name, so code written
against the embedded store runs unchanged. This module also names the
operations the service serves (:data:`SCOPE_OPERATIONS`), so the two sides share one list.

Several endpoints, comma-separated (``http://a:8080,http://b:8080``), are replicas: a call
goes to the one that answered last, and to the next when it cannot be reached. A write
carries an idempotency key, the same on every attempt, so the service applies a retried
write once. Failover and idempotency live in :class:`Transport`, once for both protocols.
"""

from __future__ import annotations

import inspect
import json
import threading
import typing
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from pydantic import TypeAdapter
from pydantic_core import PydanticSerializationError, to_jsonable_python

from flags import EvaluationContext
from memory.core import errors
from memory.core.errors import (
    DatabaseUnavailableError,
    InvalidInputError,
    MemoryStoreError,
    StaleVersionError,
    StoreClosedError,
)
from memory.core.types import Owner
from memory.scope import Scope

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
IDEMPOTENCY_KEY = "Idempotency-Key"
HTTP_SCHEMES = ("http://", "https://")
GRPC_SCHEMES = ("grpc://", "grpcs://")
REMOTE_SCHEMES = HTTP_SCHEMES + GRPC_SCHEMES


def is_remote(url: object) -> bool:
    """Whether ``url`` names a hub service rather than a database."""
    return isinstance(url, str) and url.startswith(REMOTE_SCHEMES)


def open_transport(url: str, api_key: str | None) -> Transport:
    """The transport to the replicas ``url`` lists (all of one protocol)."""
    if not api_key:
        raise InvalidInputError("api_key: a remote store needs one (memctl keys create)")
    endpoints = [item.strip().rstrip("/") for item in url.split(",") if item.strip()]
    schemes = GRPC_SCHEMES if endpoints and endpoints[0].startswith(GRPC_SCHEMES) else HTTP_SCHEMES
    for endpoint in endpoints:
        if not endpoint.startswith(schemes):
            raise InvalidInputError(
                f"url: {endpoint!r} is not an {' or '.join(schemes)} URL "
                "(the replicas of one store speak one protocol)"
            )
    if schemes == GRPC_SCHEMES:
        return GrpcTransport(endpoints, api_key)
    return HttpTransport(endpoints, api_key)


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


class _Unreachable(Exception):
    """This replica did not answer: try the next."""


class _Busy(Exception):
    """This replica's bulkhead is full: another may have room; ``error`` if none has."""

    def __init__(self, error: MemoryStoreError) -> None:
        super().__init__(str(error))
        self.error = error


class Transport(ABC):
    """Calls to one or more replicas of the hub with the API key: a call goes to the
    replica that answered last, and to the next when it cannot be reached or is busy. A
    protocol says how one attempt goes (:meth:`_attempt`)."""

    def __init__(self, endpoints: list[str], api_key: str) -> None:
        self.endpoints = endpoints
        self.api_key = api_key
        self._preferred = 0
        self._lock = threading.Lock()
        self.closed = False

    def call(
        self, operation: str, body: dict[str, Any], result: TypeAdapter[T], *, write: bool
    ) -> T:
        """The result of ``operation``, trying each replica in turn when one cannot be
        reached; raises the library error the service replied with. A write carries one
        idempotency key on every attempt, so the hub applies it once."""
        if self.closed:
            raise StoreClosedError("this memory store is closed; open it again with Memory.open")
        request_key = uuid.uuid4().hex if write else None
        with self._lock:
            first = self._preferred
        failures = []
        busy: MemoryStoreError | None = None
        for step in range(len(self.endpoints)):
            index = (first + step) % len(self.endpoints)
            try:
                answer = self._attempt(index, operation, body, result, request_key)
            except _Unreachable as error:
                failures.append(f"{self.endpoints[index]}: {error}")
                continue
            except _Busy as error:
                failures.append(f"{self.endpoints[index]}: busy")
                busy = error.error
                continue
            except MemoryStoreError:
                with self._lock:
                    self._preferred = index
                raise
            with self._lock:
                self._preferred = index
            return answer
        if busy is not None:
            raise busy
        raise DatabaseUnavailableError(f"no hub replica answered ({'; '.join(failures)})")

    @abstractmethod
    def _attempt(
        self,
        index: int,
        operation: str,
        body: dict[str, Any],
        result: TypeAdapter[T],
        request_key: str | None,
    ) -> T:
        """One call to replica ``index``: its result, or the library error it replied,
        or ``_Unreachable`` / ``_Busy``."""

    def admin(self, operation: str, body: dict[str, Any], result: type[T]) -> T:
        """An admin verb of ``Memory`` (the hub refuses it unless the key is an admin's)."""
        return self.call(operation, body, TypeAdapter(result), write=True)

    def close(self) -> None:
        self.closed = True


class HttpTransport(Transport):
    """``POST /v1/{operation}`` with JSON bodies (httpx)."""

    def __init__(self, endpoints: list[str], api_key: str, timeout: float = 30.0) -> None:
        super().__init__(endpoints, api_key)
        # httpx is the 'service' extra's: imported here, so that `import memory` stays as
        # light as the embedded store needs (telemetry's exporters do the same).
        try:
            import httpx
        except ImportError:
            raise _missing_extra() from None
        self._unreachable: type[Exception] = httpx.TransportError
        headers = {"Authorization": f"Bearer {api_key}"}
        self._clients = [
            httpx.Client(base_url=endpoint, headers=headers, timeout=timeout)
            for endpoint in endpoints
        ]

    def _attempt(
        self,
        index: int,
        operation: str,
        body: dict[str, Any],
        result: TypeAdapter[T],
        request_key: str | None,
    ) -> T:
        content = json.dumps(body, ensure_ascii=False, allow_nan=False).encode()
        headers = {"Content-Type": "application/json"}
        if request_key is not None:
            headers[IDEMPOTENCY_KEY] = request_key
        try:
            response = self._clients[index].post(
                f"/v1/{operation}", content=content, headers=headers
            )
        except self._unreachable as error:
            raise _Unreachable(type(error).__name__) from None
        if response.status_code == 503 and "Retry-After" in response.headers:
            raise _Busy(_error(response))
        if response.status_code == 200:
            return result.validate_json(response.content)
        raise _error(response)

    def close(self) -> None:
        super().close()
        for client in self._clients:
            client.close()


def _missing_extra() -> InvalidInputError:
    return InvalidInputError(
        "url: a remote store needs the 'service' extra: pip install 'tiered-memory[service]'"
    )


class GrpcTransport(Transport):
    """One unary RPC per operation (``memory/wire/memory.proto``), the key, request id and
    idempotency key in the call's metadata; ``grpcs://`` is TLS, checked against the
    system's roots or ``$GRPC_DEFAULT_SSL_ROOTS_FILE_PATH``."""

    def __init__(self, endpoints: list[str], api_key: str, timeout: float = 30.0) -> None:
        super().__init__(endpoints, api_key)
        # grpcio and protobuf are the 'service' extra's, imported here as httpx is above.
        try:
            import grpc

            from memory import wire
            from memory.wire import memory_pb2, memory_pb2_grpc
        except ImportError:
            raise _missing_extra() from None
        self._grpc = grpc
        self._wire = wire
        self._messages = memory_pb2
        self._timeout = timeout
        self._channels = []
        self._stubs = []
        # A reply is as large as what was asked for (a long list): the hub bounds requests.
        options = [("grpc.max_receive_message_length", -1)]
        for endpoint in endpoints:
            scheme, _, address = endpoint.partition("://")
            channel = (
                grpc.secure_channel(address, grpc.ssl_channel_credentials(), options)
                if scheme == "grpcs"
                else grpc.insecure_channel(address, options)
            )
            self._channels.append(channel)
            # grpcio-tools writes no type stub for the service module.
            self._stubs.append(memory_pb2_grpc.MemoryHubStub(channel))  # type: ignore[no-untyped-call]

    def _attempt(
        self,
        index: int,
        operation: str,
        body: dict[str, Any],
        result: TypeAdapter[T],
        request_key: str | None,
    ) -> T:
        wire = self._wire
        method = wire.method_name(operation)
        try:
            request = wire.to_message(body, getattr(self._messages, f"{method}Request"))
        except ValueError as error:
            raise InvalidInputError(f"arguments: {error}") from None
        metadata = [(wire.AUTHORIZATION, f"Bearer {self.api_key}")]
        if request_key is not None:
            metadata.append((wire.IDEMPOTENCY_KEY, request_key))
        try:
            reply = getattr(self._stubs[index], method)(
                request, metadata=metadata, timeout=self._timeout
            )
        except self._grpc.RpcError as error:
            raise self._refusal(error) from None
        return result.validate_python(wire.from_message(reply, absent=True)["result"])

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
        super().close()
        for channel in self._channels:
            channel.close()


class RemoteScope(Scope):
    """A :class:`Scope` of a remote store: the same methods, types and errors, answered
    by the hub as the identity of the store's API key."""

    def __init__(self, transport: Transport, owner: Owner) -> None:  # noqa: D107
        self._transport = transport
        self._owner = owner
        self._flag_context = EvaluationContext(
            user_id=owner.user, session_id=owner.session, agent_id=owner.agent
        )

    def _remote(self, operation: str, arguments: dict[str, Any], result: TypeAdapter[T]) -> T:
        try:
            wire = to_jsonable_python(arguments)
        except PydanticSerializationError as error:
            raise InvalidInputError(f"arguments: not JSON-serialisable: {error}") from None
        body = {
            "user": self._owner.user,
            "agent": self._owner.agent,
            "session": self._owner.session,
            "arguments": wire,
        }
        return self._transport.call(
            operation, body, result, write=SCOPE_OPERATIONS[operation] == "write"
        )


def _forwarded(name: str) -> Callable[..., Any]:
    """``Scope.<name>`` as a call to the hub, with the embedded method's signature."""
    method = inspect.unwrap(getattr(Scope, name))
    signature = inspect.signature(method)
    result: TypeAdapter[Any] = TypeAdapter(typing.get_type_hints(method)["return"])

    def forward(self: RemoteScope, *args: Any, **kwargs: Any) -> Any:
        bound = signature.bind(self, *args, **kwargs)  # a TypeError as the embedded call
        arguments = {key: value for key, value in bound.arguments.items() if key != "self"}
        return self._remote(name, arguments, result)

    forward.__name__ = forward.__qualname__ = name
    forward.__doc__ = method.__doc__
    forward.__signature__ = signature  # type: ignore[attr-defined]
    return forward


for _name in SCOPE_OPERATIONS:
    setattr(RemoteScope, _name, _forwarded(_name))
