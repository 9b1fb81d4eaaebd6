"""The hub service's core, free of any transport: authenticate a request's key, act as the
identity the key carries, run one operation, and describe every failure the same way.

Every transport (HTTP, gRPC and ZeroMQ) hands this module the key it was given and the
request's JSON, and sends back what it returns, so each rule exists once:

- **Identity comes from the key.** The agent is the key's; only an ``admin`` key may name
  another agent to act as. A key that lists users acts for those only; the refusal is the
  same words for a user that exists and one that does not.
- **Arguments are the ``Scope`` method's own**, checked strictly (no coercion of ``"5"`` to
  5, no unknown field: an ``agent_id`` smuggled into the arguments is refused by name).
  The argument models and result types are derived from ``Scope``'s signatures, so the
  service cannot drift from the embedded API.
- **Errors keep their type.** :func:`error_reply` gives the status and the library error's
  class name, so the remote client raises the same exception the embedded store would.
- **Every request is a span.** :meth:`Service.span` opens the OpenTelemetry server span of
  a request, here rather than in a per-framework instrumentation, so that every transport
  traces alike: named after the operation, a child of the caller's trace when the request
  carries a W3C ``traceparent``, with the request id, operation, class and transport as
  attributes and the answer's status at the end (an error status from 500 on).
"""

from __future__ import annotations

import collections.abc
import inspect
import types
import typing
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from opentelemetry import propagate, trace
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, create_model

from memory import (
    AuthenticationError,
    ConflictError,
    DatabaseUnavailableError,
    DeadlineExceededError,
    EntityGraph,
    InvalidInputError,
    Memory,
    MemoryEvent,
    MemoryStoreError,
    NotFoundError,
    PermissionDeniedError,
    SchemaError,
    Scope,
    SessionExpiredError,
    StaleVersionError,
    StoreClosedError,
    Subscription,
)
from memory.core import deadlines
from memory.ops import ApiKey, apply_once, authenticate
from memory.remote import GRAPH_OPERATIONS, GRAPH_PREFIX, SCOPE_OPERATIONS, OperationClass

ModelT = TypeVar("ModelT", bound=BaseModel)
_STRICT = ConfigDict(strict=True, extra="forbid", frozen=True)


@dataclass(frozen=True, slots=True)
class Operation:
    """One served operation: its request model, its result's type, its class (for the
    bulkheads and idempotency), and whether it is an admin verb of ``Memory`` or a method
    of the user's ``EntityGraph`` rather than a ``Scope`` method (see :meth:`Service.call`)."""

    name: str
    kind: OperationClass
    request: type[BaseModel]
    result: TypeAdapter[Any]
    doc: str
    admin: bool = False
    graph: bool = False


def _wire_type(annotation: Any) -> Any:
    """The JSON form of a parameter type: an ``Iterable`` is a list, a ``Mapping`` a dict
    (pydantic would otherwise accept them lazily, or any mapping type)."""
    origin = typing.get_origin(annotation)
    arguments = typing.get_args(annotation)
    if origin is collections.abc.Iterable:
        return list[_wire_type(arguments[0])]  # type: ignore[misc]
    if origin is collections.abc.Mapping:
        return dict[arguments[0], arguments[1]]  # type: ignore[valid-type]
    if origin in (typing.Union, types.UnionType):
        return typing.Union[tuple(_wire_type(item) for item in arguments)]  # noqa: UP007
    return annotation


def _model(name: str, method: Callable[..., Any], skip: int) -> type[BaseModel]:
    """A strict model of ``method``'s parameters after the first ``skip``."""
    hints = typing.get_type_hints(method)
    fields: dict[str, Any] = {}
    for parameter in list(inspect.signature(method).parameters.values())[skip:]:
        default = ... if parameter.default is inspect.Parameter.empty else parameter.default
        fields[parameter.name] = (_wire_type(hints[parameter.name]), default)
    return create_model(name, __config__=_STRICT, **fields)


