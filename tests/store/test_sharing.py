"""Sharing: grants of a memory, a tag or a tier to agents and teams; visibility on every read
path (get, list, search, injection, resumption); roles; the flag that gates it all.

Every test runs on SQLite (file and :memory:) and PostgreSQL. The stateful test drives random
adds, shares, revokes and reads by several agents of two users against a model of who may see
what, and checks both directions: nothing unpermitted is returned, everything permitted is.
"""

from __future__ import annotations

import dataclasses
import time
import typing
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner, Result
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    rule,
)

from flags import (
    BUILTIN_FLAGS,
    USE_CROSS_AGENT_SHARING,
    FlagEvaluator,
    InMemoryFlagProvider,
)
from memory import (
    HashingEmbedder,
    InvalidInputError,
    Memory,
    MemoryEvent,
    NotFoundError,
    PermissionDeniedError,
    StaleVersionError,
)
from memory.cli import main
from memory.core.types import Tier
from memory.ops import cleanup
from memory.search.keywords import visible_among
from memory.store.sharing import Readable
from memory.store.tables import Base, utcnow
from memory.telemetry import instruments as telemetry

BACKENDS = ["sqlite-file", "sqlite-memory", "postgresql"]


def sharing_flags(on: bool = True, denied: tuple[str, ...] = ()) -> FlagEvaluator:
    """An evaluator with every rollout flag fully on (sharing as asked, with a deny list)."""
    definitions = [
        dataclasses.replace(definition, rollout=100)
        for name, definition in BUILTIN_FLAGS.items()
        if name != USE_CROSS_AGENT_SHARING
    ]
    definitions.append(
        dataclasses.replace(
            BUILTIN_FLAGS[USE_CROSS_AGENT_SHARING],
            rollout=100 if on else 0,
            denied_agents=frozenset(denied),
        )
    )
    return FlagEvaluator(InMemoryFlagProvider(definitions), environ={}, refresh_interval=0)


@pytest.fixture(params=BACKENDS)
def open_store(
    request: pytest.FixtureRequest, url_for: Callable[[str], str]
) -> Iterator[Callable[..., Memory]]:
    """Opens stores on one backend (all on the same database) and closes them afterwards."""
    url = url_for(request.param)
    opened: list[Memory] = []

    def open_(**options: object) -> Memory:
        options.setdefault("flags", sharing_flags())
        store = Memory.open(url, embedder=HashingEmbedder(), **options)  # type: ignore[arg-type]
        opened.append(store)
        return store

    yield open_
    for store in reversed(opened):
        store.close()


@pytest.fixture
def shared(open_store: Callable[..., Memory]) -> Memory:
    """A store (admin role, sharing on) on each backend."""
    return open_store(role="admin")


def ids(records: object) -> set[int]:
    return {record.id for record in records}  # type: ignore[attr-defined]


def hit_ids(hits: object) -> set[int]:
    return {hit.memory.id for hit in hits}  # type: ignore[attr-defined]


def injected_ids(context: object) -> set[int]:
    return {
        int(item.source.split(":")[1].split()[0])
        for item in context.items  # type: ignore[attr-defined]
        if item.source.startswith("memory:")
    }


def test_private_until_shared_then_visible_on_every_read_path(shared: Memory, user: str) -> None:
    planner = shared.scope(user, "planner", "s1")
    coder = shared.scope(user, "coder", "s1")
    reviewer = shared.scope(user, "reviewer", "s1")
    stranger = shared.scope(f"other-{user}", "coder", "s1")
    note = planner.add("the invoice export splits into two jobs", tier="semantic")
    hidden = planner.add("the invoice export secret budget", tier="episodic")

    assert coder.list() == [] and coder.search("invoice export") == []
    with pytest.raises(NotFoundError):
        coder.get(note.id)

    (grant,) = planner.share(memory_id=note.id, agents=["coder"])
    assert (grant.target, grant.grantee, grant.access) == ("memory", "coder", "read")

    assert ids(coder.list()) == {note.id}
    assert hit_ids(coder.search("invoice export", limit=50)) == {note.id}
    assert coder.get(note.id).content == note.content
    assert note.id in injected_ids(coder.inject("invoice export", budget_tokens=2000))
    assert hidden.id not in injected_ids(coder.inject("invoice export", budget_tokens=2000))
    # Neither an agent without a grant nor another user's agent of the same name sees it.
    assert reviewer.list() == [] and reviewer.search("invoice export") == []
    assert stranger.list() == [] and stranger.search("invoice export") == []
    with pytest.raises(NotFoundError):
        stranger.get(note.id)
    # The read by another agent is in the event log.
    with shared.engine.connect() as connection:
        reads = connection.execute(
            sa.text(
                "SELECT agent_id, target FROM memory_events "
                "WHERE operation = 'memory.read' AND user_id = :user"
            ),
            {"user": user},
        ).all()
    assert ("coder", f"memory:{note.id}") in [tuple(row) for row in reads]


