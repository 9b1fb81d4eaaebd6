"""Session state, preferences and code patterns obey the sharing flag like memories (issue
16, finding 12): with USE_CROSS_AGENT_SHARING off an agent reads only what its own agent
wrote, through every path (get, list, find, load_state, inject, resume); with it on, the
user's preferences, patterns and session state are shared between agents.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from memory import HashingEmbedder, Memory, NotFoundError, Scope


def _resumed(scope: Scope) -> bool:
    try:
        return "planner-secret-plan" in str(scope.resume())
    except NotFoundError:  # no state this agent may read
        return False


@pytest.mark.parametrize("shared", [False, True], ids=["sharing-off", "sharing-on"])
@pytest.mark.parametrize("backend", ["sqlite-file", "sqlite-memory", "postgresql"])
def test_another_agents_state_and_preferences_follow_the_sharing_flag(
    backend: str,
    shared: bool,
    user: str,
    url_for: Callable[[str], str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("USE_CROSS_AGENT_SHARING", "on" if shared else "off")
    with Memory.open(url_for(backend), embedder=HashingEmbedder()) as store:
        writer = store.scope(user, "planner", "s1")
        writer.set_preference("answer_style", "planner-secret-style")
        writer.record_pattern("python", "planner-pattern", "print('planner')")
        writer.save_state({"plan": "planner-secret-plan"})
        reader = store.scope(user, "coder", "s1")

        seen = {
            "get": reader.get_preference("answer_style") is not None,
            "list": bool(reader.list_preferences()),
            "find": bool(reader.find_patterns(language="python")),
            "load_state": reader.load_state() is not None,
            "inject": "planner-secret" in reader.inject("answer style plan", 2000).text,
            "resume": _resumed(reader),
        }
        assert seen == dict.fromkeys(seen, shared)
        # Its own writes it always reads.
        reader.set_preference("answer_style", "coder-style")
        assert reader.get_preference("answer_style") is not None
