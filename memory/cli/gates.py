"""``memctl gates``: the rollout gates as a table and a GO / NO-GO verdict (exit 0 / 1).

The same source options and table serve ``memctl flags set NAME --rollout N``, whose gate
check is :func:`memory.ops.set_flag`'s (see ``memory.ops.gates``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import click

from memory import ops as ops
from memory.cli.common import database_url

__all__ = ["gate_options", "gate_source_options", "gate_table", "gates_command"]

F = TypeVar("F", bound=Callable[..., Any])


def gate_source_options(command: F) -> F:
    """``--prometheus``/``--snapshot``, ``--window``, ``--match`` and ``--baseline``."""
    options = [
        click.option("--prometheus", "prometheus_url", metavar="URL", default=None,
                     help="Read the metrics from this Prometheus server's HTTP API."),
        click.option("--snapshot", "snapshot_path", default=None,
                     type=click.Path(dir_okay=False, path_type=Path),
                     help="Read them from a metrics snapshot file (memctl workload --snapshot)."),
        click.option("--window", default="1h", show_default=True,
                     help="The span judged: 30s, 15m, 1h, 2d."),
        click.option("--match", "matchers", multiple=True, metavar="LABEL=VALUE",
                     help="Only series with this label (e.g. job=memory); repeatable."),
        click.option("--baseline", "baseline_file", default=None,
                     type=click.Path(dir_okay=False, path_type=Path),
                     help=f"The baseline file (default: ${ops.BASELINE_ENV}, "
                          f"else {ops.DEFAULT_BASELINE_PATH})."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def gate_options(source_options: dict[str, Any]) -> ops.GateOptions:
    """The :class:`memory.ops.GateOptions` that :func:`gate_source_options` parsed."""
    return ops.GateOptions(
        prometheus_url=source_options["prometheus_url"],
        snapshot_path=source_options["snapshot_path"],
        window=source_options["window"],
        matchers=tuple(source_options["matchers"]),
        baseline_file=source_options["baseline_file"],
    )


def gate_table(report: ops.GateReport) -> str:
    """The gate's table of criteria, its notes and its verdict, as ``memctl gates`` prints
    it."""
    rows = [("criterion", "threshold", "observed", "result")] + [
        (r.criterion, r.threshold, r.observed, r.result) for r in report.results
    ]
    widths = [max(len(row[column]) for row in rows) for column in range(3)]
    lines = [
        "  ".join([*(cell.ljust(width) for cell, width in zip(row, widths, strict=False)),
                   row[3]])
        for row in rows
    ]
    window = timedelta(seconds=report.window_seconds)
    header = (
        f"gate {report.gate} from {report.source}: window {window}, "
        f"{report.coverage} of {timedelta(seconds=int(report.covered_seconds))}"
    )
    notes = [f"note: {note}" for note in report.notes]
    return "\n".join([header, *lines, *notes, f"GATE {report.gate}: {report.verdict}"])


@click.command("gates")
@click.option("--gate", type=click.IntRange(1, 3), default=None,
              help="1: 10% -> 50%; 2: 50% -> 100%; 3: 100% held, rollout done.")
@click.option("--flag", default=None, metavar="NAME",
              help="The flag being rolled out: only evidence from its current stage counts.")
@click.option("--record-baseline", is_flag=True,
              help="Record the database p95 as the baseline for gate 2 (before the rollout).")
@gate_source_options
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.pass_context
def gates_command(
    context: click.Context, /, gate: int | None, flag: str | None, record_baseline: bool,
    as_json: bool, **source_options: Any,
) -> None:
    """Evaluate a rollout gate for a flag: a table of criterion, threshold, observed,
    PASS/FAIL/NOT CHECKED and a final GO (exit 0) or NO-GO (exit 1).

    Evidence from before the flag's current stage began (read from the flag audit in the
    database, --database-url), or shorter than --window, is refused; what the source cannot
    show (alerts, from a snapshot) is NOT CHECKED. Both mean NO-GO. Gate 3 also reads the
    flag audit for rollback events.
    """
    if record_baseline:
        if gate is not None or flag is not None:
            raise click.UsageError("--record-baseline takes no --gate and no --flag")
        recorded = ops.record_gate_baseline(gate_options(source_options))
        click.echo(
            f"baseline recorded in {recorded.path}: "
            f"database p95 {recorded.baseline.db_p95_ms:.2f} ms"
        )
        return
    if gate is None:
        raise click.UsageError("give --gate 1, 2 or 3 (or --record-baseline)")
    if flag is None:
        raise click.UsageError(
            "give --flag NAME: the gate judges evidence from that flag's current stage"
        )
    report = ops.check_gate(
        database_url(context, existing=True), gate, gate_options(source_options), flag=flag
    )
    click.echo(json.dumps(report.as_dict(), indent=2) if as_json else gate_table(report))
    context.exit(0 if report.go else 1)
