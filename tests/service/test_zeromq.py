"""The ZeroMQ ROUTER transport of a real ``memctl serve``: JSON frames over the same core
as HTTP, so the same identity rules and errors; a frame that is not a request gets an
error reply and writes nothing."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import zmq

from memory import ops as ops
from tests.service.processes import Server, free_port, served


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, str, str]]:
    directory = tmp_path_factory.mktemp("zeromq")
    url = f"sqlite:///{directory / 'zmq.db'}"
    ops.migrate(url)
    secret = ops.create_key(url, "legacy", users=["ada"]).secret
    port = free_port()
    with served(url, directory / "serve.log", MEMORY_SERVICE_ZMQ_PORT=str(port)) as server:
        yield server, f"tcp://127.0.0.1:{port}", secret


def ask(address: str, frame: bytes) -> dict[str, Any]:
    context = zmq.Context()
    socket = context.socket(zmq.REQ)
    socket.setsockopt(zmq.RCVTIMEO, 20_000)
    socket.setsockopt(zmq.LINGER, 0)
    try:
        socket.connect(address)
        socket.send(frame)
        reply: dict[str, Any] = json.loads(socket.recv())
        return reply
    finally:
        socket.close()
        context.term()


def request(secret: str | None, operation: str, body: dict[str, Any], **extra: Any) -> bytes:
    return json.dumps(
        {"api_key": secret, "operation": operation, "request": body, **extra}
    ).encode()


def test_a_request_over_zeromq_acts_as_the_keys_identity(hub: tuple[Server, str, str]) -> None:
    server, address, secret = hub
    added = ask(
        address,
        request(secret, "add", {"arguments": {"content": "legacy agents say hello"}},
                request_id="legacy-1"),
    )
    assert added["ok"] and added["request_id"] == "legacy-1"
    assert (added["result"]["user_id"], added["result"]["agent_id"]) == ("ada", "legacy")
    found = httpx.post(
        f"{server.url}/v1/search",
        headers={"Authorization": f"Bearer {secret}"},
        json={"arguments": {"query": "hello"}},
        timeout=30,
    ).json()
    assert [hit["memory"]["id"] for hit in found] == [added["result"]["id"]]


def test_bad_frames_and_bad_keys_get_error_replies_and_write_nothing(
    hub: tuple[Server, str, str],
) -> None:
    _server, address, secret = hub
    before = ask(address, request(secret, "list", {}))["result"]
    cases = [
        (b"\xff\xfe not json", 422, "not a JSON object"),
        (b"[1, 2]", 422, "must be a JSON object"),
        (b"[" * 100_000, 422, "not a JSON object"),
        (request(secret, "add", {"arguments": {"content": "x", "agent_id": "other"}}), 422,
         "agent_id"),
        (request(secret, "add", {"user": "eve", "arguments": {"content": "x"}}), 403,
         "does not act for that user"),
        (request(None, "add", {"arguments": {"content": "x"}}), 401, "no API key"),
        (request("tmk_0123456789abcdef_nope", "list", {}), 401, "not valid"),
        (request(secret, "drop_tables", {}), 404, "no operation"),
        (request(secret, "add", "not an object"), 422, "request: must be a JSON object"),  # type: ignore[arg-type]
    ]
    for frame, status, words in cases:
        reply = ask(address, frame)
        assert not reply["ok"] and reply["status"] == status, (frame[:40], reply)
        assert words in reply["error"]["message"]
    assert ask(address, request(secret, "list", {}))["result"] == before


def test_a_zeromq_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'busy.db'}"
    ops.migrate(url)
    context = zmq.Context()
    taken = context.socket(zmq.ROUTER)
    port = taken.bind_to_random_port("tcp://127.0.0.1")
    try:
        with pytest.raises(AssertionError, match="cannot listen on 127.0.0.1"):
            with served(url, tmp_path / "serve.log", MEMORY_SERVICE_ZMQ_PORT=str(port)):
                pass
    finally:
        taken.close(linger=0)
        context.term()
