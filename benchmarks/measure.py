"""How every benchmark measures: timing, percentiles, same-run baselines and the run's facts.

One definition of each, so figures from different scripts mean the same thing:

- ``percentile``: linear interpolation between the closest ranks (NumPy's default), so the
  median is ``statistics.median``; ``summary`` reports it and its kin under the names a
  script asks for;
- ``timed``: one call's wall time, and on request a CPU clock's time and the run-queue wait
  (``RunQueueWait``: time runnable but without a CPU, the noise a shared machine adds);
  ``machine_cpu_seconds``: what the whole machine used, other processes included;
- ``interleaved`` / ``shuffled_rounds``: operations and their baselines run round-robin in a
  new shuffled order each round, so machine noise hits them all alike;
- ``table`` and ``emit``: the figures as aligned columns, then the JSON line, with the
  commit, whether the tree was dirty, the load average and the machine (``run_facts``)
  added to every line.

Scripts run as ``python benchmarks/x.py`` import this module by its plain name; tests import
``benchmarks.measure``.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import json
import math
import os
import platform
import random
import statistics
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

# The names ``summary`` knows; "median" and "p50" are the same figure under two names.
QUANTILES = {"p50": 0.50, "median": 0.50, "p95": 0.95, "p99": 0.99}


def _interpolate(ordered: Sequence[float], q: float) -> float:
    position = (len(ordered) - 1) * q
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def percentile(values: Iterable[float], q: float) -> float:
    """The ``q`` quantile (0 <= q <= 1), interpolated linearly; NaN without values.

    >>> percentile([1, 2, 3, 4], 0.5)
    2.5
    """
    ordered = sorted(values)
    return _interpolate(ordered, q) if ordered else math.nan


def summary(
    values: Iterable[float],
    stats: Sequence[str] = ("n", "p50", "p95", "p99"),
    unit: str = "ms",
    digits: int = 3,
) -> dict[str, Any]:
    """The figures named in ``stats`` (``n``, ``p50``/``median``, ``p95``, ``p99``, ``mean``,
    ``min``, ``max``), rounded, keyed ``<name>_<unit>`` (``n`` and an empty unit: bare).

    >>> summary([3.0, 1.0, 2.0], ("n", "median", "max"), unit="us")
    {'n': 3, 'median_us': 2.0, 'max_us': 3.0}
    """
    ordered = sorted(values)
    figures: dict[str, Any] = {}
    for name in stats:
        key = f"{name}_{unit}" if unit and name != "n" else name
        if name == "n":
            figures[key] = len(ordered)
        elif not ordered:
            figures[key] = math.nan
        elif name == "mean":
            figures[key] = round(sum(ordered) / len(ordered), digits)
        elif name == "min":
            figures[key] = round(ordered[0], digits)
        elif name == "max":
            figures[key] = round(ordered[-1], digits)
        else:
            figures[key] = round(_interpolate(ordered, QUANTILES[name]), digits)
    return figures


# -- timing --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Timing:
    """One timed call, in milliseconds; ``cpu`` and ``wait`` are 0 unless measured."""

    wall: float
    cpu: float = 0.0
    wait: float = 0.0


def timed(
    call: Callable[..., Any],
    *args: Any,
    cpu: Callable[[], float] | None = None,
    wait: Callable[[], float] | None = None,
) -> tuple[Any, Timing]:
    """``call(*args)`` and its ``Timing``. ``cpu`` is a clock in seconds (``time.process_time``
    for this process, ``time.thread_time`` for this thread); ``wait`` a run-queue clock in
    seconds (a ``RunQueueWait``). Each is read only when given: a read costs microseconds."""
    waited = wait() if wait else 0.0
    used = cpu() if cpu else 0.0
    start = time.perf_counter_ns()
    result = call(*args)
    wall = time.perf_counter_ns() - start
    used = cpu() - used if cpu else 0.0
    waited = wait() - waited if wait else 0.0
    return result, Timing(wall / 1e6, used * 1000, waited * 1000)


def call_each(call: Callable[[Any], object], arguments: Iterable[Any]) -> None:
    """``call(argument)`` for every argument, the garbage collector paused: a batch of
    microsecond calls, timed as a whole, must not absorb a collection that the calls did not
    cause alone."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        for argument in arguments:
            call(argument)
    finally:
        if enabled:
            gc.enable()


def _schedstat_seconds(text: bytes | str) -> float:
    return int(text.split()[1]) / 1e9  # the second field: ns runnable but not running


