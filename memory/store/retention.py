"""Retention: how long memories and session state are kept, and the cleanup that enforces it.

``cleanup(memory, policy)`` runs a list of named steps, in this order (``STEPS``):

``expired_memories``
    Memories of any tier whose ``expires_at`` has passed. Removed without a summary: a TTL
    is the writer saying the memory should be gone.
``working_memories``
    Working memories older than the working window (24 h by default). Per (user, agent,
    session) they are consolidated into one episodic memory, written by the summarizer
    (``extractive_summary`` by default), whose metadata ``consolidated_from`` lists the ids it
    replaces; the summary is written in the same transaction that deletes them, so no id
    disappears without a trace. A summary covers its group's rows within one batch, and at
    most as many ids as fit in one metadata value (1 KiB of JSON, about a hundred ids), so a
    large group gets several summaries, each naming its own ids. Its id is above every id
    it names, also on SQLite (which would otherwise reuse the largest ids just deleted).
    With ``summarize=False`` they are only removed. The count of summaries written is
    reported as ``summaries``.
``episodic_memories``, ``semantic_memories``
    Kept forever by default; with a window, removed once older than it.
``expired_session_state``, ``session_state``
    Checkpoints past their ``expires_at``, and checkpoints older than the session-state
    window (24 h by default). Only the latest checkpoint of a session is ever loaded, so
    removing a checkpoint also removes the earlier ones of its session: a session never
    falls back to an older state than the one it had (an expired latest checkpoint keeps
    ``load_state`` answering None), and the latest checkpoint stays while it is within the
    window.

``expired_grants``
    Sharing grants past their ``expires_at`` (they already admit nothing; this removes the
    rows).
``idempotent_requests``
    The hub service's claimed Idempotency-Keys (and the answers stored with them) older than
    their window (24 h by default); a retry of such an old request would be applied again.

Flag overrides with an expiry, when they exist, become one more ``CleanupStep`` in
``STEPS``, and their counts appear in every report and run.

Age. A memory's age counts from ``updated_at``: its creation, or its last change (content,
tier, importance or metadata). Reading a memory does not make it younger, so working memory
that is only read still turns into episodic memory after the window. Checkpoints are never
changed; their age counts from ``created_at``. Both are indexed (revision 0006), and each
batch is one indexed range query: memories page by ``(tier, updated_at, id)``.

Batches and concurrency. Every batch (``batch_size`` rows, 500 by default) is one short
write transaction, so agents keep writing while a cleanup runs. Candidates are read first
and summarised outside any transaction (an LLM summarizer must not hold SQLite's write
lock); the DELETE then names each row with the ``version`` it had when read, so a memory
changed in between is skipped, and the summary covers exactly the rows that were deleted.
An update that races the delete either commits first (the memory stays) or finds the memory
gone (``NotFoundError``, as with any concurrent delete). Rows changed during a run are left
for the next run. Two cleanups at once (two hosts) cannot consolidate a row twice: the
second one's DELETE does not find it.

Flat memories. Where ``USE_HIERARCHICAL_TIERS`` is off for a memory's user, agent and
session, memories are one flat tier, as in Phase 1: no tier window applies and nothing is
consolidated, so switching the flag off never makes a cleanup delete or summarise them.
Only an explicit TTL (``expired_memories``) removes them. The flag is read per group from
the store's evaluator (cached state, no database round trip).

Idempotence. A second run with the same clock finds nothing: summaries are episodic (kept
forever by default), and everything else it would touch is gone.

Every run that is not a dry run is recorded in ``maintenance_runs``: inserted as
``running`` and finished as ``ok``, ``failed`` (with the error) or ``interrupted`` (a
worker stopped it between batches), with the rows changed per step so far.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from types import MappingProxyType
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.engine import Connection, RowMapping

from memory.core.errors import ConflictError, InvalidInputError, SchemaError
from memory.core.inputs import (
    MAX_CONTENT_CHARS,
    NewMemory,
    canonical_json,
    checked_count,
    content_hash,
    id_list_chunks,
    validate,
)
from memory.core.summary import extractive_summary
from memory.core.types import TIERS
from memory.store import idempotency as idempotency
from memory.store import sharing as sharing
from memory.store.changes import OPERATOR, delete, deployment_key, memory_changes, upsert
from memory.store.db import Database
from memory.store.events import append_event, record_removals
from memory.store.indexing import IndexEntry, log_changes, write_index
from memory.store.memories import memories, metadata_table, unexpired
from memory.store.schema import (
    KEYS_REVISION,
    MAINTENANCE_REVISION,
    MEMORIES_REVISION,
    revision_at_least,
)
from memory.store.sessions import session_state
from memory.store.tables import Base, utcnow
from memory.telemetry import instruments as telemetry

logger = logging.getLogger("memory.retention")

RETENTION_JOB = "retention"
# The agent id retention acts as in the event log.
RETENTION_AGENT = "retention"
DEFAULT_WORKING_WINDOW = timedelta(hours=24)
DEFAULT_SESSION_STATE_WINDOW = timedelta(hours=24)
DEFAULT_IDEMPOTENCY_WINDOW = timedelta(hours=24)
DEFAULT_BATCH_SIZE = 500
MAX_BATCH_SIZE = 10_000
MAX_ERROR_CHARS = 4_000
CONSOLIDATED_FROM = "consolidated_from"
CONSOLIDATED_BY = "consolidated_by"

Summarizer = Callable[[Sequence[str]], str]
"""Turns the contents of some memories (oldest first) into the text of one memory."""

RunStatus = Literal["running", "ok", "failed", "interrupted"]

runs = Base.metadata.tables["maintenance_runs"]

_DEFAULT_TIER_WINDOWS: dict[str, timedelta | None] = {
    "working": DEFAULT_WORKING_WINDOW,
    "episodic": None,
    "semantic": None,
}


def _window(name: str, value: object) -> timedelta | None:
    if value is None:
        return None
    if not isinstance(value, timedelta) or value < timedelta(0):
        raise InvalidInputError(
            f"{name}: must be a non-negative timedelta, or None to keep forever (got {value!r})"
        )
    return value


@dataclass(frozen=True)
class RetentionPolicy:
    """How long each kind of row is kept; a window of ``None`` keeps it forever.

    ``tiers`` sets the window of the tiers it names; the others keep their defaults
    (working: 24 h; episodic and semantic: forever). ``session_state`` is the window of
    session checkpoints (24 h), ``idempotent_requests`` that of the hub service's
    Idempotency-Keys and their stored answers (24 h: a retry after that is applied again).
    With ``summarize`` off, old working memories are removed without an episodic summary.

    >>> RetentionPolicy(tiers={"working": timedelta(hours=6)}).window("working")
    datetime.timedelta(seconds=21600)
    >>> RetentionPolicy().window("semantic") is None
    True
    """

    tiers: Mapping[str, timedelta | None] = field(default_factory=dict, hash=False)
    session_state: timedelta | None = DEFAULT_SESSION_STATE_WINDOW
    summarize: bool = True
    idempotent_requests: timedelta | None = DEFAULT_IDEMPOTENCY_WINDOW

    def __post_init__(self) -> None:
        if not isinstance(self.tiers, Mapping):
            raise InvalidInputError("tiers: must be a mapping of tier to timedelta or None")
        windows = dict(_DEFAULT_TIER_WINDOWS)
        for tier, window in self.tiers.items():
            if tier not in TIERS:
                raise InvalidInputError(
                    f"tiers: unknown tier {tier!r}; expected one of {', '.join(TIERS)}"
                )
            windows[tier] = _window(f"tiers[{tier!r}]", window)
        object.__setattr__(self, "tiers", MappingProxyType(windows))
        _window("session_state", self.session_state)
        _window("idempotent_requests", self.idempotent_requests)
        if not isinstance(self.summarize, bool):
            raise InvalidInputError(f"summarize: must be True or False, not {self.summarize!r}")

    def window(self, tier: str) -> timedelta | None:
        """The retention window of ``tier`` (None: kept forever)."""
        return self.tiers[tier]


@dataclass(frozen=True, slots=True)
class CleanupReport:
    """What one cleanup run did (or, for a dry run, would do): rows per step.

    ``counts`` holds every step's count, zeros included, in step order; ``summaries`` is
    the number of episodic memories written by consolidation.
    """

    run_id: int | None
    status: Literal["ok", "interrupted"]
    dry_run: bool
    started_at: datetime
    finished_at: datetime
    counts: dict[str, int]

    @property
    def total(self) -> int:
        """Every row removed or written, all steps together."""
        return sum(self.counts.values())

    def as_dict(self) -> dict[str, Any]:
        """The report as JSON-ready values (timestamps in ISO 8601)."""
        return {
            "run_id": self.run_id,
            "status": self.status,
            "dry_run": self.dry_run,
            "started_at": self.started_at.isoformat(),
            "finished_at": self.finished_at.isoformat(),
            "counts": dict(self.counts),
        }


@dataclass(frozen=True, slots=True)
class MaintenanceRun:
    """One recorded run of a maintenance job, as ``maintenance_runs`` holds it."""

    id: int
    job: str
    status: RunStatus
    started_at: datetime
    finished_at: datetime | None
    counts: dict[str, int]
    error: str | None


# -- one run ------------------------------------------------------------------------------------

Embed = Callable[[Sequence[str]], tuple[str, dict[str, Any]] | None]


@dataclass(slots=True)
class _Run:
    db: Database
    revision: str | None
    policy: RetentionPolicy
    now: datetime
    batch_size: int
    dry_run: bool
    summarizer: Summarizer | None
    embed: Embed
    should_stop: Callable[[], bool]
    counts: dict[str, int]
    # Whether USE_HIERARCHICAL_TIERS is on for a (user, agent, session) group.
    tiered: Callable[[str, str, str], bool]
    interrupted: bool = False

    def stopped(self) -> bool:
        if not self.interrupted and self.should_stop():
            self.interrupted = True
        return self.interrupted

    def add(self, name: str, amount: int) -> None:
        self.counts[name] += amount


@dataclass(frozen=True, slots=True)
class CleanupStep:
    """One named part of a cleanup: ``run`` does its work (or, in a dry run, counts it) in
    batches, adding to the run's counts under the names in ``counts``."""

    name: str
    run: Callable[[_Run], None]
    counts: tuple[str, ...]


