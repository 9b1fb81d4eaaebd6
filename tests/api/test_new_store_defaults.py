"""A store this library creates starts with its features on; a Phase 1 database upgraded to
Phase 2 starts with them off; a flag that is off says so once per process."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from flags import (
    BUILTIN_FLAGS,
    USE_CROSS_AGENT_SHARING,
    USE_ENHANCED_INJECTION,
    USE_HIERARCHICAL_TIERS,
)
from memory import HashingEmbedder, Memory
from memory.cli import main
from memory.ops import audit_flags, list_flags, migrate
from tests.stores import upgraded_from_phase_1

pytestmark = pytest.mark.flags_as_configured


@pytest.fixture(autouse=True)
def _no_flag_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in BUILTIN_FLAGS:
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize("backend", ["sqlite-file", "sqlite-memory", "postgresql"])
def test_a_new_store_has_every_feature_on_and_the_audit_says_why(
    backend: str, url_for: Callable[[str], str], make_postgres_database: Callable[[], str]
) -> None:
    # A database of its own: the module's PostgreSQL database may already hold a schema.
    url = make_postgres_database() if backend == "postgresql" else url_for(backend)
    with Memory.open(url, embedder=HashingEmbedder()) as store:
        scope = store.scope("ada", "planner", "s1")
        assert scope.add("Ada prefers short answers", tier="semantic").tier == "semantic"
        assert scope.inject("answers").disabled_by is None
        assert store.sharing_enabled("ada", "reviewer")
        listed = {item.flag.name: item.flag for item in list_flags(store.engine).flags}
        entries = audit_flags(store.engine)
    assert {name: (flag.enabled, flag.rollout) for name, flag in listed.items()} == {
        name: (True, 100) for name in BUILTIN_FLAGS
    }
    assert sorted(entry.flag for entry in entries) == sorted(BUILTIN_FLAGS)
    assert {(entry.actor, entry.action) for entry in entries} == {("memory", "set")}
    assert all("new store" in (entry.reason or "") for entry in entries)


def test_memctl_migrate_of_an_empty_database_starts_the_features_on(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'new.db'}"
    assert migrate(url).before is None
    assert all(item.flag.enabled and item.flag.rollout == 100 for item in list_flags(url).flags)


def test_a_phase_1_database_upgraded_to_phase_2_keeps_every_feature_off(tmp_path: Path) -> None:
    url = upgraded_from_phase_1(f"sqlite:///{tmp_path / 'phase1.db'}")
    with Memory.open(url, embedder=HashingEmbedder()) as store:
        scope = store.scope("ada", "planner")
        assert scope.add("Ada prefers short answers", tier="semantic").tier == "working"
        assert scope.inject("answers").disabled_by == USE_ENHANCED_INJECTION
        assert not store.sharing_enabled("ada", "reviewer")
    assert audit_flags(url) == []


def test_flags_set_on_works_on_a_store_without_traffic_and_says_why_it_refuses_otherwise(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'memory.db'}"
    runner = CliRunner()
    migrate(url)

    def memctl(*arguments: str) -> tuple[int, str]:
        result = runner.invoke(main, ["--database-url", url, *arguments])
        return result.exit_code, result.output

    assert memctl("flags", "reset")[0] == 0  # every flag off, as an upgraded store has them
    code, output = memctl("flags", "set", USE_ENHANCED_INJECTION, "--on")
    assert code == 0, output
    assert "no traffic" in output

    with Memory.open(url, embedder=HashingEmbedder()) as store:
        store.scope("ada", "planner").add("Ada prefers short answers")
    code, output = memctl("flags", "set", USE_HIERARCHICAL_TIERS, "--on")
    assert code == 2
    assert "skips a stage" in output and "the store has traffic" in output


def test_a_flag_that_is_off_says_so_once_per_process_naming_the_command(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'memory.db'}"
    migrate(url)
    assert CliRunner().invoke(main, ["--database-url", url, "flags", "reset"]).exit_code == 0
    program = f"""
from memory import HashingEmbedder, Memory
with Memory.open({url!r}, embedder=HashingEmbedder()) as store:
    scope = store.scope("ada", "planner")
    for _ in range(3):
        scope.add("Ada prefers short answers", tier="semantic")
        scope.inject("answers")
        scope.share(tier="working", agents=["reviewer"])
"""
    result = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=120, check=True
    )
    lines = [line for line in result.stderr.splitlines() if "FlagOffWarning" in line]
    assert len(lines) == 3, result.stderr
    for flag in (USE_HIERARCHICAL_TIERS, USE_ENHANCED_INJECTION, USE_CROSS_AGENT_SHARING):
        (line,) = [line for line in lines if f"{flag} is off" in line]
        assert f"memctl flags set {flag} --on" in line
