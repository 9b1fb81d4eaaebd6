"""Archives that keep rows safe when a downgrade drops their tables.

A downgrade calls ``archive_before_drop`` for each table it is about to drop. The rows are
written to ``DIR/<table>.jsonl`` (one canonical JSON object per row, in primary-key order)
and ``DIR/manifest.json`` records, per table, the revision that dropped it, the columns, the
row count and the SHA-256 of the file. ``restore_archive`` verifies all of that and puts the
rows back, in one transaction, into the empty tables that a later upgrade recreated.

The same serialisation gives ``table_checksums``, so a live table and an archive can be
compared exactly.

Archives hold users' memories, so they are kept like backups: the directory is created
0700 and refused if it is a symbolic link or open to other users; files are created 0600
through ``tempfile.mkstemp`` (a new name, ``O_EXCL``: a link planted in the directory is
never followed) and renamed into place; a manifest may only name plain files inside its
directory; and restored rows pass the same rules as API writes (``_check_row``), so an
edited archive cannot bring back what the API refuses.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import stat
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import sqlalchemy as sa
from pydantic import TypeAdapter, ValidationError
from sqlalchemy.engine import Connection, Engine

from memory.core.errors import ArchiveError, SchemaError
from memory.core.inputs import MAX_JSON_DEPTH, MAX_STATE_BYTES, Content, Identifier, json_depth
from memory.store.engine import write_options
from memory.store.events import adopt_legacy_events
from memory.store.indexing import rebuild_missing_terms
from memory.telemetry import instruments as telemetry

MANIFEST = "manifest.json"
ARCHIVE_FORMAT = 1
# memory.integrity.failures{check="archive"}: the MemoryDataCorruptionDetected alert.
_ARCHIVE_CHECK = {"check": "archive"}
_INSERT_CHUNK = 1000


@dataclass(frozen=True, slots=True)
class TableChecksum:
    """Row count and SHA-256 of a table's rows in canonical JSON Lines form."""

    rows: int
    sha256: str


def _reflect(connection: Connection, table_name: str) -> sa.Table:
    if not sa.inspect(connection).has_table(table_name):
        raise SchemaError(f"table {table_name!r} does not exist at this schema revision")
    return sa.Table(table_name, sa.MetaData(), autoload_with=connection)


def _encode(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bytes | memoryview):
        # Binary columns (embedding vectors) as base64 text; _decode_row reverses it by type.
        return base64.b64encode(value).decode("ascii")
    return value


def _rows_as_lines(
    connection: Connection, table: sa.Table, columns: Sequence[str] | None = None
) -> Iterator[bytes]:
    order = list(table.primary_key.columns) or list(table.columns)
    selected = [table.c[name] for name in columns] if columns is not None else [table]
    result = connection.execute(sa.select(*selected).order_by(*order)).mappings()
    for row in result.yield_per(_INSERT_CHUNK):
        record = {key: _encode(value) for key, value in row.items()}
        line = json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        yield line.encode("utf-8") + b"\n"


def table_checksums(
    connection: Connection,
    tables: Iterable[str],
    columns: Mapping[str, Sequence[str]] | None = None,
) -> dict[str, TableChecksum]:
    """Count and hash the rows of each table exactly as an archive would store them (only
    ``columns[table]``, where given: the columns an archive of an older revision holds)."""
    checksums = {}
    for name in tables:
        digest = hashlib.sha256()
        count = 0
        only = columns.get(name) if columns is not None else None
        for line in _rows_as_lines(connection, _reflect(connection, name), only):
            digest.update(line)
            count += 1
        checksums[name] = TableChecksum(rows=count, sha256=digest.hexdigest())
    return checksums


