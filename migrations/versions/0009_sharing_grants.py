"""Sharing: grants of one memory, a tag or a tier to agents or teams, and team membership.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from memory.store.archive import archive_before_drop

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
ID_LENGTH = 128


def upgrade() -> None:
    op.create_table(
        "sharing_teams",
        sa.Column("id", BIG_ID, primary_key=True, autoincrement=True),
        sa.Column("user_id", sa.String(ID_LENGTH), nullable=False),
        sa.Column("team", sa.String(ID_LENGTH), nullable=False),
        sa.Column("agent_id", sa.String(ID_LENGTH), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_sharing_teams"),
        sa.UniqueConstraint(
            "user_id", "team", "agent_id", name="uq_sharing_teams_user_id_team_agent_id"
        ),
        sqlite_autoincrement=True,
    )
    op.create_index(
        "ix_sharing_teams_user_id_agent_id_team", "sharing_teams", ["user_id", "agent_id", "team"]
    )
    op.create_table(
        "sharing_grants",
        sa.Column("id", BIG_ID, primary_key=True, autoincrement=True),
        sa.Column("user_id", sa.String(ID_LENGTH), nullable=False),
        sa.Column("owner_agent", sa.String(ID_LENGTH), nullable=False),
        sa.Column("target", sa.String(16), nullable=False),
        sa.Column("target_key", sa.String(64), nullable=False),
        sa.Column("memory_id", BIG_ID, nullable=True),
        sa.Column("tier", sa.String(16), nullable=True),
        sa.Column("tag_key", sa.String(ID_LENGTH), nullable=True),
        sa.Column("tag_value_json", sa.String(1024), nullable=True),
        sa.Column("grantee_type", sa.String(16), nullable=False),
        sa.Column("grantee", sa.String(ID_LENGTH), nullable=False),
        sa.Column("access", sa.String(16), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_sharing_grants"),
        sa.ForeignKeyConstraint(
            ["memory_id"],
            ["memories.id"],
            ondelete="CASCADE",
            name="fk_sharing_grants_memory_id_memories",
        ),
        sa.UniqueConstraint(
            "user_id",
            "owner_agent",
            "grantee_type",
            "grantee",
            "target_key",
            name="uq_sharing_grants_grant",
        ),
        sa.CheckConstraint("target IN ('memory', 'tag', 'tier')", name="ck_sharing_grants_target"),
        sa.CheckConstraint(
            "grantee_type IN ('agent', 'team')", name="ck_sharing_grants_grantee_type"
        ),
        sa.CheckConstraint("access IN ('read', 'write')", name="ck_sharing_grants_access"),
        sa.CheckConstraint(
            "(target = 'memory' AND memory_id IS NOT NULL AND tier IS NULL AND tag_key IS NULL)"
            " OR (target = 'tier' AND tier IS NOT NULL AND memory_id IS NULL AND tag_key IS NULL)"
            " OR (target = 'tag' AND tag_key IS NOT NULL AND tag_value_json IS NOT NULL"
            " AND memory_id IS NULL AND tier IS NULL)",
            name="ck_sharing_grants_target_fields",
        ),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_sharing_grants_memory_id", "sharing_grants", ["memory_id"])
    op.create_index(
        "ix_sharing_grants_user_id_owner_agent_target",
        "sharing_grants",
        ["user_id", "owner_agent", "target"],
    )
    op.create_index(
        "ix_sharing_grants_user_id_grantee_type_grantee",
        "sharing_grants",
        ["user_id", "grantee_type", "grantee"],
    )
    op.create_index("ix_sharing_grants_expires_at", "sharing_grants", ["expires_at"])


def downgrade() -> None:
    # Grants before teams (no foreign key between them, but grants name teams). Empty
    # tables leave no archive file behind, as in 0006-0008: there is nothing to bring back.
    bind = op.get_bind()
    for name in ("sharing_grants", "sharing_teams"):
        if bind.execute(sa.select(sa.func.count()).select_from(sa.table(name))).scalar_one():
            archive_before_drop([name], revision)
    op.drop_table("sharing_grants")
    op.drop_table("sharing_teams")
