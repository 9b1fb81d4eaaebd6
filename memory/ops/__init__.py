"""The operator API: one public function per ``memctl`` verb, each returning a typed result.

In the style of Alembic's ``command.py``: every verb takes plain arguments (a database URL
or engine, or a :class:`memory.Memory`), enforces the rules ``memctl`` enforces, returns a
record and never prints. ``memctl`` (``memory.cli``) is a thin client of this module.

==========================  =========================================================
``memctl`` command          function
==========================  =========================================================
migrate, rollback           :func:`migrate`, :func:`rollback`
current, history, check     :func:`current`, :func:`current`, :func:`check`
backup (--verify), restore  :func:`backup`, :func:`verify_backup`, :func:`restore_backup`
backup --keep/--max-age     :func:`scheduled_backup` (:func:`latest_backup` for health)
restore-archive             :func:`restore_archive`
cleanup                     :func:`cleanup`
forget, team                :func:`forget`, :func:`set_team`
share, revoke, grants       :func:`share`, :func:`revoke`, :func:`grants`
flags list, set, override   :func:`list_flags`, :func:`set_flag`, :func:`override_flag`
flags allow, deny           :func:`allow_agent`, :func:`deny_agent`
flags audit, reset, explain :func:`audit_flags`, :func:`reset_flags`, :func:`explain_flag`
gates (--record-baseline)   :func:`check_gate`, :func:`record_gate_baseline`
health                      :func:`run_health_checks`
workload                    :func:`drive_workload`
keys create, revoke, list   :func:`create_key`, :func:`revoke_key`, :func:`list_keys`
replay, restore --replay-…  :func:`replay`, :func:`restore_and_replay`
events rotate-key           :func:`rotate_event_key`
==========================  =========================================================

The agent-facing commands (``add``, ``search``, ``inject``, ``reembed``, ``record``,
``audit verify``, ``import-mcp``, ``export-mcp``) call :class:`memory.Memory` and
:class:`memory.Scope` directly: they are the agent API, used from the shell.
"""

from memory.core.summary import extractive_summary
from memory.ops.backup import (
    BACKUP_DIR_ENV,
    BACKUP_METHODS,
    BACKUP_RPO,
    BackupInfo,
    BackupMethod,
    RestoreResult,
    ScheduledBackup,
    TableChecksum,
    backup,
    latest_backup,
    restore_archive,
    restore_backup,
    scheduled_backup,
    table_checksums,
    verify_archive,
    verify_backup,
)
from memory.ops.event_keys import NEW_EVENT_KEY_ENV, KeyRotation, rotate_event_key
from memory.ops.flags import (
    DatabaseFlagProvider,
    FlagAuditEntry,
    FlagChange,
    FlagListing,
    ListedFlag,
    StoredFlag,
    allow_agent,
    audit_flags,
    deny_agent,
    explain_flag,
    list_flags,
    override_flag,
    reset_flags,
    set_flag,
)
from memory.ops.gates import (
    BASELINE_ENV,
    DEFAULT_BASELINE_PATH,
    Baseline,
    CriterionResult,
    GateOptions,
    GateReport,
    MetricsSource,
    PrometheusSource,
    RecordedBaseline,
    RefusedError,
    SnapshotSource,
    check_gate,
    evaluate_gate,
    record_gate_baseline,
)
from memory.ops.health import (
    EmbedderChoice,
    HealthCheckResult,
    HealthContext,
    HealthReport,
    health_checks,
    register_health_check,
    run_health_checks,
    unregister_health_check,
)
from memory.ops.keys import (
    ApiKey,
    CreatedKey,
    apply_once,
    authenticate,
    create_key,
    list_keys,
    revoke_key,
)
from memory.ops.replay import (
    ReplayPoint,
    ReplayReport,
    parse_until,
    replay,
    restore_and_replay,
)
from memory.ops.retention import (
    DEFAULT_SESSION_STATE_WINDOW,
    DEFAULT_WORKING_WINDOW,
    CleanupReport,
    MaintenanceRun,
    RetentionPolicy,
    RetentionWorker,
    Summarizer,
    cleanup,
    last_cleanup_run,
)
from memory.ops.schema import (
    Migration,
    NotAtHeadError,
    RevisionInfo,
    Rollback,
    SchemaStatus,
    check,
    command_database,
    current,
    default_archive_directory,
    downgrade,
    head_revision,
    history,
    migrate,
    rollback,
    upgrade,
)
from memory.ops.sharing import forget, grants, revoke, set_team, share
from memory.ops.workload import (
    SnapshotWriter,
    Workload,
    WorkloadConfig,
    WorkloadReport,
    WorkloadRun,
    drive_workload,
    run_workload,
    workload_flags,
)
from memory.store.engine import (
    DATABASE_URL_ENV,
    DatabaseError,
    create_engine,
    resolve_database_url,
)
from memory.telemetry.export import (
    PrometheusEndpoint,
    export_to_registry,
    start_otlp_exporter,
    start_prometheus_endpoint,
    stop_exporter,
)
from memory.telemetry.instruments import (
    observe_breakers,
    observe_flags,
    stop_observing_breakers,
)
from memory.telemetry.snapshots import (
    LatencySummary,
    MetricsSnapshot,
    SnapshotWindow,
    read_snapshot,
    write_snapshot,
)
from memory.updates import UPDATES_URL_ENV

