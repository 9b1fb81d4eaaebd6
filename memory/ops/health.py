"""Named health checks, the engine behind ``memctl health``.

Each check is a function of a :class:`HealthContext` that returns ``(status, detail)``:
``ok``, ``warn`` (works, but an operator should look) or ``fail``; raising counts as a
failure whose detail is the error. A check can name the checks it depends on; when one of
them did not pass, it is reported as ``skip`` instead of failing for the same reason twice.

The built-in checks, in order: ``database`` (reachable within the 5 s timeouts),
``schema`` (at the head revision), ``sqlite`` (WAL and foreign keys, SQLite only),
``embedder`` (the model loads and embeds), ``flag_provider`` (flag state readable),
``redis`` (reachable, if configured), ``cleanup`` (the last retention run succeeded and is
recent), ``backup`` (the age of the last good backup, against the 1-hour RPO, when a backup
directory is configured). Other modules add theirs with :func:`register_health_check`.

>>> report = run_health_checks("sqlite:///memory.db", embedder="hashing")  # doctest: +SKIP
>>> report.ok, [(r.name, r.status) for r in report.results]  # doctest: +SKIP
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Literal

from sqlalchemy.engine import URL, Engine

from memory import updates
from memory.client import Memory
from memory.core.errors import InvalidInputError
from memory.ops.backup import BACKUP_DIR_ENV, BACKUP_RPO, latest_backup
from memory.ops.retention import last_cleanup_run
from memory.search.embeddings import HashingEmbedder, MiniLMEmbedder
from memory.store.engine import (
    DatabaseError,
    PoolTimeoutError,
    create_engine,
    is_memory_sqlite,
    ping,
    resolve_database_url,
    sqlite_settings,
)
from memory.store.events import CHANNEL
from memory.store.flags import DatabaseFlagProvider
from memory.store.schema import database_revision, head_revision
from memory.store.tables import utcnow

__all__ = [
    "CheckFunction",
    "CheckOutcome",
    "EmbedderChoice",
    "HealthCheckResult",
    "HealthContext",
    "HealthReport",
    "REDIS_URL_ENV",
    "Status",
    "health_checks",
    "register_health_check",
    "run_health_checks",
    "unregister_health_check",
]

Status = Literal["ok", "warn", "fail", "skip"]
CheckOutcome = tuple[Literal["ok", "warn", "fail", "skip"], str]
CheckFunction = Callable[["HealthContext"], CheckOutcome]

REDIS_URL_ENV = "MEMORY_REDIS_URL"
EmbedderChoice = Literal["minilm", "hashing", "none"]
# A cleanup run older than this is reported as a warning: the worker may have stopped.
CLEANUP_STALE_AFTER = timedelta(hours=48)
REDIS_TIMEOUT_SECONDS = 5.0


@dataclass(frozen=True, slots=True)
class HealthCheckResult:
    """One check's outcome; ``seconds`` is how long it took."""

    name: str
    status: Status
    detail: str
    seconds: float


@dataclass(frozen=True, slots=True)
class HealthReport:
    """Every check's result; ``ok`` is False when any check failed."""

    results: tuple[HealthCheckResult, ...]

    @property
    def ok(self) -> bool:
        """True unless a check failed (warnings and skips do not fail the report)."""
        return all(result.status != "fail" for result in self.results)

    def as_dict(self) -> dict[str, object]:
        """Plain data for ``--json``."""
        return {
            "ok": self.ok,
            "checks": [
                {
                    "name": r.name,
                    "status": r.status,
                    "detail": r.detail,
                    "seconds": round(r.seconds, 3),
                }
                for r in self.results
            ],
        }