def _count(connection: Connection, table: sa.Table, condition: sa.ColumnElement[bool]) -> int:
    statement = sa.select(sa.func.count()).select_from(table).where(condition)
    return int(connection.execute(statement).scalar_one())


# -- expired memories -----------------------------------------------------------------------


def _remove_expired_batch(connection: Connection, now: datetime, limit: int) -> int | None:
    expired = memories.c.expires_at <= now
    ids = (
        connection.execute(
            sa.select(memories.c.id)
            .where(expired)
            .order_by(memories.c.expires_at, memories.c.id)
            .limit(limit)
        )
        .scalars()
        .all()
    )
    if not ids:
        return None
    removed = connection.execute(
        sa.delete(memories)
        .where(memories.c.id.in_(ids), expired)
        .returning(memories.c.id, memories.c.user_id)
    ).all()
    log_changes(connection, [(row.user_id, row.id) for row in removed])
    record_removals(
        connection, RETENTION_AGENT, "retention.expire", [(row.user_id, row.id) for row in removed]
    )
    return len(removed)


def _expired_memories(run: _Run) -> None:
    if run.dry_run:
        condition = memories.c.expires_at <= run.now
        run.add("expired_memories", run.db.read(lambda c: _count(c, memories, condition)))
        return
    operation = functools.partial(_remove_expired_batch, now=run.now, limit=run.batch_size)
    while not run.stopped():
        removed = run.db.write(operation)
        if removed is None:
            return
        run.add("expired_memories", removed)


