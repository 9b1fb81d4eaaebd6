"""``memctl gates`` and ``memory.ops.gates``: thresholds, baseline, rollback events, stale,
short and partial evidence refused, the stage rules of ``memctl flags set --rollout``, and
the command's table, JSON and exit codes.

The Prometheus source against a real Prometheus server: tests/test_gates_prometheus.py."""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from memory import Memory
from memory.cli import main
from memory.core.errors import InvalidInputError
from memory.ops import gates as gates
from memory.store.flags import DatabaseFlagProvider
from memory.telemetry import snapshots
from tests.ops.healthy import HEALTHY, NOW, latency
from tests.stores import upgraded_from_phase_1

FLAG = "USE_ENHANCED_INJECTION"
HOUR = timedelta(hours=1)
# The flag went to 10 % two hours before NOW; the evidence below is the last hour before NOW.
STAGE = gates.Stage(FLAG, 10, 0, NOW - 2 * HOUR, 7)


def observed(**changes: Any) -> gates.Observations:
    fields: dict[str, Any] = {
        "injection_p95_ms": 120.0, "cache_hit_rate": 0.8, "error_rate": 0.0005,
        "heap_mb": 150.0, "db_p95_ms": 4.0, "critical_alerts": (),
        "coverage": "aggregate", "covered_seconds": 3600.0,
        "starts_at": NOW - HOUR, "ends_at": NOW,
    }  # fmt: skip
    fields.update(changes)
    return gates.Observations(**fields)


BASELINE = gates.Baseline(4.0, NOW, "test")


def judge(gate: int, seen: gates.Observations, **options: Any) -> gates.GateReport:
    """Gate ``gate`` on ``seen`` for STAGE over an hour, with BASELINE unless told."""
    arguments: dict[str, Any] = {"stage": STAGE, "window": HOUR, "baseline": BASELINE}
    arguments.update(options)
    return gates.evaluate_gate(gate, seen, **arguments)


def failed(report: gates.GateReport) -> list[str]:
    return [result.criterion for result in report.results if not result.passed]


def test_a_healthy_system_passes_every_gate() -> None:
    for gate in (1, 2):
        report = judge(gate, observed())
        assert (report.verdict, failed(report), report.notes) == ("GO", [], ())
    report = judge(3, observed(coverage="worst slice"), rollbacks=[])
    assert (report.verdict, failed(report), report.notes) == ("GO", [], ())


@pytest.mark.parametrize(
    ("gate", "changes", "criterion"),
    [
        (1, {"injection_p95_ms": 200.0}, "injection latency p95"),
        (1, {"injection_p95_ms": None}, "injection latency p95"),
        (1, {"cache_hit_rate": 0.6}, "cache hit rate"),
        (1, {"error_rate": 0.005}, "error rate"),
        (1, {"heap_mb": 500.0}, "heap"),
        (1, {"critical_alerts": ("MemoryHeapAbove1GB",)}, "no critical alert firing"),
        (1, {"critical_alerts": None}, "no critical alert firing"),
        (2, {"cache_hit_rate": 0.7}, "cache hit rate"),
        (2, {"error_rate": 0.001}, "error rate"),
        (2, {"db_p95_ms": 4.41}, "database p95 vs baseline"),
        (2, {"db_p95_ms": None}, "database p95 vs baseline"),
    ],
    ids=lambda value: str(value) if not isinstance(value, dict) else "-".join(value),
)
def test_each_threshold_is_strict(gate: int, changes: dict[str, Any], criterion: str) -> None:
    report = judge(gate, observed(**changes))
    assert report.verdict == "NO-GO"
    assert failed(report) == [criterion]


def test_gate_1_is_looser_than_gate_2() -> None:
    between = observed(cache_hit_rate=0.65, error_rate=0.003)
    assert judge(1, between).go
    assert failed(judge(2, between)) == ["cache hit rate", "error rate"]


def test_the_baseline_tolerance_is_ten_percent() -> None:
    assert judge(2, observed(db_p95_ms=4.4)).go


def test_gate_2_without_a_baseline_says_how_to_record_one() -> None:
    report = judge(2, observed(), baseline=None)
    assert failed(report) == ["database p95 vs baseline"]
    assert "memctl gates --record-baseline" in report.results[-1].observed


