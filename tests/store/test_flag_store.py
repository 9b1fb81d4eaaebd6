"""The database flag provider, run unchanged against every backend: what it stores, what
evaluation makes of it, the audit of every change, and inputs it refuses without writing.

Flag state is global to a database, so every test gets a database of its own.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

import memory
import memory.ops
from flags import (
    BUILTIN_FLAGS,
    USE_CROSS_AGENT_SHARING,
    USE_ENHANCED_INJECTION,
    USE_HIERARCHICAL_TIERS,
    USE_SWARM_SIGNATURE_ENFORCEMENT,
    EvaluationContext,
    FlagEvaluator,
    FlagSet,
    Rule,
)
from memory import InvalidInputError, SchemaError
from memory.ops import DatabaseFlagProvider, StoredFlag
from memory.store.schema import database_revision

BACKENDS = ["sqlite-file", "sqlite-memory", "postgresql"]
TABLES = ("flag_state", "flag_session_overrides", "flag_audit")


def _fresh_url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    if backend == "sqlite-file":
        return f"sqlite:///{tmp_path / 'flags.db'}"
    if backend == "sqlite-memory":
        return "sqlite://"
    make_database: Callable[[], str] = request.getfixturevalue("make_postgres_database")
    return make_database()


def _engine_at_head(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[sa.Engine]:
    engine = memory.ops.create_engine(_fresh_url(request.param, tmp_path, request))
    memory.ops.upgrade(engine)
    yield engine
    engine.dispose()


@pytest.fixture(params=BACKENDS)
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[sa.Engine]:
    """A database at head of its own."""
    yield from _engine_at_head(request, tmp_path)


@pytest.fixture(params=["sqlite-file", "postgresql"])
def shared_engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[sa.Engine]:
    """A database at head that concurrent connections share (an in-memory SQLite database
    is one connection, so it cannot hold two transactions at once)."""
    yield from _engine_at_head(request, tmp_path)


@pytest.fixture
def provider(engine: sa.Engine) -> DatabaseFlagProvider:
    return DatabaseFlagProvider(engine)


def evaluator(provider: DatabaseFlagProvider, **options: object) -> FlagEvaluator:
    """An evaluator that reads the provider on every call and ignores this process's
    environment, so the database alone decides."""
    return FlagEvaluator(provider, refresh_interval=0, environ={}, **options)  # type: ignore[arg-type]


def rows(engine: sa.Engine, table: str) -> int:
    with engine.connect() as connection:
        return connection.execute(sa.text(f"SELECT COUNT(*) FROM {table}")).scalar_one()


def stored(provider: DatabaseFlagProvider, name: str) -> StoredFlag:
    (flag,) = [flag for flag in provider.flags() if flag.name == name]
    return flag


def context(
    user: str | None = None, session: str | None = None, agent: str | None = None
) -> EvaluationContext:
    return EvaluationContext(user_id=user, session_id=session, agent_id=agent)


# -- a fresh database ---------------------------------------------------------------------------


def test_a_fresh_database_stores_nothing_and_every_flag_is_off(
    provider: DatabaseFlagProvider,
) -> None:
    assert provider.snapshot() == {}
    listed = provider.flags()
    assert [flag.name for flag in listed] == sorted(BUILTIN_FLAGS)
    assert all(not flag.stored and not flag.enabled and flag.rollout == 0 for flag in listed)
    flags = evaluator(provider)
    rules = {name: flags.explain(name, context("u-1", "s-1", "planner")) for name in BUILTIN_FLAGS}
    assert {name: (d.enabled, d.rule) for name, d in rules.items()} == {
        USE_ENHANCED_INJECTION: (False, Rule.DEFAULT),
        USE_CROSS_AGENT_SHARING: (False, Rule.PARENT),
        USE_HIERARCHICAL_TIERS: (False, Rule.DEFAULT),
        USE_SWARM_SIGNATURE_ENFORCEMENT: (False, Rule.DEFAULT),
    }
    assert provider.audit() == []


# -- set: on, off, rollout ----------------------------------------------------------------------


def test_rollout_is_stored_and_evaluates_exactly_like_the_pure_rules(
    provider: DatabaseFlagProvider,
) -> None:
    stored = provider.set_flag(USE_ENHANCED_INJECTION, rollout=30, actor="ops", reason="phase 1")

    assert (stored.stored, stored.enabled, stored.rollout, stored.updated_by) == (
        True,
        True,
        30,
        "ops",
    )
    definition = provider.snapshot()[USE_ENHANCED_INJECTION]
    assert (definition.rollout, definition.group_id, definition.stickiness) == (
        30,
        USE_ENHANCED_INJECTION,
        "default",
    )
    pure = FlagSet([definition])
    flags = evaluator(provider)
    users = [f"user-{i}" for i in range(400)]
    answers = [flags.is_enabled(USE_ENHANCED_INJECTION, context(u)) for u in users]
    assert answers == [pure.is_enabled(USE_ENHANCED_INJECTION, context(u)) for u in users]
    assert 0.2 < sum(answers) / len(users) < 0.4  # a rollout, neither nobody nor everyone


def test_on_is_everyone_and_off_is_a_kill_switch_over_lists_and_overrides(
    provider: DatabaseFlagProvider,
) -> None:
    name = USE_HIERARCHICAL_TIERS
    provider.set_agent(name, "planner", kind="allow", actor="ops")
    provider.override(name, session="s-1", on=True, actor="ops")
    flags = evaluator(provider)
    assert flags.explain(name, context("u", agent="planner")).rule is Rule.ALLOW_LIST
    assert flags.is_enabled(name, context("u", "s-1"))
    assert not flags.is_enabled(name, context("u", "s-2"))

    assert provider.set_flag(name, on=True, actor="ops").rollout == 100
    assert flags.is_enabled(name, context("u", "s-2"))

    killed = provider.set_flag(name, on=False, actor="ops", reason="incident 7")
    assert (killed.enabled, killed.rollout) == (False, 0)
    # The lists and the override are kept (a later --on brings them back) but do not apply.
    assert killed.allowed_agents == ("planner",) and len(killed.overrides) == 1
    for ctx in (context("u", "s-1"), context("u", "s-2", "planner"), context("u")):
        assert not flags.is_enabled(name, ctx)
    # Only the host's environment outranks the kill switch.
    on_here = FlagEvaluator(provider, refresh_interval=0, environ={name: "on"})
    assert on_here.explain(name, context("u")).rule is Rule.ENVIRONMENT
    assert on_here.is_enabled(name, context("u"))


def test_a_child_flag_is_on_only_where_its_parent_is(provider: DatabaseFlagProvider) -> None:
    provider.set_flag(USE_CROSS_AGENT_SHARING, on=True, actor="ops")
    flags = evaluator(provider)
    decision = flags.explain(USE_CROSS_AGENT_SHARING, context("u", "s-1"))
    assert (decision.enabled, decision.rule) == (False, Rule.PARENT)

    provider.override(USE_ENHANCED_INJECTION, session="s-1", on=True, actor="ops")
    assert flags.is_enabled(USE_CROSS_AGENT_SHARING, context("u", "s-1"))
    assert not flags.is_enabled(USE_CROSS_AGENT_SHARING, context("u", "s-2"))
    assert provider.snapshot()[USE_CROSS_AGENT_SHARING].parent == USE_ENHANCED_INJECTION


# -- allow and deny lists -----------------------------------------------------------------------


def test_allow_and_deny_lists_deny_wins_and_no_op_changes_write_nothing(
    provider: DatabaseFlagProvider, engine: sa.Engine
) -> None:
    name = USE_ENHANCED_INJECTION
    provider.set_agent(name, "planner", kind="allow", actor="ops")
    provider.set_agent(name, "coder", kind="allow", actor="ops")
    flags = evaluator(provider)
    assert flags.is_enabled(name, context("u", agent="planner"))  # rollout is 0
    assert not flags.is_enabled(name, context("u", agent="reviewer"))

    provider.set_flag(name, on=True, actor="ops")
    provider.set_agent(name, "planner", kind="deny", actor="ops")
    decision = flags.explain(name, context("u", agent="planner"))
    assert (decision.enabled, decision.rule) == (False, Rule.DENY_LIST)
    assert flags.is_enabled(name, context("u", agent="reviewer"))

    audited = len(provider.audit())
    stored = provider.set_agent(name, "planner", kind="deny", actor="ops")  # already there
    assert stored.denied_agents == ("planner",)
    assert len(provider.audit()) == audited

    removed = provider.set_agent(name, "planner", kind="allow", present=False, actor="ops")
    assert removed.allowed_agents == ("coder",)
    last = provider.audit(name, limit=1)[0]
    assert (last.action, last.old, last.new) == (
        "allow",
        {"allowed_agents": ["coder", "planner"]},
        {"allowed_agents": ["coder"]},
    )
    assert rows(engine, "flag_state") == 1


# -- session overrides ------------------------------------------------------------------------


class WallClock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now


def test_overrides_expire_and_can_be_cleared(provider: DatabaseFlagProvider) -> None:
    name = USE_ENHANCED_INJECTION
    wall = WallClock()
    flags = evaluator(provider, utcnow=wall)
    provider.override(name, session="s-on", on=True, ttl=timedelta(hours=1), actor="ops")
    provider.set_flag(name, on=True, actor="ops")
    provider.override(name, session="s-off", on=False, actor="ops")

    assert flags.explain(name, context("u", "s-on")).rule is Rule.SESSION_OVERRIDE
    assert not flags.is_enabled(name, context("u", "s-off"))
    (expiring,) = [o for o in stored(provider, name).overrides if o.session_id == "s-on"]
    assert expiring.expires_at is not None
    assert timedelta(minutes=59) < expiring.expires_at - wall.now <= timedelta(hours=1, seconds=5)

    provider.set_flag(name, rollout=0, actor="ops")
    assert flags.is_enabled(name, context("u", "s-on"))
    wall.now += timedelta(hours=2)  # past the expiry: the rollout decides again
    decision = flags.explain(name, context("u", "s-on"))
    assert (decision.enabled, decision.rule) == (False, Rule.ROLLOUT)

    provider.override(name, session="s-off", on=None, actor="ops", reason="done")
    assert [o.session_id for o in stored(provider, name).overrides] == ["s-on"]
    last = provider.audit(name, limit=1)[0]
    assert (last.action, last.old, last.new, last.reason) == (
        "override",
        {"session_id": "s-off", "enabled": False, "expires_at": None},
        None,
        "done",
    )


# -- the audit ----------------------------------------------------------------------------------


def test_every_change_is_audited_with_who_when_old_new_and_why(
    provider: DatabaseFlagProvider, caplog: pytest.LogCaptureFixture
) -> None:
    before = datetime.now(UTC)
    with caplog.at_level(logging.INFO, logger="memory.flags"):
        provider.set_flag(USE_ENHANCED_INJECTION, rollout=10, actor="alice", reason="10 %")
        provider.set_flag(USE_ENHANCED_INJECTION, rollout=50, actor="bob", reason="50 %")
    entries = provider.audit(USE_ENHANCED_INJECTION)

    assert [(e.actor, e.action, e.old, e.new, e.reason) for e in entries] == [
        ("bob", "set", {"enabled": True, "rollout": 10}, {"enabled": True, "rollout": 50}, "50 %"),
        ("alice", "set", None, {"enabled": True, "rollout": 10}, "10 %"),
    ]
    assert entries[0].id > entries[1].id and all(e.at >= before - timedelta(1) for e in entries)
    assert provider.audit(USE_HIERARCHICAL_TIERS) == []
    changes = [r.flag_change for r in caplog.records if hasattr(r, "flag_change")]  # type: ignore[attr-defined]
    assert [(c["actor"], c["old"], c["new"]) for c in changes] == [
        ("alice", None, {"enabled": True, "rollout": 10}),
        ("bob", {"enabled": True, "rollout": 10}, {"enabled": True, "rollout": 50}),
    ]
    assert entries[0].as_dict()["at"] == entries[0].at.isoformat()


def test_concurrent_operators_serialise_so_each_old_value_is_the_previous_new(
    shared_engine: sa.Engine,
) -> None:
    provider = DatabaseFlagProvider(shared_engine)
    errors: list[BaseException] = []

    def operator(percent: int) -> None:
        try:
            provider.set_flag(USE_ENHANCED_INJECTION, rollout=percent, actor=f"op-{percent}")
        except BaseException as error:  # reported below: a thread cannot fail the test
            errors.append(error)

    threads = [threading.Thread(target=operator, args=(p,)) for p in range(1, 9)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    entries = list(reversed(provider.audit(USE_ENHANCED_INJECTION)))
    assert len(entries) == 8
    assert entries[0].old is None  # the first one found no stored state
    for earlier, later in zip(entries, entries[1:], strict=False):
        assert later.old == earlier.new
    assert provider.snapshot()[USE_ENHANCED_INJECTION].rollout == entries[-1].new["rollout"]


# -- reset --------------------------------------------------------------------------------------


def test_reset_returns_every_flag_to_its_default_and_audits_what_it_was(
    provider: DatabaseFlagProvider, engine: sa.Engine
) -> None:
    assert provider.reset(actor="ops") == []  # nothing to reset: nothing written
    assert rows(engine, "flag_audit") == 0

    provider.set_flag(USE_ENHANCED_INJECTION, rollout=50, actor="ops")
    provider.set_flag(USE_CROSS_AGENT_SHARING, on=True, actor="ops")
    provider.override(USE_CROSS_AGENT_SHARING, session="s-1", on=False, actor="ops")
    provider.set_agent(USE_CROSS_AGENT_SHARING, "planner", kind="deny", actor="ops")

    assert provider.reset(actor="oncall", reason="rollback") == [
        USE_CROSS_AGENT_SHARING,
        USE_ENHANCED_INJECTION,
    ]
    assert (rows(engine, "flag_state"), rows(engine, "flag_session_overrides")) == (0, 0)
    assert provider.snapshot() == {}
    flags = evaluator(provider)
    assert flags.explain(USE_ENHANCED_INJECTION, context("u")).rule is Rule.DEFAULT
    (entry,) = provider.audit(USE_CROSS_AGENT_SHARING, limit=1)
    assert (entry.action, entry.actor, entry.reason, entry.new) == (
        "reset",
        "oncall",
        "rollback",
        None,
    )
    assert entry.old["denied_agents"] == ["planner"]
    assert entry.old["overrides"] == [{"session_id": "s-1", "enabled": False, "expires_at": None}]


# -- bad input ----------------------------------------------------------------------------------


BAD_INPUT: list[tuple[Callable[[DatabaseFlagProvider], object], str]] = [
    (lambda p: p.set_flag(USE_ENHANCED_INJECTION, rollout=150, actor="ops"), "rollout: .*150"),
    (lambda p: p.set_flag(USE_ENHANCED_INJECTION, rollout=-1, actor="ops"), "rollout: .*-1"),
    (lambda p: p.set_flag(USE_ENHANCED_INJECTION, rollout=True, actor="ops"), "rollout"),
    (lambda p: p.set_flag(USE_ENHANCED_INJECTION, rollout="10", actor="ops"), "rollout"),
    (lambda p: p.set_flag(USE_ENHANCED_INJECTION, actor="ops"), "exactly one"),
    (lambda p: p.set_flag(USE_ENHANCED_INJECTION, on=True, rollout=5, actor="ops"), "one"),
    (lambda p: p.set_flag(USE_ENHANCED_INJECTION, on=1, actor="ops"), "on: must be True"),
    (lambda p: p.set_flag("USE_NOTHING", on=True, actor="ops"), "unknown flag 'USE_NOTHING'"),
    (lambda p: p.set_flag(USE_ENHANCED_INJECTION, on=True, actor=" "), "actor"),
    (
        lambda p: p.set_flag(USE_ENHANCED_INJECTION, on=True, actor="ops", reason="x" * 1001),
        "reason",
    ),
    (lambda p: p.override(USE_ENHANCED_INJECTION, session="", on=True, actor="ops"), "session"),
    (
        lambda p: p.override(
            USE_ENHANCED_INJECTION, session="s", on=True, actor="ops", ttl=timedelta(0)
        ),
        "ttl",
    ),
    (
        lambda p: p.override(
            USE_ENHANCED_INJECTION, session="s", on=None, actor="ops", ttl=timedelta(hours=1)
        ),
        "ttl",
    ),
    (
        lambda p: p.set_agent(USE_ENHANCED_INJECTION, " planner", kind="allow", actor="ops"),
        "agent",
    ),
    (
        lambda p: p.set_agent(USE_ENHANCED_INJECTION, "planner", kind="maybe", actor="ops"),
        "kind",
    ),
    (lambda p: p.audit(limit=0), "limit"),
]


def test_bad_input_names_the_problem_and_writes_nothing(
    provider: DatabaseFlagProvider, engine: sa.Engine
) -> None:
    for call, message in BAD_INPUT:
        with pytest.raises(InvalidInputError, match=message):
            call(provider)
    assert [rows(engine, table) for table in TABLES] == [0, 0, 0]


# -- schema and refresh -------------------------------------------------------------------------


def test_before_revision_0007_writes_refuse_and_evaluation_falls_back(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    engine = memory.ops.create_engine(f"sqlite:///{tmp_path / 'old.db'}")
    try:
        memory.ops.upgrade(engine, "0006")
        provider = DatabaseFlagProvider(engine)
        with pytest.raises(SchemaError, match="revision 0007.*memctl migrate"):
            provider.set_flag(USE_ENHANCED_INJECTION, on=True, actor="ops")
        with pytest.raises(SchemaError, match="revision 0007"):
            provider.flags()
        with caplog.at_level(logging.WARNING, logger="flags"):
            flags = evaluator(provider)
            decision = flags.explain(USE_ENHANCED_INJECTION, context("u"))
        assert (decision.enabled, decision.rule, flags.stale) == (False, Rule.DEFAULT, True)
        assert sum("flag provider failed" in r.getMessage() for r in caplog.records) == 1
    finally:
        engine.dispose()


class CountingProvider(DatabaseFlagProvider):
    reads = 0

    def snapshot(self):  # type: ignore[no-untyped-def]
        self.reads += 1
        return super().snapshot()


def test_evaluation_reads_the_cached_snapshot_until_the_refresh_interval(
    engine: sa.Engine,
) -> None:
    provider = CountingProvider(engine)
    now = [0.0]
    flags = FlagEvaluator(provider, refresh_interval=10, clock=lambda: now[0], environ={})
    provider.set_flag(USE_ENHANCED_INJECTION, on=True, actor="ops")
    for _ in range(1000):
        assert not flags.is_enabled(USE_ENHANCED_INJECTION, context("u"))
    assert provider.reads == 1  # construction only: no database read per evaluation

    now[0] = 10.0
    assert flags.is_enabled(USE_ENHANCED_INJECTION, context("u"))
    assert provider.reads == 2


# -- the migration ------------------------------------------------------------------------------


def test_downgrading_0007_archives_the_flag_tables_and_restore_brings_them_back(
    shared_engine: sa.Engine, tmp_path: Path
) -> None:
    provider = DatabaseFlagProvider(shared_engine)
    provider.set_flag(USE_ENHANCED_INJECTION, rollout=25, actor="ops", reason="phase 1")
    provider.override(USE_ENHANCED_INJECTION, session="s-1", on=False, actor="ops")
    provider.set_agent(USE_ENHANCED_INJECTION, "planner", kind="allow", actor="ops")
    with shared_engine.connect() as connection:
        before = memory.ops.table_checksums(connection, TABLES)
    snapshot = dict(provider.snapshot())

    with pytest.raises(memory.ArchiveError, match="flag_audit.*archive"):
        memory.ops.downgrade(shared_engine, "0006")  # rows and no archive: refused, nothing lost
    assert database_revision(shared_engine) == memory.ops.head_revision()
    assert rows(shared_engine, "flag_audit") == 3

    archive = tmp_path / "archive"
    memory.ops.downgrade(shared_engine, "0006", archive)
    assert not set(TABLES) & set(sa.inspect(shared_engine).get_table_names())
    manifest = memory.ops.verify_archive(archive)
    assert {name: manifest[name] for name in TABLES} == before

    memory.ops.upgrade(shared_engine)
    assert memory.ops.restore_archive(shared_engine, archive)["flag_audit"] == 3
    with shared_engine.connect() as connection:
        assert memory.ops.table_checksums(connection, TABLES) == before
    assert dict(provider.snapshot()) == snapshot
    # The audit goes on after the restored rows (PostgreSQL's sequence was moved on).
    provider.set_flag(USE_ENHANCED_INJECTION, rollout=50, actor="ops")
    assert [entry.id for entry in provider.audit(limit=2)] == [4, 3]
