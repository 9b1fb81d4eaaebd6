"""The open-loop load's pure logic (``benchmarks.measure``: arrivals, slopes, the search for
the highest passing rate) and the soak script's record: a CSV it wrote turned into slopes,
a markdown table and a PNG, and a few seconds of a real soak on a SQLite file."""

from __future__ import annotations

import csv
import math
import random
import re
import statistics
import subprocess
import sys
from itertools import islice
from pathlib import Path

import pytest

from benchmarks.measure import (
    arrivals,
    degradation_interval,
    doublings,
    highest_passing,
    slope_per_minute,
)

ROOT = Path(__file__).resolve().parents[2]
SOAK = ROOT / "benchmarks" / "soak.py"


def test_arrivals_are_a_poisson_stream_at_the_rate() -> None:
    times = list(islice(arrivals(random.Random(7), 4.0), 20_000))
    gaps = [later - earlier for earlier, later in zip([0.0, *times], times, strict=False)]
    assert all(gap > 0 for gap in gaps)  # strictly increasing
    assert statistics.fmean(gaps) == pytest.approx(0.25, rel=0.03)
    # Exponential gaps: the standard deviation equals the mean (a fixed tick would be 0).
    assert statistics.stdev(gaps) == pytest.approx(0.25, rel=0.05)
    assert times[-1] / len(times) == pytest.approx(0.25, rel=0.03)


def test_arrivals_repeat_with_the_seed_and_differ_without_it() -> None:
    first = list(islice(arrivals(random.Random(1), 2.0), 5))
    assert first == list(islice(arrivals(random.Random(1), 2.0), 5))
    assert first != list(islice(arrivals(random.Random(2), 2.0), 5))


@pytest.mark.parametrize("rate", [0.0, -1.0, math.nan])
def test_arrivals_refuse_a_rate_that_is_not_positive(rate: float) -> None:
    with pytest.raises(ValueError, match="rate"):
        next(arrivals(random.Random(1), rate))


def test_slope_per_minute_is_the_least_squares_slope() -> None:
    times = [0.0, 30.0, 60.0, 90.0, 120.0]
    assert slope_per_minute(times, [100.0, 101.0, 102.0, 103.0, 104.0]) == pytest.approx(2.0)
    assert slope_per_minute(times, [5.0] * 5) == 0.0
    # Noise around a flat line: the fit, not the last minus the first.
    assert slope_per_minute(times, [10.0, 12.0, 10.0, 12.0, 10.0]) == pytest.approx(0.0)
    assert slope_per_minute(times, [4.0, 3.0, 2.0, 1.0, 0.0]) == pytest.approx(-2.0)


@pytest.mark.parametrize("times", [[], [10.0], [10.0, 10.0]])
def test_slope_needs_two_distinct_times(times: list[float]) -> None:
    assert math.isnan(slope_per_minute(times, [1.0] * len(times)))


@pytest.mark.parametrize("limit", [0, 5, 10, 15, 20, 39, 40, 41, 80, 160, 161, 1000])
def test_highest_passing_finds_the_limit_with_few_trials(limit: int) -> None:
    candidates = [10, 20, 40, 80, 160]
    tried: list[int] = []

    def passes(rate: int) -> bool:
        tried.append(rate)
        return rate <= limit

    expected = max((rate for rate in candidates if rate <= limit), default=None)
    assert highest_passing(candidates, passes) == expected
    assert len(tried) <= 3  # bisection: ceil(log2(5 + 1))
    assert len(set(tried)) == len(tried)


def test_highest_passing_of_nothing_is_none() -> None:
    assert highest_passing([], lambda rate: True) is None


def test_degradation_interval_brackets_the_true_change() -> None:
    rng = random.Random(3)
    alone = [rng.lognormvariate(3, 0.5) for _ in range(600)]
    same = [rng.lognormvariate(3, 0.5) for _ in range(600)]
    slower = [1.5 * value for value in same]
    low, high = degradation_interval(alone, same)
    assert low < 0 < high  # the same distribution: no degradation can be told
    assert high - low < 0.4
    low, high = degradation_interval(alone, slower)
    assert low < 0.5 < high  # 50 % slower, within the interval
    assert low > 0.2  # and told apart from none


def test_degradation_interval_narrows_with_more_samples() -> None:
    rng = random.Random(4)
    widths = []
    for count in (100, 2000):
        alone = [rng.expovariate(1) for _ in range(count)]
        loaded = [rng.expovariate(1) for _ in range(count)]
        low, high = degradation_interval(alone, loaded)
        widths.append(high - low)
    assert widths[1] < widths[0] / 2


def test_doublings_end_at_the_top() -> None:
    assert doublings(10, 100) == [10, 20, 40, 80, 100]
    assert doublings(10, 80) == [10, 20, 40, 80]
    assert doublings(5, 5) == [5]
    with pytest.raises(ValueError):
        doublings(0, 10)
    with pytest.raises(ValueError):
        doublings(20, 10)


