"""Phase 1 entity memory: indexes for reading a user's graph and a relation's target.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_relations_user_id_id", "relations", ["user_id", "id"])
    op.create_index("ix_relations_to_entity_id", "relations", ["to_entity_id"])


def downgrade() -> None:
    # Dropping an index loses no data; nothing to archive.
    op.drop_index("ix_relations_to_entity_id", table_name="relations")
    op.drop_index("ix_relations_user_id_id", table_name="relations")
