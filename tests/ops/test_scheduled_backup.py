"""Scheduled backups: ``memory.ops.scheduled_backup`` (``memctl backup DIR --keep N
--max-age D --metrics-file F``) writes a new verified backup named after the UTC time,
removes old scheduled backups by count and age and nothing else, leaves the time of the last
good backup for node_exporter, and ``memctl health`` reports that backup's age against the
1-hour RPO. The systemd service and timer that run it pass ``systemd-analyze verify``."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from prometheus_client.parser import text_string_to_metric_families

from memory import InvalidInputError, Memory
from memory.cli import main
from memory.ops import BACKUP_RPO, latest_backup, run_health_checks, scheduled_backup

ROOT = Path(__file__).resolve().parents[2]
SYSTEMD = ROOT / "deploy" / "systemd"


def seeded(url: str) -> str:
    with Memory.open(url) as memory:
        memory.scope("ada", "planner", "s1").add("split the invoice export in two")
    return url


def aged_copy(backup: Path, root: Path, age: timedelta) -> Path:
    """A copy of ``backup`` that says it was taken ``age`` ago, named as the schedule names
    it (the manifest's time is what pruning and health read; the files stay intact)."""
    taken = datetime.now(UTC) - age
    copy = root / taken.strftime("%Y%m%dT%H%M%SZ")
    shutil.copytree(backup, copy)
    manifest = json.loads((copy / "manifest.json").read_text("utf-8"))
    manifest["created_at"] = taken.isoformat()
    (copy / "manifest.json").write_text(json.dumps(manifest), "utf-8")
    return copy


@pytest.fixture(params=["sqlite-file", "postgresql"])
def url(request: pytest.FixtureRequest, url_for: Callable[[str], str]) -> str:
    return seeded(url_for(request.param))


def test_keep_removes_the_oldest_scheduled_backups_and_nothing_else(
    url: str, tmp_path: Path
) -> None:
    root = tmp_path / "backups"
    first = scheduled_backup(url, root, keep=3)
    assert first.removed == () and first.backup.directory.parent == root
    older = [aged_copy(first.backup.directory, root, timedelta(hours=h)) for h in (1, 2, 3, 4)]
    # Never removed: a backup an operator named, a damaged one (evidence), other files.
    by_hand = shutil.copytree(first.backup.directory, root / "before-migration")
    damaged = aged_copy(first.backup.directory, root, timedelta(hours=5))
    (damaged / "manifest.json").write_text("{", "utf-8")
    (root / "notes.txt").write_text("keep me", "utf-8")
    shutil.rmtree(first.backup.directory)  # the next run is the newest of all

    run = scheduled_backup(url, root, keep=3)

    assert run.backup.directory.exists() and run.backup.revision == first.backup.revision
    assert sorted(run.removed) == sorted(older[2:])  # the new one and the two youngest stay
    remaining = {path.name for path in root.iterdir()}
    assert remaining == {
        run.backup.directory.name, older[0].name, older[1].name, by_hand.name, damaged.name,
        "notes.txt",
    }  # fmt: skip


def test_max_age_removes_backups_older_than_it(tmp_path: Path) -> None:
    url = seeded(f"sqlite:///{tmp_path / 'memory.db'}")
    root = tmp_path / "backups"
    first = scheduled_backup(url, root)
    young = aged_copy(first.backup.directory, root, timedelta(minutes=90))
    old = aged_copy(first.backup.directory, root, timedelta(hours=3))
    shutil.rmtree(first.backup.directory)
    run = scheduled_backup(url, root, max_age="2h")
    assert run.removed == (old,)
    assert young.exists() and run.backup.directory.exists()


def test_the_metrics_file_holds_the_last_good_backup_time(tmp_path: Path) -> None:
    url = seeded(f"sqlite:///{tmp_path / 'memory.db'}")
    metrics = tmp_path / "textfile" / "tiered_memory_backup.prom"
    metrics.parent.mkdir()
    run = scheduled_backup(url, tmp_path / "backups", keep=2, metrics_file=metrics)
    families = {f.name: f for f in text_string_to_metric_families(metrics.read_text("utf-8"))}
    sample = families["memory_backup_last_success_timestamp_seconds"].samples[0]
    assert sample.value == pytest.approx(run.backup.created_at.timestamp())
    # The series the MemoryBackupStale alert reads, in a form Prometheus accepts.
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is not installed: apt-get install --no-install-recommends prometheus")
    lint = subprocess.run(
        [promtool, "check", "metrics"], input=metrics.read_text("utf-8"), capture_output=True,
        text=True, timeout=60,
    )  # fmt: skip
    assert lint.returncode == 0, lint.stdout + lint.stderr


@pytest.mark.parametrize(
    ("options", "problem"),
    [
        ({"keep": 0}, "keep"),
        ({"keep": True}, "keep"),
        ({"keep": "3"}, "keep"),
        ({"max_age": "-1h"}, "max_age"),
        ({"max_age": "7 days"}, "max_age"),
        ({"max_age": timedelta(0)}, "max_age"),
    ],
)
def test_bad_retention_is_refused_before_anything_is_written(
    tmp_path: Path, options: dict[str, object], problem: str
) -> None:
    url = seeded(f"sqlite:///{tmp_path / 'memory.db'}")
    with pytest.raises(InvalidInputError, match=problem):
        scheduled_backup(url, tmp_path / "backups", **options)  # type: ignore[arg-type]
    assert not (tmp_path / "backups").exists()


def test_a_file_where_the_backups_go_is_refused(tmp_path: Path) -> None:
    url = seeded(f"sqlite:///{tmp_path / 'memory.db'}")
    (tmp_path / "backups").write_text("not a directory", "utf-8")
    with pytest.raises(InvalidInputError, match="not a directory"):
        scheduled_backup(url, tmp_path / "backups", keep=1)


def test_a_metrics_file_that_cannot_be_written_is_refused_before_the_backup(
    tmp_path: Path,
) -> None:
    url = seeded(f"sqlite:///{tmp_path / 'memory.db'}")
    for metrics in (tmp_path / "missing" / "backup.prom", tmp_path):
        with pytest.raises(InvalidInputError, match="metrics_file"):
            scheduled_backup(url, tmp_path / "backups", keep=1, metrics_file=metrics)
    assert not (tmp_path / "backups").exists()


def backup_check(backups: Path | None) -> tuple[str, str]:
    report = run_health_checks(
        "sqlite://", embedder="none", backup_dir=backups, only=["backup"]
    )
    (result,) = report.results
    return result.status, result.detail


def test_health_reports_the_last_good_backups_age_against_the_rpo(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MEMORY_BACKUP_DIR", raising=False)
    assert backup_check(None)[0] == "skip"
    root = tmp_path / "backups"
    assert backup_check(root) == ("fail", f"no complete backup in {root}")
    url = seeded(f"sqlite:///{tmp_path / 'memory.db'}")
    first = scheduled_backup(url, root)
    status, detail = backup_check(root)
    assert status == "ok" and "last good backup 0 min old" in detail, detail
    stale = aged_copy(first.backup.directory, root, BACKUP_RPO + timedelta(minutes=5))
    shutil.rmtree(first.backup.directory)
    status, detail = backup_check(root)
    assert status == "warn" and "1 h 05 min old" in detail and "RPO" in detail, detail
    assert latest_backup(root) is not None and latest_backup(root).directory == stale  # type: ignore[union-attr]
    # A truncated file makes a backup incomplete: not "good", so not the last good one.
    (stale / "memory.db").write_bytes(b"")
    assert backup_check(root)[0] == "fail"
    # The environment names the directory when the caller does not.
    monkeypatch.setenv("MEMORY_BACKUP_DIR", str(root))
    assert backup_check(None)[0] == "fail"


def test_memctl_runs_the_schedule_and_health_shows_the_age(tmp_path: Path) -> None:
    database = f"sqlite:///{tmp_path / 'memory.db'}"
    seeded(database)
    root, metrics = tmp_path / "backups", tmp_path / "backup.prom"
    runner = CliRunner()
    result = runner.invoke(main, ["--database-url", database, "backup", str(root), "--keep",
                                  "2", "--max-age", "7d", "--metrics-file", str(metrics)])
    assert result.exit_code == 0, result.output
    assert "backup written and verified" in result.output and metrics.is_file()
    result = runner.invoke(main, ["--database-url", database, "health", "--embedder", "none",
                                  "--backups", str(root), "--check", "backup"])
    assert result.exit_code == 0, result.output
    assert "last good backup 0 min old" in result.output
    first = next(root.iterdir())
    time.sleep(1.1)  # backups are named by the second
    result = runner.invoke(main, ["--database-url", database, "backup", str(root), "--keep",
                                  "1", "--json"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.output)
    assert document["written"] is True and document["verified"] is True
    assert document["removed"] == [str(first)] and not first.exists()
    # Wrong options: one line naming the problem, no traceback, nothing written.
    for arguments, message in [
        (["--max-age", "soon"], "max_age: 'soon' is not a duration"),
        (["--keep", "0"], "0 is not in the range"),
        (["--metrics-file", str(metrics)], "--metrics-file goes with --keep or --max-age"),
        (["--verify", "--keep", "1"], "--verify checks one backup"),
    ]:
        result = runner.invoke(main, ["--database-url", database, "backup",
                                      str(tmp_path / "other"), *arguments])
        assert result.exit_code != 0 and message in result.output, result.output
        assert "Traceback" not in result.output and not (tmp_path / "other").exists()


def test_the_systemd_units_pass_systemd_analyze(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.fail("systemd-analyze is not installed: apt-get install systemd")
    service = (SYSTEMD / "tiered-memory-backup.service").read_text("utf-8")
    timer = (SYSTEMD / "tiered-memory-backup.timer").read_text("utf-8")
    assert "OnCalendar=hourly" in timer and "Persistent=true" in timer
    assert "memctl backup" in service and "--keep" in service and "--metrics-file" in service
    # verify resolves ExecStart's binary: point it at this memctl, in a copy.
    memctl = str(Path(sys.executable).parent / "memctl")
    (tmp_path / "tiered-memory-backup.service").write_text(
        service.replace("/opt/tiered-memory/.venv/bin/memctl", memctl), "utf-8"
    )
    shutil.copy(SYSTEMD / "tiered-memory-backup.timer", tmp_path)
    result = subprocess.run(
        [analyze, "verify", str(tmp_path / "tiered-memory-backup.timer"),
         str(tmp_path / "tiered-memory-backup.service")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    # verify exits 0 on a directive it cannot parse, and says so: any output is a finding.
    assert result.returncode == 0 and result.stdout + result.stderr == "", result.stderr