def test_gate_3_needs_the_whole_window_and_no_rollback() -> None:
    event = gates.RollbackEvent(NOW, "USE_ENHANCED_INJECTION", "set", "ada", "50% -> 10%")
    report = judge(3, observed(covered_seconds=600.0), rollbacks=[event])
    assert failed(report) == ["evidence covers the window", "no rollback event in the window"]
    assert "USE_ENHANCED_INJECTION 50% -> 10% by ada" in report.results[-1].observed
    # Rollback events that could not be read are not "none".
    assert failed(judge(3, observed())) == ["no rollback event in the window"]


def test_an_unknown_gate_is_refused() -> None:
    with pytest.raises(InvalidInputError, match="gate: must be 1, 2 or 3"):
        judge(4, observed())


# -- stale, short and partial evidence ------------------------------------------------------


def rows(report: gates.GateReport) -> dict[str, gates.CriterionResult]:
    return {result.criterion: result for result in report.results}


def test_the_issue_case_a_snapshot_from_before_the_stage_is_refused() -> None:
    # A 20-second snapshot taken eight minutes before the 10 % stage began, judged on a
    # 20-second window: every figure passes, alerts included, and still it is NO-GO.
    began = NOW - 10 * timedelta(minutes=1)
    ends = began - timedelta(minutes=8)
    seen = observed(
        starts_at=ends - timedelta(seconds=20), ends_at=ends, covered_seconds=20.0,
        coverage="snapshot", refresh="Take a new snapshot.",
    )  # fmt: skip
    stage = gates.Stage(FLAG, 10, 0, began, 3)
    report = judge(1, seen, stage=stage, window=timedelta(seconds=20), source="snapshot m.json")
    assert (report.verdict, failed(report)) == ("NO-GO", ["evidence from the current stage"])
    row = rows(report)["evidence from the current stage"]
    assert row.threshold == f"starts at or after 2026-11-23 11:50:00 UTC ({FLAG} at 10%)"
    assert row.observed == "starts 2026-11-23 11:41:40 UTC, 8m20s earlier"
    assert report.notes == (
        f"Stale evidence: {FLAG} went 0% -> 10% at 2026-11-23 11:50:00 UTC (flag audit #3), "
        "but the evidence from snapshot m.json starts at 2026-11-23 11:41:40 UTC, in the "
        "stage before; all of it is from before this stage.",
        "Take a new snapshot.",
    )


def test_a_window_reaching_back_before_the_stage_is_refused_and_says_how_much_is_fresh() -> None:
    # Prometheus at noon over the last hour; the flag went to 50 % twenty minutes ago.
    stage = gates.Stage(FLAG, 50, 10, NOW - timedelta(minutes=20), 9)
    report = judge(2, observed(), stage=stage, source="prometheus http://p")
    assert failed(report) == ["evidence from the current stage"]
    assert "only its last 20m is at this stage." in report.notes[0]


def test_evidence_that_starts_as_the_stage_begins_is_fresh() -> None:
    stage = gates.Stage(FLAG, 10, 0, NOW - HOUR, 1)
    report = judge(1, observed(), stage=stage)
    assert report.go
    assert rows(report)["evidence from the current stage"].result == "PASS"


def test_evidence_shorter_than_the_window_is_refused() -> None:
    seen = observed(
        starts_at=NOW - timedelta(seconds=20), covered_seconds=20.0, coverage="snapshot",
        refresh="Take a new snapshot.",
    )  # fmt: skip
    report = judge(1, seen, source="snapshot m.json")
    assert failed(report) == ["evidence covers the window"]
    row = rows(report)["evidence covers the window"]
    assert (row.threshold, row.observed) == (">= 1h of data", "20s (snapshot)")
    assert report.notes == (
        "Short evidence: the gate judges a window of 1h, the evidence from snapshot m.json "
        "covers 20s.",
        "Take a new snapshot.",
    )


def test_what_a_source_cannot_show_is_not_checked_and_is_no_go() -> None:
    seen = observed(critical_alerts=None, unchecked={"critical_alerts": "no alerts here"})
    for gate in (1, 2, 3):
        report = judge(gate, seen, rollbacks=[])
        assert report.verdict == "NO-GO"
        (row,) = [result for result in report.results if not result.passed]
        assert (row.criterion.startswith("no critical alert firing"), row.result) == (
            True, "NOT CHECKED",
        )
        assert row.observed == "not checked: no alerts here"
    # The same figure, missing without a reason, is a plain failure: no data.
    row = rows(judge(1, observed(critical_alerts=None)))["no critical alert firing"]
    assert (row.result, row.observed) == ("FAIL", "no data")


