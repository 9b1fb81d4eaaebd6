"""Transactions with bounded retries, fair admission, and the one dialect seam the store needs.

Every store operation is a function of a connection, run whole inside one transaction by
``Database.read`` or ``Database.write``. Running the whole function again is what makes a
retry safe: a transient failure (SQLite busy past its timeout, a PostgreSQL serialization
failure or deadlock, a connection dropped or refused while the server restarts) rolled
everything back.

Callers are admitted in arrival order (``AdmissionGate``) before they touch the connection
pool: at most as many callers as the pool has connections hold one, the rest queue first
come, first served. The pool's own wait is a lottery (a thread that just returned a
connection can take it again before a waiter wakes), so under 100 threads on a pool of 20
some callers waited past the timeout while the average wait was a few hundred
milliseconds. On SQLite, writers additionally queue for the one write lock in the same
order, so that only the writer at the head of a process's queue polls the lock (every
millisecond: ``memory.store.engine``) against other processes.

Every call is bounded by the engine's timeout (5 s): waiting for admission and retrying
transient failures both stop at that deadline with ``DatabaseUnavailableError``. An attempt
already under way when the deadline passes is itself bounded by the connect and busy
timeouts (5 s), so no call lasts longer than twice the timeout; SQLite's write lock is
polled only until the deadline.
"""

from __future__ import annotations

import hashlib
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DataError, DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.pool import QueuePool, StaticPool

from memory.core.errors import (
    DatabaseUnavailableError,
    InvalidInputError,
    StorageError,
    StoreClosedError,
)
from memory.core.types import MemoryEvent
from memory.store.changes import EVENT_KEY_INFO
from memory.store.engine import (
    BUSY_TIMEOUT_SECONDS,
    POSTGRES_TIMEOUT_SECONDS,
    dialect_insert,
    sqlite_locked,
    write_options,
)
from memory.store.events import AUDIT_KEY_INFO, PENDING_KEY
from memory.store.idempotency import claim_in

T = TypeVar("T")

_FIRST_BACKOFF_SECONDS = 0.02
_MAX_BACKOFF_SECONDS = 0.5
_RETRYABLE_SQLSTATES = {
    "40001",  # serialization failure
    "40P01",  # deadlock
    "55P03",  # lock not available
    "57P01",  # the server terminated the session: shutdown or restart
    "57P02",  # crash shutdown
    "57P03",  # the server is starting up or shutting down
}


def lock_user(connection: Connection, user: str, *, exclusive: bool = False) -> None:
    """Hold ``user``'s lock until the transaction ends: shared for a write of their rows,
    exclusive for ``forget_user``.

    So a write that began before a forget commits before the forget reads anything, and one
    that begins during it waits until the forget has committed: each is entirely forgotten
    or entirely after the forget. On PostgreSQL a transaction-level advisory lock (keyed
    by a digest of the user id; a collision only makes another user's writes wait for a
    forget); SQLite's ``BEGIN IMMEDIATE`` already serialises every writer.
    """
    if connection.dialect.name != "postgresql":
        return
    key = int.from_bytes(hashlib.sha256(f"user:{user}".encode()).digest()[:8], signed=True)
    function = "pg_advisory_xact_lock" if exclusive else "pg_advisory_xact_lock_shared"
    connection.execute(sa.text(f"SELECT {function}(:key)"), {"key": key})


# What a database says when it cannot store a write: SQLite's SQLITE_FULL and SQLITE_IOERR
# messages, PostgreSQL's classes 53 (insufficient resources: disk full, out of memory) and
# 58 (system error: I/O).
_SQLITE_STORAGE = ("database or disk is full", "disk i/o error")
_STORAGE_SQLSTATE_CLASSES = ("53", "58")


