"""Retention: the maintenance run log, and the indexes cleanup pages through old rows by.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from memory.store.archive import archive_before_drop

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "maintenance_runs",
        sa.Column("id", BIG_ID, primary_key=True, autoincrement=True),
        sa.Column("job", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("started_at", sa.DateTime(), nullable=False),
        sa.Column("finished_at", sa.DateTime(), nullable=True),
        sa.Column("counts_json", sa.Text(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_maintenance_runs"),
        sa.CheckConstraint(
            "status IN ('running', 'ok', 'failed', 'interrupted')",
            name="ck_maintenance_runs_status",
        ),
    )
    op.create_index("ix_maintenance_runs_job_id", "maintenance_runs", ["job", "id"])
    op.create_index("ix_memories_tier_updated_at_id", "memories", ["tier", "updated_at", "id"])
    op.create_index("ix_session_state_created_at", "session_state", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_session_state_created_at", table_name="session_state")
    op.drop_index("ix_memories_tier_updated_at_id", table_name="memories")
    # The run log is archived like any other rows. An empty log leaves no (empty) archive
    # file behind: there is nothing to bring back, and restore needs none.
    runs = sa.table("maintenance_runs")
    if op.get_bind().execute(sa.select(sa.func.count()).select_from(runs)).scalar_one():
        archive_before_drop(["maintenance_runs"], revision)
    op.drop_table("maintenance_runs")
