"""``memctl flags``: what an operator types to roll out and roll back, on SQLite and
PostgreSQL, each test with a database of its own (flag state is global to a database)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner, Result

import memory
import memory.ops
from flags import (
    BUILTIN_FLAGS,
    USE_CROSS_AGENT_SHARING,
    USE_ENHANCED_INJECTION,
    USE_HIERARCHICAL_TIERS,
    normalized_hash,
)
from memory.cli import main
from memory.ops import DatabaseFlagProvider

pytestmark = pytest.mark.flags_as_configured


@pytest.fixture(params=["sqlite-file", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite-file":
        url = f"sqlite:///{tmp_path / 'flags.db'}"
    else:
        make_database: Callable[[], str] = request.getfixturevalue("make_postgres_database")
        url = make_database()
    engine = memory.ops.create_engine(url)
    memory.ops.upgrade(engine)
    engine.dispose()
    return url


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The operator's shell sets no flag variables unless a test says so."""
    for name in BUILTIN_FLAGS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("USER", "alice")


def flags(url: str, *arguments: str) -> Result:
    return CliRunner().invoke(main, ["--database-url", url, "flags", *arguments])


def table_rows(url: str, table: str) -> int:
    engine = memory.ops.create_engine(url)
    try:
        with engine.connect() as connection:
            return connection.execute(sa.text(f"SELECT COUNT(*) FROM {table}")).scalar_one()
    finally:
        engine.dispose()


def test_a_rollout_from_list_to_reset(database_url: str) -> None:
    listed = flags(database_url, "list")
    assert listed.exit_code == 0, listed.output
    assert f"{USE_ENHANCED_INJECTION}: off (default)  [source: default]" in listed.output

    result = flags(database_url, "set", USE_ENHANCED_INJECTION, "--rollout", "10", "--reason", "p1")
    assert (result.exit_code, result.output) == (0, f"{USE_ENHANCED_INJECTION}: rollout 10%\n")
    forced = flags(database_url, "set", USE_CROSS_AGENT_SHARING, "--on", "--force").output
    assert forced.startswith(f"{USE_CROSS_AGENT_SHARING}: on\n  (forced: rollout: 0% -> 100%")
    assert (
        flags(database_url, "allow", USE_CROSS_AGENT_SHARING, "--agent", "planner").exit_code == 0
    )
    assert flags(database_url, "deny", USE_ENHANCED_INJECTION, "--agent", "legacy").exit_code == 0
    override = flags(
        database_url, "override", USE_ENHANCED_INJECTION, "--session", "s-9", "--on", "--ttl", "2h"
    )
    assert override.output == f"{USE_ENHANCED_INJECTION}: session s-9 forced on for 2h\n"

    listed = flags(database_url, "list").output
    assert f"{USE_ENHANCED_INJECTION}: rollout 10%  [source: database]" in listed
    assert "changed by alice at " in listed
    assert "allow: planner  deny: -" in listed and "allow: -  deny: legacy" in listed
    assert "override: session s-9 on until 20" in listed
    document = {f["name"]: f for f in json.loads(flags(database_url, "list", "--json").output)}
    assert document[USE_ENHANCED_INJECTION]["rollout"] == 10
    assert document[USE_ENHANCED_INJECTION]["overrides"][0]["session_id"] == "s-9"
    assert document[USE_HIERARCHICAL_TIERS]["stored"] is False

    audit = flags(database_url, "audit", USE_ENHANCED_INJECTION).output.splitlines()
    assert [line.split()[3] for line in audit] == ["override", "deny", "set"]
    assert audit[-1].endswith('- -> {"enabled": true, "rollout": 10}  (p1)')
    assert all(line.split()[2] == "alice" for line in audit)

    reset = flags(database_url, "reset", "--reason", "rollback", "--actor", "bob")
    assert reset.output == (
        f"reset to defaults: {USE_CROSS_AGENT_SHARING}, {USE_ENHANCED_INJECTION}\n"
    )
    assert "[source: database]" not in flags(database_url, "list").output
    entries = json.loads(flags(database_url, "audit", "--json", "--limit", "2").output)
    assert [(e["action"], e["actor"], e["reason"]) for e in entries] == [
        ("reset", "bob", "rollback")
    ] * 2
    assert flags(database_url, "reset").output == "every flag was already at its default\n"


