"""The flag verbs of ``memory.ops`` without the CLI, on SQLite and PostgreSQL: the rollout
moves one stage at a time and only on a GO gate judged on evidence from the current stage
(the GO itself needs Prometheus: tests/ops/test_gates_prometheus.py), ``force`` is audited,
a lowered rollout is never held, and the usage rules of ``set``, ``override`` and the gate
sources."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from flags import USE_CROSS_AGENT_SHARING, USE_ENHANCED_INJECTION, USE_HIERARCHICAL_TIERS
from memory import InvalidInputError, SchemaError
from memory import ops as ops
from memory.ops.gates import current_stage
from memory.store.engine import engine_for
from tests.ops.healthy import HEALTHY, latency
from tests.stores import upgraded_from_phase_1

# The flags are tested as an operator's store holds them, not switched on by the environment.
pytestmark = pytest.mark.flags_as_configured

FLAG = USE_ENHANCED_INJECTION
SLOW = replace(HEALTHY, injection_latency=latency(350.0))


@pytest.fixture(params=["sqlite-file", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database at head that agents already use, with every flag off as a store upgraded
    from Phase 1 has them: a SQLite file, or a throwaway PostgreSQL database."""
    if request.param == "sqlite-file":
        url = f"sqlite:///{tmp_path / 'flags.db'}"
    else:
        make: Callable[[], str] = request.getfixturevalue("make_postgres_database")
        url = make()
    return upgraded_from_phase_1(url)


@pytest.fixture
def healthy(tmp_path: Path) -> ops.GateOptions:
    """Gate options reading a healthy snapshot (from before any stage the test begins), with
    a baseline recorded from it."""
    path = ops.write_snapshot(tmp_path / "healthy.json", HEALTHY)
    options = ops.GateOptions(snapshot_path=path, baseline_file=tmp_path / "baseline.json")
    ops.record_gate_baseline(options)
    return options


def fresh(options: ops.GateOptions, snapshot: ops.MetricsSnapshot) -> ops.GateOptions:
    """``options`` reading ``snapshot``'s figures over the hour from now: evidence from the
    stage the test just set, as long as the default window."""
    now = datetime.now(UTC)
    assert options.snapshot_path is not None
    path = options.snapshot_path.with_name("fresh.json")
    moved = replace(snapshot, window_start=now, window_end=now + timedelta(hours=1))
    return replace(options, snapshot_path=ops.write_snapshot(path, moved))


def state(database: str) -> tuple[int, str | None]:
    """FLAG's effective rollout and the reason of its newest audit entry."""
    flag = next(item.flag for item in ops.list_flags(database, {}).flags if item.flag.name == FLAG)
    audit = ops.audit_flags(database, FLAG, limit=1)
    return (flag.rollout if flag.enabled else 0), (audit[0].reason if audit else None)


def set_to(
    database: str,
    rollout: int,
    *,
    gate: ops.GateOptions | None = None,
    force: bool = False,
    reason: str | None = None,
) -> ops.FlagChange:
    return ops.set_flag(
        database, FLAG, rollout=rollout, actor="alice", reason=reason, force=force, gate=gate
    )


def test_entering_the_first_stage_needs_no_gate(database: str) -> None:
    change = set_to(database, 10, reason="start")
    assert (change.flag.rollout, change.gate_report, change.note) == (10, None, None)
    assert state(database) == (10, "start")


def test_raising_without_a_source_is_refused_and_changes_nothing(database: str) -> None:
    set_to(database, 10)
    with pytest.raises(ops.RefusedError) as refused:
        set_to(database, 50)
    assert str(refused.value) == (
        f"{FLAG}: raising the rollout 10% -> 50% needs gate 1; give --prometheus URL or "
        "--snapshot FILE to evaluate it (or --force)"
    )
    assert refused.value.report is None
    assert state(database) == (10, None)


