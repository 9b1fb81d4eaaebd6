"""``memctl gates`` and ``memory.ops.gates``: thresholds, baseline, rollback events, the stage
rules of ``memctl flags set --rollout``, and the command's table, JSON and exit codes.

The Prometheus source against a real Prometheus server: tests/test_gates_prometheus.py."""

from __future__ import annotations

import json
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


def observed(**changes: Any) -> gates.Observations:
    fields: dict[str, Any] = {
        "injection_p95_ms": 120.0, "cache_hit_rate": 0.8, "error_rate": 0.0005,
        "heap_mb": 150.0, "db_p95_ms": 4.0, "critical_alerts": (),
        "coverage": "aggregate", "covered_seconds": 3600.0,
    }  # fmt: skip
    fields.update(changes)
    return gates.Observations(**fields)


BASELINE = gates.Baseline(4.0, NOW, "test")


def failed(report: gates.GateReport) -> list[str]:
    return [result.criterion for result in report.results if not result.passed]


def test_a_healthy_system_passes_every_gate() -> None:
    for gate in (1, 2):
        report = gates.evaluate_gate(gate, observed(), baseline=BASELINE)
        assert (report.verdict, failed(report)) == ("GO", [])
    report = gates.evaluate_gate(
        3, observed(coverage="worst slice"), baseline=BASELINE, rollbacks=[],
        window=timedelta(hours=1),
    )
    assert (report.verdict, failed(report)) == ("GO", [])


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
    report = gates.evaluate_gate(gate, observed(**changes), baseline=BASELINE)
    assert report.verdict == "NO-GO"
    assert failed(report) == [criterion]


def test_gate_1_is_looser_than_gate_2() -> None:
    between = observed(cache_hit_rate=0.65, error_rate=0.003)
    assert gates.evaluate_gate(1, between).go
    assert failed(gates.evaluate_gate(2, between, baseline=BASELINE)) == [
        "cache hit rate", "error rate",
    ]


def test_the_baseline_tolerance_is_ten_percent() -> None:
    assert gates.evaluate_gate(2, observed(db_p95_ms=4.4), baseline=BASELINE).go


def test_gate_2_without_a_baseline_says_how_to_record_one() -> None:
    report = gates.evaluate_gate(2, observed())
    assert failed(report) == ["database p95 vs baseline"]
    assert "memctl gates --record-baseline" in report.results[-1].observed


def test_gate_3_needs_the_whole_window_and_no_rollback() -> None:
    event = gates.RollbackEvent(NOW, "USE_ENHANCED_INJECTION", "set", "ada", "50% -> 10%")
    report = gates.evaluate_gate(
        3, observed(covered_seconds=600.0), baseline=BASELINE, rollbacks=[event],
        window=timedelta(hours=1),
    )
    assert failed(report) == ["held over the window", "no rollback event in the window"]
    assert "USE_ENHANCED_INJECTION 50% -> 10% by ada" in report.results[-1].observed
    # Rollback events that could not be read are not "none".
    unread = gates.evaluate_gate(3, observed(), baseline=BASELINE, window=timedelta(hours=1))
    assert failed(unread) == ["no rollback event in the window"]


def test_an_unknown_gate_is_refused() -> None:
    with pytest.raises(InvalidInputError, match="gate: must be 1, 2 or 3"):
        gates.evaluate_gate(4, observed())


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


def test_a_snapshot_gives_its_own_figures(tmp_path: Path) -> None:
    source = gates.SnapshotSource(write(tmp_path, HEALTHY))
    seen = source.observe(timedelta(hours=1), worst=True)
    assert seen == observed(
        db_p95_ms=4.0, coverage="snapshot", covered_seconds=HEALTHY.window_seconds
    )


def test_a_snapshot_shows_the_critical_conditions_it_can_see(tmp_path: Path) -> None:
    sick = replace(
        HEALTHY, heap_used_mb=1500.0, errors_by_operation={"search": 60},
        rag_search_duration=replace(HEALTHY.rag_search_duration, count=100),
    )
    seen = gates.SnapshotSource(write(tmp_path, sick)).observe(timedelta(hours=1), worst=False)
    assert seen.critical_alerts == ("MemoryHeapAbove1GB", "MemoryRetrievalUnavailable")


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


def test_the_command_prints_a_table_and_exits_0_on_go(tmp_path: Path, database: str) -> None:
    result = memctl(database, "gates", "--gate", "1", "--snapshot", write(tmp_path, HEALTHY))
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[1].split() == ["criterion", "threshold", "observed", "result"]
    assert "injection latency p95     < 200 ms   120.0 ms  PASS" in lines
    assert lines[-1] == "GATE 1: GO"


def test_the_command_exits_1_on_no_go_with_json(tmp_path: Path, database: str) -> None:
    slow = replace(HEALTHY, injection_latency=latency(350.0))
    result = memctl(
        database, "gates", "--gate", "1", "--snapshot", write(tmp_path, slow), "--json"
    )
    assert result.exit_code == 1
    document = json.loads(result.output)
    assert document["verdict"] == "NO-GO"
    assert [c["criterion"] for c in document["criteria"] if not c["passed"]] == [
        "injection latency p95"
    ]


