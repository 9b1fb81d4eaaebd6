"""Snapshots of the in-process index on disk: a restarted process answers a user's first
search from a file instead of reading every memory of the user from the database again.

Why a file rather than loading in the background while the database answers: the first
load reads every row of the user (18 s at 1M memories) and meanwhile the database's
full-text candidates would be the only ones, so the first searches would rank without
vector evidence and differ from later ones; reading the arrays back from a file costs a
fraction of that and every search ranks alike (``benchmarks/cold_start.py`` has the figures).

**Where.** ``$MEMORY_INDEX_CACHE_DIR`` names a directory (``off`` turns snapshots off); each
database gets a subdirectory named by a digest of its URL (without the password), so stores
over different databases never meet. Unset: next to a SQLite file (``<file>.index/``),
and none for a SQLite database in memory or PostgreSQL (choose a local directory per host).

**What.** One file per user, ``<sha256 of the user id>.index`` (the name reveals no user):
NumPy ``.npy`` arrays one after the other (``np.save``; read back by ``np.load`` with
``allow_pickle=False``, each straight into its own array), first a header, then the
arrays of the user's vector index and term postings (``UserVectors.state``,
``UserTerms.state``). The header holds the format, the user, the embedding model and
dimension, the change-log position the index holds (the user's first change row and the
last one applied: sequence number and memory id) and each array's name and CRC-32.
Not a ``.npz``: NumPy reads a zip member in small chunks, several times slower.
Written to a temporary file in the directory and renamed over the old one (a reader sees a
whole file or none), 0600 in a 0700 directory; the directory is opened with ``O_NOFOLLOW``
and files relative to it, also with ``O_NOFOLLOW``, so no planted symlink is followed.

**When used.** On a user's first search, before the change log is read: only if the header
names the user, the model and this format, its last change is at or before the user's
data version, and the change log still holds its first and last rows with the same
memory ids (a forget deletes the user's change rows, so a forgotten user's file, or
another database's, does not match). The index then catches up from the change log past
that position, as it does after any other process's writes. A file that is unreadable,
corrupt (a CRC, a short read, arrays that do not fit together), not ours (owner, permissions)
or foreign is logged, deleted and rebuilt from the database.

**When written.** After a catch-up that applied ``SAVE_AFTER_CHANGES`` changes or more since
the last snapshot (a first load of a large user), and on close for every index changed
since its snapshot. A process killed meanwhile leaves the older file, and its successor
catches up from the change log.

**Forget.** ``Retriever.forget(user)`` overwrites the user's file with zeros and deletes it,
with any temporary file of theirs; a process that hears of a forget elsewhere
(``forget(None)``) checks every file in its directory against the change log and deletes
those that no longer match. Zeroing is best effort below the filesystem (SECURITY.md).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
import stat
import zlib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import sqlalchemy as sa
from sqlalchemy.engine import URL, Connection

from memory.search.postings import UserTerms
from memory.search.vectors import UserVectors
from memory.store.engine import is_memory_sqlite
from memory.store.tables import Base

logger = logging.getLogger(__name__)

memory_changes = Base.metadata.tables["memory_changes"]
memories = Base.metadata.tables["memories"]

CACHE_DIR_ENV = "MEMORY_INDEX_CACHE_DIR"
OFF = "off"
FORMAT = 1
SUFFIX = ".index"
# A catch-up that applies this many changes since the last snapshot writes a new one:
# reading that many rows back from the database costs about a second on this machine.
SAVE_AFTER_CHANGES = 50_000
_ZEROS = bytes(1 << 20)
# What reading a damaged or foreign file can raise: it is then not used.
_UNREADABLE = (
    OSError,
    ValueError,
    KeyError,
    TypeError,
    IndexError,
    EOFError,
)


def snapshot_directory(url: URL, environ: Mapping[str, str]) -> Path | None:
    """Where the snapshots of the database at ``url`` live (see the module docstring);
    None: nowhere."""
    configured = environ.get(CACHE_DIR_ENV, "").strip()
    if configured == OFF:
        return None
    database = url.database or ""
    sqlite_file = (
        url.get_backend_name() == "sqlite"
        and not is_memory_sqlite(url)
        and not database.startswith("file:")
    )
    if configured:
        identity = (
            f"sqlite:{os.path.realpath(database)}"
            if sqlite_file
            else url.set(password=None).render_as_string(hide_password=False)
        )
        return Path(configured) / hashlib.sha256(identity.encode("utf-8")).hexdigest()[:32]
    if sqlite_file:
        return Path(os.path.abspath(database) + ".index")
    return None


def file_name(user: str) -> str:
    """The snapshot file of ``user``: a digest, so a directory listing names nobody."""
    return hashlib.sha256(user.encode("utf-8")).hexdigest() + SUFFIX


@dataclass(frozen=True, slots=True)
class Position:
    """Where an index stands in the user's change log: their first change row and the last
    one applied, each (sequence number, memory id), and the content hash and version of
    that last memory as it is now (None: deleted). The last tells a database restored from
    a backup, whose later writes may reuse the same sequence numbers and ids, apart."""

    first: tuple[int, int]
    last: tuple[int, int]
    memory: tuple[str, int] | None

    def as_json(self) -> dict[str, Any]:
        return {
            "first": list(self.first),
            "last": list(self.last),
            "memory": None if self.memory is None else list(self.memory),
        }


def position(connection: Connection, user: str, last_seq: int) -> Position | None:
    """``user``'s position at ``last_seq``; None if the change log has no such row of
    theirs."""
    first_seq = (
        sa.select(sa.func.min(memory_changes.c.seq))
        .where(memory_changes.c.user_id == user)
        .scalar_subquery()
    )
    rows = connection.execute(
        sa.select(
            memory_changes.c.seq,
            memory_changes.c.memory_id,
            memories.c.content_hash,
            memories.c.version,
        )
        .select_from(
            memory_changes.outerjoin(memories, memories.c.id == memory_changes.c.memory_id)
        )
        .where(
            memory_changes.c.user_id == user,
            sa.or_(memory_changes.c.seq == last_seq, memory_changes.c.seq == first_seq),
        )
        .order_by(memory_changes.c.seq)
    ).all()
    if not rows or rows[-1].seq != last_seq:
        return None
    last = rows[-1]
    return Position(
        (rows[0].seq, rows[0].memory_id),
        (last.seq, last.memory_id),
        None if last.content_hash is None else (last.content_hash, last.version),
    )


class Snapshots:
    """The snapshot files in one directory. Every method logs and carries on when the
    filesystem fails: a search never fails because its cache cannot be read or written."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    @contextmanager
    def _opened(self, create: bool) -> Iterator[int | None]:
        """The directory's descriptor (None if it does not exist and not ``create``)."""
        if create:
            os.makedirs(self.directory, mode=0o700, exist_ok=True)
        try:
            descriptor = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        except FileNotFoundError:
            yield None
            return
        try:
            found = os.fstat(descriptor)
            if found.st_uid != os.geteuid() or found.st_mode & 0o077:
                raise PermissionError(
                    f"{self.directory}: index snapshots need a directory of this user's "
                    "that no one else may read (mode 0700)"
                )
            yield descriptor
        finally:
            os.close(descriptor)

    # -- writing ----------------------------------------------------------------------------------

    def save(
        self, connection: Connection, user: str, model: str, vectors: UserVectors, terms: UserTerms
    ) -> bool:
        """Write ``user``'s index (the caller holds its lock); False if it was not written."""
        found = position(connection, user, vectors.last_seq)
        if found is None:
            return False
        header = {
            "format": FORMAT,
            "user": user,
            "model": model,
            "dimension": vectors.dimension,
            **found.as_json(),
        }
        arrays = {
            name: np.ascontiguousarray(value)
            for part, state in (("vectors", vectors.state()), ("terms", terms.state()))
            for name, value in ((f"{part}.{key}", value) for key, value in state.items())
        }
        header["arrays"] = [[name, zlib.crc32(array.data)] for name, array in arrays.items()]
        encoded = np.frombuffer(json.dumps(header).encode("utf-8"), dtype=np.uint8)
        name = file_name(user)
        try:
            with self._opened(create=True) as directory:
                assert directory is not None
                temporary = f".{name}.{secrets.token_hex(8)}.tmp"
                descriptor = os.open(
                    temporary,
                    os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                    0o600,
                    dir_fd=directory,
                )
                try:
                    with os.fdopen(descriptor, "wb") as file:
                        for array in (encoded, *arrays.values()):
                            np.save(file, array, allow_pickle=False)
                        file.flush()
                        os.fsync(file.fileno())
                    os.replace(temporary, name, src_dir_fd=directory, dst_dir_fd=directory)
                except BaseException:
                    with suppress(FileNotFoundError):
                        os.unlink(temporary, dir_fd=directory)
                    raise
                os.fsync(directory)
        except OSError as error:
            logger.warning("index snapshot %s not written: %s", name, error)
            return False
        return True

    # -- reading ----------------------------------------------------------------------------------

    def load(
        self,
        connection: Connection,
        user: str,
        version: int,
        model: str,
        vectors: UserVectors,
        terms: UserTerms,
    ) -> bool:
        """Fill the empty ``vectors`` and ``terms`` (the caller holds their lock) from
        ``user``'s snapshot if it is theirs and current (see the module docstring); False
        (and the file deleted, with a log line saying why) if not, or if there is none."""
        name = file_name(user)
        try:
            with self._opened(create=False) as directory:
                if directory is None:
                    return False
                try:
                    descriptor = os.open(
                        name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=directory
                    )
                except FileNotFoundError:
                    return False
                with os.fdopen(descriptor, "rb") as file:
                    reason = _not_ours(file)
                    if reason is None:
                        reason = self._read(file, connection, user, version, model, vectors, terms)
        except _UNREADABLE as error:
            reason = f"unreadable: {type(error).__name__}: {error}"
        if reason is None:
            return True
        logger.warning(
            "index snapshot %s not used (%s); rebuilding from the database", name, reason
        )
        self._delete(name)
        return False

    def _read(
        self,
        file: BinaryIO,
        connection: Connection,
        user: str,
        version: int,
        model: str,
        vectors: UserVectors,
        terms: UserTerms,
    ) -> str | None:
        header = _header(file)
        reason = _mismatch(connection, header, version)
        if reason is None and (header["user"], header["model"]) != (user, model):
            reason = "another user's or another model's"
        if reason is None and header["dimension"] != vectors.dimension:
            reason = "another dimension"
        if reason is not None:
            return reason
        state: dict[str, np.ndarray] = {}
        for name, checksum in header["arrays"]:
            array = np.load(file, allow_pickle=False)
            if zlib.crc32(array.data) != checksum:
                raise ValueError(f"{name}: the checksum does not match")
            state[str(name)] = array
        if file.read(1):
            raise ValueError("bytes after the last array")
        terms.restore(_part(state, "terms."))
        try:
            vectors.restore(_part(state, "vectors."))
        except ValueError:
            terms.restore(UserTerms().state())  # both from the database, then
            raise
        vectors.last_seq = int(header["last"][0])
        return None

    # -- deleting ---------------------------------------------------------------------------------

    def delete(self, user: str) -> None:
        """Zero and delete ``user``'s snapshot and any temporary file of it."""
        name = file_name(user)
        try:
            with self._opened(create=False) as directory:
                if directory is None:
                    return
                leftovers = [
                    entry for entry in os.listdir(directory) if entry.startswith(f".{name}.")
                ]
        except OSError as error:
            logger.warning("index snapshots in %s not listed: %s", self.directory, error)
            leftovers = []
        for entry in [name, *leftovers]:
            self._delete(entry)

    def sweep(self, connection: Connection) -> int:
        """Delete every snapshot that no longer matches the change log (its user forgotten
        by another process), and every file that is not a snapshot of ours; how many."""
        try:
            with self._opened(create=False) as directory:
                if directory is None:
                    return 0
                names = [entry for entry in os.listdir(directory) if entry.endswith(SUFFIX)]
        except OSError as error:
            logger.warning("index snapshots in %s not listed: %s", self.directory, error)
            return 0
        deleted = 0
        for name in names:
            try:
                with self._opened(create=False) as directory:
                    if directory is None:
                        return deleted
                    descriptor = os.open(
                        name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=directory
                    )
                    with os.fdopen(descriptor, "rb") as file:
                        reason = _not_ours(file)
                        if reason is None:
                            header = _header(file)
                            reason = _mismatch(connection, header, None)
                            if reason is None and file_name(header["user"]) != name:
                                reason = "named for another user"
            except FileNotFoundError:
                continue
            except _UNREADABLE as error:
                reason = f"unreadable: {type(error).__name__}: {error}"
            if reason is not None:
                logger.warning("index snapshot %s deleted (%s)", name, reason)
                self._delete(name)
                deleted += 1
        return deleted

    def _delete(self, name: str) -> None:
        """Overwrite the file ``name`` with zeros, then unlink it (a symlink is unlinked,
        never followed)."""
        try:
            with self._opened(create=False) as directory:
                if directory is None:
                    return
                try:
                    descriptor = os.open(
                        name, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=directory
                    )
                except FileNotFoundError:
                    return
                except OSError:  # a symlink (ELOOP) or not writable: unlink it all the same
                    descriptor = -1
                if descriptor >= 0:
                    with os.fdopen(descriptor, "wb") as file:
                        if stat.S_ISREG(os.fstat(file.fileno()).st_mode):
                            remaining = os.fstat(file.fileno()).st_size
                            while remaining > 0:
                                remaining -= file.write(_ZEROS[: min(remaining, len(_ZEROS))])
                            file.flush()
                            os.fsync(file.fileno())
                with suppress(FileNotFoundError):
                    os.unlink(name, dir_fd=directory)
        except OSError as error:
            logger.warning("index snapshot %s not deleted: %s", name, error)


