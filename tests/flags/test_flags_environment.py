"""The environment layer: accepted values, precedence, and bad values rejected clearly."""

from __future__ import annotations

import logging

import pytest

from flags import (
    USE_CROSS_AGENT_SHARING,
    USE_ENHANCED_INJECTION,
    USE_HIERARCHICAL_TIERS,
    EnvironmentOverride,
    EnvironmentOverrideError,
    EvaluationContext,
    FlagDefinition,
    FlagEvaluator,
    FlagValueError,
    InMemoryFlagProvider,
    Rule,
    normalized_hash,
    parse_environment_override,
    read_environment,
)


@pytest.mark.parametrize("value", ["on", "ON", "On", "true", "TRUE", "True", "1", " on "])
def test_on_values(value: str) -> None:
    assert parse_environment_override("USE_X", value) == EnvironmentOverride(
        "USE_X", value, forced=True
    )


@pytest.mark.parametrize("value", ["off", "OFF", "false", "False", "0", "\toff\n"])
def test_off_values(value: str) -> None:
    assert parse_environment_override("USE_X", value) == EnvironmentOverride(
        "USE_X", value, forced=False
    )


@pytest.mark.parametrize(
    ("value", "rollout"),
    [("0%", 0), ("1%", 1), ("25%", 25), ("100%", 100), (" 50 % ", 50), ("007%", 7)],
)
def test_percentages(value: str, rollout: int) -> None:
    assert parse_environment_override("USE_X", value) == EnvironmentOverride(
        "USE_X", value, rollout=rollout
    )


@pytest.mark.parametrize("value", ["", "   "])
def test_empty_means_unset(value: str) -> None:
    assert parse_environment_override("USE_X", value) is None


@pytest.mark.parametrize(
    "value", ["maybe", "150%", "101%", "-5%", "25", "2.5%", "%", "yes", "onn", "25%%", "1000%"]
)
def test_bad_values_name_the_variable_and_the_value(value: str) -> None:
    with pytest.raises(EnvironmentOverrideError) as caught:
        parse_environment_override("USE_ENHANCED_INJECTION", value)
    message = str(caught.value)
    assert f"USE_ENHANCED_INJECTION={value!r}" in message
    assert "0%..100%" in message
    assert caught.value.variable == "USE_ENHANCED_INJECTION"
    assert caught.value.value == value
    assert isinstance(caught.value, ValueError)
    assert isinstance(caught.value, FlagValueError)


def test_read_environment_only_reads_known_names() -> None:
    environ = {"A": "on", "B": "maybe", "C": "", "UNRELATED": "on", "D": "40%"}
    overrides, errors = read_environment(["A", "B", "C", "D", "E"], environ)
    assert overrides == {
        "A": EnvironmentOverride("A", "on", forced=True),
        "D": EnvironmentOverride("D", "40%", rollout=40),
    }
    assert [(e.variable, e.value) for e in errors] == [("B", "maybe")]


def _provider(**overrides: int) -> InMemoryFlagProvider:
    return InMemoryFlagProvider(
        [
            FlagDefinition(USE_ENHANCED_INJECTION, rollout=overrides.get("injection", 0)),
            FlagDefinition(
                USE_CROSS_AGENT_SHARING,
                rollout=overrides.get("sharing", 0),
                stickiness="sessionId",
                parent=USE_ENHANCED_INJECTION,
                denied_agents={"untrusted"},
            ),
        ]
    )


def test_env_on_forces_the_flag_on() -> None:
    evaluator = FlagEvaluator(_provider(), environ={USE_ENHANCED_INJECTION: "on"})
    context = EvaluationContext(user_id="u-1")
    decision = evaluator.explain(USE_ENHANCED_INJECTION, context)
    assert (decision.enabled, decision.rule) == (True, Rule.ENVIRONMENT)
    # A registry-only flag can be switched on too.
    evaluator = FlagEvaluator(None, environ={USE_HIERARCHICAL_TIERS: "1"})
    assert evaluator.is_enabled(USE_HIERARCHICAL_TIERS, context)


def test_env_off_beats_the_provider() -> None:
    evaluator = FlagEvaluator(_provider(injection=100), environ={USE_ENHANCED_INJECTION: "Off"})
    context = EvaluationContext(user_id="u-1")
    assert not evaluator.is_enabled(USE_ENHANCED_INJECTION, context)
    # And its children follow it off.
    assert evaluator.explain(USE_CROSS_AGENT_SHARING, context).rule is Rule.PARENT


