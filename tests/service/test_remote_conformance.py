"""The store conformance suite, unchanged, against ``Memory.open("http://…", api_key=…)``:
one real ``memctl serve`` over the real PostgreSQL for the module, with an admin key (the
suite acts as many users and agents). Where the suite looks at the database directly
(``memory.engine``), it sees the database the server writes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from memory import (
    AuthenticationError,
    DatabaseUnavailableError,
    InvalidInputError,
    Memory,
    PermissionDeniedError,
    StoreClosedError,
)
from memory import ops as ops
from tests.service.processes import Server, free_port
from tests.store.test_store_conformance import *  # noqa: F403 - the suite, collected here too


@pytest.fixture(scope="module")
def admin_key(hub: Server, postgres_url: str) -> str:
    return ops.create_key(postgres_url, "conformance", role="admin").secret


@pytest.fixture
def memory(hub: Server, admin_key: str, postgres_url: str) -> Iterator[Memory]:
    """The remote store in place of the embedded backends of tests/conftest.py."""
    engine = sa.create_engine(postgres_url)
    with Memory.open(hub.url, api_key=admin_key) as remote:
        assert remote.backend == "remote"
        remote.engine = engine  # the suite's direct look at the rows
        yield remote
    engine.dispose()


def test_the_remote_store_is_the_suite_backend(memory: Memory, tmp_path: Path) -> None:
    assert memory.backend == "remote"


# -- what is particular to the remote store ---------------------------------------------------


def test_a_remote_store_needs_a_key_and_http_urls(hub: Server) -> None:
    with pytest.raises(InvalidInputError, match="api_key"):
        Memory.open(hub.url)
    with pytest.raises(InvalidInputError, match="not an http"):
        Memory.open(f"{hub.url},ftp://elsewhere", api_key="tmk_x")
    with Memory.open(hub.url, api_key="tmk_0123456789abcdef_wrong") as remote:
        with pytest.raises(AuthenticationError, match="not valid"):
            remote.scope("ada", "planner").list()


def test_an_agent_key_acts_only_as_itself(hub: Server, postgres_url: str, user: str) -> None:
    secret = ops.create_key(postgres_url, "planner", users=[user]).secret
    with Memory.open(hub.url, api_key=secret) as remote:
        mine = remote.scope(user, "planner")
        added = mine.add("from the remote planner")
        assert mine.get(added.id).agent_id == "planner"
        with pytest.raises(PermissionDeniedError, match="acts as agent 'planner' only"):
            remote.scope(user, "coder").list()
        with pytest.raises(PermissionDeniedError, match="does not act for that user"):
            remote.scope(user + "-other", "planner").list()
        with pytest.raises(PermissionDeniedError, match="admin API key"):
            remote.forget_user(user)
    admin_secret = ops.create_key(postgres_url, "op", role="admin").secret
    with Memory.open(hub.url, api_key=admin_secret) as admin:
        assert admin.forget_user(user).rows["memories"] == 1


def test_a_closed_remote_store_refuses_calls(memory: Memory, user: str) -> None:
    scope = memory.scope(user, "planner")
    memory.close()
    with pytest.raises(StoreClosedError):
        scope.list()
    with pytest.raises(StoreClosedError):
        memory.scope(user, "planner")


def test_replicas_fail_over_when_one_cannot_be_reached(
    hub: Server, admin_key: str, user: str
) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    with Memory.open(f"{dead},{hub.url}", api_key=admin_key) as remote:
        scope = remote.scope(user, "planner")
        added = scope.add("written through the second replica")
        assert scope.get(added.id).content == "written through the second replica"
    with Memory.open(dead, api_key=admin_key) as remote:
        with pytest.raises(DatabaseUnavailableError, match="no hub replica answered"):
            remote.scope(user, "planner").list()