def run_queue_wait(pid: int | str = "self") -> float:
    """Seconds ``pid`` has spent runnable but without a CPU so far (one read; 0 when the
    process is gone or the system has no ``/proc/<pid>/schedstat``)."""
    try:
        return _schedstat_seconds(Path(f"/proc/{pid}/schedstat").read_text())
    except (OSError, IndexError, ValueError):
        return 0.0


class RunQueueWait:
    """``run_queue_wait`` summed over ``pids`` (``"self"``, ``"thread-self"`` or numbers), for
    reads that bracket every sample: the files stay open and a read costs ~2 µs. The
    difference across a sample is what other processes took from it on a shared machine.
    ``"thread-self"`` is the thread that opened the probe."""

    def __init__(self, pids: Iterable[int | str] = ("self",)) -> None:
        self.fds: list[int] = []
        self.open(pids)

    def open(self, pids: Iterable[int | str]) -> None:
        """Probe ``pids`` from now on (for example once a pool holds its connections)."""
        self.close()
        for pid in pids:
            with contextlib.suppress(OSError):  # gone, or no schedstat on this system
                self.fds.append(os.open(f"/proc/{pid}/schedstat", os.O_RDONLY))

    def __call__(self) -> float:
        total = 0.0
        for fd in self.fds:
            with contextlib.suppress(OSError, IndexError, ValueError):  # the process ended
                total += _schedstat_seconds(os.pread(fd, 128, 0))
        return total

    def close(self) -> None:
        for fd in self.fds:
            os.close(fd)
        self.fds = []


