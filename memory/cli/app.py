"""``memctl``: the operator's command line for the memory store.

Every command reads the database URL from ``--database-url`` or ``$MEMORY_DATABASE_URL``
(default: ``memory.db`` in the working directory). Errors print one line naming the problem
and exit 1; ``memctl check`` exits 1 when the schema is not at head.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any, cast

import click

from memory import MemoryRecord
from memory import ops as ops
from memory.cli.common import database_url, memory_handle, reports_errors, scope_options
from memory.cli.demo import run_demo
from memory.cli.events import register_event_commands
from memory.cli.flags import flags_group
from memory.cli.gates import gates_command
from memory.cli.health import health
from memory.cli.sharing import register as register_sharing_commands
from memory.cli.swarm import swarm_group
from memory.cli.workload import workload


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--database-url",
    envvar=ops.DATABASE_URL_ENV,
    default=None,
    metavar="URL",
    help=f"sqlite:///path or postgresql://… (default: ${ops.DATABASE_URL_ENV}, else memory.db).",
)
@click.pass_context
def main(context: click.Context, database_url: str | None) -> None:
    """Operate a tiered-memory store: migrate, roll back, inspect, import and export."""
    context.obj = {"database_url": database_url}


@main.command()
@click.option("--to", "revision", default="head", show_default=True, help="Target revision.")
@click.pass_context
@reports_errors
def migrate(context: click.Context, revision: str) -> None:
    """Upgrade the schema (one transaction; concurrent runs wait for each other)."""
    migration = ops.migrate(database_url(context), revision)
    if migration.changed:
        click.echo(f"migrated: {migration.before or 'empty'} -> {migration.after}")
    else:
        click.echo(f"already at {migration.after}; nothing to do")


@main.command()
@click.option(
    "--to",
    "revision",
    default="-1",
    show_default=True,
    help="Target revision (default: one revision back; 'base' removes everything).",
)
@click.option(
    "--archive",
    "archive_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where dropped tables' rows are archived "
    "(default: ./memory-archive-<revision>-<UTC time>).",
)
@click.pass_context
@reports_errors
def rollback(context: click.Context, revision: str, archive_dir: Path | None) -> None:
    """Downgrade the schema; rows of dropped tables are archived first, never lost."""
    done = ops.rollback(database_url(context), revision, archive_dir)
    click.echo(f"rolled back: {done.before} -> {done.after or 'empty'}")
    if done.archive is not None:
        click.echo(f"archive: {done.archive} (restore with: memctl restore-archive {done.archive})")


@main.command()
@click.pass_context
@reports_errors
def current(context: click.Context) -> None:
    """Print the database's schema revision."""
    status = ops.current(database_url(context))
    suffix = " (head)" if status.at_head else f" (head is {status.head})"
    click.echo(f"{status.revision or 'empty'}{suffix}")


@main.command()
@click.pass_context
@reports_errors
def history(context: click.Context) -> None:
    """List every revision, oldest first; marks the database's current one."""
    status = ops.current(database_url(context))
    for item in status.revisions:
        marker = "*" if item.revision == status.revision else " "
        click.echo(f"{marker} {item.revision}  {item.description.splitlines()[0]}")


@main.command()
@click.pass_context
@reports_errors
def check(context: click.Context) -> None:
    """Exit 0 when the schema is at head, 1 otherwise."""
    try:
        status = ops.check(database_url(context))
    except ops.NotAtHeadError as error:
        click.echo(f"NOT AT HEAD: {error}", err=True)
        sys.exit(1)
    click.echo(f"ok: at head {status.head}")


@main.command("restore-archive")
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.pass_context
@reports_errors
def restore_archive_command(context: click.Context, directory: Path) -> None:
    """Verify an archive written by `rollback` and restore its rows (all or nothing)."""
    restored = ops.restore_archive(database_url(context), directory)
    for table, rows in restored.items():
        click.echo(f"restored {rows} rows into {table}")


def _echo_backup(info: ops.BackupInfo) -> None:
    click.echo(
        f"  backend {info.backend}, method {info.method}, revision {info.revision}, "
        f"taken {info.created_at:%Y-%m-%d %H:%M:%S} UTC, {info.size_bytes / 1e6:.1f} MB"
    )
    width = max((len(name) for name in info.tables), default=0)
    for name, checksum in sorted(info.tables.items()):
        click.echo(f"  {name:<{width}}  {checksum.rows:>10} rows  sha256 {checksum.sha256[:16]}")


