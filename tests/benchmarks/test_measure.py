"""The pure logic of ``benchmarks.measure``: one percentile definition, the summary's names,
and an interleaving order that gives every operation the same rounds and positions."""

from __future__ import annotations

import math
import random
import statistics
from collections import Counter

import numpy as np
import pytest

from benchmarks.measure import interleaved, percentile, shuffled_rounds, summary, timed


@pytest.mark.parametrize("count", [1, 2, 5, 10, 101, 1000])
@pytest.mark.parametrize("q", [0.0, 0.25, 0.5, 0.95, 0.99, 1.0])
def test_percentile_is_numpys_linear_interpolation(count: int, q: float) -> None:
    values = [random.Random(count).uniform(0, 100) for _ in range(count)]
    assert percentile(values, q) == pytest.approx(float(np.percentile(values, 100 * q)))


@pytest.mark.parametrize("values", [[3.0], [4.0, 1.0], [5.0, 1.0, 3.0, 2.0], list(range(10))])
def test_the_median_is_statistics_median(values: list[float]) -> None:
    assert percentile(values, 0.5) == statistics.median(values)


def test_percentile_of_nothing_is_nan() -> None:
    assert math.isnan(percentile([], 0.95))


def test_summary_names_units_and_rounding() -> None:
    values = [float(v) for v in range(1, 101)]  # 1 .. 100
    assert summary(values, ("n", "median", "p95", "mean", "min", "max"), unit="us", digits=2) == {
        "n": 100,
        "median_us": 50.5,
        "p95_us": 95.05,
        "mean_us": 50.5,
        "min_us": 1.0,
        "max_us": 100.0,
    }
    assert summary([1.23456, 2.0], ("p50",), unit="", digits=3) == {"p50": 1.617}
    assert summary(values) == {"n": 100, "p50_ms": 50.5, "p95_ms": 95.05, "p99_ms": 99.01}


def test_summary_of_nothing() -> None:
    figures = summary([], ("n", "p50", "max"))
    assert figures["n"] == 0
    assert math.isnan(figures["p50_ms"]) and math.isnan(figures["max_ms"])


def test_every_round_runs_every_operation_once_and_positions_are_shared() -> None:
    names = ["op", "baseline", "floor"]
    orders = list(shuffled_rounds(names, 300, random.Random(1)))
    assert len(orders) == 300
    assert all(sorted(order) == sorted(names) for order in orders)
    firsts = Counter(order[0] for order in orders)
    assert set(firsts) == set(names)  # shuffled: no operation always runs first
    assert all(60 < count < 140 for count in firsts.values())
    # Seeded: the same order again.
    assert orders == list(shuffled_rounds(names, 300, random.Random(1)))


def test_interleaved_times_each_op_once_per_measured_round() -> None:
    calls: list[tuple[str, int]] = []
    ops = {name: (lambda number, name=name: calls.append((name, number))) for name in "abc"}
    samples = interleaved(ops, rounds=4, rng=random.Random(2), warmup=2)
    assert {name: len(values) for name, values in samples.items()} == {"a": 4, "b": 4, "c": 4}
    assert all(value >= 0 for values in samples.values() for value in values)
    assert Counter(name for name, _ in calls) == {"a": 6, "b": 6, "c": 6}
    # One round's operations are called with the same round number, rounds in order.
    assert [number for _, number in calls] == [n for n in range(6) for _ in range(3)]


def test_timed_returns_the_result_and_reads_clocks_only_when_given() -> None:
    ticks = iter([10.0, 10.5])
    result, timing = timed(lambda x: x * 2, 21, cpu=lambda: next(ticks))
    assert result == 42
    assert timing.cpu == pytest.approx(500.0)  # seconds -> ms
    assert timing.wall >= 0 and timing.wait == 0.0
