"""``Memory.open`` takes a plain file path; a closed ``Memory`` refuses every call."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from memory import HashingEmbedder, Memory, StoreClosedError


def test_a_plain_path_opens_a_sqlite_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with Memory.open("plain.db", embedder=HashingEmbedder()) as store:
        assert store.backend == "sqlite"
        store.scope("ada", "planner").add("Ada prefers short answers")
    with Memory.open(str(tmp_path / "plain.db"), embedder=HashingEmbedder()) as store:
        assert [m.content for m in store.scope("ada", "planner").list()] == [
            "Ada prefers short answers"
        ]
    assert os.path.exists(tmp_path / "plain.db")


def test_a_closed_store_refuses_every_call_and_writes_nothing(tmp_path: Path) -> None:
    store = Memory.open(f"sqlite:///{tmp_path / 'memory.db'}", embedder=HashingEmbedder())
    scope = store.scope("ada", "planner", "s1")
    graph = store.graph("ada")
    scope.add("kept")
    store.close()
    store.close()  # closing twice is harmless

    calls = [
        lambda: scope.add("lost"),
        lambda: scope.list(),
        lambda: scope.search("kept"),
        lambda: scope.inject("kept"),
        lambda: scope.set_preference("k", "v"),
        lambda: scope.save_state({"step": 1}),
        lambda: graph.read_graph(),
        lambda: store.scope("ada", "planner"),
        lambda: store.graph("ada"),
        lambda: store.verify_events(),
    ]
    for call in calls:
        with pytest.raises(StoreClosedError, match="closed"):
            call()
    with Memory.open(f"sqlite:///{tmp_path / 'memory.db'}", embedder=HashingEmbedder()) as again:
        assert [m.content for m in again.scope("ada", "planner").list()] == ["kept"]
