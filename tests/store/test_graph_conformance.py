"""The Phase 1 entity graph (MCP memory server semantics), on every backend.

Every test runs twice per backend: with the rollout flags on, and with every flag off, as
an operator switches them off in the store's own database after ``Memory.open`` migrated
it to head. With every flag off the library behaves exactly as Phase 1 entity memory.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

import pytest

from flags import BUILTIN_FLAGS
from memory import (
    AddedObservations,
    Entity,
    EntityGraph,
    HashingEmbedder,
    InvalidInputError,
    KnowledgeGraph,
    Memory,
    NotFoundError,
    Relation,
)
from memory.ops import DatabaseFlagProvider, head_revision
from memory.store import graph as graph_module

BACKENDS = ["sqlite-file", "sqlite-memory", "postgresql"]
# The JSONL import and export exist only embedded: the remote reruns of this suite
# (tests/service/test_*graph_conformance.py) leave these out.
EMBEDDED_ONLY_TESTS = (
    "test_jsonl_round_trip_matches_the_mcp_format",
    "test_import_merges_observations_into_existing_entities",
    "test_import_rejects_bad_lines_and_stores_nothing",
    "test_import_with_dangling_relation_stores_nothing",
    "test_import_streams_in_committed_batches",
    "test_a_bad_line_keeps_the_batches_before_it_and_the_import_resumes",
    "test_a_relation_to_a_later_batch_is_refused_with_its_lines",
)


@pytest.fixture(
    params=[
        pytest.param((backend, flags), id=f"{backend}-flags-{flags}")
        for backend in BACKENDS
        for flags in ("on", "off")
    ]
)
def memory(
    request: pytest.FixtureRequest,
    url_for: Callable[[str], str],
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Memory]:
    backend, flags = request.param
    if flags == "off":
        for name in BUILTIN_FLAGS:  # the environment would outrank the database
            monkeypatch.delenv(name, raising=False)
    with Memory.open(url_for(backend), embedder=HashingEmbedder()) as store:
        assert store.revision == head_revision()
        if flags == "off":
            operator = DatabaseFlagProvider(store.engine)
            for name in BUILTIN_FLAGS:
                operator.set_flag(name, on=False, actor="tests", reason="Phase 1 conformance")
            store.flags.refresh()
            probe = store.scope("phase-1-probe", "probe", "s-1")
            assert not any(store.flag_enabled(name, probe) for name in BUILTIN_FLAGS)
        yield store


@pytest.fixture
def graph(memory: Memory, user: str) -> EntityGraph:
    graph = memory.graph(user)
    graph.create_entities(
        [
            {"name": "Ada", "entityType": "person", "observations": ["Writes Python", "Likes tea"]},
            {"name": "Bob", "entityType": "person", "observations": ["Reviews code"]},
            {"name": "billing", "entityType": "project", "observations": []},
        ]
    )
    graph.create_relations(
        [
            {"from": "Ada", "to": "billing", "relationType": "owns"},
            {"from": "Bob", "to": "Ada", "relationType": "mentors"},
        ]
    )
    return graph


def test_read_graph_keeps_creation_order(graph: EntityGraph) -> None:
    assert graph.read_graph() == KnowledgeGraph(
        entities=(
            Entity("Ada", "person", ("Writes Python", "Likes tea")),
            Entity("Bob", "person", ("Reviews code",)),
            Entity("billing", "project", ()),
        ),
        relations=(Relation("Ada", "billing", "owns"), Relation("Bob", "Ada", "mentors")),
    )


def test_create_entities_skips_existing_names(graph: EntityGraph) -> None:
    created = graph.create_entities(
        [
            {"name": "Ada", "entityType": "robot", "observations": ["ignored"]},
            {"name": "Cy", "entityType": "person", "observations": ["New", "New"]},
            {"name": "Cy", "entityType": "duplicate in the same call"},
        ]
    )
    assert created == [Entity("Cy", "person", ("New",))]
    assert graph.open_nodes(["Ada"]).entities[0].entity_type == "person"


def test_create_relations_skips_existing_and_requires_entities(graph: EntityGraph) -> None:
    created = graph.create_relations(
        [
            {"from": "Ada", "to": "billing", "relationType": "owns"},
            {"from": "Ada", "to": "Bob", "relationType": "thanks"},
        ]
    )
    assert created == [Relation("Ada", "Bob", "thanks")]
    with pytest.raises(NotFoundError, match="'Nobody'"):
        graph.create_relations(
            [
                {"from": "Ada", "to": "Bob", "relationType": "greets"},
                {"from": "Ada", "to": "Nobody", "relationType": "knows"},
            ]
        )
    assert len(graph.read_graph().relations) == 3  # the failed call stored nothing


def test_add_observations_returns_only_new_ones(graph: EntityGraph) -> None:
    added = graph.add_observations(
        [
            {"entityName": "Ada", "contents": ["Likes tea", "Runs marathons"]},
            {"entityName": "billing", "contents": ["Deploys Fridays"]},
        ]
    )
    assert added == [
        AddedObservations("Ada", ("Runs marathons",)),
        AddedObservations("billing", ("Deploys Fridays",)),
    ]
    with pytest.raises(NotFoundError, match="'Ghost'"):
        graph.add_observations(
            [
                {"entityName": "Bob", "contents": ["Not stored"]},
                {"entityName": "Ghost", "contents": ["Boo"]},
            ]
        )
    assert graph.open_nodes(["Bob"]).entities[0].observations == ("Reviews code",)


def test_delete_entities_cascades_to_observations_and_relations(
    graph: EntityGraph, memory: Memory
) -> None:
    graph.delete_entities(["Ada", "does-not-exist"])
    result = graph.read_graph()
    assert [e.name for e in result.entities] == ["Bob", "billing"]
    assert result.relations == ()
    with memory.engine.connect() as connection:
        orphans = connection.exec_driver_sql(
            "SELECT COUNT(*) FROM observations o LEFT JOIN entities e ON e.id = o.entity_id "
            "WHERE e.id IS NULL"
        ).scalar_one()
    assert orphans == 0


def test_delete_observations_and_relations(graph: EntityGraph) -> None:
    graph.delete_observations(
        [
            {"entityName": "Ada", "observations": ["Likes tea", "never said"]},
            {"entityName": "Ghost", "observations": ["Boo"]},
        ]
    )
    graph.delete_relations(
        [
            {"from": "Ada", "to": "billing", "relationType": "owns"},
            {"from": "Ada", "to": "Ghost", "relationType": "haunts"},
        ]
    )
    result = graph.read_graph()
    assert result.entities[0].observations == ("Writes Python",)
    assert result.relations == (Relation("Bob", "Ada", "mentors"),)


def test_search_nodes_matches_name_type_and_observations_ignoring_case(graph: EntityGraph) -> None:
    assert [e.name for e in graph.search_nodes("PYTHON").entities] == ["Ada"]
    assert [e.name for e in graph.search_nodes("person").entities] == ["Ada", "Bob"]
    found = graph.search_nodes("b")  # Bob by name, billing by name
    assert [e.name for e in found.entities] == ["Bob", "billing"]
    # Relations that touch a result, as the reference server returns them since 2026.x.
    assert found.relations == (
        Relation("Ada", "billing", "owns"),
        Relation("Bob", "Ada", "mentors"),
    )
    assert graph.search_nodes("zzz") == KnowledgeGraph()


def test_search_folds_non_ascii_case_on_every_backend(memory: Memory, user: str) -> None:
    graph = memory.graph(user)
    graph.create_entities([{"name": "Ölwerk", "entityType": "Straße", "observations": ["ÉTÉ"]}])
    assert [e.name for e in graph.search_nodes("ölw").entities] == ["Ölwerk"]
    assert [e.name for e in graph.search_nodes("été").entities] == ["Ölwerk"]


def test_open_nodes_returns_the_relations_that_touch_them(graph: EntityGraph) -> None:
    opened = graph.open_nodes(["billing", "nobody"])
    assert [e.name for e in opened.entities] == ["billing"]
    assert opened.relations == (Relation("Ada", "billing", "owns"),)  # Bob->Ada does not


def test_graphs_are_per_user(graph: EntityGraph, memory: Memory, user: str) -> None:
    other = memory.graph(user + "-other")
    assert other.read_graph() == KnowledgeGraph()
    other.create_entities([{"name": "Ada", "entityType": "other user's Ada"}])
    assert graph.open_nodes(["Ada"]).entities[0].entity_type == "person"
    other.delete_entities(["Ada"])
    assert [e.name for e in graph.read_graph().entities] == ["Ada", "Bob", "billing"]


def test_jsonl_round_trip_matches_the_mcp_format(
    graph: EntityGraph, memory: Memory, user: str
) -> None:
    lines = list(graph.export_jsonl())
    assert json.loads(lines[0]) == {
        "type": "entity",
        "name": "Ada",
        "entityType": "person",
        "observations": ["Writes Python", "Likes tea"],
    }
    assert json.loads(lines[-1]) == {
        "type": "relation",
        "from": "Bob",
        "to": "Ada",
        "relationType": "mentors",
    }
    copy = memory.graph(user + "-copy")
    assert copy.import_jsonl(lines) == (3, 2)
    assert copy.read_graph() == graph.read_graph()
    assert copy.import_jsonl(lines) == (0, 0)  # importing again adds nothing
    assert copy.read_graph() == graph.read_graph()


def test_import_merges_observations_into_existing_entities(graph: EntityGraph) -> None:
    line = json.dumps(
        {
            "type": "entity",
            "name": "Bob",
            "entityType": "person",
            "observations": ["Reviews code", "Plays chess"],
        }
    )
    assert graph.import_jsonl([line]) == (0, 0)
    assert graph.open_nodes(["Bob"]).entities[0].observations == ("Reviews code", "Plays chess")


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("not json", "line 2: not JSON"),
        ('["a list"]', "line 2: expected a JSON object"),
        ('{"type": "node", "name": "x"}', "line 2: type must be 'entity' or 'relation'"),
        ('{"type": "entity", "name": "x"}', "line 2: entityType"),
        ('{"type": "relation", "from": "Ada", "to": "", "relationType": "r"}', "line 2: to"),
    ],
)
def test_import_rejects_bad_lines_and_stores_nothing(
    graph: EntityGraph, line: str, message: str
) -> None:
    good = json.dumps({"type": "entity", "name": "Zed", "entityType": "person"})
    with pytest.raises(InvalidInputError, match=message):
        graph.import_jsonl([good, line])
    assert graph.open_nodes(["Zed"]).entities == ()


def test_import_with_dangling_relation_stores_nothing(graph: EntityGraph) -> None:
    lines = [
        json.dumps({"type": "entity", "name": "Zed", "entityType": "person"}),
        json.dumps({"type": "relation", "from": "Zed", "to": "Nobody", "relationType": "r"}),
    ]
    with pytest.raises(NotFoundError, match="Nobody"):
        graph.import_jsonl(lines)
    assert graph.open_nodes(["Zed"]).entities == ()


def _entity_line(number: int) -> str:
    return json.dumps(
        {"type": "entity", "name": f"e{number}", "entityType": "t", "observations": [f"o{number}"]}
    )


def test_import_streams_in_committed_batches(
    memory: Memory, user: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first batch is committed before the lines after it are even read: the import
    holds one batch, never the file (issue 16, finding 8)."""
    monkeypatch.setattr(graph_module, "IMPORT_BATCH_LINES", 10)
    graph, seen = memory.graph(user), []

    def lines() -> Iterator[str]:
        for number in range(1, 26):
            if number == 12:  # line 11 was read; lines 1-10 were one batch
                seen.append(len(memory.graph(user).read_graph().entities))
            yield _entity_line(number)
        yield json.dumps({"type": "relation", "from": "e1", "to": "e25", "relationType": "r"})

    assert graph.import_jsonl(lines()) == (25, 1)
    assert seen == [10]
    assert len(graph.read_graph().entities) == 25


