"""Context injection: the block of memory an agent's next prompt gets, within a token budget.

Sections, in priority order: session state, preferences, recent working memory, relevant
memories (hybrid search over every tier), code patterns. Items are taken in that order
and, within a section, by relevance; an item that does not fit is skipped, never cut, and
the rendered text is counted once more as a whole, so it never exceeds the budget.

When candidates had to be left out, that is an overflow: it is counted and answered by
tiered compaction. The session's older working memories are consolidated into one
episodic summary (whose metadata lists every id it replaced, so no memory disappears
without trace), and episodic memories that keep being injected are promoted to semantic.

Two flags change this, evaluated per call for the scope's user, session and agent (see
``memory.scope``). With ``USE_HIERARCHICAL_TIERS`` off the scope's memories are one flat
tier: "recent working memory" is simply the session's newest memories, and an overflow is
counted but nothing is compacted or promoted. With ``USE_ENHANCED_INJECTION`` off,
``inject`` does not run this pipeline at all (``disabled_context``).

An inject should cost barely more than the search inside it. So it reads the user's data
version (one small read transaction) and then, unless the whole result is cached for that
version, only searches: the query-independent sections (session state, preferences, recent
working memory, the code patterns to match), read in one transaction when they must be, are
cached per scope and data version too, until a local write of the user (``invalidate``),
another process' memory write (the version) or the first expiry among what they show.
Tokens are counted once per line, and with an additive counter (the model's WordPiece
tokenizer) the whole text is never counted again. Uses of the injected memories
(``access_count``) are counted in memory and written in one batch at most
``FLUSH_USES_SECONDS`` later, when a promotion needs them, and when the store closes;
compaction reads the session's working memory only when the cached sections show more of
it than compaction keeps, and promotion writes only when a used episodic memory has reached
``PROMOTE_AFTER_USES``.
"""

from __future__ import annotations

import atexit
import dataclasses
import json
import logging
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import TypeVar, cast

from memory.core.errors import NotFoundError, SessionExpiredError
from memory.core.inputs import (
    CodePatternQuery,
    MemoryQuery,
    NewMemory,
    SearchQuery,
    id_list_chunks,
)
from memory.core.summary import extractive_summary
from memory.core.text import terms
from memory.core.types import CodePattern, MemoryEvent, MemoryRecord, Owner, SessionCheckpoint, Tier
from memory.search.embeddings import TokenCounter
from memory.search.retriever import Retriever
from memory.store.memories import Store
from memory.store.sessions import Sessions
from memory.store.sharing import grants_version
from memory.store.tables import utcnow
from memory.telemetry import instruments as telemetry

Summarizer = Callable[[Sequence[str]], str]

SECTIONS = (
    ("state", "Session state"),
    ("preferences", "User preferences"),
    ("working", "Recent working memory"),
    ("relevant", "Relevant memories"),
    ("patterns", "Code patterns"),
)
_INJECTION_CACHE = {"cache": "injection"}
RECENT_WORKING = 20
RELEVANT = 20
PATTERNS = 3
KEEP_WORKING_AFTER_COMPACTION = 5
PROMOTE_AFTER_USES = 5
SUMMARY_CHARS = 1_000
# Uses of injected memories reach the database at most this long after the call (one write
# per interval instead of one per inject), and at the latest when the store closes.
FLUSH_USES_SECONDS = 1.0
SECTIONS_CACHE_SIZE = 256
_TITLES = dict(SECTIONS)
# Events that record a read: they change nothing a context shows.
_READS = frozenset({"memory.read"})

logger = logging.getLogger(__name__)
_Cached = TypeVar("_Cached")


@dataclass(frozen=True, slots=True)
class ContextItem:
    """One line of injected context and where it came from."""

    section: str
    text: str
    source: str
    score: float
    tokens: int


@dataclass(frozen=True, slots=True)
class InjectedContext:
    """The structured context and its rendered text (``tokens`` ≤ ``budget``)."""

    items: tuple[ContextItem, ...]
    text: str
    tokens: int
    budget: int
    overflow: bool
    left_out: int
    compacted: tuple[int, ...] = ()
    promoted: tuple[int, ...] = ()
    # The flag that turned injection off for this scope (the context is then empty).
    disabled_by: str | None = None
    # The memories of other agents (shared with the reader) that the items show: every call
    # that returns them logs their read (``memory.read`` events, see ``memory.scope``).
    shared_memories: tuple[MemoryRecord, ...] = dataclasses.field(
        default=(), compare=False, repr=False
    )

    def section(self, name: str) -> tuple[ContextItem, ...]:
        """The items of one section (``state``, ``preferences``, ``working``, …)."""
        return tuple(item for item in self.items if item.section == name)


