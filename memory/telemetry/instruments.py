"""OpenTelemetry metrics: the one module that owns every instrument the library records.

Instruments, their attributes, and the exact series the Prometheus exporter produces (as
served by :func:`start_prometheus_endpoint`, checked by scraping it in the tests; dashboards,
alert rules and ``memctl gates`` are written against these names):

- ``memory.injection.latency`` histogram, ms; backend, cache=hit|miss →
  ``memory_injection_latency_milliseconds_bucket`` (and ``_sum``, ``_count``)
- ``memory.db.query_duration`` histogram, ms, every statement but transaction control; backend,
  operation=select|insert|update|delete|other →
  ``memory_db_query_duration_milliseconds_bucket`` (and ``_sum``, ``_count``)
- ``memory.rag.search_duration`` histogram, ms; backend, mode=hybrid|keyword →
  ``memory_rag_search_duration_milliseconds_bucket`` (and ``_sum``, ``_count``)
- ``memory.cache.hits`` / ``memory.cache.misses`` counters; cache=injection|query_embedding →
  ``memory_cache_hits_total`` / ``memory_cache_misses_total``
- ``memory.heap.used_mb`` observable gauge, resident memory in MB → ``memory_heap_used_mb``
- ``memory.overflow.events`` counter; backend → ``memory_overflow_events_total``
- ``memory.compaction.events`` counter; backend, tier=episodic (working memories
  consolidated) | semantic (memories promoted) → ``memory_compaction_events_total``
- ``memory.rag.degraded_searches`` counter, work done without the embedder;
  operation=search|write → ``memory_rag_degraded_searches_total``
- ``memory.resumption.attempts`` / ``memory.resumption.successes`` counters; backend →
  ``memory_resumption_attempts_total`` / ``memory_resumption_successes_total``
- ``memory.cross_agent.failures`` counter; operation=read|write|share|revoke →
  ``memory_cross_agent_failures_total``
- ``memory.operations`` / ``memory.errors`` counters of public operations; operation →
  ``memory_operations_total`` / ``memory_errors_total``
- ``memory.flag.state`` observable gauge, 1 on (default on or any rollout) / 0 off; flag →
  ``memory_flag_state``
- ``memory.flag.rollout_percentage`` observable gauge, 0-100; flag →
  ``memory_flag_rollout_percentage``
- ``memory.schema.revision`` observable gauge, the schema revision the process's open stores
  were opened at, as a number (``0010`` → 10; the lowest when several; 0: no schema) →
  ``memory_schema_revision``
- ``memory.db.connection_failures`` counter; backend →
  ``memory_db_connection_failures_total``
- ``memory.migration.failures`` counter → ``memory_migration_failures_total``
- ``memory.integrity.failures`` counter, checksum or hash mismatches found; check →
  ``memory_integrity_failures_total``
- ``memory.cleanup.runs`` counter of retention cleanup runs; status=ok|failed|interrupted →
  ``memory_cleanup_runs_total``
- ``memory.updates.bus_failures`` counter, the ``memory:updates`` bus (Redis, PostgreSQL
  LISTEN/NOTIFY) failing, so updates run degraded from the log; role=publish|subscribe →
  ``memory_updates_bus_failures_total``
- ``memory.swarm.tasks`` counter of swarm tasks entering a status; status=PENDING|IN_PROGRESS|
  NEEDS_ASSIST|COMPLETED|FAILED|BLOCKED → ``memory_swarm_tasks_total``
- ``memory.swarm.claims`` / ``memory.swarm.lease_expiries`` counters, claims won and claims
  of a task whose lease had expired (its worker died or hung) →
  ``memory_swarm_claims_total`` / ``memory_swarm_lease_expiries_total``
- ``memory.swarm.findings`` / ``memory.swarm.conflicts`` counters → ``memory_swarm_findings_total``
  / ``memory_swarm_conflicts_total``
- ``memory.swarm.escalations`` counter; cause=automatic (confidence below 0.2)|manual →
  ``memory_swarm_escalations_total``
- ``memory.swarm.signature_failures`` counter, envelopes whose custody chain does not verify;
  outcome=warned (enforcement off)|refused → ``memory_swarm_signature_failures_total``
- ``memory.index.held_bytes`` observable gauge, bytes the in-process search indexes hold
  (within ``$MEMORY_INDEX_BUDGET_MB``) → ``memory_index_held_bytes``
- ``memory.forget.incomplete`` counter, forgets whose bytes could not be cleared from the
  SQLite files yet (a reader held the WAL) → ``memory_forget_incomplete_total``
- ``memory.service.breaker.state`` observable gauge, each circuit breaker of the hub
  service (``memctl serve``): 0 closed, 1 half-open, 2 open; breaker=embedder|redis|
  postgresql|unleash → ``memory_service_breaker_state`` (only where a service runs)
- hub-spoke sync (``memory.sync``), named as the MEMSHADOW design names them; node is a
  sync node id (a deployment has a handful), tier=working|episodic|semantic:
  ``memshadow.sync.frequency`` counter of batches applied; node (the batch's source), tier
  → ``memshadow_sync_frequency_total`` (the frequency is its rate);
  ``memshadow.batch.size`` histogram, items per batch applied; tier →
  ``memshadow_batch_size_bucket``;
  ``memshadow.sync.latency_ms`` histogram, ms from a batch's encoding at its source to its
  application here; node (the source), tier → ``memshadow_sync_latency_ms_bucket``;
  ``memshadow.conflicts`` counter of concurrent updates resolved; resolution →
  ``memshadow_conflicts_total``;
  ``memshadow.frames.rejected`` counter; reason=magic|version|checksum|truncated|oversized|
  malformed|unsupported|replayed|unauthorized → ``memshadow_frames_rejected_total``;
  ``memshadow.deliveries`` counter of batches delivered to a node; path=p2p|relayed →
  ``memshadow_deliveries_total``;
  ``memshadow.p2p_ratio`` observable gauge, the share of this process's deliveries that
  went peer to peer (0 before any) → ``memshadow_p2p_ratio``;
  ``memshadow.sync.backlog`` observable gauge, batches waiting to be sent (a spoke's outbox,
  the hub's queues) → ``memshadow_sync_backlog``

Series carry no instrumentation-scope labels; the endpoint adds ``target_info``. Histograms
share the bucket boundaries ``LATENCY_BUCKETS_MS``. An endpoint reports what is recorded
after it starts (counters start at 0 there; PromQL's ``rate`` expects exactly that).

Derived, not recorded: ``memory.cache.hit_rate`` = hits / (hits + misses), in PromQL
``sum(rate(memory_cache_hits_total[5m])) / (sum(rate(memory_cache_hits_total[5m])) +
sum(rate(memory_cache_misses_total[5m])))``; the error rate = ``memory_errors_total`` /
``memory_operations_total``; ``memory.resumption.success_rate`` = successes / attempts.
``memory.errors`` counts only failures of the system (an unreachable database, a bug), not
a caller's mistakes (invalid input, not found, conflicts): those are answers, not faults.

Attributes are few and bounded; user, agent and session ids and content never appear.

How it is wired: the library records into its own SDK ``MeterProvider`` (never the global
one, which belongs to the application) whose only reader is in process; that reader backs
``Memory.injection_stats`` / ``retrieval_stats`` and the metrics snapshot, so the metrics
are the single count of everything. Nothing leaves the process unless asked:
:func:`start_prometheus_endpoint` serves ``/metrics``, :func:`start_otlp_exporter` pushes
OTLP (the ``otlp`` extra). ``MEMORY_METRICS=off`` (or :func:`set_enabled`) turns recording
into no-ops, which is the baseline of ``benchmarks/telemetry_overhead.py``.

Instrumented code does not call the SDK itself: a measurement is appended to a queue
(~0.1 us) and a daemon thread hands the queue to the SDK every 0.25 s, summing counter
increments per attribute set; every read (:func:`totals`, snapshots, a ``/metrics``
scrape) calls :func:`flush` first, so nothing it returns is stale. An OTLP push may lag by
up to 0.25 s.

Exporters are ``memory.telemetry.export``; windows of these metrics summarised as JSON are
``memory.telemetry.snapshots``.
"""