# -- memories older than their tier's window ------------------------------------------------

Group = tuple[str, str, str]  # user, agent, session
_CANDIDATE_COLUMNS = (
    memories.c.id,
    memories.c.user_id,
    memories.c.agent_id,
    memories.c.session_id,
    memories.c.content,
    memories.c.importance,
    memories.c.visibility,
    memories.c.created_at,
    memories.c.updated_at,
    memories.c.expires_at,
    memories.c.version,
)


@dataclass(frozen=True, slots=True)
class _Candidate:
    """An old memory as it was read, before the decision to remove it."""

    id: int
    user_id: str
    agent_id: str
    session_id: str
    content: str
    importance: float
    visibility: str
    created_at: datetime
    updated_at: datetime
    expires_at: datetime | None
    version: int


@dataclass(frozen=True, slots=True)
class _Summary:
    content: str
    model: str | None = None
    vector: Any = None


def _candidates(
    connection: Connection,
    old: sa.ColumnElement[bool],
    after: tuple[datetime, int] | None,
    limit: int,
) -> list[_Candidate]:
    statement = sa.select(*_CANDIDATE_COLUMNS).where(old)
    if after is not None:
        # Keyset paging: the first bound keeps it an index range scan.
        at, last_id = after
        statement = statement.where(
            memories.c.updated_at >= at,
            sa.or_(memories.c.updated_at > at, memories.c.id > last_id),
        )
    statement = statement.order_by(memories.c.updated_at, memories.c.id).limit(limit)
    return [_Candidate(**row) for row in connection.execute(statement).mappings()]


