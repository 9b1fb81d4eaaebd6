"""Archives are kept like backups (issue 16, finding 7): a private directory, private files
that never follow a planted link, manifests that only name files inside the archive, and
restored rows that pass the same rules as API writes.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

import memory.ops
from memory import ArchiveError, HashingEmbedder, Memory
from memory.store.schema import database_revision

PHASE_1 = "0003"


def _store_with_rows(url: str) -> None:
    with Memory.open(url, embedder=HashingEmbedder()) as store:
        scope = store.scope("ada", "planner", "s1")
        scope.add("the launch code is 1234", metadata={"k": "v"})
        scope.set_preference("style", "terse")


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_a_planted_symlink_is_not_followed_and_files_are_private(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'memory.db'}"
    _store_with_rows(url)
    victim = tmp_path / "victim"
    victim.write_text("the victim's own data")
    victim.chmod(0o600)
    archive = tmp_path / "archive"
    archive.mkdir(mode=0o700)
    for name in ("memories.jsonl.tmp", "memories.jsonl", "manifest.json.tmp"):
        (archive / name).symlink_to(victim)

    memory.ops.rollback(url, PHASE_1, archive)

    assert victim.read_text() == "the victim's own data" and _mode(victim) == 0o600
    assert _mode(archive) == 0o700
    manifest = json.loads((archive / "manifest.json").read_text())
    for entry in manifest["tables"].values():
        path = archive / entry["file"]
        assert not path.is_symlink() and _mode(path) == 0o600
    assert _mode(archive / "manifest.json") == 0o600


def test_the_default_archive_directory_is_private(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path / 'memory.db'}"
    _store_with_rows(url)
    monkeypatch.chdir(tmp_path)
    done = memory.ops.rollback(url, PHASE_1)
    assert done.archive is not None
    assert _mode(tmp_path / done.archive) == 0o700


@pytest.mark.parametrize("kind", ["open-to-others", "symlink"])
def test_an_unsafe_archive_directory_is_refused_and_nothing_is_dropped(
    tmp_path: Path, kind: str
) -> None:
    url = f"sqlite:///{tmp_path / 'memory.db'}"
    _store_with_rows(url)
    head = memory.ops.head_revision()
    archive = tmp_path / "archive"
    if kind == "symlink":
        real = tmp_path / "elsewhere"
        real.mkdir(mode=0o700)
        archive.symlink_to(real)
    else:
        archive.mkdir()
        archive.chmod(0o755)
    with pytest.raises(ArchiveError, match="symbolic link|other users"):
        memory.ops.rollback(url, PHASE_1, archive)
    with Memory.open(url, embedder=None) as store:
        assert database_revision(store.engine) == head
        assert len(store.scope("ada", "planner").list()) == 1


def _archived(tmp_path: Path, url_for: Callable[[str], str], backend: str) -> tuple[str, Path]:
    url = url_for(backend)
    _store_with_rows(url)
    archive = tmp_path / "archive"
    memory.ops.rollback(url, PHASE_1, archive)
    memory.ops.migrate(url)
    return url, archive


def _rewrite(archive: Path, table: str, change: Callable[[dict[str, object]], None]) -> None:
    """Edit the archived rows of ``table`` and fix the manifest up, as an attacker can."""
    manifest = json.loads((archive / "manifest.json").read_text())
    entry = manifest["tables"][table]
    path = archive / entry["file"]
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    for row in rows:
        change(row)
    data = "".join(
        json.dumps(row, sort_keys=True, separators=(",", ":"), ensure_ascii=False) + "\n"
        for row in rows
    ).encode()
    path.write_bytes(data)
    entry["sha256"] = hashlib.sha256(data).hexdigest()
    (archive / "manifest.json").write_text(json.dumps(manifest))


BAD_ROWS: dict[str, Callable[[dict[str, object]], None]] = {
    "huge-content": lambda row: row.update(content="x" * 10_000_000),
    "nul-byte": lambda row: row.update(content="a\x00b"),
    "long-user": lambda row: row.update(user_id="u" * 5_000),
}


@pytest.mark.parametrize("bad", sorted(BAD_ROWS))
@pytest.mark.parametrize("backend", ["sqlite-file", "postgresql"])
def test_restored_rows_pass_the_api_rules(
    tmp_path: Path, url_for: Callable[[str], str], backend: str, bad: str
) -> None:
    url, archive = _archived(tmp_path, url_for, backend)
    _rewrite(archive, "memories", BAD_ROWS[bad])
    with pytest.raises(ArchiveError, match="memories"):
        memory.ops.restore_archive(url, archive)
    with Memory.open(url, embedder=None) as store:
        assert store.scope("ada", "planner").list() == []


def test_a_manifest_naming_a_file_outside_the_archive_is_refused(
    tmp_path: Path, url_for: Callable[[str], str]
) -> None:
    url, archive = _archived(tmp_path, url_for, "sqlite-file")
    outside = tmp_path / "outside.jsonl"
    manifest = json.loads((archive / "manifest.json").read_text())
    entry = manifest["tables"]["memories"]
    outside.write_bytes((archive / entry["file"]).read_bytes())
    for name in (str(outside), "../outside.jsonl"):
        entry["file"] = name
        (archive / "manifest.json").write_text(json.dumps(manifest))
        with pytest.raises(ArchiveError, match="not a file in the archive"):
            memory.ops.restore_archive(url, archive)