def _title(name: str) -> str:
    return "".join(part.title() for part in name.split("_"))


def _scope_operation(name: str, kind: OperationClass) -> Operation:
    method = inspect.unwrap(getattr(Scope, name))
    arguments = _model(f"{_title(name)}Arguments", method, 1)
    request = create_model(
        f"{_title(name)}Request",
        __config__=_STRICT,
        user=(str | None, Field(None, description="The user to act for (default: the key's)")),
        agent=(str | None, Field(None, description="The agent to act as: admin keys only")),
        session=(str | None, None),
        arguments=(arguments, Field(default_factory=arguments)),
    )
    result = TypeAdapter(typing.get_type_hints(method)["return"])
    return Operation(name, kind, request, result, inspect.getdoc(method) or name)


def _graph_operation(name: str, kind: OperationClass) -> Operation:
    method = inspect.unwrap(getattr(EntityGraph, name))
    title = f"Graph{_title(name)}"
    arguments = _model(f"{title}Arguments", method, 1)
    request = create_model(
        f"{title}Request",
        __config__=_STRICT,
        user=(str | None, Field(None, description="Whose graph (default: the key's user)")),
        arguments=(arguments, Field(default_factory=arguments)),
    )
    result = TypeAdapter(typing.get_type_hints(method)["return"])
    doc = inspect.getdoc(method) or name
    return Operation(GRAPH_PREFIX + name, kind, request, result, doc, graph=True)


def _admin_operation(name: str) -> Operation:
    method = getattr(Memory, name)
    request = _model(f"{_title(name)}Request", method, 1)
    result = TypeAdapter(typing.get_type_hints(method)["return"])
    return Operation(name, "write", request, result, inspect.getdoc(method) or name, admin=True)


# The admin verbs of Memory the service serves to admin keys.
ADMIN_OPERATIONS = ("forget_user", "set_team")

OPERATIONS: dict[str, Operation] = {
    **{name: _scope_operation(name, kind) for name, kind in SCOPE_OPERATIONS.items()},
    **{
        GRAPH_PREFIX + name: _graph_operation(name, kind)
        for name, kind in GRAPH_OPERATIONS.items()
    },
    **{name: _admin_operation(name) for name in ADMIN_OPERATIONS},
}


# The change feed (SSE over HTTP, a server stream over gRPC): the scope's events after a
# sequence number; ``after_seq`` None means from now on.
CHANGES_REQUEST = create_model(
    "ChangesRequest",
    __config__=_STRICT,
    user=(str | None, None),
    agent=(str | None, None),
    session=(str | None, None),
    after_seq=(int | None, Field(None, ge=0)),
)
EVENT: TypeAdapter[MemoryEvent] = TypeAdapter(MemoryEvent)


@dataclass(frozen=True, slots=True)
class ErrorReply:
    """A failure as every transport reports it."""

    status: int
    type: str
    message: str
    details: dict[str, Any]

    def body(self) -> dict[str, Any]:
        return {"error": {"type": self.type, "message": self.message, "details": self.details}}


# Most specific first: the first class an error is an instance of decides its status.
_STATUS: tuple[tuple[type[MemoryStoreError], int], ...] = (
    (AuthenticationError, 401),
    (PermissionDeniedError, 403),
    (SessionExpiredError, 410),
    (NotFoundError, 404),
    (StaleVersionError, 409),
    (ConflictError, 409),
    (InvalidInputError, 422),
    (SchemaError, 503),
    (DatabaseUnavailableError, 503),
    (DeadlineExceededError, 504),
    (StoreClosedError, 503),
)


def error_reply(error: MemoryStoreError) -> ErrorReply:
    """The status, type and message a transport sends for ``error``."""
    status = next((code for kind, code in _STATUS if isinstance(error, kind)), 500)
    details: dict[str, Any] = {}
    if isinstance(error, StaleVersionError):
        details = {
            "memory_id": error.memory_id,
            "expected": error.expected,
            "current": error.current,
        }
    return ErrorReply(status, type(error).__name__, str(error), details)