def machine_cpu_seconds() -> tuple[float, float]:
    """(busy, stolen) CPU seconds of the whole machine since boot, from ``/proc/stat``: busy
    is every core's time neither idle nor waiting for I/O, so other processes on a shared
    machine show up in its difference across a phase; stolen is the hypervisor's part."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
        user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, fields[:8])
    except (OSError, IndexError, ValueError):
        return math.nan, math.nan
    tick = os.sysconf("SC_CLK_TCK")
    return (user + nice + system + irq + softirq + steal) / tick, steal / tick


# -- same-run baselines --------------------------------------------------------------------------


def shuffled_rounds(items: Iterable[T], rounds: int, rng: random.Random) -> Iterator[list[T]]:
    """``rounds`` orders of ``items`` (operations or their names), each a new shuffle: run
    every operation once per round in that order, so an operation and its baseline see the
    same machine."""
    order = list(items)
    for _ in range(rounds):
        rng.shuffle(order)
        yield list(order)


def interleaved(
    ops: Mapping[str, Callable[[int], object]], rounds: int, rng: random.Random, warmup: int = 0
) -> dict[str, list[float]]:
    """Each op's wall time in ms, once per round after ``warmup`` rounds, in shuffled order
    (``shuffled_rounds``). An op is called with the round's number (warm-up rounds first),
    so that the operations of one round can share an input."""
    samples: dict[str, list[float]] = {name: [] for name in ops}
    for number, order in enumerate(shuffled_rounds(ops, warmup + rounds, rng)):
        for name in order:
            _, timing = timed(ops[name], number)
            if number >= warmup:
                samples[name].append(timing.wall)
    return samples


# -- open-loop arrivals, trends and limits ------------------------------------------------------


def arrivals(rng: random.Random, rate: float) -> Iterator[float]:
    """The intended start times (seconds from 0) of a Poisson stream at ``rate`` per second:
    independent exponential gaps, the way calls from users who do not wait for each other
    arrive. An open-loop driver starts each call at its time (or at once if it is late) and
    measures latency from that time, so a slow call delays the calls queued behind it in
    the figures too (no coordinated omission).

    >>> times = arrivals(random.Random(1), 2.0)
    >>> [round(next(times), 3) for _ in range(3)]
    [0.072, 1.012, 1.734]
    """
    if not rate > 0:
        raise ValueError(f"rate: must be positive, not {rate!r}")
    moment = 0.0
    while True:
        moment += rng.expovariate(rate)
        yield moment


def slope_per_minute(times: Sequence[float], values: Sequence[float]) -> float:
    """The least-squares slope of ``values`` against ``times`` (seconds), per minute; NaN
    with fewer than two distinct times.

    >>> slope_per_minute([0, 60, 120], [10.0, 11.0, 12.0])
    1.0
    """
    if len(set(times)) < 2:
        return math.nan
    return 60 * statistics.linear_regression(times, values).slope


def degradation_interval(
    alone: Sequence[float],
    loaded: Sequence[float],
    q: float = 0.95,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """A bootstrap confidence interval (percentile method, 2,000 resamples) of how much worse
    the ``q`` quantile of ``loaded`` is than that of ``alone``: ``percentile(loaded, q) /
    percentile(alone, q) - 1``. It shows how finely the samples can tell a degradation from
    none (the sampling error only: the machine's drift between runs is not in it).

    >>> low, high = degradation_interval([10.0, 11.0, 12.0] * 50, [20.0, 22.0, 24.0] * 50)
    >>> round(low, 2), round(high, 2)
    (1.0, 1.0)
    """
    # Imported here: every benchmark imports this module, few need SciPy.
    import numpy as np
    from scipy.stats import bootstrap

    def statistic(first: Any, second: Any, axis: int) -> Any:
        worse = np.percentile(second, 100 * q, axis=axis)
        return worse / np.percentile(first, 100 * q, axis=axis) - 1

    result = bootstrap(
        (np.asarray(alone), np.asarray(loaded)),
        statistic,
        n_resamples=2000,
        confidence_level=confidence,
        method="percentile",
        rng=np.random.default_rng(seed),
    )
    interval = result.confidence_interval
    return float(interval.low), float(interval.high)


def doublings(start: float, top: float) -> list[float]:
    """``start`` doubled until the next doubling would pass ``top``, then ``top``: the rates
    a search for a limit tries.

    >>> doublings(10, 100)
    [10, 20, 40, 80, 100]
    """
    if not 0 < start <= top:
        raise ValueError(f"need 0 < start <= top, not {start!r} and {top!r}")
    found = [start]
    while found[-1] * 2 < top:
        found.append(found[-1] * 2)
    return found if found[-1] == top else [*found, top]


def highest_passing(candidates: Sequence[float], passes: Callable[[float], bool]) -> float | None:
    """The largest of the ascending ``candidates`` for which ``passes`` holds, searching by
    bisection (a limit such as "p95 degrades less than 5 %" is assumed to hold below some
    rate and fail above it); None when even the smallest fails. ``passes`` is called
    about log2(len(candidates)) times.

    >>> highest_passing([10, 20, 40, 80, 160], lambda rate: rate < 50)
    40
    """
    low, high = 0, len(candidates)  # candidates[:low] pass; candidates[high:] fail
    while low < high:
        middle = (low + high) // 2
        if passes(candidates[middle]):
            low = middle + 1
        else:
            high = middle
    return candidates[low - 1] if low else None


# -- the run's facts and the JSON line -----------------------------------------------------------


def load_average() -> list[float]:
    """The 1, 5 and 15 minute load averages: on a shared machine they say how busy it was."""
    return [round(value, 2) for value in os.getloadavg()]


def _git(*arguments: str) -> str:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        return subprocess.run(
            ["git", *arguments], capture_output=True, text=True, timeout=10, check=False,
            cwd=Path(__file__).resolve().parent,
        ).stdout.strip()  # fmt: skip
    return ""


@functools.cache
def _checkout() -> dict[str, Any]:
    commit = _git("rev-parse", "--short", "HEAD") or None  # None: not run from a checkout
    return {
        "commit": commit,
        # Uncommitted changes are measured along with the commit: say so.
        "dirty": bool(_git("status", "--porcelain", "--untracked-files=no")) if commit else None,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
    }


def run_facts() -> dict[str, Any]:
    """The commit (and whether the tree had uncommitted changes), the machine and its load
    average now: what a reader needs to compare two JSON lines."""
    return {**_checkout(), "loadavg": load_average()}


def _cell(value: object, digits: int) -> str:
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else str(value)


def table(
    header: Sequence[str], rows: Iterable[Sequence[object]], digits: int = 2, labels: int = 1
) -> str:
    """``rows`` under ``header`` in aligned columns: the first ``labels`` to the left, the
    figures to the right, floats with ``digits`` decimals (a cell given as a string is shown
    as it is).

    >>> print(table(["op", "p50 ms"], [["get", 1.234], ["list", 12.5]]))
    op    p50 ms
    get     1.23
    list   12.50
    """
    cells = [list(header), *([_cell(value, digits) for value in row] for row in rows)]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    aligned = []
    for row in cells:
        pairs = enumerate(zip(row, widths, strict=True))
        aligned.append("  ".join(c.ljust(w) if i < labels else c.rjust(w) for i, (c, w) in pairs))
    return "\n".join(line.rstrip() for line in aligned)


def emit(result: Mapping[str, Any], sort_keys: bool = False) -> str:
    """Print ``result`` as one JSON line with ``run_facts()`` under ``"run"``; returns the
    line (for a script's ``--json`` file)."""
    line = json.dumps({**result, "run": run_facts()}, sort_keys=sort_keys, default=str)
    print(line, flush=True)
    return line