def test_tag_and_tier_grants_cover_later_memories_and_teams(shared: Memory, user: str) -> None:
    planner = shared.scope(user, "planner", "s1")
    coder = shared.scope(user, "coder", "s1")
    reviewer = shared.scope(user, "reviewer", "s1")
    planner.share(tag=("ticket", "BILL-311"), agents=["coder"])
    planner.share(tier="semantic", teams=["reviewers"])
    tagged = planner.add("split the export", metadata={"ticket": "BILL-311"})
    untagged = planner.add("lunch at noon", metadata={"ticket": "OTHER-1"})
    semantic = planner.add("the export runs nightly", tier="semantic")

    assert ids(coder.list()) == {tagged.id}
    assert hit_ids(coder.search("export", limit=50)) == {tagged.id}
    # The team has no members yet: the tier grant reaches nobody.
    assert reviewer.list() == []
    shared.set_team(user, "reviewers", ["reviewer"])
    assert ids(reviewer.list()) == {semantic.id}
    assert hit_ids(reviewer.search("export nightly", limit=50)) == {semantic.id}
    assert untagged.id not in ids(coder.list()) | ids(reviewer.list())
    assert shared.teams(user) == {"reviewers": ["reviewer"]}
    shared.set_team(user, "reviewers", [])
    assert reviewer.list() == []


def test_read_write_grants_allow_update_and_read_grants_do_not(shared: Memory, user: str) -> None:
    planner = shared.scope(user, "planner")
    coder = shared.scope(user, "coder")
    note = planner.add("draft plan")
    planner.share(memory_id=note.id, agents=["coder"])
    with pytest.raises(NotFoundError):
        coder.update(note.id, version=note.version, content="coder rewrote it")
    with pytest.raises(NotFoundError):
        coder.delete(note.id)
    planner.share(memory_id=note.id, agents=["coder"], access="write")
    changed = coder.update(note.id, version=note.version, content="coder rewrote it")
    assert (changed.content, changed.agent_id) == ("coder rewrote it", "planner")
    assert changed.version == 2
    with pytest.raises(StaleVersionError):
        coder.update(note.id, version=note.version, importance=0.9)
    assert planner.get(note.id).content == "coder rewrote it"
    # Write access is not ownership: only the owner deletes.
    with pytest.raises(NotFoundError):
        coder.delete(note.id)


