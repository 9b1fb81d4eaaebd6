"""The public operator API: ``memory.ops.__all__`` is this list, sorted; every name imports;
every public function and class says what it does; every ``memory.ops`` module declares its
own sorted ``__all__``; and every operator name ``memory`` exported before the agent API was
split from it is here."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

import memory.ops

EXPECTED_PUBLIC_NAMES = [
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

# The operator names that ``memory.__all__`` exported when agent and operator API were one list
# (issue 13); they must keep working from ``memory.ops``.
FORMER_MEMORY_NAMES = [
    "BackupInfo", "RestoreResult", "backup", "restore_backup", "verify_backup",
    "TableChecksum", "restore_archive", "table_checksums", "verify_archive", "create_engine",
    "resolve_database_url", "DATABASE_URL_ENV", "UPDATES_URL_ENV", "DatabaseFlagProvider",
    "FlagAuditEntry", "StoredFlag", "GateReport", "PrometheusSource", "SnapshotSource",
    "evaluate_gate", "HealthCheckResult", "HealthContext", "HealthReport", "health_checks",
    "register_health_check", "run_health_checks", "unregister_health_check", "RevisionInfo",
    "downgrade", "head_revision", "history", "upgrade", "CleanupReport", "MaintenanceRun",
    "RetentionPolicy", "RetentionWorker", "cleanup", "last_cleanup_run", "extractive_summary",
    "LatencySummary", "MetricsSnapshot", "PrometheusEndpoint", "SnapshotWindow",
    "observe_flags", "read_snapshot", "start_otlp_exporter", "start_prometheus_endpoint",
    "stop_exporter", "write_snapshot",
]  # fmt: skip

OPS_MODULES = sorted(
    info.name for info in pkgutil.iter_modules(memory.ops.__path__, "memory.ops.")
)


def test_the_public_names_are_exactly_these_and_sorted() -> None:
    assert memory.ops.__all__ == EXPECTED_PUBLIC_NAMES
    assert memory.ops.__all__ == sorted(memory.ops.__all__)


def test_every_public_name_imports() -> None:
    missing = [name for name in memory.ops.__all__ if not hasattr(memory.ops, name)]
    assert missing == []
    namespace: dict[str, object] = {}
    exec("from memory.ops import *", namespace)  # the star import users write
    assert set(EXPECTED_PUBLIC_NAMES) <= set(namespace)


def test_every_public_function_and_class_has_a_docstring() -> None:
    undocumented = [
        name
        for name in memory.ops.__all__
        if (inspect.isfunction(obj := getattr(memory.ops, name)) or inspect.isclass(obj))
        and not (obj.__doc__ or "").strip()
    ]
    assert undocumented == []


def test_the_former_operator_names_of_memory_are_here() -> None:
    assert sorted(set(FORMER_MEMORY_NAMES) - set(memory.ops.__all__)) == []


@pytest.mark.parametrize("name", OPS_MODULES)
def test_every_ops_module_declares_a_sorted_all_of_names_it_has(name: str) -> None:
    module = importlib.import_module(name)
    assert (module.__doc__ or "").strip(), f"{name} has no module docstring"
    declared = module.__all__
    assert declared == sorted(declared)
    assert [n for n in declared if not hasattr(module, n)] == []


def test_the_package_re_exports_every_verb_of_its_modules() -> None:
    # memory.ops.sync is the sync package's access to the store (memory.sync may not import
    # memory.store); its functions are called through the module, not re-exported.
    verbs = {
        name
        for module_name in OPS_MODULES
        if module_name != "memory.ops.sync"
        for name in importlib.import_module(module_name).__all__
        if inspect.isfunction(getattr(importlib.import_module(module_name), name))
    }
    # Lower-level helpers of the gates module stay there (memory.ops.gates.parse_window, ...).
    helpers = {"baseline_path", "gate_for_raise", "metrics_source", "parse_window",
               "read_baseline", "record_baseline", "rollback_events", "current_stage"}  # fmt: skip
    assert sorted(verbs - helpers - set(memory.ops.__all__)) == []