def record_answer(span: trace.Span, status: int, error_type: str | None = None) -> None:
    """The answer of a request on its span: the status, and the error's type when there
    was one; a fault of the service (500 and up) marks the span as an error."""
    span.set_attribute(STATUS_ATTRIBUTE, status)
    if error_type is not None:
        span.set_attribute(ERROR_TYPE_ATTRIBUTE, error_type)
    if status >= 500:
        span.set_status(trace.Status(trace.StatusCode.ERROR, error_type))


def _described(error: ValidationError) -> str:
    """A pydantic error as one line naming each field and what is wrong with it."""
    problems = []
    for item in error.errors(include_url=False):
        where = ".".join(str(part) for part in item["loc"]) or "body"
        problems.append(f"{where}: {item['msg']}")
    return "; ".join(problems)


# Span attributes: the request's, then its answer's.
REQUEST_ID_ATTRIBUTE = "memory.request_id"
OPERATION_ATTRIBUTE = "memory.operation"
OPERATION_CLASS_ATTRIBUTE = "memory.operation_class"
TRANSPORT_ATTRIBUTE = "memory.transport"
STATUS_ATTRIBUTE = "memory.status"
ERROR_TYPE_ATTRIBUTE = "error.type"


class Service:
    """The operations of one store, for the identities its API keys carry; requests are
    traced with ``tracer_provider`` (default: the application's global one, a no-op until
    the application configures OpenTelemetry)."""

    def __init__(
        self, memory: Memory, tracer_provider: trace.TracerProvider | None = None
    ) -> None:
        self.memory = memory
        self.tracer = trace.get_tracer("memory.service", tracer_provider=tracer_provider)

    @contextmanager
    def span(
        self, name: str, request_id: str, transport: str, carrier: Mapping[str, str]
    ) -> Iterator[trace.Span]:
        """The server span of a request for operation ``name``, current within the block;
        ``carrier`` holds the request's trace context (HTTP headers, say). Close it with
        :func:`record_answer`."""
        operation = OPERATIONS.get(name)
        attributes = {
            REQUEST_ID_ATTRIBUTE: request_id,
            OPERATION_ATTRIBUTE: name,
            TRANSPORT_ATTRIBUTE: transport,
        }
        if operation is not None:
            attributes[OPERATION_CLASS_ATTRIBUTE] = operation.kind
        with self.tracer.start_as_current_span(
            name,
            context=propagate.extract(carrier),
            kind=trace.SpanKind.SERVER,
            attributes=attributes,
            record_exception=False,  # the answer says what failed; tracebacks go to the log
            set_status_on_exception=False,
        ) as span:
            yield span

    def authenticate(self, credential: str | None, deadline: float | None = None) -> ApiKey:
        """The active key ``credential`` is (see :func:`memory.ops.authenticate`), found by
        ``deadline`` (see :meth:`call`)."""
        with deadlines.bounded(deadline):
            return authenticate(self.memory, credential)

    def scope_for(
        self, key: ApiKey, user: str | None, agent: str | None, session: str | None
    ) -> Scope:
        """The scope a request with ``key`` may act in, or ``PermissionDeniedError``."""
        if agent is not None and agent != key.agent and key.role != "admin":
            raise PermissionDeniedError(
                f"this API key acts as agent {key.agent!r} only; acting as another agent "
                "needs an admin key"
            )
        return self.memory.scope(self.user_for(key, user), agent or key.agent, session)

    @staticmethod
    def user_for(key: ApiKey, user: str | None) -> str:
        """The user a request with ``key`` acts for, or ``PermissionDeniedError``."""
        if user is None:
            if len(key.users) != 1:
                raise InvalidInputError("user: required (this API key is not limited to one user)")
            return key.users[0]
        if key.users and user not in key.users and key.role != "admin":
            # The same words whether or not the user exists: a key learns nothing of others.
            raise PermissionDeniedError("this API key does not act for that user")
        return user

    def call(
        self,
        key: ApiKey,
        name: str,
        body: bytes | str | Mapping[str, Any],
        request_key: str | None = None,
        deadline: float | None = None,
    ) -> Any:
        """Run operation ``name`` with the request ``body`` (JSON text or an object) as
        ``key``'s identity; return the result as JSON-ready data. A write with a
        ``request_key`` (the ``Idempotency-Key``) is applied once however often it is
        sent (:func:`memory.ops.apply_once`). Past ``deadline`` (a ``time.monotonic()``
        value) the store refuses to begin or commit: ``DeadlineExceededError``, nothing
        written (:mod:`memory.core.deadlines`)."""
        with deadlines.bounded(deadline):
            return self._call(key, name, body, request_key)

    def _call(
        self,
        key: ApiKey,
        name: str,
        body: bytes | str | Mapping[str, Any],
        request_key: str | None,
    ) -> Any:
        operation = OPERATIONS.get(name)
        if operation is None:
            raise NotFoundError(f"no operation {name!r}; see /openapi.json")
        if operation.admin and key.role != "admin":
            raise PermissionDeniedError(f"{name} needs an admin API key")
        request = self.parse(operation.request, body)
        if request_key is not None and operation.kind == "write":
            # The user the answer is about; an admin verb's answer names none.
            user = None if operation.admin else getattr(request, "user", None)
            if user is None and not operation.admin and len(key.users) == 1:
                user = key.users[0]
            return apply_once(
                self.memory,
                key,
                request_key,
                name,
                user,
                lambda: self._run(key, operation, request),
            )
        return self._run(key, operation, request)

    def _run(self, key: ApiKey, operation: Operation, request: BaseModel) -> Any:
        name = operation.name
        values = {field: getattr(request, field) for field in type(request).model_fields}
        if operation.admin:
            result = getattr(self.memory, name)(**values)
        elif operation.graph:
            arguments = values.pop("arguments")
            graph = self.memory.graph(self.user_for(key, values["user"]))
            result = getattr(graph, name.removeprefix(GRAPH_PREFIX))(
                **{field: getattr(arguments, field) for field in type(arguments).model_fields}
            )
        else:
            arguments = values.pop("arguments")
            scope = self.scope_for(key, **values)
            result = getattr(scope, name)(
                **{field: getattr(arguments, field) for field in type(arguments).model_fields}
            )
        return operation.result.dump_python(result, mode="json")

    @staticmethod
    def parse(model: type[ModelT], body: bytes | str | Mapping[str, Any]) -> ModelT:
        """``body`` checked against a request ``model``, strictly."""
        try:
            if isinstance(body, bytes | str):
                return model.model_validate_json(body or b"{}")
            return model.model_validate(body)
        except ValidationError as error:
            raise InvalidInputError(_described(error)) from None
        except RecursionError:
            raise InvalidInputError("body: nested too deeply") from None

    def changes(
        self,
        key: ApiKey,
        body: bytes | str | Mapping[str, Any],
        deliver: Callable[[dict[str, Any]], None],
    ) -> Subscription:
        """Call ``deliver`` with each event after the request's ``after_seq`` that the
        request's scope (checked against ``key`` as every call's is) may read
        (``Scope.subscribe``'s filter: never another user's, nor another agent's unless
        shared), as JSON-ready data, in order, on the subscription's thread, until the
        returned subscription is closed."""
        values = self.parse(CHANGES_REQUEST, body).model_dump()
        after_seq = values.pop("after_seq")
        scope = self.scope_for(key, **values)
        return scope.subscribe(
            lambda event: deliver(EVENT.dump_python(event, mode="json")), after_seq=after_seq
        )
