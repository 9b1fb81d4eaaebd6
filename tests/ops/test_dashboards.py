"""The dashboards are the output of dashboards/build.py, and every series a dashboard panel,
an alert rule or ``memctl gates`` queries is one a running workload really serves.

Expressions are parsed with a PromQL parser (promql-parser), not matched by a pattern, so a
misspelled metric name, or an expression Prometheus could not parse, fails the test."""

from __future__ import annotations

import importlib.util
import json
import re
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import promql_parser
import pytest
import yaml

from memory import ops as ops
from memory.ops.gates import PrometheusSource
from tests.service import processes

ROOT = Path(__file__).resolve().parents[2]
DASHBOARDS = ROOT / "dashboards"
MEMCTL = str(Path(sys.executable).parent / "memctl")
# Series Prometheus makes itself (alert state), not the application.
SYNTHESIZED = {"ALERTS", "ALERTS_FOR_STATE"}
# Series the scheduled backup writes for node_exporter's textfile collector, not the
# application (tests/ops/test_scheduled_backup.py checks that it writes them).
BATCH_JOB_SERIES = {"memory_backup_last_success_timestamp_seconds"}
# Series only a process that syncs records (a hub or a spoke: labelled by node and tier,
# so not declared at 0); tests/sync/test_processes.py scrapes a hub that serves them.
SYNC_SERIES = {
    "memshadow_sync_frequency_total",
    "memshadow_sync_latency_ms_bucket",
    "memshadow_batch_size_bucket",
}


def load_build() -> ModuleType:
    spec = importlib.util.spec_from_file_location("dashboards_build", DASHBOARDS / "build.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_committed_dashboards_are_what_the_code_builds() -> None:
    build = load_build()
    assert set(build.DASHBOARDS) == {"production", "health", "performance"}
    committed = {path.stem for path in DASHBOARDS.glob("*.json")}
    assert committed == set(build.DASHBOARDS), "a dashboard JSON without code, or code without JSON"
    for name, builder in build.DASHBOARDS.items():
        assert (DASHBOARDS / f"{name}.json").read_text("utf-8") == build.render(builder), (
            f"dashboards/{name}.json differs from the code: run python dashboards/build.py"
        )
    assert build.main(["--check"]) == 0


def test_panel_ids_are_unique_and_every_panel_has_a_query() -> None:
    for path in sorted(DASHBOARDS.glob("*.json")):
        document = json.loads(path.read_text("utf-8"))
        ids = [panel["id"] for panel in document["panels"]]
        assert len(ids) == len(set(ids)), path.name
        for panel in document["panels"]:
            if panel["type"] != "row":
                assert panel.get("targets"), f"{path.name}: {panel['title']} queries nothing"


def expressions_in(node: Any) -> Iterator[str]:
    """Every ``expr`` value in a dashboard document (panel targets and annotations)."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "expr" and isinstance(value, str):
                yield value
            else:
                yield from expressions_in(value)
    elif isinstance(node, list):
        for item in node:
            yield from expressions_in(item)


def grafana_to_promql(expr: str) -> str:
    # Grafana fills its variables in before Prometheus sees the query.
    return re.sub(r"\$\{?\w+\}?", "x", expr.replace("$__rate_interval", "5m"))


def metric_names(expr: str) -> set[str]:
    """The metric names an expression selects (parse errors propagate)."""
    names: set[str] = set()

    def visit(node: Any) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            if node.name:
                names.add(node.name)
            for matcher in node.matchers.matchers:
                if matcher.name == "__name__":
                    names.add(matcher.value)

    promql_parser.walk(promql_parser.parse(expr), visit)
    return names


def used_expressions() -> dict[str, str]:
    """Where each expression comes from → the expression."""
    used: dict[str, str] = {}
    for path in sorted(DASHBOARDS.glob("*.json")):
        document = json.loads(path.read_text("utf-8"))
        for index, expr in enumerate(expressions_in(document)):
            used[f"{path.name} #{index}"] = grafana_to_promql(expr)
    for group in yaml.safe_load((DASHBOARDS / "alerts.yml").read_text("utf-8"))["groups"]:
        for rule in group["rules"]:
            used[f"alerts.yml {rule.get('alert') or rule.get('record')}"] = rule["expr"]
    source = PrometheusSource("http://127.0.0.1:9090", {"job": "memory"})
    for worst in (False, True):
        for key, expr in source.expressions(timedelta(hours=1), worst=worst).items():
            used[f"memctl gates {key}{' (gate 3)' if worst else ''}"] = expr
    return used


def test_the_parser_sees_through_aggregations_and_subqueries() -> None:
    expr = (
        'max_over_time((histogram_quantile(0.95, sum by (le) (increase(a_bucket{job="j"}[5m]))) '
        '/ on () b)[1h:1m]) or {__name__="c"} unless ALERTS'
    )
    assert metric_names(expr) == {"a_bucket", "b", "c", "ALERTS"}
    with pytest.raises(ValueError):
        metric_names("sum(rate(memory_operations_total[5m])")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def scrape_a_workload(tmp_path: Path) -> set[str]:
    """The series names a short ``memctl workload`` serves on /metrics while it runs."""
    port = free_port()
    process = subprocess.Popen(
        [MEMCTL, "--database-url", f"sqlite:///{tmp_path / 'memory.db'}", "workload",
         "--duration", "60", "--rate", "20", "--embedder", "hashing",
         "--metrics-port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and process.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as body:
                    text = body.read().decode()
            except OSError:
                text = ""  # not serving yet
            # A scrape after the first injection: every instrument has reported by then.
            if "memory_injection_latency_milliseconds_count{" in text:
                return {
                    re.split(r"[{ ]", line, maxsplit=1)[0]
                    for line in text.splitlines()
                    if line and not line.startswith("#")
                }
            time.sleep(0.5)
        raise AssertionError(f"the workload served no injection metrics (exit {process.poll()})")
    finally:
        process.terminate()
        process.wait(timeout=30)


def scrape_a_hub(tmp_path: Path) -> set[str]:
    """The series names a ``memctl serve`` serves on /metrics after a request, a refused
    one included (its series appear with their first label set)."""
    database = f"sqlite:///{tmp_path / 'hub.db'}"
    ops.migrate(database)
    secret = ops.create_key(database, "planner", users=["ada"]).secret
    with processes.served(database, tmp_path / "serve.log") as hub:
        for key in (secret, "tmk_0123456789abcdef_wrong"):
            httpx.post(f"{hub.url}/v1/list", headers={"Authorization": f"Bearer {key}"}, json={})
        text = httpx.get(f"{hub.url}/metrics", timeout=10).text
    return {
        re.split(r"[{ ]", line, maxsplit=1)[0]
        for line in text.splitlines()
        if line and not line.startswith("#")
    }


def test_every_series_a_panel_or_rule_uses_is_served(tmp_path: Path) -> None:
    # The library's series from a workload, the hub service's from a running hub.
    served = scrape_a_workload(tmp_path) | scrape_a_hub(tmp_path)
    missing = {
        where: sorted(metric_names(expr) - served - SYNTHESIZED - BATCH_JOB_SERIES - SYNC_SERIES)
        for where, expr in used_expressions().items()
    }
    assert {where: names for where, names in missing.items() if names} == {}
    # And the check does catch a misspelling.
    assert metric_names("sum(rate(memory_operatons_total[5m]))") - served == {
        "memory_operatons_total"
    }