def test_the_search_rule_in_python_agrees_with_the_sql_conditions(
    shared: Memory, user: str
) -> None:
    """``Readable.admits`` (candidates tested in Python, ``visible_among``) admits exactly
    the rows that its SQL ``candidates`` condition and the final read's ``predicate`` do,
    and the cached predicate compares expiries with the time each statement runs."""
    planner = shared.scope(user, "planner")
    reviewer = shared.scope(user, "reviewer")
    coder = shared.scope(user, "coder")
    shared.scope(f"other-{user}", "planner").add("another user's export")
    notes = [
        scope.add(f"note {n}", tier=tier, metadata={"ticket": f"T{n % 3}"})
        for n, (scope, tier) in enumerate(
            (scope, tier) for scope in (planner, reviewer, coder) for tier in typing.get_args(Tier)
        )
    ]
    planner.share(memory_id=notes[0].id, agents=["coder"])
    planner.share(tag=("ticket", "T2"), agents=["coder"])
    reviewer.share(tier="semantic", teams=["builders"])
    shared.set_team(user, "builders", ["coder"])
    soon = utcnow() + timedelta(seconds=1.5)
    reviewer.share(memory_id=notes[3].id, agents=["coder"], expires_at=soon)
    retriever = shared._retriever
    owner = coder._reader()
    memories = Base.metadata.tables["memories"]

    def seen(connection: sa.Connection, reader: Readable) -> tuple[set[int], ...]:
        everything = [row[0] for row in connection.execute(sa.text("SELECT id FROM memories"))]
        in_python = set(visible_among(connection, reader, everything))
        by_candidates = set(
            connection.execute(sa.select(memories.c.id).where(reader.candidates)).scalars()
        )
        by_predicate = set(
            connection.execute(sa.select(memories.c.id).where(reader.predicate)).scalars()
        )
        return in_python, by_candidates, by_predicate

    with shared.engine.connect() as connection:
        version = retriever.data_version(connection, user)
        reader = retriever._readers.readable(connection, owner, version)
        in_python, by_candidates, by_predicate = seen(connection, reader)
    # Coder's own (6-8), planner's memory (0) and T2-tagged (2) ones, reviewer's semantic
    # (5, by the team) and the one whose grant expires soon (3).
    expected = {notes[n].id for n in (0, 2, 3, 5, 6, 7, 8)}
    assert in_python == by_candidates == by_predicate == expected
    while utcnow() < soon:
        time.sleep(0.1)
    with shared.engine.connect() as connection:
        # The same cached predicate, run after the expiry, no longer admits the memory.
        assert set(
            connection.execute(sa.select(memories.c.id).where(reader.predicate)).scalars()
        ) == expected - {notes[3].id}
        fresh = retriever._readers.readable(connection, owner, version)
        assert seen(connection, fresh) == (expected - {notes[3].id},) * 3


def test_revoke_and_expiry_end_access_and_cleanup_removes_expired(
    shared: Memory, user: str
) -> None:
    planner = shared.scope(user, "planner")
    coder = shared.scope(user, "coder")
    note = planner.add("shared for a while")
    (grant,) = planner.share(memory_id=note.id, agents=["coder"])
    assert ids(coder.list()) == {note.id}
    with pytest.raises(NotFoundError):
        coder.revoke(grant.id)  # only the agent that made a grant revokes it
    assert planner.revoke(grant.id).id == grant.id
    assert coder.list() == [] and coder.grants(received=True) == []
    with pytest.raises(NotFoundError):
        planner.revoke(grant.id)

    # Other tests' grants share the PostgreSQL database, and some have expired by now:
    # removed first, so that the count below is this test's grant alone.
    cleanup(shared)
    soon = utcnow() + timedelta(seconds=60)
    planner.share(memory_id=note.id, agents=["coder"], expires_at=soon)
    assert ids(coder.list()) == {note.id}
    report = cleanup(shared, now=soon + timedelta(seconds=1))
    assert report.counts["expired_grants"] == 1
    assert planner.grants() == []
    assert coder.list() == []


def test_sharing_flag_off_means_no_cross_agent_read_and_no_failure(
    open_store: Callable[..., Memory], user: str
) -> None:
    before = telemetry.totals().counter(telemetry.CROSS_AGENT_FAILURES)
    store = open_store(flags=sharing_flags(on=False))
    planner = store.scope(user, "planner", "s1")
    coder = store.scope(user, "coder", "s1")
    note = planner.add("the plan, shared while the flag is off", tier="semantic")
    planner.share(memory_id=note.id, agents=["coder"], access="write")
    planner.share(tier="semantic", agents=["coder"])
    assert store.sharing_enabled(user, "coder", "s1") is False

    assert coder.list() == []
    assert coder.search("plan shared flag") == []
    assert note.id not in injected_ids(coder.inject("plan shared flag", budget_tokens=2000))
    with pytest.raises(NotFoundError):
        coder.get(note.id)
    with pytest.raises(NotFoundError):
        coder.update(note.id, version=1, content="changed")
    planner.save_state({"step": 1})
    # With sharing off the planner's session state is not the coder's to resume ...
    with pytest.raises(NotFoundError):
        coder.resume("s1")
    # ... and resuming its own shows none of the planner's memories.
    coder.save_state({"step": 1})
    assert note.id not in ids(coder.resume("s1").working_memory)
    assert telemetry.totals().counter(telemetry.CROSS_AGENT_FAILURES) == before
    assert _reads(store, user) == []
    # The grants are kept: once the flag is on, they apply.
    store.flags = sharing_flags()
    assert ids(coder.list()) == {note.id}