@dataclass
class HealthContext:
    """What checks read: the database URL, the options, and handles opened on first use and
    closed when the run ends."""

    url: URL
    embedder: EmbedderChoice = "minilm"
    redis_url: str | None = None
    backup_dir: Path | None = None
    _engine: Engine | None = field(default=None, repr=False)
    _memory: Memory | None = field(default=None, repr=False)

    def engine(self) -> Engine:
        """An engine on the database (the library's settings: 5 s timeouts)."""
        if self._engine is None:
            self._engine = create_engine(self.url)
        return self._engine

    def memory(self) -> Memory:
        """A :class:`Memory` on the database as it is: never migrates, no embedder."""
        if self._memory is None:
            engine = self.engine()
            self._memory = Memory(engine, database_revision(engine), None)
        return self._memory

    def close(self) -> None:
        """Release the handles."""
        if self._engine is not None:
            self._engine.dispose()


@dataclass(frozen=True, slots=True)
class _Registered:
    function: CheckFunction
    requires: tuple[str, ...]
    description: str


_REGISTRY: dict[str, _Registered] = {}


def register_health_check(
    name: str,
    function: CheckFunction,
    *,
    requires: Sequence[str] = (),
    description: str = "",
    replace: bool = False,
) -> None:
    """Add a named check (run after those registered before it).

    ``function(context)`` returns ``(status, detail)``; ``requires`` names checks that must
    pass (``ok`` or ``warn``) first, else this one is skipped. Registering a taken name
    raises ``InvalidInputError`` unless ``replace``.
    """
    if not name or not name.replace("_", "").isalnum():
        raise InvalidInputError(f"name: a check name is letters, digits and _, not {name!r}")
    if name in _REGISTRY and not replace:
        raise InvalidInputError(f"name: a health check named {name!r} is already registered")
    unknown = [required for required in requires if required not in _REGISTRY]
    if unknown:
        raise InvalidInputError(f"requires: no health check named {', '.join(unknown)}")
    _REGISTRY[name] = _Registered(function, tuple(requires), description)


def unregister_health_check(name: str) -> None:
    """Remove a check registered with :func:`register_health_check`."""
    if _REGISTRY.pop(name, None) is None:
        raise InvalidInputError(f"name: no health check named {name!r}")


def health_checks() -> dict[str, str]:
    """The registered checks, in running order, with their descriptions."""
    return {name: entry.description for name, entry in _REGISTRY.items()}


def run_health_checks(
    url: str | URL | None = None,
    *,
    embedder: EmbedderChoice = "minilm",
    redis_url: str | None = None,
    backup_dir: str | os.PathLike[str] | None = None,
    only: Sequence[str] | None = None,
) -> HealthReport:
    """Run every registered check (or those named in ``only``, with what they require)
    against the database at ``url`` (default ``$MEMORY_DATABASE_URL``); the backups are
    looked for in ``backup_dir`` (default ``$MEMORY_BACKUP_DIR``; neither: not checked)."""
    if embedder not in ("minilm", "hashing", "none"):
        raise InvalidInputError(f"embedder: one of minilm, hashing, none, not {embedder!r}")
    if only is not None:
        unknown = [name for name in only if name not in _REGISTRY]
        if unknown:
            raise InvalidInputError(
                f"check: no health check named {', '.join(unknown)} "
                f"(known: {', '.join(_REGISTRY)})"
            )
    backups = backup_dir if backup_dir is not None else os.environ.get(BACKUP_DIR_ENV) or None
    context = HealthContext(
        resolve_database_url(url),
        embedder,
        redis_url if redis_url is not None else os.environ.get(REDIS_URL_ENV) or None,
        Path(backups) if backups is not None else None,
    )
    wanted = _with_requirements(only) if only is not None else list(_REGISTRY)
    results: dict[str, HealthCheckResult] = {}
    try:
        for name in wanted:
            entry = _REGISTRY[name]
            started = time.perf_counter()
            blocked = [r for r in entry.requires if results[r].status not in ("ok", "warn")]
            status: Status
            if blocked:
                status, detail = "skip", f"needs {', '.join(blocked)}"
            else:
                try:
                    status, detail = entry.function(context)
                except Exception as error:  # a broken check is a failed check, not a crash
                    status, detail = "fail", f"{type(error).__name__}: {error}"
            results[name] = HealthCheckResult(
                name, status, detail, time.perf_counter() - started
            )
    finally:
        context.close()
    return HealthReport(tuple(results.values()))


