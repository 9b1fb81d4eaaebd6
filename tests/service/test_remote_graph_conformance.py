"""The entity graph's conformance suite against ``Memory.open("http://…").graph(user)``:
one real ``memctl serve`` over the real PostgreSQL for the module, an admin key (the suite
acts for several users). The JSONL import and export exist only embedded: here they raise
``EmbeddedOnlyError`` naming themselves, as does every other embedded-only member."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from memory import EmbeddedOnlyError, EntityGraph, Memory, NotFoundError, PermissionDeniedError
from memory import ops as ops
from tests.service.processes import Server
from tests.store import test_graph_conformance as suite
from tests.store.test_graph_conformance import *  # noqa: F403 - the suite, collected here too

for _name in EMBEDDED_ONLY_TESTS:  # noqa: F405 - exist only embedded
    del globals()[_name]


@pytest.fixture
def memory(hub: Server, postgres_url: str) -> Iterator[Memory]:
    """The remote store in place of the suite's embedded backends; where the suite looks at
    the rows (``memory.engine``), it sees the database the hub writes."""
    secret = ops.create_key(postgres_url, "graph-conformance", role="admin").secret
    engine = sa.create_engine(postgres_url)
    with Memory.open(hub.url, api_key=secret) as remote:
        remote.engine = engine
        yield remote
    engine.dispose()


def test_the_suite_runs_remote(graph: EntityGraph, memory: Memory) -> None:
    assert memory.backend == "remote" and type(graph).__name__ == "RemoteGraph"
    assert suite.BACKENDS  # the embedded suite this module reruns


def test_a_key_reads_only_its_users_graph(hub: Server, postgres_url: str, user: str) -> None:
    secret = ops.create_key(postgres_url, "planner", users=[user]).secret
    with Memory.open(hub.url, api_key=secret) as remote:
        mine = remote.graph(user)
        mine.create_entities([{"name": "Ada", "entityType": "person"}])
        assert [entity.name for entity in mine.read_graph().entities] == ["Ada"]
        with pytest.raises(NotFoundError, match="Nobody"):
            mine.create_relations([{"from": "Ada", "to": "Nobody", "relationType": "knows"}])
        with pytest.raises(PermissionDeniedError, match="does not act for that user"):
            remote.graph(user + "-other").read_graph()


def test_what_exists_only_embedded_says_so_by_name(hub: Server, postgres_url: str) -> None:
    secret = ops.create_key(postgres_url, "op", role="admin").secret
    with Memory.open(hub.url, api_key=secret) as remote:
        graph, scope = remote.graph("ada"), remote.scope("ada", "planner")
        for call, member in (
            (lambda: list(graph.export_jsonl()), "EntityGraph.export_jsonl"),
            (lambda: graph.import_jsonl([]), "EntityGraph.import_jsonl"),
            (lambda: scope.subscribe(print), "Scope.subscribe"),
            (lambda: remote.engine, "Memory.engine"),
            (lambda: remote.flags, "Memory.flags"),
            (lambda: remote.maintenance, "Memory.maintenance"),
            (lambda: remote.reembed(), "Memory.reembed"),
            (lambda: remote.verify_events(), "Memory.verify_events"),
            (lambda: remote.updates_status(), "Memory.updates_status"),
            (lambda: remote.teams("ada"), "Memory.teams"),
        ):
            with pytest.raises(EmbeddedOnlyError, match=rf"^{member} exists only in an embedded"):
                call()
        with pytest.raises(AttributeError):  # a name no store has is still an AttributeError
            remote.no_such_member  # type: ignore[attr-defined]  # noqa: B018
