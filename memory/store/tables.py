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

from memory.core.types import ID_LENGTH, TIERS, VISIBILITIES

HASH_LENGTH = 64


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
        # Ids are handed to callers: SQLite must never reuse the id of a deleted memory.
        {"sqlite_autoincrement": True},
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
        {"sqlite_autoincrement": True},
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


# -- Retrieval: embeddings, keyword terms and the change log the in-process index follows ----


class MemoryEmbedding(Base):
    """One vector per memory, with the model that made it (a different model means re-embed)."""

    __tablename__ = "memory_embeddings"

    memory_id: Mapped[int] = mapped_column(
        BigId, sa.ForeignKey("memories.id", ondelete="CASCADE"), primary_key=True
    )
    model: Mapped[str] = mapped_column(sa.String(ID_LENGTH), index=True)
    dimension: Mapped[int] = mapped_column(sa.Integer())
    vector: Mapped[bytes] = mapped_column(sa.LargeBinary())


class MemoryTerms(Base):
    """The normalised keyword terms of a memory (``memory.core.text.terms``), space-separated.

    The database's full-text index is built over this column: FTS5 on SQLite (the
    ``memory_fts`` table, kept in sync by triggers) and a GIN index on PostgreSQL.
    """

    __tablename__ = "memory_terms"

    memory_id: Mapped[int] = mapped_column(
        BigId, sa.ForeignKey("memories.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[str] = mapped_column(sa.String(ID_LENGTH))
    terms: Mapped[str] = mapped_column(sa.Text())
    term_count: Mapped[int] = mapped_column(sa.Integer())

    __table_args__ = (sa.Index("ix_memory_terms_user_id_term_count", "user_id", "term_count"),)


class MemoryChange(Base):
    """An append-only log of which memories changed, so every process's vector index can
    catch up with writes from other processes by reading only what is new."""

    __tablename__ = "memory_changes"

    seq: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    user_id: Mapped[str] = mapped_column(sa.String(ID_LENGTH))
    memory_id: Mapped[int] = mapped_column(BigId)

    __table_args__ = (sa.Index("ix_memory_changes_user_id_seq", "user_id", "seq"),)


RETRIEVAL_TABLES = ("memory_embeddings", "memory_terms", "memory_changes")
# Rebuilt from memories rather than archived (memory.store.indexing.rebuild_missing_terms).
DERIVED_TABLES = ("memory_terms", "memory_changes")
# Structures that only one backend has, so they live in the migration and not in the models.
SQLITE_FTS_TABLE = "memory_fts"
POSTGRES_TERMS_INDEX = "ix_memory_terms_tsvector"


# -- Retention: the maintenance run log and the indexes cleanup selects by ---------------------

RUN_STATUSES = ("running", "ok", "failed", "interrupted")


class MaintenanceRunRow(Base):
    """One run of a maintenance job (``retention`` for now): when, how it ended, what it did.

    A run is inserted as ``running`` and updated when it ends, so a run that died with its
    process stays visible as ``running`` with no ``finished_at``.
    """

    __tablename__ = "maintenance_runs"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    job: Mapped[str] = mapped_column(sa.String(64))
    status: Mapped[str] = mapped_column(sa.String(16))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # Rows changed per cleanup step, as canonical JSON ({"step": count, ...}).
    counts_json: Mapped[str] = mapped_column(sa.Text())
    error: Mapped[str | None] = mapped_column(sa.Text(), nullable=True)

    __table_args__ = (
        # The last run of a job: the newest id.
        sa.Index("ix_maintenance_runs_job_id", "job", "id"),
        sa.CheckConstraint(f"status IN {RUN_STATUSES!r}", name="status"),
    )


# Cleanup pages through old rows by age. The indexes are declared here, not in the classes
# above, so that those stay exactly as the revision that created their tables made them.
sa.Index(
    "ix_memories_tier_updated_at_id",
    Base.metadata.tables["memories"].c.tier,
    Base.metadata.tables["memories"].c.updated_at,
    Base.metadata.tables["memories"].c.id,
)
sa.Index("ix_session_state_created_at", Base.metadata.tables["session_state"].c.created_at)

MAINTENANCE_TABLES = ("maintenance_runs",)


# -- Feature flags (0007): what operators set, per-session overrides, the audit trail --------


class FlagStateRow(Base):
    """One flag as an operator set it; a flag without a row is decided by its built-in default.

    ``enabled`` false is the kill switch: off for everyone, allow list and session overrides
    included. ``enabled`` true applies the rules: allow list, overrides, then ``rollout``.
    """

    __tablename__ = "flag_state"

    name: Mapped[str] = mapped_column(sa.String(ID_LENGTH), primary_key=True)
    description: Mapped[str] = mapped_column(sa.Text())
    default_enabled: Mapped[bool] = mapped_column(sa.Boolean())
    enabled: Mapped[bool] = mapped_column(sa.Boolean())
    rollout: Mapped[int] = mapped_column(sa.Integer())
    stickiness: Mapped[str] = mapped_column(sa.String(ID_LENGTH))
    group_id: Mapped[str] = mapped_column(sa.String(ID_LENGTH * 2))
    parent: Mapped[str | None] = mapped_column(sa.String(ID_LENGTH), nullable=True)
    # Sorted JSON lists of agent ids: a handful per flag, always read with the flag.
    allowed_agents_json: Mapped[str] = mapped_column(sa.Text())
    denied_agents_json: Mapped[str] = mapped_column(sa.Text())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_by: Mapped[str] = mapped_column(sa.String(ID_LENGTH))

    __table_args__ = (sa.CheckConstraint("rollout >= 0 AND rollout <= 100", name="rollout"),)


class FlagSessionOverrideRow(Base):
    """A flag forced on or off for one session, until ``expires_at`` (None: no expiry)."""

    __tablename__ = "flag_session_overrides"

    flag_name: Mapped[str] = mapped_column(
        sa.String(ID_LENGTH), sa.ForeignKey("flag_state.name", ondelete="CASCADE"), primary_key=True
    )
    session_id: Mapped[str] = mapped_column(sa.String(ID_LENGTH), primary_key=True)
    enabled: Mapped[bool] = mapped_column(sa.Boolean())
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    created_by: Mapped[str] = mapped_column(sa.String(ID_LENGTH))


class FlagAuditRow(Base):
    """One change to a flag: who, when, what it was, what it became, and why. Append-only."""

    __tablename__ = "flag_audit"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime())
    actor: Mapped[str] = mapped_column(sa.String(ID_LENGTH))
    flag_name: Mapped[str] = mapped_column(sa.String(ID_LENGTH))
    action: Mapped[str] = mapped_column(sa.String(32))
    # The flag's state before and after, as canonical JSON; None where there was none.
    old_value_json: Mapped[str | None] = mapped_column(sa.Text(), nullable=True)
    new_value_json: Mapped[str | None] = mapped_column(sa.Text(), nullable=True)
    reason: Mapped[str | None] = mapped_column(sa.Text(), nullable=True)

    __table_args__ = (
        # The history of one flag in order (memctl flags audit NAME).
        sa.Index("ix_flag_audit_flag_name_id", "flag_name", "id"),
        # Audit ids are an order of events: SQLite must never reuse a deleted one.
        {"sqlite_autoincrement": True},
    )


FLAG_TABLES = ("flag_state", "flag_session_overrides", "flag_audit")


# -- The event log (0008): every write, hash-chained so that tampering shows -----------------


class MemoryEventRow(Base):
    """One event of the append-only log (``memory.store.events`` explains the chain).

    ``hash`` covers the sequence number, time, agent, operation, the previous hash,
    ``target_digest`` (a digest of the user id and target) and ``payload_digest`` (a digest
    of the user id and payload). Redaction (forgetting a user) blanks ``user_id``,
    ``target`` and ``payload_json`` but keeps the digests, so the chain still verifies
    without the personal data. Events from before revision 0010 have no target digest:
    their hash covers the target.
    """

    __tablename__ = "memory_events"

    # Numbered by the writer (head + 1, under the chain lock), not by a sequence: a
    # rolled-back transaction leaves no gap, so a missing number means a deleted event.
    seq: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    user_id: Mapped[str] = mapped_column(sa.String(ID_LENGTH))
    agent_id: Mapped[str] = mapped_column(sa.String(ID_LENGTH))
    operation: Mapped[str] = mapped_column(sa.String(64))
    target: Mapped[str] = mapped_column(sa.String(256))
    # Revision 0010; NULL only in events restored from an archive of an older revision.
    target_digest: Mapped[str | None] = mapped_column(sa.String(HASH_LENGTH), nullable=True)
    payload_json: Mapped[str | None] = mapped_column(sa.Text(), nullable=True)
    payload_digest: Mapped[str] = mapped_column(sa.String(HASH_LENGTH))
    redacted: Mapped[bool] = mapped_column(sa.Boolean())
    prev_hash: Mapped[str] = mapped_column(sa.String(HASH_LENGTH))
    hash: Mapped[str] = mapped_column(sa.String(HASH_LENGTH))
    # Revision 0012 (``memory.store.changes``): the format of the change the event carries
    # (NULL: written without one; 0: from before 0012, not reconstructible) and the change
    # itself, sealed under the user's data key. The hash covers both when sealed is set.
    change_format: Mapped[int | None] = mapped_column(sa.SmallInteger(), nullable=True)
    change_sealed: Mapped[str | None] = mapped_column(sa.Text(), nullable=True)

    __table_args__ = (
        # A user's events (cache versions, redaction) and one target's history (merging a
        # shared session context), both in log order.
        sa.Index("ix_memory_events_user_id_seq", "user_id", "seq"),
        sa.Index("ix_memory_events_target_seq", "target", "seq"),
    )


class EventKeyRow(Base):
    """One user's data key for the changes events carry (revision 0012), wrapped by the
    deployment's event key (``$MEMORY_EVENT_KEY``, never stored here). Forgetting the user
    deletes the row: their sealed changes can no longer be opened (crypto-shredding)."""

    __tablename__ = "memory_event_keys"

    user_id: Mapped[str] = mapped_column(sa.String(ID_LENGTH), primary_key=True)
    wrapped_key: Mapped[str] = mapped_column(sa.String(128))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


EVENT_TABLES = ("memory_events", "memory_event_keys")


# -- Sharing (0009): grants of a memory, a tag or a tier, and the teams grants can name -------

GRANT_TARGETS = ("memory", "tag", "tier")
GRANTEE_TYPES = ("agent", "team")
GRANT_ACCESS = ("read", "write")


class SharingTeamRow(Base):
    """One agent's membership of one of a user's named teams (a team is its members)."""

    __tablename__ = "sharing_teams"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    user_id: Mapped[str] = mapped_column(sa.String(ID_LENGTH))
    team: Mapped[str] = mapped_column(sa.String(ID_LENGTH))
    agent_id: Mapped[str] = mapped_column(sa.String(ID_LENGTH))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())

    __table_args__ = (
        sa.UniqueConstraint("user_id", "team", "agent_id"),
        # The teams of the agent reading, inside every visibility predicate.
        sa.Index("ix_sharing_teams_user_id_agent_id_team", "user_id", "agent_id", "team"),
        {"sqlite_autoincrement": True},
    )