def _not_ours(file: BinaryIO) -> str | None:
    found = os.fstat(file.fileno())
    if not stat.S_ISREG(found.st_mode):
        return "not a regular file"
    if found.st_uid != os.geteuid() or found.st_mode & 0o077:
        return "another owner's, or readable by others"
    return None


def _header(file: BinaryIO) -> dict[str, Any]:
    """The header at the start of a snapshot file (``ValueError`` if it is none of ours)."""
    raw = np.load(file, allow_pickle=False)
    if raw.dtype != np.uint8 or raw.ndim != 1:
        raise ValueError("header: not encoded text")
    header: dict[str, Any] = json.loads(raw.tobytes().decode("utf-8"))
    if header.get("format") != FORMAT:
        raise ValueError(f"format {header.get('format')!r}, not {FORMAT}")
    return header


def _mismatch(connection: Connection, header: Mapping[str, Any], version: int | None) -> str | None:
    """Why the index ``header`` describes does not match the change log (None: it does).
    ``version``: the user's data version, when known."""
    user = header["user"]
    last = header["last"]
    if version is not None and last[0] > version:
        return "ahead of the change log: another database, or one restored from a backup"
    found = position(connection, user, int(last[0]))
    expected = {key: header[key] for key in ("first", "last", "memory")}
    if found is None or found.as_json() != expected:
        return (
            "its changes are no longer in the change log: forgotten, restored from a "
            "backup, or another database"
        )
    return None


def _part(state: Mapping[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    return {key[len(prefix) :]: value for key, value in state.items() if key.startswith(prefix)}
