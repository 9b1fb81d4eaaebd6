"""``memctl serve`` as a real process on a free loopback port, for the service tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

MEMCTL = str(Path(sys.executable).with_name("memctl"))
START_SECONDS = 60.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Server:
    """A running ``memctl serve``; ``log`` is its standard error (JSON lines)."""

    url: str
    process: subprocess.Popen[bytes]
    log: Path
    grpc_url: str

    def log_lines(self) -> list[str]:
        return self.log.read_text(encoding="utf-8").splitlines()


@contextmanager
def served(database: str, log: Path, *args: str, **env: str) -> Iterator[Server]:
    """``memctl serve`` over ``database`` until the block ends (SIGTERM, then SIGKILL if
    it has not stopped within 15 s). Fails if it does not answer /health in time."""
    port = free_port()
    # Never the default gRPC port: servers of parallel tests would take each other's.
    grpc_port = env.get("MEMORY_SERVICE_GRPC_PORT") or str(free_port())
    environment = {
        **os.environ,
        "MEMORY_SERVICE_EMBEDDER": "hashing",
        **env,
        "MEMORY_SERVICE_GRPC_PORT": grpc_port,
    }
    with open(log, "wb") as errors:
        process = subprocess.Popen(
            [MEMCTL, "--database-url", database, "serve", "--port", str(port), *args],
            stdout=subprocess.DEVNULL,
            stderr=errors,
            env=environment,
        )
    server = Server(f"http://127.0.0.1:{port}", process, log, f"grpc://127.0.0.1:{grpc_port}")
    try:
        deadline = time.monotonic() + START_SECONDS
        while True:
            if process.poll() is not None:
                raise AssertionError(f"memctl serve exited: {log.read_text()}")
            try:
                # gRPC listens before HTTP does: /health answering means both are up.
                if httpx.get(f"{server.url}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"memctl serve did not answer in time: {log.read_text()}")
            time.sleep(0.1)
        yield server
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
