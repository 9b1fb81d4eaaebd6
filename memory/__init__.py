"""tiered-memory: the memory layer that agent runtimes embed.

>>> from memory import Memory
>>> with Memory.open("sqlite:///:memory:") as memory:
...     scope = memory.scope(user="ada", agent="planner", session="s1")
...     scope.add("Ada prefers short answers", tier="semantic").tier
'semantic'
"""

from memory.client import Memory
from memory.core.errors import (
    ArchiveError,
    ConflictError,
    DatabaseUnavailableError,
    EmbedderUnavailableError,
    ExporterUnavailableError,
    InvalidInputError,
    MemoryStoreError,
    MetricsSourceError,
    NotFoundError,
    PermissionDeniedError,
    SchemaError,
    SessionExpiredError,
    StaleVersionError,
)
from memory.core.merge import ContextConflict, ContextWrite, MergedContext, merge_patches
from memory.core.redaction import Redaction
from memory.core.summary import extractive_summary
from memory.core.types import (
    AddedObservations,
    CodePattern,
    Entity,
    KnowledgeGraph,
    MemoryEvent,
    MemoryRecord,
    Preference,
    Relation,
    SearchHit,
    SessionCheckpoint,
)
from memory.inject import ContextItem, InjectedContext, ResumedSession
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
from memory.scope import Scope
from memory.search.embeddings import Embedder, HashingEmbedder, MiniLMEmbedder, TokenCounter
from memory.store.archive import TableChecksum, restore_archive, table_checksums, verify_archive
from memory.store.backup import BackupInfo, RestoreResult, backup, restore_backup, verify_backup
from memory.store.engine import DATABASE_URL_ENV, create_engine, resolve_database_url
from memory.store.events import ChainReport
from memory.store.flags import DatabaseFlagProvider, FlagAuditEntry, StoredFlag
from memory.store.forget import ForgetReport
from memory.store.graph import EntityGraph
from memory.store.retention import (
    CleanupReport,
    MaintenanceRun,
    RetentionPolicy,
    RetentionWorker,
    cleanup,
    last_cleanup_run,
)
from memory.store.schema import RevisionInfo, downgrade, head_revision, history, upgrade
from memory.store.sharing import Grant
from memory.telemetry.instruments import (
    LatencySummary,
    MetricsSnapshot,
    PrometheusEndpoint,
    SnapshotWindow,
    observe_flags,
    read_snapshot,
    start_otlp_exporter,
    start_prometheus_endpoint,
    stop_exporter,
    write_snapshot,
)
from memory.updates import UPDATES_URL_ENV, Subscription, UpdatesStatus

__all__ = [
    "AddedObservations",
    "ArchiveError",
    "BackupInfo",
    "ChainReport",
    "CleanupReport",
    "CodePattern",
    "ConflictError",
    "ContextConflict",
    "ContextItem",
    "ContextWrite",
    "DATABASE_URL_ENV",
    "DatabaseFlagProvider",
    "DatabaseUnavailableError",
    "Embedder",
    "EmbedderUnavailableError",
    "Entity",
    "EntityGraph",
    "ExporterUnavailableError",
    "FlagAuditEntry",
    "ForgetReport",
    "GateReport",
    "Grant",
    "HashingEmbedder",
    "HealthCheckResult",
    "HealthContext",
    "HealthReport",
    "InjectedContext",
    "InvalidInputError",
    "KnowledgeGraph",
    "LatencySummary",
    "MaintenanceRun",
    "Memory",
    "MemoryEvent",
    "MemoryRecord",
    "MemoryStoreError",
    "MergedContext",
    "MetricsSnapshot",
    "MetricsSourceError",
    "MiniLMEmbedder",
    "NotFoundError",
    "PermissionDeniedError",
    "Preference",
    "PrometheusEndpoint",
    "PrometheusSource",
    "Redaction",
    "Relation",
    "RestoreResult",
    "ResumedSession",
    "RetentionPolicy",
    "RetentionWorker",
    "RevisionInfo",
    "SchemaError",
    "Scope",
    "SearchHit",
    "SessionCheckpoint",
    "SessionExpiredError",
    "SnapshotSource",
    "SnapshotWindow",
    "StaleVersionError",
    "StoredFlag",
    "Subscription",
    "TableChecksum",
    "TokenCounter",
    "UPDATES_URL_ENV",
    "UpdatesStatus",
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
    "merge_patches",
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
