"""``Scope``: one agent working for one user: validate, redact, decide the rollout flags once
per call, and delegate to the store, the retriever and the injector."""

from __future__ import annotations

import builtins
import contextlib
import dataclasses
import threading
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import datetime, timedelta
from typing import Any, Literal

from flags import (
    USE_CROSS_AGENT_SHARING,
    USE_ENHANCED_INJECTION,
    USE_HIERARCHICAL_TIERS,
    EvaluationContext,
    FlagEvaluator,
)
from memory.core.errors import (
    FlagOffWarning,
    InvalidInputError,
    NotFoundError,
)
from memory.core.inputs import (
    MAX_INT,
    CodePatternQuery,
    ContextPatch,
    InjectRequest,
    MemoryChanges,
    MemoryQuery,
    NewCodePattern,
    NewMemory,
    NewPreference,
    NewSessionState,
    RecordedEvent,
    ScopeInput,
    SearchQuery,
    as_list,
    validate,
    validate_many,
)
from memory.core.merge import MergedContext
from memory.core.redaction import Redaction
from memory.core.types import (
    CodePattern,
    MemoryEvent,
    MemoryRecord,
    Owner,
    Preference,
    SearchHit,
    SessionCheckpoint,
    Tier,
    Visibility,
)
from memory.inject import (
    InjectedContext,
    Injector,
    ResumedSession,
    disabled_context,
)
from memory.search.retriever import Retriever
from memory.store import sharing as sharing
from memory.store.memories import Embedded, Store
from memory.store.preferences import Preferences
from memory.store.sessions import Sessions
from memory.store.sharing import Access, Grant, NewGrant
from memory.store.tables import utcnow
from memory.telemetry import instruments as telemetry
from memory.updates import Subscription, Updates

# While USE_HIERARCHICAL_TIERS is off, every memory is stored in the default tier of ``add``.
FLAT_TIER: Tier = "working"

# The flags whose FlagOffWarning this process has issued: a flag that is off is said once,
# not on every call of an agent that runs for days.
_warned_flags: set[str] = set()
_warned_lock = threading.Lock()


def _say_flag_off(flag: str, effect: str) -> None:
    """Warn once per process that ``flag`` being off did ``effect`` to a call."""
    with _warned_lock:
        if flag in _warned_flags:
            return
        _warned_flags.add(flag)
    warnings.warn(
        f"{flag} is off for this scope, so {effect}; turn it on with: "
        f"memctl flags set {flag} --on (see: memctl flags explain {flag})",
        FlagOffWarning,
        stacklevel=4,
    )


