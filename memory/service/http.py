"""HTTP/JSON over the service core: FastAPI on uvicorn (``memctl serve``).

``POST /v1/{operation}`` for every ``Scope`` operation (body: ``user``, ``session``,
``agent`` for admin keys, and the method's ``arguments``) and the admin verbs
(``forget_user``, ``set_team``: their arguments at the top level, admin keys only), with
the key in ``Authorization: Bearer``; ``GET /v1/changes`` is the scope's change feed as
Server-Sent Events (FastAPI's own, with keep-alive pings) from a sequence number;
``/health`` (the process answers), ``/ready`` (the database answers at the head
revision), ``/metrics`` (Prometheus: the library's metrics and the service's requests,
latency and authentication failures) and ``/openapi.json``.

Every request has a deadline: ``request_timeout_seconds`` after it arrived, or sooner when
the client sends ``X-Request-Timeout: <seconds>`` (the remote client sends its own
timeout). A request that cannot finish by then answers 504 (``DeadlineExceededError``)
and has written nothing: it is refused while it waits for a turn or for the database, and
rolled back if it is past its deadline at commit.

Every response carries ``X-Request-ID`` (the client's, if it sent a sane one, else a new
one), and every log line of the request is a JSON object with it (structlog). Bodies over
``max_body_bytes`` are refused with 413 before they are read whole. Errors are
``{"error": {"type", "message", "details"}}`` with the status of
:func:`memory.service.core.error_reply`; anything unexpected is a 500 that says only
that, with the request id, and is logged with its traceback.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import sys
import time
import typing
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import anyio
import structlog
from fastapi import Depends, FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response
from fastapi.sse import EventSourceResponse, ServerSentEvent
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from starlette.concurrency import run_in_threadpool

from memory import (
    AuthenticationError,
    DeadlineExceededError,
    InvalidInputError,
    MemoryStoreError,
    PermissionDeniedError,
    Subscription,
)
from memory import ops as ops
from memory.remote import IDEMPOTENCY_KEY, REQUEST_TIMEOUT, OperationClass
from memory.service.breakers import Breakers
from memory.service.core import OPERATIONS, Operation, Service, error_reply, record_answer
from memory.service.settings import ServiceSettings

REQUEST_ID = "X-Request-ID"
_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
log = structlog.get_logger("memory.service")


class ServiceMetrics:
    """The service's own series, next to the library's, in one registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.requests = Counter(
            "memory_service_requests",
            "Requests answered, by operation and status.",
            ["operation", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "memory_service_request_seconds",
            "Time from request to response, by operation.",
            ["operation"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=self.registry,
        )
        self.auth_failures = Counter(
            "memory_service_auth_failures",
            "Requests refused for their API key (401) or for what it may do (403).",
            ["status", "reason"],
            registry=self.registry,
        )
        self.rejected = Counter(
            "memory_service_rejected",
            "Requests refused because their operation class's bulkhead was full (503).",
            ["operation_class"],
            registry=self.registry,
        )
        for operation_class in typing.get_args(OperationClass):  # at 0 before the first
            self.rejected.labels(operation_class)
        self.reader = ops.export_to_registry(self.registry)

    def close(self) -> None:
        ops.stop_exporter(self.reader)


async def _read_body(request: Request, limit: int) -> bytes:
    """The body, refused with ``InvalidInputError`` as soon as it passes ``limit`` bytes
    (a declared length is checked before anything is read)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _TooLarge(limit)
    received = bytearray()
    async for chunk in request.stream():
        received += chunk
        if len(received) > limit:
            raise _TooLarge(limit)
    return bytes(received)


class _TooLarge(InvalidInputError):
    def __init__(self, limit: int) -> None:
        super().__init__(f"body: larger than the limit of {limit} bytes")


def correlation_id(given: str | None) -> str:
    """The request id of a request: the client's if it is sane, else a new one."""
    return given if given and _SANE_REQUEST_ID.fullmatch(given) else uuid.uuid4().hex
def _timeout(request: Request, default: float) -> float:
    """Seconds the request may take: the configured default, or less if the client asks."""
    given = request.headers.get(REQUEST_TIMEOUT)
    if given is None:
        return default
    try:
        seconds = float(given)
    except ValueError:
        seconds = math.nan
    if not math.isfinite(seconds) or seconds <= 0:
        raise InvalidInputError(
            f"{REQUEST_TIMEOUT}: must be a number of seconds > 0, not {given!r}"
        )
    return min(seconds, default)


def _credential(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if header is None:
        return None
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" else header


class FeedBehind(Exception):
    """The client read a change feed so slowly that its backlog filled: the stream ends,
    and the client resumes after ``seq``, the last event it was sent."""

    def __init__(self, seq: int | None) -> None:
        super().__init__(seq)
        self.seq = seq


class Feed:
    """A change feed (``Service.changes``) bridged to the event loop of a transport: events
    arrive on the subscription's thread and wait, at most ``backlog`` of them, for the
    stream to send them; past that the stream ends with :class:`FeedBehind` rather than
    hold an unbounded queue for a client that does not read."""

    def __init__(self, backlog: int = 10_000) -> None:
        self._loop = asyncio.get_running_loop()
        self._events: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self._backlog = backlog
        self._full = False
        self._sent: int | None = None
        self.subscription: Subscription | None = None

    def deliver(self, event: dict[str, Any]) -> None:
        """``Service.changes``' callback (on the subscription's thread)."""
        self._loop.call_soon_threadsafe(self._put, event)

    def _put(self, event: dict[str, Any]) -> None:
        if self._full:
            return
        if self._events.qsize() >= self._backlog:
            self._full = True
            self._events.put_nowait(None)  # the end, after what is already waiting
            return
        self._events.put_nowait(event)

    async def events(self) -> AsyncIterator[dict[str, Any]]:
        """The events, in order, until the backlog fills (``FeedBehind``); the subscription
        is closed however the stream ends (the client left, the server stops)."""
        try:
            while True:
                event = await self._events.get()
                if event is None:
                    raise FeedBehind(self._sent)
                self._sent = event["seq"]
                yield event
        finally:
            if self.subscription is not None:
                await run_in_threadpool(self.subscription.close)


class _Refused(Exception):
    """A request refused before its stream started, with the reply to send."""

    def __init__(self, response: JSONResponse) -> None:
        super().__init__(response.status_code)
        self.response = response


class Busy(Exception):
    """A bulkhead is full: the call was not started."""


class Bulkhead:
    """At most ``concurrency`` calls of one operation class run at once, at most ``queue``
    wait for a turn, none longer than ``wait_seconds``: a burst of slow searches cannot take
    the threads that reads and writes need, and a backlog is refused (503, Retry-After)
    instead of growing without bound. The waiting is anyio's ``CapacityLimiter``."""

    def __init__(self, concurrency: int, queue: int, wait_seconds: float) -> None:
        self.limiter = anyio.CapacityLimiter(concurrency)
        self.queue = queue
        self.wait_seconds = wait_seconds

    @asynccontextmanager
    async def admitted(self, deadline: float) -> AsyncIterator[None]:
        """A turn, or ``Busy``; ``DeadlineExceededError`` when the request's ``deadline``
        (``time.monotonic()``) passes first."""
        if (
            self.limiter.available_tokens == 0
            and self.limiter.statistics().tasks_waiting >= self.queue
        ):
            raise Busy
        try:
            with anyio.fail_after(max(0.0, min(self.wait_seconds, deadline - time.monotonic()))):
                await self.limiter.acquire()
        except TimeoutError:
            if time.monotonic() >= deadline:
                raise DeadlineExceededError(
                    "the request's deadline passed while it waited for a turn; nothing was done"
                ) from None
            raise Busy from None
        try:
            yield
        finally:
            self.limiter.release()


def create_app(
    service: Service,
    settings: ServiceSettings | None = None,
    breakers: Breakers | None = None,
) -> FastAPI:
    """The HTTP application of ``service`` with ``settings`` (default: the defaults); the
    state of ``breakers`` (see ``memory.service.breakers``) is in /ready and /metrics."""
    settings = settings if settings is not None else ServiceSettings()
    breakers = breakers if breakers is not None else Breakers()
    max_body_bytes = settings.max_body_bytes
    bulkheads = {
        "read": Bulkhead(settings.concurrent_reads, settings.queue_limit, settings.queue_seconds),
        "write": Bulkhead(
            settings.concurrent_writes, settings.queue_limit, settings.queue_seconds
        ),
        "search": Bulkhead(
            settings.concurrent_searches, settings.queue_limit, settings.queue_seconds
        ),
    }
    app = FastAPI(
        title="tiered-memory hub",
        version="1",
        description=__doc__,
        openapi_url="/openapi.json",
        docs_url="/docs",
        redoc_url=None,
    )
    metrics = ServiceMetrics()
    app.state.metrics = metrics
    ops.observe_breakers(breakers)
    app.router.on_shutdown.append(metrics.close)
    app.router.on_shutdown.append(partial(ops.stop_observing_breakers, breakers))
    schemas: dict[str, Any] = {}

    @app.middleware("http")
    async def correlate(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        request_id = correlation_id(request.headers.get(REQUEST_ID))
        request.state.request_id = request_id
        started = time.perf_counter()
        with structlog.contextvars.bound_contextvars(request_id=request_id):
            response = await call_next(request)
            response.headers[REQUEST_ID] = request_id
            log.info(
                "access",
                method=request.method,
                path=request.url.path,
                status=response.status_code,
                ms=round((time.perf_counter() - started) * 1000, 2),
            )
        return response

    def refusal(error: MemoryStoreError, operation: str, request_id: str) -> JSONResponse:
        """The error reply to ``error``, counted and logged."""
        reply = error_reply(error)
        status = 413 if isinstance(error, _TooLarge) else reply.status
        if isinstance(error, AuthenticationError):
            metrics.auth_failures.labels("401", error.reason).inc()
        elif isinstance(error, PermissionDeniedError):
            metrics.auth_failures.labels("403", "forbidden").inc()
        log.info("refused", operation=operation, status=status, error=reply.type)
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else {}
        return JSONResponse(
            reply.body(), status_code=status, headers={REQUEST_ID: request_id, **headers}
        )

    def route(operation: Operation) -> None:
        async def handle(request: Request) -> Response:
            request_id: str = request.state.request_id
            started = time.perf_counter()
            arrived = time.monotonic()
            status = 500
            error_type: str | None = None
            with service.span(operation.name, request_id, "http", request.headers) as span:
                try:
                    deadline = arrived + _timeout(request, settings.request_timeout_seconds)
                    body = await _read_body(request, max_body_bytes)
                    key = await run_in_threadpool(
                        service.authenticate, _credential(request), deadline
                    )
                    async with bulkheads[operation.kind].admitted(deadline):
                        result = await run_in_threadpool(
                            service.call,
                            key,
                            operation.name,
                            body,
                            request.headers.get(IDEMPOTENCY_KEY),
                            deadline,
                        )
                    status = 200
                    return JSONResponse(result, headers={REQUEST_ID: request_id})
                except Busy:
                    status, error_type = 503, "ServiceBusy"
                    metrics.rejected.labels(operation.kind).inc()
                    message = f"too many {operation.kind} requests under way; retry in a second"
                    return JSONResponse(
                        {"error": {"type": "ServiceBusy", "message": message, "details": {}}},
                        status_code=503,
                        headers={REQUEST_ID: request_id, "Retry-After": "1"},
                    )
                except MemoryStoreError as error:
                    answer = refusal(error, operation.name, request_id)
                    status, error_type = answer.status_code, error_reply(error).type
                    return answer
                except Exception as error:
                    error_type = type(error).__name__
                    log.exception("failed", operation=operation.name)
                    message = f"internal error; quote request id {request_id}"
                    return JSONResponse(
                        {"error": {"type": "InternalError", "message": message, "details": {}}},
                        status_code=500,
                        headers={REQUEST_ID: request_id},
                    )
                finally:
                    span.set_attribute("http.request.method", "POST")
                    span.set_attribute("http.route", f"/v1/{operation.name}")
                    span.set_attribute("http.response.status_code", status)
                    record_answer(span, status, error_type)
                    metrics.requests.labels(operation.name, str(status)).inc()
                    metrics.latency.labels(operation.name).observe(time.perf_counter() - started)

        request_schema = operation.request.model_json_schema(
            ref_template="#/components/schemas/{model}"
        )
        schemas.update(request_schema.pop("$defs", {}))
        schemas[operation.request.__name__] = request_schema
        result_schema = operation.result.json_schema(
            mode="serialization", ref_template="#/components/schemas/{model}"
        )
        schemas.update(result_schema.pop("$defs", {}))
        error_schema = {"$ref": "#/components/schemas/Error"}
        app.add_api_route(
            f"/v1/{operation.name}",
            handle,
            methods=["POST"],
            name=operation.name,
            summary=operation.doc.splitlines()[0],
            description=operation.doc,
            tags=["admin" if operation.admin else operation.kind],
            openapi_extra={
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "$ref": f"#/components/schemas/{operation.request.__name__}"
                            }
                        }
                    },
                },
                "security": [{"apiKey": []}],
                "responses": {
                    "200": {"content": {"application/json": {"schema": result_schema}}},
                    **{
                        str(code): {
                            "description": text,
                            "content": {"application/json": {"schema": error_schema}},
                        }
                        for code, text in (
                            (401, "the API key is missing, unknown, revoked or expired"),
                            (403, "the key may not act for that user or agent"),
                            (404, "not found in this scope"),
                            (409, "a conflict: a stale version"),
                            (413, "the body is too large"),
                            (422, "the body is not valid for this operation"),
                            (
                                503,
                                "the database is unavailable or not at the schema head, or "
                                "too many requests of this class are under way (Retry-After)",
                            ),
                            (504, "the request's deadline passed; nothing of it was written"),
                        )
                    },
                },
            },
        )

    for operation in OPERATIONS.values():
        route(operation)

    async def open_feed(request: Request) -> Feed:
        """Authenticate and subscribe before the stream starts, so that a refusal is an
        error reply with its status rather than a stream that ends at once."""
        feed = Feed()
        try:
            body: dict[str, Any] = dict(request.query_params)
            resume = body.get("after_seq", request.headers.get("last-event-id"))
            if resume is not None:
                if not resume.isdigit():
                    raise InvalidInputError("after_seq: a sequence number (0 or more) is required")
                body["after_seq"] = int(resume)
            key = await run_in_threadpool(service.authenticate, _credential(request))
            feed.subscription = await run_in_threadpool(service.changes, key, body, feed.deliver)
        except MemoryStoreError as error:
            raise _Refused(refusal(error, "changes", request.state.request_id)) from None
        return feed

    async def refused(request: Request, error: Exception) -> Response:
        assert isinstance(error, _Refused)
        return error.response

    app.add_exception_handler(_Refused, refused)

    @app.get(
        "/v1/changes",
        response_class=EventSourceResponse,
        tags=["read"],
        summary="The scope's change feed, as Server-Sent Events",
        openapi_extra={
            "security": [{"apiKey": []}],
            "parameters": [
                {"name": name, "in": "query", "required": False, "schema": schema}
                for name, schema in (
                    ("user", {"type": "string"}),
                    ("session", {"type": "string"}),
                    ("agent", {"type": "string"}),
                    ("after_seq", {"type": "integer", "minimum": 0}),
                )
            ],
        },
        responses={
            code: {
                "description": text,
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
            }
            for code, text in (
                (401, "the API key is missing, unknown, revoked or expired"),
                (403, "the key may not act for that user or agent"),
                (422, "a parameter is not valid"),
            )
        },
    )
    # The dependency as a default: an Annotated[...] naming this closure could not be
    # resolved from the postponed (string) annotation.
    async def changes(
        feed: Feed = Depends(open_feed),  # noqa: B008
    ) -> AsyncIterator[ServerSentEvent]:
        """The events the scope may read (never another user's; another agent's only when
        shared with it), committed after ``after_seq`` (or the ``Last-Event-ID`` a browser
        resends; neither: from now on), in order. Each event's ``id`` is its sequence
        number, its ``event`` the operation, its ``data`` the event as JSON. A client that
        falls 10,000 events behind is disconnected, to resume from its last id."""
        try:
            async for event in feed.events():
                yield ServerSentEvent(data=event, id=str(event["seq"]), event=event["operation"])
        except FeedBehind:
            return  # an EventSource reconnects by itself, with the Last-Event-ID it has

    @app.get("/health", tags=["probes"])
    def health() -> dict[str, str]:
        """Liveness: the process answers."""
        return {"status": "ok"}

    @app.get(
        "/ready",
        tags=["probes"],
        responses={503: {"description": "not ready: the database is unreachable or behind"}},
    )
    def ready() -> JSONResponse:
        """Readiness: the database answers and its schema is at the head revision."""
        try:
            status = ops.current(service.memory.engine)
        except Exception as error:  # any failure to reach the database: not ready
            return JSONResponse(
                {"status": "unavailable", "database": f"unreachable: {type(error).__name__}"},
                status_code=503,
            )
        ready = status.at_head
        return JSONResponse(
            {
                "status": "ready" if ready else "unavailable",
                "database": "ok",
                "revision": status.revision,
                "head": status.head,
                # An open breaker degrades (search from keywords alone) but still serves.
                "breakers": breakers.states(),
            },
            status_code=200 if ready else 503,
        )

    @app.get(
        "/metrics",
        tags=["probes"],
        response_class=Response,
        responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
    )
    def metrics_endpoint() -> Response:
        """Prometheus text format: the library's metrics and the service's."""
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = get_openapi(
                title=app.title, version=app.version, description=app.description,
                routes=app.routes,
            )
            components = document.setdefault("components", {})
            components.setdefault("schemas", {}).update(schemas)
            components["schemas"]["Error"] = {
                "type": "object",
                "required": ["error"],
                "properties": {
                    "error": {
                        "type": "object",
                        "required": ["type", "message", "details"],
                        "properties": {
                            "type": {"type": "string"},
                            "message": {"type": "string"},
                            "details": {"type": "object"},
                        },
                    }
                },
            }
            components["securitySchemes"] = {"apiKey": {"type": "http", "scheme": "bearer"}}
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


def configure_logging(level: str) -> None:
    """Structured JSON log lines on standard error, each with the request's context."""
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
