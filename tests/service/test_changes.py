"""The change feed over both transports, one core function (``Service.changes``) under
them: Server-Sent Events over HTTP and a server stream over gRPC, from a real ``memctl
serve`` over the real PostgreSQL. Only the events the key's scope may read arrive (never
another user's, nor another agent's private ones), in order, and a client resumes from a
sequence number (``after_seq`` or the ``Last-Event-ID`` a browser resends)."""

from __future__ import annotations

import asyncio
import json
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
import sqlalchemy as sa

from memory import Memory
from memory import ops as ops
from memory.service.http import Feed, FeedBehind
from memory.wire import from_message, memory_pb2, memory_pb2_grpc, to_message
from tests.service.processes import Server, served

TIMEOUT = 30


@pytest.fixture(scope="module")
def server(database: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with served(database, tmp_path_factory.mktemp("serve") / "serve.log") as running:
        yield running


@pytest.fixture(scope="module")
def stub(server: Server) -> Iterator[memory_pb2_grpc.MemoryHubStub]:
    with grpc.insecure_channel(server.grpc_url.removeprefix("grpc://")) as channel:
        yield memory_pb2_grpc.MemoryHubStub(channel)


def latest_seq(database: str) -> int:
    engine = sa.create_engine(database)
    try:
        with engine.connect() as connection:
            statement = sa.text("SELECT max(seq) FROM memory_events")
            return int(connection.execute(statement).scalar() or 0)
    finally:
        engine.dispose()


def sse_events(response: httpx.Response, until: int) -> list[dict[str, Any]]:
    """The events of an SSE stream up to the one whose memory id is ``until``."""
    found: list[dict[str, Any]] = []
    fields: dict[str, str] = {}
    for line in response.iter_lines():
        if line:
            if not line.startswith(":"):  # a comment: the keep-alive ping
                name, _, value = line.partition(":")
                fields[name] = value.removeprefix(" ")
            continue
        if "data" in fields:
            event = json.loads(fields["data"])
            assert fields["id"] == str(event["seq"]) and fields["event"] == event["operation"]
            found.append(event)
            if event["target"] == f"memory:{until}":
                return found
        fields = {}
    raise AssertionError(f"the stream ended before memory {until}: {found}")


def grpc_events(call: Any, until: int) -> list[dict[str, Any]]:
    found = []
    for message in call:
        event = from_message(message, absent=True)
        found.append(event)
        if event["target"] == f"memory:{until}":
            call.cancel()
            return found
    raise AssertionError(f"the stream ended before memory {until}: {found}")


@pytest.fixture
def history(server: Server, database: str, user: str) -> dict[str, Any]:
    """The planner's writes among writes it may not see: another user's, and another
    agent's private ones; the last memory id is the sentinel the readers stop at."""
    start = latest_seq(database)
    admin = ops.create_key(database, "operator", role="admin").secret
    with Memory.open(server.url, api_key=admin) as hub:
        planner = hub.scope(user, "planner", "s1")
        first = planner.add("planner one")
        hub.scope(user, "coder", "s1").add("coder private")
        hub.scope(user + "-other", "planner", "s1").add("another user's")
        second = planner.add("planner two")
    secret = ops.create_key(database, "planner", users=[user]).secret
    return {"start": start, "ids": [first.id, second.id], "secret": secret}


def _only_the_planners(events: list[dict[str, Any]], user: str, ids: list[int]) -> None:
    assert [event["target"] for event in events] == [f"memory:{id_}" for id_ in ids]
    assert all(e["user_id"] == user and e["agent_id"] == "planner" for e in events)
    assert [event["seq"] for event in events] == sorted(event["seq"] for event in events)


def test_sse_delivers_only_the_scopes_events_and_resumes(
    server: Server, history: dict[str, Any], user: str
) -> None:
    headers = {"Authorization": f"Bearer {history['secret']}"}
    first, second = history["ids"]
    with httpx.stream(
        "GET", f"{server.url}/v1/changes", params={"after_seq": history["start"]},
        headers=headers, timeout=TIMEOUT,
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = sse_events(response, second)
    _only_the_planners(events, user, [first, second])
    # A browser reconnects with the last id it saw.
    with httpx.stream(
        "GET", f"{server.url}/v1/changes",
        headers={**headers, "Last-Event-ID": str(events[0]["seq"])}, timeout=TIMEOUT,
    ) as response:
        assert [event["target"] for event in sse_events(response, second)] == [
            f"memory:{second}"
        ]


def test_the_grpc_stream_delivers_the_same_events_and_resumes(
    stub: memory_pb2_grpc.MemoryHubStub, server: Server, history: dict[str, Any], user: str
) -> None:
    metadata = [("authorization", f"Bearer {history['secret']}")]
    first, second = history["ids"]
    request = to_message({"after_seq": history["start"]}, memory_pb2.ChangesRequest)
    events = grpc_events(stub.Changes(request, metadata=metadata, timeout=TIMEOUT), second)
    _only_the_planners(events, user, [first, second])
    resumed = to_message({"after_seq": events[0]["seq"]}, memory_pb2.ChangesRequest)
    again = grpc_events(stub.Changes(resumed, metadata=metadata, timeout=TIMEOUT), second)
    assert [event["target"] for event in again] == [f"memory:{second}"]


def test_both_feeds_deliver_new_events_as_they_commit(
    stub: memory_pb2_grpc.MemoryHubStub, server: Server, database: str, user: str
) -> None:
    secret = ops.create_key(database, "planner", users=[user]).secret
    metadata = [("authorization", f"Bearer {secret}")]
    call = stub.Changes(memory_pb2.ChangesRequest(), metadata=metadata, timeout=TIMEOUT)
    call.initial_metadata()  # sent once the server has subscribed
    with httpx.stream(
        "GET", f"{server.url}/v1/changes", headers={"Authorization": f"Bearer {secret}"},
        timeout=TIMEOUT,
    ) as response:
        with Memory.open(server.grpc_url, api_key=secret) as hub:
            added = hub.scope(user, "planner").add("live")
        assert [e["target"] for e in sse_events(response, added.id)] == [f"memory:{added.id}"]
    assert [e["target"] for e in grpc_events(call, added.id)] == [f"memory:{added.id}"]


def test_refusals_come_before_the_stream(
    stub: memory_pb2_grpc.MemoryHubStub, server: Server, database: str, user: str
) -> None:
    secret = ops.create_key(database, "planner", users=[user]).secret
    headers = {"Authorization": f"Bearer {secret}"}
    cases = [
        ({}, {}, 401, "AuthenticationError", "no API key"),
        (headers, {"user": user + "-other"}, 403, "PermissionDeniedError", "that user"),
        (headers, {"agent": "coder"}, 403, "PermissionDeniedError", "agent 'planner' only"),
        (headers, {"after_seq": "soon"}, 422, "InvalidInputError", "after_seq"),
        (headers, {"after_seq": "-1"}, 422, "InvalidInputError", "after_seq"),
        (headers, {"user_id": user}, 422, "InvalidInputError", "user_id"),
    ]
    for given, params, status, kind, words in cases:
        response = httpx.get(
            f"{server.url}/v1/changes", headers=given, params=params, timeout=TIMEOUT
        )
        error = response.json()["error"]
        assert (response.status_code, error["type"]) == (status, kind), (params, response.text)
        assert words in error["message"], (params, error)
    for metadata, fields, code in (
        ([], {}, grpc.StatusCode.UNAUTHENTICATED),
        ([("authorization", headers["Authorization"])], {"user": "x"},
         grpc.StatusCode.PERMISSION_DENIED),
    ):
        request = to_message(fields, memory_pb2.ChangesRequest)
        with pytest.raises(grpc.RpcError) as failure:
            list(stub.Changes(request, metadata=metadata, timeout=TIMEOUT))
        assert failure.value.code() == code  # type: ignore[attr-defined]


def test_a_client_that_falls_behind_is_told_where_to_resume() -> None:
    """The backlog between the subscription's thread and a slow stream is bounded."""

    async def scenario() -> tuple[list[int], int | None]:
        feed = Feed(backlog=3)
        producer = threading.Thread(
            target=lambda: [feed.deliver({"seq": seq}) for seq in range(1, 8)]
        )
        producer.start()
        producer.join()
        await asyncio.sleep(0.05)  # the loop runs the hand-offs
        received: list[int] = []
        with pytest.raises(FeedBehind) as behind:
            async for event in feed.events():
                received.append(event["seq"])
        return received, behind.value.seq

    assert asyncio.run(scenario()) == ([1, 2, 3], 3)


def test_stopping_the_server_ends_open_feeds_and_exits(
    database: str, tmp_path: Path, user: str
) -> None:
    secret = ops.create_key(database, "planner", users=[user]).secret
    log = tmp_path / "serve.log"
    with served(database, log, MEMORY_SERVICE_DRAIN_SECONDS="1") as server:
        with grpc.insecure_channel(server.grpc_url.removeprefix("grpc://")) as channel:
            call = memory_pb2_grpc.MemoryHubStub(channel).Changes(
                memory_pb2.ChangesRequest(),
                metadata=[("authorization", f"Bearer {secret}")],
                timeout=TIMEOUT,
            )
            call.initial_metadata()
            started = time.monotonic()
            server.process.send_signal(signal.SIGTERM)
            with pytest.raises(grpc.RpcError) as ended:
                list(call)
            assert ended.value.code() != grpc.StatusCode.DEADLINE_EXCEEDED  # type: ignore[attr-defined]
            assert server.process.wait(timeout=TIMEOUT) is not None
            assert time.monotonic() - started < 15
    assert '"event": "stopped"' in log.read_text()
