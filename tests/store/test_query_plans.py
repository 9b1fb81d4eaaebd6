"""Every query the store issues, run on a database with 10,000+ memories, uses an index.

A database per persistent backend is populated once per module through the public API:
10,400 memories over 50 users, 4 agents and 2 sessions each (two thirds with metadata), a
Phase 1 graph of 2,000 entities, 6,000 observations and 4,000 relations, and preferences,
code patterns and session checkpoints for every user. Then every public operation of
``Scope`` and ``EntityGraph`` runs (every ``list`` filter combination, the error paths that
issue their own queries) while a ``before_cursor_execute`` listener records each SQL
statement with its parameters. Each recorded statement is then explained with the same
parameters:

- SQLite: ``EXPLAIN QUERY PLAN``, with and without ``ANALYZE`` statistics; any ``SCAN`` of a
  large table fails, including ``SCAN t USING (COVERING) INDEX``, which reads every entry
  (an FTS5 ``SCAN t VIRTUAL TABLE INDEX 0:M..`` is a MATCH lookup, not a scan).
- PostgreSQL: ``EXPLAIN (FORMAT JSON)`` after ``ANALYZE`` with ``enable_seqscan = off`` (so a
  Seq Scan only remains where no index can serve the query) and hash and merge joins off
  (see ``POSTGRES_PLANNER_SETTINGS``); any Seq Scan of a large table fails, and so does an
  index scan without an index condition (a full index scan).

Large tables are the eight the issue names plus any other table the population fills with
1,000+ rows (so tables a later revision adds are covered as soon as the API fills them).
Foreign-key actions (cascades, referential checks) run queries no PostgreSQL EXPLAIN shows,
so a separate test checks that every foreign key of a large table leads some index.
"""

from __future__ import annotations

import inspect
import itertools
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import event

from memory import (
    EntityGraph,
    HashingEmbedder,
    Memory,
    NotFoundError,
    Scope,
    StaleVersionError,
)

pytestmark = pytest.mark.slow

BACKENDS = ["sqlite-file", "postgresql"]
# The tables the issue names; any other table the population fills with LARGE_ROWS or more
# rows (say one a later revision adds) counts as large too.
LARGE_ROWS = 1_000
LARGE_TABLES = frozenset(
    {
        "memories",
        "memory_metadata",
        "entities",
        "observations",
        "relations",
        "user_preferences",
        "code_patterns",
        "session_state",
    }
)
EXPLAINED_VERBS = frozenset({"SELECT", "INSERT", "UPDATE", "DELETE", "WITH"})
# With only sequential scans off, a hash join over a table this small reads its whole
# primary-key index instead (a cost choice at 2,000 rows, not a missing index). With hash and
# merge joins off too, every join shows the index lookups it gets at scale; a scan that no
# index can serve still shows as a Seq Scan or as an index scan without an index condition.
POSTGRES_PLANNER_SETTINGS = ("enable_seqscan", "enable_hashjoin", "enable_mergejoin")

USERS = [f"user-{n:02d}" for n in range(50)]
AGENTS = ("planner", "coder", "critic", "scribe")
SESSIONS = ("s0", "s1")
MEMORIES_PER_BATCH = 26  # 50 users x 4 agents x 2 sessions x 26 = 10,400 memories
KINDS = ("fact", "todo", "note")
GRAPH_USERS = [f"graph-{n:02d}" for n in range(20)]
ENTITIES_PER_GRAPH = 100  # x 3 observations, x 2 relations: 2,000 / 6,000 / 4,000 rows
PREFERENCE_KEYS = [f"pref-{n}" for n in range(12)]
LANGUAGES = ("python", "rust", "go", "typescript")
PATTERNS_PER_USER = 8
STATE_SESSIONS = ("s0", "s1", "s2", "s3")
CHECKPOINTS_PER_SESSION = 3

# Who the exercised operations act as: a user and a graph that the population filled.
TARGET_USER = "user-07"
TARGET_GRAPH_USER = "graph-03"


# -- population -----------------------------------------------------------------------------------


def _memory_item(user: str, agent: str, session: str, k: int) -> dict[str, Any]:
    item: dict[str, Any] = {
        "content": f"{user}/{agent}/{session} remembers fact number {k}",
        "tier": ("working", "episodic", "semantic")[k % 3],
        "importance": (k % 10) / 10,
    }
    if k % 3 != 0:
        item["metadata"] = {"project": f"p{k % 7}", "kind": KINDS[k % 3], "priority": k % 5}
    if k % 10 == 0:
        item["ttl"] = timedelta(days=1)
    return item