def test_env_on_does_not_beat_the_deny_list_or_a_parent_that_is_off() -> None:
    evaluator = FlagEvaluator(_provider(), environ={USE_CROSS_AGENT_SHARING: "true"})
    # Parent (rollout 0) is off, so the child stays off.
    assert evaluator.explain(USE_CROSS_AGENT_SHARING, EvaluationContext(session_id="s")).rule is (
        Rule.PARENT
    )
    evaluator = FlagEvaluator(
        _provider(),
        environ={USE_CROSS_AGENT_SHARING: "true", USE_ENHANCED_INJECTION: "true"},
    )
    assert evaluator.is_enabled(USE_CROSS_AGENT_SHARING, EvaluationContext(session_id="s"))
    denied = EvaluationContext(session_id="s", agent_id="untrusted")
    assert evaluator.explain(USE_CROSS_AGENT_SHARING, denied).rule is Rule.DENY_LIST


def test_env_percentage_replaces_the_rollout() -> None:
    ids = [f"user-{i}" for i in range(400)]
    evaluator = FlagEvaluator(_provider(injection=100), environ={USE_ENHANCED_INJECTION: "25%"})
    for user in ids:
        expected = normalized_hash(USE_ENHANCED_INJECTION, user) <= 25
        assert evaluator.is_enabled(USE_ENHANCED_INJECTION, EvaluationContext(user_id=user)) is (
            expected
        )
    assert (
        0
        < sum(
            evaluator.is_enabled(USE_ENHANCED_INJECTION, EvaluationContext(user_id=u)) for u in ids
        )
        < len(ids)
    )


def test_bad_value_fails_construction_naming_variable_and_value() -> None:
    with pytest.raises(EnvironmentOverrideError, match=r"USE_ENHANCED_INJECTION='maybe'"):
        FlagEvaluator(_provider(), environ={USE_ENHANCED_INJECTION: "maybe"})
    with pytest.raises(EnvironmentOverrideError, match=r"USE_HIERARCHICAL_TIERS='150%'"):
        FlagEvaluator(None, environ={USE_HIERARCHICAL_TIERS: "150%"})


def test_env_is_read_from_os_environ_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(USE_HIERARCHICAL_TIERS, "on")
    assert FlagEvaluator().is_enabled(USE_HIERARCHICAL_TIERS, EvaluationContext(user_id="u"))
    monkeypatch.setenv(USE_HIERARCHICAL_TIERS, "maybe")
    with pytest.raises(EnvironmentOverrideError, match="USE_HIERARCHICAL_TIERS='maybe'"):
        FlagEvaluator()
    monkeypatch.delenv(USE_HIERARCHICAL_TIERS)
    assert not FlagEvaluator().is_enabled(USE_HIERARCHICAL_TIERS, EvaluationContext(user_id="u"))


def test_bad_value_after_start_is_ignored_and_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="flags")
    environ = {USE_ENHANCED_INJECTION: "on"}
    now = [0.0]
    evaluator = FlagEvaluator(
        _provider(), environ=environ, refresh_interval=10, clock=lambda: now[0]
    )
    context = EvaluationContext(user_id="u-1")
    assert evaluator.is_enabled(USE_ENHANCED_INJECTION, context)
    environ[USE_ENHANCED_INJECTION] = "maybe"
    for _ in range(5):
        now[0] += 11  # every call triggers a refresh
        # The bad variable is ignored: the provider's rollout 0 decides.
        assert not evaluator.is_enabled(USE_ENHANCED_INJECTION, context)
    assert evaluator.explain(USE_ENHANCED_INJECTION, context).rule is Rule.ROLLOUT
    errors = [r for r in caplog.records if "USE_ENHANCED_INJECTION='maybe'" in r.getMessage()]
    assert len(errors) == 1
    assert errors[0].levelno == logging.ERROR
    assert "ignoring it" in errors[0].getMessage()
    # An explicit refresh raises, naming the variable, after applying the rest.
    with pytest.raises(EnvironmentOverrideError, match="USE_ENHANCED_INJECTION='maybe'"):
        evaluator.refresh()
    assert not evaluator.is_enabled(USE_ENHANCED_INJECTION, context)
    # Fixing the value takes effect at the next refresh.
    environ[USE_ENHANCED_INJECTION] = "ON"
    evaluator.refresh()
    assert evaluator.is_enabled(USE_ENHANCED_INJECTION, context)
