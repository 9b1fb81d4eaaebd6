"""Every instrument records where its code runs, read through an in-memory metric reader
attached to the library's meter provider; snapshots; the Prometheus endpoint."""

from __future__ import annotations

import http.server
import json
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from flags import FlagDefinition, FlagEvaluator, InMemoryFlagProvider
from memory import HashingEmbedder, InvalidInputError, Memory, NotFoundError
from memory.ops import (
    head_revision,
    migrate,
    observe_flags,
    read_snapshot,
    start_otlp_exporter,
    start_prometheus_endpoint,
    stop_exporter,
    write_snapshot,
)
from memory.ops.workload import workload_flags
from memory.telemetry import instruments as telemetry
from memory.telemetry import snapshots

Points = dict[str, list[tuple[dict[str, Any], Any]]]


@pytest.fixture
def reader() -> Iterator[InMemoryMetricReader]:
    """A reader that sees what is recorded from now on (nothing from earlier tests)."""
    telemetry.flush()  # what is still queued belongs to earlier work
    attached = InMemoryMetricReader()
    telemetry.meter_provider().add_metric_reader(attached)
    yield attached
    telemetry.meter_provider().remove_metric_reader(attached)


def collect(reader: InMemoryMetricReader) -> Points:
    telemetry.flush()  # measurements are recorded in the background; record them now
    found: Points = {}
    data = reader.get_metrics_data()
    assert data is not None
    for resource_metrics in data.resource_metrics:
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                for point in metric.data.data_points:
                    found.setdefault(metric.name, []).append((dict(point.attributes or {}), point))
    return found


def total(points: Points, name: str, **match: Any) -> float:
    """The sum of a counter (or the count of a histogram) over matching attribute sets."""
    return sum(
        getattr(point, "count", None) or getattr(point, "value", 0)
        for attributes, point in points.get(name, [])
        if match.items() <= attributes.items()
    )


@pytest.fixture(params=["sqlite-file", "postgresql"])
def store(request: pytest.FixtureRequest, url_for: Any) -> Iterator[Memory]:
    # Every rollout flag on: injection (behind USE_ENHANCED_INJECTION) runs for everyone.
    flags = workload_flags("on")
    with Memory.open(url_for(request.param), embedder=HashingEmbedder(), flags=flags) as opened:
        yield opened


def test_every_instrument_records_where_its_code_runs(
    store: Memory, user: str, reader: InMemoryMetricReader
) -> None:
    backend = store.backend
    scope = store.scope(user, "planner", "s1")
    scope.save_state({"step": 1})
    scope.set_preference("answer_style", "concise")
    scope.add_many([f"note {i} about the export job and its retries" for i in range(12)])
    first = scope.inject("export retries", budget_tokens=2_000)
    assert scope.inject("export retries", budget_tokens=2_000) is first  # a cache hit
    overflowing = scope.inject("export retries", budget_tokens=40)
    assert overflowing.compacted  # the overflow consolidated old working memories
    scope.search("export retries")
    scope.resume()
    with pytest.raises(NotFoundError):
        scope.resume("never-saved")
    store._injector.flush()  # the injected memories' uses, written in one batch: an update
    evaluator = FlagEvaluator(
        InMemoryFlagProvider([FlagDefinition("USE_ENHANCED_INJECTION", rollout=25)]), environ={}
    )
    evaluator.refresh()
    observe_flags(evaluator)
    try:
        points = collect(reader)
    finally:
        telemetry.stop_observing_flags(evaluator)

    assert total(points, telemetry.INJECTION_LATENCY, backend=backend, cache="miss") == 2
    assert total(points, telemetry.INJECTION_LATENCY, backend=backend, cache="hit") == 1
    assert total(points, telemetry.CACHE_HITS, cache="injection") == 1
    assert total(points, telemetry.CACHE_MISSES, cache="injection") == 2
    assert total(points, telemetry.CACHE_MISSES, cache="query_embedding") >= 1
    assert total(points, telemetry.OVERFLOW_EVENTS, backend=backend) == 1
    assert total(points, telemetry.COMPACTION_EVENTS, backend=backend, tier="episodic") == 1
    # Three injections search too (the cached one does not), plus the explicit search.
    assert total(points, telemetry.RAG_SEARCH_DURATION, backend=backend, mode="hybrid") == 4
    assert total(points, telemetry.RESUMPTION_ATTEMPTS, backend=backend) == 2
    assert total(points, telemetry.RESUMPTION_SUCCESSES, backend=backend) == 1
    assert total(points, telemetry.OPERATIONS, operation="inject") == 3
    assert total(points, telemetry.OPERATIONS, operation="resume") == 2
    assert total(points, telemetry.ERRORS) == 0  # NotFound is an answer, not a fault
    for verb in ("select", "insert", "update"):
        assert total(points, telemetry.DB_QUERY_DURATION, backend=backend, operation=verb) > 0
    (heap,) = points[telemetry.HEAP_USED_MB]
    assert 10 < heap[1].value < 4_000
    states = {a["flag"]: p.value for a, p in points[telemetry.FLAG_STATE]}
    rollouts = {a["flag"]: p.value for a, p in points[telemetry.FLAG_ROLLOUT]}
    assert states["USE_ENHANCED_INJECTION"] == 1 and rollouts["USE_ENHANCED_INJECTION"] == 25
    assert states["USE_HIERARCHICAL_TIERS"] == 0 and rollouts["USE_HIERARCHICAL_TIERS"] == 0
    # Attributes are bounded: no user, session or content ever becomes a label.
    for series in points.values():
        for attributes, _ in series:
            assert set(attributes) <= {"backend", "cache", "mode", "operation", "tier", "flag"}
            assert user not in attributes.values()