def _with_requirements(names: Sequence[str]) -> list[str]:
    needed: set[str] = set()

    def add(name: str) -> None:
        if name not in needed:
            needed.add(name)
            for required in _REGISTRY[name].requires:
                add(required)

    for name in names:
        add(name)
    return [name for name in _REGISTRY if name in needed]


# -- the built-in checks ------------------------------------------------------------------------


def _redacted(context: HealthContext) -> str:
    return context.url.render_as_string(hide_password=True)


def check_database(context: HealthContext) -> CheckOutcome:
    """The database answers ``SELECT 1``."""
    url = context.url
    if url.get_backend_name() == "sqlite" and not is_memory_sqlite(url):
        # Connecting would create an empty file: a health check must not.
        if not Path(str(url.database)).is_file():
            return "fail", f"no SQLite database file at {url.database}"
    started = time.perf_counter()
    try:
        ping(context.engine())
    except DatabaseError as error:
        first_line = str(error.orig).strip().splitlines()[0] if str(error.orig).strip() else ""
        return "fail", f"cannot reach {_redacted(context)}: {first_line or type(error.orig)}"
    except PoolTimeoutError as error:
        return "fail", f"no connection to {_redacted(context)} came free: {error}"
    return "ok", f"{_redacted(context)} answered in {(time.perf_counter() - started) * 1000:.1f} ms"


def check_schema(context: HealthContext) -> CheckOutcome:
    """The schema is at the newest revision this code knows."""
    current, head = database_revision(context.engine()), head_revision()
    if current == head:
        return "ok", f"at head {head}"
    if current is None:
        return "fail", f"no schema (head is {head}): run `memctl migrate`"
    return "fail", f"at {current}, head is {head}: run `memctl migrate`"


def check_sqlite(context: HealthContext) -> CheckOutcome:
    """SQLite runs in WAL mode with foreign keys enforced."""
    if context.url.get_backend_name() != "sqlite":
        return "skip", "not SQLite"
    journal, foreign_keys = sqlite_settings(context.engine())
    problems = []
    # An in-memory database has no WAL (journal "memory"); that is expected.
    if journal != "wal" and not is_memory_sqlite(context.url):
        problems.append(f"journal_mode is {journal}, not wal")
    if not foreign_keys:
        problems.append("foreign_keys is off")
    if problems:
        return "fail", "; ".join(problems)
    return "ok", f"journal_mode={journal}, foreign_keys=on"


def check_embedder(context: HealthContext) -> CheckOutcome:
    """The configured embedding model loads and embeds a sentence."""
    if context.embedder == "none":
        return "skip", "no embedder configured (keyword search only)"
    model = HashingEmbedder() if context.embedder == "hashing" else MiniLMEmbedder()
    started = time.perf_counter()
    vectors = model.embed(["health check"])
    if vectors.shape != (1, model.dimension):
        return "fail", f"{model.model_name} returned shape {vectors.shape}"
    elapsed = time.perf_counter() - started
    return "ok", f"{model.model_name} ({model.dimension} dims) embedded in {elapsed:.2f} s"


def check_flag_provider(context: HealthContext) -> CheckOutcome:
    """The flag state in the database is readable."""
    flags = DatabaseFlagProvider(context.engine()).snapshot()
    stored = ", ".join(f"{name}={definition.rollout}%" for name, definition in flags.items())
    return "ok", f"flag state readable ({stored or 'no flag changed yet: registry defaults'})"


def check_redis(context: HealthContext) -> CheckOutcome:
    """Redis answers PING, when one is configured (``--redis-url`` / ``$MEMORY_REDIS_URL``)."""
    if not context.redis_url:
        return "skip", f"not configured (--redis-url or ${REDIS_URL_ENV})"
    try:
        import redis
    except ImportError:
        return "fail", "the redis client is not installed: pip install 'tiered-memory[redis]'"
    client = redis.Redis.from_url(
        context.redis_url,
        socket_timeout=REDIS_TIMEOUT_SECONDS,
        socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
    )
    try:
        client.ping()
    except redis.RedisError as error:
        return "fail", f"cannot reach {_redis_display(context.redis_url)}: {error}"
    finally:
        client.close()
    return "ok", f"{_redis_display(context.redis_url)} answered PING"


