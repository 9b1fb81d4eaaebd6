"""Metrics snapshots: a window of the library's metrics summarised, stored as JSON.

A **snapshot** (:class:`MetricsSnapshot`) gives per latency the count, rate and p50/p95/p99
(estimated from the buckets the way PromQL's ``histogram_quantile`` does), the cache hit
rate, error rate, heap, overflow and resumption figures and the flags.
:class:`SnapshotWindow` measures one; ``memctl workload --snapshot`` writes it and ``memctl
gates --snapshot`` reads it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from memory.core.errors import InvalidInputError
from memory.telemetry.instruments import (
    CACHE_HITS,
    CACHE_MISSES,
    CROSS_AGENT_FAILURES,
    DB_QUERY_DURATION,
    DEGRADED_SEARCHES,
    ERRORS,
    FLAG_ROLLOUT,
    FLAG_STATE,
    HEAP_USED_MB,
    INJECTION_LATENCY,
    OPERATIONS,
    OVERFLOW_EVENTS,
    RAG_SEARCH_DURATION,
    RESUMPTION_ATTEMPTS,
    RESUMPTION_SUCCESSES,
    HistogramTotals,
    heap_used_mb,
    totals,
)

__all__ = ["LatencySummary", "MetricsSnapshot", "SnapshotWindow", "read_snapshot", "write_snapshot"]

SNAPSHOT_VERSION = 1


@dataclass(frozen=True)
class LatencySummary:
    """One latency histogram over a window: count, rate and quantiles in ms."""

    count: int
    rate_per_second: float
    mean_ms: float | None
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None


@dataclass(frozen=True)
class MetricsSnapshot:
    """The numbers that decide a rollout, over one window (see the module docstring)."""

    window_start: datetime
    window_end: datetime
    injection_latency: LatencySummary
    db_query_duration: LatencySummary
    rag_search_duration: LatencySummary
    cache_hits: int
    cache_misses: int
    cache_hit_rate: float | None
    operations: int
    errors: int
    error_rate: float | None
    errors_by_operation: Mapping[str, int]
    heap_used_mb: float
    overflow_events: int
    resumption_attempts: int
    resumption_successes: int
    resumption_success_rate: float | None
    cross_agent_failures: int
    degraded_searches: int
    flags: Mapping[str, Mapping[str, int]]

    @property
    def window_seconds(self) -> float:
        """The window's length in seconds."""
        return (self.window_end - self.window_start).total_seconds()

    def to_json(self) -> dict[str, Any]:
        """The snapshot as the JSON document :func:`write_snapshot` stores."""
        window = self.window_seconds or 1e-9
        return {
            "version": SNAPSHOT_VERSION,
            "window": {
                "start": self.window_start.isoformat(),
                "end": self.window_end.isoformat(),
                "seconds": round(self.window_seconds, 3),
            },
            "metrics": {
                INJECTION_LATENCY: asdict(self.injection_latency),
                DB_QUERY_DURATION: asdict(self.db_query_duration),
                RAG_SEARCH_DURATION: asdict(self.rag_search_duration),
                "memory.cache.hit_rate": {
                    "value": self.cache_hit_rate,
                    "hits": self.cache_hits,
                    "misses": self.cache_misses,
                },
                "memory.error_rate": {
                    "value": self.error_rate,
                    "operations": self.operations,
                    "errors": self.errors,
                    "by_operation": dict(self.errors_by_operation),
                },
                HEAP_USED_MB: {"value": self.heap_used_mb},
                OVERFLOW_EVENTS: {
                    "count": self.overflow_events,
                    "per_hour": round(self.overflow_events * 3600 / window, 3),
                },
                "memory.resumption.success_rate": {
                    "value": self.resumption_success_rate,
                    "attempts": self.resumption_attempts,
                    "successes": self.resumption_successes,
                },
                CROSS_AGENT_FAILURES: {
                    "count": self.cross_agent_failures,
                    "per_hour": round(self.cross_agent_failures * 3600 / window, 3),
                },
                DEGRADED_SEARCHES: {"count": self.degraded_searches},
                "memory.flags": {name: dict(state) for name, state in self.flags.items()},
            },
        }

    @classmethod
    def from_json(cls, document: Any, source: str = "snapshot") -> MetricsSnapshot:
        """Read a document written by :meth:`to_json`; InvalidInputError names what is wrong."""
        try:
            if document.get("version") != SNAPSHOT_VERSION:
                raise InvalidInputError(
                    f"{source}: unsupported snapshot version {document.get('version')!r} "
                    f"(expected {SNAPSHOT_VERSION})"
                )
            metrics = document["metrics"]
            cache = metrics["memory.cache.hit_rate"]
            errors = metrics["memory.error_rate"]
            resumption = metrics["memory.resumption.success_rate"]
            return cls(
                window_start=datetime.fromisoformat(document["window"]["start"]),
                window_end=datetime.fromisoformat(document["window"]["end"]),
                injection_latency=LatencySummary(**metrics[INJECTION_LATENCY]),
                db_query_duration=LatencySummary(**metrics[DB_QUERY_DURATION]),
                rag_search_duration=LatencySummary(**metrics[RAG_SEARCH_DURATION]),
                cache_hits=int(cache["hits"]),
                cache_misses=int(cache["misses"]),
                cache_hit_rate=cache["value"],
                operations=int(errors["operations"]),
                errors=int(errors["errors"]),
                error_rate=errors["value"],
                errors_by_operation={str(k): int(v) for k, v in errors["by_operation"].items()},
                heap_used_mb=float(metrics[HEAP_USED_MB]["value"]),
                overflow_events=int(metrics[OVERFLOW_EVENTS]["count"]),
                resumption_attempts=int(resumption["attempts"]),
                resumption_successes=int(resumption["successes"]),
                resumption_success_rate=resumption["value"],
                cross_agent_failures=int(metrics[CROSS_AGENT_FAILURES]["count"]),
                degraded_searches=int(metrics[DEGRADED_SEARCHES]["count"]),
                flags={
                    str(name): {str(k): int(v) for k, v in state.items()}
                    for name, state in metrics["memory.flags"].items()
                },
            )
        except InvalidInputError:
            raise
        except (AttributeError, KeyError, TypeError, ValueError) as error:
            raise InvalidInputError(
                f"{source}: not a metrics snapshot ({type(error).__name__}: {error})"
            ) from error


