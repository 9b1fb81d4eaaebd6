"""tiered-memory: the memory layer that agent runtimes embed.

>>> from memory import Memory
>>> with Memory.open("sqlite:///:memory:") as memory:
...     scope = memory.scope(user="ada", agent="planner", session="s1")
...     scope.add("Ada prefers short answers", tier="semantic").tier
'semantic'

This package is the agent API: :class:`Memory`, the :class:`Scope` it hands out, the records
they return and the errors they raise. Operators (migrations, backups, flags, gates,
health, metrics exporters, retention) use :mod:`memory.ops`.
"""

from memory.aio import AsyncGraph, AsyncMemory, AsyncScope
from memory.client import Memory
from memory.core.errors import (
    ArchiveError,
    AuthenticationError,
    ConflictError,
    DatabaseUnavailableError,
    DeadlineExceededError,
    EmbeddedOnlyError,
    EmbedderUnavailableError,
    ExporterUnavailableError,
    FlagOffWarning,
    InvalidInputError,
    MemoryStoreError,
    MetricsSourceError,
    NotFoundError,
    PermissionDeniedError,
    QuotaExceededError,
    SchemaError,
    SessionExpiredError,
    StaleVersionError,
    StorageError,
    StoreClosedError,
)
from memory.core.merge import ContextConflict, ContextWrite, MergedContext, merge_patches
from memory.core.redaction import Redaction
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
from memory.scope import Scope
from memory.search.embeddings import Embedder, HashingEmbedder, MiniLMEmbedder, TokenCounter
from memory.store.events import ChainReport
from memory.store.forget import ForgetReport
from memory.store.graph import EntityGraph
from memory.store.sharing import Grant
from memory.updates import Subscription, UpdatesStatus

__all__ = [
    "AddedObservations",
    "ArchiveError",
    "AsyncGraph",
    "AsyncMemory",
    "AsyncScope",
    "AuthenticationError",
    "ChainReport",
    "CodePattern",
    "ConflictError",
    "ContextConflict",
    "ContextItem",
    "ContextWrite",
    "DatabaseUnavailableError",
    "DeadlineExceededError",
    "EmbeddedOnlyError",
    "Embedder",
    "EmbedderUnavailableError",
    "Entity",
    "EntityGraph",
    "ExporterUnavailableError",
    "FlagOffWarning",
    "ForgetReport",
    "Grant",
    "HashingEmbedder",
    "InjectedContext",
    "InvalidInputError",
    "KnowledgeGraph",
    "Memory",
    "MemoryEvent",
    "MemoryRecord",
    "MemoryStoreError",
    "MergedContext",
    "MetricsSourceError",
    "MiniLMEmbedder",
    "NotFoundError",
    "PermissionDeniedError",
    "Preference",
    "QuotaExceededError",
    "Redaction",
    "Relation",
    "ResumedSession",
    "SchemaError",
    "Scope",
    "SearchHit",
    "SessionCheckpoint",
    "SessionExpiredError",
    "StaleVersionError",
    "StorageError",
    "StoreClosedError",
    "Subscription",
    "TokenCounter",
    "UpdatesStatus",
    "merge_patches",
]
