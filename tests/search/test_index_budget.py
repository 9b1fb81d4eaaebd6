"""The in-process index is bounded (issue 16, finding 9): past ``$MEMORY_INDEX_BUDGET_MB``
the least recently used users' indexes are dropped and load again on their next search,
with the same results; the held bytes are reported as a gauge.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from memory import HashingEmbedder, InvalidInputError, Memory
from memory.telemetry import instruments as telemetry

USERS = [f"user-{n}" for n in range(4)]


def _fill(store: Memory) -> None:
    for user in USERS:
        store.scope(user, "planner").add_many(
            [f"{user} note {n} about the launch plan" for n in range(200)]
        )


@pytest.mark.parametrize("backend", ["sqlite-file", "postgresql"])
def test_past_the_budget_the_least_recently_used_users_are_dropped(
    backend: str, url_for: Callable[[str], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MEMORY_INDEX_BUDGET_MB", "1")
    with Memory.open(url_for(backend), embedder=HashingEmbedder()) as store:
        _fill(store)
        retriever = store._retriever
        # The budget is 1 MB; hold it to about two users' indexes.
        first = [hit.memory.id for hit in store.scope(USERS[0], "planner").search("launch")]
        one_user = retriever.held_bytes()
        assert one_user > 0
        retriever._index_budget = int(one_user * 2.5)
        for user in USERS[1:]:
            store.scope(user, "planner").search("launch")
        assert list(retriever._users) == USERS[2:]  # the two most recently used
        assert retriever.held_bytes() <= retriever._index_budget
        # An evicted user loads again, with the same results.
        again = [hit.memory.id for hit in store.scope(USERS[0], "planner").search("launch")]
        assert again == first
        assert list(retriever._users) == [USERS[3], USERS[0]]
        # The gauge sums every live store's indexes (other tests' stores may linger).
        (observed,) = telemetry._observe_index(None)  # type: ignore[arg-type]
        assert observed.value >= retriever.held_bytes() > 0


def test_a_bad_budget_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEMORY_INDEX_BUDGET_MB", "lots")
    with pytest.raises(InvalidInputError, match="MEMORY_INDEX_BUDGET_MB"):
        Memory.open(f"sqlite:///{tmp_path / 'm.db'}", embedder=None)
