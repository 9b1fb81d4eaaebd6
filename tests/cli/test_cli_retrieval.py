"""`memctl add`, `search`, `inject` and `reembed` against a real SQLite file."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner, Result

from memory import HashingEmbedder, Memory
from memory.cli import main


def memctl(url: str, *args: str) -> Result:
    return CliRunner().invoke(main, ["--database-url", url, *args])


def test_add_search_inject_round_trip(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    added = memctl(url, "add", "Ada prefers green tea", "--user", "ada", "--agent", "planner",
                   "--session", "s1", "--tier", "semantic", "--metadata", '{"topic": "drinks"}',
                   "--json")
    assert added.exit_code == 0, added.output
    record = json.loads(added.stdout)
    assert (record["tier"], record["metadata"], record["session_id"]) == (
        "semantic", {"topic": "drinks"}, "s1"
    )
    memctl(url, "add", "The export job timed out", "--user", "ada", "--agent", "planner",
           "--session", "s1")

    found = memctl(url, "search", "green tea", "--user", "ada", "--agent", "planner", "--json")
    assert found.exit_code == 0, found.output
    hits = json.loads(found.stdout)
    assert hits[0]["memory"]["id"] == record["id"] and hits[0]["keyword_score"] == 1.0
    other_agent = memctl(url, "search", "green tea", "--user", "ada", "--agent", "coder")
    assert other_agent.exit_code == 0 and other_agent.stdout == ""
    assert "memories are private to the agent that stored them" in other_agent.stderr

    shown = memctl(url, "inject", "tea", "--user", "ada", "--agent", "planner", "--session",
                   "s1", "--budget", "64")
    assert shown.exit_code == 0, shown.output
    assert "## Recent working memory\n- The export job timed out" in shown.stdout
    assert f"[relevant] memory:{record['id']} (semantic)" in shown.stdout
    structured = json.loads(memctl(url, "inject", "tea", "--user", "ada", "--agent", "planner",
                                   "--session", "s1", "--json").stdout)
    assert structured["tokens"] <= structured["budget"] == 512


def test_bad_input_is_one_line_errors(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    assert memctl(url, "migrate").exit_code == 0
    assert "must be a JSON object" in memctl(url, "add", "x", "--user", "u", "--metadata",
                                             "[1]").output
    empty = memctl(url, "search", " ", "--user", "u")
    assert empty.exit_code == 1 and "text: must not be blank" in empty.output
    budget = memctl(url, "inject", "x", "--user", "u", "--budget", "5")
    assert budget.exit_code == 1 and "budget_tokens" in budget.output


def test_reembed_fills_vectors_of_a_new_model(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    with Memory.open(url, embedder=HashingEmbedder()) as store:
        store.scope("ada", "planner").add_many([f"note {i}" for i in range(5)])
    result = memctl(url, "reembed", "--batch-size", "2")  # the default model this time
    assert result.exit_code == 0, result.output
    assert "re-embedded 5 memories" in result.stdout
    again = memctl(url, "reembed")
    assert "every memory has a vector from the current model" in again.stdout
