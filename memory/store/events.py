"""The event log: every write appends a hash-chained event in the same transaction.

The store (and retention, and sharing) call ``append_events`` inside the transaction that
makes the change, so the log and the data can never disagree; these functions write SQL
only on a connection they are handed, as ``memory.store.indexing`` does.

The chain. Event ``n`` stores ``prev_hash`` (the hash of event ``n - 1``, 64 zeros for the
first) and ``hash = sha256(canonical_json([seq, created_at, agent, operation, target_digest,
payload_digest, prev_hash]))``, where ``payload_digest = sha256(canonical_json({"user":
user, "data": data}))`` and ``target_digest = sha256(canonical_json({"user": user,
"target": target}))``. Editing any field, deleting an event (its number goes missing and
the next ``prev_hash`` no longer matches) or reordering events (the numbers are hashed) breaks
the chain at the first affected event, which ``verify_chain`` reports. Truncating the newest
events cannot be seen from the log alone; the published sequence numbers (subscribers
remember the last one) are the witness for that.

Why digests beside the payload and the target: forgetting a user must remove their data
from the log but keep the log verifiable. Targets name preference keys and session ids
(``preference:<key>``, ``session:<id>``), which can identify a person as well as a payload
can. Redaction blanks ``user_id``, ``target`` and ``payload_json`` and sets ``redacted``,
keeping ``payload_digest`` and ``target_digest``: the chain still verifies (the hash covers
the digests, not the data), and a SHA-256 digest of a JSON document cannot be turned back
into it. What stays readable is the agent and the operation, which identify no person.

Keyed digests. A plain SHA-256 digest of ``{"user", "target"}`` lets anyone who can read
the log test a guess: the right user id and a plausible target (``memory:17``) reproduce
the digest of a forgotten user's event. With an audit key configured
(``$MEMORY_AUDIT_KEY``, a per-deployment secret kept outside the database: an attacker
who reads the database must not read the key), digests are HMAC-SHA256 under that key, and
a guess cannot be checked without it. Verification needs the key to check the digests of
events that are not redacted (their user, target and payload against the digest); events
written before the key was configured keep plain digests and verify as such. The chain
hash itself stays unkeyed: anyone may check that the log is linked and complete. Events
redacted before a key was configured keep their plain digests (they cannot be re-keyed:
their data is gone).

Events written before revision 0010 have no ``target_digest`` (NULL): their hash covers the
target itself. Revision 0010 re-hashes the whole chain in the new form (after verifying it
in the old one) and ``redact_user`` does the same if such rows come back from an archive,
so that their targets can be redacted too.

So that redaction cannot be used to hide an edit, every redaction appends an
``events.redact`` event listing the redacted sequence numbers, and ``verify_chain`` rejects
a redacted event that no later redaction event covers.

Concurrency. The chain is linear: the head is read and the next number written while
holding the database's write lock (SQLite's ``BEGIN IMMEDIATE`` serialises writers; on
PostgreSQL a transaction-level advisory lock does), and that lock is held until commit, so
events commit in sequence order and a committed event ``n`` means ``1..n`` are committed.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, RowMapping

from memory.core.errors import InvalidInputError
from memory.core.inputs import canonical_json, canonical_text
from memory.core.types import MemoryEvent
from memory.store.changes import CHANGE_FORMAT, data_key, memory_removed, seal_change
from memory.store.synclog import record_memory_changes
from memory.store.tables import Base, UTCDateTime, utcnow

events = Base.metadata.tables["memory_events"]
logger = logging.getLogger("memory.events")

# The prefix of every store's updates channel (``store_channel``).
CHANNEL = "memory:updates"
GENESIS_HASH = "0" * 64
REDACT_OPERATION = "events.redact"
# The deployment's secret for keyed digests, kept outside the database (see the module
# docstring), and where a transaction finds it (``memory.store.db.Database`` puts it there).
AUDIT_KEY_ENV = "MEMORY_AUDIT_KEY"
AUDIT_KEY_INFO = "memory.audit_key"
MIN_AUDIT_KEY_CHARS = 32
# A constant key for pg_advisory_xact_lock: every writer of the chain takes this one lock.
_CHAIN_LOCK_KEY = 0x6D656D5F65767473  # "mem_evts"
# Events committed but not yet published, kept on the connection until the commit is done
# (``memory.store.db.Database`` hands them to the publisher, then forgets them).
PENDING_KEY = "memory.pending_events"
_BATCH = 1000


@dataclass(frozen=True, slots=True)
class NewEvent:
    """An event before it is numbered: who acted, what they did to what, and details."""

    user: str
    agent: str
    operation: str
    target: str
    data: dict[str, Any]
    # The rows the write left (``memory.store.changes``), sealed under the user's data key
    # when the deployment has an event key; what a replay applies.
    change: list[dict[str, Any]] | None = None


def audit_key(environ: Mapping[str, str]) -> bytes | None:
    """The deployment's audit key from ``$MEMORY_AUDIT_KEY`` (None if unset); at least
    32 characters, or ``InvalidInputError``. See "Keyed digests" in the module docstring."""
    value = environ.get(AUDIT_KEY_ENV, "")
    if not value:
        return None
    if len(value) < MIN_AUDIT_KEY_CHARS:
        raise InvalidInputError(
            f"{AUDIT_KEY_ENV}: the audit key must be at least {MIN_AUDIT_KEY_CHARS} characters "
            f"(it has {len(value)}); generate one with: python -c "
            "'import secrets; print(secrets.token_hex(32))'"
        )
    return value.encode("utf-8")


def _digest(key: bytes | None, document: dict[str, Any]) -> str:
    text = canonical_text(document).encode("utf-8")
    if key is None:
        return hashlib.sha256(text).hexdigest()
    return hmac.new(key, text, hashlib.sha256).hexdigest()


def payload_digest(user: str, data: dict[str, Any], key: bytes | None = None) -> str:
    """The digest the chain covers instead of the user id and payload themselves (keyed
    with the audit key when one is configured)."""
    return _digest(key, {"user": user, "data": data})


def target_digest(user: str, target: str, key: bytes | None = None) -> str:
    """The digest the chain covers instead of the target itself (see the module docstring)."""
    return _digest(key, {"user": user, "target": target})


def _key(connection: Connection) -> bytes | None:
    key: bytes | None = connection.info.get(AUDIT_KEY_INFO)
    return key


def event_hash(
    seq: int,
    created_at: datetime,
    agent: str,
    operation: str,
    target: str,
    digest: str,
    prev_hash: str,
    change_format: int | None = None,
    change_sealed: str | None = None,
) -> str:
    """The chain hash of one event (see the module docstring): ``target`` is the target's
    digest, or for an event written before revision 0010, the target itself. An event that
    carries a sealed change (revision 0012) is hashed with its format and sealed bytes, so
    the chain covers the ciphertext and still verifies once the key is shredded."""
    fields: list[Any] = [seq, created_at.isoformat(), agent, operation, target, digest, prev_hash]
    if change_sealed is not None:
        fields += [change_format, change_sealed]
    return _sha256(canonical_text(fields))


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def lock_chain(connection: Connection) -> None:
    """Hold the chain's lock until the transaction ends (PostgreSQL; SQLite has one
    writer). Every writer of the log takes it first; a writer that also locks the sync
    node takes this one before it, so the two are always taken in the same order."""
    if connection.dialect.name == "postgresql":
        # Held until commit or rollback: no other writer reads the head in between.
        connection.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _CHAIN_LOCK_KEY})


def chain_head(connection: Connection) -> tuple[int, str]:
    """The newest event's number and hash ((0, genesis) for an empty log)."""
    # max(seq) is answered from the primary key's last entry on both backends (an indexed
    # lookup in the plan), and the row is then fetched by its key.
    newest = sa.select(sa.func.max(events.c.seq)).scalar_subquery()
    row = connection.execute(
        sa.select(events.c.seq, events.c.hash).where(events.c.seq == newest)
    ).first()
    return (row.seq, row.hash) if row is not None else (0, GENESIS_HASH)


