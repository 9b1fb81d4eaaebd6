"""Nodes for the sync tests: each a ``Memory`` over a database of its own, copied from a
database migrated once per module (a SQLite file copied, or a PostgreSQL database created
from a template), so that a node costs a copy instead of every migration."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

import memory.ops
from memory import HashingEmbedder, Memory
from memory.sync.spoke import SpokeStore

NodeFactory = Callable[..., SpokeStore]


@pytest.fixture(scope="module")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sync-template") / "template.db"
    engine = memory.ops.create_engine(f"sqlite:///{path}")
    memory.ops.upgrade(engine)
    engine.dispose()
    return path


@pytest.fixture(scope="module")
def postgres_template(postgres_admin: sa.Engine) -> Iterator[Callable[[], str]]:
    """A factory of PostgreSQL databases copied from one migrated template; all dropped at
    the end of the module."""
    names: list[str] = []

    def create(template: str | None) -> str:
        name = f"memsync_{uuid.uuid4().hex[:12]}"
        clause = f' TEMPLATE "{template}"' if template else ""
        with postgres_admin.connect() as connection:
            connection.execute(sa.text(f'CREATE DATABASE "{name}"{clause}'))
        names.append(name)
        return postgres_admin.url.set(database=name).render_as_string(hide_password=False)

    template_url = create(None)
    engine = memory.ops.create_engine(template_url)
    memory.ops.upgrade(engine)
    engine.dispose()
    template = names[0]
    yield lambda: create(template)
    with postgres_admin.connect() as connection:
        for name in names:
            connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def copied_sqlite(template: Path, directory: Path) -> str:
    path = directory / f"node-{uuid.uuid4().hex[:8]}.db"
    shutil.copyfile(template, path)
    return f"sqlite:///{path}"


@pytest.fixture(params=["sqlite-file", "postgresql"])
def node(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[NodeFactory]:
    """A factory of spokes, each over a fresh database of its own on the backend."""
    opened: list[Memory] = []

    def make(embedder: HashingEmbedder | None = None) -> SpokeStore:
        if request.param == "sqlite-file":
            url = copied_sqlite(request.getfixturevalue("sqlite_template"), tmp_path)
        else:
            url = request.getfixturevalue("postgres_template")()
        store = Memory.open(url, embedder=embedder or HashingEmbedder())
        opened.append(store)
        return SpokeStore(store)

    yield make
    for store in opened:
        store.close()
