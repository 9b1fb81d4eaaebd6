"""Context injection, tiered compaction and session resumption."""

from __future__ import annotations

import functools
import time
import uuid
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from memory import (
    HashingEmbedder,
    InvalidInputError,
    Memory,
    NotFoundError,
    Scope,
    SessionExpiredError,
)
from memory.inject import InjectedContext
from memory.search.embeddings import (
    TokenCounter,
    WordPieceCounter,
    approximate_token_count,
    word_piece_counter,
)


@pytest.fixture
def memory(search_memory: Memory) -> Memory:
    """Every test here runs on each search backend, PostgreSQL with pgvector included."""
    return search_memory


def fill(scope: Scope, working: int = 12) -> None:
    scope.save_state({"step": "implement", "open_files": ["export.py"]})
    scope.set_preference("answer_style", "concise")
    scope.record_pattern(
        "python",
        "retry-backoff",
        "for attempt in range(5): ...",
        description="retry flaky network calls",
        tags=["network"],
    )
    scope.add_many(
        [f"note {i}: the export retries network calls {i} times" for i in range(working)]
    )
    scope.add("Exports of large accounts time out after 30 seconds", tier="episodic")
    scope.add("Network export changes ship only behind a feature flag", tier="semantic")


def test_inject_returns_every_section_with_sources(memory: Memory, user: str) -> None:
    scope = memory.scope(user, "planner", "s1")
    fill(scope, working=3)
    context = scope.inject("how do exports handle network timeouts?", budget_tokens=1000)

    assert not context.overflow and context.left_out == 0
    assert [item.source for item in context.section("state")] == ["state:s1#1"]
    assert [item.source for item in context.section("preferences")] == ["preference:answer_style"]
    assert len(context.section("working")) == 3
    assert {item.source.split()[-1] for item in context.section("relevant")} == {
        "(episodic)",
        "(semantic)",
    }
    assert context.section("patterns")[0].text.startswith("python/retry-backoff")
    assert context.text.startswith("## Session state\n- {")
    assert context.tokens <= 1000
    assert context.tokens == memory._injector.count_tokens(context.text)


def test_inject_never_includes_other_scopes(memory: Memory, user: str) -> None:
    memory.scope(user, "coder", "s1").add("coder's private note about exports")
    fill(memory.scope(user + "-x", "planner", "s1"))
    scope = memory.scope(user, "planner", "s1")
    scope.add("planner's own note about exports")
    context = scope.inject("exports network", budget_tokens=2000)

    memory_items = [i for i in context.items if i.source.startswith("memory:")]
    assert [i.text for i in memory_items] == ["planner's own note about exports"]
    # State, preferences and code patterns of another user never show.
    assert [item.section for item in context.items] == ["working"]


def test_overflow_is_counted_and_compacts_old_working_memory(memory: Memory, user: str) -> None:
    scope = memory.scope(user, "planner", "s1")
    fill(scope, working=12)
    before = {item.id for item in scope.list(tier="working", limit=1000)}
    counted = memory.injection_stats  # the counts are the process' metrics: compare deltas
    context = scope.inject("network retries", budget_tokens=60)

    assert context.overflow and context.tokens <= 60
    assert memory.injection_stats.overflows - counted.overflows >= 1
    assert memory.injection_stats.compactions - counted.compactions == 1
    assert len(context.compacted) == 12 - 5
    remaining = {item.id for item in scope.list(tier="working", limit=1000)}
    summaries = [m for m in scope.list(tier="episodic") if "consolidated_from" in m.metadata]
    assert len(summaries) == 1
    assert remaining | set(summaries[0].metadata["consolidated_from"]) == before
    assert set(summaries[0].metadata["consolidated_from"]) == set(context.compacted)


