"""SQLAlchemy 2.0 models: the source of truth for the schema that the migrations build.

Phase 1 (revisions 0001-0003) is the entity knowledge graph. Phase 2 (revision 0004) adds
hierarchical memories and the per-user stores around them.

Foreign keys and what deleting the parent does:

- ``observations.entity_id -> entities.id``: CASCADE. An observation is part of its entity;
  deleting an entity deletes what was observed about it (MCP memory server semantics).
- ``relations.from_entity_id / to_entity_id -> entities.id``: CASCADE. A relation cannot
  outlive either end (MCP's delete_entities removes the entity's relations too).
- ``memory_metadata.memory_id -> memories.id``: CASCADE. Metadata describes one memory and
  means nothing without it.

Preferences, code patterns and session state belong to a user id, not to another row, so
they have no foreign key; forgetting a user deletes them explicitly.

Timestamps are stored as naive UTC (SQLite has no time zones) and returned as aware UTC.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

TIERS = ("working", "episodic", "semantic")
VISIBILITIES = ("private", "shared")

# Identifier columns (user, agent, session ids, names, keys) share one width.
ID_LENGTH = 128
HASH_LENGTH = 64
# Memories without a session store the empty string: SQL treats NULLs as distinct, so a
# NULL session would let the same content be stored twice in the same scope.
NO_SESSION = ""


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp stored as naive UTC and handed back as an aware UTC datetime."""

    impl = sa.DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("timestamps must be timezone-aware")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: Any, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC)


def utcnow() -> datetime:
    """The current time as an aware UTC datetime, truncated to what every backend keeps."""
    return datetime.now(UTC)


BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


class Base(DeclarativeBase):
    metadata = sa.MetaData(
        naming_convention={
            "ix": "ix_%(table_name)s_%(column_0_N_name)s",
            "uq": "uq_%(table_name)s_%(column_0_N_name)s",
            "ck": "ck_%(table_name)s_%(constraint_name)s",
            "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
            "pk": "pk_%(table_name)s",
        }
    )


# -- Phase 1: the entity knowledge graph ------------------------------------------------------


class Entity(Base):
    __tablename__ = "entities"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    user_id: Mapped[str] = mapped_column(sa.String(ID_LENGTH))
    name: Mapped[str] = mapped_column(sa.String(ID_LENGTH * 2))
    entity_type: Mapped[str] = mapped_column(sa.String(ID_LENGTH))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())

    __table_args__ = (sa.UniqueConstraint("user_id", "name"),)


class Observation(Base):
    __tablename__ = "observations"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    entity_id: Mapped[int] = mapped_column(BigId, sa.ForeignKey("entities.id", ondelete="CASCADE"))
    content: Mapped[str] = mapped_column(sa.Text())
    # Unique per entity through the hash: a b-tree cannot index arbitrarily long text.
    content_hash: Mapped[str] = mapped_column(sa.String(HASH_LENGTH))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())

    __table_args__ = (sa.UniqueConstraint("entity_id", "content_hash"),)


class Relation(Base):
    __tablename__ = "relations"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    user_id: Mapped[str] = mapped_column(sa.String(ID_LENGTH))
    from_entity_id: Mapped[int] = mapped_column(
        BigId, sa.ForeignKey("entities.id", ondelete="CASCADE")
    )
    to_entity_id: Mapped[int] = mapped_column(
        BigId, sa.ForeignKey("entities.id", ondelete="CASCADE"), index=True
    )
    relation_type: Mapped[str] = mapped_column(sa.String(ID_LENGTH))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())

    __table_args__ = (
        sa.UniqueConstraint("from_entity_id", "to_entity_id", "relation_type"),
        sa.Index("ix_relations_user_id_id", "user_id", "id"),
    )


# -- Phase 2: hierarchical memory ---------------------------------------------------------------


