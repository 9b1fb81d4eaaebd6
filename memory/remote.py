"""The remote store: ``Memory.open("http://host:8080", api_key=...)`` talks to ``memctl
serve`` and hands out scopes with the embedded ``Scope``'s methods, types and errors.

A :class:`RemoteScope` is a ``Scope`` whose operations send their keyword arguments to
``POST /v1/{operation}`` and read the result back into the same records (pydantic validates
the JSON into the dataclasses); an error reply raises the library error of the same name,
so code written against the embedded store runs unchanged. This module also names the
operations the service serves (:data:`SCOPE_OPERATIONS`), so the two sides share one list.

Several endpoints, comma-separated (``http://a:8080,http://b:8080``), are replicas: a call
goes to the one that answered last, and to the next when it cannot be reached. A write
carries an ``Idempotency-Key``, the same on every attempt, so the service applies a
retried write once.
"""

from __future__ import annotations

import inspect
import json
import threading
import typing
import uuid
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
REMOTE_SCHEMES = ("http://", "https://")


def is_remote(url: object) -> bool:
    """Whether ``url`` names a hub service rather than a database."""
    return isinstance(url, str) and url.startswith(REMOTE_SCHEMES)


def _error(response: httpx.Response) -> MemoryStoreError:
    """The library error an error reply describes."""
    try:
        error = response.json()["error"]
        kind, message, details = error["type"], str(error["message"]), error["details"]
    except (ValueError, KeyError, TypeError):
        return DatabaseUnavailableError(
            f"the hub answered {response.status_code} without an error description"
        )
    if kind == "StaleVersionError":
        return StaleVersionError(details["memory_id"], details["expected"], details["current"])
    found = getattr(errors, kind, None)
    if isinstance(found, type) and issubclass(found, MemoryStoreError):
        return found(message)
    if response.status_code == 503:  # every replica busy: unavailable for now
        return DatabaseUnavailableError(message)
    return MemoryStoreError(f"{kind}: {message}")


class Transport:
    """HTTP calls to one or more replicas of the hub, with the API key."""

    def __init__(self, url: str, api_key: str | None, timeout: float = 30.0) -> None:
        if not api_key:
            raise InvalidInputError("api_key: a remote store needs one (memctl keys create)")
        endpoints = [item.strip().rstrip("/") for item in url.split(",") if item.strip()]
        for endpoint in endpoints:
            if not is_remote(endpoint):
                raise InvalidInputError(f"url: {endpoint!r} is not an http:// or https:// URL")
        # httpx is the 'service' extra's: imported here, so that `import memory` stays as
        # light as the embedded store needs (telemetry's exporters do the same).
        try:
            import httpx
        except ImportError:
            raise InvalidInputError(
                "url: a remote store needs the 'service' extra: "
                "pip install 'tiered-memory[service]'"
            ) from None
        self._unreachable: type[Exception] = httpx.TransportError
        self.endpoints = endpoints
        headers = {"Authorization": f"Bearer {api_key}"}
        self._clients = [
            httpx.Client(base_url=endpoint, headers=headers, timeout=timeout)
            for endpoint in endpoints
        ]
        self._preferred = 0
        self._lock = threading.Lock()
        self.closed = False

    def call(self, operation: str, body: dict[str, Any], *, write: bool) -> bytes:
        """The JSON result of ``operation``, trying each replica in turn when one cannot
        be reached; raises the library error the service replied with."""
        if self.closed:
            raise StoreClosedError("this memory store is closed; open it again with Memory.open")
        content = json.dumps(body, ensure_ascii=False, allow_nan=False).encode()
        headers = {"Content-Type": "application/json"}
        if write:
            headers[IDEMPOTENCY_KEY] = uuid.uuid4().hex
        with self._lock:
            first = self._preferred
        failures = []
        last_busy: httpx.Response | None = None
        for step in range(len(self._clients)):
            index = (first + step) % len(self._clients)
            try:
                response = self._clients[index].post(
                    f"/v1/{operation}", content=content, headers=headers
                )
            except self._unreachable as error:
                failures.append(f"{self.endpoints[index]}: {type(error).__name__}")
                continue
            if response.status_code == 503 and "Retry-After" in response.headers:
                # This replica's bulkhead is full: another may have room.
                failures.append(f"{self.endpoints[index]}: busy")
                last_busy = response
                continue
            with self._lock:
                self._preferred = index
            if response.status_code == 200:
                return response.content
            raise _error(response)
        if last_busy is not None:
            raise _error(last_busy)
        raise DatabaseUnavailableError(f"no hub replica answered ({'; '.join(failures)})")

    def admin(self, operation: str, body: dict[str, Any], result: type[T]) -> T:
        """An admin verb of ``Memory`` (the hub refuses it unless the key is an admin's)."""
        return TypeAdapter(result).validate_json(self.call(operation, body, write=True))

    def close(self) -> None:
        self.closed = True
        for client in self._clients:
            client.close()


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
            operation, body, write=SCOPE_OPERATIONS[operation] == "write"
        )


def _forwarded(name: str) -> Callable[..., Any]:
    """``Scope.<name>`` as a call to the hub, with the embedded method's signature."""
    method = inspect.unwrap(getattr(Scope, name))
    signature = inspect.signature(method)
    result: TypeAdapter[Any] = TypeAdapter(typing.get_type_hints(method)["return"])

    def forward(self: RemoteScope, *args: Any, **kwargs: Any) -> Any:
        bound = signature.bind(self, *args, **kwargs)  # a TypeError as the embedded call
        arguments = {key: value for key, value in bound.arguments.items() if key != "self"}
        return result.validate_json(self._remote(name, arguments))

    forward.__name__ = forward.__qualname__ = name
    forward.__doc__ = method.__doc__
    forward.__signature__ = signature  # type: ignore[attr-defined]
    return forward


for _name in SCOPE_OPERATIONS:
    setattr(RemoteScope, _name, _forwarded(_name))