def _summary(histogram: HistogramTotals | None, seconds: float) -> LatencySummary:
    if histogram is None or histogram.count == 0:
        return LatencySummary(0, 0.0, None, None, None, None)

    def rounded(value: float | None) -> float | None:
        return None if value is None else round(value, 3)

    count = histogram.count
    return LatencySummary(
        count,
        round(count / seconds, 3) if seconds > 0 else 0.0,
        rounded(histogram.total / count),
        rounded(histogram.quantile(0.50)),
        rounded(histogram.quantile(0.95)),
        rounded(histogram.quantile(0.99)),
    )


def _ratio(part: float, whole: float) -> float | None:
    return round(part / whole, 6) if whole > 0 else None


class SnapshotWindow:
    """Measures a window: ``snapshot()`` summarises what was recorded since construction
    (or the last ``restart()``).

    >>> window = SnapshotWindow()  # doctest: +SKIP
    >>> ...  # run the workload
    >>> write_snapshot("metrics.json", window.snapshot())  # doctest: +SKIP
    """

    def __init__(self) -> None:
        self.restart()

    def restart(self) -> None:
        """Start a new window now."""
        self._start = datetime.now(UTC)
        self._base = totals()

    def snapshot(self) -> MetricsSnapshot:
        """The window from its start to now."""
        end = datetime.now(UTC)
        now, base = totals(), self._base
        seconds = (end - self._start).total_seconds()

        def delta(name: str, **match: Any) -> int:
            return int(round(now.counter(name, **match) - base.counter(name, **match)))

        def latency(name: str) -> LatencySummary:
            current = now.histogram(name)
            return _summary(current.minus(base.histogram(name)) if current else None, seconds)

        hits, misses = delta(CACHE_HITS), delta(CACHE_MISSES)
        operations, errors = delta(OPERATIONS), delta(ERRORS)
        attempts, successes = delta(RESUMPTION_ATTEMPTS), delta(RESUMPTION_SUCCESSES)
        by_operation: dict[str, int] = {}
        for attributes in now.counters.get(ERRORS, {}):
            name = str(dict(attributes).get("operation", ""))
            count = delta(ERRORS, operation=name)
            if count:
                by_operation[name] = count
        flags: dict[str, dict[str, int]] = {}
        for gauge, key in ((FLAG_STATE, "state"), (FLAG_ROLLOUT, "rollout_percentage")):
            for attributes, value in now.gauges.get(gauge, {}).items():
                flags.setdefault(str(dict(attributes)["flag"]), {})[key] = int(value)
        heap = now.gauges.get(HEAP_USED_MB, {})
        return MetricsSnapshot(
            window_start=self._start,
            window_end=end,
            injection_latency=latency(INJECTION_LATENCY),
            db_query_duration=latency(DB_QUERY_DURATION),
            rag_search_duration=latency(RAG_SEARCH_DURATION),
            cache_hits=hits,
            cache_misses=misses,
            cache_hit_rate=_ratio(hits, hits + misses),
            operations=operations,
            errors=errors,
            error_rate=_ratio(errors, operations),
            errors_by_operation=by_operation,
            heap_used_mb=round(max(heap.values(), default=heap_used_mb()), 3),
            overflow_events=delta(OVERFLOW_EVENTS),
            resumption_attempts=attempts,
            resumption_successes=successes,
            resumption_success_rate=_ratio(successes, attempts),
            cross_agent_failures=delta(CROSS_AGENT_FAILURES),
            degraded_searches=delta(DEGRADED_SEARCHES),
            flags=flags,
        )


def write_snapshot(path: str | os.PathLike[str], snapshot: MetricsSnapshot) -> Path:
    """Write ``snapshot`` as JSON to ``path`` atomically (a reader never sees half a file)."""
    target = Path(path)
    partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
    try:
        partial.write_text(json.dumps(snapshot.to_json(), indent=2) + "\n", encoding="utf-8")
        os.replace(partial, target)
    except OSError as error:
        partial.unlink(missing_ok=True)
        raise InvalidInputError(f"snapshot: cannot write {target}: {error}") from error
    return target


def read_snapshot(path: str | os.PathLike[str]) -> MetricsSnapshot:
    """Read a snapshot file written by :func:`write_snapshot`."""
    source = Path(path)
    try:
        document = json.loads(source.read_text(encoding="utf-8"))
    except OSError as error:
        raise InvalidInputError(f"snapshot: cannot read {source}: {error}") from error
    except json.JSONDecodeError as error:
        raise InvalidInputError(f"snapshot: {source} is not JSON: {error}") from error
    return MetricsSnapshot.from_json(document, str(source))
