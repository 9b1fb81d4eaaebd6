"""``memctl record`` and ``memctl audit verify``: the event log from the shell.

``record`` lets an external dispatcher or consumer report a result in one line; an event
whose data carries a ``memory`` object stores that memory in the same transaction.
``audit verify`` walks the hash chain and exits 1 at the first bad event.
"""

from __future__ import annotations

import json
from typing import Any

import click

from memory import Memory
from memory.cli.common import (
    database_url,
    echo_json,
    json_option,
    memory_handle,
    text_argument,
)


def _json_object(raw: str) -> dict[str, Any]:
    """``--data``: a JSON object, inline, ``@FILE`` or ``-``."""
    try:
        value = json.loads(text_argument(raw, "--data"))
    except ValueError as error:
        raise click.BadParameter(f"not JSON: {error}", param_hint="--data") from error
    if not isinstance(value, dict):
        raise click.BadParameter("must be a JSON object", param_hint="--data")
    return value


@click.command()
@click.option("--agent", required=True, help="The agent reporting the event.")
@click.option("--event", "event_type", required=True, help="The event type, e.g. task.done.")
@click.option(
    "--data",
    required=True,
    metavar="JSON|@FILE|-",
    help='The event data, a JSON object; a "memory" object in it (content, tier, importance, '
    "visibility, metadata) is stored as a memory with the event.",
)
@click.option("--user", required=True, help="The user the event (and memory) belong to.")
@click.option("--session", default=None, help="Session id (optional).")
@click.pass_context
def record(
    context: click.Context,
    agent: str,
    event_type: str,
    data: str,
    user: str,
    session: str | None,
) -> None:
    """Append an event to the log (and store the memory it carries), in one transaction.

    Prints the event as JSON: {"seq", "event", "agent", "memory_id"}.
    """
    payload = _json_object(data)
    carried = payload.pop("memory", None)
    if carried is not None and not isinstance(carried, dict):
        raise click.BadParameter('"memory" must be a JSON object', param_hint="--data")
    with memory_handle(context) as memory:
        event, stored = memory.scope(user, agent, session).record_event(
            event_type, payload, memory=carried
        )
    echo_json(
        {
            "seq": event.seq,
            "event": event.operation,
            "agent": event.agent_id,
            "memory_id": stored.id if stored is not None else None,
        }
    )


@click.group()
def audit() -> None:
    """Check the event log."""


@audit.command()
@json_option
@click.pass_context
def verify(context: click.Context, as_json: bool) -> None:
    """Verify the hash chain of the event log; exit 1 at the first bad event."""
    with Memory.open(database_url(context, existing=True), embedder=None) as memory:
        report = memory.verify_events()
    if as_json:
        echo_json(report)
    elif report.ok:
        click.echo(f"ok: {report.checked} events, the chain is intact")
    else:
        click.echo(f"TAMPERED: first bad event {report.first_bad_seq}: {report.reason}")
    if not report.ok:
        context.exit(1)


def register_event_commands(main: click.Group) -> None:
    """Add ``record`` and ``audit`` to ``memctl``."""
    main.add_command(record)
    main.add_command(audit)