def test_record_baseline_then_gate_2_and_gate_3(tmp_path: Path, database: str) -> None:
    snapshot = write(tmp_path, HEALTHY)
    baseline = tmp_path / "baseline.json"
    recorded = memctl(
        database, "gates", "--record-baseline", "--snapshot", snapshot, "--baseline", baseline
    )
    assert recorded.exit_code == 0, recorded.output
    assert "database p95 4.00 ms" in recorded.output
    for gate in ("2", "3"):
        result = memctl(
            database, "gates", "--gate", gate, "--snapshot", snapshot, "--baseline", baseline
        )
        assert result.exit_code == 0, result.output
        assert result.output.splitlines()[-1] == f"GATE {gate}: GO"
    # A rollback in the window turns gate 3 to NO-GO.
    for command in (["set", "USE_ENHANCED_INJECTION", "--rollout", "10"], ["reset"]):
        assert memctl(database, "flags", *command).exit_code == 0
    result = memctl(
        database, "gates", "--gate", "3", "--snapshot", snapshot, "--baseline", baseline
    )
    assert result.exit_code == 1
    assert "reset USE_ENHANCED_INJECTION 10% -> 0%" in result.output


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--gate", "1"], "give exactly one of --prometheus URL and --snapshot FILE"),
        (["--gate", "1", "--snapshot", "m.json", "--prometheus", "http://x"], "exactly one"),
        (["--snapshot", "m.json"], "give --gate 1, 2 or 3"),
        (["--gate", "1", "--snapshot", "m.json", "--match", "job=x"], "--prometheus only"),
        (["--gate", "1", "--prometheus", "http://x", "--match", "job"], "expected LABEL=VALUE"),
        (["--gate", "1", "--snapshot", "m.json", "--window", "1w"], "window: '1w'"),
        (["--gate", "1", "--prometheus", "ftp://x"], "not an http(s) URL"),
        (["--gate", "1", "--snapshot", "missing.json"], "snapshot: cannot read"),
        (["--gate", "1", "--record-baseline", "--snapshot", "m.json"], "takes no --gate"),
    ],
)
def test_bad_input_is_named(
    tmp_path: Path, database: str, monkeypatch: pytest.MonkeyPatch, arguments: list[str],
    message: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    write(tmp_path, HEALTHY)
    result = memctl(database, "gates", *arguments)
    assert result.exit_code in (1, 2)
    assert message in result.output
    assert not (tmp_path / gates.DEFAULT_BASELINE_PATH).exists()


def test_an_unreachable_prometheus_is_an_error_not_a_verdict(database: str) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = memctl(database, "gates", "--gate", "1", "--prometheus", f"http://127.0.0.1:{port}")
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


FLAG = "USE_ENHANCED_INJECTION"


def test_raising_a_rollout_needs_the_current_stage_gate(tmp_path: Path, database: str) -> None:
    healthy = write(tmp_path, HEALTHY, "healthy.json")
    slow = write(tmp_path, replace(HEALTHY, injection_latency=latency(350.0)), "slow.json")
    baseline = tmp_path / "baseline.json"
    gates.record_baseline(gates.SnapshotSource(healthy), timedelta(hours=1), baseline)

    # Entering the first stage needs no gate.
    assert memctl(database, "flags", "set", FLAG, "--rollout", "10").exit_code == 0
    # 10 -> 50 needs gate 1: without a source it cannot be evaluated, so it is refused.
    refused = memctl(database, "flags", "set", FLAG, "--rollout", "50")
    assert refused.exit_code == 2
    assert "needs gate 1; give --prometheus URL or --snapshot FILE" in refused.output
    assert rollout_of(database, FLAG) == (10, None)
    # Skipping a stage is refused whatever the gate says.
    skipped = memctl(database, "flags", "set", FLAG, "--on", "--snapshot", healthy)
    assert skipped.exit_code == 2
    assert "10% -> 100% skips a stage; the next stage is 50%" in skipped.output
    # Gate 1 GO: 10 -> 50.
    raised = memctl(database, "flags", "set", FLAG, "--rollout", "50", "--snapshot", healthy,
                    "--reason", "gate 1 passed")  # fmt: skip
    assert raised.exit_code == 0, raised.output
    assert "GATE 1: GO" in raised.output
    assert rollout_of(database, FLAG) == (50, "gate 1 passed")
    # Gate 2 NO-GO (slow injections): 50 -> 100 refused, nothing written.
    held = memctl(database, "flags", "set", FLAG, "--rollout", "100", "--snapshot", slow,
                  "--baseline", baseline)  # fmt: skip
    assert held.exit_code == 2
    assert "gate 2 is NO-GO (injection latency p95); the rollout stays at 50%" in held.output
    assert rollout_of(database, FLAG) == (50, "gate 1 passed")
    # --force goes ahead, and the audit says which gate was overridden and why.
    forced = memctl(database, "flags", "set", FLAG, "--rollout", "100", "--snapshot", slow,
                    "--baseline", baseline, "--force", "--reason", "incident 42")  # fmt: skip
    assert forced.exit_code == 0, forced.output
    assert rollout_of(database, FLAG) == (
        100, "incident 42; forced past gate 2 (NO-GO: injection latency p95)"
    )
    # Lowering is never held (it is how a rollback starts).
    assert memctl(database, "flags", "set", FLAG, "--off").exit_code == 0
    assert rollout_of(database, FLAG)[0] == 0
