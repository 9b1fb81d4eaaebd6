"""How the MCP tests reach the two servers: the reference memory server (npm, pinned in
tests/mcp_reference) and ``memctl mcp``, each a real process driven through the ``mcp``
client SDK over stdio, or ours over streamable HTTP."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx2
from mcp import ClientSession, StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client

REFERENCE_DIR = Path(__file__).resolve().parent.parent / "mcp_reference"
REFERENCE_BIN = REFERENCE_DIR / "node_modules" / ".bin" / "mcp-server-memory"
MEMCTL = Path(sys.executable).parent / "memctl"
# Every rollout flag on, as tests/conftest.py switches them on in-process: the memory tools
# are under test here, not the flags.
FLAGS_ON = {
    name: "on"
    for name in (
        "USE_HIERARCHICAL_TIERS",
        "USE_ENHANCED_INJECTION",
        "USE_CROSS_AGENT_SHARING",
    )
}


def reference_parameters(memory_file: Path) -> StdioServerParameters:
    """The reference server on ``memory_file``; a missing install is a failure to fix."""
    if not REFERENCE_BIN.exists() or shutil.which("node") is None:
        raise RuntimeError(
            f"the reference MCP memory server is not installed in {REFERENCE_DIR}: "
            "run `npm ci` there (scripts/check does) with Node 20+"
        )
    return StdioServerParameters(
        command=str(REFERENCE_BIN), env={"MEMORY_FILE_PATH": str(memory_file)}
    )


def ours_parameters(
    url: str, user: str, *extra: str, env: dict[str, str] | None = None
) -> StdioServerParameters:
    """``memctl mcp`` for ``user`` on the database at ``url``."""
    return StdioServerParameters(
        command=str(MEMCTL),
        args=["--database-url", url, "mcp", "--user", user, *extra],
        env={**FLAGS_ON, **(env or {})},
    )


@asynccontextmanager
async def stdio_session(parameters: StdioServerParameters) -> AsyncIterator[ClientSession]:
    """An initialised client session with a server process (stopped on exit)."""
    with open(os.devnull, "w") as quiet:
        async with stdio_client(parameters, errlog=quiet) as (read, write):
            async with ClientSession(read, write) as session:
                await session.initialize()
                yield session


@asynccontextmanager
async def http_session(url: str, token: str | None) -> AsyncIterator[ClientSession]:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    async with httpx2.AsyncClient(headers=headers, timeout=30) as client:
        async with streamable_http_client(url, http_client=client) as (read, write):
            async with ClientSession(read, write) as session:
                await session.initialize()
                yield session


def dumped(result: Any) -> dict[str, Any]:
    """A pydantic result of the SDK as its wire JSON."""
    data: dict[str, Any] = result.model_dump(by_alias=True, exclude_none=True, mode="json")
    return data
