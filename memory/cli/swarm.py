"""``memctl swarm``: the swarm bus from the shell (keys, access, tasks, escalations, scan,
health). A thin client of :mod:`memory.swarm`; every rule lives there.

The bus is chosen by ``--redis-url`` (``$MEMORY_SWARM_REDIS_URL``), ``--swarm``
(``$MEMORY_SWARM``), ``--agent`` (``$MEMORY_SWARM_AGENT``, default ``memctl``), ``--key``
(``$MEMORY_SWARM_KEY``: the agent's private key file, which signs what it writes) and
``--prefix`` (``$MEMORY_SWARM_PREFIX``).
"""

from __future__ import annotations

import importlib
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import click

from memory import InvalidInputError
from memory.cli.common import echo_json, json_option, text_argument

if TYPE_CHECKING:
    from memory.swarm import SwarmBus, Task

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


@click.group("swarm")
@click.option(
    "--redis-url",
    envvar="MEMORY_SWARM_REDIS_URL",
    default=DEFAULT_REDIS_URL,
    show_default=True,
    help="redis://[user:password@]host:port/db, or rediss:// for TLS.",
)
@click.option("--swarm", "swarm_id", envvar="MEMORY_SWARM", default=None, help="The swarm id.")
@click.option("--agent", envvar="MEMORY_SWARM_AGENT", default="memctl", show_default=True)
@click.option(
    "--key",
    "key_file",
    envvar="MEMORY_SWARM_KEY",
    default=None,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The agent's Ed25519 private key (PEM), to sign what this command writes.",
)
@click.option("--prefix", envvar="MEMORY_SWARM_PREFIX", default="", help="Key prefix.")
@click.pass_context
def swarm_group(
    context: click.Context,
    redis_url: str,
    swarm_id: str | None,
    agent: str,
    key_file: Path | None,
    prefix: str,
) -> None:
    """The swarm bus on Redis: keys, access, tasks, escalations, scan, health."""
    context.obj = {**(context.obj or {}), "swarm": (redis_url, swarm_id, agent, key_file, prefix)}


def _swarm() -> ModuleType:
    """``memory.swarm``, imported when a swarm command runs: it needs the ``swarm`` extra
    (redis-py, cryptography), and ``memctl`` must work without it."""
    try:
        return importlib.import_module("memory.swarm")
    except ImportError as error:
        raise click.ClickException(
            f"memctl swarm needs the package {error.name!r}: pip install 'tiered-memory[swarm]'"
        ) from None


@contextmanager
def _bus(context: click.Context) -> Iterator[SwarmBus]:
    redis_url, swarm_id, agent, key_file, prefix = context.obj["swarm"]
    if swarm_id is None:
        raise click.UsageError("--swarm (or $MEMORY_SWARM) is required")
    swarm = _swarm()
    key = swarm.AgentKey.load(key_file.read_bytes()) if key_file is not None else None
    bus: SwarmBus = swarm.SwarmBus.open(redis_url, swarm_id, agent, key=key, prefix=prefix)
    try:
        yield bus
    finally:
        bus.close()


def _say(as_json: bool, document: Any, text: str) -> None:
    echo_json(document) if as_json else click.echo(text)


def _task_lines(task: Task) -> Iterator[str]:
    yield f"task {task.id} ({task.type}) in swarm {task.swarm}: {task.status.value}"
    yield f"  description: {task.description}"
    if task.assignee:
        yield f"  assignee: {task.assignee} (claimed {task.claims} time(s))"
    if task.result is not None:
        yield f"  result: {json.dumps(task.result, ensure_ascii=False)}"
    yield f"  tracking id: {task.envelope.tracking_id}"
    for entry in task.envelope.chain_of_custody:
        signed = "signed" if entry.signature else "UNSIGNED"
        yield f"  {entry.at}  {entry.agent:<20} {entry.action.value:<8} {signed}"


# -- keys -----------------------------------------------------------------------------------------


@swarm_group.group("keys")
def keys_group() -> None:
    """Agents' Ed25519 keys: generate one, register public keys in the swarm's registry."""