def test_system_faults_count_as_errors_and_caller_mistakes_do_not(
    store: Memory, user: str, reader: InMemoryMetricReader
) -> None:
    scope = store.scope(user, "planner", "s1")
    with pytest.raises(InvalidInputError):
        scope.add("")

    def refuse(*_args: Any) -> None:
        raise RuntimeError("disk on fire")

    sa.event.listen(store.engine, "before_cursor_execute", refuse)
    try:
        with pytest.raises(RuntimeError, match="disk on fire"):
            scope.add("a note that cannot be written")
        with pytest.raises(RuntimeError, match="disk on fire"):
            scope.search("anything")
    finally:
        sa.event.remove(store.engine, "before_cursor_execute", refuse)
    points = collect(reader)

    assert total(points, telemetry.OPERATIONS, operation="add") == 2
    assert total(points, telemetry.ERRORS, operation="add") == 1
    assert total(points, telemetry.ERRORS, operation="search") == 1
    assert total(points, telemetry.ERRORS) == 2


def test_degraded_searches_are_counted(
    store: Memory, user: str, reader: InMemoryMetricReader
) -> None:
    keyword_only = Memory(store.engine, store.revision, None)
    keyword_only.scope(user, "planner").add("Ada likes tea")
    keyword_only.scope(user, "planner").search("tea")
    points = collect(reader)

    assert total(points, telemetry.DEGRADED_SEARCHES, operation="search") == 1
    assert total(points, telemetry.RAG_SEARCH_DURATION, mode="keyword") == 1


def test_cross_agent_failures_counter_is_exported(reader: InMemoryMetricReader) -> None:
    # Incremented by the sharing code; here only its definition and attributes are checked.
    telemetry.instruments().cross_agent_failures.add(1, {"operation": "grant"})
    assert total(collect(reader), telemetry.CROSS_AGENT_FAILURES, operation="grant") == 1


def test_disabled_metrics_record_nothing(
    store: Memory, user: str, reader: InMemoryMetricReader
) -> None:
    telemetry.set_enabled(False)
    try:
        scope = store.scope(user, "planner", "s1")
        scope.add("recorded nowhere")
        scope.inject("recorded", budget_tokens=200)
    finally:
        telemetry.set_enabled(True)
    points = collect(reader)
    for name in (telemetry.DB_QUERY_DURATION, telemetry.INJECTION_LATENCY, telemetry.OPERATIONS):
        assert total(points, name) == 0
    assert telemetry.HEAP_USED_MB in points  # gauges are read at collection, on or off