from __future__ import annotations

import os
import resource
import sys
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import wraps
from typing import Any, Protocol, TypeVar

from opentelemetry.metrics import CallbackOptions, Meter, NoOpMeter, Observation
from opentelemetry.sdk.metrics import Histogram, MeterProvider
from opentelemetry.sdk.metrics.export import (
    HistogramDataPoint,
    InMemoryMetricReader,
    MetricReader,
    NumberDataPoint,
)
from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, View
from opentelemetry.sdk.resources import Resource

from memory.core.errors import (
    ConflictError,
    InvalidInputError,
    NotFoundError,
)

METRICS_ENV = "MEMORY_METRICS"
METER_NAME = "tiered-memory"

# Millisecond boundaries: OTel's defaults (0, 5, 10, 25, …) put every store query (0.1-5 ms)
# in two buckets. These resolve sub-millisecond statements and the gates' 50, 200 and
# 1000 ms thresholds land exactly on boundaries, so a p95 near a threshold is not smeared.
LATENCY_BUCKETS_MS: tuple[float, ...] = (
    0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 25.0, 50.0, 75.0, 100.0, 150.0,
    200.0, 300.0, 500.0, 750.0, 1000.0, 2000.0, 5000.0, 10000.0,
)  # fmt: skip

INJECTION_LATENCY = "memory.injection.latency"
DB_QUERY_DURATION = "memory.db.query_duration"
RAG_SEARCH_DURATION = "memory.rag.search_duration"
CACHE_HITS = "memory.cache.hits"
CACHE_MISSES = "memory.cache.misses"
HEAP_USED_MB = "memory.heap.used_mb"
OVERFLOW_EVENTS = "memory.overflow.events"
COMPACTION_EVENTS = "memory.compaction.events"
DEGRADED_SEARCHES = "memory.rag.degraded_searches"
RESUMPTION_ATTEMPTS = "memory.resumption.attempts"
RESUMPTION_SUCCESSES = "memory.resumption.successes"
CROSS_AGENT_FAILURES = "memory.cross_agent.failures"
OPERATIONS = "memory.operations"
ERRORS = "memory.errors"
FLAG_STATE = "memory.flag.state"
FLAG_ROLLOUT = "memory.flag.rollout_percentage"
SCHEMA_REVISION = "memory.schema.revision"
# The failures the critical alerts watch (dashboards/alerts.yml).
DB_CONNECTION_FAILURES = "memory.db.connection_failures"
MIGRATION_FAILURES = "memory.migration.failures"
INTEGRITY_FAILURES = "memory.integrity.failures"
CLEANUP_RUNS = "memory.cleanup.runs"
UPDATES_BUS_FAILURES = "memory.updates.bus_failures"
SWARM_TASKS = "memory.swarm.tasks"
SWARM_CLAIMS = "memory.swarm.claims"
SWARM_LEASE_EXPIRIES = "memory.swarm.lease_expiries"
SWARM_FINDINGS = "memory.swarm.findings"
SWARM_CONFLICTS = "memory.swarm.conflicts"
SWARM_ESCALATIONS = "memory.swarm.escalations"
SWARM_SIGNATURE_FAILURES = "memory.swarm.signature_failures"
FORGET_INCOMPLETE = "memory.forget.incomplete"
INDEX_HELD_BYTES = "memory.index.held_bytes"
BREAKER_STATE = "memory.service.breaker.state"
SYNC_FREQUENCY = "memshadow.sync.frequency"
SYNC_BATCH_SIZE = "memshadow.batch.size"
SYNC_LATENCY = "memshadow.sync.latency_ms"
SYNC_CONFLICTS = "memshadow.conflicts"
SYNC_FRAMES_REJECTED = "memshadow.frames.rejected"
SYNC_DELIVERIES = "memshadow.deliveries"
SYNC_P2P_RATIO = "memshadow.p2p_ratio"
SYNC_BACKLOG = "memshadow.sync.backlog"

