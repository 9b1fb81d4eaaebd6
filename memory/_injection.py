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
``memory._api``). With ``USE_HIERARCHICAL_TIERS`` off the scope's memories are one flat
tier: "recent working memory" is simply the session's newest memories, and an overflow is
counted but nothing is compacted or promoted. With ``USE_ENHANCED_INJECTION`` off,
``inject`` does not run this pipeline at all (``disabled_context``).
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import cast

from memory import _telemetry as telemetry
from memory._embeddings import TokenCounter
from memory._errors import NotFoundError, SessionExpiredError
from memory._models import utcnow
from memory._retrieval import Retriever
from memory._schemas import (
    CodePatternQuery,
    MemoryQuery,
    NewMemory,
    SearchQuery,
    id_list_chunks,
)
from memory._sharing import grants_version
from memory._store import Owner, Store
from memory._summary import extractive_summary
from memory._text import terms
from memory._types import MemoryRecord, SessionCheckpoint, Tier

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
    # that returns them logs their read (``memory.read`` events, see ``memory._api``).
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
    """Injection counts of this process, read from the metrics (``memory._telemetry``), which
    are the one place they are counted. Zero while metrics are disabled."""

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


class Injector:
    """Builds injected contexts for every scope of one store, with a result cache."""

    def __init__(
        self,
        store: Store,
        retriever: Retriever,
        count_tokens: TokenCounter,
        summarizer: Summarizer | None = None,
        cache_size: int = 512,
    ) -> None:
        self._store = store
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
        self._cache: OrderedDict[tuple[object, ...], InjectedContext] = OrderedDict()
        self._cache_size = cache_size
        self._cache_lock = threading.Lock()

    # -- the public operations ----------------------------------------------------------------

    def inject(self, owner: Owner, query: str, budget: int) -> InjectedContext:
        """The context for ``query`` within ``budget`` tokens (see the module docstring)."""
        started = time.perf_counter()
        recording = telemetry.instruments()
        # What the reader sees also changes with grants and teams (and their expiry).
        version = self._store.db.read(
            lambda connection: (
                self._retriever.data_version(connection, owner.user),
                grants_version(connection, owner.user) if owner.shared else (),
            )
        )
        key = (owner, query, budget, version)
        with self._cache_lock:
            cached = self._cache.get(key)
            if cached is not None:
                self._cache.move_to_end(key)
        if cached is not None:
            recording.cache_hits.add(1, _INJECTION_CACHE)
            recording.injection_latency.record(telemetry.elapsed_ms(started), self._hit)
            return cached
        recording.cache_misses.add(1, _INJECTION_CACHE)
        context = self._build(owner, query, budget)
        if context.overflow:
            recording.overflow_events.add(1, self._backend)
            # A flat tier (USE_HIERARCHICAL_TIERS off) has nothing to consolidate into.
            compacted, promoted = self._compact(owner, context) if owner.tiered else ((), ())
            if compacted or promoted:
                rebuilt = self._build(owner, query, budget)
                context = InjectedContext(
                    rebuilt.items,
                    rebuilt.text,
                    rebuilt.tokens,
                    budget,
                    rebuilt.overflow,
                    rebuilt.left_out,
                    compacted,
                    promoted,
                    shared_memories=rebuilt.shared_memories,
                )
        self._record_use(context)
        with self._cache_lock:
            self._cache[key] = context
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        recording.injection_latency.record(telemetry.elapsed_ms(started), self._miss)
        return context

    def invalidate(self, users: set[str]) -> None:
        """Forget the cached contexts of ``users``: something they see has changed."""
        with self._cache_lock:
            for key in [key for key in self._cache if cast(Owner, key[0]).user in users]:
                del self._cache[key]

    def resume(self, owner: Owner, session: str) -> ResumedSession:
        """The latest checkpoint of ``session`` and its working memory, or a clear error."""
        recording = telemetry.instruments()
        recording.resumption_attempts.add(1, self._backend)
        checkpoint = self._store.latest_checkpoint(owner, session)
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

    def _candidates(self, owner: Owner, query: str) -> list[_Candidate]:
        found: list[_Candidate] = []
        if owner.session is not None:
            checkpoint = self._store.load_state(owner, owner.session)
            if checkpoint is not None:
                found.append(
                    _Candidate(
                        "state",
                        json.dumps(checkpoint.state, ensure_ascii=False, sort_keys=True),
                        f"state:{owner.session}#{checkpoint.checkpoint_seq}",
                        1.0,
                    )
                )
        for preference in self._store.list_preferences(owner):
            found.append(
                _Candidate(
                    "preferences",
                    f"{preference.key}: {json.dumps(preference.value, ensure_ascii=False)}",
                    f"preference:{preference.key}",
                    preference.confidence,
                )
            )
        working_ids: set[int] = set()
        if owner.session is not None:
            working = self._store.list_memories(
                owner,
                MemoryQuery(tier=_working(owner), session=owner.session, limit=RECENT_WORKING),
            )
            for position, record in enumerate(working):
                working_ids.add(record.id)
                found.append(
                    _Candidate(
                        "working",
                        record.content,
                        f"memory:{record.id}",
                        1.0 - position / (len(working) + 1),
                        record.id,
                        record,
                    )
                )
        for hit in self._retriever.search(owner, SearchQuery(text=query, limit=RELEVANT)):
            if hit.memory.id not in working_ids:
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
        for pattern in self._store.find_patterns(owner, CodePatternQuery(limit=100)):
            overlap = len(
                wanted
                & set(terms(f"{pattern.name} {pattern.description} {' '.join(pattern.tags)}"))
            )
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

    def _build(self, owner: Owner, query: str, budget: int) -> InjectedContext:
        candidates = self._candidates(owner, query)
        chosen: list[_Candidate] = []
        costs: dict[int, int] = {}
        used = 0
        headers: set[str] = set()
        for candidate in candidates:
            header = (
                0
                if candidate.section in headers
                else self._line_tokens(f"## {dict(SECTIONS)[candidate.section]}")
            )
            cost = self._line_tokens(f"- {candidate.text}") + header
            if used + cost > budget:
                continue
            chosen.append(candidate)
            costs[id(candidate)] = cost
            headers.add(candidate.section)
            used += cost
        text = self._render(chosen)
        # Tokenizers can count a joined text differently from its parts: check the whole,
        # and drop the least important items until it fits.
        while chosen and self.count_tokens(text) > budget:
            chosen.pop()
            text = self._render(chosen)
        items = tuple(
            ContextItem(c.section, c.text, c.source, round(c.score, 6), costs[id(c)])
            for c in chosen
        )
        left_out = len(candidates) - len(chosen)
        shared = tuple(
            c.record for c in chosen if c.record is not None and c.record.agent_id != owner.agent
        )
        return InjectedContext(
            items, text, self.count_tokens(text) if text else 0, budget, left_out > 0, left_out,
            shared_memories=shared,
        )

    # -- compaction ---------------------------------------------------------------------------

    def _compact(
        self, owner: Owner, context: InjectedContext
    ) -> tuple[tuple[int, ...], tuple[int, ...]]:
        compacted: tuple[int, ...] = ()
        if owner.session is not None:
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
        # Only what was just used can have crossed the threshold since the last check.
        promoted = self._store.promote_used(owner, PROMOTE_AFTER_USES, _memory_ids(context))
        if promoted:
            telemetry.instruments().compaction_events.add(len(promoted), self._promoted)
        return compacted, promoted

    def _record_use(self, context: InjectedContext) -> None:
        ids = _memory_ids(context)
        if ids:
            self._store.record_use(ids)


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