@keys_group.command("generate")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@json_option
def keys_generate(path: Path, as_json: bool) -> None:
    """Write a new private key to PATH (mode 0600, never overwritten); print its public key."""
    key = _swarm().AgentKey.generate()
    # O_EXCL: an existing key file is an agent's identity; replacing it is never a side effect.
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as file:
        file.write(key.pem())
    echo_json({"path": path, "public_key": key.public_key}) if as_json else click.echo(
        key.public_key
    )


@keys_group.command("public")
@click.argument("path", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@json_option
def keys_public(path: Path, as_json: bool) -> None:
    """Print the public key of the private key in PATH."""
    public_key = _swarm().AgentKey.load(path.read_bytes()).public_key
    echo_json({"path": path, "public_key": public_key}) if as_json else click.echo(public_key)


@keys_group.command("add")
@click.argument("agent")
@click.argument("public_key")
@click.option("--role", default="worker", show_default=True)
@click.pass_context
@json_option
def keys_add(context: click.Context, agent: str, public_key: str, role: str, as_json: bool) -> None:
    """Register AGENT's PUBLIC_KEY (base64, from `keys generate`) in the swarm."""
    with _bus(context) as bus:
        bus.register_agent(agent, public_key, role)
        _say(
            as_json,
            {"registered": agent, "role": role, "swarm": bus.swarm},
            f"registered {agent} ({role}) in swarm {bus.swarm}",
        )


@keys_group.command("remove")
@click.argument("agent")
@click.pass_context
@json_option
def keys_remove(context: click.Context, agent: str, as_json: bool) -> None:
    """Remove AGENT from the swarm: what it signs stops verifying."""
    with _bus(context) as bus:
        bus.unregister_agent(agent)
        _say(
            as_json,
            {"removed": agent, "swarm": bus.swarm},
            f"removed {agent} from swarm {bus.swarm}",
        )


@keys_group.command("list")
@click.pass_context
@json_option
def keys_list(context: click.Context, as_json: bool) -> None:
    """The swarm's registry: agents, roles and keys; readers; artifacts."""
    with _bus(context) as bus:
        registry = bus.registry(fresh=True)
    if as_json:
        echo_json(registry)
        return
    for agent, (role, public_key) in sorted(registry.agents.items()):
        click.echo(f"{agent}\t{role}\t{public_key}")
    for reader in sorted(registry.readers):
        click.echo(f"reader\t{reader}")
    for name, uri in sorted(registry.artifacts.items()):
        click.echo(f"artifact\t{name}\t{uri}")


# -- access ---------------------------------------------------------------------------------------


@swarm_group.command("allow")
@click.argument("reader")
@click.pass_context
@json_option
def allow(context: click.Context, reader: str, as_json: bool) -> None:
    """Let agents of swarm READER read this swarm's tasks, findings and context."""
    with _bus(context) as bus:
        bus.allow_reader(reader)
        _say(
            as_json,
            {"swarm": bus.swarm, "reader": reader, "allowed": True},
            f"swarm {reader} may read swarm {bus.swarm}",
        )


@swarm_group.command("disallow")
@click.argument("reader")
@click.pass_context
@json_option
def disallow(context: click.Context, reader: str, as_json: bool) -> None:
    """Withdraw `allow READER`."""
    with _bus(context) as bus:
        bus.disallow_reader(reader)
        _say(
            as_json,
            {"swarm": bus.swarm, "reader": reader, "allowed": False},
            f"swarm {reader} may no longer read swarm {bus.swarm}",
        )


# -- tasks ----------------------------------------------------------------------------------------


@swarm_group.group("task")
def task_group() -> None:
    """Queue a task, show one with its chain of custody."""


@task_group.command("create")
@click.argument("description")
@click.option("--data", default="null", metavar="JSON|@FILE|-", help="The task's data, as JSON.")
@click.option("--type", "type_", default="task", show_default=True)
@click.pass_context
@json_option
def task_create(
    context: click.Context, description: str, data: str, type_: str, as_json: bool
) -> None:
    """Queue a task for the swarm's workers; print its id."""
    try:
        parsed: Any = json.loads(text_argument(data, "--data"))
    except ValueError as error:
        raise InvalidInputError(f"--data: not valid JSON ({error})") from None
    with _bus(context) as bus:
        task = bus.create_task(description, parsed, type_)
    echo_json(task) if as_json else click.echo(task.id)


@task_group.command("show")
@click.argument("task_id")
@click.pass_context
@json_option
def task_show(context: click.Context, task_id: str, as_json: bool) -> None:
    """A task, verified, with who did what to it."""
    with _bus(context) as bus:
        task = bus.check_task_status(task_id)
    if as_json:
        echo_json(task)
        return
    for line in _task_lines(task):
        click.echo(line)


# -- escalations ----------------------------------------------------------------------------------


@swarm_group.group("escalations")
def escalations_group() -> None:
    """What the swarm asks a person: list, resolve."""


@escalations_group.command("list")
@click.option("--all", "include_resolved", is_flag=True, help="Resolved ones too.")
@click.pass_context
@json_option
def escalations_list(context: click.Context, include_resolved: bool, as_json: bool) -> None:
    """The swarm's open escalations (with --all, resolved ones too), oldest first."""
    with _bus(context) as bus:
        found = bus.escalations(include_resolved)
    if as_json:
        echo_json(found)
        return
    for escalation in found:
        click.echo(
            f"{escalation.id}\t{escalation.status}\t{escalation.cause}\ttask {escalation.task}\t"
            f"by {escalation.raised_by}\t{escalation.reason}"
        )
        if escalation.resolution is not None:
            click.echo(f"\tresolved by {escalation.resolved_by}: {escalation.resolution}")
    if not found:
        click.echo("no escalations")


@escalations_group.command("resolve")
@click.argument("escalation_id")
@click.argument("resolution")
@click.pass_context
@json_option
def escalations_resolve(
    context: click.Context, escalation_id: str, resolution: str, as_json: bool
) -> None:
    """Resolve an open escalation with RESOLUTION, as --agent."""
    with _bus(context) as bus:
        resolved = bus.resolve_escalation(escalation_id, resolution)
    _say(as_json, resolved, f"resolved {resolved.id} (task {resolved.task})")


# -- scan and health ------------------------------------------------------------------------------


@swarm_group.command("scan")
@click.option("--clean", is_flag=True, help="Delete wrong types and schema violations; set TTLs.")
@click.option("--type", "scan_type", default="full", show_default=True, help="Recorded as.")
@click.pass_context
@json_option
def scan(context: click.Context, clean: bool, scan_type: str, as_json: bool) -> None:
    """Walk the bus's keys; exit 1 if something is wrong and was not fixed."""
    with _bus(context) as bus:
        report = bus.scan(clean=clean, scan_type=scan_type)
    if as_json:
        echo_json(report)
        if any(issue.fixed is None for issue in report.issues):
            raise SystemExit(1)
        return
    kinds = ", ".join(f"{kind} {count}" for kind, count in sorted(report.kinds.items()))
    click.echo(
        f"scanned {report.scanned} keys ({kinds or 'none'}); recorded at {report.recorded_at}"
    )
    for issue in report.issues:
        fixed = f" -> {issue.fixed}" if issue.fixed else ""
        click.echo(f"  {issue.key}: {issue.problem}{fixed}")
    if any(issue.fixed is None for issue in report.issues):
        raise SystemExit(1)


@swarm_group.command("health")
@click.pass_context
@json_option
def health(context: click.Context, as_json: bool) -> None:
    """Ping Redis and report on the bus; exit 1 if there are problems."""
    with _bus(context) as bus:
        report = bus.health_check()
    if as_json:
        echo_json(report)
        if report.problems:
            raise SystemExit(1)
        return
    click.echo(
        f"redis {report.redis_version}, round trip {report.round_trip_ms} ms, "
        f"AOF {'on' if report.aof_enabled else 'off'}; queue {report.queue_length}, "
        f"pending {report.pending}, open escalations {report.open_escalations}, "
        f"agents {report.agents_registered}"
    )
    for problem in report.problems:
        click.echo(f"  problem: {problem}")
    if report.problems:
        raise SystemExit(1)
