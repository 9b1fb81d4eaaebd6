"""Callers cannot write entries that look like the library's own (issue 16, finding 11):
``record_event`` refuses every operation name the library logs, and no agent may be named
``admin``, the name operators' entries (forget, teams) are logged under.
"""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from memory import InvalidInputError, Memory


def _every_kind_of_write(memory: Memory, user: str) -> None:
    planner = memory.scope(user, "planner", "s1")
    note = planner.add("a note", metadata={"k": "v"})
    planner.update(note.id, version=note.version, content="a changed note")
    (grant,) = planner.share(memory_id=note.id, agents=["coder"])
    memory.scope(user, "coder", "s1").get(note.id)
    planner.revoke(grant.id)
    memory.set_team(user, "builders", ["coder"])
    planner.set_preference("style", "terse")
    planner.delete_preference("style")
    planner.record_pattern("python", "loop", "for x in y: pass")
    planner.save_state({"step": 1})
    planner.merge_context({"goal": "ship"})
    planner.delete(planner.add("another note").id)
    memory.forget_user(f"gone-{user}")


def test_record_event_refuses_every_operation_the_library_logs(
    memory: Memory, user: str
) -> None:
    memory.role = "admin"  # forget and teams, to log the operators' operations too
    _every_kind_of_write(memory, user)
    with memory.engine.connect() as connection:
        operations = set(
            connection.execute(sa.text("SELECT DISTINCT operation FROM memory_events")).scalars()
        )
    assert {"team.set", "user.forget", "memory.add", "context.patch"} <= operations
    scope = memory.scope(user, "intruder")
    for operation in sorted(operations):
        with pytest.raises(InvalidInputError, match="reserved"):
            scope.record_event(operation, {"forged": True})
    scope.record_event("task.done", {"ok": True})  # a caller's own name is fine


@pytest.mark.parametrize("agent", ["admin", "ADMIN", "Admin"])
def test_no_agent_may_be_named_admin(memory: Memory, user: str, agent: str) -> None:
    with pytest.raises(InvalidInputError, match="admin"):
        memory.scope(user, agent)
