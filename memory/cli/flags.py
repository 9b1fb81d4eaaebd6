"""``memctl flags``: what an operator runs to roll a feature out, and back.

Each command calls one function of :mod:`memory.ops` (``memory/ops/flags.py``), where the
rules live: the state is in the memory database, every change is audited with who
(``--actor``, default ``$USER``), when, old, new and why, and raising a rollout is held by
the gates. A rollback starts with ``memctl flags reset``.
"""

from __future__ import annotations

import getpass
import json
import os
import re
from collections.abc import Callable
from datetime import timedelta
from typing import Any, TypeVar

import click

from memory import ops as ops
from memory.cli.common import database_url, echo_json, json_option
from memory.cli.gates import gate_options, gate_source_options, gate_table

F = TypeVar("F", bound=Callable[..., Any])

# ASCII digits only (\d and int() also take other scripts' digits).
_DURATION = re.compile(r"([0-9]+)\s*([smhd])", re.ASCII)


class _Percentage(click.ParamType[int]):
    """A whole percentage written in ASCII digits (click's int takes "٥٠" as 50)."""

    name = "N"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        text = str(value).strip()
        if not re.fullmatch(r"-?[0-9]+", text, re.ASCII):
            self.fail(f"{value!r} is not a whole number in ASCII digits", param, ctx)
        return int(text)

_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def _operator() -> str:
    try:
        return os.environ.get("USER") or getpass.getuser()
    except (KeyError, OSError):  # no user name anywhere: make the operator say who they are
        return ""


def _change_options(command: F) -> F:
    """``--reason`` and ``--actor`` for every command that changes a flag."""
    command = click.option(
        "--actor",
        default=_operator,
        show_default="$USER",
        help="Who makes the change, for the audit.",
    )(command)
    return click.option("--reason", default=None, help="Why, for the audit.")(command)


def _duration(text: str | None) -> timedelta | None:
    if text is None:
        return None
    match = _DURATION.fullmatch(text.strip().lower())
    if match is None:
        raise click.BadParameter(
            f"{text!r} is not a duration: use a whole number with s, m, h or d, such as 30m",
            param_hint="--ttl",
        )
    return timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})


def _state(flag: ops.StoredFlag) -> str:
    if not flag.stored:
        return f"{'on' if flag.enabled else 'off'} (default)"
    if not flag.enabled:
        return "off (kill switch)"
    return "on" if flag.rollout == 100 else f"rollout {flag.rollout}%"


def _listing(listed: ops.ListedFlag) -> list[str]:
    flag, environment = listed.flag, listed.environment
    if environment is None:
        lines = [f"{flag.name}: {_state(flag)}  [source: {listed.source}]"]
    else:
        enabled, rollout = listed.effective
        here = "off" if not enabled else ("on" if rollout == 100 else f"rollout {rollout}%")
        lines = [
            f"{flag.name}: {here}  [source: environment]",
            f"  environment: {flag.name}={environment!r} overrides the database here "
            f"(database: {_state(flag)})",
        ]
    if flag.updated_by is not None and flag.updated_at is not None:
        lines.append(f"  changed by {flag.updated_by} at {flag.updated_at.isoformat()}")
    lines.append(f"  parent: {flag.parent or '-'}  stickiness: {flag.stickiness}")
    lines.append(
        f"  allow: {', '.join(flag.allowed_agents) or '-'}  "
        f"deny: {', '.join(flag.denied_agents) or '-'}"
    )
    for override in flag.overrides:
        until = override.expires_at.isoformat() if override.expires_at else "cleared"
        lines.append(
            f"  override: session {override.session_id} "
            f"{'on' if override.enabled else 'off'} until {until}"
        )
    return lines


@click.group(name="flags")
def flags_group() -> None:
    """Feature flags: list, switch, roll out, override, audit, explain, reset."""


@flags_group.command(name="list")
@json_option
@click.pass_context
def list_flags(context: click.Context, as_json: bool) -> None:
    """Every flag: state, rollout, overrides, allow/deny lists and where its state comes from
    (environment of this shell, database, or built-in default)."""
    listing = ops.list_flags(database_url(context, existing=True))
    for warning in listing.warnings:
        click.echo(f"warning: {warning}; it is ignored", err=True)
    if as_json:
        document = [
            {
                **listed.flag.as_dict(),
                "environment": listed.environment,
                "effective": dict(zip(("enabled", "rollout"), listed.effective, strict=True)),
            }
            for listed in listing.flags
        ]
        click.echo(json.dumps(document, indent=2, ensure_ascii=False))
        return
    for listed in listing.flags:
        click.echo("\n".join(_listing(listed)))


@flags_group.command(name="set")
@click.argument("name")
@click.option("--on/--off", "on", default=None, help="On for everyone, or the kill switch.")
@click.option(
    "--rollout", type=_Percentage(), default=None, metavar="N", help="On for N % (0..100)."
)
@_change_options
@click.option("--force", is_flag=True, help="Raise past a failing or skipped gate (audited).")
@gate_source_options
@json_option
@click.pass_context
def set_flag(
    context: click.Context,
    /,
    name: str,
    on: bool | None,
    rollout: int | None,
    reason: str | None,
    actor: str,
    force: bool,
    as_json: bool,
    **gate_source: Any,
) -> None:
    """Switch NAME on or off, or roll it out to N percent of users (sessions for a
    session-sticky flag).

    Raising a rollout moves one stage at a time (10 -> 50 -> 100 %) and only when the
    current stage's gate is GO (memctl gates; give --prometheus or --snapshot)."""
    try:
        change = ops.set_flag(
            database_url(context, existing=True), name, on=on, rollout=rollout, actor=actor,
            reason=reason, force=force, gate=gate_options(gate_source),
        )
    except ops.RefusedError as error:
        if error.report is not None:
            click.echo(gate_table(error.report), err=True)
        raise
    if change.gate_report is not None:
        click.echo(gate_table(change.gate_report), err=True)
    if as_json:
        echo_json({**change.flag.as_dict(), "note": change.note})
        return
    click.echo(f"{change.flag.name}: {_state(change.flag)}")
    if change.note is not None:
        click.echo(f"  ({change.note}; recorded in the audit)")


