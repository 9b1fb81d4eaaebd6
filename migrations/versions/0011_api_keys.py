"""API keys of the hub service (``memctl keys``): who a request acts as, by key; and the
writes applied for an ``Idempotency-Key`` with their answers, so a retry is applied once.

Downgrade archives both tables before it drops them (``memctl restore-archive`` brings
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
    op.create_table(
        "idempotent_requests",
        sa.Column("key_id", sa.String(32), nullable=False),
        sa.Column("request_key", sa.String(64), nullable=False),
        sa.Column("operation", sa.String(64), nullable=False),
        sa.Column("user_id", sa.String(ID_LENGTH), nullable=True),
        sa.Column("response_json", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("key_id", "request_key", name="pk_idempotent_requests"),
    )
    op.create_index(
        "ix_idempotent_requests_created_at", "idempotent_requests", ["created_at"]
    )
    op.create_index("ix_idempotent_requests_user_id", "idempotent_requests", ["user_id"])


def downgrade() -> None:
    # An empty table leaves no archive behind, as in 0006-0009: nothing to bring back.
    bind = op.get_bind()
    for name in ("idempotent_requests", "api_keys"):
        if bind.execute(sa.select(sa.func.count()).select_from(sa.table(name))).scalar_one():
            archive_before_drop([name], revision)
    op.drop_table("idempotent_requests")
    op.drop_table("api_keys")