def _reads(store: Memory, user: str) -> list[tuple[str, str]]:
    """The (reader, target) of every ``memory.read`` event of ``user``, in log order."""
    with store.engine.connect() as connection:
        rows = connection.execute(
            sa.text(
                "SELECT agent_id, target FROM memory_events "
                "WHERE operation = 'memory.read' AND user_id = :user ORDER BY seq"
            ),
            {"user": user},
        ).all()
    return [(row.agent_id, row.target) for row in rows]


def _failures(operation: str) -> float:
    return telemetry.totals().counter(telemetry.CROSS_AGENT_FAILURES, operation=operation)


def test_inject_and_resume_record_the_shared_memories_they_return(
    shared: Memory, user: str
) -> None:
    planner = shared.scope(user, "planner", "s1")
    coder = shared.scope(user, "coder", "s1")
    working = planner.add("the planner's working step for the release", tier="working")
    semantic = planner.add("the release checklist lives in the wiki", tier="semantic")
    own = coder.add("the coder's own release note", tier="working")
    planner.share(tier="working", agents=["coder"])
    planner.share(memory_id=semantic.id, agents=["coder"])
    coder.save_state({"step": "review"})
    assert _reads(shared, user) == []

    context = coder.inject("release checklist", budget_tokens=2000)
    assert {working.id, semantic.id, own.id} <= injected_ids(context)
    assert ids(context.shared_memories) == {working.id, semantic.id}
    expected = {("coder", f"memory:{working.id}"), ("coder", f"memory:{semantic.id}")}
    assert set(_reads(shared, user)) == expected
    # A cached context hands the memories over again: that read is logged too.
    assert coder.inject("release checklist", budget_tokens=2000) == context
    assert len(_reads(shared, user)) == 4

    resumed = coder.resume()
    assert ids(resumed.working_memory) == {working.id, own.id}
    assert _reads(shared, user)[4:] == [("coder", f"memory:{working.id}")]
    # The owner's own reads are not cross-agent reads.
    planner.inject("release checklist", budget_tokens=2000)
    planner.resume()
    assert len(_reads(shared, user)) == 5


def test_denied_and_failed_cross_agent_operations_are_counted(shared: Memory, user: str) -> None:
    if not telemetry.enabled():
        pytest.skip("metrics are disabled in this run")
    planner = shared.scope(user, "planner", "s1")
    coder = shared.scope(user, "coder", "s1")
    note = planner.add("the planner's private plan")
    before = {operation: _failures(operation) for operation in ("read", "write", "share")}

    # No grant: reading or updating another agent's memory is refused, and counted.
    with pytest.raises(NotFoundError):
        coder.get(note.id)
    with pytest.raises(NotFoundError):
        coder.update(note.id, version=note.version, content="rewritten")
    # A read grant does not allow an update.
    planner.share(memory_id=note.id, agents=["coder"])
    with pytest.raises(NotFoundError):
        coder.update(note.id, version=note.version, content="rewritten")
    # Sharing a memory one does not own fails.
    with pytest.raises(NotFoundError, match="only its owner"):
        coder.share(memory_id=note.id, agents=["reviewer"])
    after = {operation: _failures(operation) for operation in before}
    assert {op: after[op] - before[op] for op in before} == {"read": 1, "write": 2, "share": 1}

    # Neither a memory that does not exist, nor one of another user, nor invalid input, is
    # a cross-agent failure; nor is a permitted read.
    stranger = shared.scope(f"other-{user}", "coder", "s1")
    with pytest.raises(NotFoundError):
        coder.get(note.id + 10_000)
    with pytest.raises(NotFoundError):
        stranger.get(note.id)
    with pytest.raises(InvalidInputError):
        planner.share(tier="semantic")
    assert coder.get(note.id).id == note.id
    assert {operation: _failures(operation) for operation in before} == after


