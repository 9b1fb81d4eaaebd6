"""A simulated multi-agent workload, the driver behind ``memctl workload``.

Several users, each with a planner, a coder and a reviewer working in a few sessions. Work
comes in *turns*, the way an agent runtime calls the library: an agent records what it
learnt (a working memory, now and then a preference, a code pattern or a state checkpoint),
then runs a tool loop that injects context for the same question several times (the
result cache answers the repeats until the user's data changes), searches, and sometimes
lists, resumes a session or reads a preference. Every call goes through the public API, so
the metrics, the flags and the event log see exactly what a real runtime would cause.

Operations are paced to ``rate`` per second over all workers (a worker that falls behind
does not try to catch up in a burst), until ``duration`` seconds have passed.

Two knobs make the workload unhealthy on purpose, for the gates' NO-GO tests:

- ``inject_delay_ms``: every injection waits that long inside its first SQL statement, so
  injection latency (and that statement's duration) grows by it;
- ``error_rate``: that share of operations fails inside its first SQL statement with
  :class:`InjectedFault`, which the metrics count as a system fault (``memory.errors``).
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from sqlalchemy.engine import URL

from flags import BUILTIN_FLAGS, FlagEvaluator
from memory.client import Memory
from memory.core.errors import InvalidInputError, NotFoundError
from memory.scope import Scope
from memory.search.embeddings import Embedder
from memory.store.engine import before_each_statement
from memory.telemetry.snapshots import MetricsSnapshot, SnapshotWindow, write_snapshot

AGENTS = ("planner", "coder", "reviewer")
SESSIONS_PER_USER = 3
TOPICS = (
    "invoice export",
    "rate limiter",
    "schema migration",
    "login timeout",
    "search ranking",
    "billing webhook",
    "cache invalidation",
    "retry policy",
)
PEOPLE = ("Ada", "Grace", "Linus", "Barbara", "Ken", "Margaret")
FINDINGS = (
    "broke after the last deploy",
    "needs a backfill before the release",
    "times out for accounts with more than 10k rows",
    "should be split into two jobs",
    "is covered by the new integration test",
    "regressed when the pool size changed",
)
LANGUAGES = ("python", "sql", "typescript")


__all__ = [
    "InjectedFault",
    "SnapshotWriter",
    "Workload",
    "WorkloadConfig",
    "WorkloadReport",
    "WorkloadRun",
    "drive_workload",
    "run_workload",
    "workload_flags",
]


def workload_flags(mode: Literal["on", "stored"]) -> FlagEvaluator | None:
    """The ``flags`` argument of ``Memory.open`` for a run: ``on`` forces every rollout flag
    on (every code path runs, as at 100 %); ``stored`` (None: the default evaluator) follows
    the flag state in the database and this host's environment, as production does."""
    if mode == "on":
        return FlagEvaluator(environ={name: "on" for name in BUILTIN_FLAGS})
    return None


class InjectedFault(RuntimeError):
    """A failure the workload caused on purpose (``error_rate``)."""


@dataclass(frozen=True)
class WorkloadConfig:
    """What to run: ``duration`` seconds at ``rate`` operations per second."""

    duration: float
    rate: float
    users: int = 4
    workers: int = 4
    inject_delay_ms: float = 0.0
    error_rate: float = 0.0
    budget_tokens: int = 400
    seed: int = 20240601

    def __post_init__(self) -> None:
        checks = (
            ("duration", self.duration > 0, "must be > 0 seconds"),
            ("rate", self.rate > 0, "must be > 0 operations per second"),
            ("users", self.users >= 1, "must be at least 1"),
            ("workers", 1 <= self.workers <= 64, "must be between 1 and 64"),
            ("inject_delay_ms", self.inject_delay_ms >= 0, "must be >= 0"),
            ("error_rate", 0 <= self.error_rate <= 1, "must be between 0 and 1"),
            ("budget_tokens", self.budget_tokens >= 1, "must be at least 1"),
        )
        for name, ok, rule in checks:
            if not ok:
                raise InvalidInputError(f"{name}: {rule}, not {getattr(self, name)!r}")


@dataclass
class WorkloadReport:
    """What a run did: operations by kind, failures, and the achieved rate."""

    operations: Counter[str] = field(default_factory=Counter)
    injected_faults: int = 0
    other_failures: Counter[str] = field(default_factory=Counter)
    elapsed_seconds: float = 0.0

    @property
    def total(self) -> int:
        """Operations run (failed ones included)."""
        return sum(self.operations.values())

    @property
    def achieved_rate(self) -> float:
        """Operations per second actually run."""
        return self.total / self.elapsed_seconds if self.elapsed_seconds else 0.0