class SharingGrantRow(Base):
    """``owner_agent`` lets ``grantee`` (an agent, or a team of the same user) read or also
    update its memories: one memory, those with a metadata tag, or a whole tier.

    Grants never cross users: the visibility predicate matches ``user_id`` on both sides.
    ``target_key`` is a digest of the target, so that sharing the same thing with the same
    grantee again updates the grant instead of adding a second one.
    """

    __tablename__ = "sharing_grants"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    user_id: Mapped[str] = mapped_column(sa.String(ID_LENGTH))
    owner_agent: Mapped[str] = mapped_column(sa.String(ID_LENGTH))
    target: Mapped[str] = mapped_column(sa.String(16))
    target_key: Mapped[str] = mapped_column(sa.String(HASH_LENGTH))
    # A grant of one memory goes with it (CASCADE): it means nothing without the memory.
    memory_id: Mapped[int | None] = mapped_column(
        BigId, sa.ForeignKey("memories.id", ondelete="CASCADE"), nullable=True, index=True
    )
    tier: Mapped[str | None] = mapped_column(sa.String(16), nullable=True)
    tag_key: Mapped[str | None] = mapped_column(sa.String(ID_LENGTH), nullable=True)
    tag_value_json: Mapped[str | None] = mapped_column(sa.String(1024), nullable=True)
    grantee_type: Mapped[str] = mapped_column(sa.String(16))
    grantee: Mapped[str] = mapped_column(sa.String(ID_LENGTH))
    access: Mapped[str] = mapped_column(sa.String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True, index=True)

    __table_args__ = (
        sa.UniqueConstraint(
            "user_id",
            "owner_agent",
            "grantee_type",
            "grantee",
            "target_key",
            name="uq_sharing_grants_grant",
        ),
        # Tier and tag grants of one owner, probed per candidate memory.
        sa.Index(
            "ix_sharing_grants_user_id_owner_agent_target", "user_id", "owner_agent", "target"
        ),
        # The grants a reader holds (vector candidates, `memctl grants`).
        sa.Index(
            "ix_sharing_grants_user_id_grantee_type_grantee", "user_id", "grantee_type", "grantee"
        ),
        sa.CheckConstraint(f"target IN {GRANT_TARGETS!r}", name="target"),
        sa.CheckConstraint(f"grantee_type IN {GRANTEE_TYPES!r}", name="grantee_type"),
        sa.CheckConstraint(f"access IN {GRANT_ACCESS!r}", name="access"),
        sa.CheckConstraint(
            "(target = 'memory' AND memory_id IS NOT NULL AND tier IS NULL AND tag_key IS NULL)"
            " OR (target = 'tier' AND tier IS NOT NULL AND memory_id IS NULL AND tag_key IS NULL)"
            " OR (target = 'tag' AND tag_key IS NOT NULL AND tag_value_json IS NOT NULL"
            " AND memory_id IS NULL AND tier IS NULL)",
            name="target_fields",
        ),
        {"sqlite_autoincrement": True},
    )


