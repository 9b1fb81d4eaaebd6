"""Rebuild a database from another's event log (``memory.ops.replay``, ``memctl replay``).

``replay`` walks the source's chain in order (``memory.store.events.walk_chain``) inside
one read transaction, so it reads one consistent log, and for every event that holds
(up to ``until_seq`` / ``until_time``, if given):

- copies the event itself, verbatim, into the target's log (its chain then verifies there
  as it did in the source), and the wrapped data key of its user the first time the user
  appears (the same ``$MEMORY_EVENT_KEY`` opens it there);
- opens the change it carries with its user's data key and applies the rows
  (``memory.store.changes``): an upsert on the table's primary key, or a delete of the
  rows matching the key it lists.

It stops at the first event that breaks the chain, and reports it: nothing after a bad
link is trusted. Events whose user was forgotten (their key is gone) cannot be opened and
are counted, not applied; so are events that carry no change (written before revision 0012,
without an event key, or by writes that do not carry one yet, listed by operation), and
those from before 0012 that the snapshot revision 0014 appended stands for (``in_snapshot``).

Derived tables are rebuilt, not replayed: keyword terms and the change log
(``rebuild_missing_terms``; on SQLite the FTS5 triggers fire on insert), and the
embeddings by the caller (``memory.ops.replay`` re-embeds with the store's embedder).

The target is empty (a fresh database, or one with a schema and no rows), or a restored
backup of the source: its log must then be a prefix of the source's (its newest event has
the same number and hash there), and the replay goes on from the event after it. That is
point-in-time recovery past the last backup (``memctl restore DIR --replay-until``). The
target's batches commit as they go (``_BATCH`` events each), so a replay that stops leaves
the events before the bad link applied: the point in time just before it.
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, RowMapping

from memory.core.errors import InvalidInputError
from memory.store.archive import advance_sequence
from memory.store.backup import require_empty
from memory.store.changes import CHANGE_FORMAT, IN_SNAPSHOT, data_key, keys_table, open_change
from memory.store.db import Database
from memory.store.events import ChainReport, chain_head, events, walk_chain
from memory.store.indexing import rebuild_missing_terms
from memory.store.tables import Base, UTCDateTime

_BATCH = 1000
# Operations whose events carry nothing to apply by design: the log's own bookkeeping
# (a redaction, a forget: their rows are absent from the source already), and reads.
_NOTHING_TO_APPLY = frozenset(
    {"events.redact", "user.forget", "memory.read", "context.patch", "context.conflict"}
)


@dataclass(frozen=True, slots=True)
class ReplayReport:
    """What ``replay`` did, and where it stopped if the chain broke."""

    events: int  # copied into the target's log
    applied: int  # whose change was applied
    last_seq: int  # the newest event replayed (0: none)
    forgotten: int  # whose user's key is gone (forgotten): not applied
    without_change: dict[str, int] = field(default_factory=dict)  # by operation
    terms_rebuilt: int = 0
    broken: ChainReport | None = None  # the first bad event, if the walk met one
    in_snapshot: int = 0  # from before 0012, their rows in revision 0014's snapshot

    @property
    def ok(self) -> bool:
        return self.broken is None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready (``memctl replay --json``)."""
        return {
            "ok": self.ok,
            "events": self.events,
            "applied": self.applied,
            "last_seq": self.last_seq,
            "forgotten": self.forgotten,
            "without_change": dict(sorted(self.without_change.items())),
            "terms_rebuilt": self.terms_rebuilt,
            "in_snapshot": self.in_snapshot,
            "first_bad_seq": self.broken.first_bad_seq if self.broken else None,
            "reason": self.broken.reason if self.broken else None,
        }