def test_a_shared_read_whose_logging_fails_is_counted(
    shared: Memory, user: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not telemetry.enabled():
        pytest.skip("metrics are disabled in this run")
    planner = shared.scope(user, "planner", "s1")
    coder = shared.scope(user, "coder", "s1")
    note = planner.add("shared but unloggable")
    planner.share(memory_id=note.id, agents=["coder"])
    before = _failures("read")

    def broken(*args: object) -> None:
        raise RuntimeError("the event log is unavailable")

    monkeypatch.setattr(shared._store, "record_reads", broken)
    with pytest.raises(RuntimeError):
        coder.list()
    assert _failures("read") == before + 1


def test_agent_deny_list_of_the_flag_keeps_that_agent_out(
    open_store: Callable[..., Memory], user: str
) -> None:
    store = open_store(flags=sharing_flags(denied=("coder",)))
    planner = store.scope(user, "planner")
    note = planner.add("visible to the reviewer only")
    planner.share(memory_id=note.id, agents=["coder", "reviewer"])
    assert store.scope(user, "coder").list() == []
    assert ids(store.scope(user, "reviewer").list()) == {note.id}


def test_admin_operations_need_the_admin_role(open_store: Callable[..., Memory], user: str) -> None:
    agent = open_store()
    agent.scope(user, "planner").add("keep me")
    with pytest.raises(PermissionDeniedError, match="forgetting a user needs the admin role"):
        agent.forget_user(user)
    with pytest.raises(PermissionDeniedError, match="admin"):
        agent.set_team(user, "devs", ["coder"])
    assert isinstance(PermissionDeniedError("x"), PermissionError)
    assert len(agent.scope(user, "planner").list()) == 1
    with pytest.raises(InvalidInputError, match="role"):
        open_store(role="root")


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"agents": ["coder"]}, "exactly one of memory_id, tag or tier"),
        ({"tier": "semantic", "memory_id": 1, "agents": ["coder"]}, "exactly one"),
        ({"tier": "semantic"}, "at least one agent or team"),
        ({"tier": "semantic", "agents": ["planner"]}, "already owns"),
        ({"tier": "legendary", "agents": ["coder"]}, "tier"),
        ({"tier": "semantic", "agents": ["coder"], "access": "admin"}, "access"),
        ({"tag": "ticket", "agents": ["coder"]}, "tag"),
        ({"tier": "semantic", "agents": [""]}, "agents"),
        ({"tier": "semantic", "agents": "coder"}, "agents"),
        (
            {"tier": "semantic", "agents": ["coder"], "expires_at": utcnow() - timedelta(1)},
            "already passed",
        ),
    ],
)
def test_bad_grants_are_refused_and_write_nothing(
    shared: Memory, user: str, arguments: dict[str, object], message: str
) -> None:
    planner = shared.scope(user, "planner")
    with pytest.raises(InvalidInputError, match=message):
        planner.share(**arguments)  # type: ignore[arg-type]
    assert planner.grants() == []


def test_only_the_owner_can_share_a_memory(shared: Memory, user: str) -> None:
    note = shared.scope(user, "planner").add("mine")
    with pytest.raises(NotFoundError, match="only its owner"):
        shared.scope(user, "coder").share(memory_id=note.id, agents=["reviewer"])
    with pytest.raises(NotFoundError):
        shared.scope(f"x-{user}", "planner").share(memory_id=note.id, agents=["coder"])


def test_compaction_never_consolidates_another_agents_memories(shared: Memory, user: str) -> None:
    planner = shared.scope(user, "planner", "s1")
    coder = shared.scope(user, "coder", "s1")
    planner.share(tier="working", agents=["coder"], access="write")
    theirs = [planner.add(f"planner step {n} of the long plan").id for n in range(12)]
    coder.inject("plan", budget_tokens=20)  # overflows: compaction runs for the coder
    assert set(theirs) <= ids(planner.list(limit=100))


# -- the stateful model test ------------------------------------------------------------------