def test_explain_names_the_rule_and_ends_with_the_verdict(database_url: str) -> None:
    flags(database_url, "set", USE_ENHANCED_INJECTION, "--rollout", "50", "--force")
    users = [f"user-{i}" for i in range(40)]
    inside = next(u for u in users if normalized_hash(USE_ENHANCED_INJECTION, u) <= 50)
    outside = next(u for u in users if normalized_hash(USE_ENHANCED_INJECTION, u) > 50)

    on = flags(database_url, "explain", USE_ENHANCED_INJECTION, "--user", inside, "--agent", "a")
    assert on.exit_code == 0, on.output
    lines = on.output.splitlines()
    assert lines[0] == f"flag: {USE_ENHANCED_INJECTION}"
    assert lines[1] == f"context: user={inside} session=- agent=a"
    assert lines[2].startswith("rule: rollout: ") and "<= rollout 50%" in lines[2]
    assert lines[-1] == "enabled"
    off = flags(database_url, "explain", USE_ENHANCED_INJECTION, "--user", outside)
    assert off.output.splitlines()[-1] == "disabled"

    child = flags(
        database_url, "explain", USE_CROSS_AGENT_SHARING, "--user", outside, "--session", "s"
    )
    assert "rule: parent: parent flag 'USE_ENHANCED_INJECTION' is off" in child.output
    assert child.output.splitlines()[-1] == "disabled"
    as_json = json.loads(
        flags(database_url, "explain", USE_ENHANCED_INJECTION, "--user", inside, "--json").output
    )
    assert (as_json["rule"], as_json["enabled"]) == ("rollout", True)


def test_the_shell_environment_shows_as_the_source_and_decides_explain(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    flags(database_url, "set", USE_HIERARCHICAL_TIERS, "--on", "--force")
    monkeypatch.setenv(USE_HIERARCHICAL_TIERS, "off")
    listed = flags(database_url, "list").output
    assert f"{USE_HIERARCHICAL_TIERS}: off  [source: environment]" in listed
    assert f"{USE_HIERARCHICAL_TIERS}='off' overrides the database here (database: on)" in listed
    explained = flags(database_url, "explain", USE_HIERARCHICAL_TIERS, "--user", "u")
    assert "rule: environment: " in explained.output
    assert explained.output.splitlines()[-1] == "disabled"

    monkeypatch.setenv(USE_HIERARCHICAL_TIERS, "maybe")
    refused = flags(database_url, "explain", USE_HIERARCHICAL_TIERS, "--user", "u")
    assert refused.exit_code == 1 and "USE_HIERARCHICAL_TIERS='maybe'" in refused.output


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (
            ["set", USE_ENHANCED_INJECTION, "--rollout", "150"],
            "rollout: must be a whole percentage",
        ),
        (["set", USE_ENHANCED_INJECTION, "--rollout", "-5"], "not -5"),
        (["set", USE_ENHANCED_INJECTION], "give exactly one of --on, --off and --rollout N"),
        (["set", USE_ENHANCED_INJECTION, "--on", "--rollout", "5"], "give exactly one"),
        (["set", "USE_NOTHING", "--on"], "unknown flag 'USE_NOTHING'"),
        (["set", USE_ENHANCED_INJECTION, "--on", "--force", "--actor", ""], "actor"),
        (["override", USE_ENHANCED_INJECTION, "--session", "s", "--on", "--ttl", "soon"], "--ttl"),
        (["override", USE_ENHANCED_INJECTION, "--session", "s"], "exactly one of --on, --off"),
        (["override", USE_ENHANCED_INJECTION, "--session", "s", "--on", "--clear"], "exactly one"),
        (["allow", USE_ENHANCED_INJECTION, "--agent", " x"], "agent"),
        (["explain", "USE_NOTHING", "--user", "u"], "unknown flag 'USE_NOTHING'"),
        (["audit", "USE_NOTHING"], "unknown flag 'USE_NOTHING'"),
    ],
    ids=lambda value: "-".join(value[:1] + value[2:]) if isinstance(value, list) else "",
)
def test_bad_input_is_refused_with_the_problem_named_and_nothing_written(
    database_url: str, arguments: list[str], message: str
) -> None:
    result = flags(database_url, *arguments)
    assert result.exit_code != 0
    assert message in result.output
    assert "Traceback" not in result.output
    assert [table_rows(database_url, t) for t in ("flag_state", "flag_audit")] == [0, 0]


def test_before_revision_0007_the_commands_say_to_migrate(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = memory.ops.create_engine(url)
    memory.ops.upgrade(engine, "0006")
    engine.dispose()
    for arguments in (["list"], ["set", USE_ENHANCED_INJECTION, "--on"], ["reset"], ["audit"]):
        result = flags(url, *arguments)
        assert result.exit_code == 1
        assert "feature flags need schema revision 0007" in result.output
        assert "memctl migrate" in result.output


def test_the_cli_writes_what_the_provider_reads(database_url: str) -> None:
    rollout = ["--rollout", "25", "--force"]  # 0 -> 25 % skips the 10 % stage: forced
    flags(database_url, "set", USE_ENHANCED_INJECTION, *rollout, "--actor", "carol")
    engine = memory.ops.create_engine(database_url)
    try:
        definition = DatabaseFlagProvider(engine).snapshot()[USE_ENHANCED_INJECTION]
    finally:
        engine.dispose()
    assert (definition.rollout, definition.group_id) == (25, USE_ENHANCED_INJECTION)