def test_quantiles_are_interpolated_like_promql() -> None:
    # 10 values in (0, 1], 80 in (1, 2], 10 in (2, 5]; PromQL's histogram_quantile gives
    # 0.95 -> 2 + 3 * (95 - 90) / 10 = 3.5, 0.5 -> 1 + 1 * (50 - 10) / 80 = 1.5.
    histogram = telemetry.HistogramTotals((1.0, 2.0, 5.0), (10, 80, 10, 0), 150.0)
    assert histogram.quantile(0.5) == pytest.approx(1.5)
    assert histogram.quantile(0.95) == pytest.approx(3.5)
    assert histogram.quantile(0.05) == pytest.approx(0.5)
    beyond = telemetry.HistogramTotals((1.0, 2.0), (0, 0, 4), 40.0)
    assert beyond.quantile(0.99) == 2.0  # past the last boundary: that boundary
    assert telemetry.HistogramTotals((1.0,), (0, 0), 0.0).quantile(0.5) is None


def test_a_snapshot_covers_its_window_and_round_trips(tmp_path: Path) -> None:
    recording = telemetry.instruments()
    recording.injection_latency.record(500.0, {"backend": "sqlite", "cache": "miss"})
    window = snapshots.SnapshotWindow()  # what came before is not in the window
    for value in (1.0, 1.5, 2.5, 4.0):
        recording.injection_latency.record(value, {"backend": "sqlite", "cache": "miss"})
    recording.cache_hits.add(3, {"cache": "injection"})
    recording.cache_misses.add(1, {"cache": "injection"})
    recording.operations.add(200, {"operation": "add"})
    recording.errors.add(1, {"operation": "add"})
    recording.resumption_attempts.add(4, {"backend": "sqlite"})
    recording.resumption_successes.add(3, {"backend": "sqlite"})
    snapshot = window.snapshot()

    assert snapshot.injection_latency.count == 4
    assert snapshot.injection_latency.mean_ms == pytest.approx(2.25)
    assert snapshot.injection_latency.p99_ms is not None
    assert snapshot.injection_latency.p99_ms <= 5.0
    assert (snapshot.cache_hits, snapshot.cache_misses, snapshot.cache_hit_rate) == (3, 1, 0.75)
    assert (snapshot.operations, snapshot.errors, snapshot.error_rate) == (200, 1, 0.005)
    assert snapshot.errors_by_operation == {"add": 1}
    assert snapshot.resumption_success_rate == 0.75
    assert snapshot.heap_used_mb > 0
    assert snapshot.window_end >= snapshot.window_start

    path = write_snapshot(tmp_path / "metrics.json", snapshot)
    assert read_snapshot(path) == snapshot
    assert json.loads(path.read_text())["metrics"]["memory.cache.hit_rate"]["value"] == 0.75
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]  # no partial file left


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "is not JSON"),
        ('{"version": 99}', "unsupported snapshot version 99"),
        ('{"version": 1, "window": {}}', "not a metrics snapshot"),
        ("[1, 2]", "not a metrics snapshot"),
    ],
)
def test_a_bad_snapshot_file_is_refused_clearly(
    tmp_path: Path, content: str, message: str
) -> None:
    path = tmp_path / "metrics.json"
    path.write_text(content)
    with pytest.raises(InvalidInputError, match=message):
        read_snapshot(path)


def test_snapshot_write_failure_leaves_nothing(tmp_path: Path) -> None:
    snapshot = snapshots.SnapshotWindow().snapshot()
    with pytest.raises(InvalidInputError, match="cannot write"):
        write_snapshot(tmp_path / "missing-dir" / "metrics.json", snapshot)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(InvalidInputError, match="cannot read"):
        read_snapshot(tmp_path / "absent.json")


