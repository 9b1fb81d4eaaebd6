"""Hub-spoke sync state (``memory.store.sync``): the node's identity and clock, its version
vector, the change log, each memory's sync state and tombstone, applied batch ids, the
outbox and conflict records.

Upgrade creates the tables only: sync is enabled per store (``memory.ops.sync.enable``),
which makes the node and logs the memories already there; a store that does not sync
logs nothing (``memory.store.synclog``).

Downgrade archives every sync table that has rows before dropping it (``memctl rollback
--archive DIR``; refused without one if there are any), like every revision that drops
rows; ``restore-archive`` after an upgrade brings them back.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from memory.store.archive import archive_before_drop

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

ID_LENGTH = 128
HASH_LENGTH = 64
TABLES = (
    "sync_conflicts",
    "sync_outbox",
    "sync_applied_batches",
    "sync_memories",
    "sync_changes",
    "sync_vectors",
    "sync_node",
)
_BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "sync_node",
        sa.Column("id", sa.SmallInteger(), autoincrement=False, nullable=False),
        sa.Column("node_id", sa.String(ID_LENGTH), nullable=False),
        sa.Column("hlc", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_sync_node"),
        sa.CheckConstraint("id = 1", name="ck_sync_node_single_row"),
    )
    op.create_table(
        "sync_vectors",
        sa.Column("node_id", sa.String(ID_LENGTH), nullable=False),
        sa.Column("tier", sa.String(16), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("node_id", "tier", name="pk_sync_vectors"),
    )
    op.create_table(
        "sync_changes",
        sa.Column("node_id", sa.String(ID_LENGTH), nullable=False),
        sa.Column("tier", sa.String(16), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("hlc", sa.BigInteger(), nullable=False),
        sa.Column("memory_gid", sa.String(ID_LENGTH), nullable=False),
        sa.Column("operation", sa.String(16), nullable=False),
        sa.PrimaryKeyConstraint("node_id", "tier", "seq", name="pk_sync_changes"),
    )
    op.create_index("ix_sync_changes_memory_gid", "sync_changes", ["memory_gid"])
    op.create_table(
        "sync_memories",
        sa.Column("memory_gid", sa.String(ID_LENGTH), nullable=False),
        sa.Column("memory_id", _BIG_ID, nullable=True),
        sa.Column("user_id", sa.String(ID_LENGTH), nullable=False),
        sa.Column("agent_id", sa.String(ID_LENGTH), nullable=False),
        sa.Column("tier", sa.String(16), nullable=False),
        sa.Column("content_hash", sa.String(HASH_LENGTH), nullable=True),
        sa.Column("hlc", sa.BigInteger(), nullable=False),
        sa.Column("origin", sa.String(ID_LENGTH), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("deleted", sa.Boolean(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("memory_gid", name="pk_sync_memories"),
        sa.UniqueConstraint("memory_id", name="uq_sync_memories_memory_id"),
    )
    op.create_index("ix_sync_memories_user_id", "sync_memories", ["user_id"])
    op.create_table(
        "sync_applied_batches",
        sa.Column("batch_id", sa.String(32), nullable=False),
        sa.Column("source", sa.String(ID_LENGTH), nullable=False),
        sa.Column("items", sa.Integer(), nullable=False),
        sa.Column("applied_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("batch_id", name="pk_sync_applied_batches"),
    )
    op.create_index(
        "ix_sync_applied_batches_applied_at", "sync_applied_batches", ["applied_at"]
    )
    op.create_table(
        "sync_outbox",
        sa.Column("batch_id", sa.String(32), nullable=False),
        sa.Column("target", sa.String(ID_LENGTH), nullable=False),
        sa.Column("tier", sa.String(16), nullable=False),
        sa.Column("first_seq", sa.BigInteger(), nullable=False),
        sa.Column("last_seq", sa.BigInteger(), nullable=False),
        sa.Column("priority", sa.SmallInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("acknowledged_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("batch_id", name="pk_sync_outbox"),
    )
    op.create_index(
        "ix_sync_outbox_target_tier_last_seq", "sync_outbox", ["target", "tier", "last_seq"]
    )
    op.create_table(
        "sync_conflicts",
        sa.Column("id", _BIG_ID, autoincrement=True, nullable=False),
        sa.Column("memory_gid", sa.String(ID_LENGTH), nullable=False),
        sa.Column("user_id", sa.String(ID_LENGTH), nullable=False),
        sa.Column("resolution", sa.String(16), nullable=False),
        sa.Column("winner_hlc", sa.BigInteger(), nullable=False),
        sa.Column("winner_origin", sa.String(ID_LENGTH), nullable=False),
        sa.Column("loser_hlc", sa.BigInteger(), nullable=False),
        sa.Column("loser_origin", sa.String(ID_LENGTH), nullable=False),
        sa.Column("loser_json", sa.Text(), nullable=False),
        sa.Column("batch_id", sa.String(32), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_sync_conflicts"),
        sa.CheckConstraint(
            "resolution IN ('last_writer', 'node_id', 'tombstone')",
            name="ck_sync_conflicts_resolution",
        ),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_sync_conflicts_memory_gid", "sync_conflicts", ["memory_gid"])
    op.create_index("ix_sync_conflicts_user_id", "sync_conflicts", ["user_id"])


def downgrade() -> None:
    bind = op.get_bind()
    for name in TABLES:
        if bind.execute(sa.select(sa.func.count()).select_from(sa.table(name))).scalar_one():
            archive_before_drop([name], revision)
    for name in TABLES:
        op.drop_table(name)