SHARING_TABLES = ("sharing_teams", "sharing_grants")


# -- API keys (0011): the credentials of the hub service (memory.service) ----------------------

KEY_ROLES = ("agent", "admin")


class ApiKeyRow(Base):
    """One API key of the hub service: who a request made with it acts as. The secret is
    never stored, only its scrypt hash (``memory.store.keys``); ``key_id`` is the public
    half of the key, so a lookup needs no scan of hashes."""

    __tablename__ = "api_keys"

    key_id: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    agent_id: Mapped[str] = mapped_column(sa.String(ID_LENGTH))
    # A JSON list of user ids; empty: the key acts for any user of its agent.
    users_json: Mapped[str] = mapped_column(sa.Text())
    role: Mapped[str] = mapped_column(sa.String(16))
    salt: Mapped[str] = mapped_column(sa.String(64))
    secret_hash: Mapped[str] = mapped_column(sa.String(HASH_LENGTH * 2))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)

    __table_args__ = (sa.CheckConstraint(f"role IN {KEY_ROLES!r}", name="role"),)




class IdempotentRequestRow(Base):
    """A write the hub applied for an ``Idempotency-Key``: claimed in the transaction of the
    write itself (``memory.store.idempotency``), its answer stored after commit, so a retry
    of the same request is answered from here instead of being applied again."""

    __tablename__ = "idempotent_requests"

    key_id: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    request_key: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    operation: Mapped[str] = mapped_column(sa.String(64))
    # The user the write acted for (None for an admin verb): forgetting the user deletes
    # the stored answers, which hold their data.
    user_id: Mapped[str | None] = mapped_column(sa.String(ID_LENGTH), nullable=True, index=True)
    response_json: Mapped[str | None] = mapped_column(sa.Text(), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)


