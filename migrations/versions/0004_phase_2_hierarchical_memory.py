"""Phase 2: hierarchical memories, their metadata, preferences, code patterns, session state.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from memory.store.archive import archive_before_drop

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "memories",
        sa.Column("id", BIG_ID, primary_key=True, autoincrement=True),
        sa.Column("user_id", sa.String(128), nullable=False),
        sa.Column("agent_id", sa.String(128), nullable=False),
        sa.Column("session_id", sa.String(128), nullable=False),
        sa.Column("tier", sa.String(16), nullable=False),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column("content_hash", sa.String(64), nullable=False),
        sa.Column("importance", sa.Float(), nullable=False),
        sa.Column("visibility", sa.String(16), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.Column("last_accessed_at", sa.DateTime(), nullable=True),
        sa.Column("access_count", sa.Integer(), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_memories"),
        sa.UniqueConstraint(
            "user_id",
            "agent_id",
            "session_id",
            "content_hash",
            name="uq_memories_user_id_agent_id_session_id_content_hash",
        ),
        sa.CheckConstraint("tier IN ('working', 'episodic', 'semantic')", name="ck_memories_tier"),
        sa.CheckConstraint("visibility IN ('private', 'shared')", name="ck_memories_visibility"),
        sa.CheckConstraint("importance >= 0 AND importance <= 1", name="ck_memories_importance"),
        # Ids are handed to callers: SQLite must never reuse the id of a deleted memory.
        sqlite_autoincrement=True,
    )
    op.create_index("ix_memories_user_id_agent_id_id", "memories", ["user_id", "agent_id", "id"])
    op.create_index(
        "ix_memories_user_id_agent_id_tier_id", "memories", ["user_id", "agent_id", "tier", "id"]
    )
    op.create_index("ix_memories_expires_at", "memories", ["expires_at"])

    op.create_table(
        "memory_metadata",
        sa.Column("memory_id", BIG_ID, nullable=False),
        sa.Column("key", sa.String(128), nullable=False),
        sa.Column("value_json", sa.String(1024), nullable=False),
        sa.PrimaryKeyConstraint("memory_id", "key", name="pk_memory_metadata"),
        sa.ForeignKeyConstraint(
            ["memory_id"],
            ["memories.id"],
            ondelete="CASCADE",
            name="fk_memory_metadata_memory_id_memories",
        ),
    )
    op.create_index(
        "ix_memory_metadata_key_value_json", "memory_metadata", ["key", "value_json", "memory_id"]
    )

    op.create_table(
        "user_preferences",
        sa.Column("id", BIG_ID, primary_key=True, autoincrement=True),
        sa.Column("user_id", sa.String(128), nullable=False),
        sa.Column("key", sa.String(128), nullable=False),
        sa.Column("value_json", sa.Text(), nullable=False),
        sa.Column("source_agent", sa.String(128), nullable=False),
        sa.Column("confidence", sa.Float(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_user_preferences"),
        sa.UniqueConstraint("user_id", "key", name="uq_user_preferences_user_id_key"),
        sa.CheckConstraint(
            "confidence >= 0 AND confidence <= 1", name="ck_user_preferences_confidence"
        ),
    )

    op.create_table(
        "code_patterns",
        sa.Column("id", BIG_ID, primary_key=True, autoincrement=True),
        sa.Column("user_id", sa.String(128), nullable=False),
        sa.Column("agent_id", sa.String(128), nullable=False),
        sa.Column("language", sa.String(64), nullable=False),
        sa.Column("name", sa.String(256), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("snippet", sa.Text(), nullable=False),
        sa.Column("tags_json", sa.Text(), nullable=False),
        sa.Column("usage_count", sa.Integer(), nullable=False),
        sa.Column("last_used_at", sa.DateTime(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_code_patterns"),
        sa.UniqueConstraint(
            "user_id", "language", "name", name="uq_code_patterns_user_id_language_name"
        ),
        sqlite_autoincrement=True,
    )
    op.create_index(
        "ix_code_patterns_user_id_usage_count", "code_patterns", ["user_id", "usage_count"]
    )

    op.create_table(
        "session_state",
        sa.Column("id", BIG_ID, primary_key=True, autoincrement=True),
        sa.Column("user_id", sa.String(128), nullable=False),
        sa.Column("session_id", sa.String(128), nullable=False),
        sa.Column("checkpoint_seq", sa.Integer(), nullable=False),
        sa.Column("agent_id", sa.String(128), nullable=False),
        sa.Column("state_json", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_session_state"),
        sa.UniqueConstraint(
            "user_id",
            "session_id",
            "checkpoint_seq",
            name="uq_session_state_user_id_session_id_checkpoint_seq",
        ),
    )
    op.create_index("ix_session_state_expires_at", "session_state", ["expires_at"])


def downgrade() -> None:
    tables = ["memory_metadata", "memories", "user_preferences", "code_patterns", "session_state"]
    archive_before_drop(tables, revision)
    for name in tables:
        op.drop_table(name)