#: Every instrument's Prometheus series (histograms: the ``_bucket`` series; ``_sum`` and
#: ``_count`` come with it). Tests scrape ``/metrics`` for each of these.
PROMETHEUS_SERIES: Mapping[str, str] = {
    INJECTION_LATENCY: "memory_injection_latency_milliseconds_bucket",
    DB_QUERY_DURATION: "memory_db_query_duration_milliseconds_bucket",
    RAG_SEARCH_DURATION: "memory_rag_search_duration_milliseconds_bucket",
    CACHE_HITS: "memory_cache_hits_total",
    CACHE_MISSES: "memory_cache_misses_total",
    HEAP_USED_MB: "memory_heap_used_mb",
    OVERFLOW_EVENTS: "memory_overflow_events_total",
    COMPACTION_EVENTS: "memory_compaction_events_total",
    DEGRADED_SEARCHES: "memory_rag_degraded_searches_total",
    RESUMPTION_ATTEMPTS: "memory_resumption_attempts_total",
    RESUMPTION_SUCCESSES: "memory_resumption_successes_total",
    CROSS_AGENT_FAILURES: "memory_cross_agent_failures_total",
    OPERATIONS: "memory_operations_total",
    ERRORS: "memory_errors_total",
    FLAG_STATE: "memory_flag_state",
    FLAG_ROLLOUT: "memory_flag_rollout_percentage",
    DB_CONNECTION_FAILURES: "memory_db_connection_failures_total",
    MIGRATION_FAILURES: "memory_migration_failures_total",
    INTEGRITY_FAILURES: "memory_integrity_failures_total",
    CLEANUP_RUNS: "memory_cleanup_runs_total",
    UPDATES_BUS_FAILURES: "memory_updates_bus_failures_total",
    SWARM_TASKS: "memory_swarm_tasks_total",
    SWARM_CLAIMS: "memory_swarm_claims_total",
    SWARM_LEASE_EXPIRIES: "memory_swarm_lease_expiries_total",
    SWARM_FINDINGS: "memory_swarm_findings_total",
    SWARM_CONFLICTS: "memory_swarm_conflicts_total",
    SWARM_ESCALATIONS: "memory_swarm_escalations_total",
    SWARM_SIGNATURE_FAILURES: "memory_swarm_signature_failures_total",
    FORGET_INCOMPLETE: "memory_forget_incomplete_total",
    INDEX_HELD_BYTES: "memory_index_held_bytes",
    SYNC_FREQUENCY: "memshadow_sync_frequency_total",
    SYNC_BATCH_SIZE: "memshadow_batch_size_bucket",
    SYNC_LATENCY: "memshadow_sync_latency_ms_bucket",
    SYNC_CONFLICTS: "memshadow_conflicts_total",
    SYNC_FRAMES_REJECTED: "memshadow_frames_rejected_total",
    SYNC_DELIVERIES: "memshadow_deliveries_total",
    SYNC_P2P_RATIO: "memshadow_p2p_ratio",
    SYNC_BACKLOG: "memshadow_sync_backlog",
}

# A caller's mistake is an answer, not a fault of the system: not counted in memory.errors.
_CALLER_ERRORS = (InvalidInputError, NotFoundError, ConflictError)

F = TypeVar("F", bound=Callable[..., Any])