def test_a_snapshot_from_before_the_stage_is_refused(
    database: str, healthy: ops.GateOptions
) -> None:
    # The case: one snapshot, taken before the 10 % stage began, for 10 -> 50.
    set_to(database, 10)
    with pytest.raises(ops.RefusedError) as refused:
        set_to(database, 50, gate=healthy)
    assert str(refused.value) == (
        f"{FLAG}: gate 1 is NO-GO (evidence from the current stage, no critical alert firing "
        "(not checked)); the rollout stays at 10% (--force to override; it is audited)"
    )
    report = refused.value.report
    assert report is not None
    assert report.notes[0].startswith(f"Stale evidence: {FLAG} went 0% -> 10% at ")
    assert "starts at 2026-11-23 11:00:00 UTC, in the stage before" in report.notes[0]
    assert state(database) == (10, None)


def test_a_fresh_snapshot_is_accepted_but_cannot_show_alerts(
    database: str, healthy: ops.GateOptions
) -> None:
    set_to(database, 10)
    with pytest.raises(ops.RefusedError) as refused:
        set_to(database, 50, gate=fresh(healthy, HEALTHY))
    report = refused.value.report
    assert report is not None and report.notes == ()
    assert {r.criterion: r.result for r in report.results if not r.passed} == {
        "no critical alert firing": "NOT CHECKED"
    }
    assert state(database) == (10, None)


def test_the_stage_begins_at_the_last_change_of_the_effective_rollout(database: str) -> None:
    with engine_for(database) as engine:
        with pytest.raises(ops.RefusedError, match="the flag audit has no rollout change"):
            current_stage(engine, FLAG)
        set_to(database, 10)
        first = current_stage(engine, FLAG)
        # Neither the same rollout again nor an allow list or an override begins a stage.
        set_to(database, 10, reason="again")
        ops.allow_agent(database, FLAG, "planner", actor="alice")
        ops.override_flag(database, FLAG, session="s1", on=True, actor="alice")
        assert current_stage(engine, FLAG) == first
        assert (first.flag, first.previous, first.rollout) == (FLAG, 0, 10)
        set_to(database, 50, force=True)
        raised = current_stage(engine, FLAG)
        assert (raised.previous, raised.rollout) == (10, 50)
        assert raised.started_at >= first.started_at and raised.audit_id > first.audit_id
        set_to(database, 10)
        assert (current_stage(engine, FLAG).previous, current_stage(engine, FLAG).rollout) == (
            50, 10,
        )
        ops.reset_flags(database, actor="alice")
        assert current_stage(engine, FLAG).rollout == 0
        with pytest.raises(InvalidInputError, match="unknown flag 'NOPE'"):
            current_stage(engine, "NOPE")


def test_skipping_a_stage_is_refused_even_on_go(database: str, healthy: ops.GateOptions) -> None:
    set_to(database, 10)
    with pytest.raises(ops.RefusedError, match="10% -> 100% skips a stage; the next stage is 50%"):
        ops.set_flag(database, FLAG, on=True, actor="alice", gate=healthy)
    assert state(database) == (10, None)


def test_a_no_go_gate_holds_the_rollout_and_carries_its_report(
    database: str, healthy: ops.GateOptions
) -> None:
    set_to(database, 10)
    set_to(database, 50, force=True, reason="gate 1 forced")
    with pytest.raises(ops.RefusedError) as held:
        set_to(database, 100, gate=fresh(healthy, SLOW))
    assert str(held.value) == (
        f"{FLAG}: gate 2 is NO-GO (injection latency p95, no critical alert firing (not "
        "checked)); the rollout stays at 50% (--force to override; it is audited)"
    )
    assert held.value.report is not None and held.value.report.verdict == "NO-GO"
    assert state(database)[0] == 50


def test_force_goes_past_a_no_go_gate_and_the_audit_says_so(
    database: str, healthy: ops.GateOptions
) -> None:
    set_to(database, 10)
    set_to(database, 50, force=True)
    change = set_to(database, 100, gate=fresh(healthy, SLOW), force=True, reason="incident 42")
    failed = "injection latency p95, no critical alert firing (not checked)"
    assert change.note == f"forced past gate 2 (NO-GO: {failed})"
    assert change.gate_report is not None and not change.gate_report.go
    assert state(database) == (100, f"incident 42; forced past gate 2 (NO-GO: {failed})")