def _entity_name(user: str, n: int) -> str:
    return f"{user}-entity-{n % ENTITIES_PER_GRAPH:03d}"


def populate(memory: Memory) -> None:
    for user in USERS:
        for agent in AGENTS:
            for session in SESSIONS:
                memory.scope(user, agent, session).add_many(
                    [_memory_item(user, agent, session, k) for k in range(MEMORIES_PER_BATCH)]
                )
        scope = memory.scope(user, AGENTS[0])
        for n, key in enumerate(PREFERENCE_KEYS):
            scope.set_preference(key, {"level": n, "user": user}, confidence=0.5 + n / 100)
        for n in range(PATTERNS_PER_USER):
            pattern = scope.record_pattern(
                LANGUAGES[n % len(LANGUAGES)],
                f"pattern-{n}",
                f"def pattern_{n}():\n    return {n}\n",
                description=f"Pattern number {n} of {user}",
                tags=[f"tag-{n % 3}", "common"],
            )
            for _ in range(n % 3):
                scope.use_pattern(pattern.id)
        for number, session in enumerate(STATE_SESSIONS):
            checkpoints = memory.scope(user, AGENTS[number % len(AGENTS)], session)
            for step in range(CHECKPOINTS_PER_SESSION):
                checkpoints.save_state({"step": step, "session": session})
    for user in GRAPH_USERS:
        graph = memory.graph(user)
        graph.create_entities(
            [
                {
                    "name": _entity_name(user, n),
                    "entityType": ("person", "project", "tool")[n % 3],
                    "observations": [f"{user} observation {n}.{o}" for o in range(3)],
                }
                for n in range(ENTITIES_PER_GRAPH)
            ]
        )
        graph.create_relations(
            [
                {"from": _entity_name(user, n), "to": _entity_name(user, n + step),
                 "relationType": kind}
                for n in range(ENTITIES_PER_GRAPH)
                for step, kind in ((1, "next"), (7, "knows"))
            ]
        )


# -- capture --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Captured:
    operation: str
    statement: str
    parameters: Any


@dataclass
class CaptureLog:
    calls: set[str] = field(default_factory=set)
    operation: str | None = None
    statements: list[Captured] = field(default_factory=list)
    unattributed: list[str] = field(default_factory=list)


class Tracked:
    """A proxy that records which public method runs, so statements can be attributed to
    it and the test can prove that every public method was exercised."""

    def __init__(self, target: object, label: str, log: CaptureLog) -> None:
        self._target = target
        self._label = label
        self._log = log

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._target, name)
        if not callable(attribute):
            return attribute

        def call(*args: Any, **kwargs: Any) -> Any:
            operation = f"{self._label}.{name}"
            self._log.calls.add(operation)
            self._log.operation = operation
            try:
                result = attribute(*args, **kwargs)
                # Generators (export_jsonl) run their queries only when consumed.
                return list(result) if inspect.isgenerator(result) else result
            finally:
                self._log.operation = None

        return call


def public_methods(cls: type) -> set[str]:
    return {
        f"{cls.__name__}.{name}"
        for name, value in vars(cls).items()
        if not name.startswith("_") and inspect.isfunction(value)
    }


