"""``memctl mcp`` beyond the reference's tools: identity fixed by configuration, bad
arguments as MCP errors (no crash, no partial write), the memory tools, resources and
progress, the bearer token over HTTP, and the graph shared with import-mcp/export-mcp."""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import httpx2
import jsonschema
import pytest
from mcp import ClientSession

from memory.integrations.mcp_server import TOOLS
from tests.integrations.mcp_peers import MEMCTL, dumped, ours_parameters, stdio_session
from tests.integrations.mcp_server_process import running_http_server


def run(work: Any) -> Any:
    async def main() -> Any:
        with anyio.fail_after(120):
            return await work()

    return anyio.run(main)


def structured(result: Any) -> Any:
    data = dumped(result)
    assert not data.get("isError"), data
    return data["structuredContent"]


def error_text(result: Any) -> str:
    data = dumped(result)
    assert data.get("isError") is True, data
    text: str = data["content"][0]["text"]
    return text


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'memory.db'}"


def memctl(url: str, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(MEMCTL), "--database-url", url, *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize("tool", list(TOOLS.values()), ids=list(TOOLS))
def test_tool_schemas_are_valid_json_schema_without_identity(tool: Any) -> None:
    """(The client SDK checks every structured result against its tool's output schema,
    so each call in these tests also checks our results against our schemas.)"""
    jsonschema.Draft7Validator.check_schema(tool.input_schema)
    jsonschema.Draft7Validator.check_schema(tool.output_schema)
    assert tool.input_schema["type"] == "object" and tool.description
    assert not {"user", "agent", "session", "user_id"} & set(tool.input_schema["properties"])


def test_identity_comes_from_the_configuration_not_from_arguments(url: str) -> None:
    async def work() -> None:
        async with stdio_session(ours_parameters(url, "ada", "--session", "s1")) as ada:
            structured(await ada.call_tool("create_entities", {"entities": [
                {"name": "Secret", "entityType": "plan", "observations": ["ada's plan"]}]}))
            structured(await ada.call_tool("remember", {"content": "Ada's bank is Zeta"}))
        async with stdio_session(ours_parameters(url, "bob")) as bob:
            # The graph tools ignore unknown arguments, as the reference does, so a "user"
            # argument changes nothing; the memory tools refuse it outright.
            graph = structured(await bob.call_tool("read_graph", {"user": "ada"}))
            assert graph == {"entities": [], "relations": []}
            found = structured(await bob.call_tool("search_nodes", {"query": "plan",
                                                                    "user": "ada"}))
            assert found["entities"] == []
            for name, arguments in [
                ("recall", {"query": "bank", "user": "ada"}),
                ("remember", {"content": "x", "agent": "planner"}),
                ("context", {"query": "bank", "session": "s1"}),
            ]:
                message = error_text(await bob.call_tool(name, arguments))
                assert "Additional properties are not allowed" in message, message
            assert structured(await bob.call_tool("recall", {"query": "bank"})) == {"hits": []}
            # Started without --session: the session tools refuse, naming it.
            assert "session" in error_text(await bob.call_tool("resume_session", {}))
            assert "session" in error_text(
                await bob.call_tool("save_session_state", {"state": {"a": 1}}))

    run(work)


BAD_CALLS = [
    ("remember", {"content": 5}, "is not of type 'string'"),
    ("remember", {"content": ""}, "should be non-empty"),
    ("remember", {"content": "x" * 40_000}, "the str of size 40000 is too long at content"),
    ("remember", {"content": "a\x00b"}, "NUL"),
    ("remember", {"content": "ok", "tier": "forever"}, "is not one of"),
    ("remember", {"content": "ok", "importance": "high"}, "is not of type 'number'"),
    ("remember", {"content": "ok", "importance": 7}, "greater than the maximum"),
    ("remember", {"content": "ok", "metadata": {"k": "v" * 2000}}, "at most 1024 bytes"),
    # Nested (100 levels: deeper than about 200 the SDK's JSON parser drops the message).
    ("remember", {"content": "ok", "metadata": {"deep": json.loads("[" * 100 + json.dumps(
        "x" * 1000) + "]" * 100)}}, "at most 32 are allowed"),
    ("recall", {"query": "tea", "limit": 0}, "less than the minimum"),
    ("recall", {}, "'query' is a required property"),
    ("context", {"query": "tea", "budget_tokens": 1}, "less than the minimum"),
    ("forget", {"memory_id": "1"}, "is not of type 'integer'"),
    ("forget", {"memory_id": 0}, "less than the minimum"),
    ("forget", {"memory_id": 999_999}, "does not exist"),
    ("set_preference", {"key": "../../etc/passwd\n", "value": 1}, "control characters"),
    ("save_session_state", {"state": []}, "is not of type 'object'"),
    ("create_entities", {"entities": [{"name": "A" * 1000, "entityType": "t",
                                       "observations": []}]}, "at most"),
]


def test_bad_arguments_are_mcp_errors_naming_the_problem(url: str) -> None:
    async def work() -> None:
        async with stdio_session(ours_parameters(url, "ada", "--session", "s1")) as session:
            for name, arguments, expected in BAD_CALLS:
                message = error_text(await session.call_tool(name, arguments))
                assert expected.lower() in message.lower(), (name, message)
            # All or nothing: a batch with one bad entity writes none of them.
            error_text(await session.call_tool("create_entities", {"entities": [
                {"name": "Good", "entityType": "t", "observations": []},
                {"name": " ", "entityType": "t", "observations": []},
            ]}))
            assert structured(await session.call_tool("read_graph", {})) == {
                "entities": [], "relations": []}
            assert structured(await session.call_tool("recall", {"query": "ok"})) == {"hits": []}
            # And the server is still there.
            assert structured(await session.call_tool("remember", {"content": "still up"}))

    run(work)


def test_memory_tools_resources_and_progress(url: str) -> None:
    progress: list[tuple[float, float | None]] = []

    async def on_progress(done: float, total: float | None, message: str | None) -> None:
        progress.append((done, total))

    async def work() -> None:
        async with stdio_session(ours_parameters(url, "ada", "--session", "s1")) as session:
            stored = structured(await session.call_tool("remember", {
                "content": "Ada prefers green tea in the afternoon", "tier": "semantic",
                "importance": 0.9, "metadata": {"topic": "drinks"}}))["memory"]
            assert (stored["tier"], stored["metadata"], stored["session"]) == (
                "semantic", {"topic": "drinks"}, "s1")
            structured(await session.call_tool("remember", {"content": "Deploys run on Fridays"}))
            hits = structured(await session.call_tool(
                "recall", {"query": "green tea", "metadata": {"topic": "drinks"}},
                progress_callback=on_progress))["hits"]
            assert [hit["memory"]["id"] for hit in hits] == [stored["id"]]
            assert progress and progress[-1] == (1.0, 1.0)

            structured(await session.call_tool("set_preference", {"key": "answer_style",
                                                                  "value": "short"}))
            assert structured(await session.call_tool("get_preferences", {})) == {
                "preferences": {"answer_style": "short"}}
            context = await session.call_tool("context", {"query": "what does Ada drink?"})
            assert "green tea" in dumped(context)["content"][0]["text"]
            assert structured(context)["tokens"] <= 512

            saved = structured(await session.call_tool("save_session_state",
                                                       {"state": {"step": 3, "plan": ["a"]}}))
            assert saved == {"checkpoint": 1, "session": "s1"}
            resumed = structured(await session.call_tool("resume_session", {}))
            assert (resumed["checkpoint"], resumed["state"]) == (1, {"step": 3, "plan": ["a"]})
            assert [m["content"] for m in resumed["working_memory"]] == ["Deploys run on Fridays"]

            listed = {str(r.uri) for r in (await session.list_resources()).resources}
            assert listed == {"memory://knowledge-graph", "memory://preferences",
                              "memory://session"}
            preferences = await session.read_resource("memory://preferences")
            assert json.loads(preferences.contents[0].text) == {"answer_style": "short"}
            structured(await session.call_tool("create_entities", {"entities": [
                {"name": "Ada", "entityType": "person", "observations": []}]}))
            graph = await session.read_resource("memory://knowledge-graph")
            assert json.loads(graph.contents[0].text)["entities"][0]["name"] == "Ada"
            state = await session.read_resource("memory://session")
            assert json.loads(state.contents[0].text)["state"] == {"step": 3, "plan": ["a"]}

            forgotten = structured(await session.call_tool("forget", {"memory_id": stored["id"]}))
            assert forgotten["success"] is True
            hits = structured(await session.call_tool("recall", {"query": "green tea"}))["hits"]
            assert stored["id"] not in [hit["memory"]["id"] for hit in hits]

    run(work)


def test_the_graph_is_shared_with_import_mcp_and_export_mcp(url: str) -> None:
    lines = "\n".join([
        json.dumps({"type": "entity", "name": "Bob", "entityType": "person",
                    "observations": ["Reviews code"]}),
        json.dumps({"type": "relation", "from": "Bob", "to": "Ada", "relationType": "mentors"}),
    ])

    async def work() -> tuple[subprocess.CompletedProcess[str], Any]:
        async with stdio_session(ours_parameters(url, "ada")) as session:
            structured(await session.call_tool("create_entities", {"entities": [
                {"name": "Ada", "entityType": "person", "observations": ["Writes Python"]},
                {"name": "billing", "entityType": "project", "observations": []}]}))
            structured(await session.call_tool("create_relations", {"relations": [
                {"from": "Ada", "to": "billing", "relationType": "owns"}]}))
            # Another process writes and reads the same database while the server runs.
            exported = await anyio.to_thread.run_sync(
                lambda: memctl(url, "export-mcp", "--user", "ada"))
            imported = await anyio.to_thread.run_sync(
                lambda: memctl(url, "import-mcp", "--user", "ada", "-", stdin=lines))
            assert imported.returncode == 0, imported.stderr
            return exported, structured(await session.call_tool("open_nodes", {"names": ["Bob"]}))

    exported, opened = run(work)
    assert exported.returncode == 0, exported.stderr
    assert [json.loads(line) for line in exported.stdout.splitlines()] == [
        {"type": "entity", "name": "Ada", "entityType": "person",
         "observations": ["Writes Python"]},
        {"type": "entity", "name": "billing", "entityType": "project", "observations": []},
        {"type": "relation", "from": "Ada", "to": "billing", "relationType": "owns"},
    ]
    assert opened == {
        "entities": [{"name": "Bob", "entityType": "person", "observations": ["Reviews code"]}],
        "relations": [{"from": "Bob", "to": "Ada", "relationType": "mentors"}],
    }


def test_http_needs_the_configured_bearer_token(url: str) -> None:
    async def remember(session: ClientSession) -> Any:
        return structured(await session.call_tool("remember", {"content": "over http"}))

    async def recall(session: ClientSession) -> Any:
        return structured(await session.call_tool("recall", {"query": "over http"}))

    with running_http_server(url, "ada") as server:
        assert server.call(remember)["memory"]["content"] == "over http"
        initialize = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {},
            "clientInfo": {"name": "raw", "version": "1"}}}
        accept = {"Accept": "application/json, text/event-stream"}
        for token in (None, "", "wrong-token-of-some-length", server.token + "x",
                      server.token[:-1]):
            with pytest.raises(Exception):  # noqa: B017 - the SDK wraps the 401 in groups
                server.call(remember, token=token)
            headers = {**accept, **({"Authorization": f"Bearer {token}"} if token else {})}
            raw = httpx2.post(server.url, json=initialize, headers=headers, timeout=10)
            assert raw.status_code == 401, (token, raw.status_code)
        good = {**accept, "Authorization": f"Bearer {server.token}"}
        assert httpx2.post(server.url, json=initialize, headers=good, timeout=10).status_code == 200
        assert len(server.call(recall)["hits"]) == 1  # the refused calls wrote nothing