def _groups(rows: Sequence[_Candidate]) -> dict[Group, list[_Candidate]]:
    """Rows by (user, agent, session), oldest first within each group."""
    groups: dict[Group, list[_Candidate]] = {}
    for row in rows:
        groups.setdefault((row.user_id, row.agent_id, row.session_id), []).append(row)
    return {key: sorted(found, key=lambda r: (r.created_at, r.id)) for key, found in groups.items()}


def _summarize(summarizer: Summarizer, rows: Sequence[_Candidate]) -> str:
    text = summarizer([row.content for row in rows])
    try:
        checked = validate(NewMemory, {"content": text, "tier": "episodic"})
    except InvalidInputError as error:
        raise InvalidInputError(f"the summarizer returned unusable text: {error}") from None
    return checked.content


def _plan_summaries(run: _Run, batch: Sequence[_Candidate]) -> dict[tuple[int, ...], _Summary]:
    """Summaries (and their embeddings) of every chunk, computed outside any transaction on
    the assumption that the whole batch will be deleted."""
    assert run.summarizer is not None
    texts = {
        tuple(row.id for row in chunk): _summarize(run.summarizer, chunk)
        for rows in _groups(batch).values()
        for chunk in id_list_chunks(rows)
    }
    embedded = run.embed(list(texts.values()))
    if embedded is None:
        return {ids: _Summary(text) for ids, text in texts.items()}
    model, vectors = embedded
    return {ids: _Summary(text, model, vectors.get(text)) for ids, text in texts.items()}


def _disambiguated(content: str, first_id: int) -> str:
    suffix = f"\n(consolidated from memory {first_id})"
    return content[: MAX_CONTENT_CHARS - len(suffix)] + suffix


def _insert_summary(
    connection: Connection,
    run: _Run,
    group: Group,
    chunk: Sequence[_Candidate],
    summary: _Summary,
    memory_id: int | None,
) -> int:
    """Store the summary of ``chunk`` (as ``memory_id`` when given); returns its id."""
    user, agent, session = group
    ids = sorted(row.id for row in chunk)
    expiries = [row.expires_at for row in chunk if row.expires_at is not None]
    values: dict[str, Any] = {
        "user_id": user,
        "agent_id": agent,
        "session_id": session,
        "tier": "episodic",
        "importance": max(row.importance for row in chunk),
        # Shared only if everything it summarises was shared.
        "visibility": "shared" if all(r.visibility == "shared" for r in chunk) else "private",
        "created_at": run.now,
        "updated_at": run.now,
        "last_accessed_at": None,
        "access_count": 0,
        # It does not outlive what it summarises, if all of that was going to expire.
        "expires_at": max(expiries) if len(expiries) == len(chunk) else None,
        "version": 1,
    }
    if memory_id is not None:
        values["id"] = memory_id
    stored: int | None = None
    content = summary.content
    # The scope may already hold this exact text (the unique key covers every tier); the
    # second form names a replaced id, which no other text in the scope can.
    for content in (summary.content, _disambiguated(summary.content, ids[0])):
        statement = (
            run.db.insert(memories)
            .values(**values, content=content, content_hash=content_hash(content))
            .on_conflict_do_nothing(
                index_elements=["user_id", "agent_id", "session_id", "content_hash"]
            )
            .returning(memories.c.id)
        )
        stored = connection.execute(statement).scalar()
        if stored is not None:
            break
    if stored is None:
        raise ConflictError(f"cannot store the summary of memories {ids}: its text is taken")
    memory_id = stored
    connection.execute(
        metadata_table.insert(),
        [
            {"memory_id": memory_id, "key": CONSOLIDATED_FROM, "value_json": canonical_json(ids)},
            {"memory_id": memory_id, "key": CONSOLIDATED_BY, "value_json": '"retention"'},
        ],
    )
    append_event(
        connection, user, RETENTION_AGENT, "memory.consolidate", f"memory:{memory_id}",
        {"memory_id": memory_id, "consolidated_from": ids},
        memory_changes(connection, [memory_id])[memory_id],
    )
    vector = summary.vector if content == summary.content else None
    write_index(
        connection,
        [IndexEntry(memory_id, user, content, vector)],
        summary.model if vector is not None else None,
    )
    return memory_id