def test_compacting_a_long_session_writes_one_summary_per_run_of_ids(
    memory: Memory, user: str
) -> None:
    # Hundreds of old working memories do not fit in one summary's consolidated_from (a
    # metadata value is at most 1 KiB of JSON); each run of ids gets its own summary.
    scope = memory.scope(user, "planner", "s1")
    scope.add_many(
        [f"step {n}: retried the network call to the billing service" for n in range(300)]
    )
    before = {item.id for item in scope.list(tier="working", limit=1000)}

    context = scope.inject("network retries", budget_tokens=60)

    summaries = [m for m in scope.list(tier="episodic") if "consolidated_from" in m.metadata]
    assert len(summaries) >= 2
    referenced = [i for m in summaries for i in m.metadata["consolidated_from"]]
    assert len(referenced) == len(set(referenced)) == len(context.compacted) == 300 - 5
    remaining = {item.id for item in scope.list(tier="working", limit=1000)}
    assert remaining | set(referenced) == before and not remaining & set(referenced)


def test_often_used_episodic_memories_are_promoted(memory: Memory, user: str) -> None:
    scope = memory.scope(user, "planner", "s1")
    episodic = scope.add("Exports of large accounts time out after 30 seconds", tier="episodic")
    memory.scope(user, "planner", "s2").add_many([f"filler {i} about exports" for i in range(30)])
    counted = memory.injection_stats
    for budget in range(40, 47):  # distinct budgets: no cache hits, each one is a use
        scope.inject("large account export timeout", budget_tokens=budget)
    assert scope.get(episodic.id).tier == "semantic"
    assert memory.injection_stats.promotions - counted.promotions >= 1


def test_results_are_cached_until_the_data_changes(memory: Memory, user: str) -> None:
    scope = memory.scope(user, "planner", "s1")
    fill(scope, working=2)
    counted = memory.injection_stats
    first = scope.inject("exports", budget_tokens=500)
    assert scope.inject("exports", budget_tokens=500) is first
    assert memory.injection_stats.cache_hits - counted.cache_hits == 1
    assert memory.injection_stats.cache_misses - counted.cache_misses == 1
    scope.add("a new fact about exports")
    assert scope.inject("exports", budget_tokens=500) is not first


