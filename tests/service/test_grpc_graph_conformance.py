"""The entity graph's conformance suite against ``Memory.open("grpc://…").graph(user)``: the
graph operations are RPCs of the same ``.proto`` (one real ``memctl serve`` over the real
PostgreSQL for the module, an admin key). The JSONL import and export exist only embedded
(see tests/service/test_remote_graph_conformance.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from memory import EntityGraph, Memory, NotFoundError, PermissionDeniedError
from memory import ops as ops
from tests.service.processes import Server
from tests.store.test_graph_conformance import *  # noqa: F403 - the suite, collected here too

for _name in EMBEDDED_ONLY_TESTS:  # noqa: F405 - exist only embedded
    del globals()[_name]


@pytest.fixture
def memory(hub: Server, postgres_url: str) -> Iterator[Memory]:
    """The gRPC remote store in place of the suite's embedded backends."""
    secret = ops.create_key(postgres_url, "graph-conformance", role="admin").secret
    engine = sa.create_engine(postgres_url)
    with Memory.open(hub.grpc_url, api_key=secret) as remote:
        remote.engine = engine
        yield remote
    engine.dispose()


def test_the_suite_runs_over_grpc(graph: EntityGraph, memory: Memory) -> None:
    assert memory.backend == "remote" and type(graph).__name__ == "RemoteGraph"


def test_a_key_reads_only_its_users_graph(hub: Server, postgres_url: str, user: str) -> None:
    secret = ops.create_key(postgres_url, "planner", users=[user]).secret
    with Memory.open(hub.grpc_url, api_key=secret) as remote:
        mine = remote.graph(user)
        mine.create_entities([{"name": "Ada", "entityType": "person"}])
        assert [entity.name for entity in mine.read_graph().entities] == ["Ada"]
        with pytest.raises(NotFoundError, match="Nobody"):
            mine.create_relations([{"from": "Ada", "to": "Nobody", "relationType": "knows"}])
        with pytest.raises(PermissionDeniedError, match="does not act for that user"):
            remote.graph(user + "-other").read_graph()
