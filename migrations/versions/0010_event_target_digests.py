"""The event chain covers a digest of each event's target, so that forgetting a user can
blank the target (a preference key, a session id) and the chain still verifies.

Upgrade adds ``memory_events.target_digest``, checks the chain in its old form (the hash
covers the target), then re-hashes it in the new form (the hash covers the digest), and
blanks the targets of events already redacted (their users were forgotten before targets
were redacted too). Downgrade checks the chain in the new form, re-hashes it in the old form
over the targets as they are, and drops the column. Every event is kept both ways; only
targets of forgotten users, blanked on the way up, stay blank.

Re-hashing makes any chain verify, so both directions refuse a chain that does not verify
before they start: rewriting it would erase the evidence (``memctl audit verify`` names the
first bad event).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from memory.core.errors import SchemaError
from memory.store.events import event_table, rechain, verify_chain

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def _refuse_a_broken_chain(table: sa.Table, direction: str) -> None:
    report = verify_chain(op.get_bind(), table)
    if not report.ok:
        raise SchemaError(
            f"{direction} {revision}: the event chain does not verify (first bad event "
            f"{report.first_bad_seq}: {report.reason}); re-hashing it would hide that, so "
            "nothing was changed. Investigate with `memctl audit verify` first."
        )


def upgrade() -> None:
    op.add_column("memory_events", sa.Column("target_digest", sa.String(64), nullable=True))
    table = event_table(with_target_digest=True)
    _refuse_a_broken_chain(table, "upgrading to")
    rechain(op.get_bind(), table, with_target_digests=True)


def downgrade() -> None:
    table = event_table(with_target_digest=True)
    _refuse_a_broken_chain(table, "downgrading")
    rechain(op.get_bind(), table, with_target_digests=False)
    with op.batch_alter_table("memory_events") as batch:
        batch.drop_column("target_digest")