def _remove_batch(
    connection: Connection,
    run: _Run,
    tier: str,
    batch: Sequence[_Candidate],
    planned: dict[tuple[int, ...], _Summary] | None,
) -> tuple[int, int]:
    """Delete the rows of ``batch`` that are unchanged since they were read, and (when
    ``planned`` is given) write the summaries of exactly those rows."""
    by_version: dict[int, list[int]] = {}
    for row in batch:
        by_version.setdefault(row.version, []).append(row.id)
    unchanged = sa.or_(
        *(
            sa.and_(memories.c.version == version, memories.c.id.in_(ids))
            for version, ids in by_version.items()
        )
    )
    deleted = set(
        connection.execute(
            sa.delete(memories)
            .where(memories.c.id.in_([row.id for row in batch]), memories.c.tier == tier)
            .where(unchanged)
            .returning(memories.c.id)
        ).scalars()
    )
    removed = [row for row in batch if row.id in deleted]
    log_changes(connection, [(row.user_id, row.id) for row in removed])
    record_removals(
        connection, RETENTION_AGENT, "retention.remove", [(row.user_id, row.id) for row in removed]
    )
    written = 0
    if planned is not None and removed:
        assert run.summarizer is not None
        next_id = _next_id_above(connection, max(deleted))
        for group, rows in _groups(removed).items():
            for chunk in id_list_chunks(rows):
                summary = planned.get(tuple(row.id for row in chunk))
                if summary is None:
                    # Some rows changed since they were read: summarise what was deleted.
                    summary = _Summary(_summarize(run.summarizer, chunk))
                stored = _insert_summary(connection, run, group, chunk, summary, next_id)
                next_id = stored + 1 if next_id is not None else None
                written += 1
    return len(removed), written


def _next_id_above(connection: Connection, largest_removed: int) -> int | None:
    """The id for a summary on SQLite, where a new row takes the largest id + 1 and so can
    take the id of a row just deleted (the table has no AUTOINCREMENT): a summary must never
    carry an id it names as replaced. The write transaction holds SQLite's lock, so the
    id stays free until commit. PostgreSQL's sequences never hand out an id twice."""
    if connection.dialect.name != "sqlite":
        return None
    largest = connection.execute(sa.select(sa.func.max(memories.c.id))).scalar()
    return max(largest or 0, largest_removed) + 1


def _aged_memories(tier: str) -> Callable[[_Run], None]:
    name = f"{tier}_memories"

    def step(run: _Run) -> None:
        window = run.policy.window(tier)
        if window is None:
            return
        old = sa.and_(
            memories.c.tier == tier, memories.c.updated_at < run.now - window, unexpired(run.now)
        )
        consolidate = tier == "working" and run.summarizer is not None
        after: tuple[datetime, int] | None = None
        while not run.stopped():
            batch = run.db.read(
                functools.partial(_candidates, old=old, after=after, limit=run.batch_size)
            )
            if not batch:
                return
            after = (batch[-1].updated_at, batch[-1].id)
            # A flat scope (USE_HIERARCHICAL_TIERS off) has no tier windows: its rows stay.
            batch = [row for row in batch if run.tiered(row.user_id, row.agent_id, row.session_id)]
            if not batch:
                continue
            if run.dry_run:
                run.add(name, len(batch))
                if consolidate:
                    chunks = sum(len(id_list_chunks(rows)) for rows in _groups(batch).values())
                    run.add("summaries", chunks)
                continue
            planned = _plan_summaries(run, batch) if consolidate else None
            removed, written = run.db.write(
                functools.partial(_remove_batch, run=run, tier=tier, batch=batch, planned=planned)
            )
            run.add(name, removed)
            run.add("summaries", written)

    return step