__all__ = [
    "ApiKey",
    "BACKUP_DIR_ENV",
    "BACKUP_METHODS",
    "BACKUP_RPO",
    "BASELINE_ENV",
    "BackupInfo",
    "BackupMethod",
    "Baseline",
    "CleanupReport",
    "CreatedKey",
    "CriterionResult",
    "DATABASE_URL_ENV",
    "DEFAULT_BASELINE_PATH",
    "DEFAULT_SESSION_STATE_WINDOW",
    "DEFAULT_WORKING_WINDOW",
    "DatabaseError",
    "DatabaseFlagProvider",
    "EmbedderChoice",
    "FlagAuditEntry",
    "FlagChange",
    "FlagListing",
    "GateOptions",
    "GateReport",
    "HealthCheckResult",
    "HealthContext",
    "HealthReport",
    "KeyRotation",
    "LatencySummary",
    "ListedFlag",
    "MaintenanceRun",
    "MetricsSnapshot",
    "MetricsSource",
    "Migration",
    "NEW_EVENT_KEY_ENV",
    "NotAtHeadError",
    "PrometheusEndpoint",
    "PrometheusSource",
    "RecordedBaseline",
    "RefusedError",
    "ReplayPoint",
    "ReplayReport",
    "RestoreResult",
    "RetentionPolicy",
    "RetentionWorker",
    "RevisionInfo",
    "Rollback",
    "ScheduledBackup",
    "SchemaStatus",
    "SnapshotSource",
    "SnapshotWindow",
    "SnapshotWriter",
    "StoredFlag",
    "Summarizer",
    "TableChecksum",
    "UPDATES_URL_ENV",
    "Workload",
    "WorkloadConfig",
    "WorkloadReport",
    "WorkloadRun",
    "allow_agent",
    "apply_once",
    "audit_flags",
    "authenticate",
    "backup",
    "check",
    "check_gate",
    "cleanup",
    "command_database",
    "create_engine",
    "create_key",
    "current",
    "default_archive_directory",
    "deny_agent",
    "downgrade",
    "drive_workload",
    "evaluate_gate",
    "explain_flag",
    "export_to_registry",
    "extractive_summary",
    "forget",
    "grants",
    "head_revision",
    "health_checks",
    "history",
    "last_cleanup_run",
    "latest_backup",
    "list_flags",
    "list_keys",
    "migrate",
    "observe_breakers",
    "observe_flags",
    "override_flag",
    "parse_until",
    "read_snapshot",
    "record_gate_baseline",
    "register_health_check",
    "replay",
    "reset_flags",
    "resolve_database_url",
    "restore_and_replay",
    "restore_archive",
    "restore_backup",
    "revoke",
    "revoke_key",
    "rollback",
    "rotate_event_key",
    "run_health_checks",
    "run_workload",
    "scheduled_backup",
    "set_flag",
    "set_team",
    "share",
    "start_otlp_exporter",
    "start_prometheus_endpoint",
    "stop_exporter",
    "stop_observing_breakers",
    "table_checksums",
    "unregister_health_check",
    "upgrade",
    "verify_archive",
    "verify_backup",
    "workload_flags",
    "write_snapshot",
]
