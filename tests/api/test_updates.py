"""Real-time updates on ``memory:updates``: a writer process and a subscriber, through each
backend, with the bus taken away mid-stream.

Every test checks the one promise that matters: the subscriber receives every committed
event exactly once, in sequence order, whatever happened to the bus. Propagation latency
(commit time to callback) is recorded as a test property, not asserted: speed targets live
in ``benchmarks/propagation_latency.py``.

Redis tests run against a ``redis-server`` of their own on a free loopback port, never the
shared one on 6379, because one of them stops and restarts it.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from memory import HashingEmbedder, InvalidInputError, Memory, MemoryEvent
from memory.ops import run_health_checks
from memory.store.events import store_channel
from memory.telemetry import instruments as telemetry

WRITER = """
import json, sys, time
from memory import Memory
url, updates, count, pause = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
with Memory.open(url, embedder=None, updates=updates, role="admin") as store:
    scope = store.scope("ada", "writer", "s")
    for index in range(count):
        scope.add(f"note {index}")
        time.sleep(pause)
    status = store.updates_status()
    print(json.dumps({"publish_failures": status.publish_failures}))
"""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class RedisServer:
    """A redis-server of the test's own, which it may stop and start again."""

    def __init__(self, directory: Path) -> None:
        binary = shutil.which("redis-server")
        assert binary is not None, "redis-server is not installed (apt-get install redis-server)"
        self.binary = binary
        self.directory = directory
        self.port = _free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.directory)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.05)
        raise AssertionError(f"redis-server did not start on port {self.port}")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)
            self.process = None


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


class Collector:
    """A subscriber callback that records what it got and when."""

    def __init__(self) -> None:
        self.events: list[MemoryEvent] = []
        self.latencies_ms: list[float] = []
        self.lock = threading.Lock()

    def __call__(self, event: MemoryEvent) -> None:
        with self.lock:
            self.events.append(event)
            self.latencies_ms.append(
                (datetime.now(UTC) - event.created_at).total_seconds() * 1000
            )

    def seqs(self) -> list[int]:
        with self.lock:
            return [event.seq for event in self.events]

    def wait_for(self, seq: int, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            seqs = self.seqs()
            if seqs and seqs[-1] >= seq:
                return
            time.sleep(0.02)
        raise AssertionError(f"only got up to {self.seqs()[-1:]} of {seq}")

    def summary(self) -> dict[str, float]:
        ordered = sorted(self.latencies_ms)
        return {
            "p50_ms": ordered[len(ordered) // 2],
            "p99_ms": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))],
        }


