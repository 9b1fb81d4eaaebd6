"""PostgreSQL restarted in the middle of a load: clients reconnect by themselves, every
acknowledged write is there afterwards, and no call hangs past the 5 s timeouts.

The test starts its own throwaway cluster with Debian's binaries (``initdb`` and ``pg_ctl``
from /usr/lib/postgresql/*/bin, run as the ``postgres`` user, data directory in a temporary
directory, a spare loopback port), so that it can stop the server without disturbing the
shared one. Writer threads share one ``Memory`` and add memories in a loop, recording each
call's outcome; a call is "acknowledged" when ``add`` returned its record. Two faults:

- ``restart``: ``pg_ctl stop -m fast`` (every session is terminated), 2 s down, started
  again: a restart as slow as one on a busy host. Transient connection failures are retried
  until the 5 s bound, so callers ride through it: no error reaches them.
- ``outage``: ``pg_ctl stop -m immediate`` (as if the server crashed: no shutdown
  checkpoint, crash recovery at the next start), down for longer than the 5 s bound, then
  started again. Calls during the outage fail with ``DatabaseUnavailableError`` after at most
  the bound (never a raw driver error, never a hang); once the server is back, the same
  ``Memory`` serves the writers again without being reopened.

Either way, every acknowledged memory is present with the id ``add`` returned, and the
error metric (``memory.errors{operation="add"}``) counts exactly the calls that failed: none
across the restart, every one in the outage. Both faults show in
``memory.db.connection_failures``, so a restart that no caller noticed is still seen. During
the outage ``memctl health`` reports the database check failed (exit status 1) within the
5 s bound; once the server is back it reports healthy again.
"""

from __future__ import annotations

import glob
import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from memory import DatabaseUnavailableError, HashingEmbedder, Memory
from memory.cli import main as memctl
from memory.store.engine import POSTGRES_TIMEOUT_SECONDS
from memory.telemetry import instruments as telemetry

pytestmark = pytest.mark.slow

WRITERS = 6
WARM_ACKS = 5  # acknowledged writes per writer before the fault, and again after it
RESTART_DOWN_SECONDS = 2.0  # shorter than the retry budget, longer than a few retries
OUTAGE_SECONDS = POSTGRES_TIMEOUT_SECONDS + 2.0  # longer than any call may wait
# A call gives up at the 5 s deadline; the attempt under way then is itself bounded by the
# connect timeout, but against a stopped local server it fails at once. The slack is for a
# 2-core machine shared with other jobs.
CALL_BOUND_SECONDS = POSTGRES_TIMEOUT_SECONDS + 1.5
RECOVERY_TIMEOUT_SECONDS = 60.0
USER, AGENT = "fault-user", "writer"


# -- a throwaway cluster -------------------------------------------------------------------------


def postgres_binaries() -> Path:
    """The newest Debian PostgreSQL bin directory that has initdb and pg_ctl."""
    found = sorted(
        (Path(path) for path in glob.glob("/usr/lib/postgresql/*/bin")),
        key=lambda path: int(path.parent.name) if path.parent.name.isdigit() else 0,
    )
    usable = [path for path in found if (path / "initdb").exists() and (path / "pg_ctl").exists()]
    if not usable:
        pytest.fail(
            "no PostgreSQL server binaries under /usr/lib/postgresql/*/bin (initdb, pg_ctl); "
            "install Debian's postgresql package",
            pytrace=False,
        )
    return usable[-1]


