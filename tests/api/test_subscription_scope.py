"""Subscriptions see only what their scope may read (issue 16, finding 12): an agent-role
store cannot subscribe to every user's events; a scope's subscription gets its own agent's
events, and with USE_CROSS_AGENT_SHARING on also the user's preference, pattern and state
events of other agents (which its reads see too), never another agent's memory events nor
another user's events.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from memory import Memory, MemoryEvent, PermissionDeniedError


class Heard:
    def __init__(self) -> None:
        self.events: list[MemoryEvent] = []
        self.lock = threading.Lock()

    def __call__(self, event: MemoryEvent) -> None:
        with self.lock:
            self.events.append(event)

    def settle(self) -> list[tuple[str, str, str]]:
        """Wait until the subscription has read the log up to its head, then what it got."""
        time.sleep(1.0)
        with self.lock:
            return [(e.user_id, e.agent_id, e.operation) for e in self.events]


def _write(store: Memory, user: str, other_user: str) -> None:
    mine, theirs = store.scope(user, "planner", "s1"), store.scope(user, "coder", "s1")
    mine.add("my note")
    mine.set_preference("style", "terse")
    theirs.add("the coder's private note")
    theirs.set_preference("editor", "vim")
    theirs.record_pattern("python", "loop", "for x in y: pass")
    theirs.save_state({"step": 1})
    store.scope(other_user, "planner", "s1").add("another user's note")


def test_an_agent_store_cannot_subscribe_to_every_user(
    url_for: Callable[[str], str],
) -> None:
    with Memory.open(url_for("sqlite-file"), embedder=None) as store:
        with pytest.raises(PermissionDeniedError, match="Scope.subscribe"):
            store.subscribe(lambda event: None, after_seq=0)


@pytest.mark.parametrize("shared", [False, True], ids=["sharing-off", "sharing-on"])
@pytest.mark.parametrize("backend", ["sqlite-file", "postgresql"])
def test_a_scope_hears_only_what_it_may_read(
    backend: str,
    shared: bool,
    url_for: Callable[[str], str],
    user: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("USE_CROSS_AGENT_SHARING", "on" if shared else "off")
    with Memory.open(url_for(backend), embedder=None) as store:
        heard = Heard()
        subscription: Any = store.scope(user, "planner", "s1").subscribe(heard, after_seq=0)
        try:
            _write(store, user, f"other-{user}")
            got = heard.settle()
        finally:
            subscription.close()
    own = [(user, "planner", "memory.add"), (user, "planner", "preference.set")]
    others = [
        (user, "coder", "preference.set"),
        (user, "coder", "pattern.record"),
        (user, "coder", "state.save"),
    ]
    assert sorted(got) == sorted(own + others if shared else own)


def _memory_events(got: list[MemoryEvent], agent: str) -> list[tuple[str, str]]:
    return [(e.operation, e.target) for e in got if e.agent_id == agent]


@pytest.mark.parametrize("backend", ["sqlite-file", "postgresql"])
def test_a_grantee_hears_the_memories_shared_with_it_until_the_grant_is_revoked(
    backend: str, url_for: Callable[[str], str], user: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With sharing on, the coder's subscription gets the planner's events about the memory
    the planner shared with it (and only that one), while the grant lives; after the
    revoke, nothing more of it. What a subscription may see is what the scope may read:
    ``memory.store.sharing.event_readable`` over ``visible``."""
    monkeypatch.setenv("USE_CROSS_AGENT_SHARING", "on")
    with Memory.open(url_for(backend), embedder=None) as store:
        planner, coder = store.scope(user, "planner", "s1"), store.scope(user, "coder", "s1")
        shared, private = planner.add("shared plan"), planner.add("private plan")
        grant = planner.share(memory_id=shared.id, agents=["coder"])[0]
        heard = Heard()
        subscription: Any = coder.subscribe(heard, after_seq=0)
        try:
            planner.update(shared.id, version=1, content="shared plan, revised")
            planner.update(private.id, version=1, content="private plan, revised")
            deadline = time.monotonic() + 10
            while len(_memory_events(heard.events, "planner")) < 2 and time.monotonic() < deadline:
                time.sleep(0.05)
            with heard.lock:
                before_revoke = _memory_events(heard.events, "planner")
            planner.revoke(grant.id)
            planner.update(shared.id, version=2, content="shared plan, after the revoke")
            heard.settle()
        finally:
            subscription.close()
    target = f"memory:{shared.id}"
    assert before_revoke == [("memory.add", target), ("memory.update", target)]
    # Nothing about the private memory ever, nothing about the shared one after the revoke.
    assert _memory_events(heard.events, "planner") == before_revoke


@pytest.mark.parametrize("backend", ["sqlite-file", "postgresql"])
def test_without_sharing_a_grant_delivers_nothing(
    backend: str, url_for: Callable[[str], str], user: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("USE_CROSS_AGENT_SHARING", "on")
    with Memory.open(url_for(backend), embedder=None) as store:
        planner = store.scope(user, "planner", "s1")
        shared = planner.add("shared plan")
        planner.share(memory_id=shared.id, agents=["coder"])
    monkeypatch.setenv("USE_CROSS_AGENT_SHARING", "off")
    with Memory.open(url_for(backend), embedder=None) as store:
        heard = Heard()
        subscription: Any = store.scope(user, "coder", "s1").subscribe(heard, after_seq=0)
        try:
            store.scope(user, "planner", "s1").update(shared.id, version=1, content="revised")
            got = heard.settle()
        finally:
            subscription.close()
    assert got == []
