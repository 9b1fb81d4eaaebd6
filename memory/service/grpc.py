"""gRPC over the service core (grpcio's asyncio server, on its own thread and event loop).

One unary RPC per operation of the core and a server stream, ``Changes``, for the change
feed (``memory/wire/memory.proto``, derived from the core by ``memory.service.proto``).
A request is turned back into the JSON the HTTP API takes and handed to the same core, so
its arguments are checked by the same strict models; fields the ``.proto`` does not declare
are refused, not ignored.

Metadata: ``authorization: Bearer <key>`` (the only source of identity), ``x-request-id``
(accepted if sane, else generated; sent back in the initial metadata and in every log line
of the call), ``idempotency-key`` on writes. A refusal has the gRPC status of the HTTP one
(401 UNAUTHENTICATED, 403 PERMISSION_DENIED, 404 NOT_FOUND, 409 ABORTED, 410
FAILED_PRECONDITION, 422 INVALID_ARGUMENT, 503 UNAVAILABLE, 504 DEADLINE_EXCEEDED (the
call's deadline, at most ``request_timeout_seconds``, passed: nothing written), a full bulkhead
RESOURCE_EXHAUSTED) and the trailers ``error-type`` (the library error's class name) and
``error-details`` (JSON), so the remote client raises the same exception as the embedded
store. Messages over ``max_body_bytes`` are refused by grpcio (RESOURCE_EXHAUSTED). With a
certificate and key the port speaks TLS only.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import threading
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import grpc
import structlog
from google.protobuf.message import DecodeError, Message

from memory import AuthenticationError, InvalidInputError, MemoryStoreError, PermissionDeniedError
from memory.service.core import OPERATIONS, Operation, Service, error_reply, record_answer
from memory.service.http import (
    Bulkhead,
    Busy,
    Feed,
    FeedBehind,
    ServiceMetrics,
    correlation_id,
)
from memory.service.settings import ServiceSettings
from memory.wire import (
    AUTHORIZATION,
    ERROR_DETAILS,
    ERROR_TYPE,
    IDEMPOTENCY_KEY,
    REQUEST_ID,
    SERVICE,
    from_message,
    memory_pb2,
    method_name,
    to_message,
    unknown_fields,
)

log = structlog.get_logger("memory.service.grpc")
T = TypeVar("T")

_CODES = {
    401: grpc.StatusCode.UNAUTHENTICATED,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    409: grpc.StatusCode.ABORTED,
    410: grpc.StatusCode.FAILED_PRECONDITION,
    422: grpc.StatusCode.INVALID_ARGUMENT,
    503: grpc.StatusCode.UNAVAILABLE,
}


class _Refusal(Exception):
    """How a call ends when it does not answer: a status, a message and the trailers."""

    def __init__(self, code: grpc.StatusCode, message: str, kind: str, details: Any) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.trailers = ((ERROR_TYPE, kind), (ERROR_DETAILS, json.dumps(details)))


class GrpcServer:
    """Serves ``service`` at ``host:port`` (port 0: any free one, see :attr:`port`)."""

    def __init__(
        self,
        service: Service,
        settings: ServiceSettings,
        port: int,
        metrics: ServiceMetrics | None = None,
    ) -> None:
        self.service = service
        self.settings = settings
        self.metrics = metrics
        self._requested_port = port
        self.port = 0
        self._pool = ThreadPoolExecutor(
            settings.concurrent_reads + settings.concurrent_writes + settings.concurrent_searches,
            thread_name_prefix="grpc",
        )
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="grpc", daemon=True)
        self._server: grpc.aio.Server | None = None

    def start(self) -> None:
        """Listen, or ``InvalidInputError`` saying why not."""
        self._thread.start()
        try:
            asyncio.run_coroutine_threadsafe(self._start(), self._loop).result()
        except BaseException:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
            self._pool.shutdown()
            raise

    def stop(self, grace: float) -> None:
        """Refuse new calls, give those under way ``grace`` seconds, then stop."""
        if self._server is not None:
            asyncio.run_coroutine_threadsafe(self._server.stop(grace), self._loop).result()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()
        self._pool.shutdown(wait=True)

    async def _start(self) -> None:
        settings = self.settings
        # The bulkheads are the HTTP transport's, made on this loop.
        self._bulkheads = {
            "read": Bulkhead(
                settings.concurrent_reads, settings.queue_limit, settings.queue_seconds
            ),
            "write": Bulkhead(
                settings.concurrent_writes, settings.queue_limit, settings.queue_seconds
            ),
            "search": Bulkhead(
                settings.concurrent_searches, settings.queue_limit, settings.queue_seconds
            ),
        }
        server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", settings.max_body_bytes),
                # Replicas on one host share the port (deploy/memory-hub@.service).
                ("grpc.so_reuseport", 1),
            ]
        )
        handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {
            method_name(operation.name): grpc.unary_unary_rpc_method_handler(
                self._unary(operation),
                # Requests are parsed by the handler, so that bytes that are not the message
                # get INVALID_ARGUMENT naming the problem, not grpcio's INTERNAL.
                request_deserializer=None,
                response_serializer=_serialize,
            )
            for operation in OPERATIONS.values()
        }
        handlers["Changes"] = grpc.unary_stream_rpc_method_handler(
            self._changes,
            request_deserializer=None,
            response_serializer=_serialize,
        )
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
        address = f"{settings.host}:{self._requested_port}"
        try:
            if settings.grpc_tls_certificate is not None and settings.grpc_tls_key is not None:
                credentials = grpc.ssl_server_credentials(
                    [(_read(settings.grpc_tls_key), _read(settings.grpc_tls_certificate))]
                )
                self.port = server.add_secure_port(address, credentials)
            else:
                self.port = server.add_insecure_port(address)
        except RuntimeError as error:
            raise InvalidInputError(f"grpc_port: cannot listen on {address}: {error}") from None
        await server.start()
        self._server = server

    async def _run(self, function: Callable[..., T], *arguments: Any) -> T:
        """``function`` on the worker threads, with this call's log context."""
        context = contextvars.copy_context()
        return await asyncio.get_running_loop().run_in_executor(
            self._pool, lambda: context.run(function, *arguments)
        )

    @staticmethod
    def _metadata(context: grpc.aio.ServicerContext[Any, Any]) -> tuple[str, dict[str, str]]:
        """The call's request id and metadata."""
        metadata = {key: str(value) for key, value in context.invocation_metadata() or ()}
        return correlation_id(metadata.get(REQUEST_ID)), metadata

    def _budget(self, context: grpc.aio.ServicerContext[Any, Any]) -> float:
        """Seconds a call may take: ``request_timeout_seconds``, or less when the client's
        deadline (which gRPC carries) comes sooner, minus a margin (as the HTTP client
        asks for over ``X-Request-Timeout``) so that the refusal reaches it in time."""
        allowed = self.settings.request_timeout_seconds
        remaining = context.time_remaining()
        if remaining is None or remaining >= allowed:
            return allowed
        return max(0.0, remaining - min(1.0, remaining / 5))

    def _refusal(self, error: MemoryStoreError, operation: str) -> _Refusal:
        reply = error_reply(error)
        if self.metrics is not None:
            if isinstance(error, AuthenticationError):
                self.metrics.auth_failures.labels("401", error.reason).inc()
            elif isinstance(error, PermissionDeniedError):
                self.metrics.auth_failures.labels("403", "forbidden").inc()
        log.info("refused", operation=operation, status=reply.status, error=reply.type)
        code = _CODES.get(reply.status, grpc.StatusCode.INTERNAL)
        return _Refusal(code, reply.message, reply.type, reply.details)

    def _unary(
        self, operation: Operation
    ) -> Callable[[bytes, grpc.aio.ServicerContext[Any, Any]], Any]:
        reply_type: type[Message] = getattr(memory_pb2, f"{method_name(operation.name)}Reply")

        request_type = _request_type(operation.name)

        async def handle(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> Message:
            request_id, metadata = self._metadata(context)
            await context.send_initial_metadata(((REQUEST_ID, request_id),))
            started = time.perf_counter()
            deadline = time.monotonic() + self._budget(context)
            status, error_type = 500, None
            with (
                structlog.contextvars.bound_contextvars(request_id=request_id, transport="grpc"),
                self.service.span(operation.name, request_id, "grpc", metadata) as span,
            ):
                try:
                    body = _body(request_type, request)
                    key = await self._run(
                        self.service.authenticate, _credential(metadata), deadline
                    )
                    async with self._bulkheads[operation.kind].admitted(deadline):
                        result = await self._run(
                            self.service.call,
                            key,
                            operation.name,
                            body,
                            metadata.get(IDEMPOTENCY_KEY),
                            deadline,
                        )
                    status = 200
                    return to_message({"result": result}, reply_type)
                except Busy:
                    status, error_type = 503, "ServiceBusy"
                    if self.metrics is not None:
                        self.metrics.rejected.labels(operation.kind).inc()
                    refusal = _Refusal(
                        grpc.StatusCode.RESOURCE_EXHAUSTED,
                        f"too many {operation.kind} requests under way; retry in a second",
                        "ServiceBusy",
                        {},
                    )
                except MemoryStoreError as error:
                    refusal = self._refusal(error, operation.name)
                    status, error_type = error_reply(error).status, error_reply(error).type
                except Exception as error:
                    error_type = type(error).__name__
                    log.exception("failed", operation=operation.name)
                    refusal = _Refusal(
                        grpc.StatusCode.INTERNAL,
                        f"internal error; quote request id {request_id}",
                        "InternalError",
                        {},
                    )
                finally:
                    span.set_attribute("rpc.system", "grpc")
                    span.set_attribute("rpc.method", method_name(operation.name))
                    record_answer(span, status, error_type)
                    if self.metrics is not None:
                        self.metrics.requests.labels(operation.name, str(status)).inc()
                        self.metrics.latency.labels(operation.name).observe(
                            time.perf_counter() - started
                        )
                context.set_trailing_metadata(refusal.trailers)
                await context.abort(refusal.code, refusal.message)

        return handle

    async def _changes(
        self, request: bytes, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[Message]:
        """The change feed: the events the key's scope may read, after ``after_seq``."""
        request_id, metadata = self._metadata(context)
        feed = Feed()
        with structlog.contextvars.bound_contextvars(request_id=request_id, transport="grpc"):
            try:
                body = _body(memory_pb2.ChangesRequest, request)
                key = await self._run(self.service.authenticate, _credential(metadata))
                feed.subscription = await self._run(
                    self.service.changes, key, body, feed.deliver
                )
            except MemoryStoreError as error:
                refusal = self._refusal(error, "changes")
                await context.send_initial_metadata(((REQUEST_ID, request_id),))
                context.set_trailing_metadata(refusal.trailers)
                await context.abort(refusal.code, refusal.message)
            # Sent once subscribed: a client that has the initial metadata misses nothing.
            await context.send_initial_metadata(((REQUEST_ID, request_id),))
            log.info("changes", status=200)
            try:
                async for event in feed.events():
                    yield to_message(event, memory_pb2.MemoryEvent)
            except FeedBehind as behind:
                message = "this client fell too far behind the change feed; resume"
                if behind.seq is not None:
                    message += f" with after_seq={behind.seq}"
                await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, message)


def _request_type(operation: str) -> type[Message]:
    kind: type[Message] = getattr(memory_pb2, f"{method_name(operation)}Request")
    return kind


def _serialize(message: Message) -> bytes:
    return message.SerializeToString()


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as error:
        raise InvalidInputError(f"grpc TLS: cannot read {path}: {error}") from None


def _credential(metadata: dict[str, str]) -> str | None:
    header = metadata.get(AUTHORIZATION)
    if header is None:
        return None
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" else header


def _body(kind: type[Message], data: bytes) -> str:
    """The request as the JSON the core takes. Bytes that are not a ``kind`` message, and
    fields the ``.proto`` does not declare (protobuf would keep them silently), are
    refused."""
    try:
        request = kind.FromString(data)
    except DecodeError as error:
        name = kind.DESCRIPTOR.name
        raise InvalidInputError(f"request: not a valid {name} message ({error})") from None
    unknown = unknown_fields(request)
    if unknown:
        raise InvalidInputError(f"unknown fields: {', '.join(unknown)}")
    try:
        return json.dumps(from_message(request, absent=False), ensure_ascii=False)
    except ValueError as error:
        raise InvalidInputError(str(error)) from None