def exercise(memory: Memory, log: CaptureLog) -> None:
    """Call every public operation of Scope and EntityGraph, including the error paths
    that issue queries of their own."""
    scope: Any = Tracked(memory.scope(TARGET_USER, "planner", "s1"), "Scope", log)
    no_session: Any = Tracked(memory.scope(TARGET_USER, "coder"), "Scope", log)
    now = datetime.now(UTC)

    added = scope.add(
        "exercise: a brand new memory", tier="episodic",
        metadata={"project": "p3", "kind": "fact"},
    )
    assert scope.add("exercise: a brand new memory").id == added.id
    scope.add("exercise: expires soon", ttl=timedelta(hours=1), importance=0.2)
    no_session.add("exercise: no session", visibility="shared")
    batch = scope.add_many(
        [
            "exercise: batch one",
            {"content": "exercise: batch two", "tier": "semantic", "metadata": {"project": "p1"}},
            "exercise: a brand new memory",
        ]
    )
    no_session.add_many(["exercise: sessionless batch", "exercise: sessionless batch"])

    fetched = scope.get(added.id)
    updated = scope.update(
        added.id, version=fetched.version, content="exercise: changed", tier="semantic",
        importance=0.9, metadata={"project": "p4", "kind": "todo"},
    )
    scope.update(added.id, version=updated.version, metadata={})
    scope.update(batch[1].id, version=batch[1].version, tier="working")
    with pytest.raises(StaleVersionError):
        scope.update(added.id, version=1, importance=0.1)
    with pytest.raises(NotFoundError):
        scope.update(10**12, version=1, importance=0.1)
    with pytest.raises(NotFoundError):
        scope.get(10**12)

    page = scope.list(limit=20)
    assert len(page) == 20
    filters: dict[str, Any] = {
        "tier": "semantic",
        "session": "s0",
        "metadata": {"project": "p3"},
        "created_after": now - timedelta(hours=1),
        "created_before": now + timedelta(hours=1),
        "before_id": page[-1].id,
    }
    for size in range(len(filters) + 1):
        for names in itertools.combinations(filters, size):
            scope.list(**{name: filters[name] for name in names})
    scope.list(metadata={"project": "p2", "kind": "todo", "priority": 3}, limit=5)
    no_session.list(session="s1", tier="working", limit=1000)

    scope.delete(batch[0].id)
    with pytest.raises(NotFoundError):
        scope.delete(batch[0].id)

    scope.set_preference("exercise-new", ["a", 1])
    scope.set_preference(PREFERENCE_KEYS[0], {"changed": True}, confidence=0.7)
    assert scope.get_preference(PREFERENCE_KEYS[0]) is not None
    assert scope.get_preference("exercise-missing") is None
    assert len(scope.list_preferences()) == len(PREFERENCE_KEYS) + 1
    scope.delete_preference("exercise-new")
    with pytest.raises(NotFoundError):
        scope.delete_preference("exercise-new")

    pattern = scope.record_pattern("python", "exercise-pattern", "print('hi')",
                                   description="Says hi", tags=["greeting"])
    scope.record_pattern("python", "exercise-pattern", "print('hello')", tags=["greeting"])
    scope.use_pattern(pattern.id)
    with pytest.raises(NotFoundError):
        scope.use_pattern(10**12)
    for language, tag, text in itertools.product(("python", None), ("tag-1", None),
                                                 ("Pattern", None)):
        scope.find_patterns(language=language, tag=tag, text=text)

    scope.save_state({"step": "exercise"})
    scope.save_state({"step": "exercise again"}, ttl=timedelta(hours=1))
    assert scope.load_state() is not None
    fresh: Any = Tracked(memory.scope(TARGET_USER, "planner", "fresh"), "Scope", log)
    assert fresh.load_state() is None

    search_filters: dict[str, Any] = {
        "tiers": ["semantic", "episodic"],
        "session": "s0",
        "metadata": {"project": "p3"},
        "created_after": now - timedelta(hours=1),
        "created_before": now + timedelta(hours=1),
    }
    for size in range(len(search_filters) + 1):
        for names in itertools.combinations(search_filters, size):
            scope.search("fact number 7", **{name: search_filters[name] for name in names})
    assert scope.search("remembers fact number 12", limit=50)
    scope.search("words nobody ever stored")
    no_session.search("sessionless batch", metadata={"kind": "todo", "priority": 2})

    scope.inject("what does planner remember about fact 7?", budget_tokens=4096)
    scope.inject("what does planner remember about fact 7?", budget_tokens=4096)  # cached
    scope.inject("fact number 3", budget_tokens=48)  # overflows: compaction
    scope.resume()
    scope.resume("s0")
    with pytest.raises(NotFoundError):
        fresh.resume()

    # Sharing: a reader holding grants of every kind runs the grant-enforcing reads.
    reviewer: Any = Tracked(memory.scope(TARGET_USER, "reviewer", "s1"), "Scope", log)
    by_memory = scope.share(memory_id=batch[1].id, agents=["reviewer"])
    scope.share(tag=("project", "p1"), agents=["reviewer"], access="write")
    scope.share(tier="semantic", agents=["reviewer"], expires_at=now + timedelta(hours=1))
    assert reviewer.get(batch[1].id).id == batch[1].id
    reviewer.list(limit=20)
    reviewer.search("fact number 7")
    reviewer.inject("fact number 7", budget_tokens=4096)
    assert reviewer.grants(received=True)
    scope.revoke(by_memory[0].id)
    assert scope.grants()

    merged = scope.merge_context({"goal": "exercise"})
    reviewer.merge_context({"goal": "exercise again"}, seen=merged.event_seq)
    scope.record_event("exercise.note", {"ok": True})
    scope.record_event("exercise.memory", memory={"content": "exercise: recorded memory"})

    graph: Any = Tracked(memory.graph(TARGET_GRAPH_USER), "EntityGraph", log)
    user = TARGET_GRAPH_USER
    graph.create_entities(
        [
            {"name": "exercise-a", "entityType": "person", "observations": ["likes tea"]},
            {"name": "exercise-b", "entityType": "tool"},
            {"name": _entity_name(user, 5), "entityType": "person"},  # exists: ignored
        ]
    )
    graph.create_relations(
        [
            {"from": "exercise-a", "to": "exercise-b", "relationType": "uses"},
            {"from": "exercise-a", "to": _entity_name(user, 5), "relationType": "knows"},
            {"from": _entity_name(user, 0), "to": _entity_name(user, 1),
             "relationType": "next"},  # exists: ignored
        ]
    )
    graph.add_observations(
        [
            {"entityName": "exercise-a", "contents": ["likes tea", "writes Rust"]},
            {"entityName": _entity_name(user, 9), "contents": ["was exercised"]},
        ]
    )
    graph.delete_observations(
        [
            {"entityName": "exercise-a", "observations": ["likes tea"]},
            {"entityName": "exercise-missing", "observations": ["anything"]},
        ]
    )
    graph.delete_relations(
        [
            {"from": "exercise-a", "to": "exercise-b", "relationType": "uses"},
            {"from": _entity_name(user, 2), "to": _entity_name(user, 3),
             "relationType": "next"},
        ]
    )
    assert len(graph.read_graph().entities) == ENTITIES_PER_GRAPH + 2
    assert graph.search_nodes("observation 4.1").entities
    assert graph.open_nodes([_entity_name(user, 0), _entity_name(user, 1)]).relations
    lines = graph.export_jsonl()
    assert len(lines) > ENTITIES_PER_GRAPH
    graph.import_jsonl(
        [
            '{"type": "entity", "name": "exercise-c", "entityType": "place",'
            ' "observations": ["imported"]}',
            '{"type": "entity", "name": "exercise-a", "entityType": "person",'
            ' "observations": ["merged on import"]}',
            '{"type": "relation", "from": "exercise-c", "to": "exercise-a",'
            ' "relationType": "hosts"}',
        ]
    )
    graph.delete_entities(["exercise-a", "exercise-b", "exercise-c", _entity_name(user, 7)])


