"""The README and ``memctl --help`` list every command, and ``--version`` answers."""

from __future__ import annotations

import re
from importlib.metadata import version
from pathlib import Path

import click
from click.testing import CliRunner

from memory.cli import main

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def test_the_readme_shows_every_command() -> None:
    missing = []
    for name, command in main.commands.items():
        subcommands = command.commands if isinstance(command, click.Group) else {}
        if not subcommands and not re.search(rf"memctl [^\n]*\b{re.escape(name)}\b", README):
            missing.append(name)
        for sub in subcommands:
            # "memctl flags set", "memctl memories list|get|update|delete", or with the
            # group's options between: "memctl swarm --swarm research task show"
            pattern = rf"memctl {re.escape(name)}\b[^\n]*[ |]{re.escape(sub)}\b"
            if not re.search(pattern, README):
                missing.append(f"{name} {sub}")
    assert missing == []


def test_the_top_level_help_names_every_command_in_its_summary() -> None:
    result = CliRunner().invoke(main, ["--help"])
    summary = result.output.split("Options:")[0]
    assert result.exit_code == 0
    assert [name for name in main.commands if not re.search(rf"\b{name}\b", summary)] == []


def test_version() -> None:
    result = CliRunner().invoke(main, ["--version"])
    assert result.output == f"memctl, version {version('tiered-memory')}\n"