def _redis_display(url: str) -> str:
    # Hide a password the way database URLs are shown.
    if "@" in url:
        scheme, _, rest = url.partition("://")
        return f"{scheme}://***@{rest.rpartition('@')[2]}"
    return url


def check_cleanup(context: HealthContext) -> CheckOutcome:
    """The last retention cleanup succeeded, recently."""
    run = last_cleanup_run(context.memory())
    if run is None:
        return "warn", "no cleanup has run yet (memctl cleanup, or a RetentionWorker)"
    when = run.finished_at or run.started_at
    age = utcnow() - when
    ago = f"{age.total_seconds() / 3600:.1f} h ago"
    if run.status == "failed":
        return "fail", f"the last cleanup (run {run.id}, {ago}) failed: {run.error}"
    if run.status != "ok":
        return "warn", f"the last cleanup (run {run.id}, {ago}) is {run.status}"
    if age > CLEANUP_STALE_AFTER:
        return "warn", f"the last cleanup succeeded {ago}: is the cleanup job still running?"
    return "ok", f"last cleanup succeeded {ago} (run {run.id})"


def check_backup(context: HealthContext) -> CheckOutcome:
    """The last good backup in the backup directory is younger than the RPO (1 hour)."""
    if context.backup_dir is None:
        return "skip", f"no backup directory configured (--backups or ${BACKUP_DIR_ENV})"
    latest = latest_backup(context.backup_dir)
    if latest is None:
        return "fail", f"no complete backup in {context.backup_dir}"
    age = utcnow() - latest.created_at
    detail = (
        f"last good backup {_age(age)} old: {latest.directory.name} "
        f"(revision {latest.revision}, {latest.rows} rows)"
    )
    if age > BACKUP_RPO:
        return "warn", f"{detail}; older than the {_age(BACKUP_RPO)} RPO: is the timer running?"
    return "ok", detail


def _age(age: timedelta) -> str:
    minutes = int(age.total_seconds() // 60)
    return f"{minutes // 60} h {minutes % 60:02d} min" if minutes >= 60 else f"{minutes} min"


register_health_check("database", check_database, description="reachable within 5 s")
register_health_check(
    "schema", check_schema, requires=["database"], description="at the head revision"
)
register_health_check(
    "sqlite", check_sqlite, requires=["database"], description="WAL and foreign keys (SQLite)"
)
register_health_check("embedder", check_embedder, description="the model loads and embeds")
register_health_check(
    "flag_provider", check_flag_provider, requires=["schema"], description="flag state readable"
)
register_health_check("redis", check_redis, description="reachable (when configured)")
register_health_check(
    "cleanup", check_cleanup, requires=["schema"], description="last retention run"
)
register_health_check(
    "backup", check_backup, description="the last good backup is younger than the 1 h RPO"
)


def check_updates(context: HealthContext) -> CheckOutcome:
    """The ``memory:updates`` bus of ``$MEMORY_UPDATES_URL`` accepts a subscriber.

    A bus that does not is a warning, not a failure: the library keeps working and
    subscribers read the log (degraded mode), only later.
    """
    setting = os.environ.get(updates.UPDATES_URL_ENV) or "inprocess"
    if setting == "inprocess":
        return "ok", "in-process (no bus to reach; set $MEMORY_UPDATES_URL to share updates)"
    try:
        name = updates.probe(setting, context.engine())
    except updates.BusError as error:
        return "warn", f"degraded: {error}; subscribers read the event log until it is back"
    return "ok", f"{name} bus reachable: subscribers listen on {CHANNEL}"


register_health_check(
    "updates", check_updates, requires=["database"], description="memory:updates bus reachable"
)