def run_and_capture(memory: Memory) -> CaptureLog:
    log = CaptureLog()

    def record(
        connection: Any, cursor: Any, statement: str, parameters: Any, context: Any,
        executemany: bool,
    ) -> None:
        if log.operation is None:
            log.unattributed.append(statement)
            return
        # A true executemany passes a list of parameter sets; an "insertmanyvalues" batch is
        # flagged executemany too but carries the one parameter set of its rendered rows.
        if executemany and isinstance(parameters, list | tuple) and parameters and isinstance(
            parameters[0], Mapping | list | tuple
        ):
            parameters = parameters[0]
        log.statements.append(Captured(log.operation, statement, parameters))

    event.listen(memory.engine, "before_cursor_execute", record)
    try:
        exercise(memory, log)
    finally:
        event.remove(memory.engine, "before_cursor_execute", record)
    return log


# -- explaining -----------------------------------------------------------------------------------


def verb(statement: str) -> str:
    words = statement.lstrip().split(None, 1)
    return words[0].upper() if words else ""


def explained(log: CaptureLog) -> list[Captured]:
    """The captured DML and SELECT statements, one per distinct (statement, parameters)."""
    unique: dict[tuple[str, str], Captured] = {}
    for item in log.statements:
        if verb(item.statement) in EXPLAINED_VERBS:
            unique.setdefault((item.statement, repr(item.parameters)), item)
    return list(unique.values())