def test_prometheus_endpoint_serves_the_documented_series(store: Memory, user: str) -> None:
    endpoint = start_prometheus_endpoint(0)
    try:
        scope = store.scope(user, "planner", "s1")
        scope.add("a note about exports")
        scope.inject("exports", budget_tokens=300)
        body = urllib.request.urlopen(endpoint.url, timeout=5).read().decode()
    finally:
        endpoint.close()
    names = {line.split("{")[0].split(" ")[0] for line in body.splitlines() if line[:1] != "#"}
    for series in (
        "memory_injection_latency_milliseconds_bucket",
        "memory_injection_latency_milliseconds_count",
        "memory_db_query_duration_milliseconds_bucket",
        "memory_rag_search_duration_milliseconds_sum",
        "memory_cache_misses_total",
        "memory_operations_total",
        "memory_heap_used_mb",
    ):
        assert series in names
    assert 'le="0.1"' in body and 'le="200.0"' in body  # the millisecond buckets
    with pytest.raises(OSError):  # closed: nothing listens any more
        urllib.request.urlopen(endpoint.url, timeout=5)


def test_a_taken_port_is_a_clear_error() -> None:
    first = start_prometheus_endpoint(0)
    try:
        taken = f"cannot serve /metrics on 127.0.0.1:{first.port}"
        with pytest.raises(InvalidInputError, match=taken):
            start_prometheus_endpoint(first.port)
    finally:
        first.close()


def test_a_memory_publishes_its_flags_until_closed(
    tmp_path: Path, reader: InMemoryMetricReader
) -> None:
    evaluator = FlagEvaluator(
        InMemoryFlagProvider([FlagDefinition("USE_HIERARCHICAL_TIERS", rollout=40)]), environ={}
    )
    evaluator.refresh()
    with Memory.open(f"sqlite:///{tmp_path / 'm.db'}", embedder=None, flags=evaluator):
        rollouts = {a["flag"]: p.value for a, p in collect(reader)[telemetry.FLAG_ROLLOUT]}
        assert rollouts["USE_HIERARCHICAL_TIERS"] == 40
    after = {a["flag"]: p.value for a, p in collect(reader).get(telemetry.FLAG_ROLLOUT, [])}
    assert after.get("USE_HIERARCHICAL_TIERS") != 40


def test_open_stores_publish_the_lowest_schema_revision(
    tmp_path: Path, reader: InMemoryMetricReader
) -> None:
    def revision() -> float:
        ((_, point),) = collect(reader)[telemetry.SCHEMA_REVISION]
        return point.value

    behind = f"sqlite:///{tmp_path / 'behind.db'}"
    migrate(behind, "0003")  # a store an operator has not upgraded yet
    with Memory.open(f"sqlite:///{tmp_path / 'head.db'}", embedder=None):
        assert revision() == int(head_revision())
        with Memory.open(behind, embedder=None):
            assert revision() == 3  # the process furthest behind is what a dashboard shows
        assert revision() == int(head_revision())


def test_otlp_exporter_pushes_the_metrics(store: Memory, user: str) -> None:
    received: list[bytes] = []

    class Collector(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (the http.server API)
            received.append(self.rfile.read(int(self.headers["Content-Length"])))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Collector)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}/v1/metrics"
    reader = start_otlp_exporter(url, interval_seconds=0.2)
    try:
        store.scope(user, "planner", "s1").inject("anything", budget_tokens=100)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not any(
            b"memory.injection.latency" in body for body in received
        ):
            time.sleep(0.1)
    finally:
        stop_exporter(reader)
        server.shutdown()
        server.server_close()
    assert any(b"memory.injection.latency" in body for body in received)
    assert any(b"memory.db.query_duration" in body for body in received)


@pytest.mark.parametrize(
    ("statement", "operation"),
    [
        ("SELECT 1", "select"),
        ("  insert into memories values (?)", "insert"),
        ("UPDATE memories SET x = 1", "update"),
        ("DELETE FROM memories", "delete"),
        ("WITH t AS (SELECT 1) SELECT * FROM t", "other"),
        ("PRAGMA foreign_keys", "other"),
        ("BEGIN IMMEDIATE", None),
        ("SAVEPOINT sa_savepoint_1", None),
        ("RELEASE SAVEPOINT sa_savepoint_1", None),
        ("ROLLBACK", None),
    ],
)
def test_statements_are_classified_and_transaction_control_is_not_measured(
    statement: str, operation: str | None
) -> None:
    assert telemetry.statement_operation(statement) == operation
