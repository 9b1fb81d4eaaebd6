"""Replay verbs: rebuild a database from a store's event log, and point-in-time recovery.

``replay(source, target, until=…)`` rebuilds ``target`` (empty, or a restored backup of
the source) from ``source``'s event log (:mod:`memory.store.replay`), then re-embeds the
memories with ``embedder`` (embeddings are derived, never replayed). ``restore_and_replay``
restores a backup, then replays the source's events after it up to ``until``.

The source's ``$MEMORY_EVENT_KEY`` (and ``$MEMORY_AUDIT_KEY``) must be the ones the events
were written with: they open the sealed changes and check the digests.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from memory.core.errors import InvalidInputError
from memory.search.embeddings import Embedder, default_embedder
from memory.search.reembed import reembed
from memory.store.backup import RestoreResult, restore_backup
from memory.store.changes import event_key
from memory.store.db import Database
from memory.store.engine import EngineOrUrl, engine_for, is_memory_sqlite
from memory.store.events import audit_key
from memory.store.replay import ReplayReport
from memory.store.replay import replay as replay_log
from memory.store.schema import upgrade

__all__ = ["ReplayPoint", "ReplayReport", "parse_until", "replay", "restore_and_replay"]

_SEQ = re.compile(r"[0-9]{1,18}")


@dataclass(frozen=True, slots=True)
class ReplayPoint:
    """Where a replay stops: after event ``seq``, or after the last event at ``time``."""

    seq: int | None = None
    time: datetime | None = None


def parse_until(text: str | None) -> ReplayPoint:
    """``--until``: an event number (ASCII digits) or an ISO 8601 time with its zone."""
    if text is None:
        return ReplayPoint()
    if _SEQ.fullmatch(text):
        return ReplayPoint(seq=int(text))
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        raise InvalidInputError(
            f"--until {text[:40]!r}: give an event number (e.g. 1200) or an ISO 8601 time "
            "with its zone (e.g. 2026-12-07T21:00:00Z)"
        )
    return ReplayPoint(time=moment)


def replay(
    source: EngineOrUrl,
    target: EngineOrUrl,
    until: ReplayPoint | None = None,
    embedder: Embedder | None | Literal["default"] = "default",
    progress: Callable[[int, int], None] | None = None,
) -> ReplayReport:
    """Rebuild ``target`` from ``source``'s log up to ``until`` (see the module docstring).
    ``embedder``: as ``Memory.open``'s (None: keyword search only, nothing embedded)."""
    point = until or ReplayPoint()
    with engine_for(source) as source_engine, engine_for(target) as target_engine:
        if source_engine.url == target_engine.url:
            raise InvalidInputError("replay: the target is the source; give a new database")
        if is_memory_sqlite(target_engine.url):
            raise InvalidInputError(
                "replay: the target is a database in memory, which is gone when the replay "
                "ends; give a file or a PostgreSQL database"
            )
        upgrade(target_engine)
        keys = (audit_key(os.environ), event_key(os.environ))
        target_db = Database(target_engine, *keys)
        report = replay_log(
            Database(source_engine, *keys),
            target_db,
            until_seq=point.seq,
            until_time=point.time,
            progress=progress,
        )
        chosen = default_embedder() if embedder == "default" else embedder
        if chosen is not None:
            reembed(target_db, chosen)
    return report


def restore_and_replay(
    source: EngineOrUrl,
    target: EngineOrUrl,
    backup: str | os.PathLike[str],
    until: ReplayPoint | None = None,
    embedder: Embedder | None | Literal["default"] = "default",
    progress: Callable[[int, int], None] | None = None,
) -> tuple[RestoreResult, ReplayReport]:
    """Restore ``backup`` into ``target`` (empty), then replay ``source``'s events after
    it up to ``until``: recovery to a point after the last backup."""
    restored = restore_backup(target, backup)
    return restored, replay(source, target, until, embedder, progress)