class _Sabotage:
    """Delays or fails the first SQL statement of an operation when the worker asks for it."""

    def __init__(self, memory: Memory) -> None:
        self._plan = threading.local()
        self.remove = before_each_statement(memory.engine, self._before)

    def arm(self, *, delay_ms: float = 0.0, fail: bool = False) -> None:
        self._plan.delay_ms = delay_ms
        self._plan.fail = fail

    def disarm(self) -> None:
        self.arm()

    def _before(self) -> None:
        delay_ms: float = getattr(self._plan, "delay_ms", 0.0)
        fail: bool = getattr(self._plan, "fail", False)
        if not (delay_ms or fail):
            return
        self.disarm()  # once per operation: the first statement pays
        if delay_ms:
            time.sleep(delay_ms / 1000.0)
        if fail:
            raise InjectedFault("failure injected by memctl workload --error-rate")


class _Pacer:
    """Hands out start times 1/rate apart to every worker; a late worker starts at once."""

    def __init__(self, rate: float, deadline: float) -> None:
        self._interval = 1.0 / rate
        self._next = time.monotonic()
        self._deadline = deadline
        self._lock = threading.Lock()

    def wait(self, stop: threading.Event) -> bool:
        """Sleep until this worker's turn; False once the run is over."""
        with self._lock:
            now = time.monotonic()
            slot = max(self._next, now - self._interval)  # no bursts to catch up
            self._next = slot + self._interval
        if slot >= self._deadline:
            return False
        delay = slot - time.monotonic()
        if delay > 0:
            return not stop.wait(delay)
        return not stop.is_set()


class Workload:
    """One run of the simulated workload against an open :class:`Memory`."""

    def __init__(
        self,
        memory: Memory,
        config: WorkloadConfig,
        progress: Callable[[int], None] | None = None,
    ) -> None:
        self.memory = memory
        self.config = config
        self.report = WorkloadReport()
        self._progress = progress
        self._lock = threading.Lock()
        self._stop = threading.Event()
        # (user, agent, session) that saved state: an agent resumes a session it worked in.
        self._saved: set[tuple[str, str, str]] = set()

    def run(self) -> WorkloadReport:
        """Run to the end (or until :meth:`stop`) and return the report."""
        config = self.config
        sabotage = _Sabotage(self.memory)
        started = time.monotonic()
        pacer = _Pacer(config.rate, started + config.duration)
        workers = [
            threading.Thread(
                target=self._work,
                args=(random.Random(config.seed + number), pacer, sabotage),
                name=f"workload-{number}",
                daemon=True,
            )
            for number in range(config.workers)
        ]
        try:
            for worker in workers:
                worker.start()
            for worker in workers:
                worker.join()
        finally:
            self._stop.set()
            sabotage.remove()
            self.report.elapsed_seconds = time.monotonic() - started
        return self.report

    def stop(self) -> None:
        """Ask the workers to finish their current operation and end the run."""
        self._stop.set()
    # -- one worker -----------------------------------------------------------------------------

    def _work(self, rng: random.Random, pacer: _Pacer, sabotage: _Sabotage) -> None:
        while not self._stop.is_set():
            user = f"user-{rng.randrange(self.config.users):03d}"
            agent = rng.choice(AGENTS)
            session = f"session-{rng.randrange(SESSIONS_PER_USER)}"
            scope = self.memory.scope(user, agent, session)
            for kind, step in self._turn(rng, scope):
                if not pacer.wait(self._stop):
                    self._stop.set()
                    return
                self._run(kind, step, rng, sabotage)

    def _turn(self, rng: random.Random, scope: Scope) -> list[tuple[str, Callable[[], object]]]:
        topic = rng.choice(TOPICS)
        question = f"what do we know about the {topic}"
        fact = f"{rng.choice(PEOPLE)} found that the {topic} {rng.choice(FINDINGS)}"
        budget = self.config.budget_tokens
        steps: list[tuple[str, Callable[[], object]]] = [
            ("add", lambda: scope.add(fact, tier="working", metadata={"topic": topic}))
        ]
        key = (scope.user, scope.agent, scope.session or "")
        if rng.random() < 0.15:
            steps.append(("save_state", lambda: self._save(scope, key, topic)))
        if rng.random() < 0.05:
            steps.append(
                (
                    "set_preference",
                    lambda: scope.set_preference(
                        "answer_style", rng.choice(["concise", "detailed"]), confidence=0.8
                    ),
                )
            )
        if rng.random() < 0.03:
            language = rng.choice(LANGUAGES)
            steps.append(
                (
                    "record_pattern",
                    lambda: scope.record_pattern(
                        language, f"{topic.replace(' ', '-')}-fix", f"# fix for the {topic}"
                    ),
                )
            )
        # The tool loop: the same question injected several times before anything changes.
        steps.extend(
            ("inject", lambda: scope.inject(question, budget_tokens=budget))
            for _ in range(rng.randint(4, 7))
        )
        steps.append(("search", lambda: scope.search(question, limit=5)))
        if rng.random() < 0.2:
            steps.append(("list", lambda: scope.list(tier="working", limit=20)))
        if rng.random() < 0.1:
            steps.append(("get_preference", lambda: scope.get_preference("answer_style")))
        with self._lock:
            resumable = key in self._saved
        if resumable and rng.random() < 0.08:
            steps.append(("resume", scope.resume))
        return steps

    def _save(self, scope: Scope, key: tuple[str, str, str], topic: str) -> None:
        scope.save_state({"topic": topic})
        with self._lock:
            self._saved.add(key)

    def _run(
        self, kind: str, step: Callable[[], object], rng: random.Random, sabotage: _Sabotage
    ) -> None:
        config = self.config
        fail = config.error_rate > 0 and rng.random() < config.error_rate
        delay = config.inject_delay_ms if kind == "inject" else 0.0
        sabotage.arm(delay_ms=delay, fail=fail)
        try:
            step()
        except InjectedFault:
            with self._lock:
                self.report.injected_faults += 1
        except NotFoundError:
            pass  # a session that expired meanwhile: an answer, not a failure
        except Exception as error:  # counted and reported; the run goes on
            with self._lock:
                self.report.other_failures[type(error).__name__] += 1
        finally:
            sabotage.disarm()
        with self._lock:
            self.report.operations[kind] += 1
            if self._progress is not None:
                self._progress(1)