def append_events(connection: Connection, drafts: Sequence[NewEvent]) -> list[MemoryEvent]:
    """Append ``drafts`` to the chain inside the caller's (write) transaction.

    The events are published on ``memory:updates`` once that transaction has committed.
    """
    if not drafts:
        return []
    lock_chain(connection)
    seq, prev_hash = chain_head(connection)
    key = _key(connection)
    data_keys: dict[str, bytes | None] = {}
    now = utcnow()
    rows = []
    appended = []
    for draft in drafts:
        seq += 1
        digest = payload_digest(draft.user, draft.data, key)
        covered_target = target_digest(draft.user, draft.target, key)
        sealed = None
        if draft.change is not None:
            if draft.user not in data_keys:
                data_keys[draft.user] = data_key(connection, draft.user, create=True)
            user_key = data_keys[draft.user]
            if user_key is not None:
                sealed = seal_change(user_key, seq, draft.user, draft.change)
        change_format = CHANGE_FORMAT if sealed is not None else None
        digest_hash = event_hash(
            seq, now, draft.agent, draft.operation, covered_target, digest, prev_hash,
            change_format, sealed,
        )
        rows.append(
            {
                "seq": seq,
                "created_at": now,
                "user_id": draft.user,
                "agent_id": draft.agent,
                "operation": draft.operation,
                "target": draft.target,
                "target_digest": covered_target,
                "payload_json": canonical_json(draft.data),
                "payload_digest": digest,
                "redacted": False,
                "prev_hash": prev_hash,
                "hash": digest_hash,
                "change_format": change_format,
                "change_sealed": sealed,
            }
        )
        appended.append(
            MemoryEvent(seq, now, draft.user, draft.agent, draft.operation, draft.target,
                        draft.data)
        )
        prev_hash = digest_hash
    connection.execute(events.insert(), rows)
    connection.info.setdefault(PENDING_KEY, []).extend(appended)
    # The memory rows these events changed become this node's sync changes, here, once.
    record_memory_changes(connection, drafts)
    return appended


