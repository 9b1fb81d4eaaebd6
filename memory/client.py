"""The client: ``Memory.open(url)`` opens a store, wires its parts and hands out scopes."""

from __future__ import annotations

import builtins
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal

from sqlalchemy.engine import URL, Engine
from sqlalchemy.exc import DBAPIError

from flags import (
    USE_CROSS_AGENT_SHARING,
    USE_HIERARCHICAL_TIERS,
    FlagEvaluator,
    FlagValueError,
)
from memory.core.errors import (
    DatabaseUnavailableError,
    EmbeddedOnlyError,
    InvalidInputError,
    PermissionDeniedError,
    SchemaError,
    StoreClosedError,
)
from memory.core.inputs import (
    Quotas,
    ScopeInput,
    UserInput,
    as_list,
    validate,
)
from memory.core.redaction import Redaction
from memory.core.types import (
    MemoryEvent,
    Owner,
)
from memory.inject import (
    InjectionStats,
    Injector,
    Summarizer,
)
from memory.remote import RemoteGraph, RemoteScope, Transport, is_remote, open_transport
from memory.scope import Scope
from memory.search import reembed as reembedding
from memory.search.embeddings import Embedder, LazyTokenCounter, TokenCounter, default_embedder
from memory.search.retriever import RetrievalStats, Retriever, index_budget
from memory.search.snapshots import Snapshots, snapshot_directory
from memory.store import sharing as sharing
from memory.store.changes import event_key
from memory.store.db import Database
from memory.store.engine import create_engine
from memory.store.events import ChainReport, audit_key, verify_chain
from memory.store.flags import default_evaluator, start_new_store
from memory.store.forget import (
    FORGET_OPERATION,
    BackgroundCheckpoint,
    ForgetReport,
    forget_user,
)
from memory.store.graph import EntityGraph
from memory.store.memories import Store
from memory.store.preferences import Preferences
from memory.store.schema import (
    CHANGES_REVISION,
    MEMORIES_REVISION,
    database_revision,
    head_revision,
    known_revision,
    revision_at_least,
    upgrade,
)
from memory.store.sessions import Sessions
from memory.store.sharing import TeamInput
from memory.telemetry import instruments as telemetry
from memory.updates import UPDATES_URL_ENV, BusGuard, Subscription, Updates, UpdatesStatus

Role = Literal["agent", "admin"]
ROLES: tuple[Role, ...] = ("agent", "admin")


@dataclass(frozen=True, slots=True)
class Maintenance:
    """The collaborators of a maintenance job (see :attr:`Memory.maintenance`)."""

    db: Database
    revision: str | None
    embed: Callable[[Sequence[str]], tuple[str, dict[str, Any]] | None]
    # Whether USE_HIERARCHICAL_TIERS is on for a (user, agent, session) group, decided by
    # the scope as every call of that scope decides it.
    tiered: Callable[[str, str, str], bool]


