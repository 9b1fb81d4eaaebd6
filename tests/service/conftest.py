"""Fixtures of the hub service's tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from memory import ops as ops
from tests.service.processes import Server, served


@pytest.fixture(scope="module")
def database(postgres_url: str) -> str:
    """The real PostgreSQL of the run, migrated to head."""
    ops.migrate(postgres_url)
    return postgres_url


@pytest.fixture(scope="module")
def hub(database: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One real ``memctl serve`` over it, per module."""
    with served(database, tmp_path_factory.mktemp("hub") / "serve.log") as server:
        yield server
