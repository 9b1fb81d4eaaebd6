"""``memctl gates``: the rollout gates as a table and a GO / NO-GO verdict (exit 0 / 1).

The same source options and check guard ``memctl flags set NAME --rollout N``: raising a
rollout into the next stage needs the gate of the current stage (see ``memory.ops.gates``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import click

from memory.cli.common import engine_handle, reports_errors
from memory.core.errors import InvalidInputError
from memory.ops import gates as gates
from memory.store.flags import DatabaseFlagProvider

__all__ = ["gate_source_options", "gated_reason", "gates_command", "require_gate_for_rollout"]

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
                     help=f"The baseline file (default: ${gates.BASELINE_ENV}, "
                          f"else {gates.DEFAULT_BASELINE_PATH})."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _source(
    prometheus_url: str | None, snapshot_path: Path | None, matchers: tuple[str, ...]
) -> gates.MetricsSource:
    if (prometheus_url is None) == (snapshot_path is None):
        raise click.UsageError("give exactly one of --prometheus URL and --snapshot FILE")
    if prometheus_url is None:
        if matchers:
            raise click.UsageError("--match applies to --prometheus only")
        return gates.SnapshotSource(snapshot_path)  # type: ignore[arg-type]  # one is given
    labels = {}
    for matcher in matchers:
        label, equals, value = matcher.partition("=")
        if not equals or not label.isidentifier() or not value:
            raise click.UsageError(f"--match {matcher!r}: expected LABEL=VALUE, e.g. job=memory")
        labels[label] = value
    return gates.PrometheusSource(prometheus_url, labels)


def evaluate(
    context: click.Context, gate: int, source_options: dict[str, Any]
) -> gates.GateReport:
    """Measure and judge ``gate`` from the source the options name."""
    window = gates.parse_window(source_options["window"])
    source = _source(
        source_options["prometheus_url"], source_options["snapshot_path"],
        source_options["matchers"],
    )
    observed = source.observe(window, worst=gate == 3)
    rollbacks = None
    if gate == 3:
        with engine_handle(context) as engine:
            rollbacks = gates.rollback_events(engine, datetime.now(UTC) - window)
    return gates.evaluate_gate(
        gate, observed, source=source.description,
        baseline=gates.read_baseline(source_options["baseline_file"]),
        rollbacks=rollbacks, window=window,
    )


def _table(report: gates.GateReport) -> str:
    rows = [("criterion", "threshold", "observed", "result")] + [
        (r.criterion, r.threshold, r.observed, "PASS" if r.passed else "FAIL")
        for r in report.results
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
        f"{report.coverage} of {timedelta(seconds=round(report.covered_seconds))}"
    )
    return "\n".join([header, *lines, f"GATE {report.gate}: {report.verdict}"])


@click.command("gates")
@click.option("--gate", type=click.IntRange(1, 3), default=None,
              help="1: 10% -> 50%; 2: 50% -> 100%; 3: 100% held, rollout done.")
@click.option("--record-baseline", is_flag=True,
              help="Record the database p95 as the baseline for gate 2 (before the rollout).")
@gate_source_options
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.pass_context
@reports_errors
def gates_command(
    context: click.Context, /, gate: int | None, record_baseline: bool, as_json: bool,
    **source_options: Any,
) -> None:
    """Evaluate a rollout gate: a table of criterion, threshold, observed, PASS/FAIL and a
    final GO (exit 0) or NO-GO (exit 1).

    Gate 3 also reads the flag audit in the database (--database-url) for rollback events.
    """
    if record_baseline:
        if gate is not None:
            raise click.UsageError("--record-baseline takes no --gate")
        source = _source(
            source_options["prometheus_url"], source_options["snapshot_path"],
            source_options["matchers"],
        )
        baseline = gates.record_baseline(
            source, gates.parse_window(source_options["window"]), source_options["baseline_file"]
        )
        path = gates.baseline_path(source_options["baseline_file"])
        click.echo(f"baseline recorded in {path}: database p95 {baseline.db_p95_ms:.2f} ms")
        return
    if gate is None:
        raise click.UsageError("give --gate 1, 2 or 3 (or --record-baseline)")
    report = evaluate(context, gate, source_options)
    click.echo(json.dumps(report.as_dict(), indent=2) if as_json else _table(report))
    context.exit(0 if report.go else 1)


def gated_reason(
    context: click.Context, provider: DatabaseFlagProvider, flag: str, wanted: int,
    reason: str | None, *, force: bool, source_options: dict[str, Any],
) -> str | None:
    """The audit reason for setting ``flag`` to ``wanted`` percent, once the gate allows it:
    ``reason``, plus a note when ``force`` overrode a gate (see
    :func:`require_gate_for_rollout`)."""
    stored = next((f for f in provider.flags() if f.name == flag), None)
    if stored is None or not 0 <= wanted <= 100:
        return reason  # an unknown flag or a bad percentage: set_flag names the problem
    current = stored.rollout if stored.enabled else 0
    note = require_gate_for_rollout(
        context, flag, current, wanted, force=force, source_options=source_options
    )
    return "; ".join(part for part in (reason, note) if part) or None


def require_gate_for_rollout(
    context: click.Context, flag: str, current: int, wanted: int, *, force: bool,
    source_options: dict[str, Any],
) -> str | None:
    """Refuse (UsageError) to raise ``flag`` from ``current`` to ``wanted`` percent unless
    the current stage's gate passes. With ``force`` the change goes ahead; the returned
    note (for the audit reason) says which gate was overridden and why."""
    try:
        gate = gates.gate_for_raise(current, wanted)
    except InvalidInputError as error:
        if not force:
            raise click.UsageError(f"{error} (--force to override)") from error
        return f"forced: {error}"
    if gate is None:
        return None
    if source_options["prometheus_url"] is None and source_options["snapshot_path"] is None:
        if force:
            return f"forced past gate {gate} without evaluating it"
        raise click.UsageError(
            f"{flag}: raising the rollout {current}% -> {wanted}% needs gate {gate}; "
            "give --prometheus URL or --snapshot FILE to evaluate it (or --force)"
        )
    report = evaluate(context, gate, source_options)
    click.echo(_table(report), err=True)
    if report.go:
        return None
    failed = ", ".join(r.criterion for r in report.results if not r.passed)
    if force:
        return f"forced past gate {gate} (NO-GO: {failed})"
    raise click.UsageError(
        f"{flag}: gate {gate} is NO-GO ({failed}); the rollout stays at {current}% "
        "(--force to override; it is audited)"
    )
