"""The memory behaviour behind each rollout flag, on and off, on every backend.

Every store here gets an evaluator over an in-memory provider that the test switches, read
on every evaluation (``refresh_interval=0``), so a switch applies to the very next call;
the environment is ignored. The default evaluator (the store's own database) is tested at
the end, through the database provider an operator writes to.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import pytest
from click.testing import CliRunner

from flags import (
    BUILTIN_FLAGS,
    USE_CROSS_AGENT_SHARING,
    USE_ENHANCED_INJECTION,
    USE_HIERARCHICAL_TIERS,
    FlagEvaluator,
    InMemoryFlagProvider,
    normalized_hash,
)
from memory import HashingEmbedder, InvalidInputError, Memory, Scope
from memory.cli import main
from memory.ops import DatabaseFlagProvider, RetentionPolicy, cleanup, create_engine, upgrade
from tests.stores import upgraded_from_phase_1

pytestmark = pytest.mark.flags_as_configured

BACKENDS = ["sqlite-file", "sqlite-memory", "postgresql"]


class Switches:
    """The three rollout flags of one store, switched by the test."""

    def __init__(self) -> None:
        self.provider = InMemoryFlagProvider(BUILTIN_FLAGS.values())
        self.evaluator = FlagEvaluator(self.provider, refresh_interval=0, environ={})

    def set(self, name: str, rollout: int, **changes: object) -> None:
        self.provider.set(dataclasses.replace(BUILTIN_FLAGS[name], rollout=rollout, **changes))  # type: ignore[arg-type]

    def on(self, *names: str) -> None:
        for name in names:
            self.set(name, 100)

    def off(self, *names: str) -> None:
        for name in names:
            self.set(name, 0)


@pytest.fixture
def switches() -> Switches:
    return Switches()


@pytest.fixture(params=BACKENDS)
def store(
    request: pytest.FixtureRequest, url_for: Callable[[str], str], switches: Switches
) -> Iterator[Memory]:
    with Memory.open(
        url_for(request.param), embedder=HashingEmbedder(), flags=switches.evaluator
    ) as opened:
        yield opened


def fill(scope: Scope, working: int = 12) -> None:
    scope.save_state({"step": "implement"})
    scope.set_preference("answer_style", "concise")
    scope.add_many(
        [f"note {i}: the export retries network calls {i} times" for i in range(working)]
    )


# -- USE_HIERARCHICAL_TIERS ---------------------------------------------------------------------


def test_tiers_off_is_one_flat_tier_and_on_brings_tiers_back_at_the_next_call(
    store: Memory, switches: Switches, user: str
) -> None:
    scope = store.scope(user, "planner", "s1")
    flat = scope.add("Ada exports invoices monthly", tier="semantic")
    (batch,) = scope.add_many([{"content": "Bob reviews the export code", "tier": "episodic"}])
    assert (flat.tier, batch.tier) == ("working", "working")
    # Tier filters do not apply to a flat tier: everything is in it.
    assert {m.id for m in scope.list(tier="semantic")} == {flat.id, batch.id}
    assert {h.memory.id for h in scope.search("export", tiers=["episodic"])} == {
        flat.id,
        batch.id,
    }
    updated = scope.update(flat.id, version=flat.version, tier="semantic", importance=0.9)
    assert (updated.tier, updated.importance) == ("working", 0.9)
    with pytest.raises(InvalidInputError, match="tier"):
        scope.add("bad input is refused in any mode", tier="archive")  # type: ignore[arg-type]

    switches.on(USE_HIERARCHICAL_TIERS)
    tiered = scope.add("Exports must finish within 30 seconds", tier="semantic")
    assert tiered.tier == "semantic"
    assert [m.id for m in scope.list(tier="semantic")] == [tiered.id]
    assert [h.memory.id for h in scope.search("export", tiers=["semantic"])] == [tiered.id]
    moved = scope.update(flat.id, version=updated.version, tier="episodic")
    assert moved.tier == "episodic"


def test_tiers_off_gives_no_tier_a_ranking_bonus(
    store: Memory, switches: Switches, user: str
) -> None:
    switches.on(USE_HIERARCHICAL_TIERS)
    scope = store.scope(user, "planner")
    working = scope.add("the export job retries", tier="working")
    semantic = scope.add("the export job retries!", tier="semantic")
    tiered = {h.memory.id: h.score for h in scope.search("export job retries")}
    switches.off(USE_HIERARCHICAL_TIERS)
    flat = {h.memory.id: h.score for h in scope.search("export job retries")}

    bonus = store._retriever.weights.tier["semantic"]
    assert bonus > 0
    assert flat[semantic.id] == pytest.approx(tiered[semantic.id] - bonus, abs=2e-6)
    assert flat[working.id] == pytest.approx(tiered[working.id], abs=2e-6)


def test_tiers_off_injection_counts_the_overflow_but_never_compacts(
    store: Memory, switches: Switches, user: str
) -> None:
    switches.on(USE_ENHANCED_INJECTION)
    scope = store.scope(user, "planner", "s1")
    fill(scope)
    before = {m.id: m.tier for m in scope.list(limit=1000)}
    overflows = store.injection_stats.overflows
    context = scope.inject("network retries", budget_tokens=60)

    assert context.overflow and context.tokens <= 60
    assert store.injection_stats.overflows - overflows >= 1
    assert (context.compacted, context.promoted) == ((), ())
    assert {m.id: m.tier for m in scope.list(limit=1000)} == before
    # "Recent working memory" is the session's newest memories, whatever tier they had.
    assert context.section("working")

    switches.on(USE_HIERARCHICAL_TIERS)
    compacting = scope.inject("network retries", budget_tokens=61)
    assert len(compacting.compacted) == 12 - 5


def test_tiers_off_retention_keeps_flat_memories_and_consolidates_tiered_ones(
    store: Memory, switches: Switches, user: str
) -> None:
    flat = store.scope(user, "planner", "s-flat")
    flat.add_many([f"flat note {i}" for i in range(3)])
    switches.set(USE_HIERARCHICAL_TIERS, 0, allowed_agents=("coder",))
    tiered = store.scope(user, "coder", "s-tiered")
    tiered.add_many([f"tiered note {i}" for i in range(3)])
    later = datetime.now(UTC) + timedelta(days=2)

    report = cleanup(store, RetentionPolicy(), now=later)

    assert report.counts["working_memories"] == 3 and report.counts["summaries"] == 1
    assert sorted(m.content for m in flat.list()) == [f"flat note {i}" for i in range(3)]
    (summary,) = tiered.list()
    assert summary.tier == "episodic" and len(summary.metadata["consolidated_from"]) == 3


# -- USE_ENHANCED_INJECTION ---------------------------------------------------------------------


def test_injection_off_returns_an_empty_context_marked_disabled(
    store: Memory, switches: Switches, user: str
) -> None:
    switches.on(USE_HIERARCHICAL_TIERS)
    scope = store.scope(user, "planner", "s1")
    fill(scope)

    off = scope.inject("network retries", budget_tokens=200)
    assert (off.items, off.text, off.tokens, off.budget, off.overflow) == ((), "", 0, 200, False)
    assert off.disabled_by == USE_ENHANCED_INJECTION
    with pytest.raises(InvalidInputError, match="text"):
        scope.inject("   ")  # bad input is refused whether the flag is on or not

    switches.on(USE_ENHANCED_INJECTION)
    on = scope.inject("network retries", budget_tokens=200)
    assert on.disabled_by is None and on.section("state") and on.section("working")
    assert on.tokens > 0


def test_flags_are_decided_per_user_session_and_agent(store: Memory, switches: Switches) -> None:
    switches.set(USE_ENHANCED_INJECTION, 50, allowed_agents=("canary",))
    buckets = {f"user-{i}": normalized_hash(USE_ENHANCED_INJECTION, f"user-{i}") for i in range(50)}
    inside = next(u for u, b in buckets.items() if b <= 50)
    outside = next(u for u, b in buckets.items() if b > 50)

    assert store.scope(inside, "planner").inject("hello").disabled_by is None
    assert store.scope(outside, "planner").inject("hello").disabled_by == USE_ENHANCED_INJECTION
    assert store.scope(outside, "canary").inject("hello").disabled_by is None
    for session in ("s1", "s2", "s3"):  # user stickiness: every session of a user agrees
        assert store.scope(inside, "planner", session).inject("hello").disabled_by is None


# -- USE_CROSS_AGENT_SHARING --------------------------------------------------------------------


def test_flag_enabled_applies_parent_lists_and_session_stickiness(
    store: Memory, switches: Switches, user: str
) -> None:
    switches.on(USE_CROSS_AGENT_SHARING)
    scope = store.scope(user, "planner", "s1")
    assert not store.flag_enabled(USE_CROSS_AGENT_SHARING, scope)  # its parent is off

    switches.on(USE_ENHANCED_INJECTION)
    assert store.flag_enabled(USE_CROSS_AGENT_SHARING, scope)
    switches.set(USE_CROSS_AGENT_SHARING, 100, denied_agents=("planner",))
    assert not store.flag_enabled(USE_CROSS_AGENT_SHARING, scope)
    assert store.flag_enabled(USE_CROSS_AGENT_SHARING, store.scope(user, "coder", "s1"))
    assert not store.flag_enabled("USE_NOTHING", scope)  # unknown: off, never raises

    switches.set(USE_CROSS_AGENT_SHARING, 50)
    sessions = [f"s-{i}" for i in range(40)]
    by_session = {
        s: store.flag_enabled(USE_CROSS_AGENT_SHARING, store.scope(user, "coder", s))
        for s in sessions
    }
    expected = {s: normalized_hash(USE_CROSS_AGENT_SHARING, s) <= 50 for s in sessions}
    assert by_session == expected and len(set(by_session.values())) == 2


# -- the default evaluator: the store's own database --------------------------------------------


def test_the_default_evaluator_reads_the_flags_an_operator_sets_in_the_database(
    url_for: Callable[[str], str], monkeypatch: pytest.MonkeyPatch, user: str
) -> None:
    for name in BUILTIN_FLAGS:
        monkeypatch.delenv(name, raising=False)
    with Memory.open(url_for("sqlite-file"), embedder=HashingEmbedder()) as store:
        scope = store.scope(user, "planner", "s1")
        # A new store starts with every feature on; the operator switches them off.
        assert scope.inject("invoices").disabled_by is None
        operator = DatabaseFlagProvider(store.engine)
        operator.reset(actor="ops", reason="start the rollout from zero")
        store.flags.refresh()
        assert scope.add("Ada exports invoices", tier="semantic").tier == "working"
        assert scope.inject("invoices").disabled_by == USE_ENHANCED_INJECTION

        operator.set_flag(USE_ENHANCED_INJECTION, on=True, actor="ops")
        operator.set_flag(USE_HIERARCHICAL_TIERS, on=True, actor="ops")
        # Cached until the next refresh (10 s by default); refresh() reads it now.
        assert scope.inject("invoices").disabled_by == USE_ENHANCED_INJECTION
        store.flags.refresh()
        assert scope.inject("invoices").disabled_by is None
        assert scope.add("Exports finish in 30 s", tier="semantic").tier == "semantic"

        operator.reset(actor="ops", reason="rollback")
        store.flags.refresh()
        assert scope.inject("invoices").disabled_by == USE_ENHANCED_INJECTION


def test_a_bad_flag_environment_value_fails_at_open(
    url_for: Callable[[str], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(USE_ENHANCED_INJECTION, "maybe")
    with pytest.raises(InvalidInputError, match="USE_ENHANCED_INJECTION='maybe'"):
        Memory.open(url_for("sqlite-file"), embedder=HashingEmbedder())


def test_memctl_inject_says_when_injection_is_off(
    url_for: Callable[[str], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in BUILTIN_FLAGS:
        monkeypatch.delenv(name, raising=False)
    url = upgraded_from_phase_1(url_for("sqlite-file"))
    runner = CliRunner()
    arguments = ["--database-url", url, "inject", "invoices", "--user", "ada", "--session", "s1"]
    off = runner.invoke(main, arguments)
    assert off.exit_code == 0, off.output
    assert off.output == (
        "context injection is off for this scope (USE_ENHANCED_INJECTION); see: memctl flags "
        "explain USE_ENHANCED_INJECTION --user ada --agent memctl --session s1\n"
    )
    assert json.loads(runner.invoke(main, [*arguments, "--json"]).output)["disabled_by"] == (
        USE_ENHANCED_INJECTION
    )
    switched = runner.invoke(
        main, ["--database-url", url, "flags", "set", USE_ENHANCED_INJECTION, "--on", "--force"]
    )
    assert switched.exit_code == 0, switched.output
    on = runner.invoke(main, arguments)
    assert on.exit_code == 0 and "-- 0/512 tokens" in on.output


def test_a_store_below_revision_0007_uses_the_defaults_without_a_failing_provider(
    url_for: Callable[[str], str],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    for name in BUILTIN_FLAGS:
        monkeypatch.delenv(name, raising=False)
    url = url_for("sqlite-file")
    engine = create_engine(url)
    upgrade(engine, "0003")  # Phase 1, rolled back: the entity graph keeps working
    engine.dispose()
    with caplog.at_level(logging.WARNING), Memory.open(url, embedder=HashingEmbedder()) as store:
        assert store.graph("ada").create_entities([{"name": "Ada", "entityType": "person"}])
        assert [state["source"] for state in store.flags.export_state()] == ["registry"] * len(
            BUILTIN_FLAGS
        )
        assert not store.flags.stale
    assert [r.getMessage() for r in caplog.records if r.name == "flags"] == []
    monkeypatch.setenv(USE_HIERARCHICAL_TIERS, "on")  # the environment still decides there
    with Memory.open(url, embedder=HashingEmbedder()) as store:
        assert store.flags.explain(USE_HIERARCHICAL_TIERS).enabled


def test_resume_brings_back_every_memory_of_the_session_when_tiers_are_off(
    store: Memory, switches: Switches, user: str
) -> None:
    switches.on(USE_HIERARCHICAL_TIERS)
    scope = store.scope(user, "planner", "s1")
    scope.save_state({"step": "review"})
    working = scope.add("the export retries three times", tier="working")
    semantic = scope.add("exports run nightly", tier="semantic")
    assert [m.id for m in scope.resume().working_memory] == [working.id]

    switches.off(USE_HIERARCHICAL_TIERS)
    assert [m.id for m in scope.resume().working_memory] == [semantic.id, working.id]