def spare_port() -> int:
    """A loopback port nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Cluster:
    """A PostgreSQL cluster in ``root``, run as the ``postgres`` user."""

    binaries: Path
    root: Path
    port: int

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def run(self, tool: str, *args: str) -> None:
        command = ["runuser", "-u", "postgres", "--", str(self.binaries / tool), *args]
        # Output to a file, not a pipe: the server that pg_ctl starts inherits it and keeps
        # it open, so reading a pipe to its end would wait for the server to exit.
        with tempfile.TemporaryFile(mode="w+") as output:
            done = subprocess.run(command, stdout=output, stderr=output, timeout=120, check=False)
            output.seek(0)
            printed = output.read()
        if done.returncode != 0:
            log = self.root / "server.log"
            tail = log.read_text()[-3000:] if log.exists() else "(no server log)"
            raise AssertionError(
                f"{tool} {' '.join(args)} failed ({done.returncode}):\n{printed}\n"
                f"server log:\n{tail}"
            )

    def init(self) -> None:
        self.run("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "-E", "UTF8",
                 "--no-sync")  # fmt: skip

    def start(self) -> None:
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 "
            f"-c unix_socket_directories={self.root} -c max_connections=40"
        )
        self.run("pg_ctl", "start", "-D", str(self.data), "-l", str(self.root / "server.log"),
                 "-w", "-t", "60", "-o", options)  # fmt: skip

    def stop(self, mode: str) -> None:
        self.run("pg_ctl", "stop", "-D", str(self.data), "-m", mode, "-w", "-t", "60")

    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    """A fresh cluster on a spare loopback port, stopped and removed afterwards."""
    binaries = postgres_binaries()
    owner = pwd.getpwnam("postgres")
    # Under /tmp rather than pytest's tmp_path, whose parents only root may enter.
    root = Path(tempfile.mkdtemp(prefix="memory-faults-"))
    os.chown(root, owner.pw_uid, owner.pw_gid)
    server = Cluster(binaries, root, spare_port())
    try:
        server.init()
        server.start()
        yield server
    finally:
        if server.running():
            server.stop("immediate")
        shutil.rmtree(root)


# -- the load ------------------------------------------------------------------------------------


@dataclass
class Call:
    content: str
    started: float  # time.monotonic()
    ended: float
    memory_id: int | None = None  # set when acknowledged
    error: BaseException | None = None

    @property
    def seconds(self) -> float:
        return self.ended - self.started


@dataclass
class Load:
    """``WRITERS`` threads adding memories through one ``Memory`` until stopped."""

    memory: Memory
    label: str
    calls: list[list[Call]] = field(default_factory=list)
    stopping: threading.Event = field(default_factory=threading.Event)
    threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> None:
        for writer in range(WRITERS):
            self.calls.append([])
            thread = threading.Thread(target=self.write, args=(writer,), daemon=True)
            self.threads.append(thread)
            thread.start()

    def write(self, writer: int) -> None:
        scope = self.memory.scope(USER, AGENT, f"{self.label}-{writer}")
        number = 0
        while not self.stopping.is_set():
            number += 1
            content = f"{self.label}: writer {writer} write {number}"
            call = Call(content, time.monotonic(), 0.0)
            try:
                call.memory_id = scope.add(content, tier="episodic").id
            except Exception as error:  # every failure is recorded and judged by the test
                call.error = error
            call.ended = time.monotonic()
            self.calls[writer].append(call)

    def wait_for_acks(self, after: float, what: str) -> None:
        """Until every writer has ``WARM_ACKS`` acknowledged calls that began after
        ``after``: each one reconnected by itself."""
        deadline = time.monotonic() + RECOVERY_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            counts = [
                sum(1 for call in list(calls) if call.memory_id and call.started >= after)
                for calls in self.calls
            ]
            if min(counts) >= WARM_ACKS:
                return
            time.sleep(0.05)
        raise AssertionError(f"{what}: writers' acknowledged calls since then: {counts}")

    def stop(self) -> list[Call]:
        self.stopping.set()
        for thread in self.threads:
            thread.join(timeout=2 * CALL_BOUND_SECONDS)
        hung = sum(thread.is_alive() for thread in self.threads)
        assert hung == 0, f"{hung} writer threads still inside a call after {CALL_BOUND_SECONDS} s"
        return [call for calls in self.calls for call in calls]


def stored(url: str, label: str) -> dict[str, int]:
    """content -> id of this load's memories, read with a fresh engine."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                sa.text("SELECT content, id FROM memories WHERE user_id = :u AND content LIKE :p"),
                {"u": USER, "p": f"{label}: %"},
            )
            return {content: memory_id for content, memory_id in rows}
    finally:
        engine.dispose()


def check_acknowledged_writes_survived(url: str, label: str, calls: list[Call]) -> None:
    acknowledged = {call.content: call.memory_id for call in calls if call.memory_id}
    found = stored(url, label)
    missing = {content: memory_id for content, memory_id in acknowledged.items()
               if found.get(content) != memory_id}  # fmt: skip
    assert not missing, f"{len(missing)} acknowledged writes missing or changed: {missing}"


