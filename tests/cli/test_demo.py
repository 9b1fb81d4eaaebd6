"""`memctl demo` walks through every store feature on a fresh SQLite file."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from memory.cli import main
from memory.ops import create_engine, head_revision

# The demo needs no flag switched by hand on its new store: test it with no environment.
pytestmark = pytest.mark.flags_as_configured


def test_demo_stores_and_prints_everything_for_two_agents(tmp_path: Path) -> None:
    database = tmp_path / "demo.db"
    result = CliRunner().invoke(main, ["demo", "--database", str(database)])

    assert result.exit_code == 0, result.output
    for heading in ("Migrate", "entity graph", "Memories in each tier", "Optimistic locking",
                    "Preferences", "Code patterns", "Session state", "Hybrid search",
                    "Context injection", "Resuming the session", "Sharing between agents",
                    "A flag switched off and back on", "Forgetting a user"):
        assert heading in result.output
    assert "a stale update is refused" in result.output
    assert "features on in a new store (memctl flags list): " in result.output
    assert "the planner asks: 'why did exporting big customers fail?'" in result.output
    assert "not visible" in result.output and "now found" in result.output
    assert "inject() is empty (0 tokens)" in result.output
    assert "a search as bob finds 0 memories; the event log's hash chain still verifies" in (
        result.output
    )
    assert "-- 0/96 tokens" not in result.output  # injection is on: the context is not empty
    engine = create_engine(f"sqlite:///{database}")
    with engine.connect() as connection:
        revision = connection.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()
        agents = connection.execute(sa.text("SELECT DISTINCT agent_id FROM memories")).scalars()
        tiers = connection.execute(sa.text("SELECT DISTINCT tier FROM memories")).scalars()
        counts = {
            table: connection.execute(sa.text(f"SELECT COUNT(*) FROM {table}")).scalar()
            for table in ("entities", "relations", "user_preferences", "code_patterns",
                          "session_state")
        }
        assert set(agents) == {"planner", "coder"}
        assert set(tiers) == {"working", "episodic", "semantic"}
    engine.dispose()
    assert revision == head_revision()
    assert all(counts.values()), counts


def test_demo_refuses_to_reuse_a_file(tmp_path: Path) -> None:
    database = tmp_path / "demo.db"
    database.write_bytes(b"")
    result = CliRunner().invoke(main, ["demo", "--database", str(database)])
    assert result.exit_code == 1
    assert "exists; the demo starts from a fresh file" in result.output
