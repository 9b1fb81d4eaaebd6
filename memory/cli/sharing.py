"""``memctl forget``, ``share``, ``revoke``, ``grants`` and ``team``: sharing and the right to
be forgotten from the shell.

The CLI is an operator's tool: the :mod:`memory.ops` verbs it calls act with the ``admin``
role, and it says so on stderr once per command. ``share`` and ``revoke`` still act as the
agent named by ``--agent``: a grant is always made by the agent that owns what it shares.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import click

from memory import Grant, InvalidInputError
from memory import ops as ops
from memory.cli.common import (
    database_url,
    echo_json,
    json_option,
    scope_options,
)


def _as_admin() -> None:
    click.echo("memctl: acting as admin", err=True)


def _grant_line(grant: Grant) -> str:
    if grant.target == "memory":
        target = f"memory {grant.memory_id}"
    elif grant.target == "tier":
        target = f"tier {grant.tier}"
    else:
        assert grant.tag is not None
        target = f"tag {grant.tag[0]}={json.dumps(grant.tag[1], ensure_ascii=False)}"
    until = grant.expires_at.isoformat() if grant.expires_at else "revoked"
    return (
        f"{grant.id}\t{grant.owner_agent} -> {grant.grantee_type} {grant.grantee}\t{target}\t"
        f"{grant.access}\tuntil {until}"
    )


def _tag(text: str | None) -> tuple[str, Any] | None:
    if text is None:
        return None
    key, separator, value = text.partition("=")
    if not separator:
        raise InvalidInputError(f"--tag: must be KEY=VALUE (VALUE as JSON or text), not {text!r}")
    try:
        return key, json.loads(value)
    except ValueError:
        return key, value


# The exit status of a forget that removed the rows but could not clear their bytes from
# the SQLite files yet (a reader held the WAL): not an error, but not done either.
FORGET_INCOMPLETE_EXIT = 3
_BYTES = {
    True: "the bytes are gone from the database files",
    None: "PostgreSQL keeps the deleted row versions in its files until VACUUM FULL "
    "(see SECURITY.md)",
    False: "INCOMPLETE: a reader holds an old snapshot, so the WAL file still holds the "
    "forgotten rows; stop long-running readers and run this command again",
}


@click.command()
@click.option("--user", required=True, help="The user to forget.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON object.")
@click.pass_context
def forget(context: click.Context, user: str, yes: bool, as_json: bool) -> None:
    """Remove every row of a user in every table and redact their events (admin).

    Exit status 3: the rows are gone, but their bytes are still in the SQLite WAL file."""
    if not yes:
        click.confirm(f"forget user {user!r}: every row of theirs, irrecoverably?", abort=True)
    _as_admin()
    report = ops.forget(database_url(context, existing=True), user)
    if as_json:
        echo_json({"user": user, **report.as_dict()})
    elif not report.found:
        click.echo(f"nothing to forget: user {user!r} has no rows or events in this database")
    else:
        click.echo(
            f"forgot user {user!r}: {report.total} rows removed, "
            f"{report.events_redacted} events redacted"
        )
        for table, count in report.rows.items():
            if count:
                click.echo(f"  {table}: {count}")
    if not as_json:
        click.echo(_BYTES[report.bytes_cleared], err=not report.complete)
    if not report.complete:
        context.exit(FORGET_INCOMPLETE_EXIT)


@click.command()
@scope_options
@click.option("--memory", "memory_id", type=int, default=None, help="Share this memory.")
@click.option("--tag", default=None, metavar="KEY=VALUE", help="Share memories with this tag.")
@click.option(
    "--tier", type=click.Choice(["working", "episodic", "semantic"]), help="Share a whole tier."
)
@click.option("--with-agent", "agents", multiple=True, help="An agent to share with.")
@click.option("--with-team", "teams", multiple=True, help="A team to share with.")
@click.option("--access", type=click.Choice(["read", "write"]), default="read", show_default=True)
@click.option(
    "--until", type=click.DateTime(), default=None, help="Expiry (UTC); default: until revoked."
)
@json_option
@click.pass_context
def share(
    context: click.Context,
    user: str,
    agent: str,
    session: str | None,
    memory_id: int | None,
    tag: str | None,
    tier: Any,
    agents: tuple[str, ...],
    teams: tuple[str, ...],
    access: Any,
    until: datetime | None,
    as_json: bool,
) -> None:
    """Share a memory, a tag or a tier of AGENT's memories with agents or teams."""
    _as_admin()
    grants = ops.share(
        database_url(context, existing=True),
        user,
        agent,
        session,
        memory_id=memory_id,
        tag=_tag(tag),
        tier=tier,
        agents=agents,
        teams=teams,
        access=access,
        expires_at=until.replace(tzinfo=UTC) if until is not None else None,
    )
    if as_json:
        echo_json(grants)
        return
    for grant in grants:
        click.echo(_grant_line(grant))


@click.command()
@scope_options
@click.argument("grant_id", type=int)
@json_option
@click.pass_context
def revoke(
    context: click.Context,
    user: str,
    agent: str,
    session: str | None,
    grant_id: int,
    as_json: bool,
) -> None:
    """Revoke grant GRANT_ID, made by AGENT."""
    _as_admin()
    grant = ops.revoke(database_url(context, existing=True), user, agent, grant_id, session)
    if as_json:
        echo_json(grant)
    else:
        click.echo(f"revoked {_grant_line(grant)}")


@click.command()
@scope_options
@click.option("--received", is_flag=True, help="Grants AGENT holds, not those it made.")
@json_option
@click.pass_context
def grants(
    context: click.Context,
    user: str,
    agent: str,
    session: str | None,
    received: bool,
    as_json: bool,
) -> None:
    """List the live grants AGENT made (or, with --received, holds)."""
    _as_admin()
    found = ops.grants(
        database_url(context, existing=True), user, agent, session, received=received
    )
    if as_json:
        echo_json(found)
        return
    for grant in found:
        click.echo(_grant_line(grant))
    if not found:
        click.echo(f"no live grants {'held by' if received else 'made by'} agent {agent!r}")


@click.command()
@click.option("--user", required=True, help="The user whose team this is.")
@click.argument("name")
@click.argument("agents", nargs=-1)
@json_option
@click.pass_context
def team(
    context: click.Context, user: str, name: str, agents: tuple[str, ...], as_json: bool
) -> None:
    """Make AGENTS the members of team NAME (no agents: dissolve it)."""
    _as_admin()
    ops.set_team(database_url(context, existing=True), user, name, agents)
    if as_json:
        echo_json({"user": user, "team": name, "agents": list(agents)})
    else:
        click.echo(f"team {name}: {', '.join(agents) if agents else '(dissolved)'}")


def register(group: click.Group) -> None:
    """Add these commands to ``memctl`` (``group``)."""
    for command in (forget, share, revoke, grants, team):
        group.add_command(command)