AGENTS = ("planner", "coder", "reviewer")
TIERS = ("working", "episodic", "semantic")
TAGS = ("red", "blue")


class SharingMachine(RuleBasedStateMachine):
    """Random adds, shares, revokes and reads of two users' agents against a model."""

    store: Memory

    memories = Bundle("memories")
    grants = Bundle("grants")

    @initialize()
    def fresh_users(self) -> None:
        suffix = uuid.uuid4().hex[:8]
        self.users = (f"u1-{suffix}", f"u2-{suffix}")
        # memory id -> (user, owner agent, tier, tag)
        self.model: dict[int, tuple[str, str, str, str]] = {}
        # grant id -> (user, owner, kind, value, grantee agent)
        self.live: dict[int, tuple[str, str, str, object, str]] = {}
        # ids of the live grants above that give write access (memory grants only)
        self.writers: set[int] = set()
        self.counter = 0

    def scope(self, user_index: int, agent: str):  # type: ignore[no-untyped-def]
        return self.store.scope(self.users[user_index], agent, "s")

    def may_see(self, user: str, agent: str) -> set[int]:
        seen = set()
        for memory_id, (owner_user, owner, tier, tag) in self.model.items():
            if owner_user != user:
                continue
            if owner == agent:
                seen.add(memory_id)
                continue
            for grant_user, grant_owner, kind, value, grantee in self.live.values():
                if (grant_user, grant_owner, grantee) != (user, owner, agent):
                    continue
                if (
                    (kind == "memory" and value == memory_id)
                    or (kind == "tier" and value == tier)
                    or (kind == "tag" and value == tag)
                ):
                    seen.add(memory_id)
        return seen

    @rule(
        target=memories,
        user_index=st.integers(0, 1),
        agent=st.sampled_from(AGENTS),
        tier=st.sampled_from(TIERS),
        tag=st.sampled_from(TAGS),
    )
    def add(self, user_index: int, agent: str, tier: str, tag: str) -> int:
        self.counter += 1
        record = self.scope(user_index, agent).add(
            f"common shared word number {self.counter} {tag}",
            tier=tier,  # type: ignore[arg-type]
            metadata={"tag": tag},
        )
        self.model[record.id] = (self.users[user_index], agent, tier, tag)
        return record.id

    @rule(
        target=grants,
        memory_id=memories,
        grantee=st.sampled_from(AGENTS),
        access=st.sampled_from(["read", "write"]),
    )
    def share_memory(self, memory_id: int, grantee: str, access: str) -> int:
        user, owner, _, _ = self.model[memory_id]
        if grantee == owner:
            return -1
        (grant,) = self.store.scope(user, owner, "s").share(
            memory_id=memory_id, agents=[grantee], access=access  # type: ignore[arg-type]
        )
        self.live[grant.id] = (user, owner, "memory", memory_id, grantee)
        if access == "write":
            self.writers.add(grant.id)
        return grant.id

    @rule(
        user_index=st.integers(0, 1),
        agent=st.sampled_from(AGENTS),
        memory_id=memories,
        tier=st.sampled_from(TIERS),
        tag=st.sampled_from(TAGS),
        change_tier=st.booleans(),
    )
    def change_tier_or_tag(
        self, user_index: int, agent: str, memory_id: int, tier: str, tag: str, change_tier: bool
    ) -> None:
        """Only the owner changes what grants depend on; a write grantee is refused."""
        user = self.users[user_index]
        scope = self.scope(user_index, agent)
        change = {"tier": tier} if change_tier else {"metadata": {"tag": tag}}
        if memory_id not in self.may_see(user, agent):
            with pytest.raises(NotFoundError):
                scope.update(memory_id, version=1, **change)  # type: ignore[arg-type]
            return
        version = scope.get(memory_id).version
        owner_user, owner, old_tier, old_tag = self.model[memory_id]
        if owner == agent:
            scope.update(memory_id, version=version, **change)  # type: ignore[arg-type]
            self.model[memory_id] = (
                owner_user, owner, tier if change_tier else old_tier,
                old_tag if change_tier else tag,
            )
            return
        writable = any(
            self.live[grant_id][3] == memory_id and self.live[grant_id][4] == agent
            for grant_id in self.writers & set(self.live)
        )
        with pytest.raises(PermissionDeniedError if writable else NotFoundError):
            scope.update(memory_id, version=version, **change)  # type: ignore[arg-type]

    @rule(
        target=grants,
        user_index=st.integers(0, 1),
        owner=st.sampled_from(AGENTS),
        grantee=st.sampled_from(AGENTS),
        by_tier=st.booleans(),
        tier=st.sampled_from(TIERS),
        tag=st.sampled_from(TAGS),
    )
    def share_group(
        self, user_index: int, owner: str, grantee: str, by_tier: bool, tier: str, tag: str
    ) -> int:
        if grantee == owner:
            return -1
        scope = self.scope(user_index, owner)
        if by_tier:
            (grant,) = scope.share(tier=tier, agents=[grantee])  # type: ignore[arg-type]
            entry = (self.users[user_index], owner, "tier", tier, grantee)
        else:
            (grant,) = scope.share(tag=("tag", tag), agents=[grantee])
            entry = (self.users[user_index], owner, "tag", tag, grantee)
        self.live[grant.id] = entry
        return grant.id

    @rule(grant_id=consumes(grants))
    def revoke(self, grant_id: int) -> None:
        if grant_id not in self.live:
            return
        user, owner, *_ = self.live.pop(grant_id)
        self.store.scope(user, owner, "s").revoke(grant_id)

    @rule(user_index=st.integers(0, 1), agent=st.sampled_from(AGENTS), memory_id=memories)
    def get(self, user_index: int, agent: str, memory_id: int) -> None:
        user = self.users[user_index]
        scope = self.scope(user_index, agent)
        if memory_id in self.may_see(user, agent):
            assert scope.get(memory_id).id == memory_id
        else:
            with pytest.raises(NotFoundError):
                scope.get(memory_id)

    @rule(user_index=st.integers(0, 1), agent=st.sampled_from(AGENTS), memory_id=memories)
    def grantee_changes_content(self, user_index: int, agent: str, memory_id: int) -> None:
        """A write grant lets its holder change content (and so log a ``memory.update``
        under its own agent); a read grant or none does not."""
        user = self.users[user_index]
        owner_user, owner, _, tag = self.model[memory_id]
        if owner_user != user or owner == agent:
            return
        writable = any(
            self.live[grant_id][3] == memory_id and self.live[grant_id][4] == agent
            for grant_id in self.writers & set(self.live)
        )
        version = self.store.scope(owner_user, owner, "s").get(memory_id).version
        self.counter += 1
        content = f"common shared word number {self.counter} {tag} revised"
        if writable:
            self.scope(user_index, agent).update(memory_id, version=version, content=content)
        else:
            with pytest.raises((NotFoundError, PermissionDeniedError)):
                self.scope(user_index, agent).update(memory_id, version=version, content=content)

    @rule(user_index=st.integers(0, 1))
    def subscriptions_see_only_what_their_scopes_may_read(self, user_index: int) -> None:
        for agent in AGENTS:
            self.check_subscription(user_index, agent)

    def check_subscription(self, user_index: int, agent: str) -> None:
        """A scope's subscription from the start of the log: its user's events only, every
        event its own agent wrote, other agents' grant events never, and their memory
        events exactly for the memories the scope may read now (issue 16, finding 12):
        each such memory's ``memory.add``, and nothing about a memory it may not read, such
        as one whose grant was revoked or whose tier or tag no longer matches."""
        user = self.users[user_index]
        readable = self.may_see(user, agent)
        with self.store.engine.connect() as connection:
            head = connection.execute(sa.text("SELECT max(seq) FROM memory_events")).scalar()
            own = set(
                connection.execute(
                    sa.text(
                        "SELECT seq FROM memory_events WHERE user_id = :u AND agent_id = :a"
                    ),
                    {"u": user, "a": agent},
                ).scalars()
            )
        heard: list[MemoryEvent] = []
        subscription = self.scope(user_index, agent).subscribe(heard.append, after_seq=0)
        try:
            deadline = time.monotonic() + 10
            while subscription.last_seq < (head or 0):
                assert time.monotonic() < deadline, "the subscription never caught up"
                time.sleep(0.01)
        finally:
            subscription.close()
        shared_adds = set()
        for event in heard:
            assert event.user_id == user
            if event.agent_id == agent:
                continue
            assert not event.operation.startswith(("grant.", "team."))
            if event.operation.startswith("memory."):
                assert event.operation in ("memory.add", "memory.update"), event
                memory_id = int(event.target.removeprefix("memory:"))
                assert memory_id in readable, event
                if event.operation == "memory.add":
                    shared_adds.add(memory_id)
        assert own <= {event.seq for event in heard}
        others = {m for m in readable if self.model[m][1] != agent}
        assert shared_adds == others

    @invariant()
    def every_read_path_returns_exactly_what_is_permitted(self) -> None:
        for user_index, user in enumerate(self.users):
            for agent in AGENTS:
                expected = self.may_see(user, agent)
                scope = self.scope(user_index, agent)
                assert ids(scope.list(limit=1000)) == expected
                assert hit_ids(scope.search("common shared word", limit=100)) == expected
                # Injection shows at most 20 relevant memories; the model keeps fewer.
                injected = injected_ids(scope.inject("common shared word", budget_tokens=20000))
                assert injected == expected


