"""Transactions with bounded retries, and the one dialect seam the store needs.

Every store operation is a function of a connection, run whole inside one transaction by
``Database.read`` or ``Database.write``. Running the whole function again is what makes a
retry safe: a transient failure (SQLite busy past its timeout, a PostgreSQL serialization
failure or deadlock, a connection dropped before commit) rolled everything back.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from memory._engine import write_options
from memory._errors import DatabaseUnavailableError
from memory._events import PENDING_KEY, MemoryEvent

T = TypeVar("T")

MAX_ATTEMPTS = 6
_FIRST_BACKOFF_SECONDS = 0.02
_RETRYABLE_SQLSTATES = {"40001", "40P01", "55P03"}  # serialization, deadlock, lock timeout


def is_transient(error: DBAPIError) -> bool:
    """True for failures that a fresh attempt of the whole transaction can overcome."""
    if error.connection_invalidated:
        return True
    sqlstate = getattr(error.orig, "sqlstate", None)
    if sqlstate in _RETRYABLE_SQLSTATES:
        return True
    if isinstance(error, OperationalError):
        message = str(error.orig).lower()
        if "database is locked" in message or "database table is locked" in message:
            return True
        # psycopg reports a refused or broken connection with no SQLSTATE or class 08.
        return error.orig.__class__.__module__.startswith("psycopg") and (
            sqlstate is None or sqlstate.startswith("08")
        )
    return False


class Database:
    """An engine plus the transaction discipline every store operation follows."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name
        # Called with the events a transaction appended, after it has committed (and only
        # then): the publisher of ``memory:updates``.
        self.after_commit: Callable[[list[MemoryEvent]], None] | None = None

    def read(self, operation: Callable[[Connection], T]) -> T:
        """Run ``operation`` in a read transaction, retrying transient failures."""
        return self._run(operation, {})

    def write(self, operation: Callable[[Connection], T]) -> T:
        """Run ``operation`` in a write transaction, retrying transient failures."""
        return self._run(operation, write_options())

    def _run(self, operation: Callable[[Connection], T], options: dict[str, Any]) -> T:
        delay = _FIRST_BACKOFF_SECONDS
        for attempt in range(1, MAX_ATTEMPTS + 1):
            try:
                with self.engine.connect() as connection:
                    connection.execution_options(**options)
                    # The info dict lives as long as the pooled connection: drop what an
                    # attempt that failed before commit left behind.
                    connection.info.pop(PENDING_KEY, None)
                    with connection.begin():
                        result = operation(connection)
                    committed = connection.info.pop(PENDING_KEY, None)
                if committed and self.after_commit is not None:
                    self.after_commit(committed)
                return result
            except PoolTimeoutError as error:
                raise DatabaseUnavailableError(
                    f"no database connection came free within the pool timeout: {error}"
                ) from error
            except DBAPIError as error:
                if not is_transient(error):
                    raise
                if attempt == MAX_ATTEMPTS:
                    raise DatabaseUnavailableError(
                        f"the database stayed unavailable after {MAX_ATTEMPTS} attempts: "
                        f"{error.orig}"
                    ) from error
                # Jitter keeps writers that collided from colliding again in step.
                time.sleep(delay * (0.5 + random.random()))
                delay *= 2
        raise AssertionError("unreachable")

    def insert(self, table: sa.Table) -> Any:
        """An INSERT that supports ``on_conflict_do_nothing`` on this dialect."""
        if self.dialect == "postgresql":
            return postgresql.insert(table)
        return sqlite.insert(table)
