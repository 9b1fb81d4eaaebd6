"""``memctl record``, ``memctl audit verify`` and ``memctl replay``: the event log from the
shell.

``record`` lets an external dispatcher or consumer report a result in one line; an event
whose data carries a ``memory`` object stores that memory in the same transaction.
``audit verify`` walks the hash chain and exits 1 at the first bad event. ``replay``
rebuilds a new database from the log (``memory.ops.replay``) and exits 1 if the chain
broke on the way.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import click

from memory import Memory
from memory import ops as ops
from memory.cli.common import (
    database_url,
    echo_json,
    json_object_argument,
    json_option,
    memory_handle,
)


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
    payload = json_object_argument(data, "--data")
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


NO_REEMBED = click.option(
    "--no-reembed",
    is_flag=True,
    help="Leave the embeddings to a later `memctl reembed` (keyword search until then).",
)


@contextmanager
def replay_progress(label: str) -> Iterator[Callable[[int, int], None] | None]:
    """A progress bar on standard error when it is a terminal: event numbers done of the
    last one the replay goes to."""
    if not sys.stderr.isatty():
        yield None
        return
    bar: Any = None
    try:

        def advance(done: int, end: int) -> None:
            nonlocal bar
            if bar is None:
                bar = click.progressbar(length=max(end, 1), label=label, file=sys.stderr)
                bar.__enter__()
            bar.update(done - bar.pos)

        yield advance
    finally:
        if bar is not None:
            bar.__exit__(None, None, None)


def report_replay(context: click.Context, report: ops.ReplayReport, as_json: bool) -> None:
    """Print a replay's report (one JSON object with ``--json``); exit 1 if it stopped at
    a bad event."""
    if as_json:
        echo_json(report.as_dict())
    else:
        click.echo(
            f"replayed {report.events} events up to {report.last_seq}: {report.applied} "
            f"changes applied, {report.forgotten} of forgotten users skipped, "
            f"{report.terms_rebuilt} memories indexed"
        )
        if report.in_snapshot:
            click.echo(
                f"{report.in_snapshot} events from before revision 0012 are carried by the "
                "snapshot of their rows their upgrade appended"
            )
        for operation, count in sorted(report.without_change.items()):
            click.echo(f"not reconstructible: {count} {operation} events carry no change")
        if report.broken is not None:
            click.echo(
                f"STOPPED at event {report.broken.first_bad_seq}: {report.broken.reason}; "
                "the target holds the events before it"
            )
    if not report.ok:
        context.exit(1)


@click.command()
@click.option("--to", "target", required=True, metavar="URL", help="The new database to build.")
@click.option(
    "--until",
    default=None,
    metavar="SEQ|TIME",
    help="Stop after this event number, or the last event at this ISO 8601 time (with zone).",
)
@NO_REEMBED
@json_option
@click.pass_context
def replay(
    context: click.Context, target: str, until: str | None, no_reembed: bool, as_json: bool
) -> None:
    """Rebuild a new database from this store's event log, verifying the chain."""
    point = ops.parse_until(until)
    source = database_url(context, existing=True)
    with replay_progress("replaying") as progress:
        report = ops.replay(source, target, point, None if no_reembed else "default", progress)
    report_replay(context, report, as_json)


@click.group("events")
def events_group() -> None:
    """The event log's keys."""


@events_group.command("rotate-key")
@json_option
@click.pass_context
def rotate_key(context: click.Context, as_json: bool) -> None:
    """Re-wrap every user's data key from $MEMORY_EVENT_KEY to $MEMORY_NEW_EVENT_KEY.

    The events and their chain are not touched. Run the deployment with the new key as
    $MEMORY_EVENT_KEY afterwards (runbooks/event-key-rotation.md).
    """
    rotation = ops.rotate_event_key(database_url(context, existing=True))
    if as_json:
        echo_json(rotation)
    else:
        click.echo(
            f"re-wrapped {rotation.rewrapped} data keys under {ops.NEW_EVENT_KEY_ENV}; "
            f"set it as $MEMORY_EVENT_KEY now"
        )


def register_event_commands(main: click.Group) -> None:
    """Add ``record``, ``audit``, ``replay`` and ``events`` to ``memctl``."""
    main.add_command(record)
    main.add_command(audit)
    main.add_command(replay)
    main.add_command(events_group)
