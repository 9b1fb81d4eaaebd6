"""``memctl serve`` over gRPC: one real server process over the real PostgreSQL for the
module, driven with grpcio's own stub (memory/wire): authentication, identity, bad input
(unknown fields, wrong types, oversized messages), request ids in metadata, metrics, and
TLS with a certificate."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import httpx
import pytest
import sqlalchemy as sa

from memory import DeadlineExceededError, Memory
from memory import ops as ops
from memory.wire import memory_pb2, memory_pb2_grpc, to_message
from tests.service.processes import Server, free_port, served
from tests.service.test_deadlines import user_lock

MAX_BODY = 4096


@pytest.fixture(scope="module")
def server(database: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    with served(database, log, MEMORY_SERVICE_MAX_BODY_BYTES=str(MAX_BODY)) as running:
        yield running


@pytest.fixture(scope="module")
def stub(server: Server) -> Iterator[memory_pb2_grpc.MemoryHubStub]:
    with grpc.insecure_channel(server.grpc_url.removeprefix("grpc://")) as channel:
        yield memory_pb2_grpc.MemoryHubStub(channel)


def bearer(database: str, agent: str, *users: str, role: str = "agent") -> list[tuple[str, str]]:
    secret = ops.create_key(database, agent, users=users, role=role).secret  # type: ignore[arg-type]
    return [("authorization", f"Bearer {secret}")]


def count_memories(database: str, user: str) -> int:
    engine = sa.create_engine(database)
    try:
        with engine.connect() as connection:
            return int(
                connection.execute(
                    sa.text("SELECT COUNT(*) FROM memories WHERE user_id = :user"),
                    {"user": user},
                ).scalar_one()
            )
    finally:
        engine.dispose()


def refused(call: grpc.RpcError) -> tuple[grpc.StatusCode, str | None, str]:
    trailers = dict(call.trailing_metadata() or ())  # type: ignore[attr-defined]
    return call.code(), trailers.get("error-type"), call.details()  # type: ignore[attr-defined]


def add_request(content: object = "Ada likes tea", **fields: object) -> memory_pb2.AddRequest:
    return to_message({"arguments": {"content": content}, **fields}, memory_pb2.AddRequest)


def test_a_round_trip_with_the_keys_identity_and_typed_messages(
    stub: memory_pb2_grpc.MemoryHubStub, database: str, user: str
) -> None:
    metadata = bearer(database, "planner", user)
    added = stub.Add(add_request(), metadata=metadata).result
    assert (added.user_id, added.agent_id, added.content) == (user, "planner", "Ada likes tea")
    assert isinstance(added.id, int) and added.version == 1
    hits = stub.Search(
        to_message({"arguments": {"query": "tea"}}, memory_pb2.SearchRequest), metadata=metadata
    ).result
    assert [hit.memory.id for hit in hits] == [added.id]
    with pytest.raises(grpc.RpcError) as stale:
        stub.Update(
            to_message(
                {"arguments": {"memory_id": added.id, "version": 7, "importance": 0.1}},
                memory_pb2.UpdateRequest,
            ),
            metadata=metadata,
        )
    assert refused(stale.value)[:2] == (grpc.StatusCode.ABORTED, "StaleVersionError")
    details = dict(stale.value.trailing_metadata())["error-details"]  # type: ignore[attr-defined]
    assert json.loads(details) == {"memory_id": added.id, "expected": 7, "current": 1}


def test_authentication_failures_are_unauthenticated_with_a_reason_and_counted(
    stub: memory_pb2_grpc.MemoryHubStub, server: Server, database: str, user: str
) -> None:
    revoked = ops.create_key(database, "planner", users=[user])
    ops.revoke_key(database, revoked.key.key_id)
    expired = ops.create_key(
        database, "planner", users=[user], expires_at=datetime.now(UTC) + timedelta(hours=1)
    )
    engine = sa.create_engine(database)
    with engine.begin() as connection:
        connection.execute(
            sa.text("UPDATE api_keys SET expires_at = :past WHERE key_id = :id"),
            {"past": datetime(2020, 1, 1), "id": expired.key.key_id},
        )
    engine.dispose()
    before = httpx.get(f"{server.url}/metrics").text
    cases: dict[str, list[tuple[str, str]]] = {
        "missing": [],
        "malformed": [("authorization", "Bearer hunter2")],
        "invalid": [("authorization", f"Bearer {revoked.secret[:-3]}abc")],
        "revoked": [("authorization", f"Bearer {revoked.secret}")],
        "expired": [("authorization", f"Bearer {expired.secret}")],
    }
    for reason, metadata in cases.items():
        with pytest.raises(grpc.RpcError) as failure:
            stub.Add(add_request(), metadata=metadata)
        code, kind, _message = refused(failure.value)
        assert (code, kind) == (grpc.StatusCode.UNAUTHENTICATED, "AuthenticationError"), reason
    assert count_memories(database, user) == 0
    after = httpx.get(f"{server.url}/metrics").text
    for reason in cases:
        series = f'memory_service_auth_failures_total{{reason="{reason}",status="401"}}'
        assert _value(after, series) == _value(before, series) + 1, reason


def _value(metrics: str, series: str) -> float:
    for line in metrics.splitlines():
        if line.startswith(series + " "):
            return float(line.split()[-1])
    return 0.0


def test_a_key_acts_only_as_its_agent_and_users_and_admin_verbs_need_admin(
    stub: memory_pb2_grpc.MemoryHubStub, database: str, user: str
) -> None:
    metadata = bearer(database, "planner", user)
    cases = {
        "another agent": add_request(agent="coder"),
        "another user": add_request(user=user + "-other"),
    }
    for case, request in cases.items():
        with pytest.raises(grpc.RpcError) as failure:
            stub.Add(request, metadata=metadata)
        assert refused(failure.value)[:2] == (
            grpc.StatusCode.PERMISSION_DENIED, "PermissionDeniedError"
        ), case
    with pytest.raises(grpc.RpcError) as failure:
        stub.ForgetUser(
            to_message({"user": user}, memory_pb2.ForgetUserRequest), metadata=metadata
        )
    code, kind, message = refused(failure.value)
    assert (code, kind) == (grpc.StatusCode.PERMISSION_DENIED, "PermissionDeniedError")
    assert "admin API key" in message
    assert count_memories(database, user) == 0
    admin = bearer(database, "operator", role="admin")
    stub.Add(add_request(user=user, agent="coder"), metadata=admin)
    report = stub.ForgetUser(
        to_message({"user": user}, memory_pb2.ForgetUserRequest), metadata=admin
    ).result
    assert json.loads(report.rows_json)["memories"] == 1 and report.events_redacted >= 1


def test_bad_input_is_invalid_argument_naming_the_problem_and_writes_nothing(
    stub: memory_pb2_grpc.MemoryHubStub, server: Server, database: str, user: str
) -> None:
    metadata = bearer(database, "planner", user)
    # A field this .proto does not declare (number 99, as another client's .proto might).
    unknown = add_request().SerializeToString() + b"\x9a\x06\x03abc"
    wrong_type = memory_pb2.AddRequest()
    wrong_type.arguments.metadata_json = '"not an object"'
    not_json = memory_pb2.AddRequest()
    not_json.arguments.content = "fine"
    not_json.arguments.metadata_json = "{broken"
    empty = memory_pb2.AddRequest()  # no content at all
    cases = {
        "field number 99": memory_pb2.AddRequest.FromString(unknown),
        "metadata": wrong_type,
        "arguments.metadata_json: not JSON": not_json,
        "content": empty,
    }
    for problem, request in cases.items():
        with pytest.raises(grpc.RpcError) as failure:
            stub.Add(request, metadata=metadata)
        code, kind, message = refused(failure.value)
        assert (code, kind) == (grpc.StatusCode.INVALID_ARGUMENT, "InvalidInputError"), problem
        assert problem in message, (problem, message)
    # Field 1 (user) says 5 bytes follow and 2 do: not an AddRequest at all.
    with grpc.insecure_channel(server.grpc_url.removeprefix("grpc://")) as channel:
        raw = channel.unary_unary("/tiered_memory.v1.MemoryHub/Add")
        with pytest.raises(grpc.RpcError) as failure:
            raw(b"\x0a\x05ab", metadata=metadata)
    code, kind, message = refused(failure.value)
    assert (code, kind) == (grpc.StatusCode.INVALID_ARGUMENT, "InvalidInputError")
    assert "not a valid AddRequest message" in message
    with pytest.raises(grpc.RpcError) as failure:
        stub.Add(add_request("x" * (MAX_BODY * 2)), metadata=metadata)
    assert failure.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED  # type: ignore[attr-defined]
    assert "larger than max" in failure.value.details()  # type: ignore[attr-defined]
    assert count_memories(database, user) == 0


def test_a_retried_write_with_one_idempotency_key_is_applied_once(
    stub: memory_pb2_grpc.MemoryHubStub, database: str, user: str
) -> None:
    metadata = [*bearer(database, "planner", user), ("idempotency-key", "retry-0001")]
    first = stub.Add(add_request(), metadata=metadata).result
    again = stub.Add(add_request(), metadata=metadata).result
    assert first.id == again.id
    assert count_memories(database, user) == 1


def test_the_request_id_is_returned_and_in_every_log_line_of_the_call(
    stub: memory_pb2_grpc.MemoryHubStub, server: Server, database: str, user: str
) -> None:
    metadata = bearer(database, "planner", user)
    _reply, call = stub.List.with_call(
        memory_pb2.ListRequest(), metadata=[*metadata, ("x-request-id", "grpc-trace-42")]
    )
    assert ("x-request-id", "grpc-trace-42") in call.initial_metadata()
    _reply, call = stub.List.with_call(
        memory_pb2.ListRequest(), metadata=[*metadata, ("x-request-id", "bad id!")]
    )
    generated = dict(call.initial_metadata())["x-request-id"]
    assert len(generated) == 32 and generated != "bad id"
    with pytest.raises(grpc.RpcError):
        stub.Get(to_message({"arguments": {"memory_id": 10**12}}, memory_pb2.GetRequest),
                 metadata=[*metadata, ("x-request-id", "grpc-trace-43")])
    lines = [json.loads(line) for line in server.log_lines() if "grpc-trace-43" in line]
    assert lines and all(line["request_id"] == "grpc-trace-43" for line in lines)
    assert any(line["event"] == "refused" and line["error"] == "NotFoundError" for line in lines)


def test_calls_are_counted_with_the_http_ones(
    stub: memory_pb2_grpc.MemoryHubStub, server: Server, database: str, user: str
) -> None:
    series = 'memory_service_requests_total{operation="list_preferences",status="200"}'
    before = _value(httpx.get(f"{server.url}/metrics").text, series)
    stub.ListPreferences(memory_pb2.ListPreferencesRequest(), metadata=bearer(database, "p", user))
    assert _value(httpx.get(f"{server.url}/metrics").text, series) == before + 1


def _certificate(directory: Path) -> tuple[Path, Path]:
    certificate, key = directory / "hub.pem", directory / "hub.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
         "-keyout", str(key), "-out", str(certificate)],
        check=True, capture_output=True,
    )
    return certificate, key


def test_with_a_certificate_the_port_speaks_tls_only(
    database: str, tmp_path: Path, user: str
) -> None:
    certificate, key = _certificate(tmp_path)
    port = free_port()
    with served(
        database,
        tmp_path / "serve.log",
        MEMORY_SERVICE_GRPC_PORT=str(port),
        MEMORY_SERVICE_GRPC_TLS_CERTIFICATE=str(certificate),
        MEMORY_SERVICE_GRPC_TLS_KEY=str(key),
    ):
        metadata = bearer(database, "planner", user)
        credentials = grpc.ssl_channel_credentials(certificate.read_bytes())
        with grpc.secure_channel(f"127.0.0.1:{port}", credentials) as channel:
            added = memory_pb2_grpc.MemoryHubStub(channel).Add(add_request(), metadata=metadata)
            assert added.result.user_id == user
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            with pytest.raises(grpc.RpcError) as plain:
                memory_pb2_grpc.MemoryHubStub(channel).Add(
                    add_request(), metadata=metadata, timeout=5
                )
            assert plain.value.code() == grpc.StatusCode.UNAVAILABLE  # type: ignore[attr-defined]
    assert count_memories(database, user) == 1


def test_a_half_configured_tls_is_refused_at_start(database: str, tmp_path: Path) -> None:
    certificate, _key = _certificate(tmp_path)
    with pytest.raises(AssertionError, match="grpc_tls_certificate and grpc_tls_key"):
        with served(
            database, tmp_path / "serve.log", MEMORY_SERVICE_GRPC_TLS_CERTIFICATE=str(certificate)
        ):
            pass


def test_the_grpc_client_reaches_a_tls_hub_with_the_roots_it_is_given(
    database: str, tmp_path: Path, user: str
) -> None:
    """``grpcs://`` checks the hub against $GRPC_DEFAULT_SSL_ROOTS_FILE_PATH (grpc reads it
    once per process: in a process of its own)."""
    certificate, key = _certificate(tmp_path)
    port = free_port()
    secret = ops.create_key(database, "planner", users=[user]).secret
    with served(
        database,
        tmp_path / "serve.log",
        MEMORY_SERVICE_GRPC_PORT=str(port),
        MEMORY_SERVICE_GRPC_TLS_CERTIFICATE=str(certificate),
        MEMORY_SERVICE_GRPC_TLS_KEY=str(key),
    ):
        script = (
            "import sys; from memory import Memory\n"
            f"with Memory.open('grpcs://localhost:{port}', api_key=sys.argv[1]) as m:\n"
            f"    print(m.scope({user!r}, 'planner').add('over tls').content)\n"
        )
        done = subprocess.run(
            [sys.executable, "-c", script, secret],
            capture_output=True, text=True, timeout=60,
            env={**os.environ, "GRPC_DEFAULT_SSL_ROOTS_FILE_PATH": str(certificate)},
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == "over tls"


def test_a_grpc_port_in_use_is_a_clear_error(database: str, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(AssertionError, match="exited") as failure:
            with served(database, tmp_path / "serve.log", MEMORY_SERVICE_GRPC_PORT=str(port)):
                pass
    log = (tmp_path / "serve.log").read_text()
    assert f"grpc_port: cannot listen on 127.0.0.1:{port}" in str(failure.value)
    assert "Traceback" not in log


def test_the_grpc_clients_timeout_is_the_calls_deadline(
    server: Server, database: str, user: str
) -> None:
    """The hub gives up a little before the client's deadline, in time to say why:
    ``DeadlineExceededError``, nothing written (as over HTTP, test_deadlines.py)."""
    secret = ops.create_key(database, "planner", users=[user]).secret
    with Memory.open(server.grpc_url, api_key=secret, timeout=1.5) as memory:
        scope = memory.scope(user, "planner")
        with user_lock(database, user):
            started = time.monotonic()
            with pytest.raises(DeadlineExceededError, match="nothing was written"):
                scope.add("will it make it?")
            assert time.monotonic() - started < 1.5
        assert count_memories(database, user) == 0
        assert scope.add("now it will").content == "now it will"