class Memory:
    """A memory store in one database.

    >>> with Memory.open("sqlite:///agent.db") as memory:  # doctest: +SKIP
    ...     scope = memory.scope(user="ada", agent="planner", session="s1")
    ...     scope.add("Ada prefers short answers", tier="semantic")

    ``open`` creates the schema in an empty database. A database behind the newest
    revision is opened as it is (an operator may have rolled it back): the Phase 1 entity
    graph keeps working, and Phase 2 calls raise ``SchemaError`` until ``memctl migrate``.
    """

    def __init__(
        self,
        engine: Engine,
        revision: str | None,
        embedder: Embedder | None = None,
        token_counter: TokenCounter | None = None,
        summarizer: Summarizer | None = None,
        updates: str | None = None,
        *,
        role: Role = "agent",
        redaction: Redaction | None = None,
        flags: FlagEvaluator | None = None,
        updates_guard: BusGuard | None = None,
    ) -> None:
        self._remote: Transport | None = None
        if role not in ROLES:
            raise InvalidInputError(f"role: must be one of {', '.join(ROLES)}, not {role!r}")
        if redaction is not None and not isinstance(redaction, Redaction):
            raise InvalidInputError(f"redaction: must be a memory.Redaction, not {redaction!r}")
        self.engine = engine
        self.revision = revision
        self.role: Role = role
        self.redaction = redaction if redaction is not None else Redaction()
        # Off until the flag is on: without flag state the registry default (off) decides.
        try:
            self.flags = flags if flags is not None else default_evaluator(engine, revision)
        except FlagValueError as error:  # USE_...=maybe in the environment
            raise InvalidInputError(str(error)) from None
        telemetry.observe_flags(self.flags)  # the memory.flag.* gauges
        telemetry.observe_schema(self)  # the memory.schema.revision gauge
        quotas = Quotas.from_environment(os.environ)
        self._db = Database(engine, audit_key(os.environ), event_key(os.environ), quotas)
        self._checkpoints = BackgroundCheckpoint(self._db)
        self._store = Store(self._db, quotas)
        self._preferences = Preferences(self._db)
        self._sessions = Sessions(self._db, quotas)
        directory = snapshot_directory(engine.url, os.environ)
        self._retriever = Retriever(
            self._db,
            self._store,
            embedder,
            index_budget=index_budget(os.environ),
            snapshots=None if directory is None else Snapshots(directory),
        )
        self._injector = Injector(
            self._store,
            self._sessions,
            self._retriever,
            token_counter or LazyTokenCounter(),
            summarizer,
        )
        self._updates = Updates(
            self._db, updates or os.environ.get(UPDATES_URL_ENV) or "inprocess", updates_guard
        )
        self._db.after_commit = self._updates.publish
        # Cached injections of a user go stale with any of the user's events (a preference or
        # session state changes them as much as a memory does): local writes right away,
        # other processes' through the bus, when there is one.
        self._updates.observe(self._injector.invalidate_for)
        self._cache_subscription: Subscription | None = None
        if self._updates.backend != "inprocess" and revision_at_least(
            revision, MEMORIES_REVISION
        ):
            self._cache_subscription = self._updates.subscribe(self._heard)

    def _heard(self, event: MemoryEvent) -> None:
        """Another process's event (through the bus): drop what it made stale here."""
        if event.operation == FORGET_OPERATION:
            # Forget leaves no identifier, so the event names no user: everything this
            # process holds about anyone goes, and is read again as it is needed.
            self._retriever.forget(None)
            self._injector.invalidate(None)
        else:
            self._injector.invalidate_for([event])

    @classmethod
    def open(
        cls,
        url: str | URL | None = None,
        *,
        embedder: Embedder | None | Literal["default"] = "default",
        token_counter: TokenCounter | None = None,
        summarizer: Summarizer | None = None,
        updates: str | None = None,
        role: Role = "agent",
        redaction: Redaction | None = None,
        flags: FlagEvaluator | None = None,
        updates_guard: BusGuard | None = None,
        api_key: str | None = None,
        timeout: float = 30.0,
        **engine_options: Any,
    ) -> Memory:
        """Open the store at ``url`` (default: ``$MEMORY_DATABASE_URL``, else ``memory.db``).

        An ``http://``, ``https://``, ``grpc://`` or ``grpcs://`` URL (comma-separated for
        replicas) opens the hub service there (``memctl serve``) with ``api_key``: its
        scopes have the same methods, records and errors, and act as the key's identity
        (see ``memory.remote``); a call that takes longer than ``timeout`` seconds fails,
        and the hub, told so, gives up in time to say why (``DeadlineExceededError``)
        having written nothing.

        ``embedder`` defaults to all-MiniLM-L6-v2 when the ``embeddings`` extra is installed;
        with ``None`` (or without the extra) search answers from keywords alone.
        ``token_counter`` measures injected context (default: the model's WordPiece
        tokenizer); ``summarizer`` consolidates working memory during compaction (default:
        a deterministic extractive summary). ``updates`` chooses the backend of the
        ``memory:updates`` channel: ``inprocess`` (the default), ``postgresql`` (LISTEN/NOTIFY
        on this database) or a ``redis://`` URL; default ``$MEMORY_UPDATES_URL``;
        ``updates_guard`` (a circuit breaker, say) stands before every call to that bus.
        """
        if is_remote(url):
            assert isinstance(url, str)
            return cls._connect(open_transport(url, api_key, timeout))
        if embedder == "default":
            embedder = default_embedder()
        engine = create_engine(url, **engine_options)
        try:
            revision = database_revision(engine)
            if revision is None:
                keys = audit_key(os.environ), event_key(os.environ)
                upgrade(engine, on_create=lambda connection: start_new_store(connection, *keys))
                revision = head_revision()
        except DBAPIError as error:
            engine.dispose()
            raise DatabaseUnavailableError(
                f"cannot open the database {engine.url.render_as_string(hide_password=True)}: "
                f"{error.orig}"
            ) from error
        except BaseException:
            engine.dispose()
            raise
        if not known_revision(revision):
            engine.dispose()
            raise SchemaError(
                f"the database is at revision {revision!r}, which this code does not know "
                f"(newest known: {head_revision()}); upgrade the library"
            )
        try:
            return cls(
                engine,
                revision,
                embedder,
                token_counter,
                summarizer,
                updates,
                role=role,
                redaction=redaction,
                flags=flags,
                updates_guard=updates_guard,
            )
        except BaseException:
            engine.dispose()
            raise

    @classmethod
    def _connect(cls, transport: Transport) -> Memory:
        """A store whose scopes, graphs and admin verbs are answered by the hub over
        ``transport``; what needs the database itself (maintenance, subscriptions, the
        engine) raises ``EmbeddedOnlyError``, and the role is whatever the API key's is."""
        memory: Memory = _RemoteMemory.__new__(_RemoteMemory)
        memory._remote = transport
        memory.role = "agent"
        return memory

    @property
    def maintenance(self) -> Maintenance:
        """What maintenance jobs (``memory.ops.retention``) run on, handed over instead of read
        from this object's private fields: the database every write of this store goes
        through (so their events reach this store's subscribers), its revision, the
        embedding of new memories, and the flag decision of a scope."""
        return Maintenance(
            db=self._db,
            revision=self.revision,
            embed=self._retriever.embed_contents,
            tiered=lambda user, agent, session: self.flag_enabled(
                USE_HIERARCHICAL_TIERS, self.scope(user, agent, session or None)
            ),
        )

    @property
    def embedder(self) -> Embedder | None:
        """The embedder writes and searches use (None: keyword search only)."""
        return self._retriever.embedder

    @property
    def retrieval_stats(self) -> RetrievalStats:
        """Counts of searches, degraded searches and query-embedding cache use, read from
        the process' metrics (every ``Memory`` in the process contributes)."""
        return RetrievalStats.read()

    @property
    def injection_stats(self) -> InjectionStats:
        """Counts of injections, cache use, overflows, compactions and resumptions, read
        from the process' metrics (every ``Memory`` in the process contributes)."""
        return InjectionStats.read()

    def embeddings_needing_refresh(self) -> int:
        """How many memories lack an embedding from the current model (see ``reembed``)."""
        return reembedding.stale_count(self._db, self.embedder)

    def reembed(self, batch_size: int = 256, progress: Callable[[int], None] | None = None) -> int:
        """Embed every memory that has no vector from the current model, in batches.

        Run it after changing the model (``memctl reembed``); returns how many were embedded.
        """
        if self.embedder is None:
            raise InvalidInputError("embedder: reembed needs an embedder")
        return reembedding.reembed(self._db, self.embedder, batch_size, progress)

    @property
    def backend(self) -> str:
        """``sqlite``, ``postgresql``, or ``remote`` (a hub service)."""
        return "remote" if self._remote is not None else self._db.dialect

    def scope(self, user: str, agent: str, session: str | None = None) -> Scope:
        """A handle that reads and writes as ``agent`` for ``user`` in ``session``."""
        self._require_open()
        if self._remote is None and not revision_at_least(self.revision, MEMORIES_REVISION):
            raise SchemaError(
                f"memories need schema revision {MEMORIES_REVISION}; the database is at "
                f"{self.revision}: run `memctl migrate`"
            )
        checked = validate(ScopeInput, {"user": user, "agent": agent, "session": session})
        if self._remote is not None:
            return RemoteScope(self._remote, Owner(checked.user, checked.agent, checked.session))
        return Scope(
            self._store,
            self._preferences,
            self._sessions,
            self._retriever,
            self._injector,
            Owner(checked.user, checked.agent, checked.session),
            self.redaction,
            lambda: self.flags,
            self._updates,
        )

    def flag_enabled(self, name: str, scope: Scope) -> bool:
        """Whether flag ``name`` is on for ``scope`` (its user, session and agent) now.

        An in-memory lookup in ``flags``' cached state (refreshed from the provider every
        10 s by default), so code that gates a behaviour asks per call and an operator's
        switch takes effect without a restart. Never raises; an unknown flag is off.
        """
        return self.flags.is_enabled(name, scope.flag_context)

    # -- sharing and roles ----------------------------------------------------------------------

    def sharing_enabled(self, user: str, agent: str, session: str | None = None) -> bool:
        """Whether ``USE_CROSS_AGENT_SHARING`` is on for this agent, user and session (its
        rollout, parent flag and agent allow/deny lists included). When it is off, an
        agent reads only its own memories, whatever grants exist."""
        return self.flag_enabled(USE_CROSS_AGENT_SHARING, self.scope(user, agent, session))

    def require_admin(self, operation: str) -> None:
        """Raise ``PermissionDeniedError`` unless this store was opened with ``role="admin"``:
        ``operation`` touches other agents' or users' data wholesale."""
        if self.role != "admin":
            raise PermissionDeniedError(
                f"{operation} needs the admin role; this store was opened with role="
                f"{self.role!r} (Memory.open(..., role='admin'))"
            )

    def set_team(self, user: str, team: str, agents: Iterable[str]) -> None:
        """Make ``agents`` the members of ``user``'s team ``team`` (admin; an empty list
        dissolves the team). Grants to the team then reach exactly these agents."""
        if self._remote is not None:  # the hub checks that the key is an admin's
            body = {"user": user, "team": team, "agents": list(agents)}
            self._remote.admin("set_team", body, type(None))
            return
        self.require_admin("defining a team")
        checked = validate(
            TeamInput, {"user": user, "team": team, "agents": as_list(agents, "agents")}
        )
        self._db.write(
            lambda connection: sharing.set_team(connection, "admin", checked), user=checked.user
        )
        self._injector.invalidate({checked.user})

    def teams(self, user: str) -> dict[str, builtins.list[str]]:
        """Every team of ``user`` with its members."""
        checked = validate(UserInput, {"user": user})
        return self._db.read(lambda connection: sharing.team_members(connection, checked.user))

    def forget_user(self, user: str) -> ForgetReport:
        """Remove every row of ``user`` in every table and redact their events (admin).

        Nothing stays recoverable (see ``memory.store.forget``); this process's caches and vector
        index drop the user too. The operation is written to the event log.
        """
        if self._remote is not None:  # the hub checks that the key is an admin's
            return self._remote.admin("forget_user", {"user": user}, ForgetReport)
        self.require_admin("forgetting a user")
        checked = validate(UserInput, {"user": user})
        report = forget_user(self._db, checked.user, "admin")
        if not report.complete:
            self._checkpoints.request()
        self._retriever.forget(checked.user)
        self._injector.invalidate({checked.user})
        return report

    def graph(self, user: str) -> EntityGraph:
        """The Phase 1 entity knowledge graph of ``user``."""
        self._require_open()
        checked = validate(ScopeInput, {"user": user, "agent": "graph"})
        if self._remote is not None:
            return RemoteGraph(self._remote, checked.user)
        logged = revision_at_least(self.revision, CHANGES_REVISION)
        return EntityGraph(self._db, checked.user, self.redaction, logged=logged)

    # -- the event log and memory:updates ------------------------------------------------------

    def subscribe(
        self,
        callback: Callable[[MemoryEvent], None],
        *,
        after_seq: int | None = None,
        user: str | None = None,
    ) -> Subscription:
        """Call ``callback`` with every event committed after ``after_seq`` (default: from
        now on), of ``user`` only if given, in order and once each, on a thread of its own;
        ``close()`` the subscription to stop. Survives the bus going down (see
        ``memory.updates``). Every user's events: admin only; an agent subscribes through
        its scope (``Scope.subscribe``), which sees only what the scope may read."""
        self.require_admin("subscribing to every user's events (agents use Scope.subscribe)")
        self._require_events()
        admits = None if user is None else (lambda event: event.user_id == user)
        return self._updates.subscribe(callback, after_seq=after_seq, admits=admits)

    def updates_status(self) -> UpdatesStatus:
        """The ``memory:updates`` backend and whether it is degraded (for health checks)."""
        return self._updates.status()

    def verify_events(self) -> ChainReport:
        """Walk the hash chain of the event log; the report names the first bad event."""
        self._require_events()
        report = self._db.read(verify_chain)
        if not report.ok:
            telemetry.instruments().integrity_failures.add(1, {"check": "event_chain"})
        return report

    def _require_open(self) -> None:
        if self._remote.closed if self._remote is not None else self._db.closed:
            raise StoreClosedError("this memory store is closed; open it again with Memory.open")

    def _require_events(self) -> None:
        self._require_open()
        if not revision_at_least(self.revision, MEMORIES_REVISION):
            raise SchemaError(
                f"the event log needs schema revision {MEMORIES_REVISION}; the database is at "
                f"{self.revision}: run `memctl migrate`"
            )

    def close(self) -> None:
        """Stop subscriptions and release every pooled connection; every later call of this
        store, its scopes and graphs raises ``StoreClosedError``. Closing twice is harmless."""
        if self._remote is not None:
            self._remote.close()
            return
        if self._db.closed:
            return
        self._injector.flush()  # the uses of injected memories counted but not written yet
        self._retriever.save_snapshots()  # so the next process starts from them
        telemetry.stop_observing_flags(self.flags)
        telemetry.stop_observing_schema(self)
        self._updates.close()
        self._checkpoints.close()
        self._db.close()
        self.engine.dispose()

    def __enter__(self) -> Memory:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


