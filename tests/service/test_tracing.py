"""OpenTelemetry server spans on a real HTTP server (uvicorn on a loopback port, in this
process so that its spans land in an in-memory exporter): one span per request, named after
the operation, a child of the caller's W3C trace context, with the request id, and an error
status only for faults of the service; and ``memctl serve`` with an OTLP endpoint exports
them to a real OTLP/HTTP receiver."""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import uvicorn
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from memory import HashingEmbedder, Memory
from memory import ops as ops
from memory.service.core import Service
from memory.service.http import create_app
from tests.service.processes import free_port, served
from tests.service.test_deadlines import sqlite_write_lock

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"


@dataclass
class Traced:
    url: str
    spans: InMemorySpanExporter
    secret: str

    def only_span(self) -> ReadableSpan:
        finished = self.spans.get_finished_spans()
        assert len(finished) == 1, [span.name for span in finished]
        return finished[0]


@pytest.fixture
def traced(tmp_path: Path, user: str) -> Iterator[Traced]:
    database = f"sqlite:///{tmp_path / 'm.db'}"
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with Memory.open(database, embedder=HashingEmbedder(), role="admin") as memory:
        secret = ops.create_key(database, "planner", users=[user]).secret
        port = free_port()
        server = uvicorn.Server(
            uvicorn.Config(
                create_app(Service(memory, provider)),
                host="127.0.0.1",
                port=port,
                log_config=None,
                access_log=False,
            )
        )
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 30
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)
        try:
            yield Traced(f"http://127.0.0.1:{port}", exporter, secret)
        finally:
            server.should_exit = True
            thread.join(timeout=30)
            provider.shutdown()


def test_a_request_is_a_server_span_in_the_callers_trace(traced: Traced) -> None:
    answer = httpx.post(
        f"{traced.url}/v1/add",
        headers={
            "Authorization": f"Bearer {traced.secret}",
            "X-Request-ID": "trace-me-1",
            "traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01",
        },
        json={"arguments": {"content": "Ada likes tea"}},
    )
    assert answer.status_code == 200, answer.text
    span = traced.only_span()
    assert (span.name, span.kind) == ("add", SpanKind.SERVER)
    assert span.context is not None and span.parent is not None
    assert format(span.context.trace_id, "032x") == TRACE_ID
    assert format(span.parent.span_id, "016x") == PARENT_ID
    assert dict(span.attributes or {}) == {
        "memory.request_id": "trace-me-1",
        "memory.operation": "add",
        "memory.operation_class": "write",
        "memory.transport": "http",
        "http.request.method": "POST",
        "http.route": "/v1/add",
        "http.response.status_code": 200,
        "memory.status": 200,
    }
    assert span.status.status_code == StatusCode.UNSET


def test_a_refused_request_names_its_error_and_is_no_fault(traced: Traced) -> None:
    answer = httpx.post(
        f"{traced.url}/v1/search",
        headers={"Authorization": "Bearer tmk_not_a_key"},
        json={"arguments": {"query": "tea"}},
    )
    assert answer.status_code == 401
    span = traced.only_span()
    attributes = dict(span.attributes or {})
    # A request id the service made up is the one the response carries.
    assert attributes["memory.request_id"] == answer.headers["X-Request-ID"]
    assert (attributes["memory.status"], attributes["error.type"]) == (401, "AuthenticationError")
    assert span.parent is None  # no traceparent: a trace of its own
    assert span.status.status_code == StatusCode.UNSET


def test_an_answer_from_500_up_is_an_error_span(traced: Traced, tmp_path: Path) -> None:
    headers = {"Authorization": f"Bearer {traced.secret}"}
    assert httpx.post(f"{traced.url}/v1/list", headers=headers, json={}).status_code == 200
    traced.spans.clear()
    # Another writer holds SQLite's write lock past the request's deadline: 504.
    with sqlite_write_lock(tmp_path / "m.db"):
        answer = httpx.post(
            f"{traced.url}/v1/add",
            headers={**headers, "X-Request-Timeout": "0.3"},
            json={"arguments": {"content": "late"}},
        )
    assert answer.status_code == 504, answer.text
    span = traced.only_span()
    attributes = dict(span.attributes or {})
    assert (attributes["memory.status"], attributes["error.type"]) == (
        504,
        "DeadlineExceededError",
    )
    assert span.status.status_code == StatusCode.ERROR
    assert span.status.description == "DeadlineExceededError"


class Collector(http.server.BaseHTTPRequestHandler):
    """An OTLP/HTTP trace receiver: keeps each export request's body."""

    received: list[bytes] = []

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).received.append(body)
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.end_headers()
        self.wfile.write(ExportTraceServiceResponse().SerializeToString())

    def log_message(self, *args: object) -> None:
        pass


def test_memctl_serve_exports_its_spans_over_otlp(tmp_path: Path, user: str) -> None:
    Collector.received = []
    collector = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Collector)
    threading.Thread(target=collector.serve_forever, daemon=True).start()
    database = f"sqlite:///{tmp_path / 'm.db'}"
    ops.migrate(database)
    secret = ops.create_key(database, "planner", users=[user]).secret
    endpoint = f"http://127.0.0.1:{collector.server_address[1]}/v1/traces"
    try:
        with served(
            database, tmp_path / "serve.log", OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=endpoint
        ) as server:
            answer = httpx.post(
                f"{server.url}/v1/list",
                headers={"Authorization": f"Bearer {secret}", "X-Request-ID": "exported-1"},
                json={},
            )
            assert answer.status_code == 200
        # SIGTERM: the server exported what it had batched before it exited.
    finally:
        collector.shutdown()
        collector.server_close()
    spans = []
    for body in Collector.received:
        request = ExportTraceServiceRequest.FromString(body)
        for resource in request.resource_spans:
            for scope in resource.scope_spans:
                spans.extend(scope.spans)
    exported = [
        {item.key: item.value.string_value for item in span.attributes}
        for span in spans
        if span.name == "list"
    ]
    assert [attributes["memory.request_id"] for attributes in exported] == ["exported-1"]