# -- session state ----------------------------------------------------------------------------

Stale = Callable[[sa.FromClause], sa.ColumnElement[bool]]


def _expired_checkpoint(now: datetime) -> Stale:
    return lambda table: table.c.expires_at <= now


def _old_checkpoint(cutoff: datetime) -> Stale:
    return lambda table: table.c.created_at < cutoff


def _covered(stale: Stale) -> sa.ColumnElement[bool]:
    """True for checkpoints that removing the ``stale`` ones removes: a stale checkpoint and
    every earlier one of its session."""
    later = session_state.alias()
    return (
        sa.select(later.c.id)
        .where(
            later.c.user_id == session_state.c.user_id,
            later.c.session_id == session_state.c.session_id,
            later.c.checkpoint_seq >= session_state.c.checkpoint_seq,
            stale(later),
        )
        .exists()
    )


def _remove_checkpoint_batch(
    connection: Connection, stale: Stale, order: sa.ColumnElement[Any], limit: int
) -> int | None:
    rows = connection.execute(
        sa.select(
            session_state.c.user_id, session_state.c.session_id, session_state.c.checkpoint_seq
        )
        .where(stale(session_state))
        .order_by(order)
        .limit(limit)
    ).all()
    if not rows:
        return None
    latest: dict[tuple[str, str], int] = {}
    for row in rows:
        key = (row.user_id, row.session_id)
        latest[key] = max(latest.get(key, 0), row.checkpoint_seq)
    removed = 0
    for (user, session), seq in latest.items():
        gone = connection.execute(
            sa.delete(session_state)
            .where(
                session_state.c.user_id == user,
                session_state.c.session_id == session,
                session_state.c.checkpoint_seq <= seq,
            )
            .returning(session_state.c.checkpoint_seq)
        ).scalars().all()
        removed += len(gone)
        append_event(
            connection, user, RETENTION_AGENT, "retention.remove_state", f"session:{session}",
            {"session": session, "through_checkpoint": seq},
            [
                delete(
                    session_state,
                    {"user_id": user, "session_id": session, "checkpoint_seq": number},
                )
                for number in sorted(gone)
            ],
        )
    return removed


def _remove_checkpoints(
    run: _Run, name: str, stale: Stale, order: sa.ColumnElement[Any], earlier: Sequence[Stale]
) -> None:
    if run.dry_run:
        # What the earlier steps remove is not counted again here.
        condition = sa.and_(_covered(stale), *(~_covered(other) for other in earlier))
        run.add(name, run.db.read(lambda c: _count(c, session_state, condition)))
        return
    operation = functools.partial(
        _remove_checkpoint_batch, stale=stale, order=order, limit=run.batch_size
    )
    while not run.stopped():
        removed = run.db.write(operation)
        if removed is None:
            return
        run.add(name, removed)


def _expired_session_state(run: _Run) -> None:
    stale = _expired_checkpoint(run.now)
    _remove_checkpoints(run, "expired_session_state", stale, session_state.c.expires_at, [])


def _old_session_state(run: _Run) -> None:
    window = run.policy.session_state
    if window is None:
        return
    stale = _old_checkpoint(run.now - window)
    earlier = [_expired_checkpoint(run.now)]
    _remove_checkpoints(run, "session_state", stale, session_state.c.created_at, earlier)


# -- sharing grants ---------------------------------------------------------------------------


def _expired_grants(run: _Run) -> None:
    if run.dry_run:
        run.add("expired_grants", run.db.read(lambda c: sharing.expired_count(c, run.now)))
        return
    operation = functools.partial(sharing.remove_expired, now=run.now, limit=run.batch_size)
    while not run.stopped():
        removed = run.db.write(operation)
        if removed is None:
            return
        run.add("expired_grants", removed)