@dataclass(frozen=True, slots=True)
class ResumedSession:
    """What ``resume`` brings back: the latest checkpoint and the working memory."""

    checkpoint: SessionCheckpoint
    working_memory: tuple[MemoryRecord, ...]


@dataclass(frozen=True, slots=True)
class InjectionStats:
    """Injection counts of this process, read from the metrics
    (``memory.telemetry.instruments``), which are the one place they are counted. Zero while
    metrics are disabled."""

    injections: int
    cache_hits: int
    cache_misses: int
    overflows: int
    compactions: int
    promotions: int
    resumption_attempts: int
    resumption_successes: int

    @classmethod
    def read(cls) -> InjectionStats:
        """The counts so far."""
        now = telemetry.totals()
        latency = now.histogram(telemetry.INJECTION_LATENCY)

        def count(name: str, **match: str) -> int:
            return int(now.counter(name, **match))

        return cls(
            injections=latency.count if latency is not None else 0,
            cache_hits=count(telemetry.CACHE_HITS, cache="injection"),
            cache_misses=count(telemetry.CACHE_MISSES, cache="injection"),
            overflows=count(telemetry.OVERFLOW_EVENTS),
            compactions=count(telemetry.COMPACTION_EVENTS, tier="episodic"),
            promotions=count(telemetry.COMPACTION_EVENTS, tier="semantic"),
            resumption_attempts=count(telemetry.RESUMPTION_ATTEMPTS),
            resumption_successes=count(telemetry.RESUMPTION_SUCCESSES),
        )


@dataclass(frozen=True, slots=True)
class _Candidate:
    section: str
    text: str
    source: str
    score: float
    memory_id: int | None = None
    record: MemoryRecord | None = None


@dataclass(frozen=True, slots=True)
class _Sections:
    """What a scope's context holds whatever the query, as one version of the user's data
    has it: session state, preferences and recent working memory (as candidates), and the
    user's code patterns with their terms (matched against each query)."""

    fixed: tuple[_Candidate, ...]
    working_ids: frozenset[int]
    patterns: tuple[tuple[CodePattern, frozenset[str]], ...]
    # Whether compaction may find something: more of this agent's own working memories in
    # the session than it keeps, or a full section (there may be more than it shows).
    compactable: bool
    # The first expiry among what they show: an expiring checkpoint or working memory does
    # not change the data version, so from then on the sections are read again.
    valid_until: datetime | None


class _UseCounts:
    """Uses of injected memories (``access_count``, ``last_accessed_at``), counted here and
    written in one batch by a timer thread at most ``interval`` seconds after the first of
    them, before a promotion that needs them, and at ``flush`` (the store's ``close``, and
    interpreter exit). A batch the database refuses is kept for the next attempt."""

    def __init__(self, store: Store, interval: float = FLUSH_USES_SECONDS) -> None:
        self._store = store
        self._interval = interval
        self._pending: dict[int, tuple[int, datetime]] = {}
        self._lock = threading.Lock()
        self._flushing = threading.Lock()
        self._timer: threading.Timer | None = None
        _LIVE_USE_COUNTS.add(self)

    def add(self, memory_ids: Sequence[int]) -> None:
        """Count one use of each of ``memory_ids``."""
        if not memory_ids:
            return
        now = utcnow()
        with self._lock:
            for memory_id in memory_ids:
                count = self._pending.get(memory_id, (0, now))[0]
                self._pending[memory_id] = (count + 1, now)
            if self._timer is None:
                self._timer = threading.Timer(self._interval, self.flush_quietly)
                self._timer.name = "memory-use-counts"
                self._timer.daemon = True
                self._timer.start()

    def pending(self, memory_id: int) -> int:
        """Uses of ``memory_id`` counted here and not written yet."""
        with self._lock:
            entry = self._pending.get(memory_id)
        return entry[0] if entry is not None else 0

    def flush(self) -> None:
        """Write every pending use now; raises what the database raised (nothing is lost)."""
        with self._flushing:
            with self._lock:
                batch, self._pending = self._pending, {}
                timer, self._timer = self._timer, None
            if timer is not None:
                timer.cancel()  # harmless when it is the timer's own thread calling
            if not batch:
                return
            try:
                self._store.record_uses(batch)
            except BaseException:
                with self._lock:
                    for memory_id, (count, at) in batch.items():
                        newer = self._pending.get(memory_id)
                        self._pending[memory_id] = (
                            (count + newer[0], newer[1]) if newer is not None else (count, at)
                        )
                raise

    def flush_quietly(self) -> None:
        """``flush``, logging a failure instead of raising it: the counts stay pending, and
        the next use starts the timer again."""
        try:
            self.flush()
        except Exception:
            logger.warning(
                "could not record the uses of injected memories yet; they stay pending",
                exc_info=True,
            )


