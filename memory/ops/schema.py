"""Schema verbs: ``migrate``, ``rollback``, ``current``, ``check`` (``memctl`` of the same names).

Each takes a database (an engine, or a URL: default ``$MEMORY_DATABASE_URL``) and returns
what happened. The rules ``memctl`` enforces live here: ``migrate`` never goes backwards
(that is ``rollback``, which archives what it drops), ``rollback`` needs a schema to roll
back, and an unknown revision is refused before anything runs.

``upgrade``, ``downgrade``, ``head_revision`` and ``history`` are the engine-level steps
underneath, re-exported for callers that drive Alembic themselves.

>>> migrate("sqlite:///memory.db").after == head_revision()  # doctest: +SKIP
True
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from memory.core.errors import InvalidInputError, NotFoundError, SchemaError
from memory.store.archive import MANIFEST
from memory.store.changes import event_key
from memory.store.engine import EngineOrUrl, engine_for, is_memory_sqlite, resolve_database_url
from memory.store.events import audit_key
from memory.store.flags import start_new_store
from memory.store.schema import (
    RevisionInfo,
    database_revision,
    downgrade,
    head_revision,
    history,
    known_revision,
    revision_at_least,
    upgrade,
)

__all__ = [
    "Migration",
    "NotAtHeadError",
    "RevisionInfo",
    "Rollback",
    "SchemaStatus",
    "check",
    "command_database",
    "current",
    "default_archive_directory",
    "downgrade",
    "head_revision",
    "history",
    "migrate",
    "rollback",
    "upgrade",
]


@dataclass(frozen=True, slots=True)
class Migration:
    """A finished ``migrate``: the revision before (None: an empty database) and after."""

    before: str | None
    after: str | None

    @property
    def changed(self) -> bool:
        """False when the database already was at the target."""
        return self.before != self.after


@dataclass(frozen=True, slots=True)
class Rollback:
    """A finished ``rollback``: the revisions before and after (None: no schema left), and
    the archive of the dropped tables' rows (None when no table with rows was dropped)."""

    before: str
    after: str | None
    archive: Path | None


@dataclass(frozen=True, slots=True)
class SchemaStatus:
    """Where a database stands: its revision (None: empty), the newest revision this code
    knows, and every revision, oldest first."""

    revision: str | None
    head: str
    revisions: tuple[RevisionInfo, ...]

    @property
    def at_head(self) -> bool:
        """True when the database is at the newest revision."""
        return self.revision == self.head


class NotAtHeadError(SchemaError):
    """``check`` found the database behind (or ahead of, or without) the head revision."""

    def __init__(self, status: SchemaStatus) -> None:
        super().__init__(f"database at {status.revision or 'empty'}, head is {status.head}")
        self.status = status


def command_database(url: str | None, *, existing: bool) -> str:
    """The database URL a command-line verb runs on (default ``$MEMORY_DATABASE_URL``, else
    ``memory.db``), checked before anything opens it.

    An in-memory SQLite database is refused: it would be gone when the command exits, so a
    write would report success and keep nothing. With ``existing`` (a command that reads,
    or needs a schema it does not create), a SQLite file that does not exist is refused too
    (``NotFoundError``) instead of being created empty.
    """
    resolved = resolve_database_url(url)
    if is_memory_sqlite(resolved):
        raise InvalidInputError(
            "an in-memory SQLite database lives only as long as this command; give a file "
            "(sqlite:///path/to/memory.db or a plain path) or a postgresql:// URL"
        )
    if existing and resolved.get_backend_name() == "sqlite":
        path = Path(str(resolved.database))
        if not path.exists():
            raise NotFoundError(
                f"no database at {path}: nothing to read (memctl migrate creates one; "
                "--database-url or $MEMORY_DATABASE_URL names another)"
            )
    return resolved.render_as_string(hide_password=False)


def migrate(database: EngineOrUrl, revision: str = "head") -> Migration:
    """Upgrade the schema to ``revision`` in one transaction (concurrent runs wait for each
    other).

    Refuses (``InvalidInputError``) a known revision the database is already past: going
    back drops tables, which only :func:`rollback` does, archiving their rows first.
    """
    with engine_for(database) as engine:
        before = database_revision(engine)
        if (
            before is not None
            and known_revision(revision)
            and revision != before
            and revision_at_least(before, revision)
        ):
            raise InvalidInputError(
                f"the database is at {before}, already past {revision}; "
                f"to go back, use: memctl rollback --to {revision}"
            )
        keys = audit_key(os.environ), event_key(os.environ)
        upgrade(engine, revision, on_create=lambda connection: start_new_store(connection, *keys))
        return Migration(before, database_revision(engine))


def default_archive_directory(revision: str, now: datetime | None = None) -> Path:
    """``memory-archive-<revision>-<UTC time>`` in the working directory: where
    :func:`rollback` archives when it is given no directory."""
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    return Path(f"memory-archive-{revision}-{stamp}")


def rollback(
    database: EngineOrUrl,
    revision: str = "-1",
    archive_dir: str | os.PathLike[str] | None = None,
) -> Rollback:
    """Downgrade the schema to ``revision`` (default one back; ``base`` removes everything).

    Rows of dropped tables are archived first into ``archive_dir`` (default:
    :func:`default_archive_directory` of the revision before), never lost; restore them
    with :func:`memory.ops.restore_archive`. A database without a schema is refused
    (``SchemaError``).
    """
    with engine_for(database) as engine:
        before = database_revision(engine)
        if before is None:
            raise SchemaError("the database has no schema; nothing to roll back")
        if revision == before:
            raise InvalidInputError(
                f"the database is already at {before}; nothing to roll back "
                "(see `memctl history` for the revisions before it)"
            )
        if archive_dir is None:
            directory = default_archive_directory(before)
        else:
            directory = Path(archive_dir)
        downgrade(engine, revision, directory)
        after = database_revision(engine)
    archived = directory if (directory / MANIFEST).exists() else None
    return Rollback(before, after, archived)


def current(database: EngineOrUrl) -> SchemaStatus:
    """The database's revision, the head, and the revision history."""
    with engine_for(database) as engine:
        revision = database_revision(engine)
    return SchemaStatus(revision, head_revision(), tuple(history()))


def check(database: EngineOrUrl) -> SchemaStatus:
    """The status of a database at head; raises :class:`NotAtHeadError` otherwise."""
    status = current(database)
    if not status.at_head:
        raise NotAtHeadError(status)
    return status