def append_event(
    connection: Connection, user: str, agent: str, operation: str, target: str,
    data: dict[str, Any], change: list[dict[str, Any]] | None = None,
) -> MemoryEvent:
    """Append one event (see ``append_events``)."""
    return append_events(connection, [NewEvent(user, agent, operation, target, data, change)])[0]


def memory_target(memory_id: int) -> str:
    """The target of an event about one memory."""
    return f"memory:{memory_id}"


def record_removals(
    connection: Connection, agent: str, operation: str, removed: Iterable[tuple[str, int]]
) -> list[MemoryEvent]:
    """One ``operation`` event per user for memories a maintenance job removed in bulk,
    listing their ids (one event per memory would multiply the log for no reader)."""
    by_user: dict[str, list[int]] = {}
    for user, memory_id in removed:
        by_user.setdefault(user, []).append(memory_id)
    return append_events(
        connection,
        [
            NewEvent(
                user, agent, operation, "memories", {"memory_ids": sorted(ids)},
                [entry for memory_id in sorted(ids) for entry in memory_removed(memory_id)],
            )
            for user, ids in sorted(by_user.items())
        ],
    )


def record_reads(
    connection: Connection, reader_user: str, reader_agent: str, memories: Iterable[Any]
) -> list[MemoryEvent]:
    """Record that ``reader_agent`` read memories another agent owns (``memory.read``).

    ``memories`` are records with ``id`` and ``agent_id``; those of the reader itself are
    not recorded. Call it inside a write transaction (a read that is logged is a write).
    """
    drafts = [
        NewEvent(
            reader_user,
            reader_agent,
            "memory.read",
            memory_target(record.id),
            {"memory_id": record.id, "owner_agent": record.agent_id},
        )
        for record in memories
        if record.agent_id != reader_agent
    ]
    return append_events(connection, drafts)


