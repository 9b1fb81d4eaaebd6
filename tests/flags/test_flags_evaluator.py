"""FlagEvaluator: cached snapshots, timed refresh, provider failures, exported state."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING

import pytest

from flags import (
    BUILTIN_FLAGS,
    USE_CROSS_AGENT_SHARING,
    USE_ENHANCED_INJECTION,
    USE_HIERARCHICAL_TIERS,
    USE_SWARM_SIGNATURE_ENFORCEMENT,
    EvaluationContext,
    FlagDefinition,
    FlagEvaluator,
    FlagProvider,
    FlagValueError,
    InMemoryFlagProvider,
    Rule,
    export_flag_states,
)

if TYPE_CHECKING:
    from tests.flags.conftest import FakeClock

USER = EvaluationContext(user_id="u-1", session_id="s-1", agent_id="planner")


class CountingProvider:
    """Wraps a provider, counts calls and fails on demand."""

    def __init__(self, inner: InMemoryFlagProvider) -> None:
        self.inner = inner
        self.calls = 0
        self.failure: Exception | None = None
        self.result: object = None

    def snapshot(self) -> Mapping[str, FlagDefinition]:
        self.calls += 1
        if self.failure is not None:
            raise self.failure
        if self.result is not None:
            return self.result  # type: ignore[return-value]
        return self.inner.snapshot()


def _counting(rollout: int = 100) -> CountingProvider:
    return CountingProvider(
        InMemoryFlagProvider([FlagDefinition(USE_ENHANCED_INJECTION, rollout=rollout)])
    )


def _warnings(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.levelno >= logging.WARNING and r.name == "flags"]


def test_providers_satisfy_the_protocol() -> None:
    assert isinstance(InMemoryFlagProvider(), FlagProvider)
    assert isinstance(_counting(), FlagProvider)


def test_snapshot_is_cached_for_the_refresh_interval(clock: FakeClock) -> None:
    provider = _counting()
    evaluator = FlagEvaluator(provider, clock=clock, environ={})
    assert evaluator.refresh_interval == 10.0
    assert provider.calls == 1
    for _ in range(100):
        assert evaluator.is_enabled(USE_ENHANCED_INJECTION, USER)
    assert provider.calls == 1
    provider.inner.set(FlagDefinition(USE_ENHANCED_INJECTION, rollout=0))
    clock.advance(9.99)
    assert evaluator.is_enabled(USE_ENHANCED_INJECTION, USER)  # still the cached state
    assert provider.calls == 1
    clock.advance(0.01)
    assert not evaluator.is_enabled(USE_ENHANCED_INJECTION, USER)
    assert provider.calls == 2
    assert not evaluator.is_enabled(USE_ENHANCED_INJECTION, USER)
    assert provider.calls == 2


def test_refresh_interval_is_configurable(clock: FakeClock) -> None:
    provider = _counting()
    evaluator = FlagEvaluator(provider, refresh_interval=2.5, clock=clock, environ={})
    clock.advance(2.4)
    evaluator.is_enabled(USE_ENHANCED_INJECTION, USER)
    assert provider.calls == 1
    clock.advance(0.1)
    evaluator.is_enabled(USE_ENHANCED_INJECTION, USER)
    assert provider.calls == 2
    every_call = FlagEvaluator(provider, refresh_interval=0, clock=clock, environ={})
    calls = provider.calls
    every_call.is_enabled(USE_ENHANCED_INJECTION, USER)
    every_call.explain(USE_ENHANCED_INJECTION, USER)
    assert provider.calls == calls + 2


@pytest.mark.parametrize("interval", [-1, float("nan"), float("inf"), True, "10"])
def test_bad_refresh_interval_is_rejected(interval: object) -> None:
    with pytest.raises(FlagValueError, match="refresh_interval must be a finite number"):
        FlagEvaluator(refresh_interval=interval, environ={})  # type: ignore[arg-type]


def test_failing_provider_keeps_last_known_state_and_logs_once(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="flags")
    provider = _counting(rollout=100)
    evaluator = FlagEvaluator(provider, clock=clock, environ={})
    assert evaluator.is_enabled(USE_ENHANCED_INJECTION, USER)
    provider.failure = ConnectionError("database is down")
    for _ in range(5):
        clock.advance(10)
        for _ in range(20):
            # Last known state: rollout 100, not the registry's off.
            assert evaluator.is_enabled(USE_ENHANCED_INJECTION, USER)
    assert provider.calls == 6  # one read per interval, not per call
    assert evaluator.stale
    warnings = _warnings(caplog)
    assert len(warnings) == 1
    assert "database is down" in warnings[0].getMessage()
    assert "last known state" in warnings[0].getMessage()
    assert [s["source"] for s in export_flag_states(evaluator)] == [
        "registry",
        "last_known",
        "registry",
        "registry",
    ]
    # Recovery is noted, and the new state applies.
    provider.failure = None
    provider.inner.set(FlagDefinition(USE_ENHANCED_INJECTION, rollout=0))
    clock.advance(10)
    assert not evaluator.is_enabled(USE_ENHANCED_INJECTION, USER)
    assert not evaluator.stale
    assert any(r.getMessage() == "flag provider recovered" for r in caplog.records)
    # A new outage is logged again (once).
    provider.failure = TimeoutError("again")
    for _ in range(3):
        clock.advance(10)
        evaluator.is_enabled(USE_ENHANCED_INJECTION, USER)
    assert len(_warnings(caplog)) == 2


def test_provider_failing_from_the_start_uses_registry_defaults(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="flags")
    provider = _counting(rollout=100)
    provider.failure = RuntimeError("no route to host")
    registry = {
        **BUILTIN_FLAGS,
        "ON_BY_DEFAULT": FlagDefinition("ON_BY_DEFAULT", default=True),
    }
    evaluator = FlagEvaluator(provider, registry=registry, clock=clock, environ={})
    for _ in range(3):
        clock.advance(10)
        assert not evaluator.is_enabled(USE_ENHANCED_INJECTION, USER)
        assert evaluator.is_enabled("ON_BY_DEFAULT", USER)
    decision = evaluator.explain(USE_ENHANCED_INJECTION, USER)
    assert (decision.rule, decision.enabled) == (Rule.DEFAULT, False)
    warnings = _warnings(caplog)
    assert len(warnings) == 1
    assert "registry defaults" in warnings[0].getMessage()
    # Once the provider answers, its state replaces the defaults.
    provider.failure = None
    clock.advance(10)
    assert evaluator.is_enabled(USE_ENHANCED_INJECTION, USER)


@pytest.mark.parametrize(
    "result",
    [
        ["not", "a", "mapping"],
        {"A": "not a definition"},
        {"A": FlagDefinition("A", parent="B"), "B": FlagDefinition("B", parent="A")},
        {"A": FlagDefinition("A", parent="MISSING")},
        {"B": FlagDefinition("A")},
    ],
    ids=["list", "bad-value", "cycle", "missing-parent", "wrong-key"],
)
def test_invalid_snapshot_counts_as_a_provider_failure(
    clock: FakeClock, caplog: pytest.LogCaptureFixture, result: object
) -> None:
    caplog.set_level(logging.DEBUG, logger="flags")
    provider = _counting(rollout=100)
    evaluator = FlagEvaluator(provider, clock=clock, environ={})
    provider.result = result
    clock.advance(10)
    assert evaluator.is_enabled(USE_ENHANCED_INJECTION, USER)  # last known state
    assert evaluator.stale
    assert len(_warnings(caplog)) == 1


def test_refresh_forces_a_read(clock: FakeClock) -> None:
    provider = _counting(rollout=100)
    evaluator = FlagEvaluator(provider, clock=clock, environ={})
    provider.inner.set(FlagDefinition(USE_ENHANCED_INJECTION, rollout=0))
    assert evaluator.is_enabled(USE_ENHANCED_INJECTION, USER)
    evaluator.refresh()
    assert not evaluator.is_enabled(USE_ENHANCED_INJECTION, USER)
    assert provider.calls == 2


def test_evaluation_never_raises(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="flags")
    evaluator = FlagEvaluator(_counting(rollout=100), environ={})
    bad = EvaluationContext(agent_id={"unhashable": 1})  # type: ignore[arg-type]
    assert evaluator.is_enabled(USE_CROSS_AGENT_SHARING, bad) is False
    assert evaluator.explain(USE_CROSS_AGENT_SHARING, bad).rule is Rule.ERROR
    assert evaluator.is_enabled("NOT_A_FLAG", USER) is False
    assert evaluator.is_enabled("NOT_A_FLAG") is False
    assert evaluator.explain("NOT_A_FLAG").rule is Rule.UNKNOWN_FLAG
    unknown = [r for r in caplog.records if "NOT_A_FLAG" in r.getMessage()]
    assert len(unknown) == 1


def test_broken_clock_keeps_evaluating_the_cached_state(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="flags")
    ticks = iter([0.0, 0.0])

    def clock() -> float:
        return next(ticks)  # raises StopIteration once construction has used it

    evaluator = FlagEvaluator(_counting(rollout=100), clock=clock, environ={})
    for _ in range(3):
        # The cached rollout-100 state, not the registry default (off).
        assert evaluator.is_enabled(USE_ENHANCED_INJECTION, USER) is True
        assert evaluator.explain(USE_ENHANCED_INJECTION, USER).rule is Rule.ROLLOUT
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert "refreshing flags failed" in errors[0].getMessage()


def test_child_needs_parent_through_the_evaluator() -> None:
    provider = InMemoryFlagProvider(
        [
            FlagDefinition(USE_ENHANCED_INJECTION, rollout=0),
            FlagDefinition(
                USE_CROSS_AGENT_SHARING,
                rollout=100,
                stickiness="sessionId",
                parent=USE_ENHANCED_INJECTION,
            ),
        ]
    )
    evaluator = FlagEvaluator(provider, environ={})
    assert not evaluator.is_enabled(USE_CROSS_AGENT_SHARING, USER)
    provider.set(FlagDefinition(USE_ENHANCED_INJECTION, rollout=100))
    evaluator.refresh()
    assert evaluator.is_enabled(USE_CROSS_AGENT_SHARING, USER)


def test_export_flag_states_is_plain_data() -> None:
    provider = InMemoryFlagProvider(
        [
            FlagDefinition(USE_ENHANCED_INJECTION, rollout=30, description="provided"),
            FlagDefinition("EXTRA", rollout=5, default=True),
        ]
    )
    evaluator = FlagEvaluator(provider, environ={USE_HIERARCHICAL_TIERS: "off"})
    states = export_flag_states(evaluator)
    assert states == evaluator.export_state()
    assert json.loads(json.dumps(states)) == states
    assert states == [
        {
            "name": "EXTRA",
            "description": "",
            "enabled_by_default": True,
            "rollout": 5,
            "source": "provider",
            "parent": None,
            "stickiness": "default",
            "environment": None,
        },
        {
            "name": USE_CROSS_AGENT_SHARING,
            "description": BUILTIN_FLAGS[USE_CROSS_AGENT_SHARING].description,
            "enabled_by_default": False,
            "rollout": 0,
            "source": "registry",
            "parent": USE_ENHANCED_INJECTION,
            "stickiness": "sessionId",
            "environment": None,
        },
        {
            "name": USE_ENHANCED_INJECTION,
            "description": "provided",
            "enabled_by_default": False,
            "rollout": 30,
            "source": "provider",
            "parent": None,
            "stickiness": "default",
            "environment": None,
        },
        {
            "name": USE_HIERARCHICAL_TIERS,
            "description": BUILTIN_FLAGS[USE_HIERARCHICAL_TIERS].description,
            "enabled_by_default": False,
            "rollout": 0,
            "source": "environment",
            "parent": None,
            "stickiness": "default",
            "environment": "off",
        },
        {
            "name": USE_SWARM_SIGNATURE_ENFORCEMENT,
            "description": BUILTIN_FLAGS[USE_SWARM_SIGNATURE_ENFORCEMENT].description,
            "enabled_by_default": False,
            "rollout": 0,
            "source": "registry",
            "parent": None,
            "stickiness": "default",
            "environment": None,
        },
    ]


def test_export_reports_environment_rollouts() -> None:
    evaluator = FlagEvaluator(
        None, environ={USE_ENHANCED_INJECTION: "on", USE_HIERARCHICAL_TIERS: "25%"}
    )
    by_name = {s["name"]: s for s in export_flag_states(evaluator)}
    assert by_name[USE_ENHANCED_INJECTION]["rollout"] == 100
    assert by_name[USE_HIERARCHICAL_TIERS]["rollout"] == 25
    assert by_name[USE_HIERARCHICAL_TIERS]["environment"] == "25%"
    assert by_name[USE_CROSS_AGENT_SHARING]["source"] == "registry"


def test_concurrent_evaluation_during_refresh() -> None:
    provider = _counting(rollout=100)
    evaluator = FlagEvaluator(provider, refresh_interval=0, environ={})
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(300):
                assert evaluator.is_enabled(USE_ENHANCED_INJECTION, USER)
        except BaseException as exc:  # collected for the main thread
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