@pytest.mark.parametrize(
    ("current", "wanted", "gate"),
    [(0, 10, None), (0, 5, None), (10, 50, 1), (10, 30, 1), (30, 50, 1), (50, 100, 2),
     (60, 100, 2), (50, 10, None), (100, 0, None), (100, 100, None), (10, 10, None)],
)
def test_the_gate_that_guards_a_rollout_change(current: int, wanted: int, gate: int | None) -> None:
    assert gates.gate_for_raise(current, wanted) == gate


@pytest.mark.parametrize(("current", "wanted"), [(0, 50), (5, 100), (10, 100), (10, 51)])
def test_skipping_a_stage_is_refused(current: int, wanted: int) -> None:
    with pytest.raises(InvalidInputError, match="skips a stage"):
        gates.gate_for_raise(current, wanted)


@pytest.mark.parametrize("text", ["", "1", "h", "0m", "-5m", "1.5h", "10w", "1 h x"])
def test_bad_windows_are_refused(text: str) -> None:
    with pytest.raises(InvalidInputError, match="window"):
        gates.parse_window(text)


def test_windows() -> None:
    assert gates.parse_window("30s") == timedelta(seconds=30)
    assert gates.parse_window(" 2d ") == timedelta(days=2)


# -- the snapshot source and the baseline file ------------------------------------------------


def write(tmp_path: Path, snapshot: snapshots.MetricsSnapshot, name: str = "m.json") -> Path:
    return snapshots.write_snapshot(tmp_path / name, snapshot)


def test_a_snapshot_gives_its_own_figures_and_window_and_no_alerts(tmp_path: Path) -> None:
    source = gates.SnapshotSource(write(tmp_path, HEALTHY))
    seen = source.observe(timedelta(hours=1), worst=True)
    assert seen == observed(
        db_p95_ms=4.0, coverage="snapshot", covered_seconds=HEALTHY.window_seconds,
        critical_alerts=None,
        unchecked={"critical_alerts": "a snapshot carries no alerts (judge with --prometheus)"},
        refresh=seen.refresh,
    )  # fmt: skip
    assert "memctl workload --snapshot FILE" in seen.refresh


def test_a_healthy_fresh_snapshot_is_still_no_go_its_alerts_not_checked(tmp_path: Path) -> None:
    seen = gates.SnapshotSource(write(tmp_path, HEALTHY)).observe(HOUR, worst=False)
    report = judge(1, seen)
    assert (report.verdict, failed(report)) == ("NO-GO", ["no critical alert firing"])
    assert rows(report)["no critical alert firing"].result == "NOT CHECKED"


def test_a_snapshot_without_time_zones_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, HEALTHY)
    document = json.loads(path.read_text("utf-8"))
    document["window"]["start"] = "2026-11-23T11:00:00"
    path.write_text(json.dumps(document), "utf-8")
    with pytest.raises(InvalidInputError, match="2026-11-23T11:00:00 has no time zone"):
        gates.SnapshotSource(path)


def test_the_baseline_round_trips_and_defaults_to_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(gates.BASELINE_ENV, str(tmp_path / "b.json"))
    assert gates.read_baseline() is None
    recorded = gates.record_baseline(
        gates.SnapshotSource(write(tmp_path, HEALTHY)), timedelta(hours=1)
    )
    assert gates.read_baseline() == recorded
    assert recorded.db_p95_ms == 4.0
    (tmp_path / "b.json").write_text("{}", "utf-8")
    with pytest.raises(InvalidInputError, match="not a gates baseline"):
        gates.read_baseline()


def test_a_baseline_needs_database_durations(tmp_path: Path) -> None:
    empty = replace(HEALTHY, db_query_duration=latency(None))
    with pytest.raises(InvalidInputError, match="no database statement durations"):
        gates.record_baseline(
            gates.SnapshotSource(write(tmp_path, empty)), timedelta(hours=1), tmp_path / "b.json"
        )
    assert not (tmp_path / "b.json").exists()


