"""The operator API: what ``memctl`` runs, as functions that return typed results.

Schema migrations, backups and archives, rollout flags and gates, health checks, retention,
and the metrics exporters and snapshots. Agents use :mod:`memory`.
"""

from memory.core.summary import extractive_summary
from memory.ops.gates import GateReport, PrometheusSource, SnapshotSource, evaluate_gate
from memory.ops.health import (
    HealthCheckResult,
    HealthContext,
    HealthReport,
    health_checks,
    register_health_check,
    run_health_checks,
    unregister_health_check,
)
from memory.ops.retention import (
    CleanupReport,
    MaintenanceRun,
    RetentionPolicy,
    RetentionWorker,
    cleanup,
    last_cleanup_run,
)
from memory.store.archive import TableChecksum, restore_archive, table_checksums, verify_archive
from memory.store.backup import BackupInfo, RestoreResult, backup, restore_backup, verify_backup
from memory.store.engine import DATABASE_URL_ENV, create_engine, resolve_database_url
from memory.store.flags import DatabaseFlagProvider, FlagAuditEntry, StoredFlag
from memory.store.schema import RevisionInfo, downgrade, head_revision, history, upgrade
from memory.telemetry.export import (
    PrometheusEndpoint,
    start_otlp_exporter,
    start_prometheus_endpoint,
    stop_exporter,
)
from memory.telemetry.instruments import observe_flags
from memory.telemetry.snapshots import (
    LatencySummary,
    MetricsSnapshot,
    SnapshotWindow,
    read_snapshot,
    write_snapshot,
)
from memory.updates import UPDATES_URL_ENV

__all__ = [
    "BackupInfo",
    "CleanupReport",
    "DATABASE_URL_ENV",
    "DatabaseFlagProvider",
    "FlagAuditEntry",
    "GateReport",
    "HealthCheckResult",
    "HealthContext",
    "HealthReport",
    "LatencySummary",
    "MaintenanceRun",
    "MetricsSnapshot",
    "PrometheusEndpoint",
    "PrometheusSource",
    "RestoreResult",
    "RetentionPolicy",
    "RetentionWorker",
    "RevisionInfo",
    "SnapshotSource",
    "SnapshotWindow",
    "StoredFlag",
    "TableChecksum",
    "UPDATES_URL_ENV",
    "backup",
    "cleanup",
    "create_engine",
    "downgrade",
    "evaluate_gate",
    "extractive_summary",
    "head_revision",
    "health_checks",
    "history",
    "last_cleanup_run",
    "observe_flags",
    "read_snapshot",
    "register_health_check",
    "resolve_database_url",
    "restore_archive",
    "restore_backup",
    "run_health_checks",
    "start_otlp_exporter",
    "start_prometheus_endpoint",
    "stop_exporter",
    "table_checksums",
    "unregister_health_check",
    "upgrade",
    "verify_archive",
    "verify_backup",
    "write_snapshot",
]
