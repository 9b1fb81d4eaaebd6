"""``memctl keys``: API keys of the hub service (``memctl serve``): create, revoke, list."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import click

from memory import ops as ops
from memory.cli.common import database_url, echo_json, json_option, plural


def _key_line(key: ops.ApiKey) -> str:
    users = ",".join(key.users) if key.users else "any user"
    if key.revoked_at is not None:
        status = f"revoked {key.revoked_at:%Y-%m-%d %H:%M}"
    elif key.expires_at is not None and key.expires_at <= datetime.now(UTC):
        status = f"expired {key.expires_at:%Y-%m-%d %H:%M}"
    else:
        status = "active"
    used = f"{key.last_used_at:%Y-%m-%d %H:%M} UTC" if key.last_used_at else "never"
    return f"{key.key_id}\t{key.agent}\t{users}\t{key.role}\t{status}\tlast used {used}"


@click.group("keys")
def keys_group() -> None:
    """API keys of `memctl serve`: the identity every request acts with."""


@keys_group.command("create")
@click.option("--agent", required=True, help="The agent every request with the key acts as.")
@click.option(
    "--user", "users", multiple=True, help="A user the key may act for (repeat; none: any user)."
)
@click.option(
    "--role",
    type=click.Choice(["agent", "admin"]),
    default="agent",
    show_default=True,
    help="admin: may also act as any agent and use the admin verbs.",
)
@click.option(
    "--expires", type=click.DateTime(), default=None, help="Expiry (UTC); default: until revoked."
)
@json_option
@click.pass_context
def create(
    context: click.Context,
    agent: str,
    users: tuple[str, ...],
    role: Any,
    expires: datetime | None,
    as_json: bool,
) -> None:
    """Create a key; its secret is printed once and only its hash is stored."""
    created = ops.create_key(
        database_url(context, existing=True),
        agent,
        users=users,
        role=role,
        expires_at=expires.replace(tzinfo=UTC) if expires is not None else None,
    )
    if as_json:
        echo_json({"key": created.key, "secret": created.secret})
        return
    click.echo(_key_line(created.key))
    click.echo(f"secret (shown once, store it now): {created.secret}")


@keys_group.command("revoke")
@click.argument("key_id")
@json_option
@click.pass_context
def revoke(context: click.Context, key_id: str, as_json: bool) -> None:
    """Revoke the key KEY_ID: every later request with it is refused."""
    key = ops.revoke_key(database_url(context, existing=True), key_id)
    if as_json:
        echo_json(key)
        return
    click.echo(_key_line(key))


@keys_group.command("list")
@json_option
@click.pass_context
def list_(context: click.Context, as_json: bool) -> None:
    """Every key with its agent, users, role, status and last use (never the secret)."""
    keys = ops.list_keys(database_url(context, existing=True))
    if as_json:
        echo_json(keys)
        return
    if not keys:
        click.echo("no API keys; create one with: memctl keys create --agent NAME", err=True)
        return
    for key in keys:
        click.echo(_key_line(key))
    click.echo(plural(len(keys), "key"), err=True)
