"""Against a real unleash-server: three providers agree on 10,000 sessions; outages are survived.

Beside the rollout plan's three flags, a toggle with constraints (a property operator and a
user-id list) and a segment is read from the same server: UnleashFlagProvider hands it to
Unleash's engine, and FlagEvaluator must answer exactly what UnleashClient answers.

The server is the npm package pinned in tests/unleash/ (installed by ./scripts/check), run
by node against its own throwaway PostgreSQL database with authentication off, on a free
loopback port. Missing node, a missing install or a server that does not come up FAIL the
tests: nothing here is skipped.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from flags import (
    USE_CROSS_AGENT_SHARING,
    USE_ENHANCED_INJECTION,
    USE_HIERARCHICAL_TIERS,
    USE_SWARM_SIGNATURE_ENFORCEMENT,
    EvaluationContext,
    FlagEvaluator,
    FlagProviderError,
    UnleashFlagProvider,
)
from memory import Memory
from memory import ops as ops
from memory.ops import DatabaseFlagProvider
from memory.service.breakers import GuardedFlagProvider, breaker
from tests.service.processes import served

SERVER_DIR = Path(__file__).resolve().parent.parent / "unleash"
# A cold start runs Unleash's ~300 database migrations: about 20 s on an idle 2-core machine,
# several times that when the machine is busy. Generous, but bounded.
START_TIMEOUT = 180.0
ENVIRONMENT = "development"  # the environment Unleash serves to clients that send no token
FLAGS = (USE_ENHANCED_INJECTION, USE_CROSS_AGENT_SHARING, USE_HIERARCHICAL_TIERS)
AGENTS = ("planner", "coder", "reviewer", "auditor", "intruder")
ALLOWED, DENIED = "auditor", "intruder"
SESSIONS = 10_000
# Decided by Unleash's engine: constraints on properties and a segment.
CONSTRAINED = "USE_CONSTRAINED_ROLLOUT"
SEGMENT = "eu-regions"
TENANTS = ("acme", "acme-labs", "globex", "initech")
REGIONS = ("eu-1", "eu-2", "us-1")
EXCLUDED_USER = "user-7"


class UnleashServer:
    """One unleash-server process; stop() and ensure_running() restart it on the same data."""

    def __init__(self, node: str, database_url: str, log_path: Path) -> None:
        self._node = node
        self._database_url = database_url
        self._log_path = log_path
        self._process: subprocess.Popen[bytes] | None = None
        self.port = 0

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    def ensure_running(self) -> None:
        if self._process is not None and self._process.poll() is None:
            return
        # A restart keeps the port: clients polling it see the server come back.
        self.port = self.port or _free_port()
        env = {
            **os.environ,
            "UNLEASH_PORT": str(self.port),
            "UNLEASH_DATABASE_URL": self._database_url,
        }
        with self._log_path.open("ab") as log:
            self._process = subprocess.Popen(
                [self._node, "server.js"],
                cwd=SERVER_DIR,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                pytest.fail(
                    f"unleash-server exited with status {self._process.returncode} while "
                    f"starting; its log ends with:\n{self._log_tail()}",
                    pytrace=False,
                )
            if self._healthy():
                return
            time.sleep(0.5)
        self.stop()
        pytest.fail(
            f"unleash-server did not answer /health on port {self.port} within "
            f"{START_TIMEOUT:.0f} s; its log ends with:\n{self._log_tail()}",
            pytrace=False,
        )

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)

    def _healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.api_url[:-4]}/health", timeout=2) as response:
                return bool(json.load(response).get("health") == "GOOD")
        except (OSError, ValueError):
            return False

    def _log_tail(self) -> str:
        return "\n".join(self._log_path.read_text(errors="replace").splitlines()[-30:])

    def admin(self, method: str, path: str, body: object = None) -> Any:
        """Call the admin API; with authentication off, no Authorization header at all."""
        request = urllib.request.Request(
            f"{self.api_url}/admin/{path}",
            method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                text = response.read().decode()
        except urllib.error.HTTPError as error:
            if error.code == 409:  # already exists: every set-up step is idempotent
                return None
            raise AssertionError(
                f"{method} /api/admin/{path} -> {error.code}: {error.read().decode()}"
            ) from None
        return json.loads(text) if text else None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="session")
def unleash_server(
    postgres_admin: sa.Engine, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[UnleashServer]:
    """A real unleash-server on a free loopback port with its own PostgreSQL database."""
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not on PATH: the Unleash tests need Node.js 20+", pytrace=False)
    if not (SERVER_DIR / "node_modules" / "unleash-server" / "package.json").is_file():
        pytest.fail(
            f"unleash-server is not installed in {SERVER_DIR}: run ./scripts/check "
            f"(or `npm ci` there)",
            pytrace=False,
        )
    database = f"unleash_{uuid.uuid4().hex[:12]}"
    with postgres_admin.connect() as connection:
        connection.execute(sa.text(f'CREATE DATABASE "{database}"'))
    url = make_url(postgres_admin.url).set(drivername="postgres", database=database)
    server = UnleashServer(
        node,
        url.render_as_string(hide_password=False),
        tmp_path_factory.mktemp("unleash") / "server.log",
    )
    try:
        server.ensure_running()
        yield server
    finally:
        server.stop()
        with postgres_admin.connect() as connection:
            connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))


def _rollout(
    percent: int, stickiness: str, flag: str, *constraints: dict[str, Any]
) -> dict[str, Any]:
    return {
        "name": "flexibleRollout",
        "constraints": list(constraints),
        "parameters": {"rollout": str(percent), "stickiness": stickiness, "groupId": flag},
    }


def _agents(operator: str, agent: str) -> dict[str, Any]:
    return {"contextName": "agentId", "operator": operator, "values": [agent]}


def _strategies(flag: str, percent: int) -> list[dict[str, Any]]:
    """The Unleash form of the rollout plan's flags (as the registry defines them)."""
    if flag != USE_CROSS_AGENT_SHARING:
        return [_rollout(percent, "default", flag)]
    deny = _agents("NOT_IN", DENIED)
    return [
        _rollout(percent, "sessionId", flag, deny),
        _rollout(100, "default", flag, deny, _agents("IN", ALLOWED)),
    ]


