"""The wheel is what operators install: it must carry the migrations inside the ``memory``
package and migrate a database with nothing but the installed ``memctl``.

The build runs on a copy of the sources in a temporary directory, so that setuptools'
``build/`` and ``*.egg-info`` never land in the repository, and the installed package runs
from a directory where the source tree cannot be imported.
"""

from __future__ import annotations

import os
import re
import shutil
import sqlite3
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import memory
import memory.ops
from benchmarks.first_command import run_round

REPOSITORY = Path(__file__).resolve().parent.parent
SOURCES = ("pyproject.toml", "README.md", "memory", "migrations", "flags")
TIMEOUT_SECONDS = 900

pytestmark = pytest.mark.slow


def _run(command: list[str | Path], cwd: Path, env: dict[str, str]) -> str:
    completed = subprocess.run(
        [str(part) for part in command], cwd=cwd, env=env, capture_output=True, text=True,
        timeout=TIMEOUT_SECONDS, check=False,
    )
    assert completed.returncode == 0, (
        f"{command} exited {completed.returncode}\n"
        f"stdout:\n{completed.stdout}\nstderr:\n{completed.stderr}"
    )
    return completed.stdout


def _clean_environment(tmp_path: Path) -> dict[str, str]:
    """The environment without anything that could point at the source tree or another
    database, with pip's cache kept inside ``tmp_path``."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", memory.ops.DATABASE_URL_ENV}
    }
    env["PIP_CACHE_DIR"] = str(tmp_path / "pip-cache")
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


def _copy_sources(destination: Path) -> None:
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build", "dist")
    for name in SOURCES:
        source = REPOSITORY / name
        if source.is_dir():
            shutil.copytree(source, destination / name, ignore=ignore)
        elif source.exists():
            shutil.copy2(source, destination / name)
    readme = destination / "README.md"
    if not readme.exists():
        readme.write_text("# tiered-memory\n", "utf-8")


def test_wheel_ships_the_migrations_and_memctl_migrates_from_it(tmp_path: Path) -> None:
    env = _clean_environment(tmp_path)
    source = tmp_path / "source"
    source.mkdir()
    _copy_sources(source)

    dist = tmp_path / "dist"
    _run([sys.executable, "-m", "build", "--wheel", "--outdir", dist, source], source, env)
    (wheel,) = dist.glob("tiered_memory-*.whl")

    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    for expected in (
        "memory/__init__.py",
        "memory/py.typed",
        "memory/_migrations/__init__.py",
        "memory/_migrations/env.py",
        "memory/_migrations/script.py.mako",
        "memory/_migrations/versions/0001_entity_graph.py",
        "memory/_migrations/versions/0004_phase_2_hierarchical_memory.py",
        "flags/__init__.py",
        "memory/integrations/mcp_server.py",
        "memory/integrations/langgraph.py",
    ):
        assert expected in names, f"{expected} is missing from {wheel.name}"
    top_level = {name.split("/", 1)[0] for name in names}
    assert "migrations" not in top_level, sorted(top_level)
    assert "tests" not in top_level, sorted(top_level)
    entry_points = next(name for name in names if name.endswith(".dist-info/entry_points.txt"))
    with zipfile.ZipFile(wheel) as archive:
        assert "memctl = memory.cli:main" in archive.read(entry_points).decode("utf-8")

    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", venv], tmp_path, env)
    bin_dir = venv / "bin"
    _run([bin_dir / "python", "-m", "pip", "install", "--quiet", wheel], tmp_path, env)

    # Run from a directory with no sources in it: only the installed wheel is importable.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    located = _run(
        [bin_dir / "python", "-c",
         "import importlib.util, memory._migrations as m; print(m.__file__); "
         "print(importlib.util.find_spec('migrations'))"],
        elsewhere, env,
    ).splitlines()
    assert Path(located[0]).is_relative_to(venv), located
    assert located[1] == "None", "a top-level `migrations` package is importable"

    database = tmp_path / "x.db"
    url = f"sqlite:///{database}"
    memctl = bin_dir / "memctl"
    head = memory.ops.head_revision()
    output = _run([memctl, "--database-url", url, "migrate"], elsewhere, env)
    assert output.strip() == f"migrated: empty -> {head}"
    output = _run([memctl, "--database-url", url, "check"], elsewhere, env)
    assert output.strip() == f"ok: at head {head}"
    connection = sqlite3.connect(database)
    try:
        tables = {row[0] for row in connection.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'"
        )}
        (version,) = connection.execute("SELECT version_num FROM alembic_version").fetchone()
    finally:
        connection.close()
    assert {"memories", "memory_metadata", "user_preferences", "code_patterns",
            "session_state", "entities", "observations", "relations"} <= tables
    assert version == head

    # The downgrade scripts (and the archive code they import) work from the wheel too.
    archive_dir = tmp_path / "archive"
    _run([memctl, "--database-url", url, "rollback", "--to", "0003", "--archive", archive_dir],
         elsewhere, env)
    rolled_back = subprocess.run(
        [str(memctl), "--database-url", url, "check"], cwd=elsewhere, env=env,
        capture_output=True, text=True, timeout=TIMEOUT_SECONDS, check=False,
    )
    assert rolled_back.returncode == 1, rolled_back
    assert "NOT AT HEAD" in rolled_back.stderr
    _run([memctl, "--database-url", url, "migrate"], elsewhere, env)
    _run([memctl, "--database-url", url, "restore-archive", archive_dir], elsewhere, env)
    _run([memctl, "--database-url", url, "check"], elsewhere, env)
    assert sorted(path.name for path in elsewhere.iterdir()) == []


def test_the_readmes_first_command_installs_no_torch_and_the_demo_embeds(tmp_path: Path) -> None:
    """The README's first command in a new directory (benchmarks/first_command.py times it):
    a light install, and a demo whose search scores by vectors, not keywords alone."""
    tree = tmp_path / "tree"
    tree.mkdir()
    _copy_sources(tree)
    result = run_round(tree, tmp_path, cold=False)
    assert result["heavy"] == "", f"installed: {result['heavy']}"
    # torch alone takes about 750 MiB; the light install about 410 MiB (README).
    assert result["venv_mib"] < 500, result["venv_mib"]
    vector_scores = [float(s) for s in re.findall(r", vector (\d+\.\d+)\)", result["output"])]
    assert len(vector_scores) == 3 and max(vector_scores) > 0, result["output"]
