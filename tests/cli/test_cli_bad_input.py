"""Every ``memctl`` command, run with bad input: one ``Error:``/``Usage:`` line and a non-zero
exit, never a traceback, and nothing written.

``BAD_INPUT`` holds cases for every command; a command added without cases fails
``test_every_command_has_bad_input_cases``. ``{db}`` is a migrated SQLite file with a memory
in it, ``{head}`` the revision it is at, ``{missing}`` a file that does not exist,
``{file}`` a regular file, ``{deep}`` JSON nested 100,000 deep, ``{latin1}`` a file that is
not UTF-8, ``{dir}`` an empty directory.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from memory import HashingEmbedder, Memory
from memory.cli import main
from memory.ops import head_revision

LONG = "u" * 5_000
DB = ["--database-url", "{db}"]
MISSING = ["--database-url", "{missing}"]
IN_MEMORY = ["--database-url", "sqlite:///:memory:"]
SCOPE = ["--user", "ada", "--agent", "planner"]
DEAD_REDIS = ["--redis-url", "redis://127.0.0.1:1/0", "--swarm", "s1"]  # nothing listens

BAD_INPUT: dict[str, list[list[str]]] = {
    "migrate": [[*DB, "migrate", "--to", ""], [*DB, "migrate", "--to", "0003"],
                [*DB, "migrate", "--to", "nope"], [*IN_MEMORY, "migrate"]],
    "rollback": [[*DB, "rollback", "--to", ""], [*DB, "rollback", "--to", "{head}"],
                 [*DB, "rollback", "--to", "0006", "--archive", "/proc/x"],
                 [*DB, "rollback", "--to", "0006", "--archive", "{file}/archive"],
                 [*MISSING, "rollback"]],
    "current": [[*MISSING, "current"], [*IN_MEMORY, "current"],
                ["--database-url", "oracle://x", "current"]],
    "history": [[*IN_MEMORY, "history"], ["--database-url", "postgresql://[", "history"]],
    "check": [[*MISSING, "check"], [*IN_MEMORY, "check"]],
    "backup": [[*DB, "backup", "/proc/x"], [*DB, "backup", "{file}/backup"],
               [*DB, "backup", "--verify", "{dir}"], [*MISSING, "backup", "{dir}"]],
    "restore": [[*DB, "restore", "{dir}"], [*DB, "restore", "{missing}"],
                [*DB, "restore", "{dir}", "--replay-until", "5"],
                [*DB, "restore", "{dir}", "--replay-until", "tuesday", "--events-from", "{db}"]],
    "replay": [[*MISSING, "replay", "--to", "sqlite:///{dir}/target.db"],
               [*DB, "replay", "--to", "{db}"],
               [*DB, "replay", "--to", "sqlite:///:memory:"],
               [*DB, "replay", "--to", "sqlite:///{dir}/target.db", "--until", "٥"],
               [*DB, "replay", "--to", "postgresql://[", "--until", "1"]],
    "restore-archive": [[*DB, "restore-archive", "{dir}"], [*MISSING, "restore-archive", "{dir}"]],
    "import-mcp": [[*DB, "import-mcp", "{latin1}", "--user", "ada"],
                   [*DB, "import-mcp", "{deep}", "--user", "ada"],
                   [*DB, "import-mcp", "{file}", "--user", LONG]],
    "export-mcp": [[*DB, "export-mcp", "--user", LONG], [*MISSING, "export-mcp", "--user", "ada"]],
    "mcp": [[*DB, "mcp", "--user", LONG], [*DB, "mcp", "--user", "ada", "--session", " s"],
            [*IN_MEMORY, "mcp", "--user", "ada"], [*DB, "mcp", "--user", "ada", "--http", "0"]],
    "demo": [["demo", "--database", "/proc/x/demo.db"], ["demo", "--database", "{file}/demo.db"]],
    "cleanup": [[*DB, "cleanup", "--working-hours", "-1"], [*MISSING, "cleanup"]],
    "add": [[*DB, "add", "x", "--user", LONG], [*DB, "add", "x", *SCOPE, "--metadata", "[1]"],
            [*DB, "add", "x", *SCOPE, "--metadata", "@{deep}"],
            [*DB, "add", "@{latin1}", *SCOPE], [*DB, "add", "@{missing}", *SCOPE],
            [*DB, "add", "", *SCOPE], [*IN_MEMORY, "add", "x", *SCOPE],
            [*DB, "add", "x", *SCOPE, "--importance", "7"]],
    "search": [[*DB, "search", " ", *SCOPE], [*DB, "search", "x", *SCOPE, "--limit", "0"],
               [*MISSING, "search", "x", *SCOPE], [*DB, "search", "x", "--user", " "]],
    "inject": [[*DB, "inject", "x", *SCOPE, "--budget", "0"], [*DB, "inject", "", *SCOPE],
               [*MISSING, "inject", "x", *SCOPE]],
    "reembed": [[*DB, "reembed", "--batch-size", "0"], [*MISSING, "reembed"]],
    "memories list": [[*DB, "memories", "list", *SCOPE, "--limit", "0"],
                      [*DB, "memories", "list", "--user", LONG],
                      [*DB, "memories", "list", *SCOPE, "--before-id", str(2**70)]],
    "memories get": [[*DB, "memories", "get", "999999", *SCOPE],
                     [*DB, "memories", "get", "-1", *SCOPE],
                     [*DB, "memories", "get", "x", *SCOPE]],
    "memories update": [[*DB, "memories", "update", "1", *SCOPE, "--version", "99",
                         "--content", "new"],
                        [*DB, "memories", "update", "1", *SCOPE, "--version", "1",
                         "--metadata", "@{deep}"],
                        [*DB, "memories", "update", "1", *SCOPE]],
    "memories delete": [[*DB, "memories", "delete", "999999", *SCOPE],
                        [*MISSING, "memories", "delete", "1", *SCOPE]],
    "preferences": [[*DB, "preferences", "--user", " "], [*MISSING, "preferences", "--user", "a"]],
    "patterns": [[*DB, "patterns", *SCOPE, "--limit", "0"], [*DB, "patterns", "--user", LONG]],
    "state": [[*DB, "state", *SCOPE], [*DB, "state", *SCOPE, "--session", LONG]],
    "flags list": [[*MISSING, "flags", "list"], [*IN_MEMORY, "flags", "list"]],
    "flags set": [[*DB, "flags", "set", "USE_NOTHING", "--on"],
                  [*DB, "flags", "set", "USE_ENHANCED_INJECTION", "--rollout", "150"],
                  [*DB, "flags", "set", "USE_ENHANCED_INJECTION"],
                  [*DB, "flags", "set", "USE_ENHANCED_INJECTION", "--on", "--actor", LONG]],
    "flags override": [[*DB, "flags", "override", "USE_ENHANCED_INJECTION", "--session",
                        " lead", "--on"],
                       [*DB, "flags", "override", "USE_ENHANCED_INJECTION", "--session", "s",
                        "--on", "--ttl", "forever"]],
    "flags allow": [[*DB, "flags", "allow", "USE_NOTHING", "--agent", "a"],
                    [*DB, "flags", "allow", "USE_ENHANCED_INJECTION", "--agent", LONG]],
    "flags deny": [[*DB, "flags", "deny", "USE_NOTHING", "--agent", "a"]],
    "flags audit": [[*DB, "flags", "audit", "USE_NOTHING"], [*MISSING, "flags", "audit"]],
    "flags reset": [[*MISSING, "flags", "reset"], [*DB, "flags", "reset", "--reason", LONG]],
    "flags explain": [[*DB, "flags", "explain", "USE_NOTHING"]],
    "gates": [[*DB, "gates", "--gate", "9"], [*DB, "gates", "--gate", "1"],
              [*DB, "gates", "--gate", "1", "--flag", "USE_ENHANCED_INJECTION", "--snapshot",
               "{missing}"],
              [*DB, "gates", "--gate", "1", "--flag", "USE_ENHANCED_INJECTION", "--snapshot",
               "{latin1}"],
              [*DB, "gates", "--gate", "1", "--flag", "USE_NOTHING", "--snapshot", "{file}"]],
    "health": [[*IN_MEMORY, "health"], [*DB, "health", "--check", "nothing"]],
    "workload": [[*DB, "workload", "--duration", "0"], [*IN_MEMORY, "workload"]],
    "share": [[*DB, "share", *SCOPE], [*DB, "share", *SCOPE, "--memory", "1"],
              [*DB, "share", *SCOPE, "--tag", "no-equals", "--with-agent", "b"]],
    "revoke": [[*DB, "revoke", *SCOPE, "999999"], [*DB, "revoke", *SCOPE, "x"]],
    "grants": [[*MISSING, "grants", *SCOPE], [*DB, "grants", "--user", LONG]],
    "team": [[*DB, "team", "--user", "ada", " ", "a"], [*DB, "team", "--user", LONG, "t"]],
    "forget": [[*DB, "forget", "--user", "", "--yes"],
               [*MISSING, "forget", "--user", "a", "--yes"]],
    "record": [[*DB, "record", "--agent", "a", "--event", "e", "--data", "@{deep}", "--user", "u"],
               [*DB, "record", "--agent", "a", "--event", "e", "--data", "[1]", "--user", "u"],
               [*DB, "record", "--agent", "a", "--event", "", "--data", "{{}}", "--user", "u"],
               [*DB, "record", "--agent", "a", "--event", "e", "--data", "@{latin1}",
                "--user", "u"]],
    "audit verify": [[*MISSING, "audit", "verify"], [*IN_MEMORY, "audit", "verify"]],
    "swarm keys generate": [["swarm", "keys", "generate", "{file}"],
                            ["swarm", "keys", "generate", "{file}/key.pem"]],
    "swarm keys public": [["swarm", "keys", "public", "{latin1}"],
                          ["swarm", "keys", "public", "{missing}"]],
    "swarm keys add": [["swarm", *DEAD_REDIS, "keys", "add", "a", "not-base64"]],
    "swarm keys remove": [["swarm", *DEAD_REDIS, "keys", "remove", "a"]],
    "swarm keys list": [["swarm", *DEAD_REDIS, "keys", "list"],
                        ["swarm", "--redis-url", "nope://", "--swarm", "s", "keys", "list"]],
    "swarm allow": [["swarm", *DEAD_REDIS, "allow", "r"]],
    "swarm disallow": [["swarm", *DEAD_REDIS, "disallow", "r"]],
    "swarm task create": [["swarm", *DEAD_REDIS, "task", "create", "x", "--data", "[1"],
                          ["swarm", *DEAD_REDIS, "task", "create", "x", "--data", "@{deep}"]],
    "swarm task show": [["swarm", *DEAD_REDIS, "task", "show", "nope"]],
    "swarm escalations list": [["swarm", *DEAD_REDIS, "escalations", "list"]],
    "swarm escalations resolve": [["swarm", *DEAD_REDIS, "escalations", "resolve", "e", "r"]],
    "swarm scan": [["swarm", *DEAD_REDIS, "scan"]],
    "swarm health": [["swarm", *DEAD_REDIS, "health"]],
    "sync status": [["sync", "status", "--hub", "no-port"],
                    ["sync", "status", "--hub", "127.0.0.1:99999"],
                    ["sync", "status", "--hub", "127.0.0.1:1"],  # no $MEMORY_SYNC_SECRET
                    ["sync", "status", "--hub", "127.0.0.1:1", "--ca", "{missing}"],
                    ["sync", "status", "--hub", "127.0.0.1:1", "--timeout", "0"]],
    "keys create": [[*DB, "keys", "create", "--agent", ""],
                    [*DB, "keys", "create", "--agent", LONG],
                    [*DB, "keys", "create", "--agent", "a", "--role", "root"],
                    [*DB, "keys", "create", "--agent", "a", "--user", " "],
                    [*DB, "keys", "create", "--agent", "a", "--expires", "2001-01-01"],
                    [*MISSING, "keys", "create", "--agent", "a"]],
    # No $MEMORY_EVENT_KEY here (the current key); the bad keys themselves:
    # tests/store/test_event_sourcing.py::test_a_rotation_refuses_bad_keys.
    "events rotate-key": [[*DB, "events", "rotate-key"], [*MISSING, "events", "rotate-key"],
                          [*DB, "events", "rotate-key", "--new-key", "x"]],
    "keys list": [[*MISSING, "keys", "list"], [*IN_MEMORY, "keys", "list"]],
    "keys revoke": [[*DB, "keys", "revoke", "nope"], [*MISSING, "keys", "revoke", "x"]],
    "serve": [[*MISSING, "serve"], [*IN_MEMORY, "serve"], [*DB, "serve", "--port", "70000"],
              [*DB, "serve", "--grpc-port", "-1"],
              [*DB, "serve", "--config", "{latin1}"], [*DB, "serve", "--config", "{missing}"],
              [*DB, "serve", "--config", "{deep}"]],
}  # fmt: skip


def _leaf_commands(group: click.Group, prefix: str = "") -> Iterator[str]:
    for name, command in group.commands.items():
        path = f"{prefix}{name}"
        if isinstance(command, click.Group):
            yield from _leaf_commands(command, f"{path} ")
        else:
            yield path


def test_every_command_has_bad_input_cases() -> None:
    assert sorted(_leaf_commands(main)) == sorted(BAD_INPUT)


@pytest.fixture(scope="module")
def places(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("bad-input")
    db = root / "memory.db"
    with Memory.open(f"sqlite:///{db}", embedder=HashingEmbedder()) as store:
        store.scope("ada", "planner").add("Ada exports invoices on Fridays")
    (root / "a-file").write_text("not a directory\n")
    (root / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
    (root / "latin1.txt").write_bytes("caf\xe9 cr\xe8me\n".encode("latin-1"))
    (root / "empty").mkdir()
    return {
        "db": f"sqlite:///{db}",
        "missing": str(root / "missing.db"),
        "file": str(root / "a-file"),
        "deep": str(root / "deep.json"),
        "latin1": str(root / "latin1.txt"),
        "dir": str(root / "empty"),
        "head": head_revision(),
    }


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize(
    "arguments",
    [case for cases in BAD_INPUT.values() for case in cases],
    ids=[f"{name}-{i}" for name, cases in BAD_INPUT.items() for i in range(len(cases))],
)
def test_bad_input_is_one_error_line_and_changes_nothing(
    arguments: list[str], places: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MEMORY_WORKLOAD_EMBEDDER", "hashing")
    database = Path(places["db"].removeprefix("sqlite:///"))
    before = _digest(database)
    result = CliRunner().invoke(main, [part.format(**places) for part in arguments])

    assert isinstance(result.exception, SystemExit), result.exception  # reported, not raised
    assert result.exit_code in (1, 2), result.output
    assert "Traceback" not in result.output
    assert "unexpected" not in result.output, result.output  # a mapped error, not the catch-all
    assert any(line.startswith(("Error:", "Usage:")) for line in result.output.splitlines())
    assert _digest(database) == before
    assert not Path(places["missing"]).exists()  # nothing created where nothing was