def large_table_names(statement: str, large: frozenset[str]) -> set[str]:
    """The large tables and every alias of one (SQLite's plan names the alias)."""
    names = set(large)
    for table, alias in re.findall(r"\b(\w+) AS (\w+)\b", statement):
        if table in large:
            names.add(alias)
    return names


def _describe(item: Captured, problem: str) -> str:
    parameters = repr(item.parameters)
    if len(parameters) > 400:
        parameters = parameters[:400] + "..."
    return f"{item.operation}: {problem}\n    SQL: {item.statement}\n    parameters: {parameters}"


def sqlite_full_scans(
    memory: Memory, statements: list[Captured], large: frozenset[str]
) -> list[str]:
    problems = []
    with memory.engine.connect() as connection:
        for item in statements:
            transaction = connection.begin()
            try:
                rows = connection.exec_driver_sql(
                    "EXPLAIN QUERY PLAN " + item.statement, item.parameters or ()
                ).all()
            finally:
                transaction.rollback()
            names = large_table_names(item.statement, large)
            for row in rows:
                detail = str(row[3])
                # "SCAN TABLE t" before SQLite 3.36. A virtual table (full-text search)
                # chooses its own access path: "SCAN t VIRTUAL TABLE INDEX 0:M2" is an FTS5
                # MATCH lookup; only an empty index string ("INDEX 0:") reads it all.
                scanned = re.match(r"SCAN (?:TABLE )?(\w+)(?: VIRTUAL TABLE INDEX \d+:(.*))?",
                                   detail)
                virtual_lookup = scanned is not None and bool(scanned.group(2))
                if scanned and scanned.group(1) in names and not virtual_lookup:
                    problems.append(_describe(item, f"plan line {detail!r}"))
    return problems


