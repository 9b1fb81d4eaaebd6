"""``memctl memories``, ``preferences``, ``patterns`` and ``state``: what a user's agents keep,
read and changed from the shell, through the agent API (:class:`memory.Scope`).

Memories are private to the agent that stored them: every command acts as ``--agent``
(default ``memctl``), and an empty result says so, since an operator looking at a user's
memories usually means another agent's.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import click

from memory import MemoryRecord
from memory.cli.common import (
    echo_json,
    json_object_argument,
    json_option,
    memory_handle,
    plural,
    scope_options,
    text_argument,
)

__all__ = ["memories", "patterns", "preferences", "record_json", "state"]

TIERS = ["working", "episodic", "semantic"]


def record_json(record: MemoryRecord) -> dict[str, Any]:
    """A memory as JSON: its fields, dates in ISO 8601."""
    data = dataclasses.asdict(record)
    for key in ("created_at", "updated_at", "last_accessed_at", "expires_at"):
        data[key] = data[key].isoformat() if data[key] is not None else None
    return data


def record_line(record: MemoryRecord) -> str:
    return f"#{record.id} {record.tier:8} v{record.version}  {record.content}"


def nothing_found(what: str, user: str, agent: str) -> None:
    """Say why a listing is empty when the likely reason is the agent (on stderr, so that
    ``--json`` output stays one document)."""
    click.echo(
        f"no {what} of agent {agent!r} for user {user!r}; memories are private to the agent "
        "that stored them: give --agent NAME to read another agent's",
        err=True,
    )


def metadata_option(raw: str | None) -> dict[str, Any] | None:
    """``--metadata``: a JSON object, inline, ``@FILE`` or ``-``."""
    return None if raw is None else json_object_argument(raw, "--metadata")


@click.group()
def memories() -> None:
    """List, show, change and delete one agent's memories of a user."""


@memories.command(name="list")
@scope_options
@click.option("--tier", type=click.Choice(TIERS), default=None, help="Only this tier.")
@click.option("--limit", type=click.IntRange(1, 1000), default=20, show_default=True)
@click.option("--before-id", type=int, default=None, help="Page: ids below this one.")
@json_option
@click.pass_context
def list_memories(
    context: click.Context,
    user: str,
    agent: str,
    session: str | None,
    tier: Any,  # one of TIERS: click.Choice checked it
    limit: int,
    before_id: int | None,
    as_json: bool,
) -> None:
    """The newest memories first (page with --before-id)."""
    with memory_handle(context, existing=True) as memory:
        found = memory.scope(user, agent).list(
            tier=tier, session=session, before_id=before_id, limit=limit
        )
    if as_json:
        echo_json([record_json(record) for record in found])
    else:
        for record in found:
            click.echo(record_line(record))
    if not found:
        nothing_found("memories", user, agent)


@memories.command(name="get")
@click.argument("memory_id", type=int)
@scope_options
@json_option
@click.pass_context
def get_memory(
    context: click.Context, memory_id: int, user: str, agent: str, session: str | None,
    as_json: bool,
) -> None:  # fmt: skip
    """Show memory MEMORY_ID with its metadata."""
    with memory_handle(context, existing=True) as memory:
        record = memory.scope(user, agent, session).get(memory_id)
    if as_json:
        echo_json(record_json(record))
        return
    click.echo(record_line(record))
    click.echo(
        f"  importance {record.importance}, {record.visibility}, created "
        f"{record.created_at:%Y-%m-%d %H:%M:%S} UTC, metadata "
        f"{json.dumps(record.metadata, ensure_ascii=False)}"
    )


@memories.command(name="update")
@click.argument("memory_id", type=int)
@scope_options
@click.option("--version", type=int, required=True, help="The version read (optimistic lock).")
@click.option("--content", default=None, metavar="TEXT|@FILE|-", help="The new content.")
@click.option("--tier", type=click.Choice(TIERS), default=None)
@click.option("--importance", type=float, default=None)
@click.option("--metadata", default=None, metavar="JSON|@FILE", help="Replaces the metadata.")
@json_option
@click.pass_context
def update_memory(
    context: click.Context,
    memory_id: int,
    user: str,
    agent: str,
    session: str | None,
    version: int,
    content: str | None,
    tier: Any,  # one of TIERS: click.Choice checked it
    importance: float | None,
    metadata: str | None,
    as_json: bool,
) -> None:
    """Change memory MEMORY_ID as read at --version (refused if it changed since)."""
    text = text_argument(content, "--content") if content is not None else None
    with memory_handle(context, existing=True) as memory:
        record = memory.scope(user, agent, session).update(
            memory_id, version=version, content=text, tier=tier, importance=importance,
            metadata=metadata_option(metadata),
        )  # fmt: skip
    if as_json:
        echo_json(record_json(record))
    else:
        click.echo(f"updated memory {record.id} ({record.tier}, version {record.version})")


