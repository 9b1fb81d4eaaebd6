"""The evaluation rules of FlagSet: precedence, dependencies, lists, overrides, stickiness."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import TYPE_CHECKING

import pytest

from flags import (
    BUILTIN_FLAGS,
    Decision,
    EnvironmentOverride,
    EvaluationContext,
    FlagDefinition,
    FlagDefinitionError,
    FlagDependencyError,
    FlagSet,
    Rule,
    SessionOverride,
    normalized_hash,
)

if TYPE_CHECKING:
    from tests.flags.conftest import FakeUtc


def _ids_with_bucket(group: str, low: int, high: int, count: int = 3) -> list[str]:
    """Session ids whose bucket in ``group`` lies in ``low..high``."""
    found = [f"id-{i}" for i in range(5000) if low <= normalized_hash(group, f"id-{i}") <= high]
    assert len(found) >= count
    return found[:count]


def test_rollout_decides_by_bucket() -> None:
    flags = FlagSet([FlagDefinition("F", rollout=30, stickiness="sessionId")])
    for session in _ids_with_bucket("F", 1, 30):
        assert flags.is_enabled("F", EvaluationContext(session_id=session))
    for session in _ids_with_bucket("F", 31, 100):
        assert not flags.is_enabled("F", EvaluationContext(session_id=session))
    boundary = _ids_with_bucket("F", 30, 30, count=1)[0]
    assert flags.is_enabled("F", EvaluationContext(session_id=boundary))
    decision = flags.explain("F", EvaluationContext(session_id=boundary))
    assert decision == Decision(
        "F",
        True,
        Rule.ROLLOUT,
        f"sessionId {boundary!r} hashes to bucket 30 in group 'F': <= rollout 30%",
    )


def test_group_id_changes_the_bucket_not_the_flag_name() -> None:
    session = _ids_with_bucket("shared", 1, 10, count=1)[0]
    flags = FlagSet([FlagDefinition("F", rollout=10, stickiness="sessionId", group_id="shared")])
    assert flags.is_enabled("F", EvaluationContext(session_id=session))
    off = _ids_with_bucket("shared", 11, 100, count=1)[0]
    assert not flags.is_enabled("F", EvaluationContext(session_id=off))


def test_rollout_zero_and_hundred() -> None:
    flags = FlagSet([FlagDefinition("OFF", rollout=0), FlagDefinition("ON", rollout=100)])
    for context in (EvaluationContext(user_id="u"), EvaluationContext(), None):
        assert not flags.is_enabled("OFF", context)
        assert flags.is_enabled("ON", context)
    assert flags.explain("ON").detail == "rollout 100%: on for everyone"
    assert flags.explain("OFF", EvaluationContext(user_id="u")).detail == (
        "rollout 0%: on for nobody"
    )


@pytest.mark.parametrize(
    ("stickiness", "context", "hashed"),
    [
        ("default", EvaluationContext(user_id="u-1", session_id="s-1"), "u-1"),
        ("default", EvaluationContext(session_id="s-1"), "s-1"),
        ("default", EvaluationContext(user_id="", session_id="s-1"), "s-1"),
        ("userId", EvaluationContext(user_id="u-1", session_id="s-1"), "u-1"),
        ("sessionId", EvaluationContext(user_id="u-1", session_id="s-1"), "s-1"),
        ("tenant", EvaluationContext(user_id="u-1", attributes={"tenant": "acme"}), "acme"),
    ],
)
def test_stickiness_chooses_the_hashed_value(
    stickiness: str, context: EvaluationContext, hashed: str
) -> None:
    bucket = normalized_hash("F", hashed)
    at_bucket = FlagSet([FlagDefinition("F", rollout=bucket, stickiness=stickiness)])
    below = FlagSet([FlagDefinition("F", rollout=bucket - 1, stickiness=stickiness)])
    assert at_bucket.is_enabled("F", context)
    assert not below.is_enabled("F", context)
    assert f"{hashed!r} hashes to bucket {bucket}" in at_bucket.explain("F", context).detail


@pytest.mark.parametrize(
    ("stickiness", "context"),
    [
        ("default", EvaluationContext(agent_id="a")),
        ("userId", EvaluationContext(session_id="s-1")),
        ("sessionId", EvaluationContext(user_id="u-1")),
        ("tenant", EvaluationContext(user_id="u-1", attributes={"other": "x"})),
        ("sessionId", EvaluationContext(session_id="")),
    ],
)
def test_missing_stickiness_value_is_off_unless_rollout_is_100(
    stickiness: str, context: EvaluationContext
) -> None:
    partial = FlagSet([FlagDefinition("F", rollout=99, stickiness=stickiness)])
    full = FlagSet([FlagDefinition("F", rollout=100, stickiness=stickiness)])
    assert not partial.is_enabled("F", context)
    decision = partial.explain("F", context)
    assert decision.rule is Rule.ROLLOUT
    assert f"no {stickiness} value" in decision.detail
    assert full.is_enabled("F", context)


def test_deny_list_wins_over_everything() -> None:
    context = EvaluationContext(user_id="u", session_id="s", agent_id="rogue")
    flags = FlagSet(
        [
            FlagDefinition(
                "F",
                rollout=100,
                allowed_agents={"rogue"},
                denied_agents={"rogue"},
                session_overrides=[SessionOverride("s", True)],
            )
        ],
        environment={"F": EnvironmentOverride("F", "on", forced=True)},
    )
    decision = flags.explain("F", context)
    assert decision == Decision("F", False, Rule.DENY_LIST, "agent 'rogue' is on the deny list")
    assert not flags.is_enabled("F", context)
    # Another agent in the same session is not denied (the environment turns it on).
    assert flags.is_enabled("F", EvaluationContext(session_id="s", agent_id="ok"))


def test_session_override_beats_allow_list_and_rollout(utc: FakeUtc) -> None:
    expiry = utc.now + timedelta(hours=1)
    flags = FlagSet(
        [
            FlagDefinition(
                "F",
                rollout=100,
                allowed_agents={"helper"},
                session_overrides=[SessionOverride("s-off", False, expiry)],
            )
        ],
        utcnow=utc,
    )
    context = EvaluationContext(session_id="s-off", agent_id="helper")
    decision = flags.explain("F", context)
    assert decision.rule is Rule.SESSION_OVERRIDE
    assert not decision.enabled
    assert decision.detail == (f"session 's-off' is overridden off until {expiry.isoformat()}")
    # Other sessions: the allow list, then the rollout.
    assert flags.explain("F", EvaluationContext(session_id="x", agent_id="helper")).rule is (
        Rule.ALLOW_LIST
    )
    assert flags.explain("F", EvaluationContext(session_id="x")).rule is Rule.ROLLOUT


def test_expired_override_is_ignored(utc: FakeUtc) -> None:
    flags = FlagSet(
        [
            FlagDefinition(
                "F",
                rollout=0,
                session_overrides=[
                    SessionOverride("s-1", True, utc.now + timedelta(minutes=5)),
                    SessionOverride("s-2", True),
                ],
            )
        ],
        utcnow=utc,
    )
    first, forever = EvaluationContext(session_id="s-1"), EvaluationContext(session_id="s-2")
    assert flags.is_enabled("F", first)
    assert flags.explain("F", forever).detail == "session 's-2' is overridden on with no expiry"
    utc.advance(timedelta(minutes=5))
    assert not flags.is_enabled("F", first)
    assert flags.explain("F", first).rule is Rule.ROLLOUT
    assert flags.is_enabled("F", forever)


def test_override_needs_a_session_id() -> None:
    flags = FlagSet([FlagDefinition("F", session_overrides=[SessionOverride("s", True)])])
    assert not flags.is_enabled("F", EvaluationContext(user_id="s"))


def test_allow_list_turns_on_below_the_rollout() -> None:
    flags = FlagSet([FlagDefinition("F", rollout=0, allowed_agents={"planner"})])
    assert flags.is_enabled("F", EvaluationContext(agent_id="planner"))
    assert not flags.is_enabled("F", EvaluationContext(agent_id="coder"))
    assert not flags.is_enabled("F", EvaluationContext())
    assert flags.explain("F", EvaluationContext(agent_id="planner")).detail == (
        "agent 'planner' is on the allow list"
    )


def test_child_is_off_when_parent_is_off() -> None:
    flags = FlagSet(
        [
            FlagDefinition("PARENT", rollout=0, allowed_agents={"a"}),
            FlagDefinition("CHILD", rollout=100, parent="PARENT", allowed_agents={"b"}),
        ]
    )
    # Parent on (allow-listed agent a) -> child decided by its own rules.
    assert flags.is_enabled("CHILD", EvaluationContext(agent_id="a"))
    # Parent off -> child off, even for the child's allow-listed agent b and rollout 100.
    decision = flags.explain("CHILD", EvaluationContext(agent_id="b"))
    assert decision.rule is Rule.PARENT
    assert not decision.enabled
    assert decision.detail == "parent flag 'PARENT' is off (rollout: rollout 0%: on for nobody)"
    assert not flags.is_enabled("CHILD", EvaluationContext(agent_id="b"))


def test_grandparent_chain_is_evaluated_for_the_same_context() -> None:
    session_on = _ids_with_bucket("G", 1, 50, count=1)[0]
    session_off = _ids_with_bucket("G", 51, 100, count=1)[0]
    flags = FlagSet(
        [
            FlagDefinition("G", rollout=50, stickiness="sessionId"),
            FlagDefinition("P", rollout=100, parent="G"),
            FlagDefinition("C", rollout=100, parent="P"),
        ]
    )
    assert flags.is_enabled("C", EvaluationContext(session_id=session_on))
    decision = flags.explain("C", EvaluationContext(session_id=session_off))
    assert decision.rule is Rule.PARENT
    assert "parent flag 'P' is off (parent: parent flag 'G' is off (rollout:" in decision.detail


def test_environment_rules_in_the_flag_set() -> None:
    flags = FlagSet(
        [
            FlagDefinition(
                "OFF",
                rollout=100,
                allowed_agents={"a"},
                session_overrides=[SessionOverride("s", True)],
            ),
            FlagDefinition("ON", rollout=0, session_overrides=[SessionOverride("s", False)]),
            FlagDefinition("ZERO", rollout=100, allowed_agents={"a"}),
        ],
        environment={
            "OFF": EnvironmentOverride("OFF", "off", forced=False),
            "ON": EnvironmentOverride("ON", "TRUE", forced=True),
            "ZERO": EnvironmentOverride("ZERO", "0%", rollout=0),
        },
    )
    context = EvaluationContext(user_id="u", session_id="s", agent_id="a")
    off = flags.explain("OFF", context)
    assert (off.enabled, off.rule) == (False, Rule.ENVIRONMENT)
    assert off.detail == "environment variable OFF='off' turns the flag off"
    on = flags.explain("ON", context)
    assert (on.enabled, on.rule) == (True, Rule.ENVIRONMENT)
    # 0% only replaces the rollout: the allow list still applies.
    assert flags.explain("ZERO", context).rule is Rule.ALLOW_LIST
    zero = flags.explain("ZERO", EvaluationContext(user_id="u"))
    assert (zero.enabled, zero.rule) == (False, Rule.ROLLOUT)
    assert "set by environment variable ZERO='0%'" in zero.detail


def test_fallbacks_are_decided_by_their_default() -> None:
    flags = FlagSet(
        [FlagDefinition("PROVIDED", rollout=0, default=True)],
        fallbacks=[FlagDefinition("ON_BY_DEFAULT", default=True), FlagDefinition("OFF_BY_DEFAULT")],
    )
    context = EvaluationContext(user_id="u")
    assert flags.explain("ON_BY_DEFAULT", context) == Decision(
        "ON_BY_DEFAULT", True, Rule.DEFAULT, "no provider has supplied this flag; its default is on"
    )
    assert flags.explain("OFF_BY_DEFAULT", context).enabled is False
    # A provided flag is decided by its rules, not by its default.
    assert flags.explain("PROVIDED", context).rule is Rule.ROLLOUT
    assert not flags.is_enabled("PROVIDED", context)


def test_provider_definitions_win_over_fallbacks() -> None:
    flags = FlagSet(
        {"USE_ENHANCED_INJECTION": FlagDefinition("USE_ENHANCED_INJECTION", rollout=100)},
        fallbacks=BUILTIN_FLAGS,
    )
    assert flags.is_enabled("USE_ENHANCED_INJECTION", EvaluationContext(user_id="u"))
    assert len(flags) == len(BUILTIN_FLAGS)
    assert "USE_HIERARCHICAL_TIERS" in flags
    assert flags.definitions["USE_ENHANCED_INJECTION"].rollout == 100


def test_flag_set_rejects_bad_dependencies() -> None:
    with pytest.raises(FlagDependencyError, match="cycle"):
        FlagSet([FlagDefinition("A", parent="B"), FlagDefinition("B", parent="A")])
    with pytest.raises(FlagDependencyError, match="not a defined flag"):
        FlagSet([FlagDefinition("A", parent="B")])
    with pytest.raises(FlagDefinitionError, match="defined twice"):
        FlagSet([FlagDefinition("A"), FlagDefinition("A")])
    with pytest.raises(FlagDefinitionError, match="must be a FlagDefinition"):
        FlagSet(["A"])  # type: ignore[list-item]
    # A parent may come from the fallbacks.
    FlagSet([FlagDefinition("A", parent="B")], fallbacks=[FlagDefinition("B")])


def test_unknown_flag_is_off_and_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="flags")
    flags = FlagSet([FlagDefinition("F", rollout=100)])
    for _ in range(5):
        assert flags.is_enabled("NO_SUCH_FLAG", EvaluationContext(user_id="u")) is False
    decision = flags.explain("NO_SUCH_FLAG")
    assert decision == Decision(
        "NO_SUCH_FLAG", False, Rule.UNKNOWN_FLAG, "no flag named 'NO_SUCH_FLAG' is defined"
    )
    records = [r for r in caplog.records if "NO_SUCH_FLAG" in r.getMessage()]
    assert len(records) == 1
    assert records[0].levelno == logging.WARNING
    assert records[0].name == "flags"


def test_malformed_context_never_raises(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="flags")
    flags = FlagSet(
        [FlagDefinition("F", rollout=100, denied_agents={"x"}, default=True)],
    )
    bad = EvaluationContext(agent_id=["not", "hashable"])  # type: ignore[arg-type]
    assert flags.is_enabled("F", bad) is True  # the definition's default
    assert flags.is_enabled("F", bad) is True
    decision = flags.explain("F", bad)
    assert decision.rule is Rule.ERROR
    assert decision.enabled is True
    assert "TypeError" in decision.detail
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert "evaluating flag 'F' failed; using on" in errors[0].getMessage()


def test_non_string_ids_hash_like_their_string_form() -> None:
    flags = FlagSet([FlagDefinition("F", rollout=50, stickiness="userId")])
    for number in range(1, 200):
        as_int = EvaluationContext(user_id=number)  # type: ignore[arg-type]
        assert flags.is_enabled("F", as_int) == flags.is_enabled(
            "F", EvaluationContext(user_id=str(number))
        )
        assert flags.explain("F", as_int).rule is Rule.ROLLOUT
