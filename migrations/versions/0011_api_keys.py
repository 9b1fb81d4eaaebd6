"""API keys of the hub service (``memctl keys``): who a request acts as, by key.

Downgrade archives the keys before it drops the table (``memctl restore-archive`` brings
them back), like every revision that drops rows.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from memory.store.archive import archive_before_drop

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

ID_LENGTH = 128


def upgrade() -> None:
    op.create_table(
        "api_keys",
        sa.Column("key_id", sa.String(32), nullable=False),
        sa.Column("agent_id", sa.String(ID_LENGTH), nullable=False),
        sa.Column("users_json", sa.Text(), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("salt", sa.String(64), nullable=False),
        sa.Column("secret_hash", sa.String(128), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=True),
        sa.Column("revoked_at", sa.DateTime(), nullable=True),
        sa.Column("last_used_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("key_id", name="pk_api_keys"),
        sa.CheckConstraint("role IN ('agent', 'admin')", name="ck_api_keys_role"),
    )


def downgrade() -> None:
    # An empty table leaves no archive behind, as in 0006-0009: nothing to bring back.
    bind = op.get_bind()
    if bind.execute(sa.select(sa.func.count()).select_from(sa.table("api_keys"))).scalar_one():
        archive_before_drop(["api_keys"], revision)
    op.drop_table("api_keys")