def set_up_constrained(server: UnleashServer, percent: int) -> None:
    """CONSTRAINED: ``percent`` by session, for tenants starting with "acme" except one user,
    in the segment of EU regions."""
    for field in ("tenant", "region"):
        server.admin("POST", "context", {"name": field, "stickiness": False})
    region = {"contextName": "region", "operator": "IN", "values": ["eu-1", "eu-2"]}
    server.admin("POST", "segments", {"name": SEGMENT, "constraints": [region]})
    (segment,) = [s for s in server.admin("GET", "segments")["segments"] if s["name"] == SEGMENT]
    project = "projects/default/features"
    server.admin("POST", project, {"name": CONSTRAINED, "type": "release"})
    strategy = {
        **_rollout(
            percent,
            "sessionId",
            CONSTRAINED,
            {"contextName": "tenant", "operator": "STR_STARTS_WITH", "values": ["acme"]},
            {"contextName": "userId", "operator": "NOT_IN", "values": [EXCLUDED_USER]},
        ),
        "segments": [segment["id"]],
    }
    path = f"{project}/{CONSTRAINED}/environments/{ENVIRONMENT}/strategies"
    existing = server.admin("GET", path) or []
    if existing:
        server.admin("PUT", f"{path}/{existing[0]['id']}", strategy)
    else:
        server.admin("POST", path, strategy)
    server.admin("POST", f"{project}/{CONSTRAINED}/environments/{ENVIRONMENT}/on")


def set_up_flags(server: UnleashServer, percent: int) -> None:
    """Create (once) and roll out the three flags to ``percent`` through the admin API.

    CONSTRAINED is set up first, so a provider that sees the three flags sees it too.
    """
    set_up_constrained(server, percent)
    server.admin("POST", "context", {"name": "agentId", "stickiness": False})
    project = "projects/default/features"
    for flag in FLAGS:
        created = server.admin("POST", project, {"name": flag, "type": "release"})
        if created is not None and flag == USE_CROSS_AGENT_SHARING:
            # Once: Unleash records a dependency as often as it is posted.
            server.admin(
                "POST",
                f"{project}/{flag}/dependencies",
                {"feature": USE_ENHANCED_INJECTION, "enabled": True},
            )
        path = f"{project}/{flag}/environments/{ENVIRONMENT}/strategies"
        existing = server.admin("GET", path) or []
        wanted = _strategies(flag, percent)
        for strategy in existing[len(wanted) :]:
            server.admin("DELETE", f"{path}/{strategy['id']}")
        for index, strategy in enumerate(wanted):
            if index < len(existing):
                server.admin("PUT", f"{path}/{existing[index]['id']}", strategy)
            else:
                server.admin("POST", path, strategy)
    for flag in FLAGS:
        server.admin("POST", f"{project}/{flag}/environments/{ENVIRONMENT}/on")


