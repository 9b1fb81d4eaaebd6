"""``memctl health``: run the named health checks (``memory.ops.health``), print a table or
JSON, exit 1 when any check failed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import cast

import click

from memory.cli.common import database_url
from memory.ops import EmbedderChoice, health_checks, run_health_checks

__all__ = ["health"]


@click.command("health")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
@click.option(
    "--embedder",
    type=click.Choice(["minilm", "hashing", "none"]),
    default="minilm",
    show_default=True,
    help="The embedder to load and try (the one the agents use).",
)
@click.option(
    "--redis-url",
    default=None,
    help="Check this Redis too (default: $MEMORY_REDIS_URL; unset: skipped).",
)
@click.option(
    "--backups",
    "backup_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Report the age of the last good backup in this directory (default: "
    "$MEMORY_BACKUP_DIR; unset: skipped).",
)
@click.option(
    "--check",
    "only",
    multiple=True,
    help="Run only this check (and what it needs); repeatable. See --list.",
)
@click.option("--list", "list_checks", is_flag=True, help="List the checks and exit.")
@click.pass_context
def health(
    context: click.Context,
    as_json: bool,
    embedder: str,
    redis_url: str | None,
    backup_dir: Path | None,
    only: tuple[str, ...],
    list_checks: bool,
) -> None:
    """Check the database, schema, SQLite settings, embedder, flag provider, Redis, the
    cleanup job and the last backup's age. Exit status 1 when any check fails (a missing
    SQLite file is a failed check, and is not created)."""
    if list_checks:
        for name, description in health_checks().items():
            click.echo(f"{name:<16}{description}")
        return
    report = run_health_checks(
        database_url(context),
        embedder=cast(EmbedderChoice, embedder),
        redis_url=redis_url,
        backup_dir=backup_dir,
        only=only or None,
    )
    if as_json:
        click.echo(json.dumps(report.as_dict(), indent=2))
    else:
        width = max(len(result.name) for result in report.results)
        click.echo(f"{'check':<{width}}  status  {'time':>7}  detail")
        for result in report.results:
            click.echo(
                f"{result.name:<{width}}  {result.status.upper():<6}  "
                f"{result.seconds * 1000:>5.0f}ms  {result.detail}"
            )
        click.echo("HEALTHY" if report.ok else "UNHEALTHY")
    if not report.ok:
        context.exit(1)
