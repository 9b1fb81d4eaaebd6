"""``memctl health`` and its registry of named checks, on good and broken databases."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner, Result

from memory import HashingEmbedder, InvalidInputError, Memory
from memory.cli import main
from memory.ops import (
    HealthContext,
    cleanup,
    create_engine,
    health_checks,
    register_health_check,
    run_health_checks,
    unregister_health_check,
    upgrade,
)
from memory.ops.health import CheckOutcome

DEAD_POSTGRES = "postgresql://postgres@127.0.0.1:1/test"  # nothing listens on port 1


def memctl(url: str, *args: str) -> Result:
    return CliRunner().invoke(main, ["--database-url", url, "health", *args])


def statuses(result: Result) -> dict[str, str]:
    return {check["name"]: check["status"] for check in json.loads(result.output)["checks"]}


@pytest.fixture
def sqlite_url(tmp_path: Path) -> Iterator[str]:
    url = f"sqlite:///{tmp_path / 'memory.db'}"
    with Memory.open(url, embedder=HashingEmbedder()) as memory:
        memory.scope("ada", "planner").add("a note")
    yield url


def test_a_good_sqlite_database_is_healthy(sqlite_url: str) -> None:
    result = memctl(sqlite_url, "--embedder", "hashing", "--json")

    assert result.exit_code == 0, result.output
    assert statuses(result) == {
        "database": "ok",
        "schema": "ok",
        "sqlite": "ok",
        "embedder": "ok",
        "flag_provider": "ok",
        "redis": "skip",  # not configured
        "cleanup": "warn",  # no cleanup has run yet
        "backup": "skip",  # no backup directory configured
        "updates": "ok",  # in-process: no bus to reach
    }
    assert json.loads(result.output)["ok"] is True


def test_a_good_postgres_database_is_healthy(postgres_url: str) -> None:
    with Memory.open(postgres_url, embedder=None) as memory:
        cleanup(memory)
    report = run_health_checks(postgres_url, embedder="none")

    assert report.ok
    by_name = {result.name: result for result in report.results}
    assert by_name["database"].status == "ok" and by_name["schema"].status == "ok"
    assert by_name["sqlite"].status == "skip" and by_name["embedder"].status == "skip"
    assert by_name["cleanup"].status == "ok"
    assert "last cleanup succeeded" in by_name["cleanup"].detail


def test_a_dead_postgres_fails_clearly_within_the_timeout() -> None:
    started = time.monotonic()
    result = memctl(DEAD_POSTGRES, "--embedder", "none")
    elapsed = time.monotonic() - started

    assert result.exit_code == 1
    lines = {line.split()[0]: line for line in result.output.splitlines()[1:-1]}
    assert "FAIL" in lines["database"]
    assert "cannot reach postgresql+psycopg://postgres@127.0.0.1:1/test" in lines["database"]
    assert "Connection refused" in lines["database"]
    assert "needs database" in lines["schema"]  # not a second failure for the same cause
    assert result.output.splitlines()[-1] == "UNHEALTHY"
    assert elapsed < 10  # the library's 5 s connect timeout, not a hang


def test_a_missing_sqlite_file_fails_and_is_not_created(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'absent.db'}"
    result = memctl(url, "--embedder", "none", "--json")

    assert result.exit_code == 1
    assert statuses(result)["database"] == "fail"
    assert "no SQLite database file" in result.output
    assert list(tmp_path.iterdir()) == []


def test_a_schema_behind_head_fails(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = create_engine(url)
    upgrade(engine, "0005")
    engine.dispose()
    result = memctl(url, "--embedder", "none", "--json")

    assert result.exit_code == 1
    checks = {c["name"]: c for c in json.loads(result.output)["checks"]}
    assert checks["schema"]["status"] == "fail"
    assert "at 0005, head is" in checks["schema"]["detail"]
    assert "memctl migrate" in checks["schema"]["detail"]
    assert checks["flag_provider"]["status"] == "skip"


def test_redis_is_checked_when_configured(sqlite_url: str) -> None:
    good = run_health_checks(sqlite_url, redis_url="redis://127.0.0.1:6379", only=["redis"])
    assert [(r.name, r.status) for r in good.results] == [("redis", "ok")]
    bad = run_health_checks(sqlite_url, redis_url="redis://127.0.0.1:1/0", only=["redis"])
    assert not bad.ok
    assert "cannot reach redis://127.0.0.1:1/0" in bad.results[0].detail


def test_cleanup_runs_are_reported(sqlite_url: str) -> None:
    with Memory.open(sqlite_url, embedder=None) as memory:
        cleanup(memory)
        ok = run_health_checks(sqlite_url, only=["cleanup"])
        assert ok.results[-1].status == "ok"
        with memory.engine.begin() as connection:
            connection.execute(
                sa.text(
                    "UPDATE maintenance_runs SET status = 'failed', error = 'disk full' "
                    "WHERE id = (SELECT MAX(id) FROM maintenance_runs)"
                )
            )
    failed = run_health_checks(sqlite_url, only=["cleanup"])
    assert not failed.ok
    assert failed.results[-1].status == "fail" and "disk full" in failed.results[-1].detail
    assert [r.name for r in failed.results] == ["database", "schema", "cleanup"]


def test_the_real_embedder_loads(sqlite_url: str) -> None:
    report = run_health_checks(sqlite_url, embedder="minilm", only=["embedder"])
    (result,) = report.results
    assert result.status == "ok" and "384 dims" in result.detail


def test_checks_can_be_registered_and_a_raising_check_fails(sqlite_url: str) -> None:
    calls: list[str] = []

    def degraded(context: HealthContext) -> CheckOutcome:
        calls.append(str(context.url))
        raise RuntimeError("update channel degraded: redis down")

    register_health_check("updates_channel", degraded, requires=["database"])
    try:
        assert "updates_channel" in health_checks()
        with pytest.raises(InvalidInputError, match="already registered"):
            register_health_check("updates_channel", degraded)
        result = memctl(sqlite_url, "--embedder", "none", "--check", "updates_channel")
        assert result.exit_code == 1
        assert "RuntimeError: update channel degraded: redis down" in result.output
        assert calls == [str(sa.engine.make_url(sqlite_url).set(drivername="sqlite+pysqlite"))]
    finally:
        unregister_health_check("updates_channel")
    assert "updates_channel" not in health_checks()


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: register_health_check("x", lambda c: ("ok", ""), requires=["nope"]), "nope"),
        (lambda: register_health_check("bad name!", lambda c: ("ok", "")), "bad name!"),
        (lambda: unregister_health_check("nope"), "no health check named 'nope'"),
        (lambda: run_health_checks("sqlite://", only=["nope"]), "no health check named nope"),
    ],
)
def test_registry_misuse_is_refused(call: Any, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        call()


def test_cli_lists_the_checks() -> None:
    result = CliRunner().invoke(main, ["health", "--list"])
    assert result.exit_code == 0
    names = [line.split()[0] for line in result.output.splitlines()]
    assert names[:7] == [
        "database",
        "schema",
        "sqlite",
        "embedder",
        "flag_provider",
        "redis",
        "cleanup",
    ]
