"""``memctl``: the operator's command line for the memory store.

Every command reads the database URL from ``--database-url`` or ``$MEMORY_DATABASE_URL``
(default: ``memory.db`` in the working directory; a plain path is a SQLite file). Errors
print one line naming the problem and exit 1 (2 for a usage error); ``memctl check`` exits
1 when the schema is not at head. Every command that prints takes ``--json``.
"""

from __future__ import annotations

import dataclasses
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any, cast

import click

from flags import USE_HIERARCHICAL_TIERS
from memory import NotFoundError
from memory import ops as ops
from memory.cli.common import (
    Memctl,
    database_url,
    echo_json,
    json_option,
    memory_handle,
    plural,
    scope_options,
    text_argument,
)
from memory.cli.demo import run_demo
from memory.cli.events import (
    NO_REEMBED,
    register_event_commands,
    replay_progress,
    report_replay,
)
from memory.cli.flags import flags_group
from memory.cli.gates import gates_command
from memory.cli.health import health
from memory.cli.keys import keys_group
from memory.cli.mcp import mcp_command
from memory.cli.memories import (
    TIERS,
    memories,
    metadata_option,
    nothing_found,
    patterns,
    preferences,
    record_json,
    state,
)
from memory.cli.serve import serve
from memory.cli.sharing import register as register_sharing_commands
from memory.cli.swarm import swarm_group
from memory.cli.sync import sync_group
from memory.cli.workload import workload


@click.group(cls=Memctl, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="tiered-memory", prog_name="memctl")
@click.option(
    "--database-url",
    envvar=ops.DATABASE_URL_ENV,
    default=None,
    metavar="URL",
    help=f"sqlite:///path, a plain file path, or postgresql://… "
    f"(default: ${ops.DATABASE_URL_ENV}, else memory.db).",
)
@click.pass_context
def main(context: click.Context, database_url: str | None) -> None:
    """Operate a tiered-memory store.

    \b
    Schema:     migrate, rollback, current, history, check
    Data:       backup, restore, restore-archive, cleanup, forget, reembed
    Memories:   add, search, inject, memories, preferences, patterns, state
    Graph:      import-mcp, export-mcp
    Agents:     mcp (serve MCP hosts: the reference memory server's tools and more),
                swarm (the swarm bus on Redis: tasks, findings, escalations),
                sync (hub-spoke sync: the hub's nodes, conflicts and backlog)
    Sharing:    share, revoke, grants, team
    Events:     record, audit, replay (rebuild a database from the event log), events
                (rotate-key: the event key)
    Rollout:    flags, gates, health, workload
    Service:    serve, keys
    Start here: demo
    """
    context.obj = {"database_url": database_url}


@main.command()
@click.option("--to", "revision", default="head", show_default=True, help="Target revision.")
@json_option
@click.pass_context
def migrate(context: click.Context, revision: str, as_json: bool) -> None:
    """Upgrade the schema (one transaction; concurrent runs wait for each other)."""
    migration = ops.migrate(database_url(context), revision)
    if as_json:
        echo_json(
            {"before": migration.before, "after": migration.after, "changed": migration.changed}
        )
    elif migration.changed:
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
@json_option
@click.pass_context
def rollback(
    context: click.Context, revision: str, archive_dir: Path | None, as_json: bool
) -> None:
    """Downgrade the schema; rows of dropped tables are archived first, never lost."""
    done = ops.rollback(database_url(context, existing=True), revision, archive_dir)
    if as_json:
        echo_json({"before": done.before, "after": done.after, "archive": done.archive})
        return
    click.echo(f"rolled back: {done.before} -> {done.after or 'empty'}")
    if done.archive is not None:
        click.echo(f"archive: {done.archive} (restore with: memctl restore-archive {done.archive})")
    else:
        click.echo("archive: none (no table with rows was dropped)")


@main.command()
@json_option
@click.pass_context
def current(context: click.Context, as_json: bool) -> None:
    """Print the database's schema revision."""
    status = ops.current(database_url(context, existing=True))
    if as_json:
        echo_json({"revision": status.revision, "head": status.head, "at_head": status.at_head})
        return
    suffix = " (head)" if status.at_head else f" (head is {status.head})"
    click.echo(f"{status.revision or 'empty'}{suffix}")


