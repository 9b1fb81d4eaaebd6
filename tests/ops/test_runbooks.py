"""Every shell block of every runbook runs, in order, against a scratch database, so a
runbook cannot drift from the CLI it documents."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from memory import Memory
from memory.ops import table_checksums
from memory.store.tables import PHASE_1_TABLES, PHASE_2_TABLES

RUNBOOKS = sorted((Path(__file__).resolve().parents[2] / "runbooks").glob("*.md"))
SHELL_BLOCK = re.compile(r"^```(?:bash|sh)\n(.*?)^```", re.MULTILINE | re.DOTALL)


def shell_blocks(runbook: Path) -> list[str]:
    return SHELL_BLOCK.findall(runbook.read_text("utf-8"))


def test_there_are_runbooks_with_commands() -> None:
    assert RUNBOOKS, "no runbooks found"
    for runbook in RUNBOOKS:
        assert shell_blocks(runbook), f"{runbook.name} has no shell block to test"


def seed(url: str) -> dict[str, object]:
    """Put rows in every table, so that a rollback drill has something to lose."""
    with Memory.open(url) as memory:
        memory.graph("ada").create_entities(
            [{"name": "Ada", "entityType": "person", "observations": ["likes tea"]}]
        )
        scope = memory.scope("ada", "planner", "s1")
        scope.add("split the export", metadata={"ticket": "T-1"})
        scope.set_preference("style", "concise")
        scope.record_pattern("python", "retry", "for attempt in range(3): ...")
        scope.save_state({"step": 1})
        with memory.engine.connect() as connection:
            return dict(table_checksums(connection, PHASE_1_TABLES + PHASE_2_TABLES))


@pytest.mark.parametrize("runbook", RUNBOOKS, ids=[path.stem for path in RUNBOOKS])
def test_runbook_commands_run_in_order(runbook: Path, tmp_path: Path) -> None:
    # One bash process for the whole runbook, so exports carry from block to block as they
    # do for an operator; -e stops at the first failing command, -x shows where.
    script = "set -euxo pipefail\n" + "\n".join(shell_blocks(runbook))
    environment = dict(os.environ)
    url = f"sqlite:///{tmp_path / 'runbook.db'}"
    before = seed(url)
    environment["MEMORY_DATABASE_URL"] = url
    environment["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{environment['PATH']}"
    result = subprocess.run(
        ["bash", "-c", script], cwd=tmp_path, env=environment, capture_output=True, text=True,
        timeout=300,
    )
    assert result.returncode == 0, f"{runbook.name} failed:\n{result.stdout}\n{result.stderr}"
    # No runbook step may lose data: every seeded row is there, unchanged, at the end.
    with Memory.open(url) as memory, memory.engine.connect() as connection:
        assert table_checksums(connection, PHASE_1_TABLES + PHASE_2_TABLES) == before
