"""``memctl mcp --http PORT`` as a real process on a free loopback port, for the tests."""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar

import anyio
from mcp import ClientSession

from tests.integrations.mcp_peers import FLAGS_ON, MEMCTL, http_session

T = TypeVar("T")
START_TIMEOUT = 60.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class HttpServer:
    url: str
    token: str
    process: subprocess.Popen[bytes]

    def call(
        self, work: Callable[[ClientSession], Awaitable[T]], token: str | None = ...  # type: ignore[assignment]
    ) -> T:
        """Run ``work`` with a client session (the configured token unless one is given)."""
        chosen = self.token if token is ... else token

        async def main() -> T:
            with anyio.fail_after(60):
                async with http_session(self.url, chosen) as session:
                    return await work(session)

        return anyio.run(main)


@contextmanager
def running_http_server(database_url: str, user: str, *extra: str) -> Iterator[HttpServer]:
    port = free_port()
    token = secrets.token_urlsafe(24)
    process = subprocess.Popen(
        [str(MEMCTL), "--database-url", database_url, "mcp", "--user", user, *extra,
         "--http", str(port)],
        env={**os.environ, **FLAGS_ON, "MEMORY_MCP_TOKEN": token},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if process.poll() is not None:
                reason = process.stderr.read().decode()  # type: ignore[union-attr]
                raise RuntimeError(f"memctl mcp --http exited: {reason}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"memctl mcp --http did not listen within {START_TIMEOUT} s"
                    ) from None
                time.sleep(0.1)
        yield HttpServer(f"http://127.0.0.1:{port}/mcp", token, process)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        if process.stderr is not None:
            process.stderr.close()


