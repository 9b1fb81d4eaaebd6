"""The alert rules pass ``promtool check rules`` and their unit tests, every alert is shown
both firing and not firing, and a broken copy of the rules fails both promtool commands."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import promql_parser
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "dashboards" / "alerts.yml"
RULE_TESTS = ROOT / "dashboards" / "alerts_test.yml"
MONITORING_RUNBOOK = ROOT / "runbooks" / "monitoring.md"


def promtool(*arguments: str | Path) -> subprocess.CompletedProcess[str]:
    executable = shutil.which("promtool")
    if executable is None:
        pytest.fail("promtool is not installed: apt-get install --no-install-recommends prometheus")
    return subprocess.run(
        [executable, *map(str, arguments)], capture_output=True, text=True, timeout=120
    )


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text("utf-8"))


def alert_rules() -> list[dict[str, Any]]:
    return [rule for group in load(RULES)["groups"] for rule in group["rules"] if "alert" in rule]


ALERTS = [rule["alert"] for rule in alert_rules()]


def test_promtool_checks_the_rules() -> None:
    result = promtool("check", "rules", RULES)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in result.stdout


def test_promtool_unit_tests_pass() -> None:
    result = promtool("test", "rules", RULE_TESTS)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_the_issue_asks_for_these_alerts() -> None:
    severities = {rule["alert"]: rule["labels"]["severity"] for rule in alert_rules()}
    assert severities == {
        "MemoryDatabaseConnectionFailures": "critical",
        "MemoryHeapAbove1GB": "critical",
        "MemoryRetrievalUnavailable": "critical",
        "MemoryMigrationFailed": "critical",
        "MemoryDataCorruptionDetected": "critical",
        "MemoryInjectionLatencyAboveBaseline": "warning",
        "MemoryCacheHitRateLow": "warning",
        "MemoryOverflowRateHigh": "warning",
        "MemoryCleanupFailures": "warning",
        "MemoryUnexpectedFlagChange": "warning",
        "MemorySwarmSignatureFailures": "warning",
        "MemorySwarmLeaseExpiriesHigh": "warning",
        "MemorySwarmEscalationsPiling": "warning",
        "MemoryInjectionLatencyHigh": "critical",
        "MemoryRagSearchLatencyHigh": "critical",
        "MemoryDatabaseQueryLatencyHigh": "warning",
        "MemoryHeapAbove500MB": "warning",
        "MemorySessionResumptionLow": "warning",
        "MemoryCrossAgentFailures": "warning",
        "MemoryBackupStale": "warning",
        "MemoryServiceBreakerOpen": "warning",
        "MemoryServiceErrorsHigh": "warning",
        "MemoryServiceLatencyHigh": "warning",
    }


# The rollout checklist's alert thresholds (§3.1): alert -> (comparison, threshold, for).
CHECKLIST = {
    "MemoryInjectionLatencyHigh": (">", 500, "5m"),
    "MemoryCacheHitRateLow": ("<", 0.5, "10m"),
    "MemoryDatabaseQueryLatencyHigh": (">", 100, "5m"),
    "MemoryHeapAbove500MB": (">", 500, "5m"),
    "MemoryHeapAbove1GB": (">", 1024, "5m"),
    "MemoryRagSearchLatencyHigh": (">", 2000, "5m"),
    "MemoryOverflowRateHigh": (">", 50, None),
    "MemorySessionResumptionLow": ("<", 0.8, None),
    "MemoryCrossAgentFailures": (">", 5, None),
    "MemoryBackupStale": (">", 3600, "5m"),
    # The Memory Fusion Hub checklist: p95 <= 20 ms, error rate < 0.1 %.
    "MemoryServiceLatencyHigh": (">", 0.02, "10m"),
    "MemoryServiceErrorsHigh": (">", 0.001, "5m"),
}


@pytest.mark.parametrize("alert", sorted(CHECKLIST))
def test_the_checklist_thresholds_and_windows(alert: str) -> None:
    # The expression's outermost node is the comparison with the threshold.
    rule = next(rule for rule in alert_rules() if rule["alert"] == alert)
    comparison = promql_parser.parse(rule["expr"])
    assert isinstance(comparison, promql_parser.BinaryExpr), rule["expr"]
    assert isinstance(comparison.rhs, promql_parser.NumberLiteral), rule["expr"]
    assert (str(comparison.op), comparison.rhs.val, rule.get("for")) == CHECKLIST[alert]


def test_every_alert_is_tested_firing_and_not_firing() -> None:
    firing: set[str] = set()
    quiet: set[str] = set()
    for group in load(RULE_TESTS)["tests"]:
        for case in group.get("alert_rule_test", []):
            (firing if case.get("exp_alerts") else quiet).add(case["alertname"])
    assert set(ALERTS) - firing == set(), "alerts never shown firing"
    assert set(ALERTS) - quiet == set(), "alerts never shown not firing"


def test_every_alert_links_to_its_section_of_the_monitoring_runbook() -> None:
    # GitHub's anchor for a heading: lower case, punctuation dropped, spaces as hyphens.
    headings = re.findall(r"^#+ (.+)$", MONITORING_RUNBOOK.read_text("utf-8"), re.MULTILINE)
    anchors = {re.sub(r"[^\w\- ]", "", heading).strip().lower().replace(" ", "-")
               for heading in headings}
    for rule in alert_rules():
        link = rule["annotations"]["runbook"]
        assert link == f"runbooks/monitoring.md#{rule['alert'].lower()}", link
        assert link.split("#")[1] in anchors, f"no section {link} in monitoring.md"


def copy_with(tmp_path: Path, expr: str, only: str | None = None) -> Path:
    """alerts.yml and its unit tests in ``tmp_path``, with the expression of alert ``only``
    (default: of every alert) replaced by ``expr``."""
    rules = load(RULES)
    for group in rules["groups"]:
        for rule in group["rules"]:
            if only in (None, rule.get("alert")):
                rule["expr"] = expr
    (tmp_path / "alerts.yml").write_text(yaml.safe_dump(rules, sort_keys=False), "utf-8")
    shutil.copy(RULE_TESTS, tmp_path / "alerts_test.yml")
    return tmp_path


def test_a_rule_with_a_syntax_error_fails_the_check(tmp_path: Path) -> None:
    broken = copy_with(tmp_path, "max by (job (memory_heap_used_mb) > 1024", "MemoryHeapAbove1GB")
    result = promtool("check", "rules", broken / "alerts.yml")
    assert result.returncode != 0
    assert "parse error" in result.stdout + result.stderr


@pytest.mark.parametrize(
    "expr",
    ["vector(1) > 2", 'label_replace(vector(1), "job", "memory", "", "")'],
    ids=["never-fires", "always-fires"],
)
def test_the_unit_tests_catch_every_rule_that_is_wrong(tmp_path: Path, expr: str) -> None:
    # promtool reports every failing case, so one run shows each alert's tests failing.
    broken = copy_with(tmp_path, expr)
    assert promtool("check", "rules", broken / "alerts.yml").returncode == 0
    result = promtool("test", "rules", broken / "alerts_test.yml")
    assert result.returncode != 0
    for alert in ALERTS:
        assert f"alertname: {alert}," in result.stdout + result.stderr, alert