def add_errors_counted() -> float:
    return telemetry.totals().counter("memory.errors", operation="add")


def connection_failures_counted() -> float:
    return telemetry.totals().counter("memory.db.connection_failures", backend="postgresql")


def memctl_health(url: str) -> tuple[int, str, float]:
    """``memctl health`` on ``url`` (no embedder): exit status, output, seconds taken."""
    started = time.monotonic()
    result = CliRunner().invoke(memctl, ["--database-url", url, "health", "--embedder", "none"])
    return result.exit_code, result.output, time.monotonic() - started


def check_no_call_hung(calls: list[Call]) -> None:
    slowest = max(calls, key=lambda call: call.seconds)
    assert slowest.seconds <= CALL_BOUND_SECONDS, (
        f"a call took {slowest.seconds:.2f} s (bound {CALL_BOUND_SECONDS} s): {slowest}"
    )


# -- the tests -----------------------------------------------------------------------------------


def test_writers_ride_through_a_restart(cluster: Cluster) -> None:
    errors_before = add_errors_counted()
    failures_before = connection_failures_counted()
    with Memory.open(cluster.url, embedder=HashingEmbedder()) as memory:
        load = Load(memory, "restart")
        load.start()
        try:
            load.wait_for_acks(0.0, "before the restart")
            began = time.monotonic()
            cluster.stop("fast")
            time.sleep(RESTART_DOWN_SECONDS)
            cluster.start()
            back = time.monotonic()
            load.wait_for_acks(back, "after the restart")
        finally:
            calls = load.stop()

    check_acknowledged_writes_survived(cluster.url, "restart", calls)
    check_no_call_hung(calls)
    during = [call for call in calls if call.ended >= began and call.started <= back]
    assert during, "no call overlapped the restart: the fault was not exercised"
    failed = [call for call in calls if call.error is not None]
    # The server was down for ``back - began`` seconds, inside the 5 s retry budget.
    assert back - began < POSTGRES_TIMEOUT_SECONDS - 1, f"restart took {back - began:.1f} s"
    assert not failed, f"{len(failed)} calls failed across a restart: {failed[:3]}"
    assert add_errors_counted() == errors_before
    assert connection_failures_counted() > failures_before


def test_an_outage_fails_calls_within_the_bound_and_writers_recover(cluster: Cluster) -> None:
    errors_before = add_errors_counted()
    failures_before = connection_failures_counted()
    with Memory.open(cluster.url, embedder=HashingEmbedder()) as memory:
        load = Load(memory, "outage")
        load.start()
        try:
            load.wait_for_acks(0.0, "before the outage")
            down = time.monotonic()
            cluster.stop("immediate")
            status, report, seconds = memctl_health(cluster.url)
            assert status == 1, report
            assert re.search(r"^database\s+FAIL\s.*cannot reach", report, re.MULTILINE), report
            assert "UNHEALTHY" in report
            assert seconds < CALL_BOUND_SECONDS, f"memctl health took {seconds:.1f} s"
            time.sleep(max(0.0, down + OUTAGE_SECONDS - time.monotonic()))
            cluster.start()
            back = time.monotonic()
            load.wait_for_acks(back, "after the outage")
        finally:
            calls = load.stop()

    check_acknowledged_writes_survived(cluster.url, "outage", calls)
    check_no_call_hung(calls)
    failed = [call for call in calls if call.error is not None]
    assert failed, "no call failed although the server was down for longer than the bound"
    wrong = [call.error for call in failed if not isinstance(call.error, DatabaseUnavailableError)]
    assert not wrong, f"callers saw errors other than DatabaseUnavailableError: {wrong[:3]}"
    assert all("unavailable" in str(call.error) for call in failed), failed[0].error
    # Failures belong to the outage: each call overlapped the time the server was down.
    stray = [call for call in failed if call.ended < down or call.started > back]
    assert not stray, f"calls failed outside the outage: {stray[:3]}"
    assert add_errors_counted() - errors_before == len(failed)
    assert connection_failures_counted() > failures_before
    status, report, _ = memctl_health(cluster.url)
    assert status == 0, report
    assert re.search(r"^database\s+OK\s", report, re.MULTILINE), report
