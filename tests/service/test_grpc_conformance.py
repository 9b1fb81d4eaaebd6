"""The store conformance suite and the search suite's API cases, unchanged, against
``Memory.open("grpc://…", api_key=…)``: one real ``memctl serve`` over the real PostgreSQL
for the module, with an admin key (the suites act as many users and agents). Where a suite
looks at the database directly (``memory.engine``), it sees the database the server
writes."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from memory import (
    AuthenticationError,
    DatabaseUnavailableError,
    InvalidInputError,
    Memory,
    PermissionDeniedError,
    StaleVersionError,
    StoreClosedError,
)
from memory import ops as ops
from tests.search.test_retrieval import (  # noqa: F401 - the search cases that need no embedded internals
    test_query_with_only_stop_words_or_operators_is_safe,
    test_search_filters,
    test_search_finds_by_keyword_and_ranks_best_first,
    test_search_never_leaves_the_callers_scope,
    test_search_rejects_bad_queries,
    test_search_skips_expired_and_deleted_memories,
    test_updated_content_is_searched_by_its_new_words,
)
from tests.service.processes import Server, free_port
from tests.store.test_store_conformance import *  # noqa: F403 - the suite, collected here too


@pytest.fixture(scope="module")
def admin_key(hub: Server, postgres_url: str) -> str:
    return ops.create_key(postgres_url, "conformance", role="admin").secret


@pytest.fixture
def memory(hub: Server, admin_key: str, postgres_url: str) -> Iterator[Memory]:
    """The gRPC remote store in place of the embedded backends of tests/conftest.py."""
    engine = sa.create_engine(postgres_url)
    with Memory.open(hub.grpc_url, api_key=admin_key) as remote:
        assert remote.backend == "remote"
        remote.engine = engine  # the suite's direct look at the rows
        yield remote
    engine.dispose()


def test_the_grpc_store_is_the_suite_backend(memory: Memory) -> None:
    assert memory.backend == "remote"


# -- what is particular to the gRPC client ----------------------------------------------------


def test_a_grpc_store_needs_a_key_and_one_protocol(hub: Server) -> None:
    with pytest.raises(InvalidInputError, match="api_key"):
        Memory.open(hub.grpc_url)
    with pytest.raises(InvalidInputError, match="one protocol"):
        Memory.open(f"{hub.grpc_url},{hub.url}", api_key="tmk_x")
    with Memory.open(hub.grpc_url, api_key="tmk_0123456789abcdef_wrong") as remote:
        with pytest.raises(AuthenticationError, match="not valid"):
            remote.scope("ada", "planner").list()


def test_records_and_errors_keep_their_types(memory: Memory, user: str) -> None:
    scope = memory.scope(user, "planner", "s1")
    added = scope.add("typed", metadata={"n": 1, "big": 2**62, "x": [1.5, None, "s"]})
    assert scope.get(added.id).metadata == {"n": 1, "big": 2**62, "x": [1.5, None, "s"]}
    assert type(scope.get(added.id).metadata["n"]) is int  # JSON text, not Struct's floats
    scope.set_preference("nothing", None)
    assert scope.get_preference("nothing") is not None
    assert scope.get_preference("nothing").value is None  # type: ignore[union-attr]
    assert scope.get_preference("absent") is None
    with pytest.raises(StaleVersionError) as stale:
        scope.update(added.id, version=7, content="late")
    assert (stale.value.expected, stale.value.current) == (7, 1)
    with pytest.raises(InvalidInputError, match="content"):
        scope.add(123)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="larger than max"):
        scope.add("x" * 2_000_000)  # over the hub's max_body_bytes
    assert [item.id for item in scope.list()] == [added.id]


def test_an_agent_key_acts_only_as_itself(hub: Server, postgres_url: str, user: str) -> None:
    secret = ops.create_key(postgres_url, "planner", users=[user]).secret
    with Memory.open(hub.grpc_url, api_key=secret) as remote:
        mine = remote.scope(user, "planner")
        added = mine.add("from the gRPC planner")
        assert mine.get(added.id).agent_id == "planner"
        with pytest.raises(PermissionDeniedError, match="acts as agent 'planner' only"):
            remote.scope(user, "coder").list()
        with pytest.raises(PermissionDeniedError, match="does not act for that user"):
            remote.scope(user + "-other", "planner").list()
        with pytest.raises(PermissionDeniedError, match="admin API key"):
            remote.forget_user(user)
    admin_secret = ops.create_key(postgres_url, "op", role="admin").secret
    with Memory.open(hub.grpc_url, api_key=admin_secret) as admin:
        assert admin.forget_user(user).rows["memories"] == 1


def test_a_closed_grpc_store_refuses_calls(memory: Memory, user: str) -> None:
    scope = memory.scope(user, "planner")
    memory.close()
    with pytest.raises(StoreClosedError):
        scope.list()


def test_replicas_fail_over_when_one_cannot_be_reached(
    hub: Server, admin_key: str, user: str
) -> None:
    dead = f"grpc://127.0.0.1:{free_port()}"
    with Memory.open(f"{dead},{hub.grpc_url}", api_key=admin_key) as remote:
        scope = remote.scope(user, "planner")
        added = scope.add("written through the second replica")
        assert scope.get(added.id).content == "written through the second replica"
    with Memory.open(dead, api_key=admin_key) as remote:
        with pytest.raises(DatabaseUnavailableError, match="no hub replica answered"):
            remote.scope(user, "planner").list()
