"""The OpenFeature provider, through the real openfeature-sdk client API."""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta

import pytest
from openfeature import api
from openfeature.client import OpenFeatureClient
from openfeature.evaluation_context import EvaluationContext as OpenFeatureContext
from openfeature.exception import ErrorCode
from openfeature.flag_evaluation import Reason

from flags import (
    EvaluationContext,
    FlagDefinition,
    FlagEvaluator,
    FlagProviderError,
    FlagValueError,
    InMemoryFlagProvider,
    OpenFeatureFlagProvider,
    SessionOverride,
)
from flags._openfeature import to_flags_context

FAR_FUTURE = datetime.now(UTC) + timedelta(days=365)

DEFINITIONS = [
    FlagDefinition("USE_ENHANCED_INJECTION", rollout=30),
    FlagDefinition(
        "USE_CROSS_AGENT_SHARING",
        rollout=50,
        stickiness="sessionId",
        parent="USE_ENHANCED_INJECTION",
        allowed_agents={"auditor"},
        denied_agents={"intruder"},
    ),
    FlagDefinition("OFF_FOR_ALL", rollout=0),
    FlagDefinition("ON_FOR_ALL", rollout=100),
    FlagDefinition("BY_TENANT", rollout=40, stickiness="tenant"),
    FlagDefinition(
        "OVERRIDDEN", rollout=0, session_overrides=[SessionOverride("s-pinned", True, FAR_FUTURE)]
    ),
]


class FailingProvider:
    """A provider whose source is down after its first answer."""

    def __init__(self, definitions: Mapping[str, FlagDefinition]) -> None:
        self.definitions = definitions
        self.down = False

    def snapshot(self) -> Mapping[str, FlagDefinition]:
        if self.down:
            raise FlagProviderError("the source is down")
        return self.definitions


@pytest.fixture
def evaluator() -> FlagEvaluator:
    return FlagEvaluator(InMemoryFlagProvider(DEFINITIONS), refresh_interval=0, environ={})


@pytest.fixture
def client(evaluator: FlagEvaluator) -> Iterator[OpenFeatureClient]:
    """An OpenFeature client bound to our provider under a domain of its own."""
    domain = f"flags-test-{uuid.uuid4().hex[:8]}"
    api.set_provider(OpenFeatureFlagProvider(evaluator), domain=domain)
    yield api.get_client(domain)
    api.clear_providers()


def context(user: str | None = None, **attributes: object) -> OpenFeatureContext:
    return OpenFeatureContext(targeting_key=user, attributes=attributes)  # type: ignore[arg-type]


def test_boolean_values_are_the_evaluators_answers(
    client: OpenFeatureClient, evaluator: FlagEvaluator
) -> None:
    seen = set()
    for index in range(600):
        user = f"user-{index % 150}" if index % 3 else None
        session, agent = f"session-{index}", ["planner", "auditor", "intruder"][index % 3]
        ours = EvaluationContext(user_id=user, session_id=session, agent_id=agent)
        theirs = context(user, session_id=session, agent_id=agent)
        for flag in ("USE_ENHANCED_INJECTION", "USE_CROSS_AGENT_SHARING"):
            expected = evaluator.is_enabled(flag, ours)
            # The caller's default must not leak into a successful resolution.
            assert client.get_boolean_value(flag, not expected, theirs) is expected
            seen.add((flag, expected))
    assert len(seen) == 4  # both flags were on for some contexts and off for others


def test_reasons_come_from_the_deciding_rule(client: OpenFeatureClient) -> None:
    def details(flag: str, ctx: OpenFeatureContext | None = None) -> tuple[object, ...]:
        result = client.get_boolean_details(flag, False, ctx)
        return result.value, result.reason, result.variant, result.flag_metadata["rule"]

    # The registry flag no provider supplies: decided by its default.
    assert details("USE_HIERARCHICAL_TIERS") == (False, Reason.DEFAULT, "off", "default")
    assert details("OFF_FOR_ALL", context("u-1")) == (False, Reason.DISABLED, "off", "rollout")
    assert details("ON_FOR_ALL", context("u-1")) == (
        True,
        Reason.TARGETING_MATCH,
        "on",
        "rollout",
    )
    assert details("OVERRIDDEN", context(session_id="s-pinned"))[:2] == (
        True,
        Reason.TARGETING_MATCH,
    )
    assert details("OVERRIDDEN", context(session_id="s-other"))[:2] == (False, Reason.DISABLED)
    denied = details("USE_CROSS_AGENT_SHARING", context(session_id="s", agent_id="intruder"))
    assert denied == (False, Reason.TARGETING_MATCH, "off", "deny_list")
    # Rollout buckets below 100 %: on for some and off for others, both a targeting match.
    rollouts = {details("USE_ENHANCED_INJECTION", context(f"u-{i}")) for i in range(50)}
    assert rollouts == {
        (True, Reason.TARGETING_MATCH, "on", "rollout"),
        (False, Reason.TARGETING_MATCH, "off", "rollout"),
    }