def wait_for_rollout(provider: UnleashFlagProvider, percent: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            snapshot = provider.snapshot()
            if all(flag in snapshot and snapshot[flag].rollout == percent for flag in FLAGS):
                return
        except FlagProviderError:
            pass
        assert time.monotonic() < deadline, f"the provider never saw rollout {percent}%"
        time.sleep(0.2)


def sessions(count: int, seed: int) -> list[tuple[EvaluationContext, dict[str, Any]]]:
    """Generated sessions, most with a user (a user has several sessions), each with an agent."""
    rng = random.Random(seed)
    result = []
    for _ in range(count):
        session = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        user = f"user-{rng.randrange(count // 4)}" if rng.random() < 0.8 else None
        agent = rng.choice(AGENTS)
        attributes = {"tenant": rng.choice(TENANTS), "region": rng.choice(REGIONS)}
        theirs: dict[str, Any] = {
            "sessionId": session,
            "properties": {"agentId": agent, **attributes},
        }
        if user is not None:
            theirs["userId"] = user
        ours = EvaluationContext(
            user_id=user, session_id=session, agent_id=agent, attributes=attributes
        )
        result.append((ours, theirs))
    return result


@pytest.fixture
def database_provider(postgres_url: str) -> Iterator[DatabaseFlagProvider]:
    """The database provider on a PostgreSQL store at head, with the same lists as Unleash."""
    with Memory.open(postgres_url, embedder=None) as memory:
        provider = DatabaseFlagProvider(memory.engine)
        provider.reset(actor="test", reason="start from the defaults")
        provider.set_agent(USE_CROSS_AGENT_SHARING, ALLOWED, kind="allow", actor="test")
        provider.set_agent(USE_CROSS_AGENT_SHARING, DENIED, kind="deny", actor="test")
        yield provider


def test_database_unleash_provider_and_unleash_client_agree(
    unleash_server: UnleashServer, database_provider: DatabaseFlagProvider
) -> None:
    unleash_server.ensure_running()
    generated = sessions(SESSIONS, seed=20251123)
    provider = UnleashFlagProvider(unleash_server.api_url, refresh_interval=1)
    try:
        for percent in (10, 50, 100):
            set_up_flags(unleash_server, percent)
            for flag in FLAGS:
                database_provider.set_flag(flag, rollout=percent, actor="test")
            wait_for_rollout(provider, percent)
            # The client's engine takes the document just after the cache the snapshot reads
            # has it; one more poll interval makes sure both hold the same document.
            time.sleep(1.5)
            from_database = FlagEvaluator(database_provider, environ={})
            from_unleash = FlagEvaluator(provider, environ={})
            client = provider.client
            assert not from_database.stale and not from_unleash.stale
            for flag in FLAGS:
                answers = [
                    (
                        from_database.is_enabled(flag, ours),
                        from_unleash.is_enabled(flag, ours),
                        bool(client.is_enabled(flag, theirs)),
                    )
                    for ours, theirs in generated
                ]
                differing = [
                    (ours, answer)
                    for (ours, _), answer in zip(generated, answers, strict=True)
                    if len(set(answer)) != 1
                ]
                assert not differing, (
                    f"{flag} at {percent}%: {len(differing)} of {SESSIONS} sessions differ "
                    f"(database, unleash provider, UnleashClient), first: {differing[:3]}"
                )
                share = sum(a[0] for a in answers) / SESSIONS
                if flag == USE_CROSS_AGENT_SHARING:
                    # Needs its parent, and the deny-listed agent never gets it.
                    assert 0 < share <= percent / 100, (flag, percent, share)
                    assert not any(
                        a[0]
                        for (ours, _), a in zip(generated, answers, strict=True)
                        if ours.agent_id == DENIED
                    )
                else:
                    assert abs(share - percent / 100) < 0.03, (flag, percent, share)
            ours_on = [from_unleash.is_enabled(CONSTRAINED, ours) for ours, _ in generated]
            theirs_on = [bool(client.is_enabled(CONSTRAINED, theirs)) for _, theirs in generated]
            differing_constrained = sum(a != b for a, b in zip(ours_on, theirs_on, strict=True))
            assert differing_constrained == 0, (
                f"{CONSTRAINED} at {percent}%: {differing_constrained} of {SESSIONS} differ"
            )
            assert from_unleash.explain(CONSTRAINED, generated[0][0]).rule == "engine"
            eligible = [
                ours.attributes["tenant"].startswith("acme")
                and ours.attributes["region"] in ("eu-1", "eu-2")
                and ours.user_id != EXCLUDED_USER
                for ours, _ in generated
            ]
            assert not any(on and not ok for on, ok in zip(ours_on, eligible, strict=True))
            share = sum(ours_on) / sum(eligible)
            assert abs(share - percent / 100) < 0.05, (CONSTRAINED, percent, share)
    finally:
        provider.close()


def test_evaluation_survives_the_server_going_down(
    unleash_server: UnleashServer, caplog: pytest.LogCaptureFixture
) -> None:
    unleash_server.ensure_running()
    set_up_flags(unleash_server, 50)
    generated = [ours for ours, _ in sessions(2000, seed=7)]
    provider = UnleashFlagProvider(unleash_server.api_url, refresh_interval=1, request_timeout=1)
    try:
        wait_for_rollout(provider, 50)
        evaluator = FlagEvaluator(provider, refresh_interval=0.2, environ={})

        def evaluate_all() -> list[bool]:
            return [evaluator.is_enabled(f, c) for c in generated for f in FLAGS]

        before = evaluate_all()
        assert 0 < sum(before) < len(before)
        caplog.set_level(logging.WARNING, logger="flags")
        unleash_server.stop()
        deadline = time.monotonic() + 30
        while not evaluator.stale:
            assert time.monotonic() < deadline, "the provider never reported the outage"
            started = time.monotonic()
            assert evaluate_all() == before
            # Evaluation never waits on the dead server.
            assert time.monotonic() - started < 2.0
        for _ in range(5):  # well into the outage: still the last known state
            assert evaluate_all() == before
            time.sleep(0.3)
        with pytest.raises(FlagProviderError, match="has not answered for"):
            provider.snapshot()
        states = {s["name"]: s["source"] for s in evaluator.export_state()}
        served = {name: states.pop(name) for name in (*FLAGS, CONSTRAINED)}
        assert set(served.values()) == {"last_known"}
        # The swarm bus's flag is not on this server: the registry's default decides it.
        assert states == {USE_SWARM_SIGNATURE_ENFORCEMENT: "registry"}
        warnings = [r for r in caplog.records if r.name == "flags"]
        assert len(warnings) == 1, [r.getMessage() for r in warnings]
        assert "flag provider failed" in warnings[0].getMessage()
        assert "last known state" in warnings[0].getMessage()
    finally:
        provider.close()


def test_the_unleash_breaker_opens_in_an_outage_and_the_hub_reports_it(
    unleash_server: UnleashServer, postgres_url: str, tmp_path: Path
) -> None:
    unleash_server.ensure_running()
    set_up_flags(unleash_server, 50)
    ops.migrate(postgres_url)
    # The hub over this Unleash lists the breaker, closed, in /ready and /metrics.
    with served(
        postgres_url, tmp_path / "serve.log", MEMORY_SERVICE_UNLEASH_URL=unleash_server.api_url
    ) as server:
        assert httpx.get(f"{server.url}/ready", timeout=10).json()["breakers"] == {
            "embedder": "closed",
            "unleash": "closed",
        }
        metrics = httpx.get(f"{server.url}/metrics", timeout=10).text
        assert 'memory_service_breaker_state{breaker="unleash"} 0.0' in metrics
    provider = UnleashFlagProvider(unleash_server.api_url, refresh_interval=1, request_timeout=1)
    guard = breaker("unleash", fail_max=2, reset_timeout=1)
    try:
        wait_for_rollout(provider, 50)
        evaluator = FlagEvaluator(
            GuardedFlagProvider(provider, guard), refresh_interval=0.2, environ={}
        )
        generated = [ours for ours, _ in sessions(500, seed=11)]

        def evaluate_all() -> list[bool]:
            return [evaluator.is_enabled(f, c) for c in generated for f in FLAGS]

        before = evaluate_all()
        assert 0 < sum(before) < len(before)
        unleash_server.stop()
        deadline = time.monotonic() + 60
        while guard.current_state != "open":  # the provider goes stale, then fails twice
            assert time.monotonic() < deadline, "the Unleash breaker never opened"
            assert evaluate_all() == before  # the last known state meanwhile
            time.sleep(0.2)
        assert evaluator.stale and evaluate_all() == before
        unleash_server.ensure_running()
        deadline = time.monotonic() + 60
        while guard.current_state != "closed" or evaluator.stale:
            assert time.monotonic() < deadline, "the Unleash breaker never closed again"
            evaluate_all()
            time.sleep(0.2)
        assert evaluate_all() == before
    finally:
        provider.close()
