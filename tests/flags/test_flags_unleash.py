"""The Unleash provider: translation checked against UnleashClient, polling, staleness.

The translation tests feed the same features document to our translation and to a real
``UnleashClient`` (bootstrapped from memory, never contacting a server) and require the same
answer for every generated context. Tests against a real unleash-server are in
test_flags_unleash_server.py.
"""

from __future__ import annotations

import json
import logging
import random
import socket
import subprocess
import sys
import threading
import time
import uuid
import zlib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

import flags
from flags import (
    EvaluationContext,
    FlagEvaluator,
    FlagProvider,
    FlagProviderError,
    FlagSet,
    FlagValueError,
    UnleashFlagProvider,
)
from flags._unleash import translate_features
from tests.flags.unleash_offline import offline_client

AGENTS = ["planner", "coder", "reviewer", "auditor", "intruder"]


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

# Every shape the module docstring promises to translate faithfully.
SUPPORTED = [
    toggle("ROLL_10", [rollout(10, group="ROLL_10")]),
    toggle("ROLL_50_SESSION", [rollout(50, "sessionId", "ROLL_50_SESSION")]),
    toggle("ROLL_33_USER", [rollout(33, "userId", "shared-group")]),
    toggle("ROLL_70_TENANT", [rollout(70, "tenant", "ROLL_70_TENANT")]),
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
    toggle("ORPHAN", [rollout(100)], parent="NOT_IN_THE_DOCUMENT"),
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
SEGMENTS = [{"id": 7, "name": "no-intruders", "constraints": [DENY]}]

UNSUPPORTED = {
    "OTHER_STRATEGY": (
        toggle("OTHER_STRATEGY", [{"name": "userWithId", "parameters": {"userIds": "u-1"}}]),
        "strategy 'userWithId' is not supported",
    ),
    "OTHER_FIELD": (
        toggle(
            "OTHER_FIELD",
            [
                rollout(
                    100, constraints=[{"contextName": "region", "operator": "IN", "values": ["eu"]}]
                )
            ],
        ),
        "constrained by 'region' 'IN'",
    ),
    "PARTIAL_ALLOW": (
        toggle("PARTIAL_ALLOW", [rollout(50, constraints=[agents("IN", "auditor")])]),
        "must roll out to 100%",
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
    "RANDOM": (toggle("RANDOM", [rollout(50, "random")]), "random stickiness"),
    "EMPTY_GROUP": (toggle("EMPTY_GROUP", [rollout(50, group="")]), "groupId ''"),
    "FRACTION": (toggle("FRACTION", [rollout("12.5")]), "not a whole percentage"),
    "PARENT_OFF": (
        toggle(
            "PARENT_OFF", [rollout(100)], dependencies=[{"feature": "ROLL_10", "enabled": False}]
        ),
        "requires the parent off",
    ),
    "TWO_PARENTS": (
        toggle(
            "TWO_PARENTS",
            [rollout(100)],
            dependencies=[{"feature": "ROLL_10"}, {"feature": "ROLL_100"}],
        ),
        "depends on 2 toggles",
    ),
    "MISSING_SEGMENT": (
        toggle("MISSING_SEGMENT", [rollout(100, segments=[99])]),
        "segment 99",
    ),
}


def contexts(count: int, seed: int) -> list[tuple[EvaluationContext, dict[str, Any]]]:
    """Contexts with every stickiness value present, in our form and in Unleash's."""
    rng = random.Random(seed)
    result = []
    for _ in range(count):
        user = f"user-{rng.randrange(max(1, count // 4))}"
        session = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        agent = rng.choice(AGENTS)
        tenant = f"tenant-{rng.randrange(50)}"
        ours = EvaluationContext(
            user_id=user, session_id=session, agent_id=agent, attributes={"tenant": tenant}
        )
        theirs = {
            "userId": user,
            "sessionId": session,
            "properties": {"agentId": agent, "tenant": tenant},
        }
        result.append((ours, theirs))
    return result


def test_supported_toggles_answer_exactly_as_unleash_client() -> None:
    document = {"version": 2, "features": SUPPORTED, "segments": SEGMENTS}
    definitions, problems = translate_features(document)
    assert problems == {}
    assert set(definitions) == {t["name"] for t in SUPPORTED}
    ours = FlagSet(definitions)
    client = offline_client(document, "translation-test")
    try:
        for name in definitions:
            answers = [
                (ours.is_enabled(name, mine), bool(client.is_enabled(name, theirs)))
                for mine, theirs in contexts(2000, seed=zlib.crc32(name.encode()))
            ]
            mismatches = sum(a != b for a, b in answers)
            assert mismatches == 0, f"{name}: {mismatches} of {len(answers)} differ"
    finally:
        client.destroy()


def test_translation_of_each_shape() -> None:
    definitions, _ = translate_features({"features": SUPPORTED, "segments": SEGMENTS})
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
    assert definitions["ORPHAN"].rollout == 0 and definitions["ORPHAN"].parent is None
    allow_deny = definitions["ALLOW_DENY"]
    assert (allow_deny.rollout, allow_deny.stickiness) == (20, "sessionId")
    assert allow_deny.allowed_agents == frozenset({"auditor", "intruder"})
    assert allow_deny.denied_agents == frozenset({"intruder"})
    assert definitions["ALLOW_ONLY"].rollout == 0
    assert definitions["ALLOW_ONLY"].allowed_agents == frozenset({"auditor"})
    assert definitions["INVERTED"].denied_agents == frozenset({"intruder"})
    assert definitions["NESTED_ROLLOUTS"].rollout == 45
    assert definitions["SEGMENTED"].denied_agents == frozenset({"intruder"})


@pytest.mark.parametrize("name", sorted(UNSUPPORTED))
def test_unsupported_toggles_are_off_with_the_reason(name: str) -> None:
    feature, reason = UNSUPPORTED[name]
    document = {"features": [*SUPPORTED[:3], feature], "segments": []}
    definitions, problems = translate_features(document)
    assert set(problems) == {name}
    assert reason in problems[name] and problems[name].endswith("it evaluates as off")
    off = definitions[name]
    assert (off.rollout, off.allowed_agents, off.parent) == (0, frozenset(), None)
    assert not FlagSet(definitions).is_enabled(name, contexts(1, seed=1)[0][0])


def test_a_toggle_whose_name_is_no_flag_name_is_left_out() -> None:
    definitions, problems = translate_features(
        {"features": [toggle("has space", [rollout(100)]), toggle("OK", [rollout(100)])]}
    )
    assert set(definitions) == {"OK"}
    assert "name" in problems["has space"] and problems["has space"].endswith("left out")


@pytest.mark.parametrize(
    "document",
    [None, [], {"version": 2}, {"features": "x"}, {"features": [{"enabled": True}]}],
    ids=["none", "list", "no-features", "features-not-list", "feature-without-name"],
)
def test_a_document_that_is_no_features_document_is_refused(document: object) -> None:
    with pytest.raises(FlagProviderError, match="features document"):
        translate_features(document)


class FeaturesServer:
    """A loopback HTTP server that answers the client API with a document the test sets."""

    def __init__(self) -> None:
        self.document: object = {"version": 2, "features": []}
        self.requests: list[dict[str, str]] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                owner.requests.append(dict(self.headers))
                body = (
                    owner.document
                    if isinstance(owner.document, str)
                    else json.dumps(owner.document)
                ).encode()
                self.send_response(200 if self.path.startswith("/api/client/features") else 404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/api"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


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
    features_server.document = {"features": [toggle("USE_ENHANCED_INJECTION", [rollout(30)])]}
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


def test_unsupported_toggles_are_logged_once(
    features_server: FeaturesServer, caplog: pytest.LogCaptureFixture
) -> None:
    features_server.document = {"features": [UNSUPPORTED["RANDOM"][0]]}
    with UnleashFlagProvider(features_server.url) as provider:
        caplog.set_level(logging.ERROR, logger="flags")
        evaluator = FlagEvaluator(provider, refresh_interval=0, environ={})
        for _ in range(5):
            assert not evaluator.is_enabled("RANDOM", contexts(1, seed=2)[0][0])
    logged = [r for r in caplog.records if r.name == "flags" and "RANDOM" in r.getMessage()]
    assert len(logged) == 1 and "random stickiness" in logged[0].getMessage()


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
