"""Consistent online backups of a memory store, their verification, and restores.

A backup is a directory that holds the data in one of three forms, and ``manifest.json``:

- ``sqlite`` (SQLite): ``memory.db``, a copy made by SQLite's online backup API in a single
  step, i.e. from one read snapshot, while agents keep writing (in WAL mode a reader never
  blocks a writer). The manifest's table checksums are computed from the copy itself.
- ``pg_dump`` (PostgreSQL, when ``pg_dump`` is installed and at least as new as the
  server): ``memory.dump`` in custom format. A REPEATABLE READ transaction exports its
  snapshot, ``pg_dump --snapshot`` dumps exactly that snapshot, and the checksums are
  computed inside the same transaction, so dump and manifest describe the same instant.
- ``logical`` (either backend; the fallback on PostgreSQL): ``tables/``, every table as
  canonical JSON Lines, written by the migration archive code (``memory.store.archive``) from one
  snapshot transaction. It restores into either backend.

The manifest records the format version, the backend, the method, the schema revision, the
creation time, per table the row count and the SHA-256 of its rows in canonical form
(``table_checksums``), and per file its size and SHA-256. A backup is written into a hidden
sibling directory and renamed into place when complete, so a crashed backup never looks
like one.

``restore_backup`` verifies the backup, refuses a revision this code does not know and a
target database that holds any row, restores, and then checks the restored tables and the
revision against the manifest.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sqlite3
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Literal, get_args

import sqlalchemy as sa
from sqlalchemy.engine import URL, Connection, Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import NullPool

from memory.core.errors import ArchiveError, InvalidInputError, SchemaError
from memory.store.archive import (
    MANIFEST,
    TableChecksum,
    _write_atomically,
    archive_table,
    restore_archive,
    table_checksums,
    verify_archive,
)
from memory.store.engine import EngineOrUrl, engine_for, is_memory_sqlite
from memory.store.schema import (
    current_revision,
    downgrade,
    head_revision,
    known_revision,
    revision_at_least,
    upgrade,
)
from memory.telemetry import instruments as telemetry

BackupMethod = Literal["auto", "sqlite", "pg_dump", "logical"]
BACKUP_METHODS: tuple[str, ...] = get_args(BackupMethod)

BACKUP_FORMAT = "tiered-memory-backup"
BACKUP_FORMAT_VERSION = 1
SQLITE_FILE = "memory.db"
DUMP_FILE = "memory.dump"
TABLES_DIR = "tables"
_ALEMBIC_TABLE = "alembic_version"
_BACKENDS = ("sqlite", "postgresql")
_TOOL_TIMEOUT_SECONDS = 30


@dataclass(frozen=True, slots=True)
class BackupInfo:
    """A backup as its manifest describes it (returned once written, or once verified)."""

    directory: Path
    backend: str
    method: str
    revision: str
    created_at: datetime
    tables: dict[str, TableChecksum]
    size_bytes: int

    @property
    def rows(self) -> int:
        """Rows in every table together."""
        return sum(checksum.rows for checksum in self.tables.values())


@dataclass(frozen=True, slots=True)
class RestoreResult:
    """A finished restore: the backup, the target's backend, and the restored tables'
    checksums, which matched the manifest."""

    backup: BackupInfo
    backend: str
    tables: dict[str, TableChecksum]

    @property
    def rows(self) -> int:
        """Rows restored into every table together."""
        return sum(checksum.rows for checksum in self.tables.values())


# -- taking a backup ------------------------------------------------------------------------


def backup(
    engine_or_url: EngineOrUrl, directory: str | os.PathLike[str], *, method: BackupMethod = "auto"
) -> BackupInfo:
    """Back up the database into ``directory`` (new, or empty) while it stays in use.

    ``method="auto"`` picks ``sqlite`` on SQLite, and on PostgreSQL ``pg_dump`` when it is
    installed and its major version is at least the server's, else ``logical``.

    >>> backup("sqlite:///memory.db", "backups/2024-06-01")  # doctest: +SKIP
    BackupInfo(directory=PosixPath('backups/2024-06-01'), backend='sqlite', method='sqlite', ...)
    """
    target = Path(directory)
    _check_backup_directory(target)
    with engine_for(engine_or_url) as engine:
        _require_existing_sqlite_file(engine)
        chosen, tool = _choose_method(engine, method)
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=target.parent))
        try:
            created_at = datetime.now(UTC)
            if chosen == "sqlite":
                revision, tables, extra = _backup_sqlite(engine, staging)
            elif chosen == "pg_dump":
                assert tool is not None
                revision, tables, extra = _backup_pg_dump(engine, staging, tool)
            else:
                revision, tables, extra = _backup_logical(engine, staging)
            manifest = {
                "format": BACKUP_FORMAT,
                "format_version": BACKUP_FORMAT_VERSION,
                "backend": engine.dialect.name,
                "method": chosen,
                "revision": revision,
                "created_at": created_at.isoformat(),
                "tables": {
                    name: {"rows": checksum.rows, "sha256": checksum.sha256}
                    for name, checksum in tables.items()
                },
                "files": _describe_files(staging),
                **extra,
            }
            _write_atomically(
                staging / MANIFEST, json.dumps(manifest, indent=2, sort_keys=True).encode()
            )
            _publish(staging, target)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    return _info(target, manifest)


def _check_backup_directory(target: Path) -> None:
    if target.exists() and not target.is_dir():
        raise InvalidInputError(f"{target}: exists and is not a directory")
    if target.is_dir() and any(target.iterdir()):
        raise InvalidInputError(
            f"{target}: directory is not empty; a backup goes into a new or empty directory"
        )


def _require_existing_sqlite_file(engine: Engine) -> None:
    # Connecting would create an empty file and report "no schema"; name the real mistake.
    url = engine.url
    if url.get_backend_name() != "sqlite" or is_memory_sqlite(url) or url.query.get("uri"):
        return
    if not Path(str(url.database)).exists():
        raise InvalidInputError(f"database {url.database} does not exist; nothing to back up")


def _choose_method(engine: Engine, method: str) -> tuple[str, _Tool | None]:
    if method not in BACKUP_METHODS:
        raise InvalidInputError(
            f"method: must be one of {', '.join(BACKUP_METHODS)}, not {method!r}"
        )
    backend = engine.dialect.name
    if backend == "sqlite":
        if method == "pg_dump":
            raise InvalidInputError("method: pg_dump backs up PostgreSQL, not SQLite")
        return ("sqlite" if method == "auto" else method), None
    if method == "sqlite":
        raise InvalidInputError("method: sqlite backs up SQLite, not PostgreSQL")
    if method == "logical":
        return "logical", None
    tool, reason = _usable_pg_dump(engine)
    if tool is not None:
        return "pg_dump", tool
    if method == "pg_dump":
        raise ArchiveError(f"cannot back up with pg_dump: {reason}; or use --method logical")
    return "logical", None


def _publish(staging: Path, target: Path) -> None:
    _fsync_tree(staging)
    try:
        # rename(2) replaces an empty directory atomically: the backup appears whole or not.
        os.rename(staging, target)
    except OSError as error:
        raise ArchiveError(
            f"{target}: cannot move the finished backup into place: {error.strerror}"
        ) from error
    _fsync_directory(target.parent)


def _backup_sqlite(
    engine: Engine, staging: Path
) -> tuple[str, dict[str, TableChecksum], dict[str, Any]]:
    path = staging / SQLITE_FILE
    source = engine.raw_connection()
    try:
        copy = sqlite3.connect(path)
        try:
            # pages=-1 copies everything in one step under one read transaction: a snapshot.
            # (Stepping page by page would restart whenever another connection writes.)
            _sqlite_driver(source).backup(copy, pages=-1)
            # A self-contained file: no -wal/-shm beside it, readable on read-only media.
            copy.execute("PRAGMA journal_mode=DELETE")
        finally:
            copy.close()
    finally:
        source.close()
    revision, tables = _inspect_sqlite_copy(path)
    if revision is None:
        raise SchemaError("the database has no schema (run `memctl migrate`); nothing to back up")
    return revision, tables, {"sqlite_version": sqlite3.sqlite_version}


def _backup_pg_dump(
    engine: Engine, staging: Path, tool: _Tool
) -> tuple[str, dict[str, TableChecksum], dict[str, Any]]:
    path = staging / DUMP_FILE
    dsn, environment = _libpq(engine.url)
    with _snapshot(engine) as connection:
        snapshot = connection.execute(sa.text("SELECT pg_export_snapshot()")).scalar_one()
        server = connection.execute(sa.text("SHOW server_version")).scalar_one()
        command = [
            tool.path,
            "--format=custom",
            "--no-password",
            f"--snapshot={snapshot}",
            f"--file={path}",
            f"--dbname={dsn}",
        ]
        with tempfile.TemporaryFile() as errors:
            # The snapshot lives as long as this transaction: pg_dump must import it before
            # the transaction ends, so the checksums are computed while pg_dump runs.
            process = subprocess.Popen(
                command,
                env=environment,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=errors,
            )
            try:
                revision, tables = _describe_snapshot(connection)
            except BaseException:
                process.kill()
                process.wait()
                raise
            status = process.wait()
            if status != 0:
                raise ArchiveError(f"pg_dump failed (exit {status}): {_last_line(errors)}")
    return (
        revision,
        tables,
        {
            "pg_dump_version": tool.version,
            "pg_dump_major": tool.major,
            "server_version": server,
        },
    )


def _backup_logical(
    engine: Engine, staging: Path
) -> tuple[str, dict[str, TableChecksum], dict[str, Any]]:
    with _snapshot(engine) as connection:
        revision, names = _revision_and_tables(connection)
        # archive_table writes DIR/<table>.jsonl and its archive manifest: the logical form
        # is exactly a migration archive of every table, so restore_archive can load it.
        tables = {
            name: archive_table(connection, name, staging / TABLES_DIR, revision) for name in names
        }
    extra: dict[str, Any] = {}
    if engine.dialect.name == "postgresql":
        extra["server_version"] = _server_version(engine)
    return revision, tables, extra


@contextmanager
def _snapshot(engine: Engine) -> Iterator[Connection]:
    """A read-only transaction that sees one snapshot from its first statement to its end."""
    with engine.connect() as connection:
        if connection.dialect.name == "postgresql":
            connection.execution_options(
                isolation_level="REPEATABLE READ", postgresql_readonly=True
            )
        # On SQLite (always WAL for a file) a read transaction is a snapshot already.
        with connection.begin():
            yield connection


def _describe_snapshot(connection: Connection) -> tuple[str, dict[str, TableChecksum]]:
    revision, names = _revision_and_tables(connection)
    return revision, table_checksums(connection, names)


def _revision_and_tables(connection: Connection) -> tuple[str, list[str]]:
    revision = current_revision(connection)
    if revision is None:
        raise SchemaError("the database has no schema (run `memctl migrate`); nothing to back up")
    return revision, _data_tables(connection)


def _data_tables(connection: Connection) -> list[str]:
    """Every table that holds data: not Alembic's bookkeeping, and not SQLite's virtual
    (FTS5) tables and their shadow tables, which triggers rebuild from the data."""
    names = set(sa.inspect(connection).get_table_names()) - {_ALEMBIC_TABLE}
    if connection.dialect.name == "sqlite":
        names -= _sqlite_derived_tables(connection)
    return sorted(names)


def _sqlite_derived_tables(connection: Connection) -> set[str]:
    listed = connection.exec_driver_sql("PRAGMA table_list").fetchall()
    if listed:
        return {row[1] for row in listed if row[2] in ("virtual", "shadow")}
    # SQLite before 3.37 has no table_list (an unknown pragma returns nothing): virtual
    # tables by their DDL, shadow tables by the "<virtual>_" prefix every module uses.
    virtual = (
        connection.exec_driver_sql(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND sql LIKE 'CREATE VIRTUAL%'"
        )
        .scalars()
        .all()
    )
    names = sa.inspect(connection).get_table_names()
    return {name for name in names for v in virtual if name == v or name.startswith(v + "_")}


# -- verifying a backup ---------------------------------------------------------------------


def verify_backup(directory: str | os.PathLike[str]) -> BackupInfo:
    """Check a backup without restoring it; raise ``ArchiveError`` on any mismatch.

    Every file must match its recorded size and SHA-256. Then, by method: ``sqlite`` opens
    the copy read-only, runs ``PRAGMA integrity_check`` and recomputes every table's
    checksum and the revision; ``pg_dump`` requires ``pg_restore --list`` to read the dump
    and to list the data of every table; ``logical`` recounts and rehashes every table file.
    """
    root = Path(directory)
    manifest = _read_backup_manifest(root)
    try:
        _verify(root, manifest)
    except ArchiveError:
        # The MemoryDataCorruptionDetected alert watches this count.
        telemetry.instruments().integrity_failures.add(1, {"check": "backup"})
        raise
    return _info(root, manifest)


def _verify(root: Path, manifest: dict[str, Any]) -> None:
    for name, entry in manifest["files"].items():
        path = root / name
        try:
            size = path.stat().st_size
            with open(path, "rb") as handle:
                digest = hashlib.file_digest(handle, "sha256").hexdigest()
        except OSError as error:
            raise ArchiveError(f"{path}: cannot read the backup file: {error.strerror}") from error
        if size != entry["bytes"] or digest != entry["sha256"]:
            raise ArchiveError(
                f"{path}: {size} bytes, sha256 {digest[:12]}…; the manifest records "
                f"{entry['bytes']} bytes, {entry['sha256'][:12]}…: the backup is corrupt"
            )
    expected = _manifest_tables(manifest)
    method = manifest["method"]
    if method == "sqlite":
        revision, found = _inspect_sqlite_copy(root / SQLITE_FILE)
        if revision != manifest["revision"]:
            raise ArchiveError(
                f"{root / SQLITE_FILE}: at revision {revision!r}, the manifest records "
                f"{manifest['revision']!r}: the backup is corrupt"
            )
        _compare(root, expected, found, "the copy")
    elif method == "pg_dump":
        listed = _pg_restore_list(root / DUMP_FILE, manifest)
        missing = sorted(set(expected) - listed)
        if missing:
            raise ArchiveError(
                f"{root / DUMP_FILE}: holds no data for {', '.join(missing)}: the backup is corrupt"
            )
    else:
        _compare(root, expected, verify_archive(root / TABLES_DIR), "the table files")


def _compare(
    root: Path, expected: dict[str, TableChecksum], found: dict[str, TableChecksum], what: str
) -> None:
    for name in sorted(set(expected) | set(found)):
        want, have = expected.get(name), found.get(name)
        if want != have:
            raise ArchiveError(
                f"{root}: table {name!r} in {what}: {_describe(have)}; the manifest records "
                f"{_describe(want)}: the backup is corrupt"
            )


def _describe(checksum: TableChecksum | None) -> str:
    if checksum is None:
        return "absent"
    return f"{checksum.rows} rows, sha256 {checksum.sha256[:12]}…"


def _inspect_sqlite_copy(path: Path) -> tuple[str | None, dict[str, TableChecksum]]:
    """Integrity-check a SQLite backup file read-only; return its revision and checksums."""
    uri = path.resolve().as_uri() + "?mode=ro"
    engine = sa.create_engine(
        "sqlite+pysqlite://", creator=lambda: sqlite3.connect(uri, uri=True), poolclass=NullPool
    )
    try:
        with engine.connect() as connection:
            problems = connection.exec_driver_sql("PRAGMA integrity_check").scalars().all()
            if problems != ["ok"]:
                raise ArchiveError(
                    f"{path}: integrity check failed ({problems[0]}): the backup is corrupt"
                )
            revision = current_revision(connection)
            return revision, table_checksums(connection, _data_tables(connection))
    except DBAPIError as error:
        raise ArchiveError(
            f"{path}: not a readable SQLite database ({error.orig}): the backup is corrupt"
        ) from error
    finally:
        engine.dispose()


def _pg_restore_list(dump: Path, manifest: dict[str, Any]) -> set[str]:
    """Names of the tables whose data the dump holds, as ``pg_restore --list`` reads it."""
    tool = _pg_restore_for(manifest)
    result = subprocess.run(
        [tool.path, "--list", str(dump)], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        lines = result.stderr.strip().splitlines() or ["no message"]
        raise ArchiveError(f"{dump}: pg_restore cannot read the dump ({lines[-1]})")
    return set(re.findall(r"^\d+; \d+ \d+ TABLE DATA \S+ (\S+) ", result.stdout, re.MULTILINE))


# -- restoring a backup ---------------------------------------------------------------------


def restore_backup(engine_or_url: EngineOrUrl, directory: str | os.PathLike[str]) -> RestoreResult:
    """Restore a backup into an empty database, then check it against the manifest.

    Refuses (changing nothing) a backup that fails ``verify_backup``, a revision this code
    does not know (``SchemaError``), and a target where any table holds a row. A ``logical``
    backup restores into either backend; ``sqlite`` and ``pg_dump`` ones into their own.
    """
    root = Path(directory)
    manifest = _read_backup_manifest(root)
    revision = manifest["revision"]
    if not known_revision(revision):
        raise SchemaError(
            f"the backup is at revision {revision!r}, which this code does not know "
            f"(newest known: {head_revision()}); restore it with a newer tiered-memory"
        )
    method = manifest["method"]
    with engine_for(engine_or_url) as engine:
        backend = engine.dialect.name
        if method != "logical" and backend != manifest["backend"]:
            raise InvalidInputError(
                f"a {method} backup of {manifest['backend']} cannot be restored into "
                f"{backend}; take one with `memctl backup --method logical` to move backends"
            )
        tool = _pg_restore_for(manifest) if method == "pg_dump" else None
        target_revision = require_empty(engine)
        _verify(root, manifest)
        if method == "sqlite":
            _restore_sqlite(engine, root / SQLITE_FILE)
        else:
            _align_schema(engine, target_revision, revision, create=method == "logical")
            if method == "pg_dump":
                assert tool is not None
                _restore_pg_dump(engine, root / DUMP_FILE, tool)
            else:
                restore_archive(engine, root / TABLES_DIR)
        restored = _check_restored(engine, manifest)
    return RestoreResult(backup=_info(root, manifest), backend=backend, tables=restored)


def require_empty(engine: Engine) -> str | None:
    """Refuse a target where any table holds a row; return its revision."""
    with engine.connect() as connection:
        occupied = [
            name
            for name in _data_tables(connection)
            if connection.execute(sa.select(sa.exists().select_from(sa.table(name)))).scalar()
        ]
        revision = current_revision(connection)
    if occupied:
        shown = ", ".join(occupied[:5]) + (", …" if len(occupied) > 5 else "")
        raise ArchiveError(
            f"the target database is not empty (rows in {shown}); "
            "restore into a new, empty database"
        )
    return revision


def _align_schema(engine: Engine, current: str | None, wanted: str, *, create: bool) -> None:
    """Bring an empty target's schema to the backup's revision (no rows can be lost).

    A target without a schema is left alone unless ``create``: pg_restore builds its own.
    """
    if current == wanted or (current is None and not create):
        return
    if current is not None and not known_revision(current):
        raise SchemaError(
            f"the target database is at revision {current!r}, which this code does not know"
        )
    if current is not None and revision_at_least(current, wanted):
        downgrade(engine, wanted)
    else:
        upgrade(engine, wanted)


def _restore_sqlite(engine: Engine, copy: Path) -> None:
    source = sqlite3.connect(copy.resolve().as_uri() + "?mode=ro", uri=True)
    try:
        target = engine.raw_connection()
        try:
            source.backup(_sqlite_driver(target), pages=-1)
        except sqlite3.Error as error:
            raise ArchiveError(f"cannot copy {copy} into the target database: {error}") from error
        finally:
            target.close()
    finally:
        source.close()


def _restore_pg_dump(engine: Engine, dump: Path, tool: _Tool) -> None:
    dsn, environment = _libpq(engine.url)
    with engine.connect() as connection:
        has_tables = bool(sa.inspect(connection).get_table_names())
    engine.dispose()  # idle pooled sessions would only get in the way of --clean
    command = [
        tool.path,
        "--no-password",
        "--no-owner",
        "--no-privileges",
        "--single-transaction",
        "--exit-on-error",
        f"--dbname={dsn}",
    ]
    if has_tables:
        # An empty schema at the backup's revision (see _align_schema): replace it whole.
        command += ["--clean", "--if-exists"]
    result = subprocess.run(
        [*command, str(dump)], env=environment, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        lines = result.stderr.strip().splitlines() or ["no message"]
        raise ArchiveError(f"pg_restore failed, nothing restored: {lines[-1]}")
    # pg_restore sets every sequence to its value at dump time, which is past every id in
    # the dump (sequences only grow), so nothing needs advancing.


def _check_restored(engine: Engine, manifest: dict[str, Any]) -> dict[str, TableChecksum]:
    expected = _manifest_tables(manifest)
    with engine.connect() as connection:
        revision = current_revision(connection)
        restored = table_checksums(connection, sorted(expected))
    if revision != manifest["revision"]:
        raise ArchiveError(
            f"the restored database is at revision {revision!r}, the backup at "
            f"{manifest['revision']!r}"
        )
    different = [name for name in sorted(expected) if restored[name] != expected[name]]
    if different:
        raise ArchiveError(
            f"the restored database does not match the backup in {', '.join(different)}: "
            "do not use it"
        )
    return restored


# -- backups in a directory ----------------------------------------------------------------


def list_backups(root: str | os.PathLike[str]) -> list[BackupInfo]:
    """The backups directly inside ``root``, newest first (by their manifests' creation time).

    A backup counts when its manifest reads and every file it lists is there at its recorded
    size: a cheap check, for listing and for health (``verify_backup`` rehashes everything).
    Hidden directories (a backup still being written) and anything else are passed over, and
    a missing ``root`` holds none.
    """
    directory = Path(root)
    if not directory.is_dir():
        return []
    found = []
    for candidate in directory.iterdir():
        if candidate.name.startswith(".") or not candidate.is_dir():
            continue
        try:
            manifest = _read_backup_manifest(candidate)
            complete = all(
                (candidate / name).stat().st_size == entry["bytes"]
                for name, entry in manifest["files"].items()
            )
        except (ArchiveError, OSError):
            continue
        if complete:
            found.append(_info(candidate, manifest))
    return sorted(found, key=lambda info: info.created_at, reverse=True)


# -- manifests ------------------------------------------------------------------------------


def _read_backup_manifest(root: Path) -> dict[str, Any]:
    path = root / MANIFEST
    if not path.is_file():
        raise ArchiveError(f"{root}: no {MANIFEST}; is this a backup directory?")
    try:
        manifest = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError) as error:
        raise ArchiveError(f"{path}: unreadable manifest: {error}") from error
    if not isinstance(manifest, dict) or manifest.get("format") != BACKUP_FORMAT:
        raise ArchiveError(f"{path}: not a tiered-memory backup manifest")
    version = manifest.get("format_version")
    if version != BACKUP_FORMAT_VERSION:
        raise ArchiveError(
            f"{path}: backup format version {version!r}; this code reads version "
            f"{BACKUP_FORMAT_VERSION}"
        )
    try:
        assert manifest["backend"] in _BACKENDS
        assert manifest["method"] in BACKUP_METHODS and manifest["method"] != "auto"
        assert isinstance(manifest["revision"], str)
        datetime.fromisoformat(manifest["created_at"])
        for entry in manifest["tables"].values():
            assert isinstance(entry["rows"], int) and isinstance(entry["sha256"], str)
        for name, entry in manifest["files"].items():
            # Only plain relative names inside the backup: never read outside it.
            assert not Path(name).is_absolute() and ".." not in Path(name).parts
            assert isinstance(entry["bytes"], int) and isinstance(entry["sha256"], str)
    except (AssertionError, KeyError, TypeError, AttributeError, ValueError) as error:
        raise ArchiveError(f"{path}: malformed backup manifest ({error!r})") from error
    return manifest


def _manifest_tables(manifest: dict[str, Any]) -> dict[str, TableChecksum]:
    return {
        name: TableChecksum(rows=entry["rows"], sha256=entry["sha256"])
        for name, entry in manifest["tables"].items()
    }


def _info(root: Path, manifest: dict[str, Any]) -> BackupInfo:
    return BackupInfo(
        directory=root,
        backend=manifest["backend"],
        method=manifest["method"],
        revision=manifest["revision"],
        created_at=datetime.fromisoformat(manifest["created_at"]),
        tables=_manifest_tables(manifest),
        size_bytes=sum(entry["bytes"] for entry in manifest["files"].values()),
    )


def _describe_files(staging: Path) -> dict[str, dict[str, Any]]:
    files = {}
    for path in sorted(staging.rglob("*")):
        if path.is_file():
            with open(path, "rb") as handle:
                digest = hashlib.file_digest(handle, "sha256").hexdigest()
            files[path.relative_to(staging).as_posix()] = {
                "bytes": path.stat().st_size,
                "sha256": digest,
            }
    return files


# -- PostgreSQL client tools ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Tool:
    path: str
    major: int
    version: str


def _find_tool(name: str) -> _Tool | None:
    path = shutil.which(name)
    if path is None:
        return None
    try:
        output = subprocess.run(
            [path, "--version"],
            capture_output=True,
            text=True,
            check=True,
            timeout=_TOOL_TIMEOUT_SECONDS,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r"\)\s*(\d+)", output)  # "pg_dump (PostgreSQL) 15.20 (Debian …)"
    return _Tool(path, int(match.group(1)), output) if match else None


def _usable_pg_dump(engine: Engine) -> tuple[_Tool | None, str]:
    tool = _find_tool("pg_dump")
    if tool is None:
        return None, "pg_dump is not installed (or not on PATH)"
    with engine.connect() as connection:
        server = int(connection.execute(sa.text("SHOW server_version_num")).scalar_one())
    if tool.major < server // 10000:
        return None, f"pg_dump {tool.major} is older than the server ({server // 10000})"
    return tool, ""


def _pg_restore_for(manifest: dict[str, Any]) -> _Tool:
    tool = _find_tool("pg_restore")
    if tool is None:
        raise ArchiveError("pg_restore is not installed (or not on PATH); it reads pg_dump backups")
    written_by = manifest.get("pg_dump_major")
    if isinstance(written_by, int) and tool.major < written_by:
        raise ArchiveError(
            f"pg_restore {tool.major} cannot read a dump written by pg_dump {written_by}; "
            f"install the PostgreSQL {written_by} client tools"
        )
    return tool


def _libpq(url: URL) -> tuple[str, dict[str, str]]:
    """A libpq connection URI for the client tools; the password travels in the environment."""
    environment = dict(os.environ)
    if url.password is not None:
        environment["PGPASSWORD"] = str(url.password)
    environment.setdefault("PGCONNECT_TIMEOUT", "5")
    dsn = url.set(drivername="postgresql", password=None).render_as_string(hide_password=False)
    return dsn, environment


def _server_version(engine: Engine) -> str:
    with engine.connect() as connection:
        return str(connection.execute(sa.text("SHOW server_version")).scalar_one())


def _last_line(stream: IO[bytes]) -> str:
    stream.seek(0)
    lines = stream.read().decode("utf-8", "replace").strip().splitlines()
    return lines[-1] if lines else "no message"


# -- files and engines ------------------------------------------------------------------------


def _fsync_tree(root: Path) -> None:
    for path in [root, *root.rglob("*")]:
        if path.is_dir():
            _fsync_directory(path)


def _fsync_directory(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _sqlite_driver(connection: Any) -> sqlite3.Connection:
    driver = connection.driver_connection
    assert isinstance(driver, sqlite3.Connection), type(driver)
    return driver
