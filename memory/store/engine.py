"""Turn a database URL into a configured SQLAlchemy engine.

SQLite is the embedded default (one file in the working directory); PostgreSQL serves many
agent hosts sharing one store. Everything dialect-specific about connections lives here.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError
from sqlalchemy.exc import TimeoutError as SQLAlchemyTimeoutError
from sqlalchemy.pool import StaticPool

from memory.core.errors import InvalidInputError
from memory.telemetry import instruments as telemetry

EngineOrUrl = Engine | str | URL | None
"""A configured engine, or a URL to open one on (None: ``$MEMORY_DATABASE_URL``)."""

DATABASE_URL_ENV = "MEMORY_DATABASE_URL"
DEFAULT_DATABASE_URL = "sqlite:///memory.db"

BUSY_TIMEOUT_SECONDS = 5.0
_BUSY_TIMEOUT_MS = int(BUSY_TIMEOUT_SECONDS * 1000)
# How often a writer polls SQLite's write lock while another connection holds it.
WRITE_LOCK_POLL_MS = 1
POSTGRES_POOL_SIZE = 10
POSTGRES_TIMEOUT_SECONDS = 5

# What the database driver raises when a statement or connection fails and the library did
# not turn it into one of its own errors; operators' tools catch it by this name.
DatabaseError = DBAPIError
# What a pooled engine raises when no connection came free within its timeout.
PoolTimeoutError = SQLAlchemyTimeoutError


def resolve_database_url(url: str | URL | None = None) -> URL:
    """Return the URL to use: the caller's, else ``$MEMORY_DATABASE_URL``, else ``memory.db``.
    A plain path without a scheme is a SQLite file.

    ``postgresql://`` URLs are pinned to the psycopg 3 driver.

    >>> str(resolve_database_url("postgresql://localhost/test"))
    'postgresql+psycopg://localhost/test'
    """
    raw = url if url is not None else os.environ.get(DATABASE_URL_ENV) or DEFAULT_DATABASE_URL
    if isinstance(raw, str) and raw.strip() and ":" not in raw:
        # A plain file path ("agent.db", "/var/lib/agent/memory.db") is a SQLite file;
        # anything with a colon is read as a URL, so a mistyped URL is refused, not created.
        return URL.create("sqlite+pysqlite", database=raw)
    try:
        parsed = make_url(raw)
    except ArgumentError as exc:
        raise InvalidInputError(f"database URL {str(raw)!r} is not a valid URL: {exc}") from exc
    if parsed.get_backend_name() == "postgresql":
        return parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() == "sqlite":
        return parsed.set(drivername="sqlite+pysqlite")
    raise InvalidInputError(
        f"database URL {parsed.render_as_string(hide_password=True)!r}: "
        "only sqlite:// and postgresql:// are supported"
    )


def is_memory_sqlite(url: URL) -> bool:
    """True for an in-process SQLite database that lives only as long as its connection."""
    return url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:")


def create_engine(url: str | URL | None = None, **overrides: Any) -> Engine:
    """Create an engine configured for safe concurrent use of the memory store.

    SQLite: WAL journal, ``busy_timeout`` of 5 s, foreign keys on, and write transactions
    opened with ``BEGIN IMMEDIATE`` (see ``write_options``), polling the write lock every
    millisecond, so that concurrent writers wait for it instead of failing on a lock
    upgrade. ``:memory:`` databases share a single connection so that every thread sees the
    same data.

    PostgreSQL (psycopg 3): a pool of 10, 5 s connect and pool timeouts, pre-ping.
    """
    resolved = resolve_database_url(url)
    if resolved.get_backend_name() == "sqlite":
        engine = _create_sqlite_engine(resolved, **overrides)
    else:
        options: dict[str, Any] = {
            "pool_size": POSTGRES_POOL_SIZE,
            "max_overflow": POSTGRES_POOL_SIZE,
            "pool_timeout": POSTGRES_TIMEOUT_SECONDS,
            "pool_pre_ping": True,
            "connect_args": {"connect_timeout": POSTGRES_TIMEOUT_SECONDS},
        }
        options.update(overrides)
        engine = sa.create_engine(resolved, **options)
    _measure_statements(engine)
    _count_connection_failures(engine)
    return engine


@contextmanager
def engine_for(engine_or_url: EngineOrUrl) -> Iterator[Engine]:
    """``engine_or_url`` itself when it is an engine (left open: it is the caller's), else a
    new engine on the URL, disposed when the block ends."""
    if isinstance(engine_or_url, Engine):
        yield engine_or_url
        return
    engine = create_engine(engine_or_url)
    try:
        yield engine
    finally:
        engine.dispose()


def _measure_statements(engine: Engine) -> None:
    """Record ``memory.db.query_duration`` for every statement the engine executes (but
    transaction control, see ``memory.telemetry.instruments.statement_operation``)."""
    backend = engine.dialect.name
    # One attribute dict per verb, built once: the hot path only looks it up.
    attributes = {
        verb: {"backend": backend, "operation": verb}
        for verb in ("select", "insert", "update", "delete", "other")
    }

    @event.listens_for(engine, "before_cursor_execute")
    def _started(
        _connection: Any, _cursor: Any, _statement: str, _parameters: Any, context: Any, _many: bool
    ) -> None:
        if context is not None:
            context.memory_started = time.perf_counter()

    @event.listens_for(engine, "after_cursor_execute")
    def _finished(
        _connection: Any, _cursor: Any, statement: str, _parameters: Any, context: Any, _many: bool
    ) -> None:
        started = getattr(context, "memory_started", None)
        operation = telemetry.statement_operation(statement)
        if started is not None and operation is not None:
            telemetry.instruments().db_query_duration.record(
                telemetry.elapsed_ms(started), attributes[operation]
            )


def _count_connection_failures(engine: Engine) -> None:
    """Count ``memory.db.connection_failures``: connecting failed (no connection yet), or
    the database dropped a connection in use (a disconnect)."""
    attributes = {"backend": engine.dialect.name}

    @event.listens_for(engine, "handle_error")
    def _failed(context: Any) -> None:
        if context.connection is None or context.is_disconnect:
            telemetry.instruments().db_connection_failures.add(1, attributes)


def _create_sqlite_engine(url: URL, **overrides: Any) -> Engine:
    in_memory = is_memory_sqlite(url)
    options: dict[str, Any] = {
        "connect_args": {"timeout": BUSY_TIMEOUT_SECONDS, "check_same_thread": False},
    }
    if in_memory:
        options["poolclass"] = StaticPool
    options.update(overrides)
    engine = sa.create_engine(url, **options)

    @event.listens_for(engine, "connect")
    def _configure_connection(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control away from the sqlite3 module (which would open deferred
        # transactions lazily) so that the "begin" hook below decides how each one starts.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            if not in_memory:
                cursor.execute("PRAGMA journal_mode=WAL")
                # In WAL mode NORMAL is durable across application crashes; only an OS
                # crash can lose the last transactions, never corrupt the file.
                cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute(f"PRAGMA busy_timeout={_BUSY_TIMEOUT_MS}")
            cursor.execute("PRAGMA foreign_keys=ON")
            # Deleted rows are overwritten with zeros, not left in free pages: SQLite's stock
            # default is off (some builds turn it on), and forget must not depend on the
            # build or on which connection deleted a row.
            cursor.execute("PRAGMA secure_delete=ON")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(connection: sa.Connection) -> None:
        options = connection.get_execution_options()
        if options.get("sqlite_begin") == "IMMEDIATE":
            deadline = options.get("sqlite_lock_deadline")
            _take_write_lock(
                connection,
                deadline if deadline is not None else time.monotonic() + BUSY_TIMEOUT_SECONDS,
            )
        else:
            connection.exec_driver_sql("BEGIN DEFERRED")

    return engine


def _take_write_lock(connection: sa.Connection, deadline: float) -> None:
    """``BEGIN IMMEDIATE``, polling the write lock every millisecond until ``deadline`` (a
    ``time.monotonic()`` value); then "database is locked" as SQLAlchemy raises it.

    SQLite's own busy handler sleeps longer and longer between polls, up to 100 ms. A
    process whose threads commit and begin again in turn holds the lock nearly all the time,
    so a writer of another process asleep in that handler rarely finds it free: it stayed
    out for seconds while the lock changed hands within the other process. For this
    statement only, ``busy_timeout`` is one poll: SQLite tries, sleeps 1 ms without holding
    the GIL, tries again. The polls go to the driver directly: each failed one through
    SQLAlchemy would cost its error handling.
    """
    cursor = connection.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    cursor.execute(f"PRAGMA busy_timeout={WRITE_LOCK_POLL_MS}")
    try:
        while time.monotonic() < deadline:
            try:
                cursor.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as error:
                if not sqlite_locked(error):
                    break
        # The last try through SQLAlchemy, so that its failure is the OperationalError that
        # ``memory.store.db`` retries or reports.
        connection.exec_driver_sql("BEGIN IMMEDIATE")
    finally:
        cursor.execute(f"PRAGMA busy_timeout={_BUSY_TIMEOUT_MS}")
        cursor.close()


def sqlite_locked(error: Exception) -> bool:
    """True when SQLite refused a statement because another connection holds a lock
    (``error`` as the sqlite3 module raises it, or as SQLAlchemy wraps it)."""
    message = str(getattr(error, "orig", error)).lower()
    return "database is locked" in message or "database table is locked" in message


def write_options(deadline: float | None = None) -> dict[str, Any]:
    """Execution options for a connection that will write; ``deadline`` (a
    ``time.monotonic()`` value) ends the wait for SQLite's write lock, by default
    ``BUSY_TIMEOUT_SECONDS`` after BEGIN.

    On SQLite a write transaction takes the write lock at BEGIN; a deferred transaction that
    upgrades later fails at once with "database is locked" when another writer got there
    first, because SQLite cannot wait for a snapshot that is already stale.
    """
    options: dict[str, Any] = {"sqlite_begin": "IMMEDIATE"}
    if deadline is not None:
        options["sqlite_lock_deadline"] = deadline
    return options


def ping(engine: Engine) -> None:
    """Run ``SELECT 1`` on a connection from ``engine``: raises :data:`DatabaseError` when the
    database does not answer, :data:`PoolTimeoutError` when no connection came free."""
    with engine.connect() as connection:
        connection.execute(sa.text("SELECT 1"))


def sqlite_settings(engine: Engine) -> tuple[str, bool]:
    """The journal mode of a SQLite database and whether foreign keys are enforced, as a
    connection of ``engine`` sees them."""
    with engine.connect() as connection:
        journal = str(connection.exec_driver_sql("PRAGMA journal_mode").scalar()).lower()
        foreign_keys = connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    return journal, foreign_keys


def before_each_statement(engine: Engine, hook: Callable[[], None]) -> Callable[[], None]:
    """Call ``hook`` before every statement ``engine`` runs (it may sleep or raise, which is
    how ``memctl workload`` injects slowness and failures); returns the function that
    removes it."""

    def before(*_args: Any) -> None:
        hook()

    event.listen(engine, "before_cursor_execute", before)
    return lambda: event.remove(engine, "before_cursor_execute", before)


def dialect_insert(dialect: str, table: sa.Table) -> Any:
    """An INSERT on ``table`` that supports ``on_conflict_do_nothing``/``_do_update`` on
    ``dialect`` (``sqlite`` or ``postgresql``)."""
    if dialect == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)
