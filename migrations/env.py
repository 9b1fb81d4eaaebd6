"""Alembic environment for the memory schema.

The caller hands over an open connection in ``config.attributes["connection"]`` (this is
how ``memctl`` and pytest-alembic run migrations); a bare ``sqlalchemy.url`` works too.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context

from memory.store.engine import create_engine, write_options
from memory.store.tables import POSTGRES_TERMS_INDEX, SQLITE_FTS_TABLE, Base

config = context.config
target_metadata = Base.metadata

# Any fixed number: every process that migrates the same PostgreSQL database takes this
# lock, so two agent hosts upgrading at once run one after the other.
_MIGRATION_LOCK_ID = 0x6D656D6F7279


def _include_name(name: str | None, type_: str, parent_names: object) -> bool:
    # Backend-only structures of the keyword index live in the migration, not the models
    # (SQLite's FTS5 table and its shadow tables; PostgreSQL's GIN expression index), so
    # comparing models with the database must not see them.
    if type_ == "table" and name is not None:
        return not name.startswith(SQLITE_FTS_TABLE)
    if type_ == "index":
        return name != POSTGRES_TERMS_INDEX
    return True


def _run(connection: sa.Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        include_name=_include_name,
        # SQLite cannot ALTER most things; Alembic rebuilds the table instead.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        if connection.dialect.name == "postgresql":
            connection.execute(
                sa.text("SELECT pg_advisory_xact_lock(:id)"), {"id": _MIGRATION_LOCK_ID}
            )
        context.run_migrations()


def run_migrations_online() -> None:
    given = config.attributes.get("connection")
    if isinstance(given, sa.Connection):
        _run(given)
        return
    # An Engine is accepted too: pytest-alembic passes whatever its alembic_engine gives.
    engine = given if given is not None else create_engine(config.get_main_option("sqlalchemy.url"))
    try:
        with engine.connect() as connection:
            connection.execution_options(**write_options())
            _run(connection)
    finally:
        if given is None:
            engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline (--sql) migrations are not supported; run against a database")
run_migrations_online()
