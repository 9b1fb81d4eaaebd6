"""Cleanup verbs: enforce retention once (``cleanup``, ``memctl cleanup``), on a schedule
(``RetentionWorker``), and read the last recorded run (``last_cleanup_run``, which
``memctl health`` checks).

The steps, their order and their SQL are :mod:`memory.store.retention`'s; this module is
where an operator (or an application's own scheduler) calls them on a :class:`memory.Memory`.

>>> policy = RetentionPolicy(tiers={"working": timedelta(hours=6)})  # doctest: +SKIP
>>> cleanup(memory, policy, dry_run=True).counts  # doctest: +SKIP
"""

from __future__ import annotations

from memory.store.retention import (
    DEFAULT_SESSION_STATE_WINDOW,
    DEFAULT_WORKING_WINDOW,
    CleanupReport,
    MaintenanceRun,
    RetentionPolicy,
    RetentionWorker,
    Summarizer,
    cleanup,
    last_cleanup_run,
)

__all__ = [
    "CleanupReport",
    "DEFAULT_SESSION_STATE_WINDOW",
    "DEFAULT_WORKING_WINDOW",
    "MaintenanceRun",
    "RetentionPolicy",
    "RetentionWorker",
    "Summarizer",
    "cleanup",
    "last_cleanup_run",
]