@main.command()
@json_option
@click.pass_context
def history(context: click.Context, as_json: bool) -> None:
    """List every revision, oldest first; marks the database's current one (when there is
    a database)."""
    revisions = ops.history()
    try:
        revision = ops.current(database_url(context, existing=True)).revision
    except NotFoundError:  # no database yet: the revisions this code knows
        revision = None
    if as_json:
        echo_json(
            {
                "current": revision,
                "revisions": [
                    {**dataclasses.asdict(item), "current": item.revision == revision}
                    for item in revisions
                ],
            }
        )
        return
    for item in revisions:
        marker = "*" if item.revision == revision else " "
        # The first paragraph of the migration's docstring, whole: its summary.
        summary = " ".join(item.description.split("\n\n")[0].split())
        click.echo(f"{marker} {item.revision}  {summary}")


@main.command()
@json_option
@click.pass_context
def check(context: click.Context, as_json: bool) -> None:
    """Exit 0 when the schema is at head, 1 otherwise."""
    status = ops.current(database_url(context, existing=True))
    if as_json:
        echo_json({"revision": status.revision, "head": status.head, "at_head": status.at_head})
    elif status.at_head:
        click.echo(f"ok: at head {status.head}")
    else:
        click.echo(f"NOT AT HEAD: {ops.NotAtHeadError(status)}", err=True)
    if not status.at_head:
        sys.exit(1)


@main.command("restore-archive")
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path))
@json_option
@click.pass_context
def restore_archive_command(context: click.Context, directory: Path, as_json: bool) -> None:
    """Verify an archive written by `rollback` and restore its rows (all or nothing)."""
    restored = ops.restore_archive(database_url(context, existing=True), directory)
    if as_json:
        echo_json({"directory": directory, "restored": restored})
        return
    for table, rows in restored.items():
        click.echo(f"restored {plural(rows, 'row')} into {table}")


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
@click.option(
    "--keep",
    type=click.IntRange(min=1),
    default=None,
    help="Scheduled: DIRECTORY holds backups; write a new one named after the UTC time, "
    "verify it, keep the newest N.",
)
@click.option(
    "--max-age",
    metavar="DURATION",
    default=None,
    help="Scheduled, like --keep: also remove backups older than this (e.g. 36h, 7d).",
)
@click.option(
    "--metrics-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Scheduled: write the last good backup's time here for node_exporter's textfile "
    "collector (the MemoryBackupStale alert).",
)
@json_option
@click.pass_context
def backup_command(
    context: click.Context,
    directory: Path,
    verify_only: bool,
    method: str,
    keep: int | None,
    max_age: str | None,
    metrics_file: Path | None,
    as_json: bool,
) -> None:
    """Back up the database into DIRECTORY (new or empty) while agents keep writing; with
    --keep or --max-age, into a new backup inside DIRECTORY, removing the old ones."""
    scheduled = keep is not None or max_age is not None
    if metrics_file is not None and not scheduled:
        raise click.UsageError("--metrics-file goes with --keep or --max-age (a schedule)")
    if verify_only and scheduled:
        raise click.UsageError("--verify checks one backup; it takes no --keep or --max-age")
    removed: tuple[Path, ...] = ()
    if verify_only:
        info = ops.verify_backup(directory)
    elif scheduled:
        run = ops.scheduled_backup(
            database_url(context, existing=True),
            directory,
            keep=keep,
            max_age=max_age,
            method=cast(ops.BackupMethod, method),
            metrics_file=metrics_file,
        )
        info, removed = run.backup, run.removed
    else:
        info = ops.backup(
            database_url(context, existing=True), directory, method=cast(ops.BackupMethod, method)
        )
    if as_json:
        result = {"verified" if verify_only else "written": True, **_backup_json(info)}
        if scheduled:
            result |= {"verified": True, "removed": list(removed)}
        echo_json(result)
        return
    if verify_only:
        click.echo(f"backup ok: {directory} matches its manifest")
    elif scheduled:
        click.echo(f"backup written and verified: {info.directory}")
        for old in removed:
            click.echo(f"removed old backup: {old}")
    else:
        click.echo(f"backup written: {directory}")
    _echo_backup(info)