def _mapped(error: DBAPIError) -> Exception:
    """The error-tree exception for a database failure that retrying cannot overcome, or
    ``error`` itself when it is not one the caller can act on (a bug)."""
    sqlstate = getattr(error.orig, "sqlstate", None) or ""
    message = str(error.orig).lower()
    if sqlstate.startswith(_STORAGE_SQLSTATE_CLASSES) or any(
        text in message for text in _SQLITE_STORAGE
    ):
        return StorageError(f"the database could not store the write: {error.orig}")
    if isinstance(error, DataError):
        return InvalidInputError(f"the database refused a value: {error.orig}")
    return error


def is_transient(error: DBAPIError) -> bool:
    """True for failures that a fresh attempt of the whole transaction can overcome."""
    if error.connection_invalidated:
        return True
    sqlstate = getattr(error.orig, "sqlstate", None)
    if sqlstate in _RETRYABLE_SQLSTATES:
        return True
    if isinstance(error, OperationalError):
        if sqlite_locked(error):
            return True
        # psycopg reports a refused or broken connection with no SQLSTATE or class 08.
        return error.orig.__class__.__module__.startswith("psycopg") and (
            sqlstate is None or sqlstate.startswith("08")
        )
    return False


class AdmissionGate:
    """At most ``permits`` holders at once; waiters are admitted strictly in arrival order.

    ``release`` hands the permit to the oldest waiter directly, so a newcomer can never
    take it first, and a caller's wait is bounded by the callers ahead of it.
    """

    def __init__(self, permits: int) -> None:
        if permits < 1:
            raise ValueError(f"an admission gate needs at least 1 permit, not {permits}")
        self.permits = permits
        self._lock = threading.Lock()
        self._free = permits
        self._waiters: deque[threading.Lock] = deque()

    @property
    def waiting(self) -> int:
        """How many callers are queued for a permit right now."""
        return len(self._waiters)

    def acquire(self, timeout: float) -> bool:
        """Take a permit, waiting at most ``timeout`` seconds; False if none came free."""
        with self._lock:
            if self._free and not self._waiters:
                self._free -= 1
                return True
            turn = threading.Lock()
            turn.acquire()
            self._waiters.append(turn)
        if turn.acquire(timeout=max(timeout, 0.0)):
            return True
        with self._lock:
            if turn in self._waiters:
                self._waiters.remove(turn)
                return False
        # ``release`` handed this caller the permit just as its wait timed out.
        return True

    def release(self) -> None:
        """Give the permit back: to the oldest waiter if there is one."""
        with self._lock:
            if self._waiters:
                self._waiters.popleft().release()
            else:
                self._free += 1

    @contextmanager
    def admitted(self, deadline: float, what: str) -> Iterator[None]:
        """Hold a permit for the block; ``DatabaseUnavailableError`` at ``deadline``
        (a ``time.monotonic()`` value). ``what`` names the resource in that error."""
        if not self.acquire(deadline - time.monotonic()):
            raise DatabaseUnavailableError(
                f"no {what} came free within the timeout: all {self.permits} in use and "
                f"{self.waiting} other callers still queued; the database is overloaded "
                "or too slow"
            )
        try:
            yield
        finally:
            self.release()


def _connection_limit(engine: Engine) -> int | None:
    """How many connections the engine's pool can hand out at once (None: no limit)."""
    pool = engine.pool
    if isinstance(pool, QueuePool):
        return pool.size() + max(pool._max_overflow, 0)
    if isinstance(pool, StaticPool):  # one connection shared by every thread
        return 1
    return None