def redact_user(connection: Connection, user: str, agent: str) -> int:
    """Redact every event of ``user`` (forgetting them), keeping the chain verifiable.

    Blanks the user id, target and payload of each, keeps their digests, and appends one
    ``events.redact`` event (by ``agent``, with no user) that lists the redacted sequence
    numbers as ranges. Returns how many events were redacted.
    """
    # With the chain's lock held no event can be appended until commit, so the events read
    # here are all there are; exactly these are redacted and listed.
    lock_chain(connection)
    seqs = list(
        connection.execute(
            sa.select(events.c.seq).where(events.c.user_id == user).order_by(events.c.seq)
        ).scalars()
    )
    if not seqs:
        return 0
    if not adopt_legacy_events(connection, user):
        logger.warning(
            "forget: the event chain does not verify, so the user's events from before "
            "revision 0010 cannot be re-hashed; they are redacted anyway and will not verify"
        )
    for start in range(0, len(seqs), _BATCH):
        connection.execute(
            sa.update(events)
            .where(events.c.seq.in_(seqs[start : start + _BATCH]))
            .values(user_id="", target="", payload_json=None, redacted=True)
        )
    append_event(connection, "", agent, REDACT_OPERATION, "events", {"seqs": _ranges(seqs)})
    return len(seqs)


def adopt_legacy_events(connection: Connection, user: str | None = None) -> bool:
    """Bring events from before revision 0010 (restored from an archive; of ``user`` if
    given) into the current form: target digests, re-hashed chain. Returns False, and
    changes nothing, if there were some but the chain does not verify: re-hashing would
    hide the break."""
    legacy = sa.select(events.c.seq).where(events.c.target_digest.is_(None))
    if user is not None:
        legacy = legacy.where(events.c.user_id == user)
    if connection.execute(legacy.limit(1)).first() is None:
        return True
    if not verify_chain(connection).ok:
        return False
    rechain(connection, events, with_target_digests=True)
    return True


def event_table(with_target_digest: bool, with_changes: bool = False) -> sa.Table:
    """``memory_events`` as revision 0012 (``with_changes``), 0010 (``with_target_digest``)
    or 0008 defines it, for the migrations that move the chain from one form to another."""
    columns: list[sa.Column[Any]] = [
        sa.Column("seq", sa.BigInteger(), primary_key=True),
        sa.Column("created_at", UTCDateTime()),
        sa.Column("user_id", sa.String()),
        sa.Column("agent_id", sa.String()),
        sa.Column("operation", sa.String()),
        sa.Column("target", sa.String()),
        sa.Column("payload_json", sa.Text()),
        sa.Column("payload_digest", sa.String()),
        sa.Column("redacted", sa.Boolean()),
        sa.Column("prev_hash", sa.String()),
        sa.Column("hash", sa.String()),
    ]
    if with_target_digest:
        columns.append(sa.Column("target_digest", sa.String()))
    if with_changes:
        columns.append(sa.Column("change_format", sa.SmallInteger()))
        columns.append(sa.Column("change_sealed", sa.Text()))
    return sa.Table("memory_events", sa.MetaData(), *columns)


def rechain(connection: Connection, table: sa.Table, *, with_target_digests: bool) -> int:
    """Recompute every ``hash`` and ``prev_hash`` of the log in ``table``, in one of its two
    forms; returns how many events changed.

    ``with_target_digests``: the form of revision 0010. Each event gets its target digest
    (from its user and target as stored), the targets of redacted events are blanked, and
    the hash covers the digest. Otherwise, the form of revision 0008: the hash covers the
    target as stored (blank for redacted events). The caller verifies the chain first:
    this makes any chain verify, a broken one included.
    """
    has_digest = "target_digest" in table.c
    updates: list[dict[str, Any]] = []
    changed, last, prev_hash = 0, 0, GENESIS_HASH
    while True:
        rows = connection.execute(
            sa.select(table).where(table.c.seq > last).order_by(table.c.seq).limit(_BATCH)
        ).mappings().all()
        if not rows:
            break
        for row in rows:
            values: dict[str, Any] = {"target": row["target"]}
            if with_target_digests:
                digest = row.get("target_digest") or target_digest(row["user_id"], row["target"])
                values["target_digest"] = digest
                if row["redacted"]:
                    values["target"] = ""
                covered = digest
            else:
                if has_digest:
                    values["target_digest"] = None
                covered = row["target"]
            values["prev_hash"] = prev_hash
            values["hash"] = event_hash(
                row["seq"], row["created_at"], row["agent_id"], row["operation"], covered,
                row["payload_digest"], prev_hash, row.get("change_format"),
                row.get("change_sealed"),
            )
            if any(row[name] != value for name, value in values.items()):
                updates.append({"at_seq": row["seq"], **values})
                changed += 1
            prev_hash = values["hash"]
        last = rows[-1]["seq"]
        _flush(connection, table, updates)
    return changed


