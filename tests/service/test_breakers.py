"""The embedder's circuit breaker: it opens after repeated failures, then fails fast without
touching the model, and search keeps answering from keywords (a real SQLite store)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pybreaker
import pytest

from memory import HashingEmbedder, Memory
from memory.service.breakers import GuardedEmbedder, breaker


class BrokenModel:
    """An embedder whose model has stopped working (after it embedded the first writes)."""

    def __init__(self) -> None:
        self.working = True
        self.calls = 0
        self.model = HashingEmbedder()
        self.model_name, self.dimension = self.model.model_name, self.model.dimension

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        self.calls += 1
        if not self.working:
            raise RuntimeError("the model server stopped answering")
        return self.model.embed(texts)


def test_the_breaker_opens_fails_fast_and_search_still_answers(tmp_path: Path) -> None:
    model = BrokenModel()
    guard = breaker("embedder", fail_max=3, reset_timeout=60)
    with Memory.open(
        f"sqlite:///{tmp_path / 'm.db'}", embedder=GuardedEmbedder(model, guard)
    ) as memory:
        scope = memory.scope("ada", "planner")
        scope.add("Ada prefers green tea")
        model.working = False
        for _ in range(3):  # each search fails over to keywords and counts a failure
            assert [hit.memory.content for hit in scope.search("green tea")] == [
                "Ada prefers green tea"
            ]
        assert guard.current_state == "open"
        calls = model.calls
        assert [hit.memory.content for hit in scope.search("tea")] == ["Ada prefers green tea"]
        assert model.calls == calls  # open: the model was not called at all
        with pytest.raises(pybreaker.CircuitBreakerError):
            GuardedEmbedder(model, guard).embed(["x"])
