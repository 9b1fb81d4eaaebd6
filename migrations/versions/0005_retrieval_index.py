"""Retrieval: memory embeddings, keyword terms with a full-text index, and the change log.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from memory.store.archive import archive_before_drop
from memory.store.indexing import rebuild_missing_terms

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

# The FTS5 table indexes memory_terms.terms (already normalised by memory.core.text) verbatim,
# plus an "owner" token derived from the user id so that a MATCH can be scoped to one user.
SQLITE_FTS = [
    "CREATE VIRTUAL TABLE memory_fts USING fts5(terms, owner, tokenize = 'unicode61')",
    """CREATE TRIGGER memory_terms_fts_insert AFTER INSERT ON memory_terms BEGIN
           INSERT INTO memory_fts (rowid, terms, owner)
           VALUES (new.memory_id, new.terms, 'u' || hex(new.user_id));
       END""",
    """CREATE TRIGGER memory_terms_fts_delete AFTER DELETE ON memory_terms BEGIN
           DELETE FROM memory_fts WHERE rowid = old.memory_id;
       END""",
    """CREATE TRIGGER memory_terms_fts_update AFTER UPDATE ON memory_terms BEGIN
           DELETE FROM memory_fts WHERE rowid = old.memory_id;
           INSERT INTO memory_fts (rowid, terms, owner)
           VALUES (new.memory_id, new.terms, 'u' || hex(new.user_id));
       END""",
]


def upgrade() -> None:
    op.create_table(
        "memory_embeddings",
        sa.Column("memory_id", BIG_ID, nullable=False),
        sa.Column("model", sa.String(128), nullable=False),
        sa.Column("dimension", sa.Integer(), nullable=False),
        sa.Column("vector", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("memory_id", name="pk_memory_embeddings"),
        sa.ForeignKeyConstraint(
            ["memory_id"],
            ["memories.id"],
            ondelete="CASCADE",
            name="fk_memory_embeddings_memory_id_memories",
        ),
    )
    op.create_index("ix_memory_embeddings_model", "memory_embeddings", ["model"])
    op.create_table(
        "memory_terms",
        sa.Column("memory_id", BIG_ID, nullable=False),
        sa.Column("user_id", sa.String(128), nullable=False),
        sa.Column("terms", sa.Text(), nullable=False),
        sa.Column("term_count", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("memory_id", name="pk_memory_terms"),
        sa.ForeignKeyConstraint(
            ["memory_id"],
            ["memories.id"],
            ondelete="CASCADE",
            name="fk_memory_terms_memory_id_memories",
        ),
    )
    op.create_index("ix_memory_terms_user_id_term_count", "memory_terms", ["user_id", "term_count"])
    op.create_table(
        "memory_changes",
        sa.Column("seq", BIG_ID, nullable=False, autoincrement=True),
        sa.Column("user_id", sa.String(128), nullable=False),
        sa.Column("memory_id", BIG_ID, nullable=False),
        sa.PrimaryKeyConstraint("seq", name="pk_memory_changes"),
    )
    op.create_index("ix_memory_changes_user_id_seq", "memory_changes", ["user_id", "seq"])
    if op.get_bind().dialect.name == "sqlite":
        for statement in SQLITE_FTS:
            op.execute(statement)
    else:
        op.execute(
            "CREATE INDEX ix_memory_terms_tsvector ON memory_terms "
            "USING GIN (to_tsvector('simple', terms))"
        )
    # Memories written before this revision have no terms or embeddings yet; terms are
    # derived from content, so build them here. Embeddings need the model: `memctl reembed`.
    rebuild_missing_terms(op.get_bind())


def downgrade() -> None:
    # Terms and the change log are derived data (memory.store.tables.DERIVED_TABLES): they are
    # rebuilt by the next upgrade and by restore_archive. Embeddings are costly to
    # recompute, so they are archived like any other rows.
    archive_before_drop(["memory_embeddings"], revision)
    if op.get_bind().dialect.name == "sqlite":
        op.execute("DROP TABLE memory_fts")
    op.drop_table("memory_changes")
    op.drop_table("memory_terms")
    op.drop_table("memory_embeddings")