def _flush(connection: Connection, table: sa.Table, updates: list[dict[str, Any]]) -> None:
    if not updates:
        return
    # Bound under other names than the columns': SQLAlchemy reserves those for SET.
    names = [name for name in updates[0] if name != "at_seq"]
    statement = (
        sa.update(table)
        .where(table.c.seq == sa.bindparam("at_seq"))
        .values({name: sa.bindparam(f"new_{name}") for name in names})
    )
    connection.execute(
        statement,
        [
            {"at_seq": update["at_seq"], **{f"new_{name}": update[name] for name in names}}
            for update in updates
        ],
    )
    updates.clear()


def _ranges(numbers: Sequence[int]) -> list[list[int]]:
    ranges: list[list[int]] = []
    for number in numbers:
        if ranges and ranges[-1][1] == number - 1:
            ranges[-1][1] = number
        else:
            ranges.append([number, number])
    return ranges


def _event(row: RowMapping) -> MemoryEvent:
    payload = row["payload_json"]
    return MemoryEvent(
        seq=row["seq"],
        created_at=row["created_at"],
        user_id=row["user_id"],
        agent_id=row["agent_id"],
        operation=row["operation"],
        target=row["target"],
        data=json.loads(payload) if payload is not None else None,
        redacted=row["redacted"],
    )


def events_after(connection: Connection, seq: int, limit: int = _BATCH) -> list[MemoryEvent]:
    """Committed events numbered above ``seq``, in order."""
    statement = sa.select(events).where(events.c.seq > seq)
    rows = connection.execute(statement.order_by(events.c.seq).limit(limit)).mappings()
    return [_event(row) for row in rows]


def events_of(connection: Connection, target: str) -> list[MemoryEvent]:
    """Every event about ``target``, in order."""
    rows = connection.execute(
        sa.select(events).where(events.c.target == target).order_by(events.c.seq)
    ).mappings()
    return [_event(row) for row in rows]


def store_channel(connection: Connection) -> str:
    """The updates channel of the database ``connection`` is on: ``memory:updates:<digest>``.

    The digest is of what identifies the database wherever it is opened from: on
    PostgreSQL the cluster's system identifier and the database's oid, on SQLite the
    file's real path (a database in memory is private to its engine: a random channel). A
    digest, so that no path or host name is published on a bus others share.
    """
    if connection.dialect.name == "postgresql":
        identity = str(
            connection.execute(
                sa.text(
                    "SELECT system_identifier::text || '/' || (SELECT oid FROM pg_database "
                    "WHERE datname = current_database())::text FROM pg_control_system()"
                )
            ).scalar_one()
        )
    else:
        files = {row[1]: row[2] for row in connection.exec_driver_sql("PRAGMA database_list")}
        path = files.get("main") or ""
        identity = os.path.realpath(path) if path else f"memory/{uuid.uuid4()}"
    return f"{CHANNEL}:{_sha256(f'{connection.dialect.name}:{identity}')[:16]}"


def latest_seq(connection: Connection, user: str | None = None) -> int:
    """The newest sequence number (of ``user``'s events, if given); 0 for none."""
    statement = sa.select(sa.func.max(events.c.seq))
    if user is not None:
        statement = statement.where(events.c.user_id == user)
    return int(connection.execute(statement).scalar() or 0)


@dataclass(frozen=True, slots=True)
class ChainReport:
    """What ``verify_chain`` found: events checked and the first bad one, if any."""

    checked: int
    first_bad_seq: int | None = None
    reason: str | None = None

    @property
    def ok(self) -> bool:
        return self.first_bad_seq is None


