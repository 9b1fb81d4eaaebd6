"""Phase 1 entity memory: entities and their observations.

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from memory.store.archive import archive_before_drop

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "entities",
        sa.Column("id", BIG_ID, primary_key=True, autoincrement=True),
        sa.Column("user_id", sa.String(128), nullable=False),
        sa.Column("name", sa.String(256), nullable=False),
        sa.Column("entity_type", sa.String(128), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_entities"),
        sa.UniqueConstraint("user_id", "name", name="uq_entities_user_id_name"),
    )
    op.create_table(
        "observations",
        sa.Column("id", BIG_ID, primary_key=True, autoincrement=True),
        sa.Column("entity_id", BIG_ID, nullable=False),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column("content_hash", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_observations"),
        sa.ForeignKeyConstraint(
            ["entity_id"],
            ["entities.id"],
            ondelete="CASCADE",
            name="fk_observations_entity_id_entities",
        ),
        sa.UniqueConstraint(
            "entity_id", "content_hash", name="uq_observations_entity_id_content_hash"
        ),
    )


def downgrade() -> None:
    archive_before_drop(["observations", "entities"], revision)
    op.drop_table("observations")
    op.drop_table("entities")
