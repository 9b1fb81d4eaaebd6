"""A healthy metrics snapshot, what the gate and flag-rollout tests vary."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from memory.ops import LatencySummary, MetricsSnapshot

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def latency(p95: float | None) -> LatencySummary:
    """A latency whose every quantile is ``p95``."""
    return LatencySummary(100, 10.0, p95, p95, p95, p95)


HEALTHY = MetricsSnapshot(
    window_start=NOW - timedelta(hours=1),
    window_end=NOW,
    injection_latency=latency(120.0),
    db_query_duration=latency(4.0),
    rag_search_duration=latency(80.0),
    cache_hits=80,
    cache_misses=20,
    cache_hit_rate=0.8,
    operations=10_000,
    errors=5,
    error_rate=0.0005,
    errors_by_operation={"add": 5},
    heap_used_mb=150.0,
    overflow_events=0,
    resumption_attempts=10,
    resumption_successes=10,
    resumption_success_rate=1.0,
    cross_agent_failures=0,
    degraded_searches=0,
    flags={},
)