@memories.command(name="delete")
@click.argument("memory_id", type=int)
@scope_options
@json_option
@click.pass_context
def delete_memory(
    context: click.Context, memory_id: int, user: str, agent: str, session: str | None,
    as_json: bool,
) -> None:  # fmt: skip
    """Delete memory MEMORY_ID and its metadata."""
    with memory_handle(context, existing=True) as memory:
        memory.scope(user, agent, session).delete(memory_id)
    if as_json:
        echo_json({"deleted": memory_id})
    else:
        click.echo(f"deleted memory {memory_id}")


@click.command()
@scope_options
@json_option
@click.pass_context
def preferences(
    context: click.Context, user: str, agent: str, session: str | None, as_json: bool
) -> None:
    """A user's preferences (shared by all of the user's agents)."""
    with memory_handle(context, existing=True) as memory:
        found = memory.scope(user, agent, session).list_preferences()
    if as_json:
        echo_json([dataclasses.asdict(item) for item in found])
        return
    for item in found:
        click.echo(
            f"{item.key} = {json.dumps(item.value, ensure_ascii=False)}  "
            f"(confidence {item.confidence}, from {item.source_agent})"
        )
    if not found:
        click.echo(f"no preferences for user {user!r}", err=True)


@click.command()
@scope_options
@click.option("--language", default=None, help="Only this language.")
@click.option("--tag", default=None, help="Only patterns with this tag.")
@click.option("--text", default=None, help="Only patterns whose name, description or code has it.")
@click.option("--limit", type=click.IntRange(1, 1000), default=20, show_default=True)
@json_option
@click.pass_context
def patterns(
    context: click.Context,
    user: str,
    agent: str,
    session: str | None,
    language: str | None,
    tag: str | None,
    text: str | None,
    limit: int,
    as_json: bool,
) -> None:
    """A user's code patterns, most used first."""
    with memory_handle(context, existing=True) as memory:
        found = memory.scope(user, agent, session).find_patterns(
            language=language, tag=tag, text=text, limit=limit
        )
    if as_json:
        echo_json([dataclasses.asdict(item) for item in found])
        return
    for item in found:
        tags = f" [{', '.join(item.tags)}]" if item.tags else ""
        click.echo(
            f"#{item.id} {item.language}/{item.name}{tags}  used "
            f"{plural(item.usage_count, 'time')}: {item.description}"
        )
    if not found:
        click.echo(f"no code patterns for user {user!r} match", err=True)


@click.command()
@scope_options
@json_option
@click.pass_context
def state(
    context: click.Context, user: str, agent: str, session: str | None, as_json: bool
) -> None:
    """The latest checkpoint of a session's resumable state (needs --session)."""
    if session is None:
        raise click.UsageError("state needs --session: session state belongs to one session")
    with memory_handle(context, existing=True) as memory:
        checkpoint = memory.scope(user, agent, session).load_state()
    if checkpoint is None:
        if as_json:
            echo_json(None)
        click.echo(f"no live state for session {session!r} of user {user!r}", err=True)
        return
    if as_json:
        echo_json(dataclasses.asdict(checkpoint))
        return
    expires = (
        f", expires {checkpoint.expires_at:%Y-%m-%d %H:%M} UTC" if checkpoint.expires_at else ""
    )
    click.echo(
        f"checkpoint {checkpoint.checkpoint_seq} by {checkpoint.agent_id}, "
        f"{checkpoint.created_at:%Y-%m-%d %H:%M:%S} UTC{expires}"
    )
    click.echo(json.dumps(checkpoint.state, indent=2, ensure_ascii=False))