def test_a_bad_line_keeps_the_batches_before_it_and_the_import_resumes(
    memory: Memory, user: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(graph_module, "IMPORT_BATCH_LINES", 10)
    graph = memory.graph(user)
    lines = [_entity_line(number) for number in range(1, 31)]
    broken = [*lines[:24], '{"type": "entity", "name": "x"}', *lines[25:]]
    with pytest.raises(
        InvalidInputError,
        match=r"line 25: .*entityType.*; lines 1-20 were imported \(20 new entities, 0 new "
        r"relations\) and are kept, nothing after line 20 was\. .*import it again",
    ):
        graph.import_jsonl(broken)
    assert [entity.name for entity in graph.read_graph().entities] == [
        f"e{number}" for number in range(1, 21)
    ]
    assert graph.import_jsonl(lines) == (10, 0)  # the fixed file: only the rest is new
    assert len(graph.read_graph().entities) == 30


def test_a_relation_to_a_later_batch_is_refused_with_its_lines(
    memory: Memory, user: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(graph_module, "IMPORT_BATCH_LINES", 2)
    graph = memory.graph(user)
    lines = [
        _entity_line(1),
        json.dumps({"type": "relation", "from": "e1", "to": "e2", "relationType": "r"}),
        _entity_line(2),
    ]
    with pytest.raises(NotFoundError, match="lines 1-2: .*e2.*; nothing was imported"):
        graph.import_jsonl(lines)
    assert graph.read_graph().entities == ()
