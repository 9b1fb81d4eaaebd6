"""Retention verbs: enforce retention once (``cleanup``, ``memctl cleanup``), on a schedule
(``RetentionWorker``), and read the last recorded run (``last_cleanup_run``, which
``memctl health`` checks).

The steps, their order and their SQL are :mod:`memory.store.retention`'s; this module runs
them for a :class:`memory.Memory`, on the collaborators it hands over
(:attr:`memory.Memory.maintenance`).

>>> policy = RetentionPolicy(tiers={"working": timedelta(hours=6)})  # doctest: +SKIP
>>> cleanup(memory, policy, dry_run=True).counts  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from types import TracebackType

from memory.client import Memory
from memory.core.errors import InvalidInputError
from memory.core.inputs import checked_count
from memory.store.engine import is_memory_sqlite
from memory.store.retention import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_SESSION_STATE_WINDOW,
    DEFAULT_WORKING_WINDOW,
    MAX_BATCH_SIZE,
    CleanupReport,
    MaintenanceRun,
    RetentionPolicy,
    RunStatus,
    Summarizer,
    checked_policy,
    last_run,
    run_cleanup,
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

logger = logging.getLogger("memory.retention")

DEFAULT_INTERVAL = timedelta(hours=1)


def cleanup(
    memory: Memory,
    policy: RetentionPolicy | None = None,
    *,
    now: datetime | None = None,
    summarizer: Summarizer | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    dry_run: bool = False,
    should_stop: Callable[[], bool] | None = None,
) -> CleanupReport:
    """Enforce ``policy`` (default: ``RetentionPolicy()``) once, in batches of
    ``batch_size`` rows per transaction, and record the run in ``maintenance_runs``.

    ``now`` replaces the clock (retention decisions and the summaries' timestamps);
    ``summarizer`` replaces ``extractive_summary``. A dry run counts what a run would
    change, changes nothing and records nothing. ``should_stop`` is asked between batches
    (a run it stops is recorded as ``interrupted``). A failing run is recorded as
    ``failed`` and its error raised; the batches committed before the failure stay done.

    >>> policy = RetentionPolicy(tiers={"working": timedelta(hours=6)})
    >>> cleanup(memory, policy).counts["working_memories"]  # doctest: +SKIP
    42
    """
    parts = memory.maintenance
    return run_cleanup(
        parts.db,
        parts.revision,
        policy,
        embed=parts.embed,
        tiered=parts.tiered,
        now=now,
        summarizer=summarizer,
        batch_size=batch_size,
        dry_run=dry_run,
        should_stop=should_stop,
    )


def last_cleanup_run(memory: Memory, *, status: RunStatus | None = None) -> MaintenanceRun | None:
    """The newest recorded cleanup run (with ``status``, the newest with that status), or
    None if there has been none."""
    parts = memory.maintenance
    return last_run(parts.db, parts.revision, status=status)


def _interval_seconds(interval: object) -> float:
    seconds = interval.total_seconds() if isinstance(interval, timedelta) else interval
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not seconds > 0:
        raise InvalidInputError(
            f"interval: must be a positive timedelta or number of seconds, not {interval!r}"
        )
    return float(seconds)


class RetentionWorker:
    """Runs ``cleanup`` in a daemon thread: at once, then every ``interval``.

    >>> worker = RetentionWorker(memory, interval=timedelta(minutes=30))  # doctest: +SKIP
    >>> worker.start()  # doctest: +SKIP
    >>> worker.stop()  # doctest: +SKIP

    A failing run is recorded as failed, logged (logger ``memory.retention``) and kept in
    ``last_error``; the worker carries on at the next interval. ``stop`` asks a run in
    progress to end after its current batch (recorded as ``interrupted``) and waits for
    the thread. The worker can be used as a context manager.

    The worker shares ``memory`` with the application, so the database must take more than
    one connection at a time: a SQLite file or PostgreSQL. A SQLite ``:memory:`` store is
    refused (its one shared connection cannot hold two transactions at once).
    """

    def __init__(
        self,
        memory: Memory,
        policy: RetentionPolicy | None = None,
        *,
        interval: timedelta | float = DEFAULT_INTERVAL,
        summarizer: Summarizer | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
    ) -> None:
        if is_memory_sqlite(memory.engine.url):
            raise InvalidInputError(
                "memory: a SQLite :memory: database has one connection for every thread, so "
                "a background worker would collide with the application; call cleanup() "
                "from the application's own thread instead"
            )
        self._memory = memory
        self._policy = checked_policy(policy, summarizer)
        self._summarizer = summarizer
        self._batch_size = checked_count("batch_size", batch_size, MAX_BATCH_SIZE)
        self._interval = _interval_seconds(interval)
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self.runs = 0
        """Runs finished so far, failed ones included."""
        self.failures = 0
        """Runs that raised."""
        self.last_report: CleanupReport | None = None
        """The report of the last run that finished without an error."""
        self.last_error: Exception | None = None
        """The error of the last run, or None if it succeeded."""

    @property
    def running(self) -> bool:
        """True while the worker's thread is alive."""
        thread = self._thread
        return thread is not None and thread.is_alive()

    def start(self) -> None:
        """Start the thread; the first cleanup runs at once."""
        with self._lock:
            if self.running:
                raise RuntimeError("the retention worker is already running")
            self._stopping = threading.Event()
            self._thread = threading.Thread(
                target=self._loop, args=(self._stopping,), name="memory-retention", daemon=True
            )
            self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        """Stop after the current batch, and wait (up to ``timeout`` seconds) for the thread."""
        with self._lock:
            thread, stopping = self._thread, self._stopping
        stopping.set()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def _loop(self, stopping: threading.Event) -> None:
        while not stopping.is_set():
            self._run_once(stopping)
            stopping.wait(self._interval)

    def _run_once(self, stopping: threading.Event) -> None:
        try:
            report = cleanup(
                self._memory,
                self._policy,
                summarizer=self._summarizer,
                batch_size=self._batch_size,
                should_stop=stopping.is_set,
            )
        except Exception as error:
            logger.exception("retention cleanup failed; next attempt in %.0f s", self._interval)
            with self._lock:
                self.runs += 1
                self.failures += 1
                self.last_error = error
        else:
            with self._lock:
                self.runs += 1
                self.last_report = report
                self.last_error = None

    def __enter__(self) -> RetentionWorker:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