def test_detail_and_staleness_travel_as_flag_metadata() -> None:
    provider = FailingProvider({d.name: d for d in DEFINITIONS})
    evaluator = FlagEvaluator(provider, refresh_interval=0, environ={})
    resolver = OpenFeatureFlagProvider(evaluator)
    fresh = resolver.resolve_boolean_details("ON_FOR_ALL", False, context("u-1"))
    assert fresh.flag_metadata == {
        "rule": "rollout",
        "detail": "rollout 100%: on for everyone",
        "stale": False,
    }
    provider.down = True
    stale = resolver.resolve_boolean_details("ON_FOR_ALL", False, context("u-1"))
    assert (stale.value, stale.reason, stale.flag_metadata["stale"]) == (
        True,
        Reason.TARGETING_MATCH,
        True,
    )


def test_an_environment_kill_switch_is_disabled() -> None:
    evaluator = FlagEvaluator(
        InMemoryFlagProvider(DEFINITIONS), environ={"ON_FOR_ALL": "off", "OFF_FOR_ALL": "0%"}
    )
    resolver = OpenFeatureFlagProvider(evaluator)
    killed = resolver.resolve_boolean_details("ON_FOR_ALL", True, context("u-1"))
    assert (killed.value, killed.reason) == (False, Reason.DISABLED)
    assert "ON_FOR_ALL='off'" in killed.flag_metadata["detail"]
    zero = resolver.resolve_boolean_details("OFF_FOR_ALL", True, context("u-1"))
    assert (zero.value, zero.reason) == (False, Reason.DISABLED)


@pytest.mark.parametrize("default", [True, False])
def test_an_unknown_flag_returns_the_callers_default(
    client: OpenFeatureClient, default: bool
) -> None:
    result = client.get_boolean_details("NO_SUCH_FLAG", default, context("u-1"))
    assert result.value is default
    assert (result.reason, result.error_code) == (Reason.ERROR, ErrorCode.FLAG_NOT_FOUND)
    assert "NO_SUCH_FLAG" in (result.error_message or "")


def test_a_malformed_context_is_an_invalid_context_error(client: OpenFeatureClient) -> None:
    result = client.get_boolean_details(
        "ON_FOR_ALL", False, context("u-1", session_id={"nested": "object"})
    )
    assert (result.value, result.reason) == (False, Reason.ERROR)
    assert result.error_code == ErrorCode.INVALID_CONTEXT
    assert "session_id" in (result.error_message or "")


def test_non_boolean_values_are_a_type_mismatch(client: OpenFeatureClient) -> None:
    assert client.get_string_value("ON_FOR_ALL", "fallback", context("u-1")) == "fallback"
    assert client.get_integer_value("ON_FOR_ALL", 7) == 7
    assert client.get_float_value("ON_FOR_ALL", 0.5) == 0.5
    assert client.get_object_value("ON_FOR_ALL", {"a": 1}) == {"a": 1}
    details = client.get_string_details("ON_FOR_ALL", "fallback")
    assert details.error_code == ErrorCode.TYPE_MISMATCH


def test_context_mapping() -> None:
    mapped = to_flags_context(
        context(
            "ada",
            session_id="s-1",
            agent_id="planner",
            tenant="acme",
            tier=3,
            beta=True,
            since=datetime(2025, 1, 2, tzinfo=UTC),
            tags=["a", "b"],
        )
    )
    assert (mapped.user_id, mapped.session_id, mapped.agent_id) == ("ada", "s-1", "planner")
    assert dict(mapped.attributes) == {
        "tenant": "acme",
        "tier": "3",
        "beta": "true",
        "since": "2025-01-02T00:00:00+00:00",
    }
    assert to_flags_context(None) == EvaluationContext()
    assert to_flags_context(context(None, session_id="")).session_id is None


def test_custom_stickiness_reads_context_attributes(
    client: OpenFeatureClient, evaluator: FlagEvaluator
) -> None:
    answers = set()
    for index in range(100):
        tenant = f"tenant-{index}"
        expected = evaluator.is_enabled(
            "BY_TENANT", EvaluationContext(attributes={"tenant": tenant})
        )
        assert client.get_boolean_value("BY_TENANT", not expected, context(tenant=tenant)) is (
            expected
        )
        answers.add(expected)
    assert answers == {True, False}


def test_provider_metadata_and_construction(evaluator: FlagEvaluator) -> None:
    provider = OpenFeatureFlagProvider(evaluator, name="agents")
    assert provider.get_metadata().name == "agents"
    assert provider.evaluator is evaluator
    with pytest.raises(FlagValueError, match="evaluator must be a flags.FlagEvaluator"):
        OpenFeatureFlagProvider(InMemoryFlagProvider())  # type: ignore[arg-type]


def test_reasons_follow_a_rollout_change() -> None:
    source = InMemoryFlagProvider([FlagDefinition("USE_ENHANCED_INJECTION", rollout=0)])
    resolver = OpenFeatureFlagProvider(FlagEvaluator(source, refresh_interval=0, environ={}))

    def reasons() -> set[object]:
        return {
            resolver.resolve_boolean_details(
                "USE_ENHANCED_INJECTION", False, context(f"u-{i}")
            ).reason
            for i in range(40)
        }

    assert reasons() == {Reason.DISABLED}
    source.set(FlagDefinition("USE_ENHANCED_INJECTION", rollout=30))
    assert reasons() == {Reason.TARGETING_MATCH}
    source.set(FlagDefinition("USE_ENHANCED_INJECTION", rollout=0))
    assert reasons() == {Reason.DISABLED}