def test_force_without_a_source_and_past_a_skipped_stage_is_audited(database: str) -> None:
    set_to(database, 10)
    assert set_to(database, 50, force=True).note == "forced past gate 1 without evaluating it"
    assert state(database) == (50, "forced past gate 1 without evaluating it")
    set_to(database, 0)
    skipped = set_to(database, 100, force=True)
    assert skipped.note is not None and skipped.note.startswith(
        "forced: rollout: 0% -> 100% skips a stage; the next stage is 10%"
    )
    assert state(database) == (100, skipped.note)


def test_lowering_and_switching_off_are_never_held(database: str) -> None:
    set_to(database, 10)
    set_to(database, 50, force=True)
    assert set_to(database, 10).gate_report is None
    change = ops.set_flag(database, FLAG, on=False, actor="alice")
    assert (change.flag.enabled, change.note) == (False, None)


@pytest.mark.parametrize(
    ("on", "rollout"), [(None, None), (True, 10)], ids=["neither", "both"]
)
def test_set_needs_exactly_one_of_on_and_rollout(
    database: str, on: bool | None, rollout: int | None
) -> None:
    with pytest.raises(ops.RefusedError, match="give exactly one of --on, --off and --rollout N"):
        ops.set_flag(database, FLAG, on=on, rollout=rollout, actor="alice")
    assert ops.audit_flags(database) == []


def test_an_unknown_flag_and_a_bad_percentage_are_named(database: str) -> None:
    with pytest.raises(InvalidInputError, match="unknown flag 'USE_NOTHING'"):
        ops.set_flag(database, "USE_NOTHING", on=True, actor="alice")
    with pytest.raises(InvalidInputError, match="rollout: must be a whole percentage"):
        set_to(database, 150)
    assert ops.audit_flags(database) == []


@pytest.mark.parametrize("rollout", ["10", 12.5, True])
def test_a_rollout_of_the_wrong_type_is_named_and_writes_nothing(
    database: str, rollout: object
) -> None:
    with pytest.raises(InvalidInputError, match="rollout: must be a whole percentage"):
        ops.set_flag(database, FLAG, rollout=rollout, actor="alice")  # type: ignore[arg-type]
    assert ops.audit_flags(database) == []


def test_on_must_be_a_boolean(database: str) -> None:
    with pytest.raises(InvalidInputError, match="on: must be True or False"):
        ops.set_flag(database, FLAG, on="yes", actor="alice")  # type: ignore[arg-type]
    assert ops.audit_flags(database) == []


def test_override_needs_exactly_one_of_on_and_clear(database: str) -> None:
    for on, clear in ((None, False), (True, True)):
        with pytest.raises(ops.RefusedError, match="give exactly one of --on, --off and --clear"):
            ops.override_flag(database, FLAG, session="s", on=on, clear=clear, actor="alice")
    flag = ops.override_flag(
        database, FLAG, session="s", on=True, ttl=timedelta(hours=2), actor="alice"
    )
    assert [(o.session_id, o.enabled) for o in flag.overrides] == [("s", True)]
    cleared = ops.override_flag(database, FLAG, session="s", clear=True, actor="alice")
    assert cleared.overrides == ()


def test_allow_deny_reset_and_audit(database: str) -> None:
    allowed = ops.allow_agent(database, USE_CROSS_AGENT_SHARING, "planner", actor="alice")
    assert allowed.allowed_agents == ("planner",)
    denied = ops.deny_agent(database, FLAG, "legacy", actor="alice", reason="broken")
    assert denied.denied_agents == ("legacy",)
    removed = ops.deny_agent(database, FLAG, "legacy", remove=True, actor="alice")
    assert removed.denied_agents == ()
    assert [e.action for e in ops.audit_flags(database)] == ["deny", "deny", "allow"]
    assert ops.reset_flags(database, actor="alice") == sorted([USE_CROSS_AGENT_SHARING, FLAG])
    assert ops.reset_flags(database, actor="alice") == []