@main.command("backup")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--verify",
    "verify_only",
    is_flag=True,
    help="Check the backup in DIRECTORY (files, checksums, readability) instead of taking one.",
)
@click.option(
    "--method",
    type=click.Choice(ops.BACKUP_METHODS),
    default="auto",
    show_default=True,
    help="auto: the SQLite backup API, or pg_dump when it is at least the server's version, "
    "else logical (JSON Lines per table, restorable into either backend).",
)
@click.pass_context
@reports_errors
def backup_command(context: click.Context, directory: Path, verify_only: bool, method: str) -> None:
    """Back up the database into DIRECTORY (new or empty) while agents keep writing."""
    if verify_only:
        info = ops.verify_backup(directory)
        click.echo(f"backup ok: {directory} matches its manifest")
    else:
        info = ops.backup(
            database_url(context), directory, method=cast(ops.BackupMethod, method)
        )
        click.echo(f"backup written: {directory}")
    _echo_backup(info)


@main.command("restore")
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.pass_context
@reports_errors
def restore_command(context: click.Context, directory: Path) -> None:
    """Restore a backup into the (empty) database and verify it against the manifest."""
    result = ops.restore_backup(database_url(context), directory)
    click.echo(
        f"restored {directory} into {result.backend}: {result.rows} rows in "
        f"{len(result.tables)} tables, revision {result.backup.revision}"
    )
    click.echo("verified: every table's row count and checksum and the revision match the manifest")


@main.command("import-mcp")
@click.argument("file", type=click.File("r", encoding="utf-8"))
@click.option("--user", required=True, help="The user whose graph receives the entities.")
@click.pass_context
@reports_errors
def import_mcp(context: click.Context, file: Any, user: str) -> None:
    """Import an MCP memory server memory.jsonl file ('-' reads standard input)."""
    with memory_handle(context) as memory:
        entities, relations = memory.graph(user).import_jsonl(file)
    click.echo(f"imported {entities} entities and {relations} relations for {user}")


@main.command("export-mcp")
@click.option("--user", required=True, help="The user whose graph is exported.")
@click.option(
    "--output",
    type=click.File("w", encoding="utf-8"),
    default="-",
    help="File to write (default: standard output).",
)
@click.pass_context
@reports_errors
def export_mcp(context: click.Context, user: str, output: Any) -> None:
    """Export a user's entity graph as MCP memory server memory.jsonl lines."""
    with memory_handle(context) as memory:
        for line in memory.graph(user).export_jsonl():
            output.write(line + "\n")


@main.command()
@click.option(
    "--database",
    "path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="SQLite file to create (default: a new temporary file).",
)
@reports_errors
def demo(path: Path | None) -> None:
    """Walk through the store on a fresh SQLite file and print what it stored."""
    run_demo(path, click.echo)


@main.command()
@click.option("--dry-run", is_flag=True, help="Count what would change; change nothing.")
@click.option(
    "--working-hours",
    type=click.FloatRange(min=0),
    default=None,
    metavar="N",
    help="Keep working memories for N hours (default: 24).",
)
@click.option(
    "--session-state-hours",
    type=click.FloatRange(min=0),
    default=None,
    metavar="N",
    help="Keep session checkpoints for N hours (default: 24).",
)
@click.option(
    "--summarize/--no-summarize",
    default=True,
    show_default=True,
    help="Consolidate old working memories into episodic summaries before removing them.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON object.")
@click.pass_context
@reports_errors
def cleanup(
    context: click.Context,
    dry_run: bool,
    working_hours: float | None,
    session_state_hours: float | None,
    summarize: bool,
    as_json: bool,
) -> None:
    """Enforce retention once: remove expired memories, consolidate working memories older
    than the window into episodic summaries, remove old session state. Prints the rows
    changed per step; the run is recorded for `memctl health`."""
    policy = ops.RetentionPolicy(
        tiers={} if working_hours is None else {"working": timedelta(hours=working_hours)},
        session_state=ops.DEFAULT_SESSION_STATE_WINDOW
        if session_state_hours is None
        else timedelta(hours=session_state_hours),
        summarize=summarize,
    )
    with memory_handle(context) as memory:
        report = ops.cleanup(memory, policy, dry_run=dry_run)
    if as_json:
        click.echo(json.dumps(report.as_dict()))
        return
    if dry_run:
        click.echo("dry run, nothing changed; a cleanup would change:")
    else:
        click.echo(f"cleanup {report.status} (run {report.run_id}):")
    width = max(len(name) for name in report.counts)
    for name, count in report.counts.items():
        click.echo(f"  {name:<{width}}  {count}")


# -- memories from the shell: add, search, inject, reembed -----------------------------------


def _record_json(record: MemoryRecord) -> dict[str, Any]:
    data = dataclasses.asdict(record)
    for key in ("created_at", "updated_at", "last_accessed_at", "expires_at"):
        data[key] = data[key].isoformat() if data[key] is not None else None
    return data