def verify_chain(connection: Connection, table: sa.Table = events) -> ChainReport:
    """Check every event against its predecessor, its hash and its digests.

    Reports the first event that is wrong: edited (hash or digest mismatch), missing or
    moved (a number out of sequence, or a ``prev_hash`` that is not its predecessor's
    hash), or redacted without a redaction event that lists it. ``table`` is the log as a
    migration sees it (``event_table``), if not the current one.
    """
    checked = 0
    for _row, bad in walk_chain(connection, table):
        if bad is not None:
            return bad
        checked += 1
    return ChainReport(checked)


def walk_chain(
    connection: Connection, table: sa.Table = events
) -> Iterator[tuple[RowMapping, ChainReport | None]]:
    """Every event in order, each with None while the chain holds; the first bad event
    comes with the report ``verify_chain`` gives for it, and the walk ends there. A replay
    applies events as this hands them out, so it stops at the first bad link."""
    covered = _redaction_coverage(connection, table)
    # Events written before an audit key was configured have plain digests.
    key = _key(connection)
    keys = (None,) if key is None else (key, None)
    expected_seq, prev_hash, checked = 1, GENESIS_HASH, 0
    last = 0
    while True:
        rows = connection.execute(
            sa.select(table).where(table.c.seq > last).order_by(table.c.seq).limit(_BATCH)
        ).mappings().all()
        if not rows:
            return
        for row in rows:
            problem = _problem(row, expected_seq, prev_hash, covered, keys)
            if problem is not None:
                yield row, ChainReport(checked, min(row["seq"], expected_seq), problem)
                return
            yield row, None
            checked += 1
            expected_seq, prev_hash = row["seq"] + 1, row["hash"]
        last = rows[-1]["seq"]


def _problem(
    row: RowMapping,
    expected_seq: int,
    prev_hash: str,
    covered: list[tuple[int, int, int]],
    keys: tuple[bytes | None, ...],
) -> str | None:
    seq = row["seq"]
    digest = row.get("target_digest")
    if seq != expected_seq:
        return f"event {expected_seq} is missing (the next event is {seq})"
    if row["prev_hash"] != prev_hash:
        return f"event {seq} does not follow event {seq - 1} (prev_hash differs)"
    if row["redacted"]:
        if row["user_id"] or row["payload_json"] is not None or (digest and row["target"]):
            return f"event {seq} is marked redacted but still holds a user, target or payload"
        if not any(low <= seq <= high and by > seq for low, high, by in covered):
            return f"event {seq} is redacted, but no later redaction event lists it"
    else:
        data = json.loads(row["payload_json"]) if row["payload_json"] is not None else None
        if data is None or row["payload_digest"] not in {
            payload_digest(row["user_id"], data, key) for key in keys
        }:
            return (
                f"event {seq}: the user or payload does not match its digest (edited, or "
                f"written with another {AUDIT_KEY_ENV})"
            )
        if digest is not None and digest not in {
            target_digest(row["user_id"], row["target"], key) for key in keys
        }:
            return (
                f"event {seq}: the target does not match its digest (edited, or written "
                f"with another {AUDIT_KEY_ENV})"
            )
    recomputed = event_hash(
        seq, row["created_at"], row["agent_id"], row["operation"],
        digest if digest is not None else row["target"], row["payload_digest"], row["prev_hash"],
        row.get("change_format"), row.get("change_sealed"),
    )
    if recomputed != row["hash"]:
        return f"event {seq}: its hash does not match its contents (edited)"
    return None


def _redaction_coverage(connection: Connection, table: sa.Table) -> list[tuple[int, int, int]]:
    """(low, high, redaction seq) for every range a redaction event lists."""
    found: list[tuple[int, int, int]] = []
    rows = connection.execute(
        sa.select(table.c.seq, table.c.payload_json).where(
            table.c.operation == REDACT_OPERATION
        )
    )
    for row in rows:
        try:
            ranges = json.loads(row.payload_json or "{}").get("seqs", [])
            found.extend((int(low), int(high), row.seq) for low, high in ranges)
        except (ValueError, TypeError, AttributeError):
            continue  # a mangled redaction event fails its own digest check in the walk
    return found
