"""Sync nodes as real processes on loopback ports: the hub is ``memctl serve`` with its sync
gateway over a PostgreSQL database, each spoke ``tests/sync/spoke_process.py`` over its own
SQLite file. Used by the process tests and ``benchmarks/sync_throughput.py``."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from memory import ops
from tests.service.processes import Server, free_port, served

SECRET = "a-sync-cluster-secret-of-at-least-32-characters"
SPOKE_SCRIPT = Path(__file__).with_name("spoke_process.py")
ROOT = Path(__file__).resolve().parents[2]


def environment() -> dict[str, str]:
    return {
        **os.environ,
        "MEMORY_SYNC_SECRET": SECRET,
        "MEMORY_SERVICE_EMBEDDER": "hashing",
        "PYTHONPATH": str(ROOT),
    }


@dataclass
class Hub:
    """A running ``memctl serve`` with its sync gateway on ``sync_port``."""

    server: Server
    sync_port: int
    database: str

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.sync_port}"

    def status(self) -> dict[str, Any]:
        """``memctl sync status --json``: the real command, against the real gateway."""
        done = subprocess.run(
            [str(Path(sys.executable).with_name("memctl")), "sync", "status", "--hub",
             self.endpoint, "--json"],
            capture_output=True, text=True, env=environment(), timeout=30, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        return dict(json.loads(done.stdout))

    def metrics(self) -> str:
        return httpx.get(f"{self.server.url}/metrics", timeout=5).text


def wait_for_port(port: int, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise AssertionError(f"nothing listens on 127.0.0.1:{port}")


@contextmanager
def hub_process(
    database: str, log: Path, sync_port: int | None = None, **env: str
) -> Iterator[Hub]:
    """``memctl serve`` over ``database`` (migrated here) with its sync gateway."""
    ops.migrate(database)
    port = sync_port or free_port()
    settings = {"MEMORY_SERVICE_SYNC_PORT": str(port), "MEMORY_SERVICE_SYNC_SECRET": SECRET, **env}
    with served(database, log, **settings) as server:
        wait_for_port(port)
        yield Hub(server, port, database)


class Spoke:
    """A spoke process; ``call`` sends one command and returns its answer."""

    def __init__(self, database: Path, hub: str | None, catch_up: float = 1.0) -> None:
        self.database = database
        self.log = database.with_suffix(".log")
        arguments = [sys.executable, str(SPOKE_SCRIPT), str(database), "--catch-up", str(catch_up)]
        if hub is not None:
            arguments += ["--hub", hub]
        with open(self.log, "ab") as errors:
            self.process = subprocess.Popen(
                arguments, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=errors,
                env=environment(), text=True, bufsize=1,
            )  # fmt: skip
        hello = self._line(60)
        self.node: str = hello["node"]
        self.listen = f"127.0.0.1:{hello['listen']}"

    def _line(self, timeout: float) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise AssertionError(f"the spoke exited: {self.log.read_text()[-3000:]}")
        return dict(json.loads(line))

    def call(self, op: str, **arguments: Any) -> dict[str, Any]:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps({"op": op, **arguments}) + "\n")
        self.process.stdin.flush()
        return self._line(60)

    def state(self) -> dict[str, Any]:
        return self.call("state")

    def stop(self) -> None:
        if self.process.poll() is None:
            try:
                self.call("stop")
                self.process.wait(timeout=30)
            except (OSError, AssertionError, subprocess.TimeoutExpired):
                self.process.kill()
                self.process.wait()
        for pipe in (self.process.stdin, self.process.stdout):
            if pipe is not None:
                pipe.close()


@contextmanager
def spokes(
    directory: Path, hub: str | None, count: int, catch_up: float = 1.0
) -> Iterator[list[Spoke]]:
    started: list[Spoke] = []
    try:
        for index in range(count):
            started.append(Spoke(directory / f"spoke{index + 1}.db", hub, catch_up))
        yield started
    finally:
        for spoke in started:
            spoke.stop()


def eventually(check: Callable[[], Any], seconds: float = 30.0, what: str = "") -> Any:
    """``check()``'s first truthy result, polled until ``seconds`` pass (then fail)."""
    deadline = time.monotonic() + seconds
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {seconds} s: {what or check}")
        time.sleep(0.1)
