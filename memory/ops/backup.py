"""Backup verbs: ``backup``, ``scheduled_backup``, ``latest_backup``, ``verify_backup``,
``restore_backup`` and ``restore_archive``.

Backups are whole-database copies taken online (see :mod:`memory.store.backup`); archives
are the rows a ``rollback`` dropped (see :mod:`memory.store.archive`). Every verb verifies
what it reads against its manifest and refuses to restore into tables that hold rows.

A schedule (the systemd timer in ``deploy/systemd/``) runs :func:`scheduled_backup`: a new
backup in a directory of backups, named after its UTC time, verified, then the old ones
removed by count or age; it can leave the time of the last good backup for Prometheus
(node_exporter's textfile collector), which the ``MemoryBackupStale`` alert watches.

>>> backup("sqlite:///memory.db", "backups/2024-06-01").method  # doctest: +SKIP
'sqlite'
>>> scheduled_backup("sqlite:///memory.db", "backups", keep=48).removed  # doctest: +SKIP
(PosixPath('backups/20240601T000000Z'),)
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from prometheus_client import CollectorRegistry, Gauge, write_to_textfile

from memory.core.errors import InvalidInputError
from memory.ops.gates import parse_window
from memory.store import archive
from memory.store.archive import TableChecksum, table_checksums, verify_archive
from memory.store.backup import (
    BACKUP_METHODS,
    BackupInfo,
    BackupMethod,
    RestoreResult,
    backup,
    list_backups,
    restore_backup,
    verify_backup,
)
from memory.store.engine import EngineOrUrl, engine_for

__all__ = [
    "BACKUP_DIR_ENV",
    "BACKUP_METHODS",
    "BACKUP_RPO",
    "BackupInfo",
    "BackupMethod",
    "RestoreResult",
    "ScheduledBackup",
    "TableChecksum",
    "backup",
    "latest_backup",
    "restore_archive",
    "restore_backup",
    "scheduled_backup",
    "table_checksums",
    "verify_archive",
    "verify_backup",
]

# Where scheduled backups go, for whoever asks for the last one (``memctl health``).
BACKUP_DIR_ENV = "MEMORY_BACKUP_DIR"
# The rollout checklist's recovery point objective: lose at most an hour of writes.
BACKUP_RPO = timedelta(hours=1)
# Scheduled backups are named after their UTC start time, so names sort by age, and
# pruning removes only directories named so (never a backup an operator made by hand).
_SCHEDULED_NAME = "%Y%m%dT%H%M%SZ"
_SCHEDULED_PATTERN = re.compile(r"\d{8}T\d{6}Z")
LAST_SUCCESS_METRIC = "memory_backup_last_success_timestamp_seconds"


@dataclass(frozen=True, slots=True)
class ScheduledBackup:
    """A scheduled run: the new, verified backup and the old backups it removed."""

    backup: BackupInfo
    removed: tuple[Path, ...]


def scheduled_backup(
    database: EngineOrUrl,
    root: str | os.PathLike[str],
    *,
    keep: int | None = None,
    max_age: timedelta | str | None = None,
    method: BackupMethod = "auto",
    metrics_file: str | os.PathLike[str] | None = None,
) -> ScheduledBackup:
    """Back up into a new directory of ``root`` named after the UTC time, verify it, then
    remove the scheduled backups beyond the newest ``keep`` and those older than ``max_age``
    (a timedelta, or text such as ``36h`` or ``7d``).

    Nothing is removed unless the new backup verified, the new one never is, and only
    directories named as this function names them and holding a complete backup are
    candidates. With ``metrics_file``, the new backup's time is written there afterwards
    (atomically) as ``memory_backup_last_success_timestamp_seconds``, for node_exporter's
    textfile collector.
    """
    if keep is not None and (isinstance(keep, bool) or not isinstance(keep, int) or keep < 1):
        raise InvalidInputError(f"keep: a whole number of backups, at least 1, not {keep!r}")
    if isinstance(max_age, str):
        max_age = parse_window(max_age, "max_age")
    if max_age is not None and (
        not isinstance(max_age, timedelta) or max_age <= timedelta(0)
    ):
        raise InvalidInputError(f"max_age: a positive duration, not {max_age!r}")
    directory = Path(root)
    if directory.exists() and not directory.is_dir():
        raise InvalidInputError(f"{directory}: exists and is not a directory")
    if metrics_file is not None and (
        Path(metrics_file).is_dir() or not Path(metrics_file).parent.is_dir()
    ):
        # Checked first: a backup must not be taken (and old ones removed) only for the
        # run to fail at its last step.
        raise InvalidInputError(
            f"metrics_file: {metrics_file} is a directory or its directory does not exist"
        )
    target = directory / datetime.now(UTC).strftime(_SCHEDULED_NAME)
    if target.exists():
        raise InvalidInputError(f"{target}: a backup started in this same second exists")
    written = backup(database, target, method=method)
    verify_backup(target)  # raises on any mismatch: then nothing old is removed
    removed = _prune(directory, written, keep, max_age)
    if metrics_file is not None:
        registry = CollectorRegistry()
        Gauge(
            LAST_SUCCESS_METRIC,
            "When the last verified scheduled backup was taken (its snapshot), Unix time.",
            registry=registry,
        ).set(written.created_at.timestamp())
        write_to_textfile(os.fspath(metrics_file), registry)
    return ScheduledBackup(written, removed)


def _prune(
    root: Path, written: BackupInfo, keep: int | None, max_age: timedelta | None
) -> tuple[Path, ...]:
    scheduled = [
        info for info in list_backups(root) if _SCHEDULED_PATTERN.fullmatch(info.directory.name)
    ]
    now = datetime.now(UTC)
    removed = []
    for position, info in enumerate(scheduled):
        if info.directory == written.directory:
            continue
        beyond_count = keep is not None and position >= keep
        too_old = max_age is not None and now - info.created_at > max_age
        if beyond_count or too_old:
            shutil.rmtree(info.directory)
            removed.append(info.directory)
    return tuple(removed)


def latest_backup(root: str | os.PathLike[str]) -> BackupInfo | None:
    """The newest complete backup in ``root`` (scheduled or not), or None."""
    backups = list_backups(root)
    return backups[0] if backups else None


def restore_archive(database: EngineOrUrl, directory: str | os.PathLike[str]) -> dict[str, int]:
    """Verify an archive written by a rollback and put its rows back into their (empty)
    tables, all or nothing; returns the rows restored per table."""
    with engine_for(database) as engine:
        return archive.restore_archive(engine, directory)
