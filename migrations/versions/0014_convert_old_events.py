"""Convert the identifier-only events (from before revision 0012) where the data still exists.

An old event cannot be given its own change after the fact: its rows may have been
changed since (what it wrote is gone), and its hash covers its bytes as written, so editing
them would need the chain re-hashed, which would also hide any tampering before the
upgrade. So the old events keep their bytes, and the chain verifies exactly as before:

- Upgrade appends, at the head of the chain, ``events.snapshot`` events: ordinary sealed
  events (``memory.store.changes``, format 1, hashed and chained like any other, so
  ``memctl audit verify`` checks them) that carry every current row of the source tables,
  per user under the user's data key (the flags and the run log under the operator's), at
  most ``_ROWS`` rows each. Their payload names the range of old events they stand for. A
  replay applies them like any event: the state at the upgrade, rebuilt.
- Each old event whose target still exists (a memory, preference, pattern, grant, session
  or a user's teams) is marked ``change_format = IN_SNAPSHOT`` (-1): its effect reaches a
  replay through the snapshot. The rest stay ``NOT_RECONSTRUCTIBLE`` (0): deleted since,
  redacted (forgotten), or a read. The hash does not cover ``change_format`` where no
  change is sealed, so the marks change no hash.

What a snapshot cannot give: the database as it was at a point before the upgrade (``replay
--until`` an old event rebuilds nothing of it); the API keys and idempotent answers, which
no event carries. Derived tables (keyword terms, embeddings, the change log) are rebuilt by
a replay, not carried.

The data keys need the deployment's event key: without ``$MEMORY_EVENT_KEY`` in the
environment of the upgrade nothing can be sealed, so nothing is converted (a warning says
so) and the old events stay not reconstructible.

Downgrade keeps every event: the snapshot events are valid events of revision 0012, and the
marks go back to ``NOT_RECONSTRUCTIBLE``. An upgrade after it appends a new snapshot.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-07
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.engine import Connection

from memory.store.changes import (
    EVENT_KEY_INFO,
    IN_SNAPSHOT,
    NOT_RECONSTRUCTIBLE,
    OPERATOR,
    event_key,
    upsert,
)
from memory.store.events import AUDIT_KEY_INFO, NewEvent, append_events, audit_key
from memory.store.tables import Base

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

logger = logging.getLogger("memory.migrations")

SNAPSHOT_OPERATION = "events.snapshot"
SNAPSHOT_AGENT = "migration"
_ROWS = 500
_T = Base.metadata.tables
# Each user's rows, parents before children; a child table is read through its parent.
_USER_TABLES: list[tuple[str, str | None, str | None]] = [
    # (table, parent table, the child's column naming the parent's id)
    ("entities", None, None),
    ("observations", "entities", "entity_id"),
    ("relations", None, None),
    ("memories", None, None),
    ("memory_metadata", "memories", "memory_id"),
    ("user_preferences", None, None),
    ("code_patterns", None, None),
    ("session_state", None, None),
    ("sharing_teams", None, None),
    ("sharing_grants", None, None),
]
_OPERATOR_TABLES = ["flag_state", "flag_session_overrides", "flag_audit", "maintenance_runs"]


def upgrade() -> None:
    bind = op.get_bind()
    events = _T["memory_events"]
    old = bind.execute(
        sa.select(sa.func.min(events.c.seq), sa.func.max(events.c.seq)).where(
            events.c.change_format == NOT_RECONSTRUCTIBLE
        )
    ).one()
    key = event_key(os.environ)
    if key is None:
        if old[0] is not None:
            logger.warning(
                "revision 0014: $MEMORY_EVENT_KEY is not set, so the events from before "
                "revision 0012 were not converted (they stay not reconstructible)"
            )
        return
    bind.info[AUDIT_KEY_INFO] = audit_key(os.environ)
    bind.info[EVENT_KEY_INFO] = key
    covers = [old[0], old[1]] if old[0] is not None else []
    _mark_existing(bind)
    # One event per part as it is read: a large store's snapshot is never all in memory.
    for owner, part, rows in _snapshots(bind):
        data = {"covers": covers, "part": part, "rows": len(rows)}
        append_events(
            bind, [NewEvent(owner, SNAPSHOT_AGENT, SNAPSHOT_OPERATION, "snapshot", data, rows)]
        )


def downgrade() -> None:
    events = _T["memory_events"]
    op.get_bind().execute(
        sa.update(events)
        .where(events.c.change_format == IN_SNAPSHOT)
        .values(change_format=NOT_RECONSTRUCTIBLE)
    )


def _users(bind: Connection) -> list[str]:
    found: set[str] = set()
    for name, parent, _ in _USER_TABLES:
        if parent is None:
            found.update(bind.execute(sa.select(_T[name].c.user_id).distinct()).scalars())
    return sorted(found)


def _snapshots(bind: Connection) -> Iterator[tuple[str, int, list[dict[str, Any]]]]:
    """(owner, part, change) of every snapshot event, ``_ROWS`` rows at most each."""
    for owner in [*_users(bind), OPERATOR]:
        rows: list[dict[str, Any]] = []
        part = 0
        for table, statement in _statements(owner):
            for row in bind.execute(statement).mappings():
                rows.append(upsert(table, row))
                if len(rows) == _ROWS:
                    part += 1
                    yield owner, part, rows
                    rows = []
        if rows:
            yield owner, part + 1, rows


def _statements(owner: str) -> Iterator[tuple[sa.Table, sa.Select[Any]]]:
    if owner == OPERATOR:
        for name in _OPERATOR_TABLES:
            table = _T[name]
            yield table, sa.select(table).order_by(*table.primary_key.columns)
        return
    for name, parent, link in _USER_TABLES:
        table = _T[name]
        statement = sa.select(table).order_by(*table.primary_key.columns)
        if parent is None:
            yield table, statement.where(table.c.user_id == owner)
        else:
            assert link is not None
            owned = sa.select(_T[parent].c.id).where(_T[parent].c.user_id == owner)
            yield table, statement.where(table.c[link].in_(owned))


def _mark_existing(bind: Connection) -> None:
    """Mark the old events whose target still exists (see the module docstring)."""
    events = _T["memory_events"]
    old = sa.and_(
        events.c.change_format == NOT_RECONSTRUCTIBLE,
        events.c.redacted.is_(False),
        events.c.user_id != OPERATOR,
    )
    by_id = {"memory": "memories", "pattern": "code_patterns", "grant": "sharing_grants"}
    by_name = {"preference": ("user_preferences", "key"), "session": ("session_state",
                                                                       "session_id")}
    last = 0
    while True:
        rows = bind.execute(
            sa.select(events.c.seq, events.c.user_id, events.c.target)
            .where(old, events.c.seq > last)
            .order_by(events.c.seq)
            .limit(1000)
        ).all()
        if not rows:
            return
        last = rows[-1].seq
        marked = [row.seq for row in rows if _exists(bind, row.user_id, row.target, by_id,
                                                     by_name)]
        if marked:
            bind.execute(
                sa.update(events).where(events.c.seq.in_(marked)).values(change_format=IN_SNAPSHOT)
            )


def _exists(
    bind: Connection,
    user: str,
    target: str,
    by_id: dict[str, str],
    by_name: dict[str, tuple[str, str]],
) -> bool:
    kind, _, name = target.partition(":")
    if kind in by_id and name.isdigit():
        table = _T[by_id[kind]]
        condition = sa.and_(table.c.id == int(name), table.c.user_id == user)
    elif kind in by_name:
        table = _T[by_name[kind][0]]
        condition = sa.and_(table.c.user_id == user, table.c[by_name[kind][1]] == name)
    elif target == "teams":
        table = _T["sharing_teams"]
        condition = table.c.user_id == user
    else:
        return False
    return bind.execute(sa.select(sa.exists().where(condition))).scalar() is True