def _read_manifest(directory: Path) -> dict[str, Any]:
    path = directory / MANIFEST
    if not path.exists():
        return {"format": ARCHIVE_FORMAT, "tables": {}}
    try:
        manifest: dict[str, Any] = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError) as exc:
        raise ArchiveError(f"{path}: unreadable manifest: {exc}") from exc
    if manifest.get("format") != ARCHIVE_FORMAT or not isinstance(manifest.get("tables"), dict):
        raise ArchiveError(f"{path}: not a format-{ARCHIVE_FORMAT} archive manifest")
    return manifest


def _private_directory(directory: Path) -> None:
    """Create ``directory`` 0700, or check that an existing one is a real directory only
    its owner can enter (an archive holds users' memories)."""
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        status = os.lstat(directory)
    except OSError as error:
        raise ArchiveError(f"{directory}: cannot create the archive directory: {error}") from error
    if stat.S_ISLNK(status.st_mode) or not stat.S_ISDIR(status.st_mode):
        raise ArchiveError(f"{directory}: is a symbolic link or not a directory; refused")
    if status.st_mode & 0o077:
        raise ArchiveError(
            f"{directory}: other users can open it (mode {stat.S_IMODE(status.st_mode):o}); "
            "an archive holds users' memories: chmod 700 it or name a new directory"
        )