def _plan_nodes(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield node
    for child in node.get("Plans", ()):
        yield from _plan_nodes(child)


def _postgres_node_problem(node: dict[str, Any], large: frozenset[str]) -> str | None:
    relation = node.get("Relation Name")
    if relation not in large:
        return None
    kind = node["Node Type"]
    if kind == "Seq Scan":
        return f"Seq Scan on {relation} (filter: {node.get('Filter')})"
    if kind in ("Index Scan", "Index Only Scan") and "Index Cond" not in node:
        return (f"{kind} using {node.get('Index Name')} on {relation} without an index "
                f"condition: a full index scan (filter: {node.get('Filter')})")
    return None


def postgres_full_scans(
    memory: Memory, statements: list[Captured], large: frozenset[str]
) -> list[str]:
    problems = []
    with memory.engine.connect() as connection:
        for item in statements:
            transaction = connection.begin()
            try:
                for setting in POSTGRES_PLANNER_SETTINGS:
                    connection.exec_driver_sql(f"SET LOCAL {setting} = off")
                document = connection.exec_driver_sql(
                    "EXPLAIN (FORMAT JSON) " + item.statement, item.parameters or {}
                ).scalar_one()
            finally:
                transaction.rollback()
            for node in _plan_nodes(document[0]["Plan"]):
                problem = _postgres_node_problem(node, large)
                if problem is not None:
                    problems.append(_describe(item, problem))
    return problems


# -- fixtures -------------------------------------------------------------------------------------


@dataclass
class Workload:
    backend: str
    memory: Memory
    row_counts: dict[str, int]  # of every table, after the population
    large: frozenset[str]  # the tables no query may scan
    log: CaptureLog
    statements: list[Captured]


def count_rows(memory: Memory) -> dict[str, int]:
    with memory.engine.connect() as connection:
        return {
            table: connection.exec_driver_sql(f'SELECT COUNT(*) FROM "{table}"').scalar_one()
            for table in sa.inspect(connection).get_table_names()
        }


@pytest.fixture(scope="module", params=BACKENDS)
def workload(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Workload]:
    backend = request.param
    if backend == "sqlite-file":
        directory: Path = tmp_path_factory.mktemp("query-plans")
        url = f"sqlite:///{directory / 'memory.db'}"
    else:
        url = str(request.getfixturevalue("postgres_url"))
    # The hashing embedder: the real model would spend minutes on 10,400 memories, and the
    # queries issued do not depend on which embedder made the vectors.
    with Memory.open(url, embedder=HashingEmbedder()) as memory:
        populate(memory)
        row_counts = count_rows(memory)
        large = LARGE_TABLES | {
            table for table, rows in row_counts.items() if rows >= LARGE_ROWS
        }
        if backend == "postgresql":
            with memory.engine.begin() as connection:
                connection.exec_driver_sql("ANALYZE")
        log = run_and_capture(memory)
        yield Workload(backend, memory, row_counts, large, log, explained(log))


# -- tests ----------------------------------------------------------------------------------------


def test_the_database_is_large(workload: Workload) -> None:
    minimum = {
        "memories": 10_000,
        "memory_metadata": 15_000,
        "entities": 2_000,
        "observations": 6_000,
        "relations": 4_000,
        "user_preferences": 600,
        "code_patterns": 400,
        "session_state": 600,
    }
    assert set(minimum) == LARGE_TABLES
    counts = workload.row_counts
    assert all(counts[table] >= least for table, least in minimum.items()), counts
    assert LARGE_TABLES <= workload.large


def test_every_public_operation_was_exercised(workload: Workload) -> None:
    # Scope.subscribe reads the log on the subscription's own thread, outside the tracked
    # call (tests/api/test_subscription_scope.py covers it; memory_events reads by seq).
    expected = (public_methods(Scope) | public_methods(EntityGraph)) - {"Scope.subscribe"}
    assert len(expected) >= 29, sorted(expected)
    missed = sorted(expected - workload.log.calls)
    assert missed == [], f"exercise() must call these public methods too: {missed}"
    # Each exercised operation reached the database.
    silent = sorted(expected - {item.operation for item in workload.log.statements})
    assert silent == [], f"these operations issued no SQL: {silent}"
    assert workload.log.unattributed == []


def test_the_capture_is_not_trivial(workload: Workload) -> None:
    distinct = {item.statement for item in workload.statements}
    assert len(distinct) >= 30, sorted(distinct)
    mentioned = {
        table for table in LARGE_TABLES
        if any(re.search(rf"\b{table}\b", statement) for statement in distinct)
    }
    assert mentioned == LARGE_TABLES
    verbs = {verb(statement) for statement in distinct}
    assert {"SELECT", "INSERT", "UPDATE", "DELETE"} <= verbs


def test_no_query_scans_a_large_table(workload: Workload) -> None:
    memory = workload.memory
    Check = Callable[[Memory, list[Captured], frozenset[str]], list[str]]
    checks: list[tuple[str, Check]]
    if workload.backend == "postgresql":
        checks = [("after ANALYZE, " + ", ".join(POSTGRES_PLANNER_SETTINGS) + " off",
                   postgres_full_scans)]
    else:

        def analyzed(
            memory: Memory, statements: list[Captured], large: frozenset[str]
        ) -> list[str]:
            with memory.engine.begin() as connection:
                connection.exec_driver_sql("ANALYZE")
            return sqlite_full_scans(memory, statements, large)

        # The embedded default rarely has statistics; an operator may have gathered them.
        checks = [("without statistics", sqlite_full_scans), ("after ANALYZE", analyzed)]
    problems = [
        f"[{workload.backend}, {label}] {problem}"
        for label, check in checks
        for problem in check(memory, workload.statements, workload.large)
    ]
    assert not problems, (
        f"{len(problems)} full scan(s) of a large table:\n" + "\n".join(problems)
    )


def test_every_foreign_key_is_led_by_an_index(workload: Workload) -> None:
    """Cascades and referential checks look rows up by the referencing columns, in
    queries no EXPLAIN above shows: each foreign key must lead some index."""
    inspector = sa.inspect(workload.memory.engine)
    missing = []
    checked = 0
    for table in sorted(workload.large):
        keys = inspector.get_foreign_keys(table)
        if not keys:
            continue
        leading = [tuple(inspector.get_pk_constraint(table)["constrained_columns"])]
        leading += [tuple(index["column_names"]) for index in inspector.get_indexes(table)]
        leading += [
            tuple(unique["column_names"]) for unique in inspector.get_unique_constraints(table)
        ]
        for key in keys:
            columns = tuple(key["constrained_columns"])
            checked += 1
            if not any(index[: len(columns)] == columns for index in leading):
                missing.append(f"{table}{columns} -> {key['referred_table']}")
    assert checked >= 4
    assert not missing, f"foreign keys without an index: {missing}"
