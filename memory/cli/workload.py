"""``memctl workload``: drive the simulated multi-agent workload, serve ``/metrics``, write
metrics snapshots (see ``memory.ops.workload``)."""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path
from types import FrameType
from typing import Any, Literal, cast

import click

from memory import Embedder, HashingEmbedder, MiniLMEmbedder
from memory import ops as ops
from memory.cli.common import database_url

__all__ = ["workload"]


def _embedder(name: str) -> Embedder:
    # hashing: instant and deterministic, for tests and demos; minilm: the real model.
    return HashingEmbedder() if name == "hashing" else MiniLMEmbedder()


@click.command("workload")
@click.option("--duration", type=click.FloatRange(min=0, min_open=True), default=60.0,
              show_default=True, help="Seconds to run.")
@click.option("--rate", type=click.FloatRange(min=0, min_open=True), default=50.0,
              show_default=True, help="Operations per second, over all workers.")
@click.option("--users", type=click.IntRange(min=1), default=4, show_default=True)
@click.option("--workers", type=click.IntRange(1, 64), default=4, show_default=True,
              help="Concurrent agent threads.")
@click.option("--embedder", "embedder_name", type=click.Choice(["hashing", "minilm"]),
              default="minilm", show_default=True,
              help="hashing: fast and deterministic (tests); minilm: the real model.")
@click.option("--metrics-port", type=click.IntRange(0, 65535), default=9464,
              show_default=True, help="Serve /metrics on this port while running (0: don't).")
@click.option("--metrics-addr", default="127.0.0.1", show_default=True)
@click.option("--snapshot", "snapshot_path", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="Write a metrics snapshot (JSON) here, for `memctl gates`.")
@click.option("--snapshot-interval", type=click.FloatRange(min=0.1), default=5.0,
              show_default=True, help="Seconds between snapshot rewrites during the run.")
@click.option("--inject-delay-ms", type=click.FloatRange(min=0), default=0.0,
              show_default=True, help="Make every injection this much slower (NO-GO drills).")
@click.option("--error-rate", type=click.FloatRange(0, 1), default=0.0, show_default=True,
              help="Share of operations that fail on purpose (NO-GO drills).")
@click.option("--flags", "flag_mode", type=click.Choice(["on", "stored"]), default="on",
              show_default=True,
              help="on: every rollout flag on, so every code path runs; stored: the flag "
              "state in the database (memctl flags) and this host's environment.")
@click.option("--seed", type=int, default=20240601, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.pass_context
def workload(
    context: click.Context,
    duration: float,
    rate: float,
    users: int,
    workers: int,
    embedder_name: str,
    metrics_port: int,
    metrics_addr: str,
    snapshot_path: Path | None,
    snapshot_interval: float,
    inject_delay_ms: float,
    error_rate: float,
    flag_mode: str,
    seed: int,
    as_json: bool,
) -> None:
    """Drive a simulated multi-agent workload (users, planner/coder/reviewer agents,
    sessions) against the database, serving /metrics while it runs.

    SIGTERM or Ctrl-C ends the run early; the summary and the snapshot are still written.
    """
    config = ops.WorkloadConfig(
        duration=duration,
        rate=rate,
        users=users,
        workers=workers,
        inject_delay_ms=inject_delay_ms,
        error_rate=error_rate,
        seed=seed,
    )
    # The endpoint starts first so that its counters cover the whole run.
    endpoint = (
        ops.start_prometheus_endpoint(metrics_port, metrics_addr) if metrics_port else None
    )
    previous = signal.getsignal(signal.SIGTERM)
    try:
        if endpoint is not None:
            click.echo(f"serving metrics at {endpoint.url}", err=True)
        expected = max(1, int(duration * rate))
        with click.progressbar(length=expected, label="workload", file=sys.stderr) as bar:
            run = ops.drive_workload(
                database_url(context),
                config,
                embedder=_embedder(embedder_name),
                flags=cast(Literal["on", "stored"], flag_mode),
                snapshot_path=snapshot_path,
                snapshot_interval=snapshot_interval,
                progress=bar.update,
                started=_stop_on_sigterm,
            )
    finally:
        signal.signal(signal.SIGTERM, previous)
        if endpoint is not None:
            endpoint.close()
    report, snapshot = run.report, run.snapshot
    summary: dict[str, Any] = {
        "operations": dict(sorted(report.operations.items())),
        "total": report.total,
        "elapsed_seconds": round(report.elapsed_seconds, 3),
        "achieved_rate": round(report.achieved_rate, 2),
        "injected_faults": report.injected_faults,
        "other_failures": dict(report.other_failures),
        "snapshot": str(snapshot_path) if snapshot_path else None,
        "metrics": snapshot.to_json(),
    }
    if as_json:
        click.echo(json.dumps(summary, indent=2))
        return
    click.echo(
        f"{report.total} operations in {report.elapsed_seconds:.1f} s "
        f"({report.achieved_rate:.1f}/s, asked {rate:g}/s); injected faults "
        f"{report.injected_faults}, other failures {sum(report.other_failures.values())}"
    )
    for kind, count in sorted(report.operations.items()):
        click.echo(f"  {kind:<16}{count:>8}")
    injection = snapshot.injection_latency
    click.echo(
        f"injection p50/p95/p99 ms: {injection.p50_ms}/{injection.p95_ms}/{injection.p99_ms}; "
        f"cache hit rate {_percent(snapshot.cache_hit_rate)}; "
        f"error rate {_percent(snapshot.error_rate)}; heap {snapshot.heap_used_mb:.0f} MB"
    )
    if snapshot_path:
        click.echo(f"snapshot written to {snapshot_path}")


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 100:.2f} %"


def _stop_on_sigterm(driver: ops.Workload) -> None:
    def stop(_signal: int, _frame: FrameType | None) -> None:
        driver.stop()

    signal.signal(signal.SIGTERM, stop)