class Scope:
    """Memories, preferences, code patterns and session state, as seen by one agent
    working for one user, optionally within one session.

    Reads see the memories this agent stored for this user (in every session unless a
    ``session`` filter is given); preferences and code patterns belong to the user and are
    shared by all of the user's agents.
    """

    def __init__(
        self,
        store: Store,
        preferences: Preferences,
        sessions: Sessions,
        retriever: Retriever,
        injector: Injector,
        owner: Owner,
        redaction: Redaction,
        flags: Callable[[], FlagEvaluator],
        updates: Updates,
    ) -> None:
        self._store = store
        self._preferences = preferences
        self._sessions = sessions
        self._retriever = retriever
        self._injector = injector
        self._owner = owner
        self._redaction = redaction
        # Read at each decision: whoever holds the Memory may replace its evaluator.
        self._flags = flags
        self._updates = updates
        # The one place a scope becomes a flag context: every decision below reads it.
        self._flag_context = EvaluationContext(
            user_id=owner.user, session_id=owner.session, agent_id=owner.agent
        )

    def _flag_enabled(self, name: str) -> bool:
        """Whether flag ``name`` is on for this scope now: an in-memory lookup in the
        evaluator's cached state, so a gated call asks once per call and an operator's switch
        takes effect without a restart. Never raises; an unknown flag is off."""
        return self._flags().is_enabled(name, self._flag_context)

    def _reader(self) -> Owner:
        """The owner as this call sees it, with the rollout flags decided once, now: reads see
        what other agents shared with this one while USE_CROSS_AGENT_SHARING is on, and with
        USE_HIERARCHICAL_TIERS off memories are one flat tier as in Phase 1 (stored in the
        default tier, tier filters ignored)."""
        return dataclasses.replace(
            self._owner,
            shared=self._flag_enabled(USE_CROSS_AGENT_SHARING),
            tiered=self._flag_enabled(USE_HIERARCHICAL_TIERS),
        )

    @property
    def flag_context(self) -> EvaluationContext:
        """This scope as flags see it: its user, session and agent."""
        return self._flag_context

    def _record_shared_reads(self, records: Iterable[MemoryRecord]) -> None:
        """Log the reads of other agents' memories (shared with this one) that a read
        path returned: ``memory.read`` events, as ``get`` logs them in its transaction."""
        foreign = [record for record in records if record.agent_id != self._owner.agent]
        if foreign:
            with _cross_agent("read"):
                self._store.record_reads(self._owner, foreign)

    def _count_denied(self, reader: Owner, memory_id: int, operation: CrossAgentOperation) -> None:
        """Count a cross-agent failure if ``memory_id``, which ``reader`` was just refused,
        is a memory of another agent of the same user (a grant was missing or too weak).

        Only while sharing is on for the reader: with it off, no cross-agent access is
        attempted, so nothing can fail (a refusal is then an ordinary not-found)."""
        if not reader.shared:
            return
        agent = self._store.owning_agent(reader.user, memory_id)
        if agent is not None and agent != reader.agent:
            telemetry.instruments().cross_agent_failures.add(1, {"operation": operation})

    def _embedded(self, contents: Iterable[str]) -> Embedded | None:
        found = self._retriever.embed_contents(list(contents))
        return Embedded(*found) if found is not None else None

    @property
    def user(self) -> str:
        return self._owner.user

    @property
    def agent(self) -> str:
        return self._owner.agent

    @property
    def session(self) -> str | None:
        return self._owner.session

    # -- memories -----------------------------------------------------------------------------

    @telemetry.counted("add")
    def add(
        self,
        content: str | bytes,
        *,
        tier: Tier = "working",
        importance: float = 0.5,
        visibility: Visibility = "private",
        metadata: Mapping[str, Any] | None = None,
        ttl: timedelta | None = None,
    ) -> MemoryRecord:
        """Store a memory; if this scope already holds the same content, return that one."""
        item = validate(
            NewMemory,
            {
                "content": self._redaction.value(content),
                "tier": tier,
                "importance": importance,
                "visibility": visibility,
                "metadata": self._redaction.value(dict(metadata or {})),
                "ttl": ttl,
            },
        )
        if not self._flag_enabled(USE_HIERARCHICAL_TIERS):
            if item.tier != FLAT_TIER:
                _say_flag_off(USE_HIERARCHICAL_TIERS, f"the tier {item.tier!r} was ignored")
            item = item.model_copy(update={"tier": FLAT_TIER})
        return self._store.add_memories(self._owner, [item], self._embedded([item.content]))[0]

    @telemetry.counted("add_many")
    def add_many(self, items: Iterable[str | Mapping[str, Any]]) -> list[MemoryRecord]:
        """Store many memories in one transaction: each item is the content, or a mapping
        with the keyword arguments of ``add``. All are stored, or none."""
        as_mappings = [
            _redacted_item(
                {"content": item} if isinstance(item, str | bytes) else item, self._redaction
            )
            for item in as_list(items, "items")
        ]
        validated = validate_many(NewMemory, as_mappings, "items")
        if not validated:
            return []
        if not self._flag_enabled(USE_HIERARCHICAL_TIERS):
            ignored = sorted({item.tier for item in validated} - {FLAT_TIER})
            if ignored:
                _say_flag_off(USE_HIERARCHICAL_TIERS, f"the tiers {ignored} were ignored")
            validated = [item.model_copy(update={"tier": FLAT_TIER}) for item in validated]
        vectors = self._embedded(item.content for item in validated)
        return self._store.add_memories(self._owner, validated, vectors)

    @telemetry.counted("get")
    def get(self, memory_id: int) -> MemoryRecord:
        """The memory ``memory_id``; counts as an access. Raises ``NotFoundError``."""
        reader = self._reader()
        checked = _memory_id(memory_id)
        try:
            return self._store.get_memory(reader, checked)
        except NotFoundError:
            self._count_denied(reader, checked, "read")
            raise

    @telemetry.counted("update")
    def update(
        self,
        memory_id: int,
        *,
        version: int,
        content: str | bytes | None = None,
        tier: Tier | None = None,
        importance: float | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> MemoryRecord:
        """Change a memory read at ``version``; raises ``StaleVersionError`` if it has
        changed since. ``metadata`` replaces the whole mapping. Another agent's memory can
        be changed through a live read-write grant."""
        changes = validate(
            MemoryChanges,
            {
                "version": version,
                "content": self._redaction.value(content),
                "tier": tier,
                "importance": importance,
                "metadata": (
                    self._redaction.value(dict(metadata)) if metadata is not None else None
                ),
            },
        )
        reader = self._reader()
        if not reader.tiered:  # one flat tier: a memory keeps the tier it has
            if changes.tier is not None:
                _say_flag_off(USE_HIERARCHICAL_TIERS, "the tier change was ignored")
            changes = changes.model_copy(update={"tier": None})
        vectors = self._embedded([changes.content]) if changes.content is not None else None
        checked = _memory_id(memory_id)
        try:
            return self._store.update_memory(reader, checked, changes, vectors)
        except NotFoundError:
            self._count_denied(reader, checked, "write")
            raise

    @telemetry.counted("list")
    def list(
        self,
        *,
        tier: Tier | None = None,
        session: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
        before_id: int | None = None,
        limit: int = 100,
    ) -> builtins.list[MemoryRecord]:
        """Live memories, newest first, matching every filter given. Page with
        ``before_id`` (the smallest id of the previous page)."""
        query = validate(
            MemoryQuery,
            {
                "tier": tier,
                "session": session,
                "metadata": dict(metadata or {}),
                "created_after": created_after,
                "created_before": created_before,
                "before_id": before_id,
                "limit": limit,
            },
        )
        reader = self._reader()
        if not reader.tiered:  # one flat tier: no tier filter
            if query.tier is not None:
                _say_flag_off(USE_HIERARCHICAL_TIERS, "the tier filter was ignored")
            query = query.model_copy(update={"tier": None})
        found = self._store.list_memories(reader, query)
        self._record_shared_reads(found)
        return found

    @telemetry.counted("delete")
    def delete(self, memory_id: int) -> None:
        """Delete a memory and its metadata. Raises ``NotFoundError``."""
        self._store.delete_memory(self._owner, _memory_id(memory_id))

    # -- sharing ------------------------------------------------------------------------------

    @telemetry.counted("share")
    def share(
        self,
        *,
        memory_id: int | None = None,
        tag: tuple[str, Any] | None = None,
        tier: Tier | None = None,
        agents: Iterable[str] = (),
        teams: Iterable[str] = (),
        access: Access = "read",
        expires_at: datetime | None = None,
    ) -> builtins.list[Grant]:
        """Share one memory this agent owns, its memories tagged ``tag=(key, value)`` (now
        and later), or a whole ``tier`` of them, with ``agents`` and ``teams`` of the same
        user: ``access="read"``, or ``"write"`` to let them update too, until ``expires_at``
        (aware; None: until revoked). Returns one grant per grantee; sharing the same target
        with the same grantee again replaces its access and expiry.

        Grants take effect where ``USE_CROSS_AGENT_SHARING`` is on for the reader.
        """
        if tag is not None and (not isinstance(tag, tuple) or len(tag) != 2):
            raise InvalidInputError(f"tag: must be a (key, value) pair, not {tag!r}")
        item = validate(
            NewGrant,
            {
                "memory_id": memory_id,
                # Redacted as the metadata they match was.
                "tag_key": self._redaction.value(tag[0]) if tag is not None else None,
                "tag_value": self._redaction.value(tag[1]) if tag is not None else None,
                "tier": tier,
                "agents": as_list(agents, "agents"),
                "teams": as_list(teams, "teams"),
                "access": access,
                "expires_at": expires_at,
            },
        )
        with _cross_agent("share"):
            granted = self._store.share(self._owner, item)
        if not self._flag_enabled(USE_CROSS_AGENT_SHARING):
            _say_flag_off(
                USE_CROSS_AGENT_SHARING, "the grant is stored but gives no access until it is on"
            )
        return granted

    @telemetry.counted("revoke")
    def revoke(self, grant_id: int) -> Grant:
        """Revoke a grant this agent made (raises ``NotFoundError`` for any other)."""
        checked = _memory_id(grant_id, "grant_id")
        with _cross_agent("revoke"):
            return self._store.revoke(self._owner, checked)

    @telemetry.counted("grants")
    def grants(self, *, received: bool = False) -> builtins.list[Grant]:
        """The live grants this agent made, or with ``received=True`` those it holds
        (directly or through a team)."""
        if not isinstance(received, bool):
            raise InvalidInputError(f"received: must be True or False, not {received!r}")
        return self._store.grants(self._owner, received)

    # -- retrieval ----------------------------------------------------------------------------

    @telemetry.counted("search")
    def search(
        self,
        query: str,
        *,
        limit: int = 10,
        tiers: Iterable[Tier] = (),
        session: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
    ) -> builtins.list[SearchHit]:
        """The memories most relevant to ``query`` (hybrid keyword and vector search), best
        first, with every filter applied. Never fails because of the embedder."""
        checked = validate(
            SearchQuery,
            {
                "text": query,
                "limit": limit,
                "tiers": as_list(tiers, "tiers"),
                "session": session,
                "metadata": dict(metadata or {}),
                "created_after": created_after,
                "created_before": created_before,
            },
        )
        reader = self._reader()
        if not reader.tiered:  # one flat tier: no tier filter (nor tier weights)
            if checked.tiers:
                _say_flag_off(USE_HIERARCHICAL_TIERS, "the tier filter was ignored")
            checked = checked.model_copy(update={"tiers": []})
        hits = self._retriever.search(reader, checked)
        self._record_shared_reads(hit.memory for hit in hits)
        return hits

    @telemetry.counted("inject")
    def inject(self, query: str, budget_tokens: int = 512) -> InjectedContext:
        """The context block for ``query``: session state, preferences, recent working
        memory, relevant memories and code patterns, never over ``budget_tokens``.
        Overflow triggers tiered compaction (see ``memory.inject``).

        Where ``USE_ENHANCED_INJECTION`` is off for this scope, the context is empty and
        names the flag in ``disabled_by`` (see ``memory.inject.disabled_context``)."""
        checked = validate(InjectRequest, {"text": query, "budget_tokens": budget_tokens})
        if not self._flag_enabled(USE_ENHANCED_INJECTION):
            _say_flag_off(USE_ENHANCED_INJECTION, "inject() returns an empty context")
            return disabled_context(checked.budget_tokens, USE_ENHANCED_INJECTION)
        context = self._injector.inject(self._reader(), checked.text, checked.budget_tokens)
        # Logged on every call, a cached context included: each hands the memories over.
        self._record_shared_reads(context.shared_memories)
        return context

    @telemetry.counted("resume")
    def resume(self, session: str | None = None) -> ResumedSession:
        """Restore a session: its latest checkpoint and its working memory. Raises
        ``NotFoundError`` (no state for this user) or ``SessionExpiredError``."""
        checked = validate(
            ScopeInput, {"user": self.user, "agent": self.agent, "session": session or self.session}
        )
        if checked.session is None:
            raise InvalidInputError("session: resume needs a session id")
        resumed = self._injector.resume(self._reader(), checked.session)
        self._record_shared_reads(resumed.working_memory)
        return resumed

    # -- events -------------------------------------------------------------------------------

    def subscribe(
        self, callback: Callable[[MemoryEvent], None], *, after_seq: int | None = None
    ) -> Subscription:
        """Call ``callback`` with the events committed after ``after_seq`` (default: from
        now on) that this scope may read (``memory.store.sharing.event_readable``), in
        order, once each, on a thread of its own. USE_CROSS_AGENT_SHARING is decided once,
        now, for the whole subscription."""
        reader = self._reader()
        return self._updates.subscribe(
            callback,
            after_seq=None if after_seq is None else _sequence(after_seq),
            admits=lambda event: sharing.event_readable(
                reader, event, lambda memory_id: self._store.memory_readable(reader, memory_id)
            ),
        )

    # -- preferences --------------------------------------------------------------------------

    @telemetry.counted("set_preference")
    def set_preference(self, key: str, value: Any, *, confidence: float = 1.0) -> Preference:
        """Set the user's current value for ``key`` (JSON-serialisable), as this agent."""
        item = validate(
            NewPreference,
            {
                "key": self._redaction.value(key),
                "value": self._redaction.value(value),
                "confidence": confidence,
            },
        )
        return self._preferences.set_preference(self._owner, item)

    @telemetry.counted("get_preference")
    def get_preference(self, key: str) -> Preference | None:
        """The user's current value for ``key``, or None."""
        checked = validate(NewPreference, {"key": self._redaction.value(key), "value": None})
        return self._preferences.get_preference(self._reader(), checked.key)

    @telemetry.counted("list_preferences")
    def list_preferences(self) -> builtins.list[Preference]:
        """All of the user's preferences, by key."""
        return self._preferences.list_preferences(self._reader())

    @telemetry.counted("delete_preference")
    def delete_preference(self, key: str) -> None:
        """Remove the user's preference ``key``. Raises ``NotFoundError``."""
        checked = validate(NewPreference, {"key": self._redaction.value(key), "value": None})
        self._preferences.delete_preference(self._owner, checked.key)

    # -- code patterns ------------------------------------------------------------------------

    @telemetry.counted("record_pattern")
    def record_pattern(
        self,
        language: str,
        name: str,
        snippet: str,
        *,
        description: str = "",
        tags: Iterable[str] = (),
    ) -> CodePattern:
        """Store a code pattern for the user; recording the same language and name again
        replaces its snippet, description and tags and keeps its usage count."""
        item = validate(
            NewCodePattern,
            {
                "language": language,
                "name": self._redaction.value(name),
                "snippet": self._redaction.value(snippet),
                "description": self._redaction.value(description),
                "tags": self._redaction.value(as_list(tags, "tags")),
            },
        )
        return self._preferences.record_pattern(self._owner, item)

    @telemetry.counted("use_pattern")
    def use_pattern(self, pattern_id: int) -> CodePattern:
        """Count a use of a pattern (raises ``NotFoundError``)."""
        return self._preferences.use_pattern(self._owner, _memory_id(pattern_id, "pattern_id"))

    @telemetry.counted("find_patterns")
    def find_patterns(
        self,
        *,
        language: str | None = None,
        tag: str | None = None,
        text: str | None = None,
        limit: int = 20,
    ) -> builtins.list[CodePattern]:
        """The user's patterns, most used first, filtered by language, tag and a text that
        the name, description or snippet contains (ignoring case)."""
        query = validate(
            CodePatternQuery, {"language": language, "tag": tag, "text": text, "limit": limit}
        )
        return self._preferences.find_patterns(self._reader(), query)

    # -- session state ------------------------------------------------------------------------

    def _require_session(self) -> str:
        if self._owner.session is None:
            raise InvalidInputError("session: session state needs a scope opened with a session")
        return self._owner.session

    @telemetry.counted("save_state")
    def save_state(
        self, state: Mapping[str, Any], *, ttl: timedelta | None = None
    ) -> SessionCheckpoint:
        """Save the next checkpoint of this session's resumable state."""
        session = self._require_session()
        item = validate(
            NewSessionState,
            {
                "state": self._redaction.value(
                    dict(state) if isinstance(state, Mapping) else state
                ),
                "ttl": ttl,
            },
        )
        return self._sessions.save_state(self._owner, session, item)

    @telemetry.counted("load_state")
    def load_state(self) -> SessionCheckpoint | None:
        """The latest live checkpoint of this session, or None."""
        return self._sessions.load_state(self._reader(), self._require_session())

    def merge_context(
        self,
        patch: Mapping[str, Any],
        *,
        seen: int | None = None,
        timestamp: datetime | None = None,
        ttl: timedelta | None = None,
    ) -> MergedContext:
        """Update this session's context shared by several agents with ``patch``.

        Concurrent patches merge by ``(timestamp, agent, log order)``, the same wherever it
        is computed; a key that loses, or overrides another agent's value written after the
        event ``seen`` (the ``event_seq`` of what this agent last read), is logged as a
        ``context.conflict`` event and returned in ``conflicts`` (see ``memory.core.merge``).
        """
        session = self._require_session()
        item = validate(
            ContextPatch,
            {"patch": self._redaction.value(dict(patch) if isinstance(patch, Mapping) else patch),
             "seen": seen, "timestamp": timestamp, "ttl": ttl},
        )
        return self._sessions.merge_context(
            self._owner, session, item.patch, item.timestamp or utcnow(), item.seen, item.ttl
        )

    def record_event(
        self,
        event: str,
        data: Mapping[str, Any] | None = None,
        *,
        memory: Mapping[str, Any] | None = None,
    ) -> tuple[MemoryEvent, MemoryRecord | None]:
        """Append an event of type ``event`` with ``data`` (a JSON object) to the log, and
        store ``memory`` (the keyword arguments of ``add``, with ``content``) with it, in one
        transaction. For external dispatchers and consumers (``memctl record``)."""
        checked = validate(
            RecordedEvent,
            {
                "event": event,
                "data": self._redaction.value(dict(data or {})),
                "memory": (
                    _redacted_item(memory, self._redaction)
                    if isinstance(memory, Mapping) else memory
                ),
            },
        )
        vectors = (
            self._embedded([checked.memory.content]) if checked.memory is not None else None
        )
        return self._store.record_event(
            self._owner, checked.event, checked.data, checked.memory, vectors
        )


# The operations ``memory.cross_agent.failures`` counts (``telemetry.CROSS_AGENT_OPERATIONS``):
# a read of another agent's memory that a grant did not allow or whose logging failed, an
# update a grant did not allow, and a share or revoke that failed (not one refused as
# invalid input).
CrossAgentOperation = Literal["read", "write", "share", "revoke"]


@contextlib.contextmanager
def _cross_agent(operation: CrossAgentOperation) -> Iterator[None]:
    """Count a failure of the cross-agent ``operation`` run inside (and re-raise it)."""
    try:
        yield
    except InvalidInputError:
        raise
    except Exception:
        telemetry.instruments().cross_agent_failures.add(1, {"operation": operation})
        raise


def _redacted_item(item: Any, redaction: Redaction) -> Any:
    """An ``add_many`` item with its content and metadata redacted (anything else is left
    for validation to refuse)."""
    if not isinstance(item, Mapping):
        return item
    redacted = dict(item)
    for field in ("content", "metadata"):
        if field in redacted:
            redacted[field] = redaction.value(redacted[field])
    return redacted


def _sequence(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_INT:
        raise InvalidInputError(f"after_seq: must be an event number from 0, not {value!r}")
    return value


def _memory_id(value: Any, what: str = "memory_id") -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value < 2**63:
        raise InvalidInputError(f"{what}: must be a positive integer, not {value!r}")
    return value