def _writer(url: str, updates: str, count: int, pause: float) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    return subprocess.Popen(
        [sys.executable, "-c", WRITER, url, updates, str(count), str(pause)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )


def _finish(writer: subprocess.Popen[str]) -> dict[str, Any]:
    out, err = writer.communicate(timeout=120)
    assert writer.returncode == 0, err
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


def _head(store: Memory) -> int:
    with store.engine.connect() as connection:
        return int(
            connection.execute(sa.text("SELECT COALESCE(MAX(seq), 0) FROM memory_events"))
            .scalar_one()
        )


def _every_event_once_in_order(collector: Collector, first: int, last: int) -> None:
    assert collector.seqs() == list(range(first, last + 1))
    assert all(event.operation == "memory.add" for event in collector.events)


@pytest.fixture
def postgres_store_url(make_postgres_database: Callable[[], str]) -> str:
    url = make_postgres_database()
    Memory.open(url, embedder=None).close()  # the schema, before two processes race for it
    return url


# -- one writer process, one subscriber, each backend -------------------------------------------


def test_in_process_updates_reach_a_subscriber_in_order(
    tmp_path: Path, record_property: Callable[[str, object], None]
) -> None:
    with Memory.open(f"sqlite:///{tmp_path / 'm.db'}", embedder=None, role="admin") as store:
        collector = Collector()
        with store.subscribe(collector):
            scopes = [store.scope("ada", f"agent-{n}") for n in range(4)]
            threads = [
                threading.Thread(target=lambda s=s: [s.add(f"{s.agent} {i}") for i in range(25)])
                for s in scopes
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            collector.wait_for(100)
        _every_event_once_in_order(collector, 1, 100)
        record_property("latency_inprocess", collector.summary())


@pytest.mark.parametrize("backend", ["postgresql", "redis"])
def test_a_writer_process_reaches_a_subscriber_process(
    backend: str,
    request: pytest.FixtureRequest,
    record_property: Callable[[str, object], None],
) -> None:
    url = request.getfixturevalue("postgres_store_url")
    updates = backend if backend == "postgresql" else request.getfixturevalue("redis_server").url
    with Memory.open(url, embedder=None, updates=updates, role="admin") as store:
        collector = Collector()
        start = _head(store)
        with store.subscribe(collector):
            time.sleep(0.3)  # the listener is connected before the writer starts
            result = _finish(_writer(url, updates, 100, 0.005))
            collector.wait_for(start + 100)
        assert result["publish_failures"] == 0
        _every_event_once_in_order(collector, start + 1, start + 100)
        record_property(f"latency_{backend}", collector.summary())


# -- the bus goes away mid-stream -----------------------------------------------------------------


def test_redis_stopped_and_restarted_mid_stream_loses_nothing(
    redis_server: RedisServer, postgres_store_url: str
) -> None:
    url = postgres_store_url
    with Memory.open(url, embedder=None, updates=redis_server.url, role="admin") as store:
        collector = Collector()
        start = _head(store)
        with store.subscribe(collector) as subscription:
            time.sleep(0.3)
            writer = _writer(url, redis_server.url, 300, 0.01)
            collector.wait_for(start + 40)
            redis_server.stop()
            degraded_seen = False
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and not degraded_seen:
                degraded_seen = store.updates_status().degraded
                time.sleep(0.02)
            # Meanwhile the library keeps working: writes commit, the subscriber reads the log.
            progress = collector.seqs()[-1]
            time.sleep(1.5)
            assert collector.seqs()[-1] > progress
            redis_server.start()
            result = _finish(writer)
            collector.wait_for(start + 300)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and store.updates_status().degraded:
                time.sleep(0.05)
            assert not store.updates_status().degraded
            assert subscription.reconnects >= 1
        assert degraded_seen
        assert result["publish_failures"] > 0  # the writer noticed, and carried on
        _every_event_once_in_order(collector, start + 1, start + 300)


def test_postgres_notification_connection_dropped_loses_nothing(
    postgres_store_url: str, postgres_admin: sa.Engine
) -> None:
    url = postgres_store_url
    database = sa.engine.make_url(url).database
    with Memory.open(url, embedder=None, updates="postgresql", role="admin") as store:
        collector = Collector()
        start = _head(store)
        with store.subscribe(collector) as subscription:
            time.sleep(0.3)
            writer = _writer(url, "postgresql", 300, 0.01)
            collector.wait_for(start + 40)
            with postgres_admin.connect() as connection:
                killed = connection.execute(
                    sa.text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                            "WHERE datname = :db AND query LIKE 'LISTEN%'"),
                    {"db": database},
                ).scalars().all()
            assert killed and all(killed)
            _finish(writer)
            collector.wait_for(start + 300)
            assert subscription.reconnects >= 1
        _every_event_once_in_order(collector, start + 1, start + 300)


# -- caches, status, configuration -----------------------------------------------------------------


def test_another_process_preference_change_invalidates_the_injection_cache(
    postgres_store_url: str,
) -> None:
    url = postgres_store_url
    options: dict[str, Any] = {"embedder": HashingEmbedder(), "updates": "postgresql"}
    with Memory.open(url, **options) as here, Memory.open(url, **options) as there:
        scope = here.scope("ada", "planner", "s")
        scope.set_preference("answer_style", "concise")
        assert "concise" in scope.inject("how should I answer?").text
        there.scope("ada", "reviewer").set_preference("answer_style", "detailed")
        deadline = time.monotonic() + 10
        while "detailed" not in scope.inject("how should I answer?").text:
            assert time.monotonic() < deadline, "the cached context was never invalidated"
            time.sleep(0.05)


def test_a_local_preference_change_invalidates_the_injection_cache(tmp_path: Path) -> None:
    with Memory.open(f"sqlite:///{tmp_path / 'm.db'}", embedder=HashingEmbedder()) as store:
        scope = store.scope("ada", "planner", "s")
        scope.set_preference("answer_style", "concise")
        assert "concise" in scope.inject("how should I answer?").text
        scope.set_preference("answer_style", "detailed")
        assert "detailed" in scope.inject("how should I answer?").text


def test_updates_settings_are_checked(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'm.db'}"
    with pytest.raises(InvalidInputError, match="'postgresql'.*needs a PostgreSQL store"):
        Memory.open(url, embedder=None, updates="postgresql")
    with pytest.raises(InvalidInputError, match="not a backend"):
        Memory.open(url, embedder=None, updates="kafka://somewhere")


def _bus_failures(role: str) -> float:
    return telemetry.totals().counter("memory.updates.bus_failures", role=role)


def test_an_unreachable_redis_degrades_but_never_fails_a_write(tmp_path: Path) -> None:
    dead = f"redis://127.0.0.1:{_free_port()}/0"
    before = {role: _bus_failures(role) for role in ("publish", "subscribe")}
    with Memory.open(
        f"sqlite:///{tmp_path / 'm.db'}", embedder=None, updates=dead, role="admin"
    ) as store:
        collector = Collector()
        with store.subscribe(collector):
            scope = store.scope("ada", "planner")
            for index in range(5):
                scope.add(f"written while Redis is down {index}")
            collector.wait_for(5)  # delivered from the log
            status = store.updates_status()
        assert status.degraded and status.publish_failures >= 1
        assert status.backend == "redis" and status.last_error
        assert collector.seqs() == [1, 2, 3, 4, 5]
    # The degradation shows in the metric too (when metrics are on, as by default).
    if telemetry.enabled():
        assert all(_bus_failures(role) > before[role] for role in before)


def test_memctl_health_checks_the_updates_bus(
    tmp_path: Path, redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path / 'm.db'}"
    Memory.open(url, embedder=None).close()

    def updates_check() -> tuple[str, str]:
        (result,) = [
            r for r in run_health_checks(url, embedder="none", only=["updates"]).results
            if r.name == "updates"
        ]
        return result.status, result.detail

    assert updates_check()[0] == "ok"  # in-process by default
    monkeypatch.setenv("MEMORY_UPDATES_URL", redis_server.url)
    assert updates_check() == ("ok", "redis bus reachable: subscribers listen on memory:updates")
    redis_server.stop()
    status, detail = updates_check()
    assert status == "warn" and detail.startswith("degraded: Redis SUBSCRIBE failed")


# -- the bus is a doorbell: forged messages, stores sharing a bus -----------------------------


def _forge(updates: str, url: str, channel: str, message: str) -> None:
    """Publish ``message`` on ``channel`` as anyone who can reach the bus could."""
    if updates == "postgresql":
        engine = sa.create_engine(url)
        try:
            with engine.begin() as connection:
                connection.execute(
                    sa.text("SELECT pg_notify(:c, :m)"), {"c": channel, "m": message}
                )
        finally:
            engine.dispose()
    else:
        import redis

        with redis.Redis.from_url(updates) as client:
            client.publish(channel, message)


@pytest.mark.parametrize("backend", ["postgresql", "redis"])
def test_a_forged_message_delivers_nothing_and_loses_no_real_event(
    backend: str, request: pytest.FixtureRequest
) -> None:
    url = request.getfixturevalue("postgres_store_url")
    updates = backend if backend == "postgresql" else request.getfixturevalue("redis_server").url
    with Memory.open(url, embedder=None, updates=updates, role="admin") as store:
        with store.engine.connect() as connection:
            channel = store_channel(connection)
        scope = store.scope("ada", "planner")
        collector = Collector()
        start = _head(store)
        with store.subscribe(collector):
            time.sleep(0.3)  # the listener is connected
            forged = json.dumps({
                "seq": start + 1, "event": "memory.delete", "agent": "attacker", "user": "ada",
                "target": "memory:1", "timestamp": datetime.now(UTC).isoformat(), "data": {},
            })
            # On the store's channel and on the one channel every store used to share.
            for name in (channel, "memory:updates"):
                _forge(updates, url, name, forged)
            time.sleep(0.5)
            scope.add("a real note")
            collector.wait_for(start + 1)
            time.sleep(0.3)
        assert collector.seqs() == [start + 1]
        (event,) = collector.events
        assert (event.agent_id, event.operation) == ("planner", "memory.add")


def test_two_stores_on_one_redis_hear_only_their_own_events(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    # Redis pub/sub ignores the database number: db 9 and db 10 share every channel.
    base = redis_server.url.rsplit("/", 1)[0]
    with Memory.open(
        f"sqlite:///{tmp_path / 'a.db'}", embedder=None, updates=f"{base}/9"
    ) as first, Memory.open(
        f"sqlite:///{tmp_path / 'b.db'}", embedder=None, updates=f"{base}/10", role="admin"
    ) as second:
        heard = Collector()
        with second.subscribe(heard):
            time.sleep(0.3)
            first.scope("ada", "planner").add("the first store's note")
            time.sleep(0.5)  # a message from the first store would have arrived by now
            second.scope("bob", "planner").add("the second store's note")
            heard.wait_for(1)
            time.sleep(0.3)
        assert [(e.seq, e.user_id) for e in heard.events] == [(1, "bob")]


def test_nothing_but_a_doorbell_travels_on_the_bus(
    postgres_store_url: str, redis_server: RedisServer
) -> None:
    import redis

    with redis.Redis.from_url(redis_server.url) as client, client.pubsub() as spy:
        spy.psubscribe("*")
        with Memory.open(postgres_store_url, embedder=None, updates=redis_server.url) as store:
            store.scope("user-canary", "planner").add("content canary", metadata={"key": "k"})
        messages = []
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline:
            message = spy.get_message(timeout=0.1)
            if message is not None and message["type"] == "pmessage":
                messages.append((message["channel"], message["data"]))
        assert messages, "the store published nothing"
        assert all(data == b"" for _, data in messages)
        assert len({channel for channel, _ in messages}) == 1
        assert b"canary" not in repr(messages).encode()