# -- rollback events from the flag audit ------------------------------------------------------


@pytest.fixture
def database(tmp_path: Path) -> Iterator[str]:
    yield upgraded_from_phase_1(f"sqlite:///{tmp_path / 'gates.db'}")


def test_rollback_events_are_resets_and_lowered_rollouts(database: str) -> None:
    with Memory.open(database) as memory:
        provider = DatabaseFlagProvider(memory.engine)
        start = datetime.now(UTC) - timedelta(seconds=1)
        provider.set_flag("USE_ENHANCED_INJECTION", rollout=10, actor="ada")
        provider.set_flag("USE_ENHANCED_INJECTION", rollout=50, actor="ada")
        assert gates.rollback_events(memory.engine, start) == []
        provider.set_flag("USE_ENHANCED_INJECTION", rollout=10, actor="bob")
        provider.set_flag("USE_CROSS_AGENT_SHARING", on=True, actor="ada")
        provider.set_flag("USE_CROSS_AGENT_SHARING", on=False, actor="cy")
        provider.reset(actor="dee")
        events = gates.rollback_events(memory.engine, start)
        assert [(e.flag, e.action, e.actor, e.detail) for e in events] == [
            ("USE_ENHANCED_INJECTION", "set", "bob", "50% -> 10%"),
            ("USE_CROSS_AGENT_SHARING", "set", "cy", "100% -> 0%"),
            ("USE_CROSS_AGENT_SHARING", "reset", "dee", "0% -> 0%"),
            ("USE_ENHANCED_INJECTION", "reset", "dee", "10% -> 0%"),
        ]
        assert gates.rollback_events(memory.engine, datetime.now(UTC) + timedelta(1)) == []


# -- the command --------------------------------------------------------------------------------


def memctl(database: str, *arguments: str | Path) -> Result:
    return CliRunner().invoke(main, ["--database-url", database, *map(str, arguments)])


def stage(database: str, *rollouts: int) -> datetime:
    """Roll FLAG through ``rollouts`` (straight to the store: no gate) and return the time
    after the last change, when fresh evidence may start."""
    with Memory.open(database) as memory:
        provider = DatabaseFlagProvider(memory.engine)
        for rollout in rollouts:
            provider.set_flag(FLAG, rollout=rollout, actor="ada")
    return datetime.now(UTC)


def fresh(
    tmp_path: Path, since: datetime, template: snapshots.MetricsSnapshot = HEALTHY,
    name: str = "fresh.json",
) -> Path:
    """A snapshot of ``template``'s figures over the hour from ``since``."""
    return write(tmp_path, replace(template, window_start=since, window_end=since + HOUR), name)


def test_the_command_prints_a_table_and_exits_1_as_a_snapshot_shows_no_alerts(
    tmp_path: Path, database: str
) -> None:
    snapshot = fresh(tmp_path, stage(database, 10))
    result = memctl(database, "gates", "--gate", "1", "--flag", FLAG, "--snapshot", snapshot)
    assert result.exit_code == 1, result.output
    lines = result.output.splitlines()
    assert lines[1].split() == ["criterion", "threshold", "observed", "result"]
    cells = [re.split(r"\s{2,}", line) for line in lines[2:-1]]
    assert {row[0]: row[-1] for row in cells} == {
        "evidence from the current stage": "PASS", "evidence covers the window": "PASS",
        "injection latency p95": "PASS", "cache hit rate": "PASS", "error rate": "PASS",
        "heap": "PASS", "no critical alert firing": "NOT CHECKED",
    }  # fmt: skip
    assert lines[-2].endswith(
        "not checked: a snapshot carries no alerts (judge with --prometheus)  NOT CHECKED"
    )
    assert lines[-1] == "GATE 1: NO-GO"


