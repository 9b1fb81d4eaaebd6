"""The admin and cleanup verbs of ``memory.ops`` without the CLI, on SQLite and PostgreSQL:
an operator's forget, team, share, revoke and grants act with the admin role (an agent's
store may not forget), and cleanup and last_cleanup_run work on a ``Memory``."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from memory import HashingEmbedder, InvalidInputError, Memory, PermissionDeniedError
from memory import ops as ops


@pytest.fixture(params=["sqlite-file", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A new database at head: a SQLite file, or a throwaway PostgreSQL database."""
    if request.param == "sqlite-file":
        url = f"sqlite:///{tmp_path / 'admin.db'}"
    else:
        make: Callable[[], str] = request.getfixturevalue("make_postgres_database")
        url = make()
    ops.migrate(url)
    return url


def agent_store(database: str) -> Memory:
    return Memory.open(database, embedder=HashingEmbedder())


def test_forget_acts_as_admin_where_an_agent_store_may_not(database: str) -> None:
    with agent_store(database) as memory:
        memory.scope("ada", "planner", "s1").add("Ada prefers short answers")
        memory.scope("bob", "planner").add("Bob prefers long answers")
        with pytest.raises(PermissionDeniedError, match="forgetting a user needs the admin role"):
            memory.forget_user("ada")

    report = ops.forget(database, "ada")

    assert report.rows["memories"] == 1 and report.total >= 1
    with agent_store(database) as memory:
        assert memory.scope("ada", "planner").list() == []
        assert [m.content for m in memory.scope("bob", "planner").list()] == [
            "Bob prefers long answers"
        ]


def test_set_team_defines_and_dissolves_a_team_as_admin(database: str) -> None:
    assert ops.set_team(database, "ada", "builders", ["coder", "reviewer"]) == [
        "coder",
        "reviewer",
    ]
    with agent_store(database) as memory:
        assert memory.teams("ada") == {"builders": ["coder", "reviewer"]}
        with pytest.raises(PermissionDeniedError, match="defining a team needs the admin role"):
            memory.set_team("ada", "builders", [])
    assert ops.set_team(database, "ada", "builders", []) == []


def test_share_grants_and_revoke_act_as_the_owning_agent(database: str) -> None:
    with agent_store(database) as memory:
        shared = memory.scope("ada", "planner").add("the release is on Friday", tier="semantic")

    made = ops.share(database, "ada", "planner", memory_id=shared.id, agents=["coder"])

    assert [(g.owner_agent, g.grantee, g.memory_id, g.access) for g in made] == [
        ("planner", "coder", shared.id, "read")
    ]
    assert [g.id for g in ops.grants(database, "ada", "planner")] == [made[0].id]
    assert [g.id for g in ops.grants(database, "ada", "coder", received=True)] == [made[0].id]
    assert ops.grants(database, "ada", "coder") == []
    revoked = ops.revoke(database, "ada", "planner", made[0].id)
    assert revoked.id == made[0].id
    assert ops.grants(database, "ada", "planner") == []


def test_cleanup_and_last_cleanup_run_on_a_memory(database: str) -> None:
    with agent_store(database) as memory:
        assert ops.last_cleanup_run(memory) is None
        memory.scope("ada", "planner", "s1").add("working note")
        policy = ops.RetentionPolicy(tiers={"working": timedelta(hours=1)})
        later = datetime.now(UTC) + timedelta(hours=2)
        dry = ops.cleanup(memory, policy, now=later, dry_run=True)
        assert (dry.dry_run, dry.run_id, dry.counts["working_memories"]) == (True, None, 1)
        assert ops.last_cleanup_run(memory) is None  # a dry run records nothing
        report = ops.cleanup(memory, policy, now=later)
        assert report.counts["working_memories"] == 1
        last = ops.last_cleanup_run(memory)
        assert last is not None and (last.id, last.status) == (report.run_id, "ok")


def test_cleanup_stops_between_batches_when_asked_and_refuses_a_stop_that_is_no_function(
    database: str,
) -> None:
    with agent_store(database) as memory:
        memory.scope("ada", "planner", "s1").add("working note")
        policy = ops.RetentionPolicy(tiers={"working": timedelta(hours=1)})
        later = datetime.now(UTC) + timedelta(hours=2)
        with pytest.raises(InvalidInputError, match="should_stop: must be callable"):
            ops.cleanup(memory, policy, now=later, should_stop=3)  # type: ignore[arg-type]
        assert ops.last_cleanup_run(memory) is None  # refused before a run was recorded
        report = ops.cleanup(memory, policy, now=later, should_stop=lambda: True)
        assert (report.status, report.counts["working_memories"]) == ("interrupted", 0)
