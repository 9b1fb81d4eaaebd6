"""PostgreSQL's "could not store" errors leave the error tree as ``StorageError`` (issue 16,
finding 10), and the transaction that met one wrote nothing.

A full disk cannot be made here without mounting a small filesystem for the server; the
error comes instead from the real server's class 53 (insufficient resources), the class
its disk-full error (53100) belongs to: a write transaction whose query needs more
temporary file space than ``temp_file_limit`` allows (53400). ``Database`` maps by class,
so both take the same path. The SQLite disk-full case is
``tests/api/test_hostile_inputs.py::test_a_full_database_is_a_storage_error_and_writes_nothing``.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from memory import Memory, MemoryStoreError, StorageError
from memory.store.db import Database


def test_a_postgresql_resource_error_is_a_storage_error_and_writes_nothing(
    url_for: Callable[[str], str],
) -> None:
    with Memory.open(url_for("postgresql"), embedder=None) as store:
        with store.engine.begin() as connection:
            connection.execute(sa.text("CREATE TABLE IF NOT EXISTS fault_probe (x integer)"))
        db = Database(store.engine)

        def operation(connection: Connection) -> None:
            connection.execute(sa.text("INSERT INTO fault_probe VALUES (1)"))
            connection.execute(sa.text("SET LOCAL work_mem = '64kB'"))
            connection.execute(sa.text("SET LOCAL temp_file_limit = '64kB'"))
            # A sort of a million rows spills to temporary files past the limit.
            connection.execute(
                sa.text(
                    "SELECT count(*) FROM (SELECT g FROM generate_series(1, 1000000) g "
                    "ORDER BY g DESC) ordered"
                )
            )

        with pytest.raises(StorageError, match="could not store the write") as raised:
            db.write(operation)
        assert isinstance(raised.value, MemoryStoreError)
        assert getattr(raised.value.__cause__.orig, "sqlstate", "").startswith("53")  # type: ignore[union-attr]
        with store.engine.connect() as connection:
            assert connection.execute(sa.text("SELECT count(*) FROM fault_probe")).scalar() == 0
