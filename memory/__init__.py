"""tiered-memory: the memory layer that agent runtimes embed.

>>> from memory import Memory
>>> with Memory.open("sqlite:///:memory:") as memory:
...     scope = memory.scope(user="ada", agent="planner", session="s1")
...     scope.add("Ada prefers short answers", tier="semantic").tier
'semantic'
"""

from memory._api import Memory, Scope
from memory._archive import TableChecksum, restore_archive, table_checksums, verify_archive
from memory._engine import DATABASE_URL_ENV, create_engine, resolve_database_url
from memory._errors import (
    ArchiveError,
    ConflictError,
    DatabaseUnavailableError,
    InvalidInputError,
    MemoryStoreError,
    NotFoundError,
    SchemaError,
    StaleVersionError,
)
from memory._graph import EntityGraph
from memory._migrate import RevisionInfo, downgrade, head_revision, history, upgrade
from memory._types import (
    AddedObservations,
    CodePattern,
    Entity,
    KnowledgeGraph,
    MemoryRecord,
    Preference,
    Relation,
    SessionCheckpoint,
)

__all__ = [
    "AddedObservations",
    "ArchiveError",
    "CodePattern",
    "ConflictError",
    "DATABASE_URL_ENV",
    "DatabaseUnavailableError",
    "Entity",
    "EntityGraph",
    "InvalidInputError",
    "KnowledgeGraph",
    "Memory",
    "MemoryRecord",
    "MemoryStoreError",
    "NotFoundError",
    "Preference",
    "Relation",
    "RevisionInfo",
    "SchemaError",
    "Scope",
    "SessionCheckpoint",
    "StaleVersionError",
    "TableChecksum",
    "create_engine",
    "downgrade",
    "head_revision",
    "history",
    "resolve_database_url",
    "restore_archive",
    "table_checksums",
    "upgrade",
    "verify_archive",
]