def test_the_command_refuses_a_stale_snapshot_and_says_why_in_json(
    tmp_path: Path, database: str
) -> None:
    # HEALTHY's window ended before the stage began (NOW is in the past).
    began = stage(database, 10)
    result = memctl(
        database, "gates", "--gate", "1", "--flag", FLAG, "--snapshot", write(tmp_path, HEALTHY),
        "--window", "1h", "--json",
    )  # fmt: skip
    assert result.exit_code == 1
    document = json.loads(result.output)
    assert document["verdict"] == "NO-GO"
    results = {c["criterion"]: c["result"] for c in document["criteria"]}
    assert (results["evidence from the current stage"], results["no critical alert firing"]) == (
        "FAIL", "NOT CHECKED",
    )
    assert results["evidence covers the window"] == "PASS"
    stale, refresh = document["notes"]
    assert stale.startswith(f"Stale evidence: {FLAG} went 0% -> 10% at {began:%Y-%m-%d %H:%M}")
    assert stale.endswith(
        "starts at 2026-11-23 11:00:00 UTC, in the stage before; all of it is from before "
        "this stage."
    )
    assert refresh.startswith("For fresh evidence, write a new snapshot that starts after")


def test_the_command_exits_1_on_no_go_with_json(tmp_path: Path, database: str) -> None:
    slow = replace(HEALTHY, injection_latency=latency(350.0))
    snapshot = fresh(tmp_path, stage(database, 10), slow)
    result = memctl(
        database, "gates", "--gate", "1", "--flag", FLAG, "--snapshot", snapshot, "--json"
    )
    assert result.exit_code == 1
    document = json.loads(result.output)
    assert (document["verdict"], document["notes"]) == ("NO-GO", [])
    assert [c["criterion"] for c in document["criteria"] if not c["passed"]] == [
        "injection latency p95", "no critical alert firing",
    ]


def test_record_baseline_then_gate_2_and_gate_3(tmp_path: Path, database: str) -> None:
    baseline = tmp_path / "baseline.json"
    recorded = memctl(
        database, "gates", "--record-baseline", "--snapshot", write(tmp_path, HEALTHY),
        "--baseline", baseline,
    )  # fmt: skip
    assert recorded.exit_code == 0, recorded.output
    assert "database p95 4.00 ms" in recorded.output
    snapshot = fresh(tmp_path, stage(database, 10, 50, 100))

    def judged(gate: str) -> dict[str, str]:
        result = memctl(database, "gates", "--gate", gate, "--flag", FLAG, "--snapshot",
                        snapshot, "--baseline", baseline, "--json")  # fmt: skip
        assert result.exit_code == 1, result.output
        return {c["criterion"]: c["result"] for c in json.loads(result.output)["criteria"]}

    assert judged("2")["database p95 vs baseline"] == "PASS"
    assert judged("3")["no rollback event in the window"] == "PASS"
    # A rollback in the window fails gate 3's row (and, FLAG's stage being new, the evidence).
    assert memctl(database, "flags", "reset").exit_code == 0
    after = judged("3")
    assert (after["no rollback event in the window"], after["evidence from the current stage"]) \
        == ("FAIL", "FAIL")


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--gate", "1", "--flag", FLAG],
         "give exactly one of --prometheus URL and --snapshot FILE"),
        (["--gate", "1", "--flag", FLAG, "--snapshot", "m.json", "--prometheus", "http://x"],
         "exactly one"),
        (["--snapshot", "m.json"], "give --gate 1, 2 or 3"),
        (["--gate", "1", "--snapshot", "m.json"], "give --flag NAME: the gate judges evidence"),
        (["--gate", "1", "--flag", "NOPE", "--snapshot", "m.json"], "unknown flag 'NOPE'"),
        (["--gate", "1", "--flag", "USE_HIERARCHICAL_TIERS", "--snapshot", "m.json"],
         "USE_HIERARCHICAL_TIERS: the flag audit has no rollout change of it"),
        (["--gate", "1", "--flag", FLAG, "--snapshot", "m.json", "--match", "job=x"],
         "--prometheus only"),
        (["--gate", "1", "--flag", FLAG, "--prometheus", "http://x", "--match", "job"],
         "expected LABEL=VALUE"),
        (["--gate", "1", "--flag", FLAG, "--snapshot", "m.json", "--window", "1w"], "window: '1w'"),
        (["--gate", "1", "--flag", FLAG, "--prometheus", "ftp://x"], "not an http(s) URL"),
        (["--gate", "1", "--flag", FLAG, "--snapshot", "missing.json"], "snapshot: cannot read"),
        (["--gate", "1", "--record-baseline", "--snapshot", "m.json"], "takes no --gate"),
        (["--flag", FLAG, "--record-baseline", "--snapshot", "m.json"], "and no --flag"),
    ],
)  # fmt: skip
def test_bad_input_is_named(
    tmp_path: Path, database: str, monkeypatch: pytest.MonkeyPatch, arguments: list[str],
    message: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    write(tmp_path, HEALTHY)
    stage(database, 10)
    result = memctl(database, "gates", *arguments)
    assert result.exit_code in (1, 2)
    assert message in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / gates.DEFAULT_BASELINE_PATH).exists()