# The members of Memory a remote store answers; every other public one exists only
# embedded. A new member is embedded-only until it is added here and served.
REMOTE_MEMBERS = frozenset(
    {"open", "backend", "role", "scope", "graph", "set_team", "forget_user", "close",
     "require_admin"}
)  # fmt: skip
# The embedded store's public instance attributes (set in __init__, so not on the class).
_EMBEDDED_ATTRIBUTES = frozenset({"engine", "revision", "flags", "redaction"})


class _RemoteMemory(Memory):
    """A ``Memory`` opened on a hub service (``Memory._connect``): the members outside
    ``REMOTE_MEMBERS`` raise ``EmbeddedOnlyError`` naming themselves, not an
    ``AttributeError`` from deep inside."""

    def __getattr__(self, name: str) -> Any:  # only for attributes not found otherwise
        if name in _EMBEDDED_ATTRIBUTES:
            raise EmbeddedOnlyError(f"Memory.{name}")
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")


def _embedded_only(name: str, member: object) -> object:
    def refuse(self: Memory, *args: Any, **kwargs: Any) -> Any:
        raise EmbeddedOnlyError(f"Memory.{name}")

    refuse.__name__ = refuse.__qualname__ = name
    return property(refuse) if isinstance(member, property) else refuse


for _name, _member in vars(Memory).items():
    if not _name.startswith("_") and _name not in REMOTE_MEMBERS:
        setattr(_RemoteMemory, _name, _embedded_only(_name, _member))