class Database:
    """An engine plus the transaction discipline every store operation follows.

    All of the store's traffic goes through one ``Database`` per engine, so that its gates
    see every caller.
    """

    def __init__(
        self, engine: Engine, audit_key: bytes | None = None, event_key: bytes | None = None
    ) -> None:
        self.engine = engine
        # The key of the event log's digests (``memory.store.events.audit_key``) and the key
        # that wraps the users' data keys (``memory.store.changes.event_key``), handed to
        # every transaction; never stored in the database.
        self.audit_key = audit_key
        self.event_key = event_key
        self.dialect = engine.dialect.name
        # Called with the events a transaction appended, after it has committed (and only
        # then): the publisher of ``memory:updates``.
        self.after_commit: Callable[[list[MemoryEvent]], None] | None = None
        limit = _connection_limit(engine)
        self.timeout = (
            POSTGRES_TIMEOUT_SECONDS if self.dialect == "postgresql" else BUSY_TIMEOUT_SECONDS
        )
        self._connections = AdmissionGate(limit) if limit is not None else None
        # SQLite has one write lock per database. A shared :memory: connection is already
        # serialized by its gate of 1.
        self._writer = AdmissionGate(1) if self.dialect == "sqlite" and limit != 1 else None
        self.closed = False

    def close(self) -> None:
        """Refuse every later read and write: a disposed engine would silently open new
        connections, so a closed store would go on accepting writes."""
        self.closed = True

    def read(self, operation: Callable[[Connection], T]) -> T:
        """Run ``operation`` in a read transaction, retrying transient failures."""
        return self._run(operation, writes=False)

    def write(self, operation: Callable[[Connection], T], *, user: str | None = None) -> T:
        """Run ``operation`` in a write transaction, retrying transient failures.

        ``user``: whose rows it writes; the transaction then holds that user's lock shared
        (``lock_user``), so that it cannot straddle a forget of them.
        """
        return self._run(operation, writes=True, user=user)

    def _run(
        self, operation: Callable[[Connection], T], *, writes: bool, user: str | None = None
    ) -> T:
        if self.closed:
            raise StoreClosedError("this memory store is closed; open it again with Memory.open")
        deadline = time.monotonic() + self.timeout
        options = write_options(deadline) if writes else {}
        delay = _FIRST_BACKOFF_SECONDS
        attempts = 0
        while True:
            attempts += 1
            try:
                with self._admitted(writes, deadline), self.engine.connect() as connection:
                    connection.execution_options(**options)
                    # The info dict lives as long as the pooled connection: drop what an
                    # attempt that failed before commit left behind.
                    connection.info.pop(PENDING_KEY, None)
                    connection.info[AUDIT_KEY_INFO] = self.audit_key
                    connection.info[EVENT_KEY_INFO] = self.event_key
                    with connection.begin():
                        if user is not None:
                            lock_user(connection, user)
                        result = operation(connection)
                        # A hub request's Idempotency-Key, claimed in the transaction of
                        # its write (memory.store.idempotency).
                        claim = claim_in(connection) if connection.info.get(PENDING_KEY) else None
                    if claim is not None:
                        claim.committed = True
                    committed = connection.info.pop(PENDING_KEY, None)
                # Published outside the gates: a slow bus must not hold the write lock.
                if committed and self.after_commit is not None:
                    self.after_commit(committed)
                return result
            except PoolTimeoutError as error:  # connections held outside this Database
                raise DatabaseUnavailableError(
                    f"no database connection came free within the pool timeout: {error}"
                ) from error
            except DBAPIError as error:
                if not is_transient(error):
                    raise _mapped(error) from error
                # Jitter keeps writers that collided from colliding again in step.
                pause = delay * (0.5 + random.random())
                if time.monotonic() + pause >= deadline:
                    raise DatabaseUnavailableError(
                        f"the database stayed unavailable for {self.timeout:g} s "
                        f"({attempts} attempts): {error.orig}"
                    ) from error
                time.sleep(pause)
                delay = min(2 * delay, _MAX_BACKOFF_SECONDS)

    @contextmanager
    def _admitted(self, writes: bool, deadline: float) -> Iterator[None]:
        with ExitStack() as stack:
            # The write lock first: a writer queued for it must not sit on a connection.
            if writes and self._writer is not None:
                stack.enter_context(self._writer.admitted(deadline, "SQLite write lock"))
            if self._connections is not None:
                stack.enter_context(self._connections.admitted(deadline, "database connection"))
            yield

    def insert(self, table: sa.Table) -> Any:
        """An INSERT that supports ``on_conflict_do_nothing`` on this dialect."""
        return dialect_insert(self.dialect, table)
