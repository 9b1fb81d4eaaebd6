"""Flag definitions: validation errors name the field and the limit; dependencies checked."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from flags import (
    BUILTIN_FLAGS,
    USE_CROSS_AGENT_SHARING,
    USE_ENHANCED_INJECTION,
    USE_HIERARCHICAL_TIERS,
    USE_SWARM_SIGNATURE_ENFORCEMENT,
    FlagDefinition,
    FlagDefinitionError,
    FlagDependencyError,
    FlagError,
    FlagValueError,
    InMemoryFlagProvider,
    SessionOverride,
    Stickiness,
    check_dependencies,
)


def test_defaults_and_group_id_falls_back_to_the_name() -> None:
    flag = FlagDefinition("USE_X")
    assert flag.default is False
    assert flag.rollout == 0
    assert flag.stickiness == "default"
    assert flag.group_id == "USE_X"
    assert flag.parent is None
    assert flag.allowed_agents == frozenset()
    assert flag.session_overrides == ()
    assert FlagDefinition("USE_X", group_id="shared").group_id == "shared"


def test_collections_are_normalised_and_definitions_compare_by_value() -> None:
    expiry = datetime(2030, 1, 1, tzinfo=UTC)
    a = FlagDefinition(
        "USE_X",
        allowed_agents=["b", "a", "a"],
        session_overrides=[SessionOverride("s2", True), SessionOverride("s1", False, expiry)],
    )
    assert a.allowed_agents == frozenset({"a", "b"})
    assert [o.session_id for o in a.session_overrides] == ["s1", "s2"]
    b = FlagDefinition(
        "USE_X",
        allowed_agents={"a", "b"},
        session_overrides=(SessionOverride("s1", False, expiry), SessionOverride("s2", True)),
    )
    assert a == b
    assert hash(a) == hash(b)
    assert a.override_for("s2") == SessionOverride("s2", True)
    assert a.override_for("nope") is None
    assert a.override_for(None) is None


def test_replace_revalidates() -> None:
    flag = FlagDefinition("USE_X", rollout=10)
    assert dataclasses.replace(flag, rollout=20).rollout == 20
    with pytest.raises(FlagDefinitionError, match="rollout"):
        dataclasses.replace(flag, rollout=101)


@pytest.mark.parametrize("rollout", [150, 101, -1, True, 25.0, "25", None])
def test_rollout_out_of_range_names_field_and_limit(rollout: Any) -> None:
    with pytest.raises(FlagDefinitionError) as caught:
        FlagDefinition("USE_X", rollout=rollout)
    message = str(caught.value)
    assert "rollout" in message
    assert "0..100" in message
    assert repr(rollout) in message
    assert "USE_X" in message
    assert caught.value.field == "rollout"
    assert caught.value.flag == "USE_X"


@pytest.mark.parametrize("rollout", [0, 1, 50, 99, 100])
def test_rollout_limits_are_inclusive(rollout: int) -> None:
    assert FlagDefinition("USE_X", rollout=rollout).rollout == rollout


@pytest.mark.parametrize(
    ("kwargs", "field", "fragment"),
    [
        ({"name": ""}, "name", "1..100"),
        ({"name": "x" * 101}, "name", "1..100"),
        ({"name": "has space"}, "name", "letters, digits"),
        ({"name": "-leading"}, "name", "start with a letter"),
        ({"name": 7}, "name", "must be a string"),
        ({"description": None}, "description", "must be a string"),
        ({"description": "d" * 1001}, "description", "at most 1000"),
        ({"default": "false"}, "default", "True or False"),
        ({"default": 0}, "default", "True or False"),
        ({"stickiness": ""}, "stickiness", "non-empty"),
        ({"stickiness": " userId"}, "stickiness", "surrounding spaces"),
        ({"group_id": "  "}, "group_id", "non-empty"),
        ({"parent": "bad name"}, "parent", "letters, digits"),
        ({"allowed_agents": "planner"}, "allowed_agents", "collection of agent ids"),
        ({"denied_agents": 5}, "denied_agents", "collection of agent ids"),
        ({"denied_agents": [""]}, "denied_agents entry", "non-empty"),
        ({"session_overrides": SessionOverride("s", True)}, "session_overrides", "collection"),
        ({"session_overrides": ["s"]}, "session_overrides", "SessionOverride"),
    ],
)
def test_invalid_fields_are_rejected_with_the_field_name(
    kwargs: dict[str, Any], field: str, fragment: str
) -> None:
    arguments: dict[str, Any] = {"name": "USE_X", **kwargs}
    with pytest.raises(FlagDefinitionError) as caught:
        FlagDefinition(**arguments)
    assert caught.value.field == field
    assert field in str(caught.value)
    assert fragment in str(caught.value)


def test_duplicate_session_overrides_are_rejected() -> None:
    with pytest.raises(FlagDefinitionError, match="two overrides for session 's1'"):
        FlagDefinition(
            "USE_X", session_overrides=[SessionOverride("s1", True), SessionOverride("s1", False)]
        )


def test_session_override_validation_and_utc_normalisation() -> None:
    with pytest.raises(FlagDefinitionError, match="expires_at must be timezone-aware"):
        SessionOverride("s1", True, datetime(2030, 1, 1))
    with pytest.raises(FlagDefinitionError, match="expires_at must be a datetime"):
        SessionOverride("s1", True, "2030-01-01")  # type: ignore[arg-type]
    with pytest.raises(FlagDefinitionError, match="enabled must be True or False"):
        SessionOverride("s1", 1)  # type: ignore[arg-type]
    with pytest.raises(FlagDefinitionError, match="session_id must be non-empty"):
        SessionOverride("", True)
    plus_two = timezone(timedelta(hours=2))
    override = SessionOverride("s1", True, datetime(2030, 1, 1, 14, 0, tzinfo=plus_two))
    assert override.expires_at == datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
    assert override.expires_at is not None and override.expires_at.tzinfo is UTC
    assert override.is_active(datetime(2030, 1, 1, 11, 59, tzinfo=UTC))
    assert not override.is_active(datetime(2030, 1, 1, 12, 0, tzinfo=UTC))
    assert SessionOverride("s1", False).is_active(datetime(2999, 1, 1, tzinfo=UTC))


def test_exception_hierarchy() -> None:
    assert issubclass(FlagValueError, FlagError)
    assert issubclass(FlagValueError, ValueError)
    assert issubclass(FlagDefinitionError, FlagValueError)
    assert issubclass(FlagDependencyError, FlagDefinitionError)
    with pytest.raises(ValueError):
        FlagDefinition("USE_X", rollout=150)


def test_a_flag_cannot_be_its_own_parent() -> None:
    with pytest.raises(FlagDependencyError, match="names the flag itself"):
        FlagDefinition("USE_X", parent="USE_X")


def test_dependency_cycles_are_rejected_with_the_path() -> None:
    flags = {
        "A": FlagDefinition("A", parent="C"),
        "B": FlagDefinition("B", parent="A"),
        "C": FlagDefinition("C", parent="B"),
        "D": FlagDefinition("D"),
    }
    with pytest.raises(FlagDependencyError, match="cycle") as caught:
        check_dependencies(flags)
    path = str(caught.value).split("cycle: ")[1]
    nodes = path.split(" -> ")
    assert nodes[0] == nodes[-1]
    assert set(nodes) == {"A", "B", "C"}


def test_unknown_parent_and_mismatched_keys_are_rejected() -> None:
    with pytest.raises(FlagDependencyError, match="'NOPE', which is not a defined flag"):
        check_dependencies({"A": FlagDefinition("A", parent="NOPE")})
    with pytest.raises(FlagDefinitionError, match="registered as 'B'"):
        check_dependencies({"B": FlagDefinition("A")})
    with pytest.raises(FlagDefinitionError, match="must be a FlagDefinition"):
        check_dependencies({"A": "A"})  # type: ignore[dict-item]
    # A long acyclic chain is fine.
    chain = {f"F{i}": FlagDefinition(f"F{i}", parent=f"F{i - 1}" if i else None) for i in range(50)}
    check_dependencies(chain)


def test_in_memory_provider_rejects_cycles_and_stays_unchanged() -> None:
    provider = InMemoryFlagProvider([FlagDefinition("A"), FlagDefinition("B", parent="A")])
    with pytest.raises(FlagDependencyError, match="cycle"):
        provider.set(FlagDefinition("A", parent="B"))
    with pytest.raises(FlagDependencyError, match="not a defined flag"):
        provider.remove("A")
    assert provider.snapshot()["A"] == FlagDefinition("A")
    provider.remove("B")
    provider.remove("B")  # absent: nothing to do
    provider.remove("A")
    assert dict(provider.snapshot()) == {}
    with pytest.raises(FlagDefinitionError, match="defined twice"):
        InMemoryFlagProvider([FlagDefinition("A"), FlagDefinition("A", rollout=5)])
    with pytest.raises(FlagDependencyError):
        InMemoryFlagProvider([FlagDefinition("B", parent="A")])


def test_provider_snapshot_is_a_read_only_copy() -> None:
    provider = InMemoryFlagProvider([FlagDefinition("A")])
    snapshot = provider.snapshot()
    provider.set(FlagDefinition("A", rollout=50))
    assert snapshot["A"].rollout == 0
    with pytest.raises(TypeError):
        snapshot["B"] = FlagDefinition("B")  # type: ignore[index]


def test_builtin_registry_holds_the_rollout_plan() -> None:
    assert set(BUILTIN_FLAGS) == {
        USE_ENHANCED_INJECTION,
        USE_CROSS_AGENT_SHARING,
        USE_HIERARCHICAL_TIERS,
        USE_SWARM_SIGNATURE_ENFORCEMENT,
    }
    for name, flag in BUILTIN_FLAGS.items():
        assert flag.name == name
        assert flag.default is False, name
        assert flag.rollout == 0, name
        assert flag.description, name
    sharing = BUILTIN_FLAGS[USE_CROSS_AGENT_SHARING]
    assert sharing.parent == USE_ENHANCED_INJECTION
    assert sharing.stickiness == Stickiness.SESSION_ID == "sessionId"
    assert BUILTIN_FLAGS[USE_ENHANCED_INJECTION].parent is None
    assert BUILTIN_FLAGS[USE_HIERARCHICAL_TIERS].parent is None
    assert BUILTIN_FLAGS[USE_SWARM_SIGNATURE_ENFORCEMENT].parent is None
    check_dependencies(BUILTIN_FLAGS)
