"""The throwaway databases benchmarks measure in, removed afterwards even on error.

Benchmarks run as scripts (``python benchmarks/x.py``), so this module is imported by its
plain name from the script's own directory.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import make_url

# The server the tests use: an existing database there, used only to CREATE and DROP ours.
DEFAULT_POSTGRES_URL = os.environ.get(
    "MEMORY_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


@contextmanager
def scratch_database(backend: str, postgres_url: str, prefix: str) -> Iterator[str]:
    """A new, empty database URL: a SQLite file in a temporary directory (``backend ==
    "sqlite"``), or a PostgreSQL database ``<prefix>_<random>`` created through
    ``postgres_url`` and dropped ``WITH (FORCE)`` at the end."""
    if backend == "sqlite":
        with tempfile.TemporaryDirectory(prefix=f"{prefix}-") as directory:
            yield f"sqlite:///{Path(directory) / 'memory.db'}"
        return
    admin = sa.create_engine(postgres_url, isolation_level="AUTOCOMMIT", poolclass=sa.NullPool)
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    try:
        with admin.connect() as connection:
            connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
        try:
            yield make_url(postgres_url).set(database=name).render_as_string(hide_password=False)
        finally:
            with admin.connect() as connection:
                connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()