def _backup_json(info: ops.BackupInfo) -> dict[str, Any]:
    return {
        "directory": info.directory,
        "backend": info.backend,
        "method": info.method,
        "revision": info.revision,
        "created_at": info.created_at,
        "size_bytes": info.size_bytes,
        "tables": {
            name: {"rows": checksum.rows, "sha256": checksum.sha256}
            for name, checksum in sorted(info.tables.items())
        },
    }


@main.command("restore")
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--replay-until",
    default=None,
    metavar="SEQ|TIME|end",
    help="Then replay the events after the backup from --events-from, up to this event "
    "number or ISO 8601 time, or to the end (point-in-time recovery).",
)
@click.option(
    "--events-from",
    default=None,
    metavar="URL",
    help="The store whose event log --replay-until replays (the damaged database).",
)
@NO_REEMBED
@json_option
@click.pass_context
def restore_command(
    context: click.Context,
    directory: Path,
    replay_until: str | None,
    events_from: str | None,
    no_reembed: bool,
    as_json: bool,
) -> None:
    """Restore a backup into the (empty) database and verify it against the manifest;
    with --replay-until, then replay the events after it."""
    if (replay_until is None) != (events_from is None):
        raise click.UsageError("--replay-until and --events-from go together")
    replayed = None
    if replay_until is None or events_from is None:
        result = ops.restore_backup(database_url(context), directory)
    else:
        point = ops.parse_until(None if replay_until == "end" else replay_until)
        with replay_progress("replaying") as progress:
            result, replayed = ops.restore_and_replay(
                events_from,
                database_url(context),
                directory,
                point,
                None if no_reembed else "default",
                progress,
            )
    if as_json:
        echo_json(
            {
                "directory": directory,
                "backend": result.backend,
                "revision": result.backup.revision,
                "rows": result.rows,
                "tables": {name: checksum.rows for name, checksum in result.tables.items()},
                "verified": True,
                "replay": replayed.as_dict() if replayed is not None else None,
            }
        )
        if replayed is not None and not replayed.ok:
            context.exit(1)
        return
    click.echo(
        f"restored {directory} into {result.backend}: {plural(result.rows, 'row')} in "
        f"{plural(len(result.tables), 'table')}, revision {result.backup.revision}"
    )
    click.echo("verified: every table's row count and checksum and the revision match the manifest")
    if replayed is not None:
        report_replay(context, replayed, as_json=False)


@main.command("import-mcp")
@click.argument("file", type=click.File("r", encoding="utf-8"))
@click.option("--user", required=True, help="The user whose graph receives the entities.")
@json_option
@click.pass_context
def import_mcp(context: click.Context, file: Any, user: str, as_json: bool) -> None:
    """Import an MCP memory server memory.jsonl file ('-' reads standard input).

    The file is read as it comes and committed in batches of 1,000 lines. A bad line stops
    the import: the error names it and the batches before it stay imported; importing a
    line twice adds nothing, so running the command again on the fixed file finishes it.
    """
    with memory_handle(context) as memory:
        entities, relations = memory.graph(user).import_jsonl(file)
    if as_json:
        echo_json({"user": user, "entities": entities, "relations": relations})
    else:
        click.echo(
            f"imported {plural(entities, 'entity', 'entities')} and "
            f"{plural(relations, 'relation')} for {user}"
        )


@main.command("export-mcp")
@click.option("--user", required=True, help="The user whose graph is exported.")
@click.option(
    "--output",
    type=click.File("w", encoding="utf-8"),
    default="-",
    help="File to write (default: standard output).",
)
@click.pass_context
def export_mcp(context: click.Context, user: str, output: Any) -> None:
    """Export a user's entity graph as MCP memory server memory.jsonl lines (JSON already)."""
    with memory_handle(context, existing=True) as memory:
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
@json_option
@click.pass_context
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
    with memory_handle(context, existing=True) as memory:
        report = ops.cleanup(memory, policy, dry_run=dry_run)
    if as_json:
        echo_json(report.as_dict())
    else:
        if dry_run:
            click.echo("dry run, nothing changed; a cleanup would change:")
        else:
            click.echo(f"cleanup {report.status} (run {report.run_id}):")
        width = max(len(name) for name in report.counts)
        for name, count in report.counts.items():
            click.echo(f"  {name:<{width}}  {count}")
    tiers = next(
        item.flag
        for item in ops.list_flags(database_url(context, existing=True)).flags
        if item.flag.name == USE_HIERARCHICAL_TIERS
    )
    if not tiers.enabled or tiers.rollout == 0:
        click.echo(
            f"note: {USE_HIERARCHICAL_TIERS} is off, so memories are one flat tier and no "
            "working memory was consolidated; turn it on with: memctl flags set "
            f"{USE_HIERARCHICAL_TIERS} --on",
            err=True,
        )


