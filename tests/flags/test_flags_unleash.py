"""The Unleash provider: decisions checked against UnleashClient, polling, staleness.

The decision tests serve one features document to the provider over loopback HTTP and give
the same document to a real ``UnleashClient`` (bootstrapped from memory, never contacting a
server), and require the same answer for every toggle and generated context, whether the
fast path or Unleash's engine decides it. Unleash's client specification runs in
test_flags_unleash_spec.py, a real unleash-server in test_flags_unleash_server.py.
"""

from __future__ import annotations

import logging
import random
import socket
import subprocess
import sys
import time
import uuid
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import flags
from flags import (
    EvaluationContext,
    FlagEvaluator,
    FlagProvider,
    FlagProviderError,
    FlagValueError,
    UnleashFlagProvider,
)
from flags._unleash import translate_features
from tests.flags.unleash_offline import FeaturesServer, offline_client

AGENTS = ["planner", "coder", "reviewer", "auditor", "intruder"]
ADDRESSES = ["10.0.0.1", "10.0.0.2"]


def rollout(
    percent: int | str,
    stickiness: str = "default",
    group: str | None = None,
    constraints: list[dict[str, Any]] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    parameters: dict[str, Any] = {"rollout": str(percent), "stickiness": stickiness}
    if group is not None:
        parameters["groupId"] = group
    return {
        "name": "flexibleRollout",
        "parameters": parameters,
        "constraints": constraints or [],
        **extra,
    }


def agents(operator: str, *values: str, inverted: bool = False) -> dict[str, Any]:
    return {
        "contextName": "agentId",
        "operator": operator,
        "values": list(values),
        "inverted": inverted,
    }


def toggle(
    name: str,
    strategies: list[dict[str, Any]],
    *,
    enabled: bool = True,
    parent: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    feature: dict[str, Any] = {
        "name": name,
        "type": "release",
        "enabled": enabled,
        "strategies": strategies,
        **extra,
    }
    if parent is not None:
        feature["dependencies"] = [{"feature": parent, "enabled": True, "variants": []}]
    return feature


DENY = agents("NOT_IN", "intruder")

# Every shape the fast path translates (the module docstring's list).
FAST = [
    toggle("ROLL_10", [rollout(10, group="ROLL_10")]),
    toggle("ROLL_50_SESSION", [rollout(50, "sessionId", "ROLL_50_SESSION")]),
    toggle("ROLL_33_USER", [rollout(33, "userId", "shared-group")]),
    toggle("ROLL_70_TENANT", [rollout(70, "tenant", "ROLL_70_TENANT")]),
    toggle("ROLL_100_USER", [rollout(100, "userId")]),
    toggle("ROLL_NO_GROUP", [rollout(42)]),
    toggle("ROLL_0", [rollout(0)]),
    toggle("ROLL_100", [rollout(100)]),
    toggle("STANDARD", [{"name": "default", "parameters": {}, "constraints": []}]),
    toggle("NO_STRATEGIES", []),
    toggle("DISABLED", [rollout(100)], enabled=False),
    toggle("CHILD", [rollout(60, "sessionId", "CHILD", [DENY])], parent="ROLL_50_SESSION"),
    toggle("CHILD_OF_DISABLED", [rollout(100)], parent="DISABLED"),
    toggle(
        "CHILD_LISTED_TWICE",
        [rollout(100)],
        dependencies=[{"feature": "ROLL_10", "enabled": True}] * 2,
    ),
    toggle(
        "ALLOW_DENY",
        [
            rollout(20, "sessionId", "ALLOW_DENY", [DENY]),
            rollout(100, constraints=[agents("IN", "auditor", "intruder"), DENY]),
        ],
    ),
    toggle("ALLOW_ONLY", [rollout(100, constraints=[agents("IN", "auditor")])]),
    toggle("INVERTED", [rollout(100, constraints=[agents("IN", "intruder", inverted=True)])]),
    toggle("NESTED_ROLLOUTS", [rollout(15, group="g"), rollout(45, group="g")]),
    toggle("SEGMENTED", [rollout(100, "default", "SEGMENTED", segments=[7])]),
]
SEGMENTS = [
    {"id": 7, "name": "no-intruders", "constraints": [DENY]},
    {
        "id": 8,
        "name": "eu-tenants",
        "constraints": [{"contextName": "region", "operator": "STR_STARTS_WITH", "values": ["eu"]}],
    },
]

# Toggles the fast path hands to Unleash's engine, with (a part of) the reason.
ENGINE = {
    "OTHER_STRATEGY": (
        toggle("OTHER_STRATEGY", [{"name": "userWithId", "parameters": {"userIds": "user-1"}}]),
        "strategy 'userWithId'",
    ),
    "OTHER_FIELD": (
        toggle(
            "OTHER_FIELD",
            [
                rollout(
                    100,
                    constraints=[{"contextName": "region", "operator": "IN", "values": ["eu-1"]}],
                )
            ],
        ),
        "constrained by 'region' 'IN'",
    ),
    "OPERATOR_SEGMENT": (
        toggle("OPERATOR_SEGMENT", [rollout(50, "sessionId", segments=[8])]),
        "'STR_STARTS_WITH'",
    ),
    "CASE_INSENSITIVE": (
        toggle(
            "CASE_INSENSITIVE",
            [rollout(100, constraints=[{**agents("IN", "AUDITOR"), "caseInsensitive": True}])],
        ),
        "constraint is",
    ),
    "PARTIAL_ALLOW": (
        toggle("PARTIAL_ALLOW", [rollout(50, constraints=[agents("IN", "auditor")])]),
        "not a 100% rollout",
    ),
    "UNEVEN_DENY": (
        toggle(
            "UNEVEN_DENY",
            [rollout(20, constraints=[DENY]), rollout(100, constraints=[agents("IN", "auditor")])],
        ),
        "different agentId NOT_IN lists",
    ),
    "MIXED_GROUPS": (
        toggle("MIXED_GROUPS", [rollout(10, group="a"), rollout(20, group="b")]),
        "differ in stickiness or groupId",
    ),
    "EMPTY_GROUP": (toggle("EMPTY_GROUP", [rollout(50, group="")]), "groupId ''"),
    "FRACTION": (toggle("FRACTION", [rollout("12.5")]), "rollout '12.5'"),
    "AGENT_STICKY": (toggle("AGENT_STICKY", [rollout(50, "agentId")]), "stickiness 'agentId'"),
    "PARENT_OFF": (
        toggle(
            "PARENT_OFF", [rollout(100)], dependencies=[{"feature": "ROLL_10", "enabled": False}]
        ),
        "requires the parent off",
    ),
    "PARENT_VARIANT": (
        toggle(
            "PARENT_VARIANT",
            [rollout(100)],
            dependencies=[{"feature": "WITH_VARIANTS", "variants": ["blue"]}],
        ),
        "requires the parent off or a variant",
    ),
    # Unleash hashes a parent's rollout that names no groupId by the child's name.
    "PARENT_WITHOUT_GROUP": (
        toggle("PARENT_WITHOUT_GROUP", [rollout(100)], parent="ROLL_NO_GROUP"),
        "rolls out without a groupId",
    ),
    "PARENT_BY_ENGINE": (
        toggle("PARENT_BY_ENGINE", [rollout(100)], parent="OTHER_FIELD"),
        "is decided by the engine",
    ),
    "TWO_PARENTS": (
        toggle(
            "TWO_PARENTS",
            [rollout(100)],
            dependencies=[{"feature": "ROLL_10"}, {"feature": "ROLL_100"}],
        ),
        "depends on 2 toggles",
    ),
    "MISSING_SEGMENT": (toggle("MISSING_SEGMENT", [rollout(100, segments=[99])]), "segment 99"),
    "DISABLED_STRATEGY": (
        toggle("DISABLED_STRATEGY", [rollout(100, disabled=True)]),
        "marked disabled",
    ),
    "REMOTE_ADDRESS": (
        toggle("REMOTE_ADDRESS", [{"name": "remoteAddress", "parameters": {"IPs": "10.0.0.1"}}]),
        "strategy 'remoteAddress'",
    ),
    "APP_HOSTNAME": (
        toggle(
            "APP_HOSTNAME",
            [{"name": "applicationHostname", "parameters": {"hostNames": socket.gethostname()}}],
        ),
        "strategy 'applicationHostname'",
    ),
    "GRADUAL_SESSION": (
        toggle(
            "GRADUAL_SESSION",
            [
                {
                    "name": "gradualRolloutSessionId",
                    "parameters": {"percentage": "40", "groupId": "g"},
                }
            ],
        ),
        "strategy 'gradualRolloutSessionId'",
    ),
}
WITH_VARIANTS = toggle(
    "WITH_VARIANTS",
    [rollout(100)],
    variants=[
        {"name": "blue", "weight": 500, "stickiness": "default"},
        {"name": "green", "weight": 500, "stickiness": "default"},
    ],
)

# Unleash's dependency rules: one level; a missing parent, a parent with a parent of its
# own, and every toggle in a cycle are off. GRANDPARENT and PARENT are evaluated normally.
OFF_BY_DEPENDENCIES = {
    "CYCLE_A": toggle("CYCLE_A", [rollout(100)], parent="CYCLE_B"),
    "CYCLE_B": toggle("CYCLE_B", [rollout(100)], parent="CYCLE_A"),
    "GRANDCHILD": toggle("GRANDCHILD", [rollout(100)], parent="PARENT"),
    "ORPHAN": toggle("ORPHAN", [rollout(100)], parent="NOT_IN_THE_DOCUMENT"),
}
CHAIN = [
    toggle("GRANDPARENT", [rollout(100, group="GRANDPARENT")]),
    toggle("PARENT", [rollout(100)], parent="GRANDPARENT"),
]

# Off whatever the context (CASE_INSENSITIVE: Unleash's IN ignores caseInsensitive;
# FRACTION: Unleash reads no whole percentage in "12.5"; a missing segment never matches;
# APP_HOSTNAME: UnleashClient 6 answers off even on the host it names, so we must too).
OFF_FOR_EVERYONE = {
    "APP_HOSTNAME",
    "FRACTION",
    "MISSING_SEGMENT",
    "DISABLED",
    "ROLL_0",
    "CHILD_OF_DISABLED",
    "CASE_INSENSITIVE",
    *OFF_BY_DEPENDENCIES,
}

ALL = [
    *FAST,
    *(t for t, _ in ENGINE.values()),
    WITH_VARIANTS,
    *OFF_BY_DEPENDENCIES.values(),
    *CHAIN,
]
DOCUMENT = {"version": 2, "features": ALL, "segments": SEGMENTS}


def contexts(count: int, seed: int) -> list[tuple[EvaluationContext, dict[str, Any]]]:
    """Contexts in our form and in Unleash's; any field may be missing except the session.

    With the session always there no toggle draws Unleash's random bucket, so both sides
    must give the same answer for every context.
    """
    rng = random.Random(seed)
    result = []
    for _ in range(count):
        user = f"user-{rng.randrange(max(1, count // 4))}" if rng.random() < 0.8 else None
        session = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        agent = rng.choice(AGENTS) if rng.random() < 0.9 else None
        attributes = {}
        if rng.random() < 0.8:
            attributes["tenant"] = f"tenant-{rng.randrange(50)}"
        if rng.random() < 0.5:
            attributes["region"] = rng.choice(["eu-1", "eu-2", "us-1"])
        properties = dict(attributes)
        theirs: dict[str, Any] = {"sessionId": session, "properties": properties}
        if rng.random() < 0.3:  # a context field beside the properties
            attributes["remoteAddress"] = theirs["remoteAddress"] = rng.choice(ADDRESSES)
        ours = EvaluationContext(
            user_id=user, session_id=session, agent_id=agent, attributes=attributes
        )
        if agent is not None:
            properties["agentId"] = agent
        if user is not None:
            theirs["userId"] = user
        result.append((ours, theirs))
    return result


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[UnleashFlagProvider, FlagEvaluator]]:
    """DOCUMENT served as the client API serves it, read by the provider."""
    server = FeaturesServer()
    server.document = DOCUMENT
    provider = UnleashFlagProvider(server.url, refresh_interval=3600)
    try:
        yield provider, FlagEvaluator(provider, registry={}, refresh_interval=3600, environ={})
    finally:
        provider.close()
        server.close()


def test_every_toggle_answers_exactly_as_unleash_client(
    served: tuple[UnleashFlagProvider, FlagEvaluator],
) -> None:
    _, evaluator = served
    client = offline_client(DOCUMENT, "translation-test")
    try:
        for name in (t["name"] for t in ALL):
            answers = [
                (evaluator.is_enabled(name, mine), bool(client.is_enabled(name, theirs)))
                for mine, theirs in contexts(2000, seed=zlib.crc32(name.encode()))
            ]
            mismatches = sum(a != b for a, b in answers)
            assert mismatches == 0, f"{name}: {mismatches} of {len(answers)} differ"
            # Either way round would make a weak test: check that each side is seen.
            assert any(a for a, _ in answers) != (name in OFF_FOR_EVERYONE), name
    finally:
        client.destroy()


def test_variants_are_unleash_clients(served: tuple[UnleashFlagProvider, FlagEvaluator]) -> None:
    _, evaluator = served
    client = offline_client(DOCUMENT, "variant-test")
    try:
        seen = set()
        for ours, theirs in contexts(500, seed=3):
            for name in ("WITH_VARIANTS", "PARENT_VARIANT", "ROLL_10", "DISABLED"):
                expected = client.get_variant(name, theirs)
                variant = evaluator.variant(name, ours)
                assert (variant.name, variant.enabled, variant.feature_enabled) == (
                    expected["name"],
                    expected["enabled"],
                    expected["feature_enabled"],
                ), (name, ours)
                seen.add((name, variant.name))
        assert {("WITH_VARIANTS", "blue"), ("WITH_VARIANTS", "green")} <= seen
    finally:
        client.destroy()


def test_what_the_fast_path_takes_and_what_it_hands_over() -> None:
    translation = translate_features(DOCUMENT)
    definitions = translation.definitions
    fast = {t["name"] for t in FAST} | {t["name"] for t in CHAIN} | {"WITH_VARIANTS"}
    assert fast.isdisjoint(translation.engine_only) and fast.isdisjoint(translation.off)
    assert definitions["ROLL_33_USER"].rollout == 33
    assert definitions["ROLL_33_USER"].stickiness == "userId"
    assert definitions["ROLL_33_USER"].group_id == "shared-group"
    assert definitions["ROLL_70_TENANT"].stickiness == "tenant"
    assert definitions["ROLL_NO_GROUP"].group_id == "ROLL_NO_GROUP"
    assert definitions["STANDARD"].rollout == definitions["NO_STRATEGIES"].rollout == 100
    assert definitions["DISABLED"].rollout == 0
    assert definitions["CHILD"].parent == "ROLL_50_SESSION"
    assert definitions["CHILD"].denied_agents == frozenset({"intruder"})
    assert definitions["CHILD_LISTED_TWICE"].parent == "ROLL_10"
    assert definitions["PARENT"].parent == "GRANDPARENT"
    allow_deny = definitions["ALLOW_DENY"]
    assert (allow_deny.rollout, allow_deny.stickiness) == (20, "sessionId")
    assert allow_deny.allowed_agents == frozenset({"auditor", "intruder"})
    assert allow_deny.denied_agents == frozenset({"intruder"})
    assert definitions["ALLOW_ONLY"].rollout == 0
    assert definitions["ALLOW_ONLY"].allowed_agents == frozenset({"auditor"})
    assert definitions["INVERTED"].denied_agents == frozenset({"intruder"})
    assert definitions["NESTED_ROLLOUTS"].rollout == 45
    assert definitions["SEGMENTED"].denied_agents == frozenset({"intruder"})
    assert set(translation.engine_only) == set(ENGINE)
    for name, (_, reason) in ENGINE.items():
        assert reason in translation.engine_only[name], (name, translation.engine_only[name])
        assert definitions[name].rollout == 0  # listed (export, metrics); the engine decides
    assert set(translation.off) == set(OFF_BY_DEPENDENCIES)
    assert "depends on another toggle" in translation.off["CYCLE_A"]
    assert "depends on another toggle" in translation.off["GRANDCHILD"]
    assert "not in the payload" in translation.off["ORPHAN"]


def test_the_engine_explains_what_it_decides(
    served: tuple[UnleashFlagProvider, FlagEvaluator],
) -> None:
    _, evaluator = served
    decision = evaluator.explain("OTHER_STRATEGY", EvaluationContext(user_id="user-1"))
    assert (decision.enabled, decision.rule) == (True, "engine")
    assert decision.detail == "the engine decides (strategy 'userWithId'): on"
    # A fast-path toggle asks the engine only when the context lacks what it hashes:
    # Unleash is off at 100 % by userId without a user id.
    no_user = EvaluationContext(session_id="s-1")
    assert evaluator.explain("ROLL_100_USER", no_user).rule == "engine"
    assert not evaluator.is_enabled("ROLL_100_USER", no_user)
    assert evaluator.explain("ROLL_100_USER", EvaluationContext(user_id="u")).rule == "rollout"


def test_an_environment_variable_outranks_the_engine(
    served: tuple[UnleashFlagProvider, FlagEvaluator],
) -> None:
    provider, _ = served
    environ = {"OTHER_STRATEGY": "off", "OTHER_FIELD": "on", "OPERATOR_SEGMENT": "100%"}
    evaluator = FlagEvaluator(provider, registry={}, environ=environ)
    user_1 = EvaluationContext(user_id="user-1", session_id="s", attributes={"region": "us"})
    assert evaluator.explain("OTHER_STRATEGY", user_1).rule == "environment"
    assert not evaluator.is_enabled("OTHER_STRATEGY", user_1)
    assert evaluator.is_enabled("OTHER_FIELD", user_1)  # region us: off in Unleash
    assert evaluator.explain("OPERATOR_SEGMENT", user_1).rule == "rollout"
    assert evaluator.variant("OTHER_FIELD", user_1).name == "disabled"


def test_a_toggle_whose_name_is_no_flag_name_is_decided_by_the_engine(
    features_server: FeaturesServer,
) -> None:
    features_server.document = {
        "version": 2,
        "features": [toggle("Hellø Wørld 😊", [rollout(100)]), toggle("OK", [rollout(100)])],
    }
    with UnleashFlagProvider(features_server.url) as provider:
        snapshot = provider.snapshot()
        assert set(snapshot) == {"OK"}
        evaluator = FlagEvaluator(provider, registry={}, environ={})
        context = EvaluationContext(user_id="u-1")
        assert evaluator.is_enabled("Hellø Wørld 😊", context)
        assert evaluator.explain("Hellø Wørld 😊", context).rule == "engine"
        assert evaluator.variant("Hellø Wørld 😊", context).feature_enabled
        assert "Hellø Wørld 😊" in evaluator.flags and len(evaluator.flags) == 2


@pytest.mark.parametrize(
    "document",
    [None, [], {"version": 2}, {"features": "x"}, {"features": [{"enabled": True}]}],
    ids=["none", "list", "no-features", "features-not-list", "feature-without-name"],
)
def test_a_document_that_is_no_features_document_is_refused(document: object) -> None:
    with pytest.raises(FlagProviderError, match="features document"):
        translate_features(document)


@pytest.fixture
def features_server() -> Iterator[FeaturesServer]:
    server = FeaturesServer()
    yield server
    server.close()


class ManualClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_provider_polls_translates_and_goes_stale(features_server: FeaturesServer) -> None:
    features_server.document = {
        "version": 2,
        "features": [toggle("USE_ENHANCED_INJECTION", [rollout(30)])],
    }
    clock = ManualClock()
    with UnleashFlagProvider(
        features_server.url,
        refresh_interval=60,
        stale_after=90,
        headers={"X-Test": "yes"},
        clock=clock,
    ) as provider:
        assert isinstance(provider, FlagProvider)
        snapshot = provider.snapshot()
        assert snapshot["USE_ENHANCED_INJECTION"].rollout == 30
        assert provider.snapshot() is snapshot  # unchanged document: no new translation
        # No Authorization header unless one is configured (a server without
        # authentication refuses any), the configured ones, and no entity tag.
        headers = features_server.requests[0]
        assert "Authorization" not in headers and headers["X-Test"] == "yes"
        assert "If-None-Match" not in headers
        clock.now += 90
        assert provider.snapshot() is snapshot
        clock.now += 1
        with pytest.raises(FlagProviderError, match=r"has not answered for 91 s"):
            provider.snapshot()


def test_a_bad_answer_makes_snapshot_fail(features_server: FeaturesServer) -> None:
    features_server.document = "<html>not unleash</html>"
    with UnleashFlagProvider(features_server.url) as provider:
        with pytest.raises(FlagProviderError, match="not JSON"):
            provider.snapshot()


def test_a_document_the_engine_refuses_makes_snapshot_fail(
    features_server: FeaturesServer,
) -> None:
    # Without "version" Unleash's engine takes nothing, and would answer off for all.
    features_server.document = {"features": [toggle("OK", [rollout(100)])]}
    with UnleashFlagProvider(features_server.url) as provider:
        with pytest.raises(FlagProviderError, match="engine did not take"):
            provider.snapshot()


def test_toggles_off_by_dependency_rules_are_named_in_one_warning(
    features_server: FeaturesServer, caplog: pytest.LogCaptureFixture
) -> None:
    features_server.document = {"version": 2, "features": [*OFF_BY_DEPENDENCIES.values(), *CHAIN]}
    caplog.set_level(logging.WARNING, logger="flags")
    with UnleashFlagProvider(features_server.url) as provider:
        evaluator = FlagEvaluator(provider, registry={}, refresh_interval=0, environ={})
        context = contexts(1, seed=2)[0][0]
        for _ in range(5):
            assert not any(evaluator.is_enabled(n, context) for n in OFF_BY_DEPENDENCIES)
            # The rest of the payload is unaffected, and PARENT's one level is allowed.
            assert evaluator.is_enabled("GRANDPARENT", context)
            assert evaluator.is_enabled("PARENT", context)
            assert not evaluator.stale
    logged = [r.getMessage() for r in caplog.records if r.name == "flags"]
    assert len(logged) == 1, logged
    assert all(repr(name) in logged[0] for name in OFF_BY_DEPENDENCIES), logged[0]
    assert "'PARENT':" not in logged[0] and "'GRANDPARENT':" not in logged[0]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def silent_server() -> Iterator[str]:
    """A port that accepts connections and never answers: a hung server."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)  # the kernel completes handshakes; nobody ever reads
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/api"


def test_a_refused_connection_leaves_the_registry_defaults() -> None:
    with UnleashFlagProvider(f"http://127.0.0.1:{free_port()}/api") as provider:
        with pytest.raises(FlagProviderError, match="has not answered yet"):
            provider.snapshot()
        evaluator = FlagEvaluator(provider, refresh_interval=0, environ={})
        assert evaluator.stale
        assert evaluator.explain("USE_ENHANCED_INJECTION").rule == "default"


def test_a_hung_server_costs_one_request_timeout_and_never_blocks_evaluation(
    silent_server: str,
) -> None:
    started = time.monotonic()
    # UnleashClient's own defaults would wait 30 s per attempt, with 3 retries.
    with UnleashFlagProvider(silent_server, refresh_interval=1, request_timeout=1) as provider:
        constructed = time.monotonic() - started
        evaluator = FlagEvaluator(provider, refresh_interval=0, environ={})
        # Polls keep timing out in the background; snapshots do no I/O meanwhile.
        started = time.monotonic()
        for _ in range(200):
            assert evaluator.is_enabled("USE_ENHANCED_INJECTION") is False
            with pytest.raises(FlagProviderError, match="has not answered yet"):
                provider.snapshot()
        evaluated = time.monotonic() - started
    # Bounds against hangs (a poll waiting on the network would take seconds), not speed.
    assert 0.9 < constructed < 5, constructed
    assert evaluated < 0.9, evaluated  # one poll waiting on the network would take 1 s


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"url": "127.0.0.1:4242/api"}, "url must be an http"),
        ({"refresh_interval": 0}, "refresh_interval must be a whole number"),
        ({"refresh_interval": 2.5}, "refresh_interval must be a whole number"),
        ({"request_timeout": True}, "request_timeout must be a whole number"),
        ({"refresh_interval": 10, "stale_after": 5}, "stale_after must be"),
        ({"stale_after": float("nan")}, "stale_after must be"),
        ({"agent_field": ""}, "agent_field must be"),
    ],
)
def test_bad_configuration_is_refused(arguments: dict[str, Any], message: str) -> None:
    arguments = {"url": "http://127.0.0.1:9/api", **arguments}
    with pytest.raises(FlagValueError, match=message):
        UnleashFlagProvider(**arguments)


def test_missing_packages_raise_an_install_hint() -> None:
    root = str(Path(flags.__file__).resolve().parent.parent)
    code = (
        "import sys\n"
        "sys.modules['UnleashClient'] = None\n"
        "sys.modules['openfeature'] = None\n"
        "import flags\n"
        "loaded = sorted(m for m, v in sys.modules.items()\n"
        "                if v is not None and m.startswith(('UnleashClient', 'openfeature')))\n"
        "print('loaded', loaded)\n"
        "for name in ('UnleashFlagProvider', 'OpenFeatureFlagProvider'):\n"
        "    try:\n"
        "        getattr(flags, name)\n"
        "    except ImportError as exc:\n"
        "        print(type(exc).__name__, isinstance(exc, flags.FlagError), exc)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=root, check=True
    )
    lines = result.stdout.splitlines()
    assert lines[0] == "loaded []"
    assert lines[1] == (
        "MissingPackageError True the Unleash flag provider needs the UnleashClient package, "
        "which is not installed: pip install 'tiered-memory[unleash]'"
    )
    assert lines[2] == (
        "MissingPackageError True the OpenFeature flag provider needs the openfeature-sdk "
        "package, which is not installed: pip install 'tiered-memory[openfeature]'"
    )
