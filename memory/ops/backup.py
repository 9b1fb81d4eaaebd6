"""Backup verbs: ``backup``, ``verify_backup``, ``restore_backup`` and ``restore_archive``.

Backups are whole-database copies taken online (see :mod:`memory.store.backup`); archives
are the rows a ``rollback`` dropped (see :mod:`memory.store.archive`). Every verb verifies
what it reads against its manifest and refuses to restore into tables that hold rows.

>>> backup("sqlite:///memory.db", "backups/2024-06-01").method  # doctest: +SKIP
'sqlite'
"""

from __future__ import annotations

import os

from memory.store import archive
from memory.store.archive import TableChecksum, table_checksums, verify_archive
from memory.store.backup import (
    BACKUP_METHODS,
    BackupInfo,
    BackupMethod,
    RestoreResult,
    backup,
    restore_backup,
    verify_backup,
)
from memory.store.engine import EngineOrUrl, engine_for

__all__ = [
    "BACKUP_METHODS",
    "BackupInfo",
    "BackupMethod",
    "RestoreResult",
    "TableChecksum",
    "backup",
    "restore_archive",
    "restore_backup",
    "table_checksums",
    "verify_archive",
    "verify_backup",
]


def restore_archive(database: EngineOrUrl, directory: str | os.PathLike[str]) -> dict[str, int]:
    """Verify an archive written by a rollback and put its rows back into their (empty)
    tables, all or nothing; returns the rows restored per table."""
    with engine_for(database) as engine:
        return archive.restore_archive(engine, directory)
