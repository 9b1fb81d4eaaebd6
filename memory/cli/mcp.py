"""``memctl mcp``: serve the store to MCP hosts (a thin wrapper of
:mod:`memory.integrations.mcp_server`, which needs the ``mcp`` extra)."""

from __future__ import annotations

import importlib
import os
from types import ModuleType

import click

from memory.cli.common import memory_handle

# The bearer token for --http comes from the environment, never an argument: arguments show
# in every process listing.
TOKEN_ENV = "MEMORY_MCP_TOKEN"


def _server_module() -> ModuleType:
    """The server, or an install hint: memctl itself works without the ``mcp`` extra."""
    try:
        return importlib.import_module("memory.integrations.mcp_server")
    except ImportError as error:
        raise click.ClickException(
            f"memctl mcp needs the MCP SDK ({error.name} is missing): "
            "pip install 'tiered-memory[mcp]'"
        ) from None


@click.command("mcp")
@click.option(
    "--user",
    envvar="MEMORY_MCP_USER",
    required=True,
    help="The user whose graph and memories the server serves (env MEMORY_MCP_USER). "
    "No tool can change it.",
)
@click.option(
    "--agent",
    envvar="MEMORY_MCP_AGENT",
    default="mcp",
    show_default=True,
    help="The agent the server writes as (env MEMORY_MCP_AGENT).",
)
@click.option(
    "--session",
    envvar="MEMORY_MCP_SESSION",
    default=None,
    help="Session id for the session-state tools (env MEMORY_MCP_SESSION).",
)
@click.option(
    "--http",
    "port",
    type=click.IntRange(1, 65535),
    default=None,
    metavar="PORT",
    help=f"Serve streamable HTTP on PORT at /mcp instead of stdio; clients must send "
    f"'Authorization: Bearer <token>' with the token in ${TOKEN_ENV}.",
)
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Interface for --http (loopback by default; anything else exposes the store).",
)
@click.pass_context
def mcp_command(
    context: click.Context,
    user: str,
    agent: str,
    session: str | None,
    port: int | None,
    host: str,
) -> None:
    """Serve the store over MCP: a drop-in for @modelcontextprotocol/server-memory (its nine
    graph tools) plus remember, recall, context, forget, preferences and session tools."""
    module = _server_module()
    token = os.environ.get(TOKEN_ENV, "")
    if port is not None and not token:
        raise click.UsageError(f"--http needs a bearer token in ${TOKEN_ENV}")
    with memory_handle(context) as memory:
        built = module.build_server(
            memory, module.Identity(user=user, agent=agent, session=session)
        )
        if port is None:
            module.serve_stdio(built)
        else:
            click.echo(f"serving MCP on http://{host}:{port}/mcp", err=True)
            module.serve_http(built, token, port, host)
