"""The circuit breakers: the embedder's opens after repeated failures, then fails fast
without touching the model, and search keeps answering from keywords (a real SQLite store);
the bus's opens while a real redis-server of the test's own is stopped, writes and
deliveries go on from the log, and it closes when Redis is back; a real ``memctl serve``
shows it in /ready and /metrics. (The Unleash breaker is tested where a real Unleash runs:
tests/flags/test_flags_unleash_server.py.)"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path

import httpx
import numpy as np
import pybreaker
import pytest

from memory import HashingEmbedder, Memory
from memory import ops as ops
from memory.service.breakers import GuardedEmbedder, breaker
from tests.api.test_updates import RedisServer
from tests.service.processes import served


class BrokenModel:
    """An embedder whose model has stopped working (after it embedded the first writes)."""

    def __init__(self) -> None:
        self.working = True
        self.calls = 0
        self.model = HashingEmbedder()
        self.model_name, self.dimension = self.model.model_name, self.model.dimension

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        self.calls += 1
        if not self.working:
            raise RuntimeError("the model server stopped answering")
        return self.model.embed(texts)


def test_the_breaker_opens_fails_fast_and_search_still_answers(tmp_path: Path) -> None:
    model = BrokenModel()
    guard = breaker("embedder", fail_max=3, reset_timeout=60)
    with Memory.open(
        f"sqlite:///{tmp_path / 'm.db'}", embedder=GuardedEmbedder(model, guard)
    ) as memory:
        scope = memory.scope("ada", "planner")
        scope.add("Ada prefers green tea")
        model.working = False
        for _ in range(3):  # each search fails over to keywords and counts a failure
            assert [hit.memory.content for hit in scope.search("green tea")] == [
                "Ada prefers green tea"
            ]
        assert guard.current_state == "open"
        calls = model.calls
        assert [hit.memory.content for hit in scope.search("tea")] == ["Ada prefers green tea"]
        assert model.calls == calls  # open: the model was not called at all
        with pytest.raises(pybreaker.CircuitBreakerError):
            GuardedEmbedder(model, guard).embed(["x"])


def wait_until(condition: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def test_the_bus_breaker_opens_while_redis_is_down_and_closes_when_it_is_back(
    tmp_path: Path,
) -> None:
    redis = RedisServer(tmp_path)
    redis.start()
    guard = breaker("redis", fail_max=2, reset_timeout=0.5)
    heard: list[int] = []
    try:
        with Memory.open(
            f"sqlite:///{tmp_path / 'm.db'}",
            embedder=HashingEmbedder(),
            updates=redis.url,
            updates_guard=guard,
        ) as memory:
            scope = memory.scope("ada", "planner")
            subscription = scope.subscribe(lambda event: heard.append(event.seq))
            scope.add("before the outage")
            wait_until(lambda: len(heard) == 1, 10, "the first event was not delivered")
            assert guard.current_state == "closed"
            redis.stop()
            # Failed publishes and reconnects count; the breaker opens within a few seconds.
            deadline = time.monotonic() + 15
            while guard.current_state != "open":
                assert time.monotonic() < deadline, "the breaker did not open"
                scope.add(f"during the outage {time.monotonic()}")  # writes keep committing
                time.sleep(0.2)
            assert memory.updates_status().degraded
            written = len(scope.list(limit=100))
            # Nothing is lost: the subscriber reads the log while the bus is refused.
            wait_until(lambda: len(heard) == written, 10, "events were lost in the outage")
            redis.start()
            scope.add("after the outage")
            wait_until(lambda: guard.current_state == "closed", 15, "the breaker stayed open")
            wait_until(lambda: len(heard) == written + 1, 10, "the last event was lost")
            assert heard == sorted(set(heard))
            subscription.close()
    finally:
        redis.stop()


def test_ready_and_metrics_show_the_bus_breaker(
    postgres_url: str, tmp_path: Path, user: str
) -> None:
    ops.migrate(postgres_url)
    redis = RedisServer(tmp_path)
    redis.start()
    secret = ops.create_key(postgres_url, "planner", users=[user]).secret
    headers = {"Authorization": f"Bearer {secret}"}
    try:
        with served(
            postgres_url,
            tmp_path / "serve.log",
            MEMORY_UPDATES_URL=redis.url,
            MEMORY_SERVICE_BREAKER_FAILURES="2",
            MEMORY_SERVICE_BREAKER_RESET_SECONDS="600",
        ) as server, httpx.Client(base_url=server.url, timeout=30) as client:

            def state() -> str:
                breakers: dict[str, str] = client.get("/ready").json()["breakers"]
                return breakers["redis"]

            assert client.get("/ready").json()["breakers"] == {
                "embedder": "closed",
                "redis": "closed",
            }
            assert 'memory_service_breaker_state{breaker="redis"} 0.0' in client.get(
                "/metrics"
            ).text
            redis.stop()
            deadline = time.monotonic() + 20
            while state() != "open":
                assert time.monotonic() < deadline, "the redis breaker did not open"
                added = client.post(
                    "/v1/add", headers=headers, json={"arguments": {"content": "a write"}}
                )
                assert added.status_code == 200, added.text  # the bus is not the write
                time.sleep(0.3)
            ready = client.get("/ready")
            assert ready.status_code == 200  # degraded, still serving
            assert 'memory_service_breaker_state{breaker="redis"} 2.0' in client.get(
                "/metrics"
            ).text
    finally:
        redis.stop()