@contextmanager
def _new_file(path: Path) -> Iterator[IO[bytes]]:
    """A new 0600 file under a fresh name beside ``path``, renamed to ``path`` when the
    block ends without error (removed otherwise): nothing already there is followed."""
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(descriptor, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _write_atomically(path: Path, data: bytes) -> None:
    with _new_file(path) as handle:
        handle.write(data)


def archive_table(
    connection: Connection, table_name: str, directory: Path | None, revision: str
) -> TableChecksum:
    """Write every row of ``table_name`` to ``directory`` and record it in the manifest.

    With no directory, an empty table passes (nothing can be lost) and a table with rows
    raises ``ArchiveError``: a downgrade never drops rows it has not archived.
    """
    table = _reflect(connection, table_name)
    if directory is None:
        count = connection.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()
        if count:
            raise ArchiveError(
                f"downgrading {revision} drops table {table_name!r}, which holds {count} rows: "
                "give an archive directory (memctl rollback --archive DIR)"
            )
        return TableChecksum(rows=0, sha256=hashlib.sha256().hexdigest())
    _private_directory(directory)
    manifest = _read_manifest(directory)
    if table_name in manifest["tables"]:
        raise ArchiveError(f"{directory} already holds an archive of {table_name!r}")
    file_name = f"{table_name}.jsonl"
    digest = hashlib.sha256()
    count = 0
    with _new_file(directory / file_name) as handle:
        for line in _rows_as_lines(connection, table):
            handle.write(line)
            digest.update(line)
            count += 1
    manifest["tables"][table_name] = {
        "file": file_name,
        "revision": revision,
        "columns": [column.name for column in table.columns],
        "rows": count,
        "sha256": digest.hexdigest(),
        "archived_at": datetime.now(UTC).isoformat(),
    }
    _write_atomically(
        directory / MANIFEST, json.dumps(manifest, indent=2, sort_keys=True).encode("utf-8")
    )
    return TableChecksum(rows=count, sha256=digest.hexdigest())


def archive_before_drop(tables: Sequence[str], revision: str) -> None:
    """Archive ``tables`` from inside a migration's ``downgrade()``, before it drops them.

    The directory comes from the Alembic config attribute ``archive_dir``, which
    ``memctl rollback --archive DIR`` sets.
    """
    from alembic import context, op

    raw = context.config.attributes.get("archive_dir")
    directory = Path(raw) if raw is not None else None
    for name in tables:
        archive_table(op.get_bind(), name, directory, revision)


def verify_archive(directory: str | os.PathLike[str]) -> dict[str, TableChecksum]:
    """Check every file of an archive against its manifest; return what it holds."""
    root = Path(directory)
    if not (root / MANIFEST).exists():
        raise ArchiveError(f"{root}: no {MANIFEST}; is this an archive directory?")
    manifest = _read_manifest(root)
    verified = {}
    for name, entry in manifest["tables"].items():
        path = _archive_file(root, entry.get("file") if isinstance(entry, dict) else None)
        digest = hashlib.sha256()
        count = 0
        try:
            with open(path, "rb") as handle:
                for line in handle:
                    digest.update(line)
                    count += 1
        except OSError as exc:
            raise ArchiveError(f"{path}: cannot read the archive of {name!r}: {exc}") from exc
        if count != entry["rows"] or digest.hexdigest() != entry["sha256"]:
            telemetry.instruments().integrity_failures.add(1, _ARCHIVE_CHECK)
            raise ArchiveError(
                f"{path}: does not match the manifest ({count} rows, sha256 "
                f"{digest.hexdigest()[:12]}…; expected {entry['rows']} rows, "
                f"{entry['sha256'][:12]}…): the archive is corrupt"
            )
        verified[name] = TableChecksum(rows=count, sha256=entry["sha256"])
    return verified


def _archive_file(root: Path, name: object) -> Path:
    """The file a manifest names, if it is a plain file directly inside ``root``."""
    if (
        not isinstance(name, str)
        or not name
        or name != Path(name).name
        or name in {".", ".."}
        or "\x00" in name
    ):
        raise ArchiveError(f"{root / MANIFEST}: names {name!r}, not a file in the archive")
    path = root / name
    try:
        mode = os.lstat(path).st_mode
    except OSError as error:
        raise ArchiveError(f"{path}: cannot read the archive file: {error.strerror}") from error
    if not stat.S_ISREG(mode):
        raise ArchiveError(f"{path}: is a symbolic link or not a regular file; refused")
    return path


_IDENTIFIER: TypeAdapter[str] = TypeAdapter(Identifier)
_CONTENT: TypeAdapter[str] = TypeAdapter(Content)
# Columns that hold a user, agent or session id wherever they appear; the API's identifier
# rules apply. Blank is what no session, and a redacted or operator's event, store.
_IDENTIFIER_COLUMNS = frozenset(
    {"user_id", "agent_id", "session_id", "source_agent", "owner_agent", "grantee"}
)
_BLANK_ALLOWED = {"session_id": None, "user_id": "memory_events", "agent_id": "memory_events"}


def _check_row(table: sa.Table, row: Mapping[str, Any]) -> None:
    """Refuse a restored value the API would refuse (``ValueError`` naming the column)."""
    for column, value in row.items():
        if not isinstance(value, str):
            continue
        where = f"{table.name}.{column}"
        blank_ok = column in _BLANK_ALLOWED and _BLANK_ALLOWED[column] in (None, table.name)
        try:
            if column in _IDENTIFIER_COLUMNS and not (blank_ok and value == ""):
                _IDENTIFIER.validate_python(value)
            elif column == "content":
                _CONTENT.validate_python(value)
            elif "\x00" in value:
                raise ValueError("contains a NUL character")
        except ValidationError as error:
            raise ValueError(f"{where}: {error.errors()[0]['msg']}") from None
        except ValueError as error:
            raise ValueError(f"{where}: {error}") from None
        if len(value) > MAX_STATE_BYTES:
            raise ValueError(f"{where}: {len(value)} characters; at most {MAX_STATE_BYTES}")
        if column.endswith("_json"):
            try:
                depth = json_depth(json.loads(value))
            except (ValueError, RecursionError):
                raise ValueError(f"{where}: not JSON") from None
            if depth > MAX_JSON_DEPTH:
                raise ValueError(f"{where}: nested deeper than {MAX_JSON_DEPTH} levels")


def _decode_row(table: sa.Table, record: dict[str, Any]) -> dict[str, Any]:
    row = {}
    for key, value in record.items():
        if key not in table.columns:
            raise ArchiveError(f"archived column {table.name}.{key} no longer exists")
        if value is not None and isinstance(table.columns[key].type, sa.DateTime):
            value = datetime.fromisoformat(value)
        elif value is not None and isinstance(table.columns[key].type, sa.LargeBinary):
            value = base64.b64decode(value)
        row[key] = value
    return row


def restore_archive(engine: Engine, directory: str | os.PathLike[str]) -> dict[str, int]:
    """Put an archive's rows back into their (empty) tables, all or nothing.

    Verifies the files against the manifest first and the restored tables against it
    afterwards. Returns the number of rows restored per table.
    """
    root = Path(directory)
    verified = verify_archive(root)
    manifest = _read_manifest(root)
    with engine.connect() as connection:
        connection.execution_options(**write_options())
        with connection.begin():
            tables = {name: _reflect(connection, name) for name in verified}
            # Parents before children, so that foreign keys hold at every insert.
            order = _dependency_order(tables)
            for name in order:
                table = tables[name]
                existing = connection.execute(
                    sa.select(sa.func.count()).select_from(table)
                ).scalar_one()
                if existing:
                    raise ArchiveError(
                        f"table {name!r} already has {existing} rows; an archive is restored "
                        "into the empty tables that `memctl migrate` recreates"
                    )
                _insert_file(
                    connection, table, _archive_file(root, manifest["tables"][name]["file"])
                )
                _advance_sequence(connection, table)
            # A later revision may have added columns (NULL in the restored rows): compare
            # what the archive holds.
            restored = table_checksums(
                connection,
                order,
                {name: manifest["tables"][name]["columns"] for name in order},
            )
            for name in order:
                if restored[name] != verified[name]:
                    telemetry.instruments().integrity_failures.add(1, _ARCHIVE_CHECK)
                    raise ArchiveError(
                        f"restored table {name!r} does not match the archive: nothing restored"
                    )
            if "memories" in tables and sa.inspect(connection).has_table("memory_terms"):
                # Keyword terms are derived, never archived: index what came back.
                rebuild_missing_terms(connection)
            if "memory_events" in tables and "target_digest" in tables["memory_events"].c:
                # Events archived below revision 0010 hash their targets: re-hash them as
                # 0010 does (if their chain verifies), so forgetting can redact them.
                adopt_legacy_events(connection)
    return {name: checksum.rows for name, checksum in verified.items()}


def _dependency_order(tables: dict[str, sa.Table]) -> list[str]:
    metadata = sa.MetaData()
    for table in tables.values():
        table.to_metadata(metadata)
    return [table.name for table in metadata.sorted_tables]


def _insert_file(connection: Connection, table: sa.Table, path: Path) -> None:
    batch: list[dict[str, Any]] = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            row = _decode_row(table, json.loads(line))
            try:
                _check_row(table, row)
            except ValueError as error:
                raise ArchiveError(f"{path}: line {number}: {error}; nothing restored") from None
            batch.append(row)
            if len(batch) == _INSERT_CHUNK:
                connection.execute(table.insert(), batch)
                batch = []
    if batch:
        connection.execute(table.insert(), batch)


def _advance_sequence(connection: Connection, table: sa.Table) -> None:
    # Rows came back with their own ids; PostgreSQL's sequence must move past them or the
    # next insert would collide. SQLite derives the next rowid from the maximum by itself.
    # Any single integer key may own the sequence (memory_changes.seq, not only id); a key
    # without one makes pg_get_serial_sequence NULL, and setval(NULL, ...) does nothing.
    key = list(table.primary_key.columns)
    if (
        connection.dialect.name != "postgresql"
        or len(key) != 1
        or not isinstance(key[0].type, sa.Integer)
    ):
        return
    largest = connection.execute(sa.select(sa.func.max(key[0]))).scalar_one()
    connection.execute(
        sa.text("SELECT setval(pg_get_serial_sequence(:table, :column), :next, false)"),
        {"table": table.name, "column": key[0].name, "next": (largest or 0) + 1},
    )