@main.command()
@click.argument("text")
@scope_options
@click.option(
    "--tier",
    type=click.Choice(["working", "episodic", "semantic"]),
    default="working",
    show_default=True,
)
@click.option("--importance", type=float, default=0.5, show_default=True)
@click.option("--metadata", default=None, metavar="JSON", help="A JSON object of metadata.")
@click.option("--json", "as_json", is_flag=True, help="Print the stored memory as JSON.")
@click.pass_context
@reports_errors
def add(
    context: click.Context,
    text: str,
    user: str,
    agent: str,
    session: str | None,
    tier: Any,  # one of the tiers: click.Choice checked it
    importance: float,
    metadata: str | None,
    as_json: bool,
) -> None:
    """Store TEXT as a memory (the same content in the same scope is stored once)."""
    try:
        extra = json.loads(metadata) if metadata is not None else {}
    except ValueError as error:
        raise click.BadParameter(f"not JSON: {error}", param_hint="--metadata") from error
    if not isinstance(extra, dict):
        raise click.BadParameter("must be a JSON object", param_hint="--metadata")
    with memory_handle(context) as memory:
        record = memory.scope(user, agent, session).add(
            text,
            tier=tier,
            importance=importance,
            metadata=extra,
        )
    if as_json:
        click.echo(json.dumps(_record_json(record), ensure_ascii=False))
    else:
        click.echo(f"memory {record.id} ({record.tier}, version {record.version})")


@main.command()
@click.argument("query")
@scope_options
@click.option(
    "--tier",
    "tiers",
    multiple=True,
    type=click.Choice(["working", "episodic", "semantic"]),
    help="Repeatable.",
)
@click.option("--limit", type=int, default=10, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per hit.")
@click.pass_context
@reports_errors
def search(
    context: click.Context,
    query: str,
    user: str,
    agent: str,
    session: str | None,
    tiers: tuple[Any, ...],  # tiers, checked by click.Choice
    limit: int,
    as_json: bool,
) -> None:
    """Find the memories most relevant to QUERY (hybrid keyword and vector search)."""
    with memory_handle(context) as memory:
        hits = memory.scope(user, agent).search(
            query,
            limit=limit,
            tiers=tiers,
            session=session,
        )
    for hit in hits:
        if as_json:
            click.echo(
                json.dumps(
                    {
                        "score": hit.score,
                        "keyword_score": hit.keyword_score,
                        "vector_score": hit.vector_score,
                        "memory": _record_json(hit.memory),
                    },
                    ensure_ascii=False,
                )
            )
        else:
            click.echo(
                f"{hit.score:.3f}  #{hit.memory.id} {hit.memory.tier:8} {hit.memory.content}"
            )


@main.command()
@click.argument("query")
@scope_options
@click.option("--budget", type=int, default=512, show_default=True, help="Token budget.")
@click.option("--json", "as_json", is_flag=True, help="The structured context as JSON.")
@click.pass_context
@reports_errors
def inject(
    context: click.Context,
    query: str,
    user: str,
    agent: str,
    session: str | None,
    budget: int,
    as_json: bool,
) -> None:
    """Show the context block an agent would get for QUERY, and where each line came from."""
    with memory_handle(context) as memory:
        result = memory.scope(user, agent, session).inject(query, budget_tokens=budget)
    if as_json:
        click.echo(
            json.dumps(
                {
                    "text": result.text,
                    "tokens": result.tokens,
                    "budget": result.budget,
                    "overflow": result.overflow,
                    "left_out": result.left_out,
                    "compacted": list(result.compacted),
                    "promoted": list(result.promoted),
                    "disabled_by": result.disabled_by,
                    "items": [dataclasses.asdict(item) for item in result.items],
                },
                ensure_ascii=False,
            )
        )
        return
    if result.disabled_by is not None:
        where = f"--user {user} --agent {agent}" + (f" --session {session}" if session else "")
        click.echo(
            f"context injection is off for this scope ({result.disabled_by}); "
            f"see: memctl flags explain {result.disabled_by} {where}"
        )
        return
    click.echo(result.text)
    click.echo(
        f"\n-- {result.tokens}/{result.budget} tokens"
        + (f", {result.left_out} left out (overflow)" if result.overflow else "")
    )
    for item in result.items:
        click.echo(f"   [{item.section}] {item.source}  score={item.score}  tokens={item.tokens}")


@main.command()
@click.option("--batch-size", type=click.IntRange(1, 10_000), default=256, show_default=True)
@click.pass_context
@reports_errors
def reembed(context: click.Context, batch_size: int) -> None:
    """Give every memory a vector from the current embedding model, in batches."""
    with memory_handle(context) as memory:
        stale = memory.embeddings_needing_refresh()
        if stale == 0:
            click.echo("every memory has a vector from the current model")
            return
        with click.progressbar(length=stale, label="re-embedding", file=sys.stderr) as bar:
            done = memory.reembed(batch_size=batch_size, progress=bar.update)
    click.echo(f"re-embedded {done} memories")


# -- command groups defined in their own memory/cli/*.py modules -------------------------------

main.add_command(flags_group)
main.add_command(workload)
main.add_command(health)
register_sharing_commands(main)
main.add_command(gates_command)
register_event_commands(main)
main.add_command(swarm_group)