KEY_TABLES = ("api_keys", "idempotent_requests")


# -- hub-spoke sync (0013): node identity, change log, outbox, conflicts (memory.store.sync) --


class SyncNodeRow(Base):
    """This store's identity as a sync node (one row, made when sync is enabled on the store,
    ``memory.store.sync.enable``; none while it is not): its node id and
    the last timestamp its hybrid logical clock issued or saw."""

    __tablename__ = "sync_node"

    id: Mapped[int] = mapped_column(sa.SmallInteger(), primary_key=True, autoincrement=False)
    node_id: Mapped[str] = mapped_column(sa.String(ID_LENGTH))
    hlc: Mapped[int] = mapped_column(sa.BigInteger())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())

    __table_args__ = (sa.CheckConstraint("id = 1", name="single_row"),)


class SyncVectorRow(Base):
    """This store's version vector: per (node, tier), the highest change sequence it has
    (or has something newer than). For this node itself, the last sequence it issued."""

    __tablename__ = "sync_vectors"

    node_id: Mapped[str] = mapped_column(sa.String(ID_LENGTH), primary_key=True)
    tier: Mapped[str] = mapped_column(sa.String(16), primary_key=True)
    seq: Mapped[int] = mapped_column(sa.BigInteger())


class SyncChangeRow(Base):
    """The change log: change ``seq`` of ``node_id`` in ``tier`` wrote version ``hlc`` of
    memory ``memory_gid``. Local writes append in their own transaction; applied batches
    append the changes they brought. What a delta sends is the current state of the
    memories its ranges name."""

    __tablename__ = "sync_changes"

    node_id: Mapped[str] = mapped_column(sa.String(ID_LENGTH), primary_key=True)
    tier: Mapped[str] = mapped_column(sa.String(16), primary_key=True)
    seq: Mapped[int] = mapped_column(sa.BigInteger(), primary_key=True)
    hlc: Mapped[int] = mapped_column(sa.BigInteger())
    memory_gid: Mapped[str] = mapped_column(sa.String(ID_LENGTH), index=True)
    operation: Mapped[str] = mapped_column(sa.String(16))