def test_a_settled_inject_reads_the_version_and_searches_and_writes_nothing(
    memory: Memory, user: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    scope = memory.scope(user, "planner", "s1")
    fill(scope, working=12)
    scope.inject("network retries", budget_tokens=60)  # compacts the old working memory
    scope.inject("export timeouts", budget_tokens=60)  # finds nothing more to compact
    db = memory._store.db
    calls: list[str] = []
    for kind in ("read", "write"):
        monkeypatch.setattr(db, kind, _counting(getattr(db, kind), kind, calls))

    context = scope.inject("large accounts", budget_tokens=60)

    assert context.overflow
    # The data version, then the search: sections come from the cache, the uses are
    # written later, and there is nothing to compact or promote.
    assert calls == ["read", "read"]


def _counting(method: Any, kind: str, calls: list[str]) -> Any:
    def counted(operation: Any) -> Any:
        calls.append(kind)
        return method(operation)

    return counted


def test_uses_are_written_in_batches_and_none_is_lost(memory: Memory, user: str) -> None:
    scope = memory.scope(user, "planner", "s1")
    noted = scope.add("the export retries network calls three times")
    budgets = range(100, 106)  # distinct budgets: no cache hits, each one is a use
    for budget in budgets:
        assert noted.id in injected_ids(scope.inject("export retries", budget_tokens=budget))
    memory._injector.flush()
    stored = memory.scope(user, "planner").list(limit=10)
    assert [(m.id, m.access_count) for m in stored] == [(noted.id, len(budgets))]
    assert stored[0].last_accessed_at is not None


def test_uses_not_written_yet_still_count_towards_a_promotion(memory: Memory, user: str) -> None:
    scope = memory.scope(user, "planner", "s1")
    episodic = scope.add("Exports of large accounts time out after 30 seconds", tier="episodic")
    memory.scope(user, "planner", "s2").add_many([f"filler {i} about exports" for i in range(30)])
    promoted: list[int] = []
    for budget in range(40, 47):
        promoted += scope.inject("large account export timeout", budget_tokens=budget).promoted
    # Used five times before (none written yet: the batch waits a second): the sixth inject
    # promotes it, as if every use had been written at once.
    assert promoted == [episodic.id]
    assert memory.scope(user, "planner").list(tier="semantic")[0].id == episodic.id


def test_cached_sections_follow_local_writes_and_expiry(memory: Memory, user: str) -> None:
    scope = memory.scope(user, "planner", "s1")
    fill(scope, working=2)
    assert scope.inject("exports", budget_tokens=500).section("preferences")
    scope.set_preference("tone", "direct")
    sources = [i.source for i in scope.inject("retries", budget_tokens=500).items]
    assert "preference:tone" in sources
    scope.save_state({"step": "review"}, ttl=timedelta(seconds=1))
    assert scope.inject("network", budget_tokens=500).section("state")
    time.sleep(1.1)
    assert not scope.inject("network calls", budget_tokens=500).section("state")


def test_another_process_write_reaches_the_next_inject(tmp_path: Path, user: str) -> None:
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    with (
        Memory.open(url, embedder=HashingEmbedder()) as here,
        Memory.open(url, embedder=HashingEmbedder()) as there,
    ):
        scope = here.scope(user, "planner", "s1")
        fill(scope, working=2)
        first = scope.inject("exports", budget_tokens=500)
        added = there.scope(user, "planner", "s1").add("a new working note from elsewhere")
        assert added.id not in injected_ids(first)
        assert added.id in injected_ids(scope.inject("other question", budget_tokens=500))


def test_logging_a_shared_read_leaves_the_cache_alone(memory: Memory, user: str) -> None:
    planner = memory.scope(user, "planner", "s1")
    note = planner.add("the invoice export retries network calls", tier="episodic")
    planner.share(memory_id=note.id, agents=["coder"])
    coder = memory.scope(user, "coder", "s2")

    first = coder.inject("invoice export", budget_tokens=500)
    assert note.id in injected_ids(first)
    # Each call logs a memory.read of the planner's note; a read changes no context.
    assert coder.inject("invoice export", budget_tokens=500) is first
    with memory.engine.connect() as connection:
        reads = connection.execute(
            sa.text(
                "SELECT count(*) FROM memory_events "
                "WHERE operation = 'memory.read' AND user_id = :user"
            ),
            {"user": user},
        ).scalar()
    assert reads == 2


def injected_ids(context: InjectedContext) -> set[int]:
    return {
        int(item.source.split(":")[1].split()[0])
        for item in context.items
        if item.source.startswith("memory:")
    }


@pytest.mark.parametrize("budget", [0, 15, 10**9])
def test_inject_rejects_bad_budgets(memory: Memory, user: str, budget: int) -> None:
    with pytest.raises(InvalidInputError, match="budget_tokens"):
        memory.scope(user, "planner", "s1").inject("x", budget_tokens=budget)


# -- properties (SQLite in memory: the logic, not the backend, is under test) ---------------------


@pytest.fixture(scope="module")
def store() -> Memory:
    return Memory.open("sqlite://", embedder=HashingEmbedder(), token_counter=word_piece_counter())


words = st.sampled_from(
    "export network retry timeout billing invoice ada bob flag deploy tuesday peanuts "
    "postgres staging account large small quickly über naïve 数据 🚀".split()
)
texts = st.lists(words, min_size=1, max_size=40).map(" ".join)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    contents=st.lists(texts, min_size=1, max_size=25),
    query=texts,
    budget=st.integers(min_value=16, max_value=300),
)
def test_injected_text_never_exceeds_the_budget(
    store: Memory, contents: list[str], query: str, budget: int
) -> None:
    user = f"prop-{uuid.uuid4().hex[:8]}"
    scope = store.scope(user, "planner", "s1")
    scope.save_state({"notes": contents[:3]})
    scope.set_preference("style", query)
    scope.add_many(contents)
    context = scope.inject(query, budget_tokens=budget)

    assert store._injector.count_tokens(context.text) == context.tokens <= budget
    for item in context.items:
        if item.source.startswith("memory:"):
            memory_id = int(item.source.split(":")[1].split()[0])
            record = scope.get(memory_id)  # raises if it is not in this scope
            assert record.user_id == user and record.agent_id == "planner"


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    contents=st.lists(texts, min_size=2, max_size=40, unique=True),
    budgets=st.lists(st.integers(min_value=16, max_value=120), min_size=1, max_size=4),
)
def test_compaction_loses_no_memory_id(
    store: Memory, contents: list[str], budgets: list[int]
) -> None:
    user = f"prop-{uuid.uuid4().hex[:8]}"
    scope = store.scope(user, "planner", "s1")
    original = {record.id for record in scope.add_many(contents)}
    for budget in budgets:
        scope.inject(contents[0], budget_tokens=budget)

    everything = scope.list(limit=1000)
    kept = {record.id for record in everything}
    referenced = {
        memory_id
        for record in everything
        for memory_id in record.metadata.get("consolidated_from", [])
    }
    assert original <= kept | referenced


