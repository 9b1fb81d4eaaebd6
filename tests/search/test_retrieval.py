"""Search: hybrid retrieval on every backend, scoping and filters, degradation, freshness
across processes, and re-embedding after a model change."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator, Sequence
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa

from memory import HashingEmbedder, InvalidInputError, Memory, MiniLMEmbedder

NOTES = [
    "Ada prefers green tea in the afternoon",
    "The billing export times out on accounts with more than ten thousand invoices",
    "Bob reviews every pull request that touches the payment gateway",
    "The team deploys to production on Tuesdays and Thursdays",
    "Ada is allergic to peanuts",
    "The staging database was migrated to PostgreSQL 15 last week",
]


@pytest.fixture
def memory(search_memory: Memory) -> Memory:
    """Every test here runs on each search backend, PostgreSQL with pgvector included."""
    return search_memory


def test_search_finds_by_keyword_and_ranks_best_first(memory: Memory, user: str) -> None:
    scope = memory.scope(user, "planner", "s1")
    scope.add_many(NOTES)
    hits = scope.search("which database did staging move to?")

    assert hits[0].memory.content == NOTES[5]
    assert hits[0].keyword_score == 1.0
    assert [hit.score for hit in hits] == sorted((hit.score for hit in hits), reverse=True)


def test_search_never_leaves_the_callers_scope(memory: Memory, user: str) -> None:
    memory.scope(user, "planner", "s1").add("planner secret about the invoice export")
    memory.scope(user, "coder", "s1").add("coder note about the invoice export")
    memory.scope(user + "-x", "planner", "s1").add("other user's invoice export")

    hits = memory.scope(user, "planner", "s2").search("invoice export")
    assert [hit.memory.content for hit in hits] == ["planner secret about the invoice export"]
    assert all(hit.memory.user_id == user and hit.memory.agent_id == "planner" for hit in hits)


def test_search_filters(memory: Memory, user: str) -> None:
    scope = memory.scope(user, "planner", "s1")
    working = scope.add("export plan draft", metadata={"ticket": "T-1"})
    semantic = scope.add("export plan rule", tier="semantic", metadata={"ticket": "T-2"})
    other_session = memory.scope(user, "planner", "s2").add("export plan elsewhere")

    def ids(**filters: object) -> set[int]:
        return {hit.memory.id for hit in scope.search("export plan", **filters)}  # type: ignore[arg-type]

    assert ids() == {working.id, semantic.id, other_session.id}
    assert ids(tiers=["semantic"]) == {semantic.id}
    assert ids(session="s2") == {other_session.id}
    assert ids(metadata={"ticket": "T-1"}) == {working.id}
    assert ids(created_after=semantic.created_at + timedelta(seconds=5)) == set()
    assert len(scope.search("export plan", limit=1)) == 1


def test_search_skips_expired_and_deleted_memories(memory: Memory, user: str) -> None:
    scope = memory.scope(user, "planner", "s1")
    gone = scope.add("quarterly roadmap review")
    scope.delete(gone.id)
    assert scope.search("quarterly roadmap") == []


def test_updated_content_is_searched_by_its_new_words(memory: Memory, user: str) -> None:
    scope = memory.scope(user, "planner", "s1")
    item = scope.add("kickoff meeting on Monday")
    scope.update(item.id, version=1, content="retrospective meeting on Friday")
    assert [hit.memory.id for hit in scope.search("retrospective")] == [item.id]
    assert scope.search("kickoff") == []


@pytest.mark.parametrize("query", ["", "   ", "x" * 5000])
def test_search_rejects_bad_queries(memory: Memory, user: str, query: str) -> None:
    with pytest.raises(InvalidInputError, match="text"):
        memory.scope(user, "planner").search(query)


def test_query_with_only_stop_words_or_operators_is_safe(memory: Memory, user: str) -> None:
    scope = memory.scope(user, "planner", "s1")
    scope.add_many(NOTES)
    assert isinstance(scope.search("the and of"), list)
    assert isinstance(scope.search("NEAR(\" OR AND * ^ ( ) : ' | & !"), list)


# -- degradation ----------------------------------------------------------------------------------


class FailingEmbedder:
    model_name = "failing"
    dimension = 8

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        raise RuntimeError("model server down")


def test_a_failing_embedder_degrades_to_keywords(memory: Memory, user: str) -> None:
    store = Memory(memory.engine, memory.revision, FailingEmbedder())
    counted = store.retrieval_stats  # the process' metrics: compare deltas
    scope = store.scope(user, "planner", "s1")
    scope.add_many(NOTES)  # writes succeed without vectors
    hits = scope.search("peanuts allergy")

    assert [hit.memory.content for hit in hits] == ["Ada is allergic to peanuts"]
    assert hits[0].vector_score == 0.0
    # The write and the search.
    assert store.retrieval_stats.degraded_searches - counted.degraded_searches >= 2


def test_no_embedder_at_all_still_searches(memory: Memory, user: str) -> None:
    store = Memory(memory.engine, memory.revision, None)
    scope = store.scope(user, "planner", "s1")
    scope.add("Ada is allergic to peanuts")
    assert [hit.memory.content for hit in scope.search("peanuts")] == ["Ada is allergic to peanuts"]


def test_a_model_change_is_detected_and_reembedded(memory: Memory, user: str) -> None:
    scope = memory.scope(user, "planner", "s1")
    scope.add_many(NOTES)
    changed = Memory(memory.engine, memory.revision, HashingEmbedder(dimension=32))
    assert changed.embeddings_needing_refresh() >= len(NOTES)
    # Until re-embedded, vectors of the old model are not compared with the new one.
    before = changed.scope(user, "planner", "s1").search("green tea afternoon")
    assert before[0].memory.content == NOTES[0]
    assert all(hit.vector_score == 0.0 for hit in before)

    progress: list[int] = []
    assert changed.reembed(batch_size=4, progress=progress.append) >= len(NOTES)
    assert changed.embeddings_needing_refresh() == 0
    assert sum(progress) >= len(NOTES) and max(progress) <= 4
    after = changed.scope(user, "planner", "s1").search("green tea afternoon")
    assert after[0].memory.content == NOTES[0] and after[0].vector_score > 0


# -- cross-process freshness ----------------------------------------------------------------------


WRITER = textwrap.dedent(
    """
    import sys
    from memory import HashingEmbedder, Memory
    with Memory.open(sys.argv[1], embedder=HashingEmbedder()) as memory:
        memory.scope(sys.argv[2], "planner", "s1").add(sys.argv[3])
    """
)


@pytest.mark.parametrize("backend", ["sqlite-file", "postgresql", "postgresql-pgvector"])
def test_a_memory_written_by_another_process_is_found_next(
    backend: str, url_for: Callable[[str], str], user: str
) -> None:
    url = url_for(backend)
    with Memory.open(url, embedder=HashingEmbedder()) as store:
        scope = store.scope(user, "planner", "s1")
        scope.add_many(NOTES)
        novel = "The zeppelin hangar opens in May"
        # The index is loaded now; nothing in it is the novel memory yet.
        assert novel not in [hit.memory.content for hit in scope.search("zeppelin hangar")]
        subprocess.run(
            [sys.executable, "-c", WRITER, url, user, novel],
            check=True,
            timeout=120,
        )
        hits = scope.search("zeppelin hangar")
    assert hits[0].memory.content == novel
    assert hits[0].vector_score > 0  # found by the vector index, not only by keywords


# -- the same results on every backend, with the real model ----------------------------------------


@pytest.mark.parametrize(
    "embedder", [HashingEmbedder(), MiniLMEmbedder()], ids=["hashing", "minilm"]
)
@pytest.mark.parametrize(
    ("texts", "problem"),
    [
        ("one string", "not a single string"),
        (["fine", 7], r"texts\[1\]: must be a string, not int"),
        (["fine", "\ud800"], r"texts\[1\]: is not valid Unicode"),
        ([b"bytes"], r"texts\[0\]: must be a string, not bytes"),
    ],
)
def test_an_embedder_names_bad_input(embedder: object, texts: object, problem: str) -> None:
    with pytest.raises(InvalidInputError, match=problem):
        embedder.embed(texts)  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("options", "problem"),
    [
        ({"batch_size": 0}, "batch_size: must be an integer from 1 to 4096, not 0"),
        ({"batch_size": "8"}, "batch_size: must be an integer from 1 to 4096, not '8'"),
        ({"threads": True}, "threads: must be an integer from 1 to 256, not True"),
        ({"threads": 10**9}, "threads: must be an integer from 1 to 256"),
    ],
)
def test_minilm_refuses_bad_options(options: dict[str, object], problem: str) -> None:
    with pytest.raises(InvalidInputError, match=re.escape(problem)):
        MiniLMEmbedder(**options)  # type: ignore[arg-type]


def test_the_built_graph_embeds_as_sentence_transformers_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sentence_transformers import SentenceTransformer

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    texts = ["", "a", "word " * 400, "naïve café 東京 🙂", *NOTES, *(n.upper() for n in NOTES)]
    ours = MiniLMEmbedder(batch_size=4).embed(texts)  # several batches, sorted by length
    (graph,) = tmp_path.glob("tiered-memory/*.onnx")
    reference = SentenceTransformer(MiniLMEmbedder.model_path(), device="cpu").encode(
        texts, normalize_embeddings=True
    )
    assert ours.dtype == np.float32 and ours.shape == (len(texts), 384)
    np.testing.assert_allclose(ours, reference, rtol=0, atol=1e-6)
    built_at = graph.stat().st_mtime_ns
    MiniLMEmbedder().embed(["a second embedder reads the same graph"])
    assert graph.stat().st_mtime_ns == built_at


@pytest.fixture(scope="module")
def minilm() -> MiniLMEmbedder:
    return MiniLMEmbedder()


@pytest.fixture
def stores(
    url_for: Callable[[str], str], minilm: MiniLMEmbedder
) -> Iterator[Callable[[str], Memory]]:
    opened: list[Memory] = []

    def open_backend(backend: str) -> Memory:
        store = Memory.open(url_for(backend), embedder=minilm)
        opened.append(store)
        return store

    yield open_backend
    for store in opened:
        store.close()


def test_every_backend_returns_the_same_results(
    stores: Callable[[str], Memory], all_backends: list[str], user: str
) -> None:
    queries = [
        "which hot beverage is preferred later in the day?",
        "when do we deploy?",
        "who checks payment code",
        "database upgrade",
        "food allergy",
    ]
    results = {}
    for backend in all_backends:
        scope = stores(backend).scope(user, "planner", "s1")
        scope.add_many(NOTES)
        results[backend] = [
            [(hit.memory.content, hit.score) for hit in scope.search(query, limit=4)]
            for query in queries
        ]
    assert results["sqlite-memory"] == results["sqlite-file"]
    assert results["postgresql"] == results["sqlite-file"]
    assert results["postgresql-pgvector"] == results["sqlite-file"]
    # The real model finds paraphrases.
    assert results["sqlite-file"][0][0][0] == NOTES[0]
    assert results["sqlite-file"][4][0][0] == NOTES[4]


# -- pgvector: the HNSW index in the database, and the fallback without it -----------------------


@pytest.mark.parametrize(
    ("backend", "in_database"),
    [("postgresql-pgvector", True), ("postgresql", False), ("sqlite-file", False)],
)
def test_vector_search_runs_in_the_database_only_where_pgvector_is(
    backend: str, in_database: bool, url_for: Callable[[str], str], user: str
) -> None:
    with Memory.open(url_for(backend), embedder=HashingEmbedder()) as store:
        scope = store.scope(user, "planner", "s1")
        scope.add_many(NOTES)
        assert scope.search("peanuts allergy")[0].memory.content == NOTES[4]
        assert store._retriever._in_database is in_database
        # The in-process index holds vectors only where the database does not.
        assert (store._retriever.index_bytes() == 0) is in_database


def test_pgvector_column_is_filled_exactly_by_every_writer(
    url_for: Callable[[str], str], user: str
) -> None:
    with Memory.open(url_for("postgresql-pgvector"), embedder=HashingEmbedder()) as store:
        scope = store.scope(user, "planner", "s1")
        first = scope.add("written before the index existed")  # back-filled by prepare
        scope.search("index")
        second = scope.add("written after the trigger existed")
        scope.update(second.id, version=1, content="rewritten content, new vector")
        with store.engine.connect() as connection:
            rows = connection.execute(
                sa.text(
                    "SELECT memory_id, vector, embedding::text FROM memory_embeddings "
                    "WHERE memory_id IN (:a, :b) ORDER BY memory_id"
                ),
                {"a": first.id, "b": second.id},
            ).all()
            # A handful of rows is cheaper to sort than to walk a graph: ask for the index.
            connection.execute(sa.text("SET enable_sort = off"))
            plan = "\n".join(
                row[0]
                for row in connection.execute(
                    sa.text(
                        "EXPLAIN SELECT memory_id FROM memory_embeddings "
                        "WHERE model = 'hashing-64' ORDER BY embedding::vector(64) "
                        "<=> CAST(:q AS vector(64)) LIMIT 5"
                    ),
                    {"q": "[" + ",".join(["0.125"] * 64) + "]"},
                )
            )
    assert [row.memory_id for row in rows] == [first.id, second.id]
    for row in rows:
        decoded = np.array(row.embedding.strip("[]").split(","), dtype=np.float32)
        assert np.array_equal(decoded, np.frombuffer(row.vector, dtype=np.float32))
    assert "ix_memory_embeddings_hnsw_" in plan  # the HNSW index answers ORDER BY ... LIMIT
