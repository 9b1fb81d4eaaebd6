"""Engine configuration, URL resolution, and how ``Memory.open`` treats each schema state."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from memory import DatabaseUnavailableError, InvalidInputError, Memory, SchemaError
from memory.ops import create_engine, head_revision, resolve_database_url, upgrade
from memory.store.schema import MEMORIES_REVISION


def test_url_comes_from_caller_then_environment_then_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("MEMORY_DATABASE_URL", raising=False)
    assert str(resolve_database_url()) == "sqlite+pysqlite:///memory.db"
    monkeypatch.setenv("MEMORY_DATABASE_URL", "postgresql://db.example/mem")
    assert str(resolve_database_url()) == "postgresql+psycopg://db.example/mem"
    assert str(resolve_database_url("sqlite:///x.db")) == "sqlite+pysqlite:///x.db"


@pytest.mark.parametrize(
    ("url", "message"),
    [("mysql://localhost/x", "only sqlite:// and postgresql://"), ("::not a url", "not a valid")],
)
def test_unsupported_urls_are_refused(url: str, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        create_engine(url)


def test_sqlite_engine_settings(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'x.db'}")
    with engine.connect() as connection:
        pragma = {
            name: connection.exec_driver_sql(f"PRAGMA {name}").scalar()
            for name in ("journal_mode", "busy_timeout", "foreign_keys", "synchronous")
        }
    engine.dispose()
    assert pragma == {
        "journal_mode": "wal",
        "busy_timeout": 5000,
        "foreign_keys": 1,
        "synchronous": 1,
    }


def test_sqlite_memory_database_is_shared_by_threads() -> None:
    import threading

    with Memory.open("sqlite://") as store:
        added = store.scope("u", "a").add("seen by every thread")
        seen: list[int] = []
        thread = threading.Thread(
            target=lambda: seen.append(store.scope("u", "a").get(added.id).id)
        )
        thread.start()
        thread.join()
    assert seen == [added.id]


def test_postgres_engine_settings(postgres_url: str) -> None:
    engine = create_engine(postgres_url)
    try:
        assert engine.dialect.driver == "psycopg"
        assert engine.pool.size() == 10  # type: ignore[attr-defined]
        assert engine.pool._timeout == 5  # type: ignore[attr-defined]
        assert engine.pool._pre_ping is True
        with engine.connect() as connection:
            assert connection.execute(sa.text("SELECT 1")).scalar() == 1
    finally:
        engine.dispose()


def test_open_creates_the_schema_in_an_empty_database(tmp_path: Path) -> None:
    with Memory.open(f"sqlite:///{tmp_path / 'new.db'}") as store:
        assert store.revision == head_revision()
        assert store.backend == "sqlite"


def test_open_at_phase_1_keeps_the_graph_and_refuses_phase_2(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = create_engine(url)
    upgrade(engine, "0003")
    engine.dispose()
    with Memory.open(url) as store:
        assert store.revision == "0003"
        store.graph("u").create_entities([{"name": "Ada", "entityType": "person"}])
        with pytest.raises(
            SchemaError, match=f"need schema revision {MEMORIES_REVISION}.*memctl migrate"
        ):
            store.scope("u", "a")


def test_open_refuses_a_schema_newer_than_the_code(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'future.db'}"
    Memory.open(url).close()
    engine = create_engine(url)
    with engine.begin() as connection:
        connection.execute(sa.text("UPDATE alembic_version SET version_num = '9999'"))
    engine.dispose()
    with pytest.raises(SchemaError, match="revision '9999', which this code does not know"):
        Memory.open(url)


def test_open_reports_an_unreachable_database() -> None:
    # Port 1 on loopback: nothing listens there, so the connection is refused at once.
    with pytest.raises(DatabaseUnavailableError, match="cannot open the database"):
        Memory.open("postgresql://postgres@127.0.0.1:1/none")


def test_open_reports_an_unwritable_sqlite_path(tmp_path: Path) -> None:
    with pytest.raises(DatabaseUnavailableError, match="cannot open the database"):
        Memory.open(f"sqlite:///{tmp_path / 'missing-dir' / 'x.db'}")