@flags_group.command()
@click.argument("name")
@click.option("--session", required=True, help="The session to override.")
@click.option("--on/--off", "on", default=None, help="Force the flag on or off.")
@click.option("--clear", is_flag=True, help="Remove the session's override.")
@click.option("--ttl", default=None, metavar="DURATION", help="Expire after, e.g. 30m, 2h, 7d.")
@_change_options
@json_option
@click.pass_context
def override(
    context: click.Context,
    name: str,
    session: str,
    on: bool | None,
    clear: bool,
    ttl: str | None,
    reason: str | None,
    actor: str,
    as_json: bool,
) -> None:
    """Force NAME on or off for one session (until --ttl passes), or --clear it."""
    flag = ops.override_flag(
        database_url(context, existing=True), name, session=session, on=on, clear=clear,
        ttl=_duration(ttl), actor=actor, reason=reason,
    )
    if as_json:
        echo_json(flag.as_dict())
    elif on is None:
        click.echo(f"{name}: override of session {session} cleared")
    else:
        until = f" for {ttl}" if ttl else " until cleared"
        click.echo(f"{name}: session {session} forced {'on' if on else 'off'}{until}")


def _agent_command(verb: str, change: Callable[..., ops.StoredFlag]) -> click.Command:

    @click.argument("name")
    @click.option("--agent", required=True, help="The agent id.")
    @click.option("--remove", is_flag=True, help=f"Take the agent off the {verb} list.")
    @_change_options
    @json_option
    @click.pass_context
    def command(
        context: click.Context,
        name: str,
        agent: str,
        remove: bool,
        reason: str | None,
        actor: str,
        as_json: bool,
    ) -> None:
        flag = change(
            database_url(context, existing=True), name, agent, remove=remove, actor=actor,
            reason=reason,
        )
        if as_json:
            echo_json(flag.as_dict())
            return
        listed = flag.allowed_agents if verb == "allow" else flag.denied_agents
        click.echo(f"{flag.name}: {verb} list: {', '.join(listed) or '-'}")

    command.__doc__ = (
        "Always turn NAME on for an agent (the deny list still wins)."
        if verb == "allow"
        else "Always turn NAME off for an agent, whatever else says on."
    )
    return click.command(name=verb)(command)


flags_group.add_command(_agent_command("allow", ops.allow_agent))
flags_group.add_command(_agent_command("deny", ops.deny_agent))


def _audit_line(entry: ops.FlagAuditEntry) -> str:
    def show(value: Any) -> str:
        return "-" if value is None else json.dumps(value, sort_keys=True, ensure_ascii=False)

    line = (
        f"{entry.id} {entry.at.isoformat()} {entry.actor} {entry.action} {entry.flag}: "
        f"{show(entry.old)} -> {show(entry.new)}"
    )
    return f"{line}  ({entry.reason})" if entry.reason else line


@flags_group.command()
@click.argument("name", required=False)
@click.option("--limit", type=click.IntRange(1, 10_000), default=50, show_default=True)
@json_option
@click.pass_context
def audit(context: click.Context, name: str | None, limit: int, as_json: bool) -> None:
    """The newest flag changes (of NAME only, when given), newest first."""
    entries = ops.audit_flags(database_url(context, existing=True), name, limit=limit)
    if as_json:
        click.echo(json.dumps([e.as_dict() for e in entries], indent=2, ensure_ascii=False))
    elif not entries:
        click.echo("no flag changes recorded")
    else:
        click.echo("\n".join(_audit_line(entry) for entry in entries))


@flags_group.command()
@_change_options
@json_option
@click.pass_context
def reset(context: click.Context, reason: str | None, actor: str, as_json: bool) -> None:
    """Every flag back to its built-in default (off), lists and overrides removed: the first
    step of every rollback."""
    names = ops.reset_flags(database_url(context, existing=True), actor=actor, reason=reason)
    if as_json:
        echo_json({"reset": names})
    elif names:
        click.echo(f"reset to defaults: {', '.join(names)}")
    else:
        click.echo("every flag was already at its default")


@flags_group.command()
@click.argument("name")
@click.option("--user", default=None, help="User id of the context.")
@click.option("--session", default=None, help="Session id of the context.")
@click.option("--agent", default=None, help="Agent id of the context.")
@json_option
@click.pass_context
def explain(
    context: click.Context,
    name: str,
    user: str | None,
    session: str | None,
    agent: str | None,
    as_json: bool,
) -> None:
    """Which rule decides NAME for this user, session and agent, as an agent on this host
    (same environment) would evaluate it now; the last line says enabled or disabled."""
    decision = ops.explain_flag(
        database_url(context, existing=True), name, user=user, session=session, agent=agent
    )
    verdict = "enabled" if decision.enabled else "disabled"
    if as_json:
        document = {
            "flag": name,
            "context": {"user": user, "session": session, "agent": agent},
            "rule": decision.rule.value,
            "detail": decision.detail,
            "enabled": decision.enabled,
        }
        click.echo(json.dumps(document, indent=2, ensure_ascii=False))
        return
    click.echo(f"flag: {name}")
    click.echo(f"context: user={user or '-'} session={session or '-'} agent={agent or '-'}")
    click.echo(f"rule: {decision.rule.value}: {decision.detail}")
    click.echo(verdict)
