"""Rollout gates: the rollout checklist's criteria, measured, and a GO / NO-GO verdict.

A feature flag goes 10 % → 50 % → 100 %; each step is allowed when the gate of the stage
it leaves passes (``ROLLOUT_STAGES``, :func:`gate_for_raise`):

Gate 1 (at 10 %, to go to 50 %)
    injection p95 < 200 ms, cache hit rate > 60 %, error rate < 0.5 %, heap < 500 MB,
    no critical alert firing.
Gate 2 (at 50 %, to go to 100 %)
    the same with cache hit rate > 70 % and error rate < 0.1 %, and database statement p95
    not worse than the recorded baseline (``BASELINE_TOLERANCE`` above it at most:
    percentiles from histogram buckets are not exact, and an identical load measured twice
    differs by a few per cent).
Gate 3 (at 100 %, to call the rollout done)
    gate 2 held throughout the window: each criterion's *worst* value over the window's
    slices passes, no critical alert fired at any time in it, and no rollback event
    happened in it (``memctl flags reset``, or a flag's rollout lowered, read from the flag
    audit table).

Every gate judges only evidence from the flag's current stage, and all of the window: it
refuses (NO-GO, with a note saying how to get fresh evidence) a snapshot or a Prometheus
window that starts before the stage began (the flag's last rollout change in the flag
audit, :func:`current_stage`), or that covers less than the window (a server that began
scraping ten minutes ago cannot vouch for an hour). A criterion its source cannot show
(alerts, from a snapshot) reads "not checked" and counts against GO, as a failure does.

Observations come from a source: :class:`PrometheusSource` asks a Prometheus server's HTTP
API over a window (``increase`` over the window for gates 1 and 2; per-slice values and
their worst for gate 3), :class:`SnapshotSource` reads a metrics snapshot file written by
the library (``memctl workload --snapshot``): one window, and no alerts, so a gate on a
snapshot is never GO; it is a rehearsal of the numbers before the gate on Prometheus.

The baseline is a small JSON file (:func:`record_baseline`, ``memctl gates
--record-baseline``), by default ``gates-baseline.json`` in the working directory or
``$MEMORY_GATES_BASELINE``: record it before the first stage, with every flag off, from
the same source the gates will read.
"""

from __future__ import annotations

import json
import math
import os
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy.engine import Engine

from memory.core.errors import InvalidInputError, MetricsSourceError
from memory.store.engine import EngineOrUrl, engine_for
from memory.store.flags import DatabaseFlagProvider
from memory.telemetry import snapshots

__all__ = [
    "BASELINE_ENV",
    "BASELINE_TOLERANCE",
    "Baseline",
    "CriterionResult",
    "DEFAULT_BASELINE_PATH",
    "GATES",
    "GateOptions",
    "GateReport",
    "MetricsSource",
    "MetricsSourceError",
    "Observations",
    "PrometheusSource",
    "ROLLOUT_STAGES",
    "RecordedBaseline",
    "RefusedError",
    "RollbackEvent",
    "SnapshotSource",
    "Stage",
    "baseline_path",
    "check_gate",
    "current_stage",
    "evaluate_gate",
    "gate_for_raise",
    "metrics_source",
    "parse_window",
    "read_baseline",
    "record_baseline",
    "record_gate_baseline",
    "rollback_events",
]

BASELINE_ENV = "MEMORY_GATES_BASELINE"
DEFAULT_BASELINE_PATH = "gates-baseline.json"
BASELINE_TOLERANCE = 0.10
ROLLOUT_STAGES = (10, 50, 100)
GATES = (1, 2, 3)


# -- what is observed -------------------------------------------------------------------------


@dataclass(frozen=True)
class Observations:
    """The numbers a gate judges, and the evidence they come from; None where the source had
    no data for one, or cannot show it (then ``unchecked`` says why)."""

    injection_p95_ms: float | None
    cache_hit_rate: float | None
    error_rate: float | None
    heap_mb: float | None
    db_p95_ms: float | None
    # Names of the critical alerts firing (in the window, for gate 3).
    critical_alerts: tuple[str, ...] | None
    # What the numbers cover: "worst slice" values or one aggregate, and how long.
    coverage: str
    covered_seconds: float
    # The span the evidence is from: a snapshot's window, or the window asked of Prometheus.
    starts_at: datetime
    ends_at: datetime
    # Why the source cannot show a figure, by field name: its criterion reads "not checked".
    unchecked: Mapping[str, str] = field(default_factory=dict)
    # How to get evidence from later, or over more time, from this kind of source.
    refresh: str = ""


