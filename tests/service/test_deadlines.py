"""Request deadlines on a real ``memctl serve``: a request held up by the database past its
deadline answers 504 with the reason and has written nothing, on SQLite (another writer
holds the write lock) and on PostgreSQL (a forget holds the user's lock; the statement is
cancelled by statement_timeout); a client asks for less with ``X-Request-Timeout`` but
never for more than the configured default; the remote client sends its own timeout; the
ZeroMQ transport has the same configured deadline."""

from __future__ import annotations

import hashlib
import sqlite3
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from memory import DeadlineExceededError, Memory
from memory import ops as ops
from tests.service.processes import free_port, served
from tests.service.test_zeromq import ask, request


def count(database: str, user: str) -> int:
    engine = sa.create_engine(database)
    try:
        with engine.connect() as connection:
            return int(
                connection.execute(
                    sa.text("SELECT COUNT(*) FROM memories WHERE user_id = :user"), {"user": user}
                ).scalar_one()
            )
    finally:
        engine.dispose()


@contextmanager
def sqlite_write_lock(path: Path) -> Iterator[None]:
    """Another process's writer holding SQLite's one write lock."""
    connection = sqlite3.connect(path, isolation_level=None)
    try:
        connection.execute("BEGIN IMMEDIATE")
        yield
        connection.execute("ROLLBACK")
    finally:
        connection.close()


@contextmanager
def user_lock(database: str, user: str) -> Iterator[None]:
    """The user's lock held exclusively, as a forget of them holds it
    (memory.store.db.lock_user), so that every write of theirs waits."""
    key = int.from_bytes(hashlib.sha256(f"user:{user}".encode()).digest()[:8], signed=True)
    engine = sa.create_engine(database)
    try:
        with engine.connect() as connection, connection.begin():
            connection.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})
            yield
    finally:
        engine.dispose()


def add(client: httpx.Client, secret: str, timeout: str | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {secret}"}
    if timeout is not None:
        headers["X-Request-Timeout"] = timeout
    content = f"in time? {uuid.uuid4().hex}"  # distinct: the same content is stored once
    return client.post("/v1/add", headers=headers, json={"arguments": {"content": content}})


def test_sqlite_a_request_past_its_deadline_answers_504_and_writes_nothing(
    tmp_path: Path, user: str
) -> None:
    path = tmp_path / "m.db"
    database = f"sqlite:///{path}"
    ops.migrate(database)
    secret = ops.create_key(database, "planner", users=[user]).secret
    with served(database, tmp_path / "serve.log") as server, httpx.Client(
        base_url=server.url, timeout=30
    ) as client:
        assert add(client, secret, "5").status_code == 200
        with sqlite_write_lock(path):
            started = time.monotonic()
            refused = add(client, secret, "0.5")
            took = time.monotonic() - started
        assert refused.status_code == 504, refused.text
        error = refused.json()["error"]
        assert error["type"] == "DeadlineExceededError"
        assert "deadline" in error["message"] and "nothing was written" in error["message"]
        assert 0.4 < took < 5.0
        assert count(database, user) == 1
        assert add(client, secret, "5").status_code == 200  # the lock is gone: in time
        assert count(database, user) == 2


def test_postgresql_the_default_deadline_cancels_a_blocked_write(
    postgres_url: str, tmp_path: Path, user: str
) -> None:
    ops.migrate(postgres_url)
    secret = ops.create_key(postgres_url, "planner", users=[user]).secret
    with served(
        postgres_url, tmp_path / "serve.log", MEMORY_SERVICE_REQUEST_TIMEOUT_SECONDS="2"
    ) as server, httpx.Client(base_url=server.url, timeout=30) as client:
        with user_lock(postgres_url, user):
            started = time.monotonic()
            # A client cannot ask for more than the configured default.
            refused = add(client, secret, "20")
            took = time.monotonic() - started
            assert refused.status_code == 504, refused.text
            assert refused.json()["error"]["type"] == "DeadlineExceededError"
            assert 1.8 < took < 6.0
            started = time.monotonic()
            assert add(client, secret, "0.2").status_code == 504
            assert time.monotonic() - started < 1.5  # a client may ask for less
        assert count(postgres_url, user) == 0
        assert add(client, secret).status_code == 200
        assert count(postgres_url, user) == 1


@pytest.mark.parametrize("given", ["soon", "0", "-1", "nan", "inf"])
def test_a_timeout_header_that_is_no_number_of_seconds_is_refused(
    tmp_path: Path, user: str, given: str
) -> None:
    database = f"sqlite:///{tmp_path / 'm.db'}"
    ops.migrate(database)
    secret = ops.create_key(database, "planner", users=[user]).secret
    with served(database, tmp_path / "serve.log") as server, httpx.Client(
        base_url=server.url, timeout=30
    ) as client:
        refused = add(client, secret, given)
        assert refused.status_code == 422
        assert refused.json()["error"]["message"] == (
            f"X-Request-Timeout: must be a number of seconds > 0, not {given!r}"
        )
    assert count(database, user) == 0


def test_the_remote_client_sends_its_timeout(
    postgres_url: str, tmp_path: Path, user: str
) -> None:
    ops.migrate(postgres_url)
    secret = ops.create_key(postgres_url, "planner", users=[user]).secret
    with served(postgres_url, tmp_path / "serve.log") as server:
        with Memory.open(server.url, api_key=secret, timeout=1.5) as memory:
            scope = memory.scope(user, "planner")
            with user_lock(postgres_url, user):
                started = time.monotonic()
                with pytest.raises(DeadlineExceededError, match="nothing was written"):
                    scope.add("will it make it?")
                # The hub gave up within the client's timeout (30 s by its own default).
                assert time.monotonic() - started < 1.5
            assert count(postgres_url, user) == 0
            assert scope.add("now it will").content == "now it will"


def test_zeromq_requests_have_the_configured_deadline(tmp_path: Path, user: str) -> None:
    path = tmp_path / "m.db"
    database = f"sqlite:///{path}"
    ops.migrate(database)
    secret = ops.create_key(database, "legacy", users=[user]).secret
    port = free_port()
    with served(
        database,
        tmp_path / "serve.log",
        MEMORY_SERVICE_ZMQ_PORT=str(port),
        MEMORY_SERVICE_REQUEST_TIMEOUT_SECONDS="2",
    ):
        address = f"tcp://127.0.0.1:{port}"
        frame = request(secret, "add", {"arguments": {"content": "legacy, in time"}})
        first = ask(address, frame)
        assert first["ok"], first  # the key's first use is behind us
        with sqlite_write_lock(path):
            late = ask(address, request(secret, "add", {"arguments": {"content": "late"}}))
        assert (late["ok"], late["status"], late["error"]["type"]) == (
            False,
            504,
            "DeadlineExceededError",
        )
    assert count(database, user) == 1
