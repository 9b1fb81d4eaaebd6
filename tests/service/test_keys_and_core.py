"""API keys and the service core, without a transport: identity comes from the key only,
arguments are checked strictly, and each failure keeps its type (SQLite file and the real
PostgreSQL)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from memory import (
    AuthenticationError,
    ConflictError,
    HashingEmbedder,
    InvalidInputError,
    Memory,
    NotFoundError,
    PermissionDeniedError,
    StaleVersionError,
)
from memory import ops as ops
from memory.remote import GRAPH_OPERATIONS, GRAPH_PREFIX
from memory.service.core import (
    ADMIN_OPERATIONS,
    OPERATIONS,
    SCOPE_OPERATIONS,
    Service,
    error_reply,
)


@pytest.fixture(params=["sqlite-file", "postgresql"])
def database(request: pytest.FixtureRequest, url_for: Callable[[str], str]) -> str:
    url = url_for(request.param)
    ops.migrate(url)
    return url


@contextmanager
def connected(database: str) -> Iterator[sa.Connection]:
    """A transaction on ``database`` outside the store, its engine disposed afterwards."""
    engine = sa.create_engine(database)
    try:
        with engine.begin() as connection:
            yield connection
    finally:
        engine.dispose()


@pytest.fixture
def service(database: str) -> Iterator[Service]:
    with Memory.open(database, embedder=HashingEmbedder(), role="admin") as memory:
        yield Service(memory)


def test_a_key_is_shown_once_stored_as_a_hash_and_listed_with_its_last_use(
    database: str, service: Service, user: str
) -> None:
    created = ops.create_key(database, "planner", users=[user])
    assert created.secret.startswith(f"tmk_{created.key.key_id}_")
    with connected(database) as connection:
        row = connection.execute(sa.text("SELECT * FROM api_keys")).mappings().one()
    assert created.secret.split("_", 2)[2] not in json.dumps(dict(row), default=str)
    assert len(row["secret_hash"]) == 64 and row["last_used_at"] is None

    key = service.authenticate(created.secret)
    assert (key.agent, key.users, key.role) == ("planner", (user,), "agent")
    (listed,) = [item for item in ops.list_keys(database) if item.key_id == key.key_id]
    assert listed.last_used_at is not None
    assert listed.last_used_at >= datetime.now(UTC) - timedelta(minutes=1)


def test_missing_malformed_wrong_revoked_and_expired_keys_are_refused(
    database: str, service: Service, user: str
) -> None:
    created = ops.create_key(database, "planner", users=[user])
    wrong = created.secret[:-2] + ("AA" if not created.secret.endswith("AA") else "BB")
    cases = {
        None: "no API key",
        "": "no API key",
        "Bearer nonsense": "malformed",
        "tmk_0123456789abcdef_" + "x" * 40: "not valid",
        wrong: "not valid",
    }
    for credential, reason in cases.items():
        with pytest.raises(AuthenticationError, match=reason):
            service.authenticate(credential)

    ops.revoke_key(database, created.key.key_id)
    with pytest.raises(AuthenticationError, match="revoked"):
        service.authenticate(created.secret)

    soon = ops.create_key(
        database, "planner", expires_at=datetime.now(UTC) + timedelta(hours=1)
    )
    service.authenticate(soon.secret)
    with connected(database) as connection:  # let it expire without waiting
        connection.execute(
            sa.text("UPDATE api_keys SET expires_at = :past WHERE key_id = :id"),
            {"past": datetime(2020, 1, 1), "id": soon.key.key_id},
        )
    with pytest.raises(AuthenticationError, match="expired"):
        service.authenticate(soon.secret)


def test_key_inputs_are_checked(database: str) -> None:
    before = ops.list_keys(database)
    with pytest.raises(InvalidInputError, match="role"):
        ops.create_key(database, "planner", role="root")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="expires_at"):
        ops.create_key(database, "planner", expires_at=datetime.now(UTC) - timedelta(days=1))
    with pytest.raises(InvalidInputError, match="agent"):
        ops.create_key(database, "")
    with pytest.raises(NotFoundError, match="no API key"):
        ops.revoke_key(database, "0000000000000000")
    assert ops.list_keys(database) == before


def test_identity_comes_from_the_key_not_the_body(
    database: str, service: Service, user: str
) -> None:
    planner = service.authenticate(ops.create_key(database, "planner", users=[user]).secret)
    added = service.call(planner, "add", {"arguments": {"content": "Ada prefers tea"}})
    assert (added["user_id"], added["agent_id"]) == (user, "planner")

    # Smuggled identity fields are refused by name, nothing is written.
    for smuggled in ({"agent_id": "coder"}, {"user_id": "eve"}, {"role": "admin"}):
        with pytest.raises(InvalidInputError, match=next(iter(smuggled))):
            service.call(
                planner, "add", {"arguments": {"content": "smuggled", **smuggled}}
            )
    with pytest.raises(PermissionDeniedError, match="acts as agent 'planner' only"):
        service.call(planner, "list", {"agent": "coder"})
    # Another user: the same refusal whether the user exists or not.
    messages = set()
    for other in (user + "-absent", user):
        service.memory.scope(other + "-x", "planner").add("someone else's")
        with pytest.raises(PermissionDeniedError) as refused:
            service.call(planner, "list", {"user": other + "-x"})
        messages.add(str(refused.value))
    assert messages == {"this API key does not act for that user"}
    assert [item["content"] for item in service.call(planner, "list", {})] == ["Ada prefers tea"]


def test_an_agent_key_reads_only_what_grants_allow(
    database: str, service: Service, user: str
) -> None:
    planner = service.authenticate(ops.create_key(database, "planner", users=[user]).secret)
    coder = service.authenticate(ops.create_key(database, "coder", users=[user]).secret)
    secret = service.call(planner, "add", {"arguments": {"content": "the launch date"}})
    with pytest.raises(NotFoundError):
        service.call(coder, "get", {"arguments": {"memory_id": secret["id"]}})
    service.call(
        planner, "share", {"arguments": {"memory_id": secret["id"], "agents": ["coder"]}}
    )
    assert service.call(coder, "get", {"arguments": {"memory_id": secret["id"]}})["content"] == (
        "the launch date"
    )


def test_admin_keys_act_as_any_agent_and_alone_may_forget(
    database: str, service: Service, user: str
) -> None:
    admin = service.authenticate(ops.create_key(database, "operator", role="admin").secret)
    agent = service.authenticate(ops.create_key(database, "planner").secret)
    service.call(admin, "add", {"user": user, "agent": "planner", "arguments": {"content": "x"}})
    with pytest.raises(PermissionDeniedError, match="forget_user needs an admin API key"):
        service.call(agent, "forget_user", {"user": user})
    assert service.call(agent, "list", {"user": user})[0]["content"] == "x"
    assert service.call(admin, "forget_user", {"user": user})["rows"]["memories"] == 1
    assert service.call(agent, "list", {"user": user}) == []


def test_arguments_are_strict_and_errors_keep_their_type(
    database: str, service: Service, user: str
) -> None:
    key = service.authenticate(ops.create_key(database, "planner", users=[user]).secret)
    added = service.call(key, "add", b'{"arguments": {"content": "draft"}}')
    bad_bodies = {
        b"{not json": "Invalid JSON",
        b'{"arguments": {"memory_id": "1"}}': "memory_id: Input should be a valid integer",
        b'{"arguments": {}}': "memory_id: Field required",
        b"[" * 100_000: "recursion limit exceeded",
    }
    for body, reason in bad_bodies.items():
        with pytest.raises(InvalidInputError, match=reason):
            service.call(key, "get", body)
    with pytest.raises(NotFoundError, match="no operation"):
        service.call(key, "drop_tables", b"{}")
    service.call(key, "update", {"arguments": {"memory_id": added["id"], "version": 1}})
    with pytest.raises(StaleVersionError) as stale:
        service.call(key, "update", {"arguments": {"memory_id": added["id"], "version": 1}})
    reply = error_reply(stale.value)
    assert (reply.status, reply.type, reply.details["current"]) == (409, "StaleVersionError", 2)
    assert [item["content"] for item in service.call(key, "list", {})] == ["draft"]


def test_every_scope_operation_is_served_with_the_scope_signature() -> None:
    graph = {GRAPH_PREFIX + name for name in GRAPH_OPERATIONS}
    assert set(OPERATIONS) == {*SCOPE_OPERATIONS, *ADMIN_OPERATIONS, *graph}
    arguments = OPERATIONS["add"].request.model_fields["arguments"].annotation
    assert list(arguments.model_fields) == [  # type: ignore[union-attr]
        "content", "tier", "importance", "visibility", "metadata", "ttl",
    ]
    assert OPERATIONS["forget_user"].admin and not OPERATIONS["add"].admin
    assert OPERATIONS["search"].kind == "search" and OPERATIONS["get"].kind == "read"
    assert OPERATIONS["graph_create_entities"].graph and not OPERATIONS["add"].graph
    assert OPERATIONS["graph_open_nodes"].kind == "read"


def test_keys_need_the_keys_revision(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    ops.migrate(url, "0010")
    with pytest.raises(Exception, match="revision 0011"):
        ops.create_key(url, "planner")


def test_0011_downgrade_archives_the_keys_and_restore_brings_them_back(
    database: str, tmp_path: Path
) -> None:
    created = ops.create_key(database, "planner", users=["ada"])
    before = ops.list_keys(database)
    archive = tmp_path / "archive"
    ops.rollback(database, "0010", archive)
    with connected(database) as connection:
        assert "api_keys" not in sa.inspect(connection).get_table_names()
    ops.migrate(database)
    assert ops.restore_archive(database, archive) == {"api_keys": len(before)}
    assert ops.list_keys(database) == before
    with Memory.open(database, embedder=None) as memory:
        assert Service(memory).authenticate(created.secret).users == ("ada",)


def test_a_write_with_an_idempotency_key_is_applied_once(
    database: str, service: Service, user: str
) -> None:
    key = service.authenticate(ops.create_key(database, "planner", users=[user]).secret)
    body = {"arguments": {"event": "task.done", "data": {"n": 1}}}

    def events() -> int:
        with connected(database) as connection:
            return int(
                connection.execute(
                    sa.text(
                        "SELECT COUNT(*) FROM memory_events"
                        " WHERE user_id = :u AND operation = 'task.done'"
                    ),
                    {"u": user},
                ).scalar_one()
            )

    first = service.call(key, "record_event", body, "request-0001")
    again = service.call(key, "record_event", body, "request-0001")
    assert again == first and events() == 1
    service.call(key, "record_event", body, "request-0002")
    assert events() == 2
    with pytest.raises(InvalidInputError, match="already used for 'record_event'"):
        service.call(key, "add", {"arguments": {"content": "x"}}, "request-0001")
    with pytest.raises(InvalidInputError, match="Idempotency-Key"):
        service.call(key, "record_event", body, "short")
    # A write that failed left no claim: the same key may be sent again, fixed.
    with pytest.raises(InvalidInputError):
        service.call(key, "record_event", {"arguments": {"event": ""}}, "request-0003")
    service.call(key, "record_event", body, "request-0003")
    assert events() == 3
    # Applied, but the answer was lost (the replica died between commit and answer).
    with connected(database) as connection:
        connection.execute(
            sa.text("UPDATE idempotent_requests SET response_json = NULL WHERE request_key = :k"),
            {"k": "request-0002"},
        )
    with pytest.raises(ConflictError, match="was applied, but its answer was lost"):
        service.call(key, "record_event", body, "request-0002")
    assert events() == 3


def test_forgetting_a_user_removes_their_stored_answers_and_their_place_in_keys(
    database: str, service: Service, user: str
) -> None:
    only = ops.create_key(database, "planner", users=[user])
    shared = ops.create_key(database, "planner", users=[user, user + "-other"])
    key = service.authenticate(only.secret)
    service.call(key, "add", {"arguments": {"content": "a secret plan"}}, "request-forget-1")
    admin = service.authenticate(ops.create_key(database, "operator", role="admin").secret)
    report = service.call(admin, "forget_user", {"user": user})
    assert report["rows"]["idempotent_requests"] == 1 and report["rows"]["api_keys"] == 2
    with connected(database) as connection:
        stored = connection.execute(sa.text("SELECT response_json FROM idempotent_requests"))
        assert not any("a secret plan" in (row[0] or "") for row in stored)
    listed = {item.key_id: item for item in ops.list_keys(database)}
    assert listed[only.key.key_id].users == () and listed[only.key.key_id].revoked_at
    assert listed[shared.key.key_id].users == (user + "-other",)
    with pytest.raises(AuthenticationError, match="revoked"):  # not widened to any user
        service.authenticate(only.secret)