class MetricsSource(Protocol):
    """Where observations come from."""

    description: str

    def observe(self, window: timedelta, *, worst: bool) -> Observations:
        """The numbers over ``window``: aggregated, or (``worst``) the worst slice."""
        ...


def parse_window(text: str, field: str = "window") -> timedelta:
    """``30s``, ``15m``, ``1h``, ``2d`` (a whole number and a unit) as a timedelta; an error
    names ``field``."""
    units = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}
    value, unit = text.strip()[:-1], text.strip()[-1:]
    if unit not in units or not value.isdigit() or int(value) == 0:
        raise InvalidInputError(
            f"{field}: {text!r} is not a duration like 30s, 15m, 1h or 2d"
        )
    return timedelta(**{units[unit]: int(value)})


def _promql_duration(window: timedelta) -> str:
    return f"{int(window.total_seconds())}s"


def _number(value: float | None) -> float | None:
    return None if value is None or math.isnan(value) or math.isinf(value) else value


class PrometheusSource:
    """Observations from a Prometheus server's HTTP API (``/api/v1/query``).

    ``matchers`` (e.g. ``{"job": "memory"}``) are added to every selector, so that one
    Prometheus can hold several deployments; critical alerts are ``ALERTS`` series with
    ``severity="critical"`` and the same labels (the rules in ``dashboards/alerts.yml``
    keep ``job``).
    """

    def __init__(
        self, url: str, matchers: Mapping[str, str] | None = None, timeout: float = 10.0
    ) -> None:
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise InvalidInputError(f"prometheus: {url!r} is not an http(s) URL")
        self.url = url.rstrip("/")
        self.matchers = dict(matchers or {})
        self.timeout = timeout
        where = ", ".join(f"{k}={v}" for k, v in sorted(self.matchers.items()))
        self.description = f"prometheus {self.url}" + (f" ({where})" if where else "")

    def _get(self, path: str, parameters: Mapping[str, str]) -> Any:
        address = f"{self.url}{path}?{urllib.parse.urlencode(parameters)}"
        try:
            with urllib.request.urlopen(address, timeout=self.timeout) as response:
                document = json.load(response)
        except urllib.error.HTTPError as error:
            detail = error.read().decode("utf-8", "replace")[:300]
            raise MetricsSourceError(
                f"prometheus: {path} answered {error.code}: {detail}"
            ) from error
        except (OSError, ValueError) as error:
            raise MetricsSourceError(f"prometheus: cannot query {self.url}: {error}") from error
        if document.get("status") != "success":
            raise MetricsSourceError(f"prometheus: {path} failed: {document.get('error')}")
        return document["data"]

    def query(
        self, expr: str, at: datetime | None = None
    ) -> list[tuple[dict[str, str], float]]:
        """An instant query at ``at`` (default: now): each series' labels and value."""
        parameters = {"query": expr}
        if at is not None:
            parameters["time"] = f"{at.timestamp():.3f}"
        data = self._get("/api/v1/query", parameters)
        if data["resultType"] == "scalar":
            return [({}, float(data["result"][1]))]
        return [(item["metric"], float(item["value"][1])) for item in data["result"]]

    def _scalar(self, expr: str, at: datetime) -> float | None:
        values = [value for _, value in self.query(expr, at)]
        return _number(values[0]) if values else None

    def _selector(self, name: str, extra: str = "") -> str:
        parts = [f'{key}="{value}"' for key, value in sorted(self.matchers.items())]
        return name + "{" + ", ".join([*parts, *([extra] if extra else [])]) + "}"

    def _critical_rules_loaded(self) -> bool:
        data = self._get("/api/v1/rules", {"type": "alert"})
        return any(
            rule.get("labels", {}).get("severity") == "critical"
            for group in data["groups"]
            for rule in group["rules"]
        )

    def expressions(self, window: timedelta, *, worst: bool) -> dict[str, str]:
        """The PromQL behind each observation (tests/test_dashboards.py checks that every
        series they select is one the library serves)."""
        span = _promql_duration(window)
        # A gate-3 slice: long enough for a rate (several scrapes), a twelfth of the window.
        slice_ = _promql_duration(max(window / 12, timedelta(seconds=10)))
        rng = slice_ if worst else span

        def increase(name: str) -> str:
            return f"sum(increase({self._selector(name)}[{rng}]))"

        def p95(histogram: str) -> str:
            return (
                f"histogram_quantile(0.95, sum by (le) "
                f"(increase({self._selector(histogram)}[{rng}])))"
            )

        hits, misses = increase("memory_cache_hits_total"), increase("memory_cache_misses_total")
        # No failure recorded yet can mean no error series at all: that is a rate of 0.
        errors = f"({increase('memory_errors_total')} or vector(0))"
        plain = {
            "injection_p95_ms": p95("memory_injection_latency_milliseconds_bucket"),
            "cache_hit_rate": f"{hits} / ({hits} + {misses})",
            "error_rate": f"{errors} / {increase('memory_operations_total')}",
            "db_p95_ms": p95("memory_db_query_duration_milliseconds_bucket"),
        }
        heap = f"max(max_over_time({self._selector('memory_heap_used_mb')}[{span}]))"
        alerts = self._selector("ALERTS", 'alertstate="firing", severity="critical"')
        step_seconds = max(int(window.total_seconds()) // 60, 1)
        step = f"{step_seconds}s"
        operations = self._selector("memory_operations_total")
        # How much of the window has data: from its oldest sample (within one step).
        covered = (
            f"time() - min(min_over_time(timestamp({operations})[{span}:{step}]))"
            f" + {step_seconds}"
        )
        if not worst:
            return {**plain, "heap_mb": heap, "critical_alerts": alerts, "covered_seconds": covered}
        over = {"cache_hit_rate": "min_over_time"}
        return {
            "covered_seconds": covered,
            **{
                key: f"{over.get(key, 'max_over_time')}(({expr})[{span}:{step}])"
                for key, expr in plain.items()
            },
            "heap_mb": heap,
            "critical_alerts": f"max_over_time({alerts}[{span}])",
        }

    def observe(self, window: timedelta, *, worst: bool) -> Observations:
        """Ask Prometheus for every observation (see :meth:`expressions`), all at one instant,
        so that the window judged is exactly the ``window`` before it."""
        at = datetime.now(UTC)
        exprs = self.expressions(window, worst=worst)
        values = {
            key: self._scalar(expr, at) for key, expr in exprs.items() if key != "critical_alerts"
        }
        alerts: tuple[str, ...] | None = None
        unchecked = {}
        if self._critical_rules_loaded():
            alerts = tuple(
                sorted({labels.get("alertname", "?") for labels, _ in self.query(
                    exprs["critical_alerts"], at)})
            )
        else:
            unchecked["critical_alerts"] = (
                "no critical alert rules loaded (load dashboards/alerts.yml)"
            )
        return Observations(
            injection_p95_ms=values["injection_p95_ms"],
            cache_hit_rate=values["cache_hit_rate"],
            error_rate=values["error_rate"],
            heap_mb=values["heap_mb"],
            db_p95_ms=values["db_p95_ms"],
            critical_alerts=alerts,
            coverage="worst slice" if worst else "aggregate",
            covered_seconds=min(values["covered_seconds"] or 0.0, window.total_seconds()),
            starts_at=at - window,
            ends_at=at,
            unchecked=unchecked,
            refresh=(
                "For fresh evidence, wait until the current stage is as old as the window and "
                "judge again, or give a shorter --window, no longer than the stage's age."
            ),
        )


class SnapshotSource:
    """Observations from a metrics snapshot file (``telemetry.snapshots.write_snapshot``).

    A snapshot holds figures, not alerts: whether a critical alert fired needs the alert
    rules evaluated over the series, which only Prometheus does, so it reads "not checked".
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.snapshot = snapshots.read_snapshot(self.path)
        self.description = f"snapshot {self.path}"
        for edge in (self.snapshot.window_start, self.snapshot.window_end):
            # A naive time cannot be placed against the flag audit's UTC times.
            if edge.tzinfo is None:
                raise InvalidInputError(
                    f"snapshot {self.path}: its window time {edge.isoformat()} has no "
                    "time zone"
                )

    def observe(self, window: timedelta, *, worst: bool) -> Observations:
        """The snapshot's figures; it has one window, so ``worst`` is its aggregate."""
        del window  # a snapshot covers its own window; the gate judges whether it is enough
        snapshot = self.snapshot
        return Observations(
            injection_p95_ms=snapshot.injection_latency.p95_ms,
            cache_hit_rate=snapshot.cache_hit_rate,
            error_rate=snapshot.error_rate,
            heap_mb=snapshot.heap_used_mb,
            db_p95_ms=snapshot.db_query_duration.p95_ms,
            critical_alerts=None,
            coverage="snapshot",
            covered_seconds=max(snapshot.window_seconds, 0.0),
            starts_at=snapshot.window_start,
            ends_at=snapshot.window_end,
            unchecked={
                "critical_alerts": "a snapshot carries no alerts (judge with --prometheus)"
            },
            refresh=(
                "For fresh evidence, write a new snapshot that starts after the stage began "
                "and lasts at least the window (memctl workload --snapshot FILE --duration "
                "SECONDS), or judge Prometheus (--prometheus URL), which also shows alerts."
            ),
        )


# -- the baseline ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Baseline:
    """Database statement p95 before the rollout, as recorded by :func:`record_baseline`."""

    db_p95_ms: float
    recorded_at: datetime
    source: str


def baseline_path(path: str | os.PathLike[str] | None = None) -> Path:
    """``path``, else ``$MEMORY_GATES_BASELINE``, else ``gates-baseline.json``."""
    return Path(path or os.environ.get(BASELINE_ENV) or DEFAULT_BASELINE_PATH)


def record_baseline(
    source: MetricsSource, window: timedelta, path: str | os.PathLike[str] | None = None
) -> Baseline:
    """Measure the database p95 from ``source`` and write it as the gates' baseline."""
    observed = source.observe(window, worst=False)
    if observed.db_p95_ms is None:
        raise InvalidInputError(
            f"baseline: {source.description} has no database statement durations "
            "to record (is the application running and scraped?)"
        )
    baseline = Baseline(observed.db_p95_ms, datetime.now(UTC), source.description)
    target = baseline_path(path)
    partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
    document = {**asdict(baseline), "recorded_at": baseline.recorded_at.isoformat()}
    try:
        partial.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
        os.replace(partial, target)
    except OSError as error:
        partial.unlink(missing_ok=True)
        raise InvalidInputError(f"baseline: cannot write {target}: {error}") from error
    return baseline


def read_baseline(path: str | os.PathLike[str] | None = None) -> Baseline | None:
    """The recorded baseline, or None when none was recorded at that path."""
    source = baseline_path(path)
    try:
        document = json.loads(source.read_text(encoding="utf-8"))
        return Baseline(
            float(document["db_p95_ms"]),
            datetime.fromisoformat(document["recorded_at"]),
            str(document["source"]),
        )
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise InvalidInputError(f"baseline: {source} is not a gates baseline: {error}") from error


# -- the flag audit: rollback events and the current stage --------------------------------


@dataclass(frozen=True)
class RollbackEvent:
    """A flag change that undid rollout: a reset, or a rollout lowered."""

    at: datetime
    flag: str
    action: str
    actor: str
    detail: str


@dataclass(frozen=True)
class Stage:
    """The stage a flag is at: its effective rollout, and the audited change that began it."""

    flag: str
    rollout: int
    previous: int
    started_at: datetime
    audit_id: int


# Before every audit row: the whole history of a flag.
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _effective_rollout(state: Mapping[str, Any] | None) -> int:
    # No stored state means the built-in default, which is off for every rollout flag.
    if not state or not state.get("enabled"):
        return 0
    return int(state.get("rollout", 0))


def rollback_events(engine: Engine, since: datetime) -> list[RollbackEvent]:
    """Resets and rollout decreases in the flag audit since ``since``, oldest first."""
    events = []
    for entry in DatabaseFlagProvider(engine).changes_since(since, ("set", "reset")):
        before, after = _effective_rollout(entry.old), _effective_rollout(entry.new)
        if entry.action == "reset" or after < before:
            events.append(
                RollbackEvent(
                    entry.at, entry.flag, entry.action, entry.actor, f"{before}% -> {after}%"
                )
            )
    return events


def current_stage(engine: Engine, flag: str) -> Stage:
    """When ``flag``'s current stage began: its newest audited change of effective rollout
    (a ``set`` that changed nothing, or an allow list or override, begins no stage).

    :class:`RefusedError` when the audit has no such change: the flag was never rolled out,
    so there is no stage to judge.
    """
    changes = DatabaseFlagProvider(engine).changes_since(_EPOCH, ("set", "reset"), flag=flag)
    for entry in reversed(changes):
        before, after = _effective_rollout(entry.old), _effective_rollout(entry.new)
        if before != after:
            return Stage(flag, after, before, entry.at, entry.id)
    raise RefusedError(
        f"{flag}: the flag audit has no rollout change of it, so it is at no stage a gate "
        f"could judge (memctl flags set {flag} --rollout {ROLLOUT_STAGES[0]} begins the first)"
    )


# -- the verdict ----------------------------------------------------------------------------


@dataclass(frozen=True)
class CriterionResult:
    """One row of a gate's table. ``checked`` false: the source cannot show this criterion,
    so it did not pass (``observed`` says why)."""

    criterion: str
    threshold: str
    observed: str
    passed: bool
    checked: bool = True

    @property
    def result(self) -> str:
        """``PASS``, ``FAIL`` or ``NOT CHECKED``."""
        if not self.checked:
            return "NOT CHECKED"
        return "PASS" if self.passed else "FAIL"


@dataclass(frozen=True)
class GateReport:
    """A gate's table, its verdict, and notes on what to do about refused evidence."""

    gate: int
    source: str
    window_seconds: float
    coverage: str
    covered_seconds: float
    results: tuple[CriterionResult, ...]
    notes: tuple[str, ...] = ()

    @property
    def go(self) -> bool:
        """GO when every criterion was checked and passed."""
        return bool(self.results) and all(result.passed for result in self.results)

    @property
    def verdict(self) -> str:
        """``GO`` or ``NO-GO``."""
        return "GO" if self.go else "NO-GO"

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready (``memctl gates --json``)."""
        return {
            "gate": self.gate,
            "verdict": self.verdict,
            "source": self.source,
            "window_seconds": self.window_seconds,
            "coverage": self.coverage,
            "covered_seconds": self.covered_seconds,
            "criteria": [{**asdict(result), "result": result.result} for result in self.results],
            "notes": list(self.notes),
        }


def _time(at: datetime) -> str:
    return f"{at.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC"


def _span(seconds: float) -> str:
    """A duration as an operator writes one: 45s, 12m30s, 1h, 2d3h; whole seconds, rounded
    down, so that 19.9 s of evidence never reads as the 20 s it falls short of."""
    rest = math.floor(abs(seconds))
    parts: list[str] = []
    for unit, size in (("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)):
        if rest >= size or (unit == "s" and not parts):
            parts.append(f"{rest // size}{unit}")
            rest %= size
    return "".join(parts)


def _figure(
    observed: Observations, key: str, name: str, threshold: str, passed: bool, shown: str
) -> CriterionResult:
    reason = observed.unchecked.get(key)
    if reason is not None:
        return CriterionResult(name, threshold, f"not checked: {reason}", False, checked=False)
    return CriterionResult(name, threshold, shown, passed)


def _upper(
    observed: Observations, key: str, name: str, limit: float, unit: str
) -> CriterionResult:
    value = getattr(observed, key)
    shown = "no data" if value is None else f"{value:.1f} {unit}"
    return _figure(
        observed, key, name, f"< {limit:g} {unit}", value is not None and value < limit, shown
    )


def _share(
    observed: Observations, key: str, name: str, limit: float, above: bool
) -> CriterionResult:
    value = getattr(observed, key)
    shown = "no data" if value is None else f"{value * 100:.2f} %"
    passed = value is not None and (value > limit if above else value < limit)
    return _figure(
        observed, key, name, f"{'>' if above else '<'} {limit * 100:g} %", passed, shown
    )


def _evidence(
    observed: Observations, stage: Stage, window: timedelta, source: str
) -> tuple[list[CriterionResult], list[str]]:
    """The rows that refuse stale or short evidence, and the notes that say what to do."""
    began, starts = stage.started_at, observed.starts_at
    fresh = starts >= began
    wanted = window.total_seconds()
    long_enough = observed.covered_seconds >= wanted
    early = "" if fresh else f", {_span((began - starts).total_seconds())} earlier"
    rows = [
        CriterionResult(
            "evidence from the current stage",
            f"starts at or after {_time(began)} ({stage.flag} at {stage.rollout}%)",
            f"starts {_time(starts)}{early}",
            fresh,
        ),
        CriterionResult(
            "evidence covers the window",
            f">= {_span(wanted)} of data",
            f"{_span(observed.covered_seconds)} ({observed.coverage})",
            long_enough,
        ),
    ]
    notes = []
    if not fresh:
        at_stage = (observed.ends_at - began).total_seconds()
        notes.append(
            f"Stale evidence: {stage.flag} went {stage.previous}% -> {stage.rollout}% at "
            f"{_time(began)} (flag audit #{stage.audit_id}), but the evidence from {source} "
            f"starts at {_time(starts)}, in the stage before; "
            + (
                f"only its last {_span(at_stage)} is at this stage."
                if at_stage > 0 else "all of it is from before this stage."
            )
        )
    if not long_enough:
        notes.append(
            f"Short evidence: the gate judges a window of {_span(wanted)}, the evidence from "
            f"{source} covers {_span(observed.covered_seconds)}."
        )
    if notes and observed.refresh:
        notes.append(observed.refresh)
    return rows, notes


def evaluate_gate(
    gate: int,
    observed: Observations,
    *,
    stage: Stage,
    window: timedelta,
    source: str = "",
    baseline: Baseline | None = None,
    rollbacks: Sequence[RollbackEvent] | None = None,
) -> GateReport:
    """Judge ``observed`` against gate ``gate`` (1, 2 or 3), for the flag at ``stage``.

    Every gate refuses evidence that starts before ``stage`` began or covers less than
    ``window``; a criterion the source cannot show is "not checked", and not passed. Gates
    2 and 3 need ``baseline`` (a missing one fails its criterion); gate 3 needs the
    ``rollbacks`` in the window.
    """
    if gate not in GATES:
        raise InvalidInputError(f"gate: must be 1, 2 or 3, not {gate!r}")
    strict = gate >= 2
    results, notes = _evidence(observed, stage, window, source or "the source")
    results += [
        _upper(observed, "injection_p95_ms", "injection latency p95", 200, "ms"),
        _share(observed, "cache_hit_rate", "cache hit rate", 0.70 if strict else 0.60, True),
        _share(observed, "error_rate", "error rate", 0.001 if strict else 0.005, False),
        _upper(observed, "heap_mb", "heap", 500, "MB"),
    ]
    alerts = observed.critical_alerts
    results.append(
        _figure(
            observed, "critical_alerts",
            "no critical alert firing" + (" in the window" if gate == 3 else ""), "none",
            alerts == (), "no data" if alerts is None else (", ".join(alerts) or "none"),
        )
    )
    if strict:
        if baseline is None:
            results.append(
                CriterionResult(
                    "database p95 vs baseline", "no baseline",
                    "record one: memctl gates --record-baseline", False,
                )
            )
        else:
            limit = baseline.db_p95_ms * (1 + BASELINE_TOLERANCE)
            value = observed.db_p95_ms
            results.append(
                _figure(
                    observed, "db_p95_ms", "database p95 vs baseline",
                    f"<= {limit:.2f} ms (baseline {baseline.db_p95_ms:.2f} ms "
                    f"+ {BASELINE_TOLERANCE:.0%})",
                    value is not None and value <= limit,
                    "no data" if value is None else f"{value:.2f} ms",
                )
            )
    if gate == 3:
        events = list(rollbacks or ())
        results.append(
            CriterionResult(
                "no rollback event in the window", "none",
                "; ".join(f"{e.at:%Y-%m-%d %H:%M} {e.action} {e.flag} {e.detail} by {e.actor}"
                          for e in events) or "none",
                rollbacks is not None and not events,
            )
        )
    return GateReport(
        gate, source, window.total_seconds(), observed.coverage, observed.covered_seconds,
        tuple(results), tuple(notes),
    )


def gate_for_raise(current: int, wanted: int) -> int | None:
    """The gate that must pass to move a rollout from ``current`` to ``wanted`` percent.

    None: no gate (lowering, or entering the first stage). Raises InvalidInputError when
    ``wanted`` skips a stage: from below 10 % the next stage is 10 %, from 10 % it is 50 %.
    """
    if wanted <= current or wanted <= ROLLOUT_STAGES[0]:
        return None
    stages = zip(ROLLOUT_STAGES, ROLLOUT_STAGES[1:], strict=False)
    for gate, (stage, following) in enumerate(stages, start=1):
        if current < stage:
            break
        if current < following:
            if wanted > following:
                raise InvalidInputError(
                    f"rollout: {current}% -> {wanted}% skips a stage; the next stage is "
                    f"{following}% ({' -> '.join(map(str, ROLLOUT_STAGES))})"
                )
            return gate
    raise InvalidInputError(
        f"rollout: {current}% -> {wanted}% skips a stage; the next stage is "
        f"{ROLLOUT_STAGES[0]}% ({' -> '.join(map(str, ROLLOUT_STAGES))})"
    )


# -- the verbs: memctl gates and its --record-baseline ----------------------------------------


class RefusedError(InvalidInputError):
    """A rule of the rollout refused the operation as asked; the message says what to give
    instead (``memctl`` shows it as a usage error, exit status 2). ``report`` is the gate
    evaluated to decide, when one was."""

    def __init__(self, message: str, report: GateReport | None = None) -> None:
        super().__init__(message)
        self.report = report


@dataclass(frozen=True)
class GateOptions:
    """Where a gate's numbers come from: exactly one of ``prometheus_url`` (with optional
    ``matchers``, ``LABEL=VALUE``) and ``snapshot_path``; the ``window`` judged (``30s``,
    ``15m``, ``1h``, ``2d``); and the baseline file (default: :func:`baseline_path`)."""

    prometheus_url: str | None = None
    snapshot_path: Path | None = None
    window: str = "1h"
    matchers: tuple[str, ...] = ()
    baseline_file: Path | None = None

    @property
    def given(self) -> bool:
        """True when a source is named (else a gate cannot be evaluated)."""
        return self.prometheus_url is not None or self.snapshot_path is not None


@dataclass(frozen=True)
class RecordedBaseline:
    """A baseline written by :func:`record_gate_baseline`, and the file it is in."""

    baseline: Baseline
    path: Path


def metrics_source(options: GateOptions) -> MetricsSource:
    """The source ``options`` name; :class:`RefusedError` unless exactly one is named and the
    matchers are ``LABEL=VALUE`` for a Prometheus source."""
    if (options.prometheus_url is None) == (options.snapshot_path is None):
        raise RefusedError("give exactly one of --prometheus URL and --snapshot FILE")
    if options.snapshot_path is not None:
        if options.matchers:
            raise RefusedError("--match applies to --prometheus only")
        return SnapshotSource(options.snapshot_path)
    labels = {}
    for matcher in options.matchers:
        label, equals, value = matcher.partition("=")
        if not equals or not label.isidentifier() or not value:
            raise RefusedError(f"--match {matcher!r}: expected LABEL=VALUE, e.g. job=memory")
        labels[label] = value
    assert options.prometheus_url is not None  # one of the two is given, checked above
    return PrometheusSource(options.prometheus_url, labels)


def check_gate(database: EngineOrUrl, gate: int, options: GateOptions, *, flag: str) -> GateReport:
    """Measure and judge ``gate`` for ``flag`` from the source ``options`` name (``memctl
    gates --gate N --flag NAME``).

    Reads the flag audit of ``database`` for when ``flag``'s current stage began (evidence
    from before it is refused) and, for gate 3, for rollback events in the window.
    """
    window = parse_window(options.window)
    source = metrics_source(options)
    with engine_for(database) as engine:
        stage = current_stage(engine, flag)
        observed = source.observe(window, worst=gate == 3)
        rollbacks = (
            rollback_events(engine, datetime.now(UTC) - window) if gate == 3 else None
        )
    return evaluate_gate(
        gate, observed, stage=stage, window=window, source=source.description,
        baseline=read_baseline(options.baseline_file), rollbacks=rollbacks,
    )


def record_gate_baseline(options: GateOptions) -> RecordedBaseline:
    """Record the database p95 from the source ``options`` name as the gates' baseline
    (``memctl gates --record-baseline``), before the rollout starts."""
    baseline = record_baseline(
        metrics_source(options), parse_window(options.window), options.baseline_file
    )
    return RecordedBaseline(baseline, baseline_path(options.baseline_file))
