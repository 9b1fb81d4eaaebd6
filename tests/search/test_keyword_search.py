"""Keyword search internals that the search results depend on: the statistics cached by
data version follow every write, and a reader that may see only a few of the best matches
still gets its best visible ones, never anyone else's. On the database's full-text path
(``memory.search.keywords``: a store with no process index) and the process's postings
(``memory.search.postings``)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from memory import HashingEmbedder, Memory
from memory.search import keywords as keywords


@pytest.fixture(params=["sqlite-file", "postgresql", "sqlite-file in process"])
def memory(request: pytest.FixtureRequest, url_for: Callable[[str], str]) -> Iterator[Memory]:
    """FTS5 and PostgreSQL full-text search (no embedder, so no process index answers),
    and the postings the process holds beside its vector index."""
    backend, _, in_process = request.param.partition(" ")
    embedder = HashingEmbedder() if in_process else None
    with Memory.open(url_for(backend), embedder=embedder) as store:
        yield store


def _scores(memory: Memory, user: str, query: str) -> list[tuple[int, float, float]]:
    hits = memory.scope(user, "planner").search(query, limit=20)
    return [(hit.memory.id, round(hit.keyword_score, 9), round(hit.score, 9)) for hit in hits]


def test_cached_statistics_follow_writes(memory: Memory, user: str) -> None:
    scope = memory.scope(user, "planner", "s1")
    scope.add_many([f"invoice {n} exported to the ledger" for n in range(5)])
    scope.add_many([f"ledger entry {n}" for n in range(5)])
    before = _scores(memory, user, "invoice ledger")
    # More memories with "invoice" lower its weight: the next search must see that.
    scope.add_many([f"invoice batch {n}" for n in range(20)])
    cached = _scores(memory, user, "invoice ledger")
    memory._retriever._keywords.forget(user)
    counted_afresh = _scores(memory, user, "invoice ledger")

    assert cached == counted_afresh
    assert cached != before
    # And a deletion too.
    scope.delete(cached[0][0])
    cached = _scores(memory, user, "invoice ledger")
    memory._retriever._keywords.forget(user)
    assert cached == _scores(memory, user, "invoice ledger")


def test_a_reader_seeing_few_of_the_best_matches_gets_its_own_and_shared_ones(
    memory: Memory, user: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Small bounds, so that a few dozen memories take the path a 100k store takes: the
    # best matches are mostly another agent's, and the query runs again with visibility.
    monkeypatch.setattr(keywords, "RANKED_MATCHES", 10)
    monkeypatch.setattr(keywords, "ENOUGH_VISIBLE", 4)
    planner = memory.scope(user, "planner", "s1")
    others = planner.add_many([f"invoice export invoice note {n}" for n in range(40)])
    shared = others[5]
    planner.share(memory_id=shared.id, agents=["coder"])
    coder = memory.scope(user, "coder", "s2")
    own = {record.id for record in coder.add_many([f"invoice memo {n}" for n in range(3)])}

    found = {hit.memory.id for hit in coder.search("invoice", limit=20)}

    assert found == own | {shared.id}
