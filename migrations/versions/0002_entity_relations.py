"""Phase 1 entity memory: typed relations between entities.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from memory.store.archive import archive_before_drop

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "relations",
        sa.Column("id", BIG_ID, primary_key=True, autoincrement=True),
        sa.Column("user_id", sa.String(128), nullable=False),
        sa.Column("from_entity_id", BIG_ID, nullable=False),
        sa.Column("to_entity_id", BIG_ID, nullable=False),
        sa.Column("relation_type", sa.String(128), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_relations"),
        sa.ForeignKeyConstraint(
            ["from_entity_id"],
            ["entities.id"],
            ondelete="CASCADE",
            name="fk_relations_from_entity_id_entities",
        ),
        sa.ForeignKeyConstraint(
            ["to_entity_id"],
            ["entities.id"],
            ondelete="CASCADE",
            name="fk_relations_to_entity_id_entities",
        ),
        sa.UniqueConstraint(
            "from_entity_id",
            "to_entity_id",
            "relation_type",
            name="uq_relations_from_entity_id_to_entity_id_relation_type",
        ),
    )


def downgrade() -> None:
    archive_before_drop(["relations"], revision)
    op.drop_table("relations")
