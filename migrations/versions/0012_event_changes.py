"""Events that carry the change: sealed row images and the users' wrapped data keys.

Upgrade adds ``memory_events.change_format`` and ``change_sealed`` (``memory.store.changes``)
and the table ``memory_event_keys``, and marks every event already in the log as not
reconstructible (``change_format = 0``): they hold identifiers and digests only. Their hash
does not cover the format (it covers a change only where one is sealed), so the chain
verifies as it did, without re-hashing.

Downgrade keeps every event. It refuses a chain that does not verify (re-hashing would hide
that), archives the sealed changes (as the table ``memory_event_changes``: seq, format,
sealed) and the wrapped keys (``memory_event_keys``) like every dropped table (``memctl
rollback --archive DIR``; refused without one if there are any), re-hashes the chain
without the changes, and drops the columns and the key table. The archive keeps them; an
upgrade again marks the events not reconstructible (``restore-archive`` has no table
``memory_event_changes`` to put them back into: replay from a database at 0012 instead).

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from memory.core.errors import SchemaError
from memory.store.archive import archive_before_drop
from memory.store.events import event_table, rechain, verify_chain

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

_CHANGES = "memory_event_changes"


def upgrade() -> None:
    op.create_table(
        "memory_event_keys",
        sa.Column("user_id", sa.String(128), nullable=False),
        sa.Column("wrapped_key", sa.String(128), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("user_id", name="pk_memory_event_keys"),
    )
    with op.batch_alter_table("memory_events") as batch:
        batch.add_column(sa.Column("change_format", sa.SmallInteger(), nullable=True))
        batch.add_column(sa.Column("change_sealed", sa.Text(), nullable=True))
    op.execute(sa.text("UPDATE memory_events SET change_format = 0"))


def downgrade() -> None:
    bind = op.get_bind()
    table = event_table(with_target_digest=True, with_changes=True)
    report = verify_chain(bind, table)
    if not report.ok:
        raise SchemaError(
            f"downgrading {revision}: the event chain does not verify (first bad event "
            f"{report.first_bad_seq}: {report.reason}); re-hashing it would hide that, so "
            "nothing was changed. Investigate with `memctl audit verify` first."
        )
    changes = op.create_table(
        _CHANGES,
        sa.Column("seq", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("change_format", sa.SmallInteger(), nullable=False),
        sa.Column("change_sealed", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("seq", name=f"pk_{_CHANGES}"),
    )
    assert changes is not None
    bind.execute(
        changes.insert().from_select(
            ["seq", "change_format", "change_sealed"],
            sa.select(table.c.seq, table.c.change_format, table.c.change_sealed).where(
                table.c.change_sealed.is_not(None)
            ),
        )
    )
    # As 0008 does for the log: empty tables leave no archive file behind.
    archive_before_drop(
        [
            name
            for name in (_CHANGES, "memory_event_keys")
            if bind.execute(sa.select(sa.func.count()).select_from(sa.table(name))).scalar_one()
        ],
        revision,
    )
    op.drop_table(_CHANGES)
    op.drop_table("memory_event_keys")
    bind.execute(sa.update(table).values(change_format=None, change_sealed=None))
    rechain(bind, event_table(with_target_digest=True), with_target_digests=True)
    with op.batch_alter_table("memory_events") as batch:
        batch.drop_column("change_sealed")
        batch.drop_column("change_format")