# -- the hub service's Idempotency-Keys ----------------------------------------------------------


def _expired_idempotency_keys(run: _Run) -> None:
    window = run.policy.idempotent_requests
    if window is None or not revision_at_least(run.revision, KEYS_REVISION):
        return
    before = run.now - window
    if run.dry_run:
        run.add("idempotent_requests", run.db.read(lambda c: idempotency.expired_count(c, before)))
        return
    operation = functools.partial(idempotency.remove_expired, before=before, limit=run.batch_size)
    while not run.stopped():
        removed = run.db.write(operation)
        if removed is None:
            return
        run.add("idempotent_requests", removed)


STEPS: tuple[CleanupStep, ...] = (
    CleanupStep("expired_memories", _expired_memories, ("expired_memories",)),
    CleanupStep("working_memories", _aged_memories("working"), ("working_memories", "summaries")),
    CleanupStep("episodic_memories", _aged_memories("episodic"), ("episodic_memories",)),
    CleanupStep("semantic_memories", _aged_memories("semantic"), ("semantic_memories",)),
    CleanupStep("expired_session_state", _expired_session_state, ("expired_session_state",)),
    CleanupStep("session_state", _old_session_state, ("session_state",)),
    CleanupStep("expired_grants", _expired_grants, ("expired_grants",)),
    CleanupStep("idempotent_requests", _expired_idempotency_keys, ("idempotent_requests",)),
)
"""The steps of a cleanup, in the order they run. Future steps (expired flag overrides,
sharing grants) are added here."""


# -- the run log ------------------------------------------------------------------------------


def _start_run(db: Database, started: datetime) -> int:
    def operation(connection: Connection) -> int:
        statement = (
            runs.insert()
            .values(
                job=RETENTION_JOB,
                status="running",
                started_at=started,
                finished_at=None,
                counts_json="{}",
                error=None,
            )
            .returning(*runs.c)
        )
        run = connection.execute(statement).mappings().one()
        _record_run(connection, run)
        return int(run["id"])

    return db.write(operation)


def _record_run(connection: Connection, run: RowMapping) -> None:
    """The event of a run's start or end, carrying its row (the operator's: it holds no
    user's data), so that a replay rebuilds the run log too. None without an event key:
    there would be no change to carry, and the run log is its own record."""
    if deployment_key(connection) is None:
        return
    append_event(
        connection, OPERATOR, RETENTION_AGENT, f"retention.run_{run['status']}",
        f"run:{run['id']}", {"run_id": run["id"], "status": run["status"]}, [upsert(runs, run)],
    )


def _finish_run(
    db: Database, run_id: int, status: RunStatus, counts: dict[str, int], error: str | None
) -> datetime:
    finished = utcnow()
    statement = (
        sa.update(runs)
        .where(runs.c.id == run_id)
        .values(
            status=status, finished_at=finished, counts_json=canonical_json(counts), error=error
        )
        .returning(*runs.c)
    )
    # memory.cleanup.runs{status}: the MemoryCleanupFailures alert watches the failed ones.
    # Counted before the write, which may fail for the same reason the run did.
    telemetry.instruments().cleanup_runs.add(1, {"status": status})
    db.write(
        lambda connection: _record_run(connection, connection.execute(statement).mappings().one())
    )
    return finished


def _describe(error: BaseException) -> str:
    text = f"{type(error).__name__}: {error}"
    return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 1] + "…"


