"""The event log: an append-only, hash-chained record of every write.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from memory.store.archive import archive_before_drop

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "memory_events",
        # Numbered by the writer (head + 1, under the chain lock), not by a sequence: a
        # rolled-back transaction leaves no gap, so a missing number means a deleted event.
        sa.Column("seq", BIG_ID, primary_key=True, autoincrement=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("user_id", sa.String(128), nullable=False),
        sa.Column("agent_id", sa.String(128), nullable=False),
        sa.Column("operation", sa.String(64), nullable=False),
        sa.Column("target", sa.String(256), nullable=False),
        sa.Column("payload_json", sa.Text(), nullable=True),
        sa.Column("payload_digest", sa.String(64), nullable=False),
        sa.Column("redacted", sa.Boolean(), nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("seq", name="pk_memory_events"),
    )
    op.create_index("ix_memory_events_user_id_seq", "memory_events", ["user_id", "seq"])
    op.create_index("ix_memory_events_target_seq", "memory_events", ["target", "seq"])


def downgrade() -> None:
    # The log is archived like any other rows (its hashes survive the round trip, so a
    # restored chain verifies); an empty log leaves no archive file behind.
    events = sa.table("memory_events")
    if op.get_bind().execute(sa.select(sa.func.count()).select_from(events)).scalar_one():
        archive_before_drop(["memory_events"], revision)
    op.drop_index("ix_memory_events_target_seq", table_name="memory_events")
    op.drop_index("ix_memory_events_user_id_seq", table_name="memory_events")
    op.drop_table("memory_events")