# -- memories from the shell: add, search, inject, reembed (memories.py: the rest) -----------


@main.command()
@click.argument("text")
@scope_options
@click.option("--tier", type=click.Choice(TIERS), default="working", show_default=True)
@click.option("--importance", type=float, default=0.5, show_default=True)
@click.option("--metadata", default=None, metavar="JSON|@FILE", help="A JSON object of metadata.")
@json_option
@click.pass_context
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
    """Store TEXT as a memory ('-' reads standard input, @FILE a file; the same content in
    the same scope is stored once)."""
    content = text_argument(text, "TEXT")
    extra = metadata_option(metadata) or {}
    with memory_handle(context) as memory:
        record = memory.scope(user, agent, session).add(
            content,
            tier=tier,
            importance=importance,
            metadata=extra,
        )
    if as_json:
        echo_json(record_json(record))
    else:
        click.echo(f"memory {record.id} ({record.tier}, version {record.version})")


@main.command()
@click.argument("query")
@scope_options
@click.option("--tier", "tiers", multiple=True, type=click.Choice(TIERS), help="Repeatable.")
@click.option("--limit", type=click.IntRange(1, 1000), default=10, show_default=True)
@json_option
@click.pass_context
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
    with memory_handle(context, existing=True) as memory:
        hits = memory.scope(user, agent).search(
            text_argument(query, "QUERY"),
            limit=limit,
            tiers=tiers,
            session=session,
        )
    if as_json:
        echo_json(
            [
                {
                    "score": hit.score,
                    "keyword_score": hit.keyword_score,
                    "vector_score": hit.vector_score,
                    "memory": record_json(hit.memory),
                }
                for hit in hits
            ]
        )
    else:
        for hit in hits:
            click.echo(
                f"{hit.score:.3f}  #{hit.memory.id} {hit.memory.tier:8} {hit.memory.content}"
            )
    if not hits:
        nothing_found("memories matching the query", user, agent)


@main.command()
@click.argument("query")
@scope_options
@click.option("--budget", type=click.IntRange(1), default=512, show_default=True, help="Tokens.")
@json_option
@click.pass_context
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
    with memory_handle(context, existing=True) as memory:
        result = memory.scope(user, agent, session).inject(
            text_argument(query, "QUERY"), budget_tokens=budget
        )
    if as_json:
        echo_json(
            {
                "text": result.text,
                "tokens": result.tokens,
                "budget": result.budget,
                "overflow": result.overflow,
                "left_out": result.left_out,
                "compacted": list(result.compacted),
                "promoted": list(result.promoted),
                "disabled_by": result.disabled_by,
                "items": result.items,
            }
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
    if not result.items:
        nothing_found("memories, preferences or state for this query", user, agent)


@main.command()
@click.option("--batch-size", type=click.IntRange(1, 10_000), default=256, show_default=True)
@json_option
@click.pass_context
def reembed(context: click.Context, batch_size: int, as_json: bool) -> None:
    """Give every memory a vector from the current embedding model, in batches."""
    done = 0
    with memory_handle(context, existing=True) as memory:
        stale = memory.embeddings_needing_refresh()
        if stale:
            with click.progressbar(length=stale, label="re-embedding", file=sys.stderr) as bar:
                done = memory.reembed(batch_size=batch_size, progress=bar.update)
    if as_json:
        echo_json({"reembedded": done})
    elif done == 0:
        click.echo("every memory has a vector from the current model")
    else:
        click.echo(f"re-embedded {plural(done, 'memory', 'memories')}")


# -- command groups defined in their own memory/cli/*.py modules -------------------------------

main.add_command(flags_group)
main.add_command(workload)
main.add_command(health)
register_sharing_commands(main)
main.add_command(gates_command)
register_event_commands(main)
main.add_command(memories)
main.add_command(preferences)
main.add_command(patterns)
main.add_command(state)
main.add_command(mcp_command)
main.add_command(swarm_group)
main.add_command(sync_group)
main.add_command(keys_group)
main.add_command(serve)
