"""``memctl sync``: hub-spoke sync from the shell. A thin client of :mod:`memory.sync`.

The cluster secret, which node tokens are derived from, is read from ``$MEMORY_SYNC_SECRET``
only: an argument would show in process listings.
"""

from __future__ import annotations

import asyncio
import importlib
import os
from pathlib import Path
from types import ModuleType
from typing import Any

import click

from memory.cli.common import echo_json, json_option


def _sync() -> ModuleType:
    """``memory.sync.network``, imported when a sync command runs: it needs the ``sync``
    extra (msgpack, zstandard), and ``memctl`` must work without it."""
    try:
        return importlib.import_module("memory.sync.network")
    except ImportError as error:
        raise click.ClickException(
            f"memctl sync needs the package {error.name!r}: pip install 'tiered-memory[sync]'"
        ) from None


@click.group("sync")
def sync_group() -> None:
    """Hub-spoke sync (MEMSHADOW v2): the hub's state."""


@sync_group.command("status")
@click.option("--hub", "hub", required=True, help="The hub's sync gateway, HOST:PORT.")
@click.option(
    "--node",
    default="memctl",
    show_default=True,
    help="The node id to ask as (its token comes from $MEMORY_SYNC_SECRET).",
)
@click.option(
    "--ca",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    default=None,
    help="A PEM CA bundle: connect over TLS and trust it.",
)
@click.option("--timeout", type=click.FloatRange(0.1, 300), default=5.0, show_default=True)
@json_option
def status(hub: str, node: str, ca: Path | None, timeout: float, as_json: bool) -> None:
    """The hub's nodes (connected, tiers, batches per tier), conflicts by resolution, the
    peer-to-peer share of deliveries and the backlog."""
    sync = _sync()
    try:
        endpoint = sync.Endpoint.parse(hub)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--hub") from None
    secret = os.environ.get(sync.SECRET_ENV)
    if not secret:
        raise click.UsageError(f"${sync.SECRET_ENV} must hold the cluster's sync secret")
    try:
        report: dict[str, Any] = asyncio.run(
            sync.hub_status(endpoint, node, secret, sync.client_tls(ca), timeout)
        )
    except (OSError, TimeoutError, PermissionError, ConnectionError) as error:
        raise click.ClickException(
            f"cannot get the status of the sync hub at {hub}: {error or type(error).__name__}"
        ) from None
    if as_json:
        echo_json(report)
        return
    click.echo(
        f"hub {report['hub']}: {len(report['nodes'])} node(s), backlog {report['backlog']}, "
        f"relayed {report['relayed']}, peer-to-peer copies {report['p2p_copies']} "
        f"(ratio {report['p2p_ratio']:.2f})"
    )
    conflicts = ", ".join(f"{k} {v}" for k, v in sorted(report["conflicts"].items())) or "none"
    click.echo(f"  conflicts: {conflicts}")
    for name, node_report in sorted(report["nodes"].items()):
        state = "connected" if node_report["connected"] else "offline"
        received = ", ".join(f"{t} {n}" for t, n in node_report["received"].items())
        click.echo(
            f"  {name:<20} {state:<9} endpoint {node_report['endpoint'] or '-'}; "
            f"batches received: {received or '-'}"
        )