def test_list_shows_the_environment_as_the_source_and_warns_of_bad_values(
    database: str,
) -> None:
    set_to(database, 10)
    listing = ops.list_flags(
        database, {USE_HIERARCHICAL_TIERS: "off", USE_CROSS_AGENT_SHARING: "maybe"}
    )
    sources = {item.flag.name: (item.source, item.environment) for item in listing.flags}
    assert sources[FLAG] == ("database", None)
    assert sources[USE_HIERARCHICAL_TIERS] == ("environment", "off")
    assert sources[USE_CROSS_AGENT_SHARING] == ("default", None)
    assert len(listing.warnings) == 1 and "USE_CROSS_AGENT_SHARING='maybe'" in listing.warnings[0]


def test_explain_names_the_deciding_rule(
    database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(InvalidInputError, match="unknown flag 'USE_NOTHING'; known flags: "):
        ops.explain_flag(database, "USE_NOTHING")
    ops.set_flag(database, FLAG, rollout=10, actor="alice")
    ops.deny_agent(database, FLAG, "legacy", actor="alice")
    decision = ops.explain_flag(database, FLAG, user="u", agent="legacy")
    assert (decision.rule.value, decision.enabled) == ("deny_list", False)
    monkeypatch.setenv(FLAG, "maybe")
    with pytest.raises(InvalidInputError, match="USE_ENHANCED_INJECTION='maybe'"):
        ops.explain_flag(database, FLAG, user="u")


def test_before_revision_0007_the_flag_verbs_say_to_migrate(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    ops.migrate(url, "0006")
    for verb in (
        lambda: ops.list_flags(url),
        lambda: ops.set_flag(url, FLAG, on=True, actor="alice"),
        lambda: ops.reset_flags(url, actor="alice"),
        lambda: ops.audit_flags(url),
    ):
        with pytest.raises(SchemaError, match="feature flags need schema revision 0007"):
            verb()


# -- the gate sources ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (ops.GateOptions(), "give exactly one of --prometheus URL and --snapshot FILE"),
        (
            ops.GateOptions(prometheus_url="http://127.0.0.1:1", snapshot_path=Path("m.json")),
            "give exactly one of --prometheus URL and --snapshot FILE",
        ),
        (
            ops.GateOptions(snapshot_path=Path("m.json"), matchers=("job=memory",)),
            "--match applies to --prometheus only",
        ),
        (
            ops.GateOptions(prometheus_url="http://127.0.0.1:1", matchers=("job",)),
            "--match 'job': expected LABEL=VALUE, e.g. job=memory",
        ),
    ],
    ids=["neither", "both", "match-on-snapshot", "bad-matcher"],
)
def test_a_gate_source_must_be_named_exactly_once(
    database: str, options: ops.GateOptions, message: str
) -> None:
    with pytest.raises(ops.RefusedError) as refused:
        ops.check_gate(database, 1, options, flag=FLAG)
    assert str(refused.value) == message


def test_gate_3_reads_the_rollback_events_of_the_database(
    database: str, healthy: ops.GateOptions
) -> None:
    def rollback_criterion() -> bool:
        report = ops.check_gate(database, 3, replace(healthy, window="1h"), flag=FLAG)
        return next(
            r.passed for r in report.results if r.criterion == "no rollback event in the window"
        )

    set_to(database, 10)
    assert rollback_criterion()
    ops.reset_flags(database, actor="alice")
    assert not rollback_criterion()


def test_record_gate_baseline_writes_the_file_it_names(healthy: ops.GateOptions) -> None:
    recorded = ops.record_gate_baseline(healthy)
    assert recorded.path == healthy.baseline_file
    assert recorded.baseline.db_p95_ms == 4.0
