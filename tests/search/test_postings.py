"""The in-process keyword index (``memory.search.postings``): after any sequence of writes,
changes and deletions its BM25 scores are those computed from the stored terms, exactly, and
its best matches are the best the reader may see; on a real store it agrees with the
database's full-text path number for number."""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from memory import HashingEmbedder, Memory
from memory.search import postings as postings
from memory.search.keywords import DatabaseKeywords
from memory.search.postings import UserTerms

K1, B = 1.2, 0.75
WORDS = ["invoic", "ledger", "export", "note", "batch", "paris", "run"]
AGENTS = ["planner", "coder"]


def _reference(documents: dict[int, str], wanted: list[str]) -> dict[int, float]:
    """BM25 as ``memory.search.keywords.bm25`` computes it, over every document held."""
    count = len(documents)
    lengths = {memory_id: len(text.split()) for memory_id, text in documents.items()}
    average = (sum(lengths.values()) / count if count else 0.0) or 1.0
    scores = {}
    for memory_id, text in documents.items():
        words = text.split()
        total = 0.0
        for term in wanted:
            frequency = words.count(term)
            if frequency:
                df = sum(term in other.split() for other in documents.values())
                weight = math.log(1 + (count - df + 0.5) / (df + 0.5))
                normaliser = K1 * (1 - B + B * (lengths[memory_id] or 1) / average)
                total += weight * frequency * (K1 + 1) / (frequency + normaliser)
        scores[memory_id] = total
    return scores


def _reader(agent: str, granted: tuple[int, ...] = (), owners: tuple[str, ...] = ()) -> Any:
    return SimpleNamespace(
        owner=SimpleNamespace(agent=agent),
        held=SimpleNamespace(tiers=(), memory_ids=granted, owners=owners),
        tagged=frozenset(),
    )


documents_strategy = st.lists(st.sampled_from(WORDS), max_size=6).map(" ".join)
operations = st.lists(
    st.one_of(
        st.tuples(
            st.just("write"), st.integers(1, 40), documents_strategy, st.sampled_from(AGENTS)
        ),
        st.tuples(st.just("delete"), st.integers(1, 40), st.just(""), st.just("")),
    ),
    max_size=60,
)


@settings(max_examples=150, deadline=None)
@given(operations=operations, wanted=st.lists(st.sampled_from(WORDS), min_size=1, max_size=3))
def test_scores_and_best_match_a_recount_after_any_writes(
    operations: list[tuple[str, int, str, str]], wanted: list[str]
) -> None:
    # Tiny thresholds, so that merges, re-filed rows and compactions all happen.
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(postings, "RECENT_MIN", 3)
        patch.setattr(postings, "COMPACT_MIN", 2)
        index = UserTerms()
        documents: dict[int, str] = {}
        owners: dict[int, str] = {}
        for kind, memory_id, text, agent in operations:
            if kind == "write":
                index.upsert_many([memory_id], [agent], ["episodic"], [text])
                documents[memory_id], owners[memory_id] = text, agent
            else:
                index.remove_many([memory_id])
                documents.pop(memory_id, None)
        wanted = list(dict.fromkeys(wanted))
        scores = index.scores(wanted, K1, B)
        expected = _reference(documents, wanted)

        assert scores.of(list(documents)) == expected
        deleted = {memory_id for _, memory_id, _, _ in operations} - set(documents)
        assert scores.of([99, *deleted]) == {}
        assert index.documents == len(documents)
        granted = sorted(documents)[:2]
        reader = _reader("planner", tuple(granted), ("coder",))
        visible = [
            memory_id
            for memory_id in documents
            if expected[memory_id] > 0 and (owners[memory_id] == "planner" or memory_id in granted)
        ]
        best = sorted(visible, key=lambda i: (-expected[i], -i))[:5]
        assert scores.best(reader, 5) == best


def test_ids_out_of_order_are_found() -> None:
    index = UserTerms()
    index.upsert_many([10, 20], ["planner"] * 2, ["episodic"] * 2, ["ledger", "note"])
    index.upsert_many([5, 15], ["planner"] * 2, ["episodic"] * 2, ["ledger note", "ledger"])

    found = index.positions(np.array([5, 10, 15, 20, 7]))

    assert sorted(index.ids[found[:4]].tolist()) == [5, 10, 15, 20]
    assert found[4] == -1
    assert index.scores(["ledger"], K1, B).best(_reader("planner"), 10)[0] == 15


@pytest.fixture
def store(tmp_path: Any) -> Any:
    with Memory.open(f"sqlite:///{tmp_path / 'memory.db'}", embedder=HashingEmbedder()) as memory:
        yield memory


def test_the_process_index_agrees_with_the_database_full_text_path(store: Memory) -> None:
    planner = store.scope("u1", "planner", "s1")
    coder = store.scope("u1", "coder", "s2")
    written = planner.add_many([f"invoice {n} exported to the ledger" for n in range(30)])
    coder.add_many([f"ledger batch {n} of invoices" for n in range(30)])
    planner.update(
        written[3].id,
        content="the ledger of Paris invoices, invoice after invoice",
        version=written[3].version,
    )
    planner.delete(written[4].id)
    planner.share(memory_id=written[7].id, agents=["coder"])
    retriever = store._retriever
    wanted = ["invoic", "ledger", "pari"]

    coder.search("warm the index up")
    with store.engine.connect() as connection:
        version = retriever.data_version(connection, "u1")
        reader = retriever._readers.readable(connection, coder._reader(), version)
        statistics = retriever._keywords.statistics(connection, "u1", version, wanted)
        database = DatabaseKeywords(
            retriever._keywords, connection, "u1", wanted, statistics, K1, B
        )
        process = retriever._terms["u1"].scores(wanted, K1, B)
        best = database.best(reader, 100)

        assert process.best(reader, 100) == best
        assert process.of(best) == database.of(best)
    assert written[7].id in best
    assert written[4].id not in best


def test_scores_stay_valid_while_writes_reshape_the_index(monkeypatch: pytest.MonkeyPatch) -> None:
    # A search reads its scores after letting go of the lock: growth, re-filed memories and
    # a compaction meanwhile must not shift what the scores refer to. (Whether a deletion
    # made meanwhile shows depends on timing; a score never changes.)
    monkeypatch.setattr(postings, "COMPACT_MIN", 2)
    index = UserTerms()
    index.upsert_many([1, 2, 3], ["planner"] * 3, ["episodic"] * 3, ["ledger", "note", "ledger x"])
    scores = index.scores(["ledger"], K1, B)
    before = scores.of([1, 2, 3])
    best = scores.best(_reader("planner"), 5)

    index.upsert_many([1, 3], ["planner"] * 2, ["episodic"] * 2, ["note", "note"])
    index.upsert_many(list(range(4, 40)), ["planner"] * 36, ["episodic"] * 36, ["ledger"] * 36)
    index.remove_many([2])

    assert index.in_order == index.size  # compacted: every row renumbered
    assert scores.of([1, 2, 3]).items() <= before.items()
    assert set(scores.best(_reader("planner"), 5)) <= set(best)
    assert best == [1, 3]
    now = index.scores(["ledger"], K1, B)
    assert now.best(_reader("planner"), 2) == [39, 38]
    assert now.of([1, 2, 3]) == {1: 0.0, 3: 0.0}
