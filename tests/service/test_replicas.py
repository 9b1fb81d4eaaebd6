"""Replicas of ``memctl serve`` over one real PostgreSQL: a write on one is searchable on
the other, the client fails over when a replica is killed without applying a write twice,
SIGTERM drains the requests under way, and a SQLite database refuses a second replica.

(The lag between replicas is measured in ``benchmarks/replica_lag.py``, not here.)"""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from memory import Memory
from memory import ops as ops
from tests.service.processes import MEMCTL, Server, free_port, served

GIVE_UP_SECONDS = 2.0


@pytest.fixture(scope="module")
def secret(database: str) -> str:
    return ops.create_key(database, "replicas", role="admin").secret


@pytest.fixture(scope="module")
def replicas(
    database: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Server, Server]]:
    directory = tmp_path_factory.mktemp("replicas")
    with served(database, directory / "a.log") as a, served(database, directory / "b.log") as b:
        yield a, b


def events_of(database: str, user: str, operation: str) -> list[object]:
    """The payloads of ``user``'s events ``operation``, read from the log itself."""
    engine = sa.create_engine(database)
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                sa.text(
                    "SELECT payload_json FROM memory_events WHERE user_id = :u AND operation = :o"
                ),
                {"u": user, "o": operation},
            )
            return [json.loads(row[0]) for row in rows]
    finally:
        engine.dispose()


def test_a_write_on_one_replica_is_found_by_search_on_the_other(
    replicas: tuple[Server, Server], secret: str, user: str
) -> None:
    a, b = replicas
    with Memory.open(a.url, api_key=secret) as on_a, Memory.open(b.url, api_key=secret) as on_b:
        writer, reader = on_a.scope(user, "planner"), on_b.scope(user, "planner")
        reader.search("warm up the index")
        missing = []
        for number in range(100):
            word = f"w{number}x{uuid.uuid4().hex[:8]}"
            added = writer.add(f"a note about {word}")
            written = time.monotonic()
            while not any(hit.memory.id == added.id for hit in reader.search(word)):
                if time.monotonic() - written > GIVE_UP_SECONDS:
                    missing.append(number)
                    break
        assert missing == []


def test_failover_drill_every_request_succeeds_and_no_write_is_applied_twice(
    replicas: tuple[Server, Server],
    database: str,
    secret: str,
    user: str,
    tmp_path: Path,
) -> None:
    _a, b = replicas
    with served(database, tmp_path / "doomed.log") as doomed:
        done = 0
        killed = threading.Event()

        def kill_at_request_100() -> None:
            while done < 100:
                time.sleep(0.001)
            doomed.process.kill()  # SIGKILL, possibly with a request under way
            killed.set()

        killer = threading.Thread(target=kill_at_request_100, daemon=True)
        killer.start()
        with Memory.open(f"{doomed.url},{b.url}", api_key=secret) as remote:
            scope = remote.scope(user, "drill")
            answered = []
            for number in range(200):
                event, _ = scope.record_event("drill.step", {"n": number})
                answered.append(event.data)
                done += 1
        killer.join(10)
        assert killed.is_set() and doomed.process.wait(10) == -signal.SIGKILL
    assert answered == [{"n": number} for number in range(200)]
    stored = events_of(database, user, "drill.step")
    assert sorted(stored, key=str) == sorted(({"n": n} for n in range(200)), key=str)


def test_sigterm_drains_the_requests_under_way(
    database: str, secret: str, user: str, tmp_path: Path
) -> None:
    results: list[object] = []
    with served(database, tmp_path / "drained.log") as server:
        with Memory.open(server.url, api_key=secret) as remote:
            scope = remote.scope(user, "drain")
            finished: list[float] = []

            def batch(number: int) -> None:
                try:
                    items = [f"batch {number} item {i} {uuid.uuid4().hex}" for i in range(300)]
                    results.append(len(scope.add_many(items)))
                except Exception as error:  # noqa: BLE001 - the assertion shows it
                    results.append(error)
                finished.append(time.monotonic())

            threads = [threading.Thread(target=batch, args=(n,)) for n in range(6)]
            for thread in threads:
                thread.start()
            time.sleep(0.3)
            stopped_at = time.monotonic()
            server.process.send_signal(signal.SIGTERM)
            for thread in threads:
                thread.join(60)
            assert server.process.wait(30) in (0, -signal.SIGTERM)
    assert results == [300] * 6
    assert max(finished) > stopped_at, "no request was under way at SIGTERM"
    assert any('"event": "stopped"' in line for line in server.log_lines())


def test_sqlite_serves_one_replica_and_refuses_a_second(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'one.db'}"
    ops.migrate(url)
    with served(url, tmp_path / "first.log"):
        second = subprocess.run(
            [MEMCTL, "--database-url", url, "serve", "--port", str(free_port())],
            capture_output=True,
            text=True,
            timeout=60,
            env={"MEMORY_SERVICE_EMBEDDER": "hashing", "PATH": "/usr/bin:/bin"},
        )
    assert second.returncode == 1
    assert second.stderr.startswith("Error: another memctl serve already serves")
    assert "one replica" in second.stderr and "Traceback" not in second.stderr