def _maintenance_run(row: sa.RowMapping) -> MaintenanceRun:
    stored: dict[str, int] = json.loads(row["counts_json"])
    # Stored as canonical JSON (sorted keys); handed back in step order, like the report.
    order = [name for step in STEPS for name in step.counts]
    counts = {name: stored[name] for name in order if name in stored}
    counts.update((name, value) for name, value in stored.items() if name not in counts)
    return MaintenanceRun(
        id=row["id"],
        job=row["job"],
        status=row["status"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        counts=counts,
        error=row["error"],
    )


# -- entry points ---------------------------------------------------------------------------


def require_schema(revision: str | None) -> None:
    """Raise ``SchemaError`` unless a database at ``revision`` holds what retention needs."""
    for wanted in (MEMORIES_REVISION, MAINTENANCE_REVISION):
        if not revision_at_least(revision, wanted):
            raise SchemaError(
                f"retention needs schema revision {wanted}; the database is at "
                f"{revision}: run `memctl migrate`"
            )


def checked_policy(
    policy: RetentionPolicy | None, summarizer: Summarizer | None
) -> RetentionPolicy:
    """``policy`` (default ``RetentionPolicy()``), checked against ``summarizer``."""
    policy = policy if policy is not None else RetentionPolicy()
    if not isinstance(policy, RetentionPolicy):
        raise InvalidInputError(f"policy: must be a RetentionPolicy, not {policy!r}")
    if summarizer is not None and not policy.summarize:
        raise InvalidInputError("summarizer: given, but the policy does not summarize")
    if summarizer is not None and not callable(summarizer):
        raise InvalidInputError(f"summarizer: must be callable, not {summarizer!r}")
    return policy


def _never() -> bool:
    return False


def run_cleanup(
    db: Database,
    revision: str | None,
    policy: RetentionPolicy | None,
    *,
    embed: Embed,
    tiered: Callable[[str, str, str], bool],
    now: datetime | None = None,
    summarizer: Summarizer | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    dry_run: bool = False,
    should_stop: Callable[[], bool] | None = None,
) -> CleanupReport:
    """Run every step of ``policy`` once on ``db``, in batches of ``batch_size`` rows per
    transaction, and record the run in ``maintenance_runs`` (not a dry run).

    ``embed`` gives consolidated summaries their vectors; ``tiered(user, agent, session)``
    says whether USE_HIERARCHICAL_TIERS is on for a group (off: nothing is consolidated or
    promoted). ``should_stop`` (if given) is asked between batches; a run it stops is recorded as
    ``interrupted``. A failing run is recorded as ``failed`` and its error raised; the
    batches committed before the failure stay done.
    """
    require_schema(revision)
    policy = checked_policy(policy, summarizer)
    if should_stop is not None and not callable(should_stop):
        raise InvalidInputError(f"should_stop: must be callable, not {should_stop!r}")
    batch_size = checked_count("batch_size", batch_size, MAX_BATCH_SIZE)
    if now is not None and (not isinstance(now, datetime) or now.tzinfo is None):
        raise InvalidInputError(f"now: must be a timezone-aware datetime, not {now!r}")
    run = _Run(
        db=db,
        revision=revision,
        policy=policy,
        now=now if now is not None else utcnow(),
        batch_size=batch_size,
        dry_run=dry_run,
        summarizer=(summarizer or extractive_summary) if policy.summarize else None,
        embed=embed,
        should_stop=should_stop or _never,
        counts={name: 0 for step in STEPS for name in step.counts},
        tiered=tiered,
    )
    started = utcnow()
    run_id = None if dry_run else _start_run(run.db, started)
    try:
        for step in STEPS:
            if run.stopped():
                break
            step.run(run)
    except BaseException as error:
        if run_id is not None:
            try:
                _finish_run(run.db, run_id, "failed", run.counts, _describe(error))
            except Exception:
                logger.exception("could not record that cleanup run %s failed", run_id)
        raise
    status: Literal["ok", "interrupted"] = "interrupted" if run.interrupted else "ok"
    if run_id is None:
        finished = utcnow()
    else:
        finished = _finish_run(run.db, run_id, status, run.counts, None)
    return CleanupReport(run_id, status, dry_run, started, finished, dict(run.counts))


def last_run(
    db: Database, revision: str | None, *, status: RunStatus | None = None
) -> MaintenanceRun | None:
    """The newest recorded cleanup run (with ``status``, the newest with that status), or
    None if there has been none."""
    require_schema(revision)
    condition = runs.c.job == RETENTION_JOB
    if status is not None:
        condition = sa.and_(condition, runs.c.status == status)
    statement = sa.select(runs).where(condition).order_by(runs.c.id.desc()).limit(1)
    row = db.read(lambda connection: connection.execute(statement).mappings().first())
    return _maintenance_run(row) if row is not None else None
