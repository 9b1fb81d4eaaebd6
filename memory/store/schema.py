"""Run the Alembic migrations that ship inside the package.

The scripts live in ``migrations/`` in the repository and are installed as
``memory._migrations``; they are found through the import system, so an installed wheel
migrates exactly like a source checkout.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy.engine import Engine

from memory.core.errors import InvalidInputError, SchemaError
from memory.store.engine import write_options
from memory.telemetry import instruments as telemetry

# The revisions features need, in one place. Phase 2 memories need their tables (0004), the
# retrieval index over them (0005) and the event log every write appends to (0008), whose
# events carry target digests (0010). Retention records its runs in maintenance_runs
# (0006); flag state and its audit live in 0007.
MEMORIES_REVISION = "0010"
MAINTENANCE_REVISION = "0006"
FLAGS_REVISION = "0007"
# The hub service's API keys (memory.store.keys).
KEYS_REVISION = "0011"
# Events that carry their change (memory.store.changes).
CHANGES_REVISION = "0012"


def _script_location() -> str:
    return str(resources.files("memory._migrations"))


def alembic_config(archive_dir: str | os.PathLike[str] | None = None) -> Config:
    """An Alembic config pointing at the packaged scripts (no alembic.ini needed)."""
    config = Config()
    config.set_main_option("script_location", _script_location())
    if archive_dir is not None:
        config.attributes["archive_dir"] = Path(archive_dir)
    return config


@lru_cache(maxsize=1)
def script_directory() -> ScriptDirectory:
    """The parsed revision scripts (parsed once per process)."""
    return ScriptDirectory.from_config(alembic_config())


def head_revision() -> str:
    """The newest revision this code knows."""
    head = script_directory().get_current_head()
    assert head is not None
    return head


@dataclass(frozen=True, slots=True)
class RevisionInfo:
    """One migration: its id, the one before it, and its one-line description."""

    revision: str
    down_revision: str | None
    description: str


def history() -> list[RevisionInfo]:
    """Every revision, oldest first."""
    revisions = [
        RevisionInfo(
            revision=script.revision,
            down_revision=script.down_revision if isinstance(script.down_revision, str) else None,
            description=(script.doc or "").strip(),
        )
        for script in script_directory().walk_revisions()
    ]
    return list(reversed(revisions))


def current_revision(connection: sa.Connection) -> str | None:
    """The database's revision, or None for a database that has never been migrated."""
    return MigrationContext.configure(connection).get_current_revision()


def known_revision(revision: str | None) -> bool:
    """True when this code has a script for ``revision`` (None, an empty database, is known)."""
    if revision is None:
        return True
    if not revision.strip():  # Alembic asserts on an empty identifier
        return False
    try:
        return script_directory().get_revision(revision) is not None
    except CommandError:
        return False


def revision_at_least(revision: str | None, wanted: str) -> bool:
    """True when ``revision`` is ``wanted`` or a descendant of it."""
    if revision is None:
        return False
    return any(
        script.revision == wanted
        for script in script_directory().iterate_revisions(revision, "base")
    )


def _run(engine: Engine, action: Callable[[Config], None], config: Config) -> None:
    try:
        _run_in_transaction(engine, action, config)
    except Exception:
        # The MemoryMigrationFailed alert watches this; the transaction has rolled back.
        telemetry.instruments().migration_failures.add(1)
        raise


def _run_in_transaction(engine: Engine, action: Callable[[Config], None], config: Config) -> None:
    sqlite = engine.dialect.name == "sqlite"
    with engine.connect() as connection:
        if sqlite:
            # SQLite rebuilds tables to alter them; with foreign keys on, dropping the old
            # parent table would cascade-delete the children. Foreign keys can only be
            # switched outside a transaction, and are checked before commit instead.
            _pragma_outside_transaction(connection, "foreign_keys=OFF")
        try:
            connection.execution_options(**write_options())
            with connection.begin():
                config.attributes["connection"] = connection
                try:
                    action(config)
                except CommandError as error:
                    current = current_revision(connection)
                    if not known_revision(current):
                        raise SchemaError(
                            f"the database is at revision {current!r}, which this code does "
                            f"not know (newest known: {head_revision()}); upgrade the library"
                        ) from error
                    raise InvalidInputError(f"cannot migrate: {error}") from error
                if sqlite:
                    broken = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
                    if broken:
                        raise SchemaError(f"migration left broken foreign keys: {broken[:5]}")
        finally:
            if sqlite:
                _pragma_outside_transaction(connection, "foreign_keys=ON")


def _pragma_outside_transaction(connection: sa.Connection, pragma: str) -> None:
    # Straight to the driver: SQLAlchemy would wrap the statement in a BEGIN first.
    connection.connection.driver_connection.execute(f"PRAGMA {pragma}")  # type: ignore[union-attr]


def _checked_target(revision: str) -> str:
    if not isinstance(revision, str) or not revision.strip():
        raise InvalidInputError(
            f"revision: give a revision id (see `memctl history`), head or base, not {revision!r}"
        )
    if revision in {"head", "base"} or revision.startswith(("-", "+")):
        return revision
    if not known_revision(revision):
        raise InvalidInputError(f"revision {revision!r} is unknown; see `memctl history`")
    return revision


def upgrade(
    engine: Engine,
    revision: str = "head",
    *,
    on_create: Callable[[sa.Connection], None] | None = None,
) -> None:
    """Upgrade the schema to ``revision`` in one transaction (on SQLite too).

    ``on_create`` runs in that transaction when the database had no schema and now has
    the flag tables: the start of a store this library created (``Memory.open`` and
    ``memctl migrate`` pass :func:`memory.store.flags.start_new_store`; a restore does not).
    """
    target = _checked_target(revision)

    def action(config: Config) -> None:
        connection: sa.Connection = config.attributes["connection"]
        created = current_revision(connection) is None
        command.upgrade(config, target)
        if (
            on_create is not None
            and created
            and revision_at_least(current_revision(connection), FLAGS_REVISION)
        ):
            on_create(connection)

    _run(engine, action, alembic_config())


def downgrade(
    engine: Engine, revision: str, archive_dir: str | os.PathLike[str] | None = None
) -> None:
    """Downgrade to ``revision``; dropped tables are first archived into ``archive_dir``.

    Without ``archive_dir`` a downgrade that would drop rows raises ``ArchiveError`` and
    changes nothing.
    """
    target = _checked_target(revision)
    _run(engine, lambda config: command.downgrade(config, target), alembic_config(archive_dir))


def database_revision(engine: Engine) -> str | None:
    """The revision of the database behind ``engine``."""
    with engine.connect() as connection:
        return current_revision(connection)