@pytest.mark.parametrize("backend", ["sqlite-file", "postgresql"])
def test_sharing_state_machine(backend: str, url_for: Callable[[str], str]) -> None:
    store = Memory.open(url_for(backend), embedder=HashingEmbedder(), flags=sharing_flags())
    SharingMachine.store = store
    try:
        machine = SharingMachine.TestCase
        machine.settings = settings(
            max_examples=8,
            stateful_step_count=12,
            deadline=None,
            database=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        )
        machine().runTest()
    finally:
        store.close()


def test_memctl_share_grants_revoke_and_team(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'memory.db'}"
    with Memory.open(url, embedder=HashingEmbedder()) as store:
        note = store.scope("ada", "planner").add("the plan")
    runner = CliRunner()

    def memctl(*arguments: str) -> Result:
        return runner.invoke(main, ["--database-url", url, *arguments])

    shared = memctl(
        "share",
        "--user",
        "ada",
        "--agent",
        "planner",
        "--memory",
        str(note.id),
        "--with-agent",
        "coder",
        "--access",
        "write",
    )
    assert shared.exit_code == 0, shared.output
    assert "acting as admin" in shared.stderr
    grant_id = shared.stdout.split("\t")[0]
    assert f"memory {note.id}" in shared.stdout and "write" in shared.stdout
    listed = memctl("grants", "--user", "ada", "--agent", "coder", "--received")
    assert listed.exit_code == 0 and listed.stdout.startswith(f"{grant_id}\t")
    tagged = memctl(
        "share",
        "--user",
        "ada",
        "--agent",
        "planner",
        "--tag",
        "ticket=BILL-311",
        "--with-team",
        "devs",
        "--until",
        "2999-01-01T00:00:00",
    )
    assert tagged.exit_code == 0 and 'tag ticket="BILL-311"' in tagged.stdout
    assert "until 2999-01-01T00:00:00+00:00" in tagged.stdout
    team = memctl("team", "--user", "ada", "devs", "coder", "reviewer")
    assert team.exit_code == 0 and "coder, reviewer" in team.stdout
    revoked = memctl("revoke", "--user", "ada", "--agent", "planner", grant_id)
    assert revoked.exit_code == 0 and revoked.stdout.startswith(f"revoked {grant_id}\t")
    again = memctl("revoke", "--user", "ada", "--agent", "planner", grant_id)
    assert again.exit_code == 1 and f"grant {grant_id} does not exist" in again.output
    bad = memctl(
        "share",
        "--user",
        "ada",
        "--agent",
        "planner",
        "--tag",
        "no-equals-sign",
        "--with-agent",
        "coder",
    )
    assert bad.exit_code == 1 and "--tag: must be KEY=VALUE" in bad.output
    nothing = memctl("grants", "--user", "ada", "--agent", "reviewer", "--received")
    assert nothing.exit_code == 0