def run_workload(
    memory: Memory, config: WorkloadConfig, progress: Callable[[int], None] | None = None
) -> WorkloadReport:
    """Run the simulated workload on ``memory`` (see the module docstring)."""
    return Workload(memory, config, progress).run()


class SnapshotWriter:
    """Writes the metrics snapshot of its window to ``path`` every ``interval`` seconds, on
    a thread of its own, and once more at :meth:`finish` (``memctl workload --snapshot``), so
    that ``memctl gates --snapshot`` can read a run that is still going or was cut short."""

    def __init__(self, path: Path, interval: float) -> None:
        self.path = path
        self.window = SnapshotWindow()
        self._interval = interval
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="snapshot-writer", daemon=True)

    def start(self) -> None:
        """Start rewriting the snapshot every interval."""
        self._thread.start()

    def _loop(self) -> None:
        while not self._done.wait(self._interval):
            write_snapshot(self.path, self.window.snapshot())

    def finish(self) -> MetricsSnapshot:
        """Stop the thread, write the final snapshot and return it."""
        self._done.set()
        if self._thread.is_alive():
            self._thread.join()
        snapshot = self.window.snapshot()
        write_snapshot(self.path, snapshot)
        return snapshot


@dataclass(frozen=True)
class WorkloadRun:
    """A finished :func:`drive_workload`: what the driver did, and the metrics of the run's
    window (also written to ``snapshot_path``, when one was given)."""

    report: WorkloadReport
    snapshot: MetricsSnapshot
    snapshot_path: Path | None


def drive_workload(
    database: str | URL | None,
    config: WorkloadConfig,
    *,
    embedder: Embedder,
    flags: Literal["on", "stored"] = "on",
    snapshot_path: Path | None = None,
    snapshot_interval: float = 5.0,
    progress: Callable[[int], None] | None = None,
    started: Callable[[Workload], None] | None = None,
) -> WorkloadRun:
    """Run the simulated workload against ``database`` (``memctl workload``) and measure it.

    ``flags`` is :func:`workload_flags`' mode. With ``snapshot_path`` the window's metrics
    snapshot is rewritten every ``snapshot_interval`` seconds and once at the end, for
    ``memctl gates --snapshot``. ``started`` is called with the driver once it exists, so
    that the caller can stop it early (``Workload.stop``, from a signal handler); Ctrl-C
    (``KeyboardInterrupt``) also ends the run early, and the report and snapshot are still
    returned and written.
    """
    with Memory.open(database, embedder=embedder, flags=workload_flags(flags)) as memory:
        # The window opens after Memory.open, whose schema creation is not workload.
        writer = SnapshotWriter(snapshot_path, snapshot_interval) if snapshot_path else None
        window = writer.window if writer is not None else SnapshotWindow()
        driver = Workload(memory, config, progress)
        if started is not None:
            started(driver)
        if writer is not None:
            writer.start()
        try:
            report = driver.run()
        except KeyboardInterrupt:
            driver.stop()
            report = driver.report
        snapshot = writer.finish() if writer is not None else window.snapshot()
    return WorkloadRun(report, snapshot, snapshot_path)
