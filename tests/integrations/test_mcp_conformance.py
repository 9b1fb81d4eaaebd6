"""``memctl mcp`` is a drop-in for the reference MCP memory server: both real servers, over
stdio, get the same scripted tool calls through the ``mcp`` client SDK and must answer the
same, after normalising order (and error texts: both must flag an error, in their own words).
Ours is driven over streamable HTTP too."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
import pytest

from tests.integrations.mcp_peers import (
    dumped,
    ours_parameters,
    reference_parameters,
    stdio_session,
)
from tests.integrations.mcp_server_process import running_http_server

GRAPH_TOOLS = [
    "create_entities",
    "create_relations",
    "add_observations",
    "delete_entities",
    "delete_observations",
    "delete_relations",
    "read_graph",
    "search_nodes",
    "open_nodes",
]

ADA = {"name": "Ada", "entityType": "person", "observations": ["Writes Python", "Likes tea"]}
BOB = {"name": "Bob", "entityType": "person", "observations": ["Reviews code"]}
BILLING = {"name": "billing", "entityType": "project", "observations": []}

# The script: every tool, repeats that must be skipped, unknown names that are ignored,
# non-ASCII text, and arguments of the wrong shape. It avoids the two documented
# differences (a relation to a missing entity; a name repeated within one call).
SCRIPT: list[tuple[str, dict[str, Any]]] = [
    ("read_graph", {}),
    ("create_entities", {"entities": [ADA, BOB, BILLING]}),
    ("create_entities", {"entities": [
        {"name": "Ada", "entityType": "robot", "observations": ["ignored"]},
        {"name": "Cy", "entityType": "person", "observations": ["New"]},
    ]}),
    ("create_relations", {"relations": [
        {"from": "Ada", "to": "billing", "relationType": "owns"},
        {"from": "Bob", "to": "Ada", "relationType": "mentors"},
    ]}),
    ("create_relations", {"relations": [
        {"from": "Ada", "to": "billing", "relationType": "owns"},
        {"from": "Cy", "to": "Ada", "relationType": "knows"},
    ]}),
    ("add_observations", {"observations": [
        {"entityName": "Ada", "contents": ["Likes tea", "Drinks coffee"]},
        {"entityName": "Bob", "contents": ["Reviews code"]},
    ]}),
    ("add_observations", {"observations": [{"entityName": "Ghost", "contents": ["Boo"]}]}),
    ("search_nodes", {"query": "PYTHON"}),
    ("search_nodes", {"query": "person"}),
    ("search_nodes", {"query": "b"}),
    ("search_nodes", {"query": "zzz"}),
    ("open_nodes", {"names": ["billing", "nobody"]}),
    ("open_nodes", {"names": []}),
    ("create_entities", {"entities": [
        {"name": "Ölwerk", "entityType": "Fabrik", "observations": ["ÉTÉ 🌞", "naïve café"]},
    ]}),
    ("search_nodes", {"query": "ölw"}),
    ("search_nodes", {"query": "CAFÉ"}),
    ("delete_observations", {"deletions": [
        {"entityName": "Ada", "observations": ["Likes tea", "never said"]},
        {"entityName": "Ghost", "observations": ["Boo"]},
    ]}),
    ("delete_relations", {"relations": [
        {"from": "Ada", "to": "billing", "relationType": "owns"},
        {"from": "Ada", "to": "Ghost", "relationType": "haunts"},
    ]}),
    ("read_graph", {}),
    ("delete_entities", {"entityNames": ["Bob", "Ghost"]}),
    ("read_graph", {}),
    # Wrong shapes: both must answer with an error result, neither may crash.
    ("create_entities", {"entities": "Ada"}),
    ("create_entities", {"entities": [{"name": "X", "entityType": 3, "observations": []}]}),
    ("create_relations", {}),
    ("search_nodes", {"query": 42}),
    ("open_nodes", {"names": "Ada"}),
    ("delete_entities", {"entityNames": [None]}),
    ("no_such_tool", {}),
    ("read_graph", {}),
]


def _normal(value: Any) -> Any:
    """``value`` with every list sorted, so order does not count."""
    if isinstance(value, dict):
        return {key: _normal(item) for key, item in value.items()}
    if isinstance(value, list):
        items = [_normal(item) for item in value]
        return sorted(items, key=lambda item: json.dumps(item, sort_keys=True))
    return value


def _normalised(result: Any) -> dict[str, Any]:
    data = dumped(result)
    if data.get("isError"):
        return {"isError": True}
    [block] = data["content"]
    try:
        text = json.loads(block["text"])
    except ValueError:
        text = block["text"]
    return {"text": _normal(text), "structuredContent": _normal(data.get("structuredContent"))}


async def _run_script(session: Any) -> list[dict[str, Any]]:
    results = []
    for name, arguments in SCRIPT:
        results.append(_normalised(await session.call_tool(name, arguments)))
    return results


def _transcripts(tmp_path: Path, user: str) -> tuple[list[Any], list[Any], list[Any]]:
    """The script's results from the reference, from ours over stdio, and the tools both
    list."""

    async def main() -> tuple[list[Any], list[Any], list[Any]]:
        with anyio.fail_after(120):
            return await both()

    async def both() -> tuple[list[Any], list[Any], list[Any]]:
        async with stdio_session(reference_parameters(tmp_path / "memory.jsonl")) as session:
            reference = await _run_script(session)
            reference_tools = [dumped(t) for t in (await session.list_tools()).tools]
        url = f"sqlite:///{tmp_path / 'ours.db'}"
        async with stdio_session(ours_parameters(url, user)) as session:
            ours = await _run_script(session)
            our_tools = [dumped(t) for t in (await session.list_tools()).tools]
        return reference, ours, [reference_tools, our_tools]

    return anyio.run(main)


@pytest.fixture(scope="module")
def transcripts(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Any], ...]:
    return _transcripts(tmp_path_factory.mktemp("mcp"), "ada")


@pytest.mark.parametrize(
    "step", range(len(SCRIPT)), ids=[f"{i}-{name}" for i, (name, _) in enumerate(SCRIPT)]
)
def test_every_call_answers_as_the_reference(transcripts: tuple[list[Any], ...], step: int) -> None:
    reference, ours, _ = transcripts
    assert ours[step] == reference[step], SCRIPT[step]


def test_the_script_covers_every_graph_tool_and_both_outcomes(
    transcripts: tuple[list[Any], ...],
) -> None:
    reference, _, _ = transcripts
    assert {name for name, _ in SCRIPT} >= set(GRAPH_TOOLS)
    errors = [r for r in reference if r == {"isError": True}]
    assert 7 <= len(errors) < len(reference)  # the test can tell an error from an answer
    assert reference[-1]["structuredContent"]["entities"], "the final graph is not empty"


def test_graph_tools_are_listed_exactly_as_the_reference_lists_them(
    transcripts: tuple[list[Any], ...],
) -> None:
    _, _, (reference_tools, our_tools) = transcripts
    theirs = {tool["name"]: tool for tool in reference_tools}
    ours = {tool["name"]: tool for tool in our_tools}
    assert sorted(theirs) == sorted(GRAPH_TOOLS)
    for name in GRAPH_TOOLS:
        # ``execution`` is the TypeScript SDK's own default (task support), not the tool's.
        expected = {key: value for key, value in theirs[name].items() if key != "execution"}
        assert ours[name] == expected, name


def test_streamable_http_answers_as_stdio(
    transcripts: tuple[list[Any], ...], tmp_path: Path
) -> None:
    reference, _, _ = transcripts

    async def main(session: Any) -> list[dict[str, Any]]:
        return await _run_script(session)

    with running_http_server(f"sqlite:///{tmp_path / 'http.db'}", "ada") as server:
        assert server.call(main) == reference