@settings(max_examples=300, deadline=None)
@given(
    lines=st.lists(
        st.text(max_size=80)
        | st.text(st.characters(min_codepoint=0, max_codepoint=127), max_size=120)
        | st.sampled_from(["[CLS] x", "a[MASK]b", "[PAD]", "naïve über 数据 🚀"]),
        min_size=1,
        max_size=6,
    )
)
def test_the_word_piece_counter_is_the_tokenizer_and_counts_lines_additively(
    lines: list[str],
) -> None:
    # Injection counts each line once and never the joined text (``additive``): these are
    # the facts that makes exact, for any text, ASCII fast path included.
    count = counter()
    assert isinstance(count, WordPieceCounter) and count.additive
    for line in lines:
        assert count(line) == count.encoded(line)
    assert count("\n".join(lines)) == count.encoded("\n".join(lines)) == sum(map(count, lines))


def test_a_counter_that_is_not_additive_gets_the_whole_text_checked(user: str) -> None:
    # approximate_token_count charges each newline: the lines' costs do not add up to the
    # text's, so the rendered text is counted as a whole and trimmed until it fits.
    with Memory.open(
        "sqlite://", embedder=HashingEmbedder(), token_counter=approximate_token_count
    ) as store:
        scope = store.scope(user, "planner", "s1")
        fill(scope, working=12)
        for budget in (20, 40, 60, 200):
            context = scope.inject(f"network retries {budget}", budget_tokens=budget)
            assert approximate_token_count(context.text) == context.tokens <= budget
            assert context.items


@functools.cache
def counter() -> TokenCounter:
    return word_piece_counter()


def test_the_approximate_counter_charges_a_token_per_four_characters_of_a_word() -> None:
    assert approximate_token_count("one two three") == 4
    assert approximate_token_count("internationalisation") == 5


# -- resumption -----------------------------------------------------------------------------------


def test_resume_restores_state_and_working_memory(memory: Memory, user: str) -> None:
    scope = memory.scope(user, "planner", "s1")
    fill(scope, working=3)
    counted = memory.injection_stats
    resumed = memory.scope(user, "coder").resume("s1")

    assert resumed.checkpoint.state == {"step": "implement", "open_files": ["export.py"]}
    # Working memory is the agent's own: the coder has none in s1, the planner has three.
    assert resumed.working_memory == ()
    assert len(scope.resume().working_memory) == 3
    stats = memory.injection_stats
    assert stats.resumption_attempts - counted.resumption_attempts == 2
    assert stats.resumption_successes - counted.resumption_successes == 2


def test_resume_refuses_another_users_or_an_expired_session(memory: Memory, user: str) -> None:
    memory.scope(user, "planner", "s1").save_state({"step": 1})
    counted = memory.injection_stats
    with pytest.raises(NotFoundError, match="no saved state for this user"):
        memory.scope(user + "-x", "planner").resume("s1")
    with memory.engine.begin() as connection:
        connection.execute(
            sa.text("UPDATE session_state SET expires_at = :past WHERE user_id = :user"),
            {"past": datetime(2000, 1, 1), "user": user},
        )
    with pytest.raises(SessionExpiredError, match="expired at 2000-01-01"):
        memory.scope(user, "planner").resume("s1")
    with pytest.raises(InvalidInputError, match="session"):
        memory.scope(user, "planner").resume()
    stats = memory.injection_stats
    assert stats.resumption_attempts - counted.resumption_attempts == 2
    assert stats.resumption_successes - counted.resumption_successes == 0