def heap_used_mb() -> float:
    """The process' resident memory in MB (peak resident memory where /proc is missing)."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            resident_pages = int(statm.read().split()[1])
        return resident_pages * os.sysconf("SC_PAGE_SIZE") / 1_048_576
    except OSError:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        # ru_maxrss is in bytes on macOS and in kilobytes elsewhere.
        return peak / 1_048_576 if sys.platform == "darwin" else peak / 1024


class HistogramRecorder(Protocol):
    """What the instrumented code calls on a histogram."""

    def record(self, amount: float, attributes: Mapping[str, str] | None = None) -> None: ...


class CounterRecorder(Protocol):
    """What the instrumented code calls on a counter."""

    def add(self, amount: float, attributes: Mapping[str, str] | None = None) -> None: ...


# Measurements wait here and are recorded by a background thread (or by ``flush``). An
# OpenTelemetry SDK measurement costs 5-15 us of attribute cleaning, hashing and locking,
# several per operation (one per SQL statement); appending to a deque costs ~0.1 us, so the
# operation pays almost nothing and the SDK runs in batches with warm caches.
# (the SDK method, amount, attributes, whether amounts for the same attributes can be summed)
_pending: deque[tuple[Callable[..., None], float, Mapping[str, str] | None, bool]] = deque()
_flush_lock = threading.Lock()
_flusher: threading.Thread | None = None
FLUSH_INTERVAL_SECONDS = 0.25


def flush() -> None:
    """Record every queued measurement now (readers and snapshots call this first)."""
    with _flush_lock:
        # Counter increments with the same attributes are summed into one SDK call; the
        # instrumented code passes module-level attribute dicts, so identity is the key.
        sums: dict[tuple[Callable[..., None], int], list[Any]] = {}
        while _pending:
            method, amount, attributes, summable = _pending.popleft()
            if summable:
                entry = sums.setdefault((method, id(attributes)), [0.0, attributes])
                entry[0] += amount
            else:
                method(amount, attributes)
        for (method, _), (total, attributes) in sums.items():
            method(total, attributes)


def _flush_forever() -> None:
    while True:
        time.sleep(FLUSH_INTERVAL_SECONDS)
        flush()


def _start_flusher() -> None:
    global _flusher
    with _flush_lock:
        if _flusher is None:
            _flusher = threading.Thread(target=_flush_forever, name="memory-metrics", daemon=True)
            _flusher.start()


def _forget_flusher() -> None:
    # A forked child has no flusher thread (and maybe a held lock): it starts its own.
    global _flusher, _flush_lock
    _flusher, _flush_lock = None, threading.Lock()
    _pending.clear()


os.register_at_fork(after_in_child=_forget_flusher)


class _QueuedHistogram:
    """A histogram whose measurements go through ``_pending``."""

    __slots__ = ("_method",)

    def __init__(self, method: Callable[..., None]) -> None:
        self._method = method

    def record(self, amount: float, attributes: Mapping[str, str] | None = None) -> None:
        if _flusher is None:
            _start_flusher()
        _pending.append((self._method, amount, attributes, False))


class _QueuedCounter:
    """A counter whose increments go through ``_pending`` (and are summed there)."""

    __slots__ = ("_method",)

    def __init__(self, method: Callable[..., None]) -> None:
        self._method = method

    def add(self, amount: float, attributes: Mapping[str, str] | None = None) -> None:
        if _flusher is None:
            _start_flusher()
        _pending.append((self._method, amount, attributes, True))


class Instruments:
    """The instruments, created on one meter (the library's, or a no-op one when disabled).

    With ``queued``, measurements are recorded in the background (see ``flush``).
    """

    injection_latency: HistogramRecorder
    db_query_duration: HistogramRecorder
    rag_search_duration: HistogramRecorder
    cache_hits: CounterRecorder
    cache_misses: CounterRecorder
    overflow_events: CounterRecorder
    compaction_events: CounterRecorder
    degraded_searches: CounterRecorder
    resumption_attempts: CounterRecorder
    resumption_successes: CounterRecorder
    cross_agent_failures: CounterRecorder
    operations: CounterRecorder
    errors: CounterRecorder
    db_connection_failures: CounterRecorder
    migration_failures: CounterRecorder
    integrity_failures: CounterRecorder
    cleanup_runs: CounterRecorder
    updates_bus_failures: CounterRecorder
    swarm_tasks: CounterRecorder
    swarm_claims: CounterRecorder
    swarm_lease_expiries: CounterRecorder
    swarm_findings: CounterRecorder
    swarm_conflicts: CounterRecorder
    swarm_escalations: CounterRecorder
    swarm_signature_failures: CounterRecorder
    forget_incomplete: CounterRecorder
    sync_frequency: CounterRecorder
    sync_batch_size: HistogramRecorder
    sync_latency: HistogramRecorder
    sync_conflicts: CounterRecorder
    sync_frames_rejected: CounterRecorder
    sync_deliveries: CounterRecorder

    def __init__(self, meter: Meter, *, observe: bool = True, queued: bool = False) -> None:
        def histogram(name: str, unit: str, description: str) -> HistogramRecorder:
            created = meter.create_histogram(name, unit=unit, description=description)
            return _QueuedHistogram(created.record) if queued else created

        def counter(name: str, description: str) -> CounterRecorder:
            created = meter.create_counter(name, description=description)
            return _QueuedCounter(created.add) if queued else created

        self.injection_latency = histogram(
            INJECTION_LATENCY, unit="ms", description="Time to build an injected context."
        )
        self.db_query_duration = histogram(
            DB_QUERY_DURATION, unit="ms", description="Time of each SQL statement."
        )
        self.rag_search_duration = histogram(
            RAG_SEARCH_DURATION, unit="ms", description="Time of a hybrid search."
        )
        self.cache_hits = counter(CACHE_HITS, description="Lookups answered from a cache.")
        self.cache_misses = counter(CACHE_MISSES, description="Lookups a cache could not answer.")
        self.overflow_events = counter(
            OVERFLOW_EVENTS, description="Injections whose candidates exceeded the budget."
        )
        self.compaction_events = counter(
            COMPACTION_EVENTS,
            description="Working memories consolidated (episodic) or memories promoted (semantic).",
        )
        self.degraded_searches = counter(
            DEGRADED_SEARCHES, description="Searches or writes done without the embedder."
        )
        self.resumption_attempts = counter(
            RESUMPTION_ATTEMPTS, description="Session resumptions asked for."
        )
        self.resumption_successes = counter(
            RESUMPTION_SUCCESSES, description="Session resumptions that found live state."
        )
        self.cross_agent_failures = counter(
            CROSS_AGENT_FAILURES, description="Cross-agent sharing operations that failed."
        )
        self.operations = counter(OPERATIONS, description="Public memory operations run.")
        self.errors = counter(ERRORS, description="Operations that failed by a system fault.")
        self.db_connection_failures = counter(
            DB_CONNECTION_FAILURES, description="Attempts to connect to the database that failed."
        )
        self.migration_failures = counter(
            MIGRATION_FAILURES, description="Schema migrations that failed."
        )
        self.integrity_failures = counter(
            INTEGRITY_FAILURES, description="Checksum or hash mismatches found in stored data."
        )
        self.cleanup_runs = counter(CLEANUP_RUNS, description="Retention cleanup runs, by status.")
        self.updates_bus_failures = counter(
            UPDATES_BUS_FAILURES,
            description="Failures of the memory:updates bus; updates then come from the log.",
        )
        self.swarm_tasks = counter(SWARM_TASKS, description="Swarm tasks entering a status.")
        self.swarm_claims = counter(SWARM_CLAIMS, description="Swarm task claims won.")
        self.swarm_lease_expiries = counter(
            SWARM_LEASE_EXPIRIES, description="Swarm tasks reclaimed after their lease expired."
        )
        self.swarm_findings = counter(SWARM_FINDINGS, description="Swarm findings posted.")
        self.swarm_conflicts = counter(
            SWARM_CONFLICTS, description="Pairs of conflicting swarm findings detected."
        )
        self.swarm_escalations = counter(
            SWARM_ESCALATIONS, description="Swarm escalations to a human, by cause."
        )
        self.swarm_signature_failures = counter(
            SWARM_SIGNATURE_FAILURES,
            description="Swarm envelopes whose custody chain did not verify, by outcome.",
        )
        self.forget_incomplete = counter(
            FORGET_INCOMPLETE,
            description="Forgets whose bytes were not yet cleared from the database files.",
        )
        self.sync_frequency = counter(
            SYNC_FREQUENCY, description="Sync batches applied, by source node and tier."
        )
        # No unit on these two: the exporter would append one to names the design fixed.
        self.sync_batch_size = histogram(
            SYNC_BATCH_SIZE, unit="", description="Items per sync batch applied."
        )
        self.sync_latency = histogram(
            SYNC_LATENCY,
            unit="",
            description="Milliseconds from a sync batch's creation at its source to its apply.",
        )
        self.sync_conflicts = counter(
            SYNC_CONFLICTS, description="Concurrent sync updates resolved, by resolution."
        )
        self.sync_frames_rejected = counter(
            SYNC_FRAMES_REJECTED, description="MEMSHADOW frames refused, by reason."
        )
        self.sync_deliveries = counter(
            SYNC_DELIVERIES, description="Sync batches delivered, peer to peer or relayed."
        )
        if observe:
            meter.create_observable_gauge(
                HEAP_USED_MB,
                callbacks=[_observe_heap],
                # No unit: the exporter would append it (memory_heap_used_mb_MB); the name
                # already says megabytes.
                description="Resident memory of the process, in MB.",
            )
            meter.create_observable_gauge(
                INDEX_HELD_BYTES,
                callbacks=[_observe_index],
                description="Bytes the in-process search indexes hold.",
            )
            meter.create_observable_gauge(
                FLAG_STATE,
                callbacks=[_observe_flag_state],
                description="1 when the flag is on by default or rolled out at all, else 0.",
            )
            meter.create_observable_gauge(
                FLAG_ROLLOUT,
                callbacks=[_observe_flag_rollout],
                description="The flag's effective rollout percentage.",
            )
            meter.create_observable_gauge(
                BREAKER_STATE,
                callbacks=[_observe_breakers],
                description="Each circuit breaker of the hub service: 0 closed, 1 half-open, "
                "2 open.",
            )
            meter.create_observable_gauge(
                SYNC_P2P_RATIO,
                callbacks=[_observe_p2p_ratio],
                description="Share of sync deliveries that went peer to peer.",
            )
            meter.create_observable_gauge(
                SYNC_BACKLOG,
                callbacks=[_observe_sync_backlog],
                description="Sync batches waiting to be sent.",
            )
            meter.create_observable_gauge(
                SCHEMA_REVISION,
                callbacks=[_observe_schema_revision],
                description="The schema revision this process's stores were opened at.",
            )


# -- observable gauges --------------------------------------------------------------------------


class FlagStates(Protocol):
    """What the flag gauges read: a ``flags.FlagEvaluator`` (telemetry does not import
    ``flags``; anything that exports flag states the same way will do)."""

    def export_state(self) -> Sequence[Mapping[str, Any]]: ...


# Weak: an evaluator is published while its owner (a Memory, a workload) lives.
_flag_sources: weakref.WeakKeyDictionary[FlagStates, None] = weakref.WeakKeyDictionary()
_flag_lock = threading.Lock()


class HeldBytes(Protocol):
    def held_bytes(self) -> int: ...


_index_sources: weakref.WeakKeyDictionary[HeldBytes, None] = weakref.WeakKeyDictionary()
_index_lock = threading.Lock()


def observe_index(source: HeldBytes) -> None:
    """Publish ``source.held_bytes()`` (summed over every source) as
    ``memory.index.held_bytes``, for as long as ``source`` lives (held weakly)."""
    with _index_lock:
        _index_sources[source] = None


def _observe_index(_options: CallbackOptions) -> Iterable[Observation]:
    with _index_lock:
        sources = list(_index_sources)
    return [Observation(sum(source.held_bytes() for source in sources))]


class SyncSource(Protocol):
    """What the sync gauges read: a sync node (``memory.sync``) of this process."""

    def backlog(self) -> int: ...

    def deliveries(self) -> tuple[int, int]:
        """(peer-to-peer, relayed) batches delivered so far."""
        ...


_sync_sources: weakref.WeakSet[SyncSource] = weakref.WeakSet()
_sync_lock = threading.Lock()


def observe_sync(source: SyncSource) -> None:
    """Publish ``source``'s backlog and delivery paths (summed over every source) as
    ``memshadow.sync.backlog`` and ``memshadow.p2p_ratio`` while ``source`` lives."""
    with _sync_lock:
        _sync_sources.add(source)


def _sync_sources_now() -> list[SyncSource]:
    with _sync_lock:
        return list(_sync_sources)


def _observe_sync_backlog(_options: CallbackOptions) -> Iterable[Observation]:
    return [Observation(sum(source.backlog() for source in _sync_sources_now()))]


def _observe_p2p_ratio(_options: CallbackOptions) -> Iterable[Observation]:
    direct = relayed = 0
    for source in _sync_sources_now():
        p2p, hub = source.deliveries()
        direct, relayed = direct + p2p, relayed + hub
    return [Observation(direct / (direct + relayed) if direct + relayed else 0.0)]


def observe_flags(evaluator: FlagStates) -> None:
    """Publish the state and rollout percentage of every flag ``evaluator`` knows.

    The gauges read ``evaluator.export_state()`` at each collection, for as long
    as the evaluator lives (it is held weakly; ``Memory`` observes its own). Observing a
    second evaluator adds its flags (the later one wins for a flag both know).
    """
    with _flag_lock:
        _flag_sources[evaluator] = None


def stop_observing_flags(evaluator: FlagStates) -> None:
    """Stop publishing ``evaluator``'s flags."""
    with _flag_lock:
        _flag_sources.pop(evaluator, None)


def _flag_states() -> dict[str, tuple[int, int]]:
    with _flag_lock:
        sources = list(_flag_sources)
    states: dict[str, tuple[int, int]] = {}
    for evaluator in sources:
        for state in evaluator.export_state():
            on = state["enabled_by_default"] or state["rollout"] > 0
            states[state["name"]] = (int(on), state["rollout"])
    return states


class BreakerStates(Protocol):
    """What the breaker gauge reads: the hub service's breakers (telemetry does not import
    ``pybreaker``), each one's state as a number (0 closed, 1 half-open, 2 open)."""

    def breaker_states(self) -> Mapping[str, int]: ...


# Weak, like the flag sources: a service's breakers are published while it runs.
_breaker_sources: weakref.WeakSet[BreakerStates] = weakref.WeakSet()


def observe_breakers(source: BreakerStates) -> None:
    """Publish ``source.breaker_states()`` as ``memory.service.breaker.state`` while
    ``source`` lives."""
    with _flag_lock:
        _breaker_sources.add(source)


def stop_observing_breakers(source: BreakerStates) -> None:
    """Stop publishing ``source``'s breakers."""
    with _flag_lock:
        _breaker_sources.discard(source)


def _observe_breakers(_options: CallbackOptions) -> Iterable[Observation]:
    with _flag_lock:
        sources = list(_breaker_sources)
    return [
        Observation(state, {"breaker": name})
        for source in sources
        for name, state in source.breaker_states().items()
    ]


class SchemaSource(Protocol):
    """What the schema gauge reads: an open store (``memory.Memory``) and its revision."""

    revision: str | None


# Weak, like the flag sources: a store is published while it is open.
_schema_sources: weakref.WeakSet[SchemaSource] = weakref.WeakSet()


def observe_schema(store: SchemaSource) -> None:
    """Publish ``store.revision`` as ``memory.schema.revision`` while ``store`` lives."""
    with _flag_lock:
        _schema_sources.add(store)


def stop_observing_schema(store: SchemaSource) -> None:
    """Stop publishing ``store``'s revision."""
    with _flag_lock:
        _schema_sources.discard(store)


def _observe_schema_revision(_options: CallbackOptions) -> Iterable[Observation]:
    with _flag_lock:
        revisions = [store.revision for store in _schema_sources]
    if not revisions:
        return []
    # Revision ids are numbered scripts (0001 ...): the lowest is the store furthest behind,
    # which is what a dashboard watching a migration needs to see.
    numbers = [int(r) if r is not None and r.isdigit() else 0 for r in revisions]
    return [Observation(min(numbers))]


def _observe_heap(_options: CallbackOptions) -> Iterable[Observation]:
    return [Observation(round(heap_used_mb(), 3))]


def _observe_flag_state(_options: CallbackOptions) -> Iterable[Observation]:
    return [Observation(on, {"flag": name}) for name, (on, _) in _flag_states().items()]


def _observe_flag_rollout(_options: CallbackOptions) -> Iterable[Observation]:
    return [Observation(rollout, {"flag": name}) for name, (_, rollout) in _flag_states().items()]


# -- the provider and its readers ---------------------------------------------------------------

_totals = InMemoryMetricReader()
_provider = MeterProvider(
    metric_readers=[_totals],
    resource=Resource.create({"service.name": METER_NAME}),
    views=[
        View(
            instrument_type=Histogram,
            aggregation=ExplicitBucketHistogramAggregation(boundaries=LATENCY_BUCKETS_MS),
        )
    ],
)
_recording = Instruments(_provider.get_meter(METER_NAME), queued=True)
_no_op = Instruments(NoOpMeter(METER_NAME), observe=False)
_enabled = os.environ.get(METRICS_ENV, "on").strip().lower() not in ("off", "0", "false", "no")


# Counters whose series should exist at 0 before the first event: a series that does not
# exist makes PromQL ratios and alerts return "no data" instead of 0. Each is replayed as an
# add(0) whenever an exporter is attached, since a reader sees only what comes after it.
_declared: dict[tuple[str, frozenset[tuple[str, str]]], Mapping[str, str]] = {}
_declared_lock = threading.Lock()


def declare_series(counter: str, attributes: Mapping[str, str]) -> None:
    """Make counter ``counter`` (an :class:`Instruments` attribute) export a 0 series with
    ``attributes`` now and on every exporter attached later."""
    key = (counter, frozenset(attributes.items()))
    with _declared_lock:
        if key in _declared:
            return
        _declared[key] = dict(attributes)
    getattr(_recording, counter).add(0, attributes)


def _replay_declared() -> None:
    with _declared_lock:
        declared = list(_declared.items())
    for (counter, _), attributes in declared:
        getattr(_recording, counter).add(0, attributes)


# Cross-agent failures by operation (memory.scope counts them; see its CrossAgentOperation).
CROSS_AGENT_OPERATIONS = ("read", "write", "share", "revoke")
for _operation in CROSS_AGENT_OPERATIONS:
    declare_series("cross_agent_failures", {"operation": _operation})
# The alerts on these fire on any increase, which needs the series to exist before it.
for _counter in (
    "db_connection_failures", "migration_failures", "integrity_failures", "forget_incomplete"
):
    declare_series(_counter, {})
for _status in ("ok", "failed", "interrupted"):
    declare_series("cleanup_runs", {"status": _status})
for _role in ("publish", "subscribe"):
    declare_series("updates_bus_failures", {"role": _role})
# The swarm bus (memory.swarm); its dashboard row and alerts read these from 0.
SWARM_TASK_STATUSES = ("PENDING", "IN_PROGRESS", "NEEDS_ASSIST", "COMPLETED", "FAILED", "BLOCKED")
for _status in SWARM_TASK_STATUSES:
    declare_series("swarm_tasks", {"status": _status})
for _counter in ("swarm_claims", "swarm_lease_expiries", "swarm_findings", "swarm_conflicts"):
    declare_series(_counter, {})
for _cause in ("automatic", "manual"):
    declare_series("swarm_escalations", {"cause": _cause})
for _outcome in ("warned", "refused"):
    declare_series("swarm_signature_failures", {"outcome": _outcome})
# Hub-spoke sync (memory.sync): its dashboard row reads these from 0.
SYNC_REJECTION_REASONS = (
    "magic", "version", "checksum", "truncated", "oversized", "malformed", "unsupported",
    "replayed", "unauthorized",
)  # fmt: skip
for _reason in SYNC_REJECTION_REASONS:
    declare_series("sync_frames_rejected", {"reason": _reason})
# memory.sync.clocks.ConflictResolution's values (telemetry may not import sync).
SYNC_RESOLUTIONS = ("last_writer", "node_id", "tombstone")
for _resolution in SYNC_RESOLUTIONS:
    declare_series("sync_conflicts", {"resolution": _resolution})
for _path in ("p2p", "relayed"):
    declare_series("sync_deliveries", {"path": _path})


def instruments() -> Instruments:
    """The instruments to record into (no-ops while metrics are disabled)."""
    return _recording if _enabled else _no_op


def enabled() -> bool:
    """Whether measurements are being recorded."""
    return _enabled


def set_enabled(on: bool) -> None:
    """Turn recording on or off for the whole process (default: on unless
    ``MEMORY_METRICS=off``). Counts recorded so far are kept."""
    global _enabled
    _enabled = on


def meter_provider() -> MeterProvider:
    """The library's SDK meter provider (to attach a reader of your own)."""
    return _provider


def attach_reader(reader: MetricReader) -> None:
    """Attach an exporter's reader to the library's metrics: what is queued is recorded
    first (it happened before this exporter existed), and the declared series are replayed
    at 0, since a reader sees only what comes after it."""
    flush()
    _provider.add_metric_reader(reader)
    _replay_declared()


def detach_reader(reader: MetricReader) -> None:
    """Detach (and shut down) a reader added with :func:`attach_reader`."""
    _provider.remove_metric_reader(reader)


# -- recording helpers used by the instrumented modules -----------------------------------------


def counted(name: str) -> Callable[[F], F]:
    """Count each call as one ``memory.operations{operation=name}``, and as one
    ``memory.errors`` too when it fails by a system fault (not a caller's mistake)."""
    attributes = {"operation": name}
    declare_series("operations", attributes)
    declare_series("errors", attributes)

    def decorate(function: F) -> F:
        @wraps(function)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            recording = instruments()
            recording.operations.add(1, attributes)
            try:
                return function(*args, **kwargs)
            except _CALLER_ERRORS:
                raise
            except Exception:
                recording.errors.add(1, attributes)
                raise

        return wrapper  # type: ignore[return-value]

    return decorate


def elapsed_ms(started: float) -> float:
    """Milliseconds since ``started`` (a ``time.perf_counter()`` reading)."""
    return (time.perf_counter() - started) * 1000.0


_VERBS = frozenset({"select", "insert", "update", "delete"})
# Transaction control takes microseconds and one per transaction: measured, it would only
# pull the query quantiles down and hide slow queries from the database gate.
_CONTROL = ("begin", "commit", "rollback", "savepoint", "release", "end")


def statement_operation(statement: str) -> str | None:
    """The bounded ``operation`` attribute of a SQL statement: its verb, or ``other``;
    None for transaction control (BEGIN, COMMIT, SAVEPOINT, …), which is not measured."""
    head = statement.lstrip()[:9].lower()
    verb = head[:6]
    if verb in _VERBS:
        return verb
    return None if head.startswith(_CONTROL) else "other"


# -- reading the totals -------------------------------------------------------------------------


@dataclass(frozen=True)
class HistogramTotals:
    """A histogram summed over its attributes: bucket counts (one more than boundaries)."""

    boundaries: tuple[float, ...]
    buckets: tuple[int, ...]
    total: float

    @property
    def count(self) -> int:
        """How many values were recorded."""
        return sum(self.buckets)

    def minus(self, earlier: HistogramTotals | None) -> HistogramTotals:
        """What was recorded since ``earlier``."""
        if earlier is None or earlier.boundaries != self.boundaries:
            return self
        return HistogramTotals(
            self.boundaries,
            tuple(a - b for a, b in zip(self.buckets, earlier.buckets, strict=True)),
            self.total - earlier.total,
        )

    def quantile(self, q: float) -> float | None:
        """The q-quantile, interpolated in its bucket as PromQL's ``histogram_quantile`` does
        (a value past the last boundary is reported as that boundary); None when empty."""
        count = self.count
        if count == 0:
            return None
        rank = q * count
        cumulative = 0
        for index, in_bucket in enumerate(self.buckets):
            if cumulative + in_bucket >= rank and in_bucket > 0:
                if index == len(self.boundaries):
                    return self.boundaries[-1]
                lower = self.boundaries[index - 1] if index > 0 else 0.0
                upper = self.boundaries[index]
                return lower + (upper - lower) * (rank - cumulative) / in_bucket
            cumulative += in_bucket
        return self.boundaries[-1]


@dataclass(frozen=True)
class Totals:
    """Cumulative values of every instrument since the process started, per attribute set."""

    counters: Mapping[str, Mapping[frozenset[tuple[str, Any]], float]]
    histograms: Mapping[str, Mapping[frozenset[tuple[str, Any]], HistogramTotals]]
    gauges: Mapping[str, Mapping[frozenset[tuple[str, Any]], float]]

    def counter(self, name: str, **match: Any) -> float:
        """The sum of counter ``name`` over the attribute sets that contain ``match``."""
        return sum(
            value
            for attributes, value in self.counters.get(name, {}).items()
            if match.items() <= dict(attributes).items()
        )

    def histogram(self, name: str) -> HistogramTotals | None:
        """Histogram ``name`` summed over its attribute sets (None if never recorded)."""
        points = list(self.histograms.get(name, {}).values())
        if not points:
            return None
        buckets = [sum(column) for column in zip(*(p.buckets for p in points), strict=True)]
        return HistogramTotals(points[0].boundaries, tuple(buckets), sum(p.total for p in points))


def totals() -> Totals:
    """Collect every instrument now (observable gauges are read at this moment)."""
    counters: dict[str, dict[frozenset[tuple[str, Any]], float]] = {}
    histograms: dict[str, dict[frozenset[tuple[str, Any]], HistogramTotals]] = {}
    gauges: dict[str, dict[frozenset[tuple[str, Any]], float]] = {}
    flush()
    data = _totals.get_metrics_data()
    for resource_metrics in data.resource_metrics if data is not None else ():
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                for point in metric.data.data_points:
                    key = frozenset((point.attributes or {}).items())
                    if isinstance(point, HistogramDataPoint):
                        histograms.setdefault(metric.name, {})[key] = HistogramTotals(
                            tuple(point.explicit_bounds), tuple(point.bucket_counts), point.sum
                        )
                    elif isinstance(point, NumberDataPoint):
                        target = gauges if metric.name in _GAUGES else counters
                        target.setdefault(metric.name, {})[key] = float(point.value)
    return Totals(counters, histograms, gauges)


_GAUGES = frozenset({HEAP_USED_MB, FLAG_STATE, FLAG_ROLLOUT})
