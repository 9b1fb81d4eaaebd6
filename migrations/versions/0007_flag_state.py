"""Feature flags: the state operators set, per-session overrides, and the append-only audit.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from memory.store.archive import archive_before_drop

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
ID_LENGTH = 128
TABLES = ("flag_state", "flag_session_overrides", "flag_audit")


def upgrade() -> None:
    op.create_table(
        "flag_state",
        sa.Column("name", sa.String(ID_LENGTH), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("default_enabled", sa.Boolean(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("rollout", sa.Integer(), nullable=False),
        sa.Column("stickiness", sa.String(ID_LENGTH), nullable=False),
        sa.Column("group_id", sa.String(ID_LENGTH * 2), nullable=False),
        sa.Column("parent", sa.String(ID_LENGTH), nullable=True),
        sa.Column("allowed_agents_json", sa.Text(), nullable=False),
        sa.Column("denied_agents_json", sa.Text(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.Column("updated_by", sa.String(ID_LENGTH), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_flag_state"),
        sa.CheckConstraint("rollout >= 0 AND rollout <= 100", name="ck_flag_state_rollout"),
    )
    op.create_table(
        "flag_session_overrides",
        sa.Column("flag_name", sa.String(ID_LENGTH), nullable=False),
        sa.Column("session_id", sa.String(ID_LENGTH), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("created_by", sa.String(ID_LENGTH), nullable=False),
        sa.ForeignKeyConstraint(
            ["flag_name"],
            ["flag_state.name"],
            name="fk_flag_session_overrides_flag_name_flag_state",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("flag_name", "session_id", name="pk_flag_session_overrides"),
    )
    op.create_table(
        "flag_audit",
        sa.Column("id", BIG_ID, primary_key=True, autoincrement=True),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.Column("actor", sa.String(ID_LENGTH), nullable=False),
        sa.Column("flag_name", sa.String(ID_LENGTH), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("old_value_json", sa.Text(), nullable=True),
        sa.Column("new_value_json", sa.Text(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_flag_audit"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_flag_audit_flag_name_id", "flag_audit", ["flag_name", "id"])


def downgrade() -> None:
    # Children before parents; an empty table leaves no (empty) archive file behind, as in
    # 0006: there is nothing to bring back.
    bind = op.get_bind()
    for name in ("flag_audit", "flag_session_overrides", "flag_state"):
        table = sa.table(name)
        if bind.execute(sa.select(sa.func.count()).select_from(table)).scalar_one():
            archive_before_drop([name], revision)
    op.drop_index("ix_flag_audit_flag_name_id", table_name="flag_audit")
    op.drop_table("flag_audit")
    op.drop_table("flag_session_overrides")
    op.drop_table("flag_state")