class MemoryRow(Base):
    __tablename__ = "memories"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    user_id: Mapped[str] = mapped_column(sa.String(ID_LENGTH))
    agent_id: Mapped[str] = mapped_column(sa.String(ID_LENGTH))
    session_id: Mapped[str] = mapped_column(sa.String(ID_LENGTH))
    tier: Mapped[str] = mapped_column(sa.String(16))
    content: Mapped[str] = mapped_column(sa.Text())
    content_hash: Mapped[str] = mapped_column(sa.String(HASH_LENGTH))
    importance: Mapped[float] = mapped_column(sa.Float())
    visibility: Mapped[str] = mapped_column(sa.String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    last_accessed_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    access_count: Mapped[int] = mapped_column(sa.Integer())
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True, index=True)
    version: Mapped[int] = mapped_column(sa.Integer())

    __table_args__ = (
        # De-duplication of concurrent adds, enforced by the database.
        sa.UniqueConstraint("user_id", "agent_id", "session_id", "content_hash"),
        # Listing an agent's memories newest first (ids only grow), optionally by tier.
        sa.Index("ix_memories_user_id_agent_id_id", "user_id", "agent_id", "id"),
        sa.Index("ix_memories_user_id_agent_id_tier_id", "user_id", "agent_id", "tier", "id"),
        sa.CheckConstraint(f"tier IN {TIERS!r}", name="tier"),
        sa.CheckConstraint(f"visibility IN {VISIBILITIES!r}", name="visibility"),
        sa.CheckConstraint("importance >= 0 AND importance <= 1", name="importance"),
    )


class MemoryMetadata(Base):
    __tablename__ = "memory_metadata"

    memory_id: Mapped[int] = mapped_column(
        BigId, sa.ForeignKey("memories.id", ondelete="CASCADE"), primary_key=True
    )
    key: Mapped[str] = mapped_column(sa.String(ID_LENGTH), primary_key=True)
    # The value as canonical JSON, so that equality filters compare exactly.
    value_json: Mapped[str] = mapped_column(sa.String(1024))

    __table_args__ = (
        sa.Index("ix_memory_metadata_key_value_json", "key", "value_json", "memory_id"),
    )


class UserPreference(Base):
    __tablename__ = "user_preferences"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    user_id: Mapped[str] = mapped_column(sa.String(ID_LENGTH))
    key: Mapped[str] = mapped_column(sa.String(ID_LENGTH))
    value_json: Mapped[str] = mapped_column(sa.Text())
    source_agent: Mapped[str] = mapped_column(sa.String(ID_LENGTH))
    confidence: Mapped[float] = mapped_column(sa.Float())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())

    __table_args__ = (
        sa.UniqueConstraint("user_id", "key"),
        sa.CheckConstraint("confidence >= 0 AND confidence <= 1", name="confidence"),
    )


class CodePatternRow(Base):
    __tablename__ = "code_patterns"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    user_id: Mapped[str] = mapped_column(sa.String(ID_LENGTH))
    agent_id: Mapped[str] = mapped_column(sa.String(ID_LENGTH))
    language: Mapped[str] = mapped_column(sa.String(64))
    name: Mapped[str] = mapped_column(sa.String(ID_LENGTH * 2))
    description: Mapped[str] = mapped_column(sa.Text())
    snippet: Mapped[str] = mapped_column(sa.Text())
    tags_json: Mapped[str] = mapped_column(sa.Text())
    usage_count: Mapped[int] = mapped_column(sa.Integer())
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())

    __table_args__ = (
        sa.UniqueConstraint("user_id", "language", "name"),
        sa.Index("ix_code_patterns_user_id_usage_count", "user_id", "usage_count"),
    )


class SessionStateRow(Base):
    __tablename__ = "session_state"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    user_id: Mapped[str] = mapped_column(sa.String(ID_LENGTH))
    session_id: Mapped[str] = mapped_column(sa.String(ID_LENGTH))
    checkpoint_seq: Mapped[int] = mapped_column(sa.Integer())
    agent_id: Mapped[str] = mapped_column(sa.String(ID_LENGTH))
    state_json: Mapped[str] = mapped_column(sa.Text())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True, index=True)

    __table_args__ = (sa.UniqueConstraint("user_id", "session_id", "checkpoint_seq"),)


PHASE_1_TABLES = ("entities", "observations", "relations")
PHASE_2_TABLES = (
    "memories",
    "memory_metadata",
    "user_preferences",
    "code_patterns",
    "session_state",
)
