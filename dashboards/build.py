"""Build the Grafana dashboards from code (grafana-foundation-sdk).

    python dashboards/build.py            # write dashboards/<name>.json
    python dashboards/build.py --check    # exit 1 if a committed file differs from the code

The committed JSON is this script's output; tests/test_dashboards.py regenerates it and fails
on any difference, so edit the code here, never the JSON. Every PromQL expression uses the
series named in ``memory/telemetry/instruments.py``; the same test scrapes a running ``memctl
workload`` and fails if any series a panel uses is missing.

Every dashboard has two variables: ``datasource`` (a Prometheus data source) and ``job``
(the scrape jobs that serve the library's metrics), so one Grafana can show several
deployments.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from grafana_foundation_sdk.builders import dashboard, prometheus, stat, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import (
    DataSourceRef,
    Threshold,
    ThresholdsMode,
    ValueMap,
    ValueMappingResult,
    VariableRefresh,
)

HERE = Path(__file__).resolve().parent
DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")
RATE = "$__rate_interval"

# -- PromQL ---------------------------------------------------------------------------------


def series(name: str, matchers: str = "") -> str:
    """A selector of ``name`` restricted to the chosen jobs, plus ``matchers``."""
    extra = f", {matchers}" if matchers else ""
    return f'{name}{{job=~"$job"{extra}}}'


def per_second(name: str, by: str = "", matchers: str = "") -> str:
    grouping = f" by ({by})" if by else ""
    return f"sum{grouping} (rate({series(name, matchers)}[{RATE}]))"


def quantile(q: float, histogram: str, by: str = "") -> str:
    """The q-quantile of a ``*_milliseconds`` histogram over the rate interval."""
    groups = ", ".join(["le", *([by] if by else [])])
    return (
        f"histogram_quantile({q}, sum by ({groups}) "
        f"(rate({series(histogram + '_bucket')}[{RATE}])))"
    )


def ratio(part: str, whole: str) -> str:
    return f"{part} / {whole}"


CACHE_HIT_RATE = ratio(
    per_second("memory_cache_hits_total"),
    f"({per_second('memory_cache_hits_total')} + {per_second('memory_cache_misses_total')})",
)
ERROR_RATE = ratio(per_second("memory_errors_total"), per_second("memory_operations_total"))
SERVICE_ERROR_RATE = ratio(
    per_second("memory_service_requests_total", matchers='status=~"5.."'),
    per_second("memory_service_requests_total"),
)
LATENCIES = (
    ("Injection latency", "memory_injection_latency_milliseconds"),
    ("Database statement duration", "memory_db_query_duration_milliseconds"),
    ("Search (RAG) duration", "memory_rag_search_duration_milliseconds"),
)

# -- building blocks ------------------------------------------------------------------------


def query(expr: str, legend: str = "", ref: str = "A") -> prometheus.Dataquery:
    built = prometheus.Dataquery().expr(expr).ref_id(ref).datasource(DATASOURCE)
    return built.legend_format(legend) if legend else built


def thresholds(*steps: tuple[float | None, str]) -> dashboard.ThresholdsConfig:
    return (
        dashboard.ThresholdsConfig()
        .mode(ThresholdsMode.ABSOLUTE)
        .steps([Threshold(value, color) for value, color in steps])
    )


Panel = timeseries.Panel | stat.Panel


def graph(
    title: str, description: str, targets: Sequence[prometheus.Dataquery], unit: str, *,
    width: int = 12, limits: dashboard.ThresholdsConfig | None = None,
) -> timeseries.Panel:
    panel = (
        timeseries.Panel().title(title).description(description).datasource(DATASOURCE)
        .unit(unit).height(8).span(width).targets(list(targets))
    )
    return panel.thresholds(limits) if limits is not None else panel


def single(
    title: str, description: str, expr: str, unit: str, *, legend: str = "",
    width: int = 6, limits: dashboard.ThresholdsConfig | None = None,
    mappings: dict[str, tuple[str, str]] | None = None,
) -> stat.Panel:
    panel = (
        stat.Panel().title(title).description(description).datasource(DATASOURCE)
        .unit(unit).height(5).span(width).with_target(query(expr, legend))
    )
    if limits is not None:
        panel = panel.thresholds(limits)
    if mappings:
        panel = panel.mappings([
            ValueMap({value: ValueMappingResult(text=text, color=color)
                      for value, (text, color) in mappings.items()})
        ])
    return panel


def board(uid: str, title: str, description: str, rows: Sequence[tuple[str, Sequence[Panel]]],
          annotations: Sequence[dashboard.AnnotationQuery] = ()) -> dashboard.Dashboard:
    built = (
        dashboard.Dashboard(title).uid(uid).description(description)
        .tags(["tiered-memory"]).time("now-6h", "now").refresh("1m").timezone("utc")
        .with_variable(
            dashboard.DatasourceVariable("datasource").label("Data source").type("prometheus")
        )
        .with_variable(
            dashboard.QueryVariable("job").label("Job").datasource(DATASOURCE)
            .query("label_values(memory_operations_total, job)")
            .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
            .multi(True).include_all(True)
        )
    )
    for annotation in annotations:
        built = built.annotation(annotation)
    # Explicit ids: Grafana links, shares and embeds panels by id.
    ids = itertools.count(1)
    for title_, panels in rows:
        built = built.with_row(dashboard.Row(title_).id(next(ids)))
        for panel in panels:
            built = built.with_panel(panel.id(next(ids)))
    return built


def annotation(name: str, expr: str, color: str) -> dashboard.AnnotationQuery:
    return (
        dashboard.AnnotationQuery().name(name).datasource(DATASOURCE).enable(True)
        .icon_color(color).expr(expr)
    )


SERVICE_LATENCY_LIMITS = thresholds((None, "green"), (0.015, "yellow"), (0.02, "red"))
BREAKER_STATES = {"0": ("CLOSED", "green"), "1": ("HALF-OPEN", "yellow"), "2": ("OPEN", "red")}
PERCENT_LIMITS = thresholds((None, "green"), (0.001, "yellow"), (0.005, "red"))
HIT_RATE_LIMITS = thresholds((None, "red"), (0.6, "yellow"), (0.7, "green"))
INJECTION_LIMITS = thresholds((None, "green"), (150, "yellow"), (200, "red"))

# -- the dashboards -------------------------------------------------------------------------


def production() -> dashboard.Dashboard:
    flags = (
        single("Flag state", "Each flag: on (default on, or rolled out to anyone) or off.",
               f"max by (flag) ({series('memory_flag_state')})", "none", legend="{{flag}}",
               width=12, mappings={"0": ("OFF", "red"), "1": ("ON", "green")}),
        graph("Rollout percentage", "Share of sessions that get each flag; the stages are "
              "10 → 50 → 100 %, each held by its gate (memctl gates).",
              [query(f"max by (flag) ({series('memory_flag_rollout_percentage')})", "{{flag}}")],
              "percent"),
    )
    latency = (
        graph("Injection latency", "p50 and p95 of building an injected context. "
              "Gates 1 and 2 need p95 < 200 ms.",
              [query(quantile(0.5, "memory_injection_latency_milliseconds"), "p50", "A"),
               query(quantile(0.95, "memory_injection_latency_milliseconds"), "p95", "B")],
              "ms", limits=INJECTION_LIMITS),
        single("Injection p95", "Over the rate interval; gate threshold 200 ms.",
               quantile(0.95, "memory_injection_latency_milliseconds"), "ms",
               limits=INJECTION_LIMITS),
        single("Cache hit rate", "Lookups answered from a cache. Gate 1 > 60 %, gate 2 > 70 %.",
               CACHE_HIT_RATE, "percentunit", limits=HIT_RATE_LIMITS),
    )
    errors = (
        graph("Cache hit rate", "Hits / (hits + misses), per cache.",
              [query(ratio(per_second("memory_cache_hits_total", "cache"),
                           f"({per_second('memory_cache_hits_total', 'cache')} + "
                           f"{per_second('memory_cache_misses_total', 'cache')})"),
                     "{{cache}}")],
              "percentunit", limits=HIT_RATE_LIMITS),
        graph("Error rate", "Operations failed by a system fault / operations. "
              "Gate 1 < 0.5 %, gate 2 < 0.1 %.",
              [query(ERROR_RATE, "error rate")], "percentunit", limits=PERCENT_LIMITS),
    )
    return board(
        "tiered-memory-production", "tiered-memory: production rollout",
        "What decides the next rollout stage: flags, injection latency, cache hit rate, "
        "errors. Annotations mark flag changes and process (re)starts.",
        [("Flags", flags), ("Injection", latency), ("Cache and errors", errors)],
        annotations=[
            annotation("Flag changes",
                       f"changes({series('memory_flag_rollout_percentage')}[2m]) > 0 "
                       f"or changes({series('memory_flag_state')}[2m]) > 0",
                       "orange"),
            # A process' counters start at zero: a reset is a deployment or a restart.
            annotation("Deployments and restarts",
                       f"resets({series('memory_operations_total')}[2m]) > 0",
                       "blue"),
        ],
    )


def health() -> dashboard.Dashboard:
    database = (
        graph("Statements per second", "Every SQL statement, by verb.",
              [query(per_second("memory_db_query_duration_milliseconds_count", "operation"),
                     "{{operation}}")], "ops"),
        graph("Statement p95", "The rollout checklist asks for < 50 ms.",
              [query(quantile(0.95, "memory_db_query_duration_milliseconds", "operation"),
                     "{{operation}}")], "ms",
              limits=thresholds((None, "green"), (25, "yellow"), (50, "red"))),
        graph("Connection failures", "Failed attempts to connect; three in 5 minutes page.",
              [query(f"sum (increase({series('memory_db_connection_failures_total')}[5m]))",
                     "failures in 5 min")], "none", width=24,
              limits=thresholds((None, "green"), (1, "yellow"), (3, "red"))),
    )
    schema = (
        graph("Migration failures", "Schema migrations that failed (memctl migrate, or an "
              "application upgrading at start). Any one pages.",
              [query(f"sum (increase({series('memory_migration_failures_total')}[15m]))",
                     "failures in 15 min")], "none",
              limits=thresholds((None, "green"), (1, "red"))),
        graph("Integrity failures", "Checksum or hash mismatches found (archives, backups, "
              "the event chain). Any one pages.",
              [query(f"sum by (check) (increase({series('memory_integrity_failures_total')}"
                     f"[15m]))", "{{check}}")], "none",
              limits=thresholds((None, "green"), (1, "red"))),
        single("Schema revision", "The schema revision the agents' stores were opened at "
               "(the lowest, when they differ: the process furthest behind a migration).",
               f"min ({series('memory_schema_revision')})", "none", width=12),
        # The backup job writes this series through node_exporter, under its own job.
        single("Last good backup age", "Since the last verified scheduled backup (memctl "
               "backup --metrics-file); over the 1 h RPO for 5 minutes alerts.",
               "time() - max (memory_backup_last_success_timestamp_seconds)", "s", width=12,
               limits=thresholds((None, "green"), (3000, "yellow"), (3600, "red"))),
    )
    embedder = (
        graph("Work done without the embedder", "Searches answered by keywords only and "
              "writes stored without a vector, because the embedder failed.",
              [query(per_second("memory_rag_degraded_searches_total", "operation"),
                     "{{operation}}")], "ops"),
        graph("Search failures", "Searches failed by a system fault / searches; over 50 % "
              "for 2 minutes pages (retrieval unavailable).",
              [query(ratio(per_second("memory_errors_total", matchers='operation="search"'),
                           per_second("memory_operations_total",
                                      matchers='operation="search"')), "search errors")],
              "percentunit", limits=thresholds((None, "green"), (0.05, "yellow"), (0.5, "red"))),
    )
    cleanup_and_flags = (
        graph("Cleanup runs", "Retention cleanup runs by outcome (ok, failed, interrupted).",
              [query(f"sum by (status) (increase({series('memory_cleanup_runs_total')}[1h]))",
                     "{{status}}")], "none"),
        graph("Flags the provider serves", "Flags known to the flag provider, by state. A "
              "flag that vanishes, or all flags off at once, means the provider fell back "
              "to defaults.",
              [query(f"count by (flag) ({series('memory_flag_state')} == 1)", "{{flag}} on",
                     "A"),
               query(f"count by (flag) ({series('memory_flag_state')} == 0)", "{{flag}} off",
                     "B")], "none"),
    )
    swarm = (
        graph("Swarm tasks", "Tasks entering each status per second (memory.swarm).",
              [query(per_second("memory_swarm_tasks_total", "status"), "{{status}}")], "ops",
              width=8),
        graph("Claims and lease expiries", "Claims won, and claims of a task whose worker's "
              "lease expired; over 5 % for 10 minutes warns (MemorySwarmLeaseExpiriesHigh).",
              [query(per_second("memory_swarm_claims_total"), "claims", "A"),
               query(per_second("memory_swarm_lease_expiries_total"), "lease expiries", "B")],
              "ops", width=8),
        graph("Findings, conflicts, escalations", "Findings posted, conflicting pairs "
              "found, escalations to a human by cause (MemorySwarmEscalationsPiling).",
              [query(per_second("memory_swarm_findings_total"), "findings", "A"),
               query(per_second("memory_swarm_conflicts_total"), "conflicts", "B"),
               query(per_second("memory_swarm_escalations_total", "cause"),
                     "escalations {{cause}}", "C")], "ops", width=8),
        graph("Signature failures", "Envelopes whose custody chain did not verify, refused "
              "or only warned about; any one warns (MemorySwarmSignatureFailures).",
              [query(f"sum by (outcome) (increase("
                     f"{series('memory_swarm_signature_failures_total')}[10m]))",
                     "{{outcome}} in 10 min")], "none", width=24,
              limits=thresholds((None, "green"), (1, "red"))),
    )
    hub = (
        single("Circuit breakers", "Each breaker of each hub replica (memctl serve): the "
               "embedder, the updates bus (redis or postgresql), Unleash. Open for 5 minutes "
               "warns (MemoryServiceBreakerOpen).",
               f"max by (instance, breaker) ({series('memory_service_breaker_state')})",
               "none", legend="{{instance}} {{breaker}}", width=8, mappings=BREAKER_STATES),
        graph("Hub errors", "Answers that are the service's faults (5xx) / answers; over "
              "0.1 % for 5 minutes warns (MemoryServiceErrorsHigh).",
              [query(SERVICE_ERROR_RATE, "5xx")], "percentunit", width=8,
              limits=PERCENT_LIMITS),
        graph("Hub refusals", "Requests refused for their API key (401/403, by reason) or "
              "because their operation class's bulkhead was full (503, Retry-After).",
              [query(per_second("memory_service_auth_failures_total", "status, reason"),
                     "{{status}} {{reason}}", "A"),
               query(per_second("memory_service_rejected_total", "operation_class"),
                     "busy {{operation_class}}", "B")], "ops", width=8),
    )
    sync = (
        graph("Sync batches applied", "Batches applied per second by tier, on the hub and "
              "the spokes (memory.sync; memshadow_sync_frequency).",
              [query(per_second("memshadow_sync_frequency_total", "tier"), "{{tier}}")], "ops",
              width=8),
        graph("Sync latency", "p99 from a batch's creation at its source to its application, "
              "by tier; the targets are 50 ms for CRITICAL (peer to peer) and 500 ms relayed.",
              [query(quantile(0.99, "memshadow_sync_latency_ms", "tier"), "p99 {{tier}}")],
              "ms", width=8, limits=thresholds((None, "green"), (50, "yellow"), (500, "red"))),
        graph("Items per batch", "Median items per applied batch, by tier: the cold tiers "
              "travel batched.",
              [query(quantile(0.5, "memshadow_batch_size", "tier"), "p50 {{tier}}")], "none",
              width=8),
        graph("Conflicts by resolution", "Concurrent updates resolved per second: the later "
              "hybrid logical clock, the node id on a tie, or a tombstone.",
              [query(per_second("memshadow_conflicts_total", "resolution"), "{{resolution}}")],
              "ops", width=8),
        graph("Peer-to-peer share and backlog", "The share of deliveries that went peer to "
              "peer, and batches waiting in outboxes and the hub's LOW queues.",
              [query(f"avg ({series('memshadow_p2p_ratio')})", "peer-to-peer share", "A"),
               query(f"sum ({series('memshadow_sync_backlog')})", "backlog", "B")], "none",
              width=8),
        graph("Refused frames", "MEMSHADOW frames refused, by reason (bad magic, version or "
              "checksum, truncated, oversized, replayed, unauthorized...).",
              [query(f"sum by (reason) (increase("
                     f"{series('memshadow_frames_rejected_total')}[10m]))",
                     "{{reason}} in 10 min")], "none", width=8,
              limits=thresholds((None, "green"), (1, "red"))),
    )
    return board(
        "tiered-memory-health", "tiered-memory: health",
        "Database, schema, embedder, cleanup job, flag provider, swarm bus, the hub service "
        "and hub-spoke sync; each panel names the alert it feeds (runbooks/monitoring.md).",
        [("Database", database), ("Schema and integrity", schema), ("Embedder", embedder),
         ("Cleanup job and flag provider", cleanup_and_flags), ("Swarm bus", swarm),
         ("Hub service", hub), ("Hub-spoke sync", sync)],
    )


def performance() -> dashboard.Dashboard:
    latencies = [
        graph(title, "p50, p95 and p99 over the rate interval.",
              [query(quantile(q, histogram), f"p{int(q * 100)}", ref)
               for q, ref in ((0.5, "A"), (0.95, "B"), (0.99, "C"))], "ms", width=8)
        for title, histogram in LATENCIES
    ]
    throughput = (
        graph("Operations per second", "Public operations, by operation.",
              [query(per_second("memory_operations_total", "operation"), "{{operation}}")],
              "ops"),
        graph("Errors per second", "Operations failed by a system fault, by operation.",
              [query(per_second("memory_errors_total", "operation"), "{{operation}}")], "ops"),
        graph("Overflows, compactions, resumptions", "Injections over budget; memories "
              "consolidated or promoted; session resumptions asked for and found.",
              [query(per_second("memory_overflow_events_total"), "overflows", "A"),
               query(per_second("memory_compaction_events_total", "tier"),
                     "compaction {{tier}}", "B"),
               query(per_second("memory_resumption_attempts_total"), "resumptions", "C"),
               query(per_second("memory_resumption_successes_total"), "resumed", "D")],
              "ops"),
        graph("Cross-agent sharing failures", "The checklist allows none.",
              [query(per_second("memory_cross_agent_failures_total", "operation"),
                     "{{operation}}")], "ops"),
    )
    memory = (
        graph("Resident memory", "Per process. Gate 1 needs < 500 MB; over 1 GB pages.",
              [query(f"max by (instance) ({series('memory_heap_used_mb')})", "{{instance}}")],
              "decmbytes", width=24,
              limits=thresholds((None, "green"), (500, "yellow"), (1024, "red"))),
    )
    hub = (
        graph("Hub requests per second", "Answers of the hub service (memctl serve), by "
              "status.",
              [query(per_second("memory_service_requests_total", "status"), "{{status}}")],
              "reqps", width=8),
        graph("Hub latency", "From request to response, every operation: p50, p95 and p99. "
              "The checklist asks for p95 <= 20 ms (MemoryServiceLatencyHigh).",
              [query(quantile(q, "memory_service_request_seconds"), f"p{int(q * 100)}", ref)
               for q, ref in ((0.5, "A"), (0.95, "B"), (0.99, "C"))], "s", width=8,
              limits=SERVICE_LATENCY_LIMITS),
        graph("Hub p95 by operation", "Searches and injections cost more than reads and "
              "writes.",
              [query(quantile(0.95, "memory_service_request_seconds", "operation"),
                     "{{operation}}")], "s", width=8, limits=SERVICE_LATENCY_LIMITS),
    )
    return board(
        "tiered-memory-performance", "tiered-memory: performance",
        "Latency percentiles of injection, statements and search; throughput, errors, "
        "memory; the hub service's requests and latency.",
        [("Latency", latencies), ("Throughput and errors", throughput), ("Memory", memory),
         ("Hub service", hub)],
    )


DASHBOARDS: dict[str, Callable[[], dashboard.Dashboard]] = {
    "production": production,
    "health": health,
    "performance": performance,
}


def render(build: Callable[[], dashboard.Dashboard]) -> str:
    """The dashboard as the JSON text that is committed (sorted keys, two-space indent)."""
    document: Any = json.loads(json.dumps(build().build(), cls=JSONEncoder))
    return json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--check", action="store_true",
                        help="compare with the committed files instead of writing them")
    arguments = parser.parse_args(argv)
    stale = []
    for name, build in DASHBOARDS.items():
        path = HERE / f"{name}.json"
        text = render(build)
        if arguments.check:
            if not path.exists() or path.read_text("utf-8") != text:
                stale.append(path.name)
        else:
            path.write_text(text, "utf-8")
    if stale:
        print(f"out of date (run python dashboards/build.py): {', '.join(stale)}",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