def replay(
    source: Database,
    target: Database,
    *,
    until_seq: int | None = None,
    until_time: datetime | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> ReplayReport:
    """Rebuild ``target`` (empty, or a backup of the source) from ``source``'s log (see the
    module docstring). ``progress`` is called with the newest event number done and the
    number it will end at, as batches commit."""
    if until_time is not None and until_time.tzinfo is None:
        raise InvalidInputError("replay --until: give the time with its zone (e.g. ...Z)")
    return source.read(
        lambda connection: _replay(connection, target, until_seq, until_time, progress)
    )


def _replay(
    reader: Connection,
    target: Database,
    until_seq: int | None,
    until_time: datetime | None,
    progress: Callable[[int, int], None] | None,
) -> ReplayReport:
    start_seq, start_hash = target.read(chain_head)
    end = chain_head(reader)[0]
    if until_seq is not None:
        end = min(end, until_seq)
    if start_seq == 0:
        require_empty(target.engine)
    keys: dict[str, bytes | None] = {}
    copied_keys = set(target.read(
        lambda connection: connection.execute(sa.select(keys_table.c.user_id)).scalars().all()
    ))
    without: Counter[str] = Counter()
    copied = applied = forgotten = in_snapshot = last = 0
    broken: ChainReport | None = None
    batch: list[RowMapping] = []
    touched: set[str] = set()

    def flush() -> None:
        nonlocal applied, forgotten, in_snapshot
        with target.engine.begin() as writer:
            writer.execute(events.insert(), [dict(row) for row in batch])
            statements = _Statements(writer.dialect.name)
            for row in batch:
                outcome = _apply(reader, writer, row, keys, copied_keys, statements)
                if outcome == "applied":
                    applied += 1
                elif outcome == "forgotten":
                    forgotten += 1
                elif outcome == "in_snapshot":
                    in_snapshot += 1
                elif outcome == "without":
                    without[row["operation"]] += 1
            statements.run(writer)
            touched.update(statements.upserted)
        batch.clear()
        if progress is not None:
            progress(last, end)

    for row, bad in walk_chain(reader):
        if bad is not None:
            broken = bad
            break
        if row["seq"] <= start_seq:
            if row["seq"] == start_seq and row["hash"] != start_hash:
                raise InvalidInputError(
                    f"replay: the target's log is not a prefix of the source's (its event "
                    f"{start_seq} differs); replay into an empty database or a backup of "
                    "this store"
                )
            last = row["seq"]
            continue
        if (until_seq is not None and row["seq"] > until_seq) or (
            until_time is not None and row["created_at"] > until_time
        ):
            break
        batch.append(row)
        copied += 1
        last = row["seq"]
        if len(batch) >= _BATCH:
            flush()
    if batch:
        flush()
    with target.engine.begin() as writer:
        for name in sorted(touched):
            advance_sequence(writer, Base.metadata.tables[name])
        terms = rebuild_missing_terms(writer)
    return ReplayReport(
        copied, applied, last, forgotten, dict(without), terms, broken, in_snapshot
    )


def _apply(
    reader: Connection,
    writer: Connection,
    row: RowMapping,
    keys: dict[str, bytes | None],
    copied_keys: set[str],
    statements: _Statements,
) -> str:
    sealed = row["change_sealed"]
    if sealed is None:
        if row["change_format"] == IN_SNAPSHOT:
            return "in_snapshot"
        return "nothing" if row["operation"] in _NOTHING_TO_APPLY else "without"
    if row["change_format"] != CHANGE_FORMAT:
        raise InvalidInputError(
            f"event {row['seq']}: change format {row['change_format']} is not one this "
            f"version reads ({CHANGE_FORMAT}); upgrade tiered-memory to replay this log"
        )
    if row["redacted"]:  # its user was forgotten: the key is gone, the user id blanked
        return "forgotten"
    user = row["user_id"]  # OPERATOR ("") for the flags and the maintenance run log
    if user not in keys:
        keys[user] = data_key(reader, user, create=False)
    key = keys[user]
    if key is None:
        return "forgotten"
    if user not in copied_keys:
        wrapped = reader.execute(
            sa.select(keys_table).where(keys_table.c.user_id == user)
        ).mappings().one()
        writer.execute(keys_table.insert(), dict(wrapped))
        copied_keys.add(user)
    for entry in open_change(key, row["seq"], user, sealed):
        table = Base.metadata.tables[entry["table"]]
        if entry["op"] == "upsert":
            statements.add(table, "upsert", _decoded(table, entry["row"]))
        else:
            statements.add(table, "delete", _decoded(table, entry["key"]))
    return "applied"


def _decoded(table: sa.Table, values: dict[str, Any]) -> dict[str, Any]:
    times = _time_columns(table)
    return {
        name: datetime.fromisoformat(value)
        if name in times and isinstance(value, str)
        else value
        for name, value in values.items()
    }


@functools.cache
def _time_columns(table: sa.Table) -> frozenset[str]:
    """The columns of ``table`` whose values a change holds as ISO 8601 text (looked up
    once per table: per value, it was a sixth of a replay's time)."""
    return frozenset(
        column.name for column in table.c if isinstance(column.type, sa.DateTime | UTCDateTime)
    )


class _Statements:
    """The row changes of one batch, in order, run as few statements as the order allows:
    consecutive changes of the same shape (table, operation, columns) go in one
    executemany, with one statement built per shape (building one per row was the
    replay's main cost)."""

    def __init__(self, dialect: str) -> None:
        self._insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
        self._built: dict[tuple[str, str, tuple[str, ...]], Any] = {}
        self._runs: list[tuple[Any, list[dict[str, Any]]]] = []
        self._last: tuple[str, str, tuple[str, ...]] | None = None
        self.upserted: set[str] = set()

    def add(self, table: sa.Table, op: str, values: dict[str, Any]) -> None:
        shape = (table.name, op, tuple(values))
        if shape != self._last:
            if shape not in self._built:
                self._built[shape] = self._build(table, op, shape[2])
            self._runs.append((self._built[shape], []))
            self._last = shape
        if op == "upsert":
            self._runs[-1][1].append(values)
            self.upserted.add(table.name)
        else:
            self._runs[-1][1].append({f"key_{name}": value for name, value in values.items()})

    def _build(self, table: sa.Table, op: str, columns: tuple[str, ...]) -> Any:
        if op == "delete":
            # Bound under other names than the columns' (as ``events._flush`` does).
            return sa.delete(table).where(
                *(table.c[name] == sa.bindparam(f"key_{name}") for name in columns)
            )
        insert = self._insert(table)
        key = [column.name for column in table.primary_key.columns]
        rest = {name: insert.excluded[name] for name in columns if name not in key}
        if not rest:
            return insert.on_conflict_do_nothing(index_elements=key)
        return insert.on_conflict_do_update(index_elements=key, set_=rest)

    def run(self, writer: Connection) -> None:
        for statement, rows in self._runs:
            writer.execute(statement, rows)
        self._runs.clear()
        self._last = None
