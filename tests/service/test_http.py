"""``memctl serve`` over HTTP: one real server process over the real PostgreSQL for the
module, driven with httpx: authentication, identity, bad input, correlation, probes,
metrics and the OpenAPI document."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from memory import ops as ops
from tests.service.processes import Server, served

MAX_BODY = 4096


@pytest.fixture(scope="module")
def server(database: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    with served(database, log, MEMORY_SERVICE_MAX_BODY_BYTES=str(MAX_BODY)) as running:
        yield running


@pytest.fixture(scope="module")
def client(server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30) as http:
        yield http


def key(database: str, agent: str, *users: str, role: str = "agent") -> dict[str, str]:
    secret = ops.create_key(database, agent, users=users, role=role).secret  # type: ignore[arg-type]
    return {"Authorization": f"Bearer {secret}"}


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


def error_of(response: httpx.Response) -> tuple[int, str, str]:
    error = response.json()["error"]
    return response.status_code, error["type"], error["message"]


def test_a_scope_round_trip_with_the_keys_identity(
    client: httpx.Client, database: str, user: str
) -> None:
    headers = key(database, "planner", user)
    body = {"arguments": {"content": "Ada likes tea"}}
    added = client.post("/v1/add", headers=headers, json=body)
    assert added.status_code == 200, added.text
    assert (added.json()["user_id"], added.json()["agent_id"]) == (user, "planner")
    hits = client.post("/v1/search", headers=headers, json={"arguments": {"query": "tea"}})
    assert [hit["memory"]["id"] for hit in hits.json()] == [added.json()["id"]]
    stale = client.post(
        "/v1/update",
        headers=headers,
        json={"arguments": {"memory_id": added.json()["id"], "version": 7, "importance": 0.1}},
    )
    assert error_of(stale)[:2] == (409, "StaleVersionError")
    assert stale.json()["error"]["details"] == {
        "memory_id": added.json()["id"], "expected": 7, "current": 1,
    }


def test_authentication_failures_are_401_with_a_reason_and_counted(
    client: httpx.Client, database: str, user: str
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
    cases = {
        "missing": {},
        "malformed": {"Authorization": "Bearer hunter2"},
        "invalid": {"Authorization": f"Bearer {revoked.secret[:-3]}abc"},
        "revoked": {"Authorization": f"Bearer {revoked.secret}"},
        "expired": {"Authorization": f"Bearer {expired.secret}"},
    }
    for reason, headers in cases.items():
        response = client.post("/v1/list", headers=headers, json={})
        status, kind, _message = error_of(response)
        assert (status, kind) == (401, "AuthenticationError"), reason
        assert response.headers["WWW-Authenticate"] == "Bearer"
    metrics = client.get("/metrics").text
    for reason in cases:
        assert f'memory_service_auth_failures_total{{reason="{reason}",status="401"}}' in metrics


def test_identity_in_the_body_is_refused_and_nothing_is_written(
    client: httpx.Client, database: str, user: str
) -> None:
    headers = key(database, "planner", user)
    for arguments in (
        {"content": "x", "agent_id": "coder"},
        {"content": "x", "user_id": "eve"},
        {"content": "x", "role": "admin"},
    ):
        response = client.post("/v1/add", headers=headers, json={"arguments": arguments})
        assert error_of(response)[:2] == (422, "InvalidInputError")
    for body, message in (
        ({"agent": "coder", "arguments": {"content": "x"}}, "acts as agent 'planner' only"),
        ({"user": "someone-else", "arguments": {"content": "x"}}, "does not act for that user"),
        ({"user": user + "-absent", "arguments": {"content": "x"}}, "does not act for that user"),
    ):
        response = client.post("/v1/add", headers=headers, json=body)
        assert error_of(response) == (403, "PermissionDeniedError", error_of(response)[2])
        assert message in error_of(response)[2]
    assert count_memories(database, user) == 0
    assert count_memories(database, "someone-else") == 0


def test_an_agent_key_reads_only_what_grants_allow(
    client: httpx.Client, database: str, user: str
) -> None:
    planner, coder = key(database, "planner", user), key(database, "coder", user)
    memory_id = client.post(
        "/v1/add", headers=planner, json={"arguments": {"content": "launch on friday"}}
    ).json()["id"]
    get = {"arguments": {"memory_id": memory_id}}
    assert error_of(client.post("/v1/get", headers=coder, json=get))[:2] == (
        404, "NotFoundError",
    )
    share = {"arguments": {"memory_id": memory_id, "agents": ["coder"]}}
    shared = client.post("/v1/share", headers=planner, json=share)
    assert shared.status_code == 200, shared.text
    assert client.post("/v1/get", headers=coder, json=get).json()["content"] == "launch on friday"


def test_admin_verbs_need_an_admin_key(client: httpx.Client, database: str, user: str) -> None:
    agent = key(database, "planner", user)
    admin = key(database, "operator", role="admin")
    client.post("/v1/add", headers=agent, json={"arguments": {"content": "to forget"}})
    refused = client.post("/v1/forget_user", headers=agent, json={"user": user})
    assert error_of(refused)[:2] == (403, "PermissionDeniedError")
    assert count_memories(database, user) == 1
    forgotten = client.post("/v1/forget_user", headers=admin, json={"user": user})
    assert forgotten.status_code == 200 and forgotten.json()["rows"]["memories"] == 1
    assert count_memories(database, user) == 0


def test_bad_bodies_get_a_clear_error_and_write_nothing(
    client: httpx.Client, database: str, user: str
) -> None:
    headers = {**key(database, "planner", user), "Content-Type": "application/json"}
    cases = [
        (b"{not json", 422, "Invalid JSON"),
        (b'{"arguments": {"content": 5}}', 422, "arguments.content"),
        (b'{"arguments": {"content": "x", "importance": "high"}}', 422, "importance"),
        (b'{"arguments": {"content": "\\ud800"}}', 422, ""),
        (b"[" * 3000, 422, "recursion limit"),
        (json.dumps({"arguments": {"content": "x" * MAX_BODY}}).encode(), 413, "limit"),
    ]
    for body, status, words in cases:
        response = client.post("/v1/add", headers=headers, content=body)
        assert response.status_code == status, (body[:40], response.text)
        assert words in response.json()["error"]["message"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit applies as it streams
        yield b'{"arguments": {"content": "'
        for _ in range(MAX_BODY // 100 + 1):
            yield b"y" * 100
        yield b'"}}'

    streamed = client.post("/v1/add", headers=headers, content=chunks())
    assert streamed.status_code == 413
    assert count_memories(database, user) == 0


def test_request_ids_are_returned_and_in_every_log_line(
    client: httpx.Client, server: Server, database: str, user: str
) -> None:
    headers = key(database, "planner", user)
    given = client.post(
        "/v1/list", headers={**headers, "X-Request-ID": "trace-42.a"}, json={}
    )
    assert given.headers["X-Request-ID"] == "trace-42.a"
    hostile = client.post(
        "/v1/list", headers={**headers, "X-Request-ID": "x" * 500}, json={}
    )
    refused = client.post("/v1/list", json={})
    generated = {hostile.headers["X-Request-ID"], refused.headers["X-Request-ID"]}
    assert len(generated) == 2 and all(len(item) == 32 for item in generated)
    records = [json.loads(line) for line in server.log_lines()]
    for request_id, events in (
        ("trace-42.a", {"access"}),
        (refused.headers["X-Request-ID"], {"refused", "access"}),
    ):
        mine = [record for record in records if record.get("request_id") == request_id]
        assert {record["event"] for record in mine} == events
    access = next(r for r in records if r.get("request_id") == "trace-42.a")
    assert (access["path"], access["status"]) == ("/v1/list", 200)


def test_probes_metrics_and_openapi(client: httpx.Client) -> None:
    assert client.get("/health").json() == {"status": "ok"}
    ready = client.get("/ready")
    assert ready.status_code == 200 and ready.json()["revision"] == ops.head_revision()
    assert ready.json()["breakers"] == {"embedder": "closed"}
    metrics = client.get("/metrics")
    assert 'memory_service_breaker_state{breaker="embedder"} 0.0' in metrics.text
    assert "memory_service_requests_total" in metrics.text
    assert "memory_service_request_seconds_bucket" in metrics.text
    document = client.get("/openapi.json").json()
    schemas = document["components"]["schemas"]
    assert {f"/v1/{name}" for name in ("add", "search", "inject", "forget_user")} <= set(
        document["paths"]
    )
    add = document["paths"]["/v1/add"]["post"]
    reference = add["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    request = schemas[reference.rsplit("/", 1)[1]]
    assert request["additionalProperties"] is False
    assert "content" in schemas[request["properties"]["arguments"]["$ref"].rsplit("/", 1)[1]][
        "properties"
    ]
    # Every reference in the document resolves.
    text = json.dumps(document)
    for name in {part.split('"')[0] for part in text.split("#/components/schemas/")[1:]}:
        assert name in schemas, name
    assert client.get("/docs").status_code == 200


def test_ready_says_unavailable_when_the_schema_is_behind(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'behind.db'}"
    ops.migrate(url)
    with served(url, tmp_path / "serve.log") as behind:
        ops.rollback(url, "0010", tmp_path / "archive")
        response = httpx.get(f"{behind.url}/ready", timeout=10)
    assert response.status_code == 503
    assert response.json()["status"] == "unavailable"


def test_a_full_bulkhead_answers_503_with_retry_after_and_runs_nothing(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'busy.db'}"
    ops.migrate(url)
    headers = key(url, "planner", "ada")
    limits = {"MEMORY_SERVICE_CONCURRENT_WRITES": "1", "MEMORY_SERVICE_QUEUE_LIMIT": "0"}
    answers: list[httpx.Response] = []

    def write(number: int) -> None:
        items = [f"batch {number} memory {i}" for i in range(400)]
        answers.append(
            httpx.post(
                f"{busy.url}/v1/add_many",
                headers=headers,
                json={"arguments": {"items": items}},
                timeout=60,
            )
        )

    with served(url, tmp_path / "serve.log", **limits) as busy:
        threads = [threading.Thread(target=write, args=(n,)) for n in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        # Reads have their own bulkhead: not refused while writes are.
        listed = httpx.post(f"{busy.url}/v1/list", headers=headers, json={}, timeout=30)
        metrics = httpx.get(f"{busy.url}/metrics", timeout=10).text
    statuses = sorted(answer.status_code for answer in answers)
    assert statuses[0] == 200 and 503 in statuses, statuses
    refused = [answer for answer in answers if answer.status_code == 503]
    assert all(answer.headers["Retry-After"] == "1" for answer in refused)
    assert all(answer.json()["error"]["type"] == "ServiceBusy" for answer in refused)
    assert listed.status_code == 200
    assert count_memories(url, "ada") == 400 * statuses.count(200)  # refused: nothing written
    assert f'memory_service_rejected_total{{operation_class="write"}} {len(refused)}.0' in metrics