_LIVE_USE_COUNTS: weakref.WeakSet[_UseCounts] = weakref.WeakSet()


@atexit.register
def _flush_at_exit() -> None:
    for counts in list(_LIVE_USE_COUNTS):
        counts.flush_quietly()


class Injector:
    """Builds injected contexts for every scope of one store, with a result cache."""

    def __init__(
        self,
        store: Store,
        sessions: Sessions,
        retriever: Retriever,
        count_tokens: TokenCounter,
        summarizer: Summarizer | None = None,
        cache_size: int = 512,
    ) -> None:
        self._store = store
        self._sessions = sessions
        self._retriever = retriever
        self.count_tokens = count_tokens
        # The same memories come back query after query: count each line's tokens once.
        self._line_tokens = lru_cache(maxsize=65_536)(lambda line: self.count_tokens(line))
        self.summarizer: Summarizer = summarizer or (
            lambda texts: extractive_summary(texts, max_chars=SUMMARY_CHARS)
        )
        backend = store.db.dialect
        self._backend = {"backend": backend}
        self._hit = {"backend": backend, "cache": "hit"}
        self._miss = {"backend": backend, "cache": "miss"}
        self._consolidated = {"backend": backend, "tier": "episodic"}
        self._promoted = {"backend": backend, "tier": "semantic"}
        for counter, attributes in (
            ("overflow_events", self._backend),
            ("compaction_events", self._consolidated),
            ("compaction_events", self._promoted),
            ("resumption_attempts", self._backend),
            ("resumption_successes", self._backend),
            ("cache_hits", _INJECTION_CACHE),
            ("cache_misses", _INJECTION_CACHE),
        ):
            telemetry.declare_series(counter, attributes)
        # Both caches hold (value, valid until) by scope and data version; ``invalidate``
        # empties a user's entries and moves its generation on (everyone's: the epoch), so
        # that a read that started before a write is not stored after it.
        self._cache: OrderedDict[tuple[object, ...], tuple[InjectedContext, datetime | None]] = (
            OrderedDict()
        )
        self._sections_cache: OrderedDict[tuple[object, ...], tuple[_Sections, datetime | None]] = (
            OrderedDict()
        )
        self._generations: dict[str, int] = {}
        self._epoch = 0
        self._cache_size = cache_size
        self._cache_lock = threading.Lock()
        self._uses = _UseCounts(store)

    # -- the public operations ----------------------------------------------------------------

    def inject(self, owner: Owner, query: str, budget: int) -> InjectedContext:
        """The context for ``query`` within ``budget`` tokens (see the module docstring)."""
        started = time.perf_counter()
        recording = telemetry.instruments()
        generation = self._generation(owner.user)
        version = self._version(owner)
        key = (owner, query, budget, version)
        cached = self._cached(self._cache, key)
        if cached is not None:
            recording.cache_hits.add(1, _INJECTION_CACHE)
            recording.injection_latency.record(telemetry.elapsed_ms(started), self._hit)
            return cached
        recording.cache_misses.add(1, _INJECTION_CACHE)
        sections = self._sections(owner, version, generation)
        context, candidates = self._build(owner, query, budget, sections)
        if context.overflow:
            recording.overflow_events.add(1, self._backend)
            # A flat tier (USE_HIERARCHICAL_TIERS off) has nothing to consolidate into.
            compacted, promoted = (
                self._compact(owner, sections, candidates, context) if owner.tiered else ((), ())
            )
            if compacted or promoted:
                generation = self._generation(owner.user)
                version = self._version(owner)
                key = (owner, query, budget, version)
                sections = self._sections(owner, version, generation)
                rebuilt, candidates = self._build(owner, query, budget, sections)
                context = dataclasses.replace(rebuilt, compacted=compacted, promoted=promoted)
            elif sections.compactable and owner.session is not None:
                # Nothing to consolidate at this version: do not look again until it moves.
                self._remember(
                    self._sections_cache,
                    (owner, version),
                    dataclasses.replace(sections, compactable=False),
                    sections.valid_until,
                    owner.user,
                    generation,
                    SECTIONS_CACHE_SIZE,
                )
        self._uses.add(_memory_ids(context))
        valid_until = _earliest(
            sections.valid_until, *(c.record.expires_at for c in candidates if c.record)
        )
        self._remember(
            self._cache, key, context, valid_until, owner.user, generation, self._cache_size
        )
        recording.injection_latency.record(telemetry.elapsed_ms(started), self._miss)
        return context

    def invalidate(self, users: set[str] | None) -> None:
        """Forget the cached contexts of ``users`` (None: of everyone): something they see
        has changed."""
        with self._cache_lock:
            if users is None:
                self._epoch += 1
                self._cache.clear()
                self._sections_cache.clear()
                return
            for user in users:
                self._generations[user] = self._generations.get(user, 0) + 1
            for cache in (self._cache, self._sections_cache):
                for key in [key for key in cache if cast(Owner, key[0]).user in users]:
                    del cache[key]

    def invalidate_for(self, events: Iterable[MemoryEvent]) -> None:
        """``invalidate`` the users whose data ``events`` changed. A logged read
        (``memory.read``, which every inject, search or get showing another agent's memory
        appends) changes nothing a context shows, so it leaves the caches alone."""
        users = {event.user_id for event in events if event.operation not in _READS}
        if users:
            self.invalidate(users)

    def flush(self) -> None:
        """Write the uses of injected memories counted so far (``Memory.close`` does)."""
        self._uses.flush_quietly()

    def resume(self, owner: Owner, session: str) -> ResumedSession:
        """The latest checkpoint of ``session`` and its working memory, or a clear error."""
        recording = telemetry.instruments()
        recording.resumption_attempts.add(1, self._backend)
        checkpoint = self._sessions.latest(owner, session)
        if checkpoint is None:
            raise NotFoundError(f"session {session!r} has no saved state for this user")
        if checkpoint.expires_at is not None and checkpoint.expires_at <= utcnow():
            raise SessionExpiredError(
                f"session {session!r} expired at {checkpoint.expires_at.isoformat()}"
            )
        working = self._store.list_memories(
            owner, MemoryQuery(tier=_working(owner), session=session, limit=RECENT_WORKING)
        )
        recording.resumption_successes.add(1, self._backend)
        return ResumedSession(checkpoint, tuple(working))

    # -- building -----------------------------------------------------------------------------

    def _version(self, owner: Owner) -> tuple[object, ...]:
        """The version of what ``owner`` sees that the caches are keyed by: one small read."""
        # What the reader sees also changes with grants and teams (and their expiry).
        return self._store.db.read(
            lambda connection: (
                self._retriever.data_version(connection, owner.user),
                grants_version(connection, owner.user) if owner.shared else (),
            )
        )

    def _generation(self, user: str) -> int:
        with self._cache_lock:
            return self._generation_locked(user)

    def _generation_locked(self, user: str) -> int:
        # Both parts only grow, so the sum moves on whenever either does.
        return self._epoch + self._generations.get(user, 0)

    def _cached(
        self,
        cache: OrderedDict[tuple[object, ...], tuple[_Cached, datetime | None]],
        key: tuple[object, ...],
    ) -> _Cached | None:
        with self._cache_lock:
            entry = cache.get(key)
            if entry is None:
                return None
            if entry[1] is not None and entry[1] <= utcnow():
                del cache[key]
                return None
            cache.move_to_end(key)
            return entry[0]

    def _remember(
        self,
        cache: OrderedDict[tuple[object, ...], tuple[_Cached, datetime | None]],
        key: tuple[object, ...],
        value: _Cached,
        valid_until: datetime | None,
        user: str,
        generation: int,
        size: int,
    ) -> None:
        with self._cache_lock:
            if self._generation_locked(user) != generation:
                return  # the user's data changed while this was read: it may be stale
            cache[key] = (value, valid_until)
            cache.move_to_end(key)
            while len(cache) > size:
                cache.popitem(last=False)

    def _sections(self, owner: Owner, version: tuple[object, ...], generation: int) -> _Sections:
        """The query-independent sections for this version of the data (cached)."""
        key = (owner, version)
        sections = self._cached(self._sections_cache, key)
        if sections is None:
            sections = self._read_sections(owner)
            self._remember(
                self._sections_cache,
                key,
                sections,
                sections.valid_until,
                owner.user,
                generation,
                SECTIONS_CACHE_SIZE,
            )
        return sections

    def _read_sections(self, owner: Owner) -> _Sections:
        read = self._store.context_sections(
            owner,
            (
                MemoryQuery(tier=_working(owner), session=owner.session, limit=RECENT_WORKING)
                if owner.session is not None
                else None
            ),
            CodePatternQuery(limit=100),
        )
        fixed: list[_Candidate] = []
        expiries: list[datetime | None] = []
        if read.checkpoint is not None:
            expiries.append(read.checkpoint.expires_at)
            fixed.append(
                _Candidate(
                    "state",
                    json.dumps(read.checkpoint.state, ensure_ascii=False, sort_keys=True),
                    f"state:{owner.session}#{read.checkpoint.checkpoint_seq}",
                    1.0,
                )
            )
        for preference in read.preferences:
            fixed.append(
                _Candidate(
                    "preferences",
                    f"{preference.key}: {json.dumps(preference.value, ensure_ascii=False)}",
                    f"preference:{preference.key}",
                    preference.confidence,
                )
            )
        working = read.working
        for position, record in enumerate(working):
            expiries.append(record.expires_at)
            fixed.append(
                _Candidate(
                    "working",
                    record.content,
                    f"memory:{record.id}",
                    1.0 - position / (len(working) + 1),
                    record.id,
                    record,
                )
            )
        own = sum(1 for r in working if r.user_id == owner.user and r.agent_id == owner.agent)
        patterns = tuple(
            (
                pattern,
                frozenset(terms(f"{pattern.name} {pattern.description} {' '.join(pattern.tags)}")),
            )
            for pattern in read.patterns
        )
        return _Sections(
            tuple(fixed),
            frozenset(record.id for record in working),
            patterns,
            owner.tiered
            and owner.session is not None
            and (len(working) >= RECENT_WORKING or own >= KEEP_WORKING_AFTER_COMPACTION + 2),
            _earliest(*expiries),
        )

    def _candidates(self, owner: Owner, query: str, sections: _Sections) -> list[_Candidate]:
        found = list(sections.fixed)
        for hit in self._retriever.search(owner, SearchQuery(text=query, limit=RELEVANT)):
            if hit.memory.id not in sections.working_ids:
                found.append(
                    _Candidate(
                        "relevant",
                        hit.memory.content,
                        f"memory:{hit.memory.id} ({hit.memory.tier})",
                        hit.score,
                        hit.memory.id,
                        hit.memory,
                    )
                )
        wanted = set(terms(query))
        scored = []
        for pattern, pattern_terms in sections.patterns:
            overlap = len(wanted & pattern_terms)
            if overlap:
                scored.append((overlap, pattern))
        scored.sort(key=lambda item: (-item[0], -item[1].usage_count, item[1].id))
        for overlap, pattern in scored[:PATTERNS]:
            text = f"{pattern.language}/{pattern.name}: {pattern.description}\n{pattern.snippet}"
            found.append(
                _Candidate("patterns", text, f"pattern:{pattern.id}", overlap / max(len(wanted), 1))
            )
        return found

    def _render(self, chosen: Sequence[_Candidate]) -> str:
        lines = []
        for section, title in SECTIONS:
            items = [item for item in chosen if item.section == section]
            if items:
                lines.append(f"## {title}")
                lines.extend(f"- {item.text}" for item in items)
        return "\n".join(lines)

    def _build(
        self, owner: Owner, query: str, budget: int, sections: _Sections
    ) -> tuple[InjectedContext, list[_Candidate]]:
        candidates = self._candidates(owner, query, sections)
        chosen: list[_Candidate] = []
        costs: dict[int, int] = {}
        used = 0
        headers: set[str] = set()
        for candidate in candidates:
            header = (
                0
                if candidate.section in headers
                else self._line_tokens(f"## {_TITLES[candidate.section]}")
            )
            cost = self._line_tokens(f"- {candidate.text}") + header
            if used + cost > budget:
                continue
            chosen.append(candidate)
            costs[id(candidate)] = cost
            headers.add(candidate.section)
            used += cost
        text = self._render(chosen)
        if getattr(self.count_tokens, "additive", False):
            # The rendered text is its lines joined by newlines, and this counter counts
            # such a text as the sum of its lines (``memory.search.embeddings.WordPieceCounter``):
            # ``used`` is its exact count, already within the budget.
            tokens = used
        else:
            # Other counters can count a joined text differently from its parts: check the
            # whole, and drop the least important items until it fits.
            tokens = self.count_tokens(text) if text else 0
            while chosen and tokens > budget:
                chosen.pop()
                text = self._render(chosen)
                tokens = self.count_tokens(text) if text else 0
        items = tuple(
            ContextItem(c.section, c.text, c.source, round(c.score, 6), costs[id(c)])
            for c in chosen
        )
        left_out = len(candidates) - len(chosen)
        shared = tuple(
            c.record for c in chosen if c.record is not None and c.record.agent_id != owner.agent
        )
        context = InjectedContext(
            items, text, tokens, budget, left_out > 0, left_out, shared_memories=shared
        )
        return context, candidates

    # -- compaction ---------------------------------------------------------------------------

    def _compact(
        self,
        owner: Owner,
        sections: _Sections,
        candidates: Sequence[_Candidate],
        context: InjectedContext,
    ) -> tuple[tuple[int, ...], tuple[int, ...]]:
        compacted: tuple[int, ...] = ()
        if owner.session is not None and sections.compactable:
            # Only this agent's own memories are consolidated: a grant to read (or even
            # update) another agent's memory is no licence to delete it.
            working = self._store.list_memories(
                dataclasses.replace(owner, shared=False),
                MemoryQuery(tier="working", session=owner.session, limit=1000),
            )
            old = list(reversed(working[KEEP_WORKING_AFTER_COMPACTION:]))
            # One summary per run of ids that fits in its ``consolidated_from`` value.
            for chunk in id_list_chunks(old):
                if len(chunk) < 2:
                    continue
                summary = self.summarizer([record.content for record in chunk])
                compacted += self._store.consolidate(
                    owner,
                    chunk,
                    NewMemory(
                        content=summary,
                        tier="episodic",
                        metadata={"consolidated_from": [r.id for r in chunk]},
                    ),
                    self._retriever.embed_contents([summary]),
                )
                telemetry.instruments().compaction_events.add(1, self._consolidated)
        # Only what was just used can have crossed the threshold since the last check, and
        # the records just read say how often: the uses stored plus those not written yet.
        shown = set(_memory_ids(context))
        due = sorted(
            {
                record.id
                for record in (c.record for c in candidates)
                if record is not None
                and record.id in shown
                and record.tier == "episodic"
                and (record.user_id, record.agent_id) == (owner.user, owner.agent)
                and record.access_count + self._uses.pending(record.id) >= PROMOTE_AFTER_USES
            }
        )
        promoted: tuple[int, ...] = ()
        if due:
            self._uses.flush()  # the database decides, on the counts it holds
            promoted = self._store.promote_used(owner, PROMOTE_AFTER_USES, due)
        if promoted:
            telemetry.instruments().compaction_events.add(len(promoted), self._promoted)
        return compacted, promoted


def _earliest(*moments: datetime | None) -> datetime | None:
    """The earliest of ``moments`` that are set, or None."""
    return min((moment for moment in moments if moment is not None), default=None)


def _memory_ids(context: InjectedContext) -> list[int]:
    """The ids of the memories a context shows (sources ``memory:<id> ...``)."""
    return [
        int(item.source.split(":")[1].split()[0])
        for item in context.items
        if item.source.startswith("memory:")
    ]


def _working(owner: Owner) -> Tier | None:
    """The tier that holds a session's recent memories: every tier when they are flat."""
    return "working" if owner.tiered else None


def disabled_context(budget: int, flag: str) -> InjectedContext:
    """What ``inject`` returns while ``flag`` is off for the scope: an empty context.

    Empty rather than a Phase 1 stand-in (say, the entity graph's matches): with the flag
    off, the prompt an agent builds is exactly the one it built before this feature, so the
    control side of a rollout measures Phase 1 behaviour, and a runtime that already adds
    entity-graph context does not get it twice. ``disabled_by`` names the flag, so a caller
    can tell "off" from "nothing relevant". Never raises, and costs no database round trip.
    """
    return InjectedContext((), "", 0, budget, False, 0, disabled_by=flag)