class SyncMemoryRow(Base):
    """The sync state of one memory, by its id across nodes (``memory_gid``): the version
    this store holds (its stamp, counter and the change that made it) and the local row
    (``memory_id``), or, for a delete, no row and ``deleted`` set: the tombstone, kept so
    that an older update arriving later loses to it."""

    __tablename__ = "sync_memories"

    memory_gid: Mapped[str] = mapped_column(sa.String(ID_LENGTH), primary_key=True)
    # No foreign key: the row outlives its memory as a tombstone, and the change hook
    # reads it in the transaction that deleted the memory.
    memory_id: Mapped[int | None] = mapped_column(BigId, nullable=True, unique=True)
    user_id: Mapped[str] = mapped_column(sa.String(ID_LENGTH), index=True)
    agent_id: Mapped[str] = mapped_column(sa.String(ID_LENGTH))
    tier: Mapped[str] = mapped_column(sa.String(16))
    content_hash: Mapped[str | None] = mapped_column(sa.String(HASH_LENGTH), nullable=True)
    hlc: Mapped[int] = mapped_column(sa.BigInteger())
    origin: Mapped[str] = mapped_column(sa.String(ID_LENGTH))
    seq: Mapped[int] = mapped_column(sa.BigInteger())
    version: Mapped[int] = mapped_column(sa.Integer())
    deleted: Mapped[bool] = mapped_column(sa.Boolean())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class SyncAppliedBatchRow(Base):
    """A batch this store applied: a batch id applied twice changes nothing."""

    __tablename__ = "sync_applied_batches"

    batch_id: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    source: Mapped[str] = mapped_column(sa.String(ID_LENGTH))
    items: Mapped[int] = mapped_column(sa.Integer())
    applied_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)


class SyncOutboxRow(Base):
    """Local changes queued for ``target`` (a node id or '*'): this node's sequences
    ``first_seq``..``last_seq`` of ``tier``, sent as batch ``batch_id`` until acknowledged.
    The items are read from the store when sent, so the outbox holds no user data."""

    __tablename__ = "sync_outbox"

    batch_id: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    target: Mapped[str] = mapped_column(sa.String(ID_LENGTH))
    tier: Mapped[str] = mapped_column(sa.String(16))
    first_seq: Mapped[int] = mapped_column(sa.BigInteger())
    last_seq: Mapped[int] = mapped_column(sa.BigInteger())
    priority: Mapped[int] = mapped_column(sa.SmallInteger())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    acknowledged_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)

    __table_args__ = (
        sa.Index("ix_sync_outbox_target_tier_last_seq", "target", "tier", "last_seq"),
    )


class SyncConflictRow(Base):
    """A conflict this store resolved: two concurrent versions of one memory, the winner's
    stamp and the losing version kept whole (``loser_json``: the item's wire form)."""

    __tablename__ = "sync_conflicts"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    memory_gid: Mapped[str] = mapped_column(sa.String(ID_LENGTH), index=True)
    user_id: Mapped[str] = mapped_column(sa.String(ID_LENGTH), index=True)
    resolution: Mapped[str] = mapped_column(sa.String(16))
    winner_hlc: Mapped[int] = mapped_column(sa.BigInteger())
    winner_origin: Mapped[str] = mapped_column(sa.String(ID_LENGTH))
    loser_hlc: Mapped[int] = mapped_column(sa.BigInteger())
    loser_origin: Mapped[str] = mapped_column(sa.String(ID_LENGTH))
    loser_json: Mapped[str] = mapped_column(sa.Text())
    batch_id: Mapped[str] = mapped_column(sa.String(32))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())

    __table_args__ = (
        sa.CheckConstraint(
            "resolution IN ('last_writer', 'node_id', 'tombstone')", name="resolution"
        ),
        {"sqlite_autoincrement": True},
    )


SYNC_TABLES = (
    "sync_node",
    "sync_vectors",
    "sync_changes",
    "sync_memories",
    "sync_applied_batches",
    "sync_outbox",
    "sync_conflicts",
)