def test_an_unreachable_prometheus_is_an_error_not_a_verdict(database: str) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    stage(database, 10)
    result = memctl(
        database, "gates", "--gate", "1", "--flag", FLAG, "--prometheus", f"http://127.0.0.1:{port}"
    )
    assert result.exit_code == 1
    assert f"Error: prometheus: cannot query http://127.0.0.1:{port}" in result.output
    assert "GO" not in result.output


# -- memctl flags set --rollout is held by the gates ------------------------------------------


def rollout_of(database: str, flag: str) -> tuple[int, str | None]:
    """The flag's effective rollout and the reason of its newest audit entry."""
    with Memory.open(database) as memory:
        provider = DatabaseFlagProvider(memory.engine)
        stored = next(f for f in provider.flags() if f.name == flag)
        audit = provider.audit(flag, limit=1)
    return (stored.rollout if stored.enabled else 0), (audit[0].reason if audit else None)


def test_raising_a_rollout_needs_the_current_stage_gate(tmp_path: Path, database: str) -> None:
    # The issue's case: a 20-second snapshot taken eight minutes before the 10 % stage.
    ended = datetime.now(UTC) - timedelta(minutes=8)
    early = write(
        tmp_path, replace(HEALTHY, window_start=ended - timedelta(seconds=20), window_end=ended),
        "early.json",
    )  # fmt: skip
    baseline = tmp_path / "baseline.json"
    gates.record_baseline(gates.SnapshotSource(early), HOUR, baseline)

    # Entering the first stage needs no gate.
    assert memctl(database, "flags", "set", FLAG, "--rollout", "10").exit_code == 0
    # 10 -> 50 needs gate 1: without a source it cannot be evaluated, so it is refused.
    refused = memctl(database, "flags", "set", FLAG, "--rollout", "50")
    assert refused.exit_code == 2
    assert "needs gate 1; give --prometheus URL or --snapshot FILE" in refused.output
    assert rollout_of(database, FLAG) == (10, None)
    # Skipping a stage is refused whatever the gate says.
    skipped = memctl(database, "flags", "set", FLAG, "--on", "--snapshot", early)
    assert skipped.exit_code == 2
    assert "10% -> 100% skips a stage; the next stage is 50%" in skipped.output
    # The snapshot from before the stage is refused, with the table and a note saying why.
    stale = memctl(database, "flags", "set", FLAG, "--rollout", "50", "--snapshot", early,
                   "--window", "20s")  # fmt: skip
    assert stale.exit_code == 2
    assert (
        f"{FLAG}: gate 1 is NO-GO (evidence from the current stage, no critical alert firing "
        "(not checked)); the rollout stays at 10%"
    ) in stale.output
    assert f"note: Stale evidence: {FLAG} went 0% -> 10% at" in stale.output
    assert rollout_of(database, FLAG) == (10, None)
    # --force goes ahead, and the audit says which gate was overridden and why.
    forced = memctl(database, "flags", "set", FLAG, "--rollout", "50", "--snapshot", early,
                    "--window", "20s", "--force", "--reason", "incident 42")  # fmt: skip
    assert forced.exit_code == 0, forced.output
    assert rollout_of(database, FLAG) == (
        50, "incident 42; forced past gate 1 (NO-GO: evidence from the current stage, "
        "no critical alert firing (not checked))",
    )  # fmt: skip
    # The same snapshot cannot carry the next step either: the 50 % stage is newer still.
    again = memctl(database, "flags", "set", FLAG, "--rollout", "100", "--snapshot", early,
                   "--window", "20s", "--baseline", baseline)  # fmt: skip
    assert again.exit_code == 2
    assert "gate 2 is NO-GO (evidence from the current stage" in again.output
    assert rollout_of(database, FLAG)[0] == 50
    # Lowering is never held (it is how a rollback starts).
    assert memctl(database, "flags", "set", FLAG, "--off").exit_code == 0
    assert rollout_of(database, FLAG)[0] == 0