@pytest.mark.parametrize(
    "arguments, env, status, message",
    [
        (["--user", "ada", "--http", "8"], {}, 2, "MEMORY_MCP_TOKEN"),
        (["--user", "ada", "--http", "8"], {"MEMORY_MCP_TOKEN": "short"}, 1, "16 characters"),
        (["--user", "ada\nmallory"], {}, 1, "control characters"),
    ],
)
def test_a_bad_configuration_stops_the_server_with_one_line(
    url: str, arguments: list[str], env: dict[str, str], status: int, message: str
) -> None:
    result = subprocess.run(
        [str(MEMCTL), "--database-url", url, "mcp", *arguments],
        capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
        env={**os.environ, **env},
    )
    assert result.returncode == status, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr


def test_broken_encodings_leave_the_server_answering(url: str) -> None:
    """Raw JSON-RPC lines the client SDK cannot even send: a lone surrogate (the SDK's
    parser drops the message unanswered) and bytes that are not UTF-8 (its reader replaces
    them with U+FFFD). Neither reaches the store broken, and the server keeps answering."""
    process = subprocess.Popen(
        [str(MEMCTL), "--database-url", url, "mcp", "--user", "ada"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
    )
    assert process.stdin is not None and process.stdout is not None

    def send(line: bytes) -> None:
        process.stdin.write(line + b"\n")  # type: ignore[union-attr]
        process.stdin.flush()  # type: ignore[union-attr]

    def call(request_id: int, name: str, arguments: bytes) -> None:
        send(b'{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":{"name":"%s",'
             b'"arguments":%s}}' % (request_id, name.encode(), arguments))

    def answer() -> dict[str, Any]:
        ready, _, _ = select.select([process.stdout], [], [], 30)
        assert ready, "the server stopped answering"
        message: dict[str, Any] = json.loads(process.stdout.readline())  # type: ignore[union-attr]
        return message

    try:
        send(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {},
            "clientInfo": {"name": "raw", "version": "1"}}}).encode())
        assert answer()["id"] == 1
        send(b'{"jsonrpc":"2.0","method":"notifications/initialized"}')
        call(2, "create_entities",
             b'{"entities":[{"name":"A\\ud800","entityType":"t","observations":[]}]}')
        call(3, "create_entities",
             b'{"entities":[{"name":"B\xff\xfe","entityType":"t","observations":[]}]}')
        replies = {}
        # The SDK runs a session's requests concurrently: read once the write has answered.
        for wanted in (3, 4):
            while wanted not in replies:
                reply = answer()
                replies[reply["id"]] = reply
            if wanted == 3:
                call(4, "read_graph", b"{}")
        assert 2 not in replies  # dropped by the transport, never stored
        graph = replies[4]["result"]["structuredContent"]
        assert graph["entities"] == [
            {"name": "B\ufffd\ufffd", "entityType": "t", "observations": []}
        ]
    finally:
        process.stdin.close()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        process.stdout.close()


def test_without_the_mcp_extra_memctl_says_what_to_install(url: str) -> None:
    """memctl itself imports nothing of the extra; `memctl mcp` names the pip command."""
    blocked = "import sys; sys.modules['mcp'] = None; from memory.cli import main; main()"
    result = subprocess.run(
        [sys.executable, "-c", blocked, "--database-url", url, "mcp", "--user", "ada"],
        capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 1, result.stderr
    assert "pip install 'tiered-memory[mcp]'" in result.stderr
    assert "Traceback" not in result.stderr
    status = subprocess.run(
        [sys.executable, "-c", blocked, "--database-url", url, "migrate"],
        capture_output=True, text=True, timeout=120,
    )
    assert status.returncode == 0, status.stderr