# -- the soak's record -----------------------------------------------------------------------


def run_soak(*arguments: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SOAK), *arguments],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        check=False,
    )


def write_samples(path: Path, rss: list[float]) -> None:
    """A soak's CSV as soak.py writes it: a sample every 30 s, the last after the load."""
    columns = (
        "t,rss_mb,malloc_mb,py_blocks,heap_mb,tracemalloc_mb,fds,threads,db_mb,calls,"
        "calls_per_s,p50_ms,p95_ms,errors,cleanup_runs,cleanup_rows,cleanup_failures,"
        "stem_cache_entries,load_1m,under_load"
    ).split(",")
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, columns)
        writer.writeheader()
        for number, value in enumerate(rss):
            last = number == len(rss) - 1
            writer.writerow(
                {
                    "t": 30.0 * (number + 1), "rss_mb": value, "malloc_mb": 40.0,
                    "py_blocks": 500_000, "heap_mb": "", "tracemalloc_mb": "",
                    "fds": 10 if last else 120, "threads": 4 if last else 105,
                    "db_mb": 20.0 + number, "calls": 1200, "calls_per_s": 40.0,
                    "p50_ms": 9.5, "p95_ms": 40.0, "errors": 0, "cleanup_runs": number // 10,
                    "cleanup_rows": 100 * (number // 10), "cleanup_failures": 0,
                    "stem_cache_entries": 300, "load_1m": 7.5, "under_load": 0 if last else 1,
                }
            )  # fmt: skip


def test_soak_report_from_a_csv(tmp_path: Path) -> None:
    # RSS climbs 2 MB per sample (4 MB/min) for 15 samples, then stays flat for 25; the
    # sample after the load (under_load 0) drops, and must not enter the fit.
    rss = [100.0 + 2 * min(number, 15) for number in range(40)] + [50.0]
    path = tmp_path / "soak.csv"
    write_samples(path, rss)
    plot = tmp_path / "soak.png"
    done = run_soak("--from-csv", str(path), "--plot", str(plot))
    assert done.returncode == 0, done.stderr
    report = done.stdout
    found = re.search(r"^RSS slope: (\S+) MB/min over the run, (\S+) MB/min", report, re.M)
    assert found, report
    whole, half = float(found[1]), float(found[2])
    assert 0 < whole < 4  # climbs, then flat
    assert half == pytest.approx(0.0, abs=0.05)  # the second half is flat
    assert "database slope: +2.000 MB/min" in report  # 1 MB per 30 s
    assert "calls: 49,200, errors: 0" in report
    table = [line for line in report.splitlines() if line.startswith("|")]
    assert table[0].startswith("| min | RSS MB |")
    assert len(table) >= 10
    assert table[-1].split(" | ")[1] == "50.0"  # the last sample closes the table
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert plot.stat().st_size > 20_000


def test_soak_report_refuses_an_empty_csv(tmp_path: Path) -> None:
    path = tmp_path / "empty.csv"
    write_samples(path, [])
    done = run_soak("--from-csv", str(path))
    assert done.returncode != 0
    assert "has no samples" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.slow
def test_a_short_soak_on_a_sqlite_file_records_every_series(tmp_path: Path) -> None:
    samples_path, plot = tmp_path / "soak.csv", tmp_path / "soak.png"
    done = run_soak(
        "--size", "1000", "--sessions", "10", "--rate", "20", "--duration", "6",
        "--interval", "1", "--cleanup-every", "1", "--working-window", "1",
        "--episodic-window", "3", "--csv", str(samples_path), "--plot", str(plot),
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    with samples_path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) >= 5
    loaded = [row for row in rows if row["under_load"] == "1"]
    assert loaded and rows[-1]["under_load"] == "0"
    assert all(float(row["rss_mb"]) > 10 for row in rows)
    assert all(float(row["malloc_mb"]) > 1 for row in rows)
    assert all(int(row["py_blocks"]) > 10_000 for row in rows)
    assert all(float(row["db_mb"]) > 0.1 for row in rows)
    # 10 session threads, the driver and the cleanup worker while loaded; they end after
    assert all(int(row["threads"]) >= 12 for row in loaded)
    assert int(rows[-1]["threads"]) < 12
    assert all(int(row["fds"]) > 3 for row in rows)
    # ~20 calls/s: far below would mean the open loop waits for the calls
    calls = sum(int(row["calls"]) for row in rows)
    assert 60 <= calls <= 180
    assert sum(int(row["errors"]) for row in rows) == 0
    # The cleanup ran and consolidated the pre-loaded working memories (older than 1 s).
    assert int(rows[-1]["cleanup_runs"]) >= 2
    assert int(rows[-1]["cleanup_rows"]) > 100
    assert plot.read_bytes()[:4] == b"\x89PNG"
