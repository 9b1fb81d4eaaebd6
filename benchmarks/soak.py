"""Soak: the load driver's mixed load at a fixed request rate for hours, with cleanup running,
watching memory, handles and the database.

Pre-loads ``--size`` memories (as ``load.py`` does), then runs ``--sessions`` session threads
sharing one ``Memory`` for ``--duration`` seconds, open loop: every session's calls arrive
as a Poisson stream, together ``--rate`` calls per second, whatever the latency (latency
counts from each call's scheduled time; see ``load.run_sessions``). The mix is
``load.py``'s. Meanwhile the store's cleanup (``memory.ops.retention.RetentionWorker``) runs
every ``--cleanup-every`` seconds with a soak policy whose windows fit in the run: working
memories older than ``--working-window`` are consolidated into episodic summaries, episodic
ones older than ``--episodic-window`` and checkpoints older than ``--working-window`` are
removed (semantic memories are kept, as by default). Every ``--interval`` seconds it samples

- the process RSS (``VmRSS``), its threads (``Threads``) and open file descriptors (the
  entries of /proc/self/fd),
- the C heap: the bytes glibc's ``malloc`` has handed out and not had back (``mallinfo2``:
  small blocks plus mmapped ones), where SQLite's page cache, the drivers and every Python
  object over 512 bytes live, and the blocks Python's own allocator holds for small objects
  (``sys.getallocatedblocks``); both cost microseconds to read,
- with ``--tracemalloc``, the Python heap as ``tracemalloc`` sees it and what tracing itself
  costs (part of RSS). Off by default: tracing every allocation made the calls about ten
  times slower here (a 2-core machine shared with other jobs served ~20 calls/s traced,
  40/s untraced with p50 17 ms), so a traced soak measures an overloaded store,
- the database's size on disk: the SQLite file with its ``-wal`` and ``-shm`` files, or
  ``pg_database_size``,
- the calls served and errors in the interval, and the p50 / p95 latency of the interval,
- the cleanup runs so far and the rows they removed or wrote, the entries of the keyword
  stemmer's bounded cache (``memory.core.text``), and the 1-minute load average,

and appends each sample to ``--csv`` as it is taken (so a run that is cut short is still
data). At the end it writes ``--plot`` (a PNG of the series over time), prints the
least-squares slopes of RSS, traced heap and database size in MB per minute over the whole
run and over its second half (after caches and pools warm up), and a markdown table of the
run. ``--from-csv PATH`` makes the plot, slopes and table from a CSV written earlier (a run
still going or one that was stopped). The driver keeps nothing per call (latencies are
drained at every sample, the ids a session remembers are capped), so growth is the
library's or its dependencies'.

The rate. The rollout checklist asks for 100 concurrent sessions and 8 hours of continuous
operation. An agent session calls the memory layer about twice per turn (context in when a
turn starts, an observation or a checkpoint out when it ends), and a turn takes some 20 s
(a model completion of several seconds, tool runs, a person reading the answer): 0.1 calls
per second per session (``load.SESSION_RATE``). 100 sessions make 10 calls/s, so 8 hours are
10 x 28,800 = 288,000 calls. Four times that rate, ``--rate 40`` (the default), serves the
same 288,000 calls in 2 hours.

Run (from the repository root)::

    .venv/bin/python benchmarks/soak.py --duration 600 --csv /tmp/soak.csv --plot /tmp/soak.png
    .venv/bin/python benchmarks/soak.py --backend postgresql --duration 60 --rate 50 \\
        --csv /tmp/pg.csv --plot /tmp/pg.png
    .venv/bin/python benchmarks/soak.py --from-csv /tmp/soak.csv --plot /tmp/soak.png

Ends with one JSON line (``grep '^{'``). Exit status 1 on any error.
"""

from __future__ import annotations

import argparse
import csv
import ctypes
import os
import sys
import threading
import time
import tracemalloc
import uuid
from collections import Counter
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # load.py, beside this file

import load  # noqa: E402
import sqlalchemy as sa  # noqa: E402
from _scratch import DEFAULT_POSTGRES_URL, scratch_database  # noqa: E402
from measure import emit, load_average, slope_per_minute, summary  # noqa: E402

from memory import Memory  # noqa: E402
from memory.ops.retention import RetentionPolicy, RetentionWorker  # noqa: E402

DEFAULT_SESSIONS = 100
DEFAULT_RATE = 4 * load.SESSION_RATE * DEFAULT_SESSIONS  # see the module's docstring

COLUMNS = (
    "t", "rss_mb", "malloc_mb", "py_blocks", "heap_mb", "tracemalloc_mb", "fds", "threads",
    "db_mb", "calls",
    "calls_per_s", "p50_ms", "p95_ms", "errors", "cleanup_runs", "cleanup_rows",
    "cleanup_failures", "stem_cache_entries", "load_1m", "under_load",
)  # fmt: skip
FLOATS = {"t", "rss_mb", "malloc_mb", "heap_mb", "tracemalloc_mb", "db_mb", "calls_per_s", "p50_ms",
          "p95_ms", "load_1m"}  # fmt: skip
SLOPES = (
    ("rss_mb", "RSS"), ("malloc_mb", "C heap"), ("heap_mb", "traced heap"), ("db_mb", "database"),
)  # fmt: skip


def proc_status(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return float(line.split()[1])
    return float("nan")


class _MallInfo2(ctypes.Structure):
    """glibc's ``struct mallinfo2`` (glibc 2.33 and later), every field a ``size_t``."""

    _fields_ = [
        (name, ctypes.c_size_t)
        for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
                     "uordblks", "fordblks", "keepcost")  # fmt: skip
    ]


def malloc_heap_mb() -> float | None:
    """Bytes in use from glibc's ``malloc`` (small blocks and mmapped ones), in MB; None
    without glibc 2.33+."""
    try:
        mallinfo2 = ctypes.CDLL(None).mallinfo2
    except AttributeError:
        return None
    mallinfo2.restype = _MallInfo2
    info = mallinfo2()
    return float(info.uordblks + info.hblkhd) / 2**20


def open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


def stem_cache_entries() -> int | None:
    try:
        from memory.core import text as _text

        return int(_text._stem.cache_info().currsize)
    except (ImportError, AttributeError):
        return None


def database_mb(memory: Memory) -> float:
    """The database's size on disk: the SQLite file and its WAL and shared-memory files, or
    what PostgreSQL reports for the database."""
    url = memory.engine.url
    if url.get_backend_name() == "sqlite":
        base = Path(url.database or "")
        files = (base, Path(f"{base}-wal"), Path(f"{base}-shm"))
        return sum(path.stat().st_size for path in files if path.exists()) / 2**20
    with memory.engine.connect() as connection:
        size = connection.execute(sa.text("SELECT pg_database_size(current_database())"))
        return int(size.scalar_one()) / 2**20


def drain(live: list[load.Outcome]) -> list[float]:
    """Take the latencies the sessions recorded since the last call."""
    latencies: list[float] = []
    for outcome in live:
        for values in list(outcome.latencies.values()):
            taken = values[:]  # appends after this copy stay for the next drain
            del values[: len(taken)]
            latencies.extend(taken)
    return latencies


def error_count(live: list[load.Outcome]) -> int:
    return sum(sum(outcome.errors.values()) for outcome in live)


# -- the record: CSV rows, slopes, table, plot ----------------------------------------------------


def read_samples(path: Path) -> list[dict[str, Any]]:
    """The samples of a CSV written by a run (missing figures come back as None)."""
    with path.open(newline="") as handle:
        return [
            {
                key: None if value == "" else float(value) if key in FLOATS else int(value)
                for key, value in row.items()
            }
            for row in csv.DictReader(handle)
        ]


def slopes(samples: list[dict[str, Any]]) -> dict[str, float | None]:
    """Slopes (MB per minute) of the series in ``SLOPES``, over the samples taken under load
    and over their second half."""
    loaded = [sample for sample in samples if sample["under_load"]] or samples
    half = [sample for sample in loaded if sample["t"] >= loaded[-1]["t"] / 2]
    found: dict[str, float | None] = {}
    for key, _ in SLOPES:
        for label, part in (("", loaded), ("_second_half", half)):
            points = [(s["t"], s[key]) for s in part if s[key] is not None]
            value = slope_per_minute([t for t, _ in points], [v for _, v in points])
            found[f"{key.removesuffix('_mb')}_slope{label}_mb_per_min"] = (
                None if value != value else round(value, 3)  # NaN: too few samples
            )
    return found


def markdown_cell(value: object) -> str:
    if value is None:
        return "-"
    return f"{value:,}" if isinstance(value, int | float) else str(value)


def markdown_table(samples: list[dict[str, Any]], rows: int = 12) -> str:
    """About ``rows`` evenly spaced samples (the first and the last among them) as a table."""
    step = max(1, round(len(samples) / rows))
    chosen = samples[::step]
    if chosen[-1] is not samples[-1]:
        chosen.append(samples[-1])
    header = ("min", "RSS MB", "C heap MB", "py blocks", "traced MB", "DB MB", "fds",
              "threads", "calls/s", "p50 ms",
              "p95 ms", "errors", "cleanups", "cleaned rows", "load")  # fmt: skip
    lines = ["| " + " | ".join(header) + " |", "|" + "---:|" * len(header)]
    for s in chosen:
        cells = (
            f"{s['t'] / 60:.0f}", s["rss_mb"], s["malloc_mb"], s["py_blocks"], s["heap_mb"],
            s["db_mb"], s["fds"], s["threads"],
            s["calls_per_s"], s["p50_ms"], s["p95_ms"], s["errors"], s["cleanup_runs"],
            s["cleanup_rows"], s["load_1m"],
        )  # fmt: skip
        lines.append("| " + " | ".join(markdown_cell(cell) for cell in cells) + " |")
    return "\n".join(lines)


def plot(samples: list[dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    minutes = [sample["t"] / 60 for sample in samples]
    panels = (
        ("memory (MB)", (("rss_mb", "RSS"), ("malloc_mb", "C heap"), ("heap_mb", "traced heap"))),
        ("Python's small-object blocks", (("py_blocks", "allocated blocks"),)),
        ("database on disk (MB)", (("db_mb", "database"),)),
        ("handles", (("fds", "open file descriptors"), ("threads", "threads"))),
        ("calls per second", (("calls_per_s", "calls/s"),)),
        ("latency (ms)", (("p50_ms", "p50"), ("p95_ms", "p95"))),
        ("cleanup", (("cleanup_rows", "rows removed or written, all runs"),)),
    )
    figure, axes = plt.subplots(len(panels), 1, figsize=(10, 2.2 * len(panels)), sharex=True)
    for axis, (label, series) in zip(axes, panels, strict=True):
        for key, name in series:
            points = [
                (m, s[key]) for m, s in zip(minutes, samples, strict=True) if s[key] is not None
            ]
            if points:  # no traced heap without --tracemalloc
                axis.plot([m for m, _ in points], [v for _, v in points], label=name)
        axis.set_ylabel(label)
        axis.grid(alpha=0.3)
        axis.legend(loc="upper left", fontsize="small")
    axes[-1].set_xlabel("minutes")
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def report(samples: list[dict[str, Any]], plot_path: Path | None, title: str) -> dict[str, Any]:
    """Print the slopes and the table, write the plot; returns the slopes and totals."""
    found: dict[str, Any] = {
        **slopes(samples),
        "calls": sum(sample["calls"] for sample in samples),
        "errors": sum(sample["errors"] for sample in samples),
        "max_rss_mb": max(sample["rss_mb"] for sample in samples),
        "max_malloc_mb": max((s["malloc_mb"] for s in samples if s["malloc_mb"] is not None),
                             default=None),  # fmt: skip
        "max_heap_mb": max((s["heap_mb"] for s in samples if s["heap_mb"] is not None),
                           default=None),  # fmt: skip
        "max_db_mb": max(sample["db_mb"] for sample in samples),
        "minutes": round(samples[-1]["t"] / 60, 1),
    }
    for key, name in SLOPES:
        short = key.removesuffix("_mb")
        whole, half = (found[f"{short}_slope{part}_mb_per_min"] for part in ("", "_second_half"))
        if whole is not None:
            print(f"{name} slope: {whole:+.3f} MB/min over the run, {half:+.3f} MB/min over "
                  f"its second half")  # fmt: skip
    print(f"calls: {found['calls']:,}, errors: {found['errors']}\n")
    print(markdown_table(samples))
    if plot_path is not None:
        plot(samples, plot_path, title)
        print(f"\nplot: {plot_path}")
    return found


# -- the run -------------------------------------------------------------------------------------


def soak_policy(args: argparse.Namespace) -> RetentionPolicy:
    working = timedelta(seconds=args.working_window)
    return RetentionPolicy(
        tiers={"working": working, "episodic": timedelta(seconds=args.episodic_window)},
        session_state=working,
    )


def run(args: argparse.Namespace) -> int:
    interval = args.interval or min(30.0, max(1.0, args.duration / 20))
    mix = load.active_mix(load.parse_mix(args.mix))
    if args.tracemalloc:
        tracemalloc.start()
    with (
        scratch_database(args.backend, args.postgres_url, "memsoak") as url,
        load.open_memory(url, args.embedder) as memory,
    ):
        preload_rate = load.preload(memory, args.size, args.seed)
        ids = load.catalog(memory)
        print(
            f"soak: {args.backend}, {args.size:,} memories pre-loaded ({preload_rate:,.0f}/s), "
            f"{args.sessions} sessions at {args.rate:g} calls/s in all, {args.duration:g} s, "
            f"a sample every {interval:g} s, cleanup every {args.cleanup_every:g} s, "
            f"tracemalloc {'on' if args.tracemalloc else 'off'}, {os.cpu_count()} CPUs, "
            f"load average {load_average()[0]:.1f}"
        )
        print("mix: " + ", ".join(f"{op.name} {op.weight:g}" for op in mix), flush=True)
        live: list[load.Outcome] = []
        started = threading.Event()
        result: dict[str, load.Outcome] = {}

        def drive() -> None:
            result["total"] = load.run_sessions(
                memory,
                range(args.sessions),
                args.size,
                ids,
                mix,
                args.duration,
                args.rate / args.sessions,
                f"soak-{uuid.uuid4().hex[:6]}",
                args.seed,
                start=started.set,
                live=live,
                compaction=True,  # cleanup removes memories the sessions may still ask for
            )

        worker = RetentionWorker(memory, soak_policy(args), interval=args.cleanup_every)
        driver = threading.Thread(target=drive, daemon=True)
        driver.start()
        started.wait()
        worker.start()
        began = time.perf_counter()
        samples: list[dict[str, Any]] = []
        errors_so_far = 0
        cleaned = 0
        counted_run: Any = None
        print(f"{'t (s)':>7} {'RSS MB':>8} {'C heap':>8} {'DB MB':>8} {'fds':>5} {'thr':>4} "
              f"{'calls/s':>8} {'p50 ms':>8} {'p95 ms':>8} {'errors':>6} "
              f"{'cleanups':>8}")  # fmt: skip
        previous = began
        with args.csv.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, COLUMNS)
            writer.writeheader()
            while True:
                driver.join(timeout=max(0.0, previous + interval - time.perf_counter()))
                alive = driver.is_alive()
                now = time.perf_counter()
                latencies = drain(live)
                new_errors = error_count(live) - errors_so_far
                errors_so_far += new_errors
                if worker.last_report is not None and worker.last_report is not counted_run:
                    counted_run = worker.last_report
                    cleaned += counted_run.total
                sample = {
                    "t": round(now - began, 1),
                    "rss_mb": round(proc_status("VmRSS") / 1024, 2),
                    "malloc_mb": None if (malloc := malloc_heap_mb()) is None else round(malloc, 2),
                    "py_blocks": sys.getallocatedblocks(),
                    "heap_mb": (
                        round(tracemalloc.get_traced_memory()[0] / 2**20, 2)
                        if tracemalloc.is_tracing()
                        else None
                    ),
                    # tracemalloc's own bookkeeping: in RSS, not in the traced heap
                    "tracemalloc_mb": (
                        round(tracemalloc.get_tracemalloc_memory() / 2**20, 2)
                        if tracemalloc.is_tracing()
                        else None
                    ),
                    "fds": open_descriptors(),
                    "threads": int(proc_status("Threads")),
                    "db_mb": round(database_mb(memory), 2),
                    "calls": len(latencies),
                    "calls_per_s": round(len(latencies) / max(now - previous, 1e-9), 1),
                    **summary([1000 * value for value in latencies], ("p50", "p95"), digits=2),
                    "errors": new_errors,
                    "cleanup_runs": worker.runs,
                    "cleanup_rows": cleaned,
                    "cleanup_failures": worker.failures,
                    "stem_cache_entries": stem_cache_entries(),
                    "load_1m": load_average()[0],
                    "under_load": int(alive),  # 0: the sample after the sessions ended
                }
                if not latencies:  # NaN percentiles: leave the cells empty
                    sample["p50_ms"] = sample["p95_ms"] = None
                writer.writerow(sample)
                handle.flush()
                samples.append(sample)
                heap = "-" if sample["malloc_mb"] is None else f"{sample['malloc_mb']:.2f}"
                p50 = "-" if sample["p50_ms"] is None else f"{sample['p50_ms']:.2f}"
                p95 = "-" if sample["p95_ms"] is None else f"{sample['p95_ms']:.2f}"
                print(
                    f"{sample['t']:>7.1f} {sample['rss_mb']:>8.2f} {heap:>8} "
                    f"{sample['db_mb']:>8.2f} {sample['fds']:>5} {sample['threads']:>4} "
                    f"{sample['calls_per_s']:>8.1f} {p50:>8} {p95:>8} {sample['errors']:>6} "
                    f"{sample['cleanup_runs']:>8}",
                    flush=True,
                )
                previous = now
                if not alive:
                    break
        worker.stop()
        total = result.get("total")
    errors: Counter[tuple[str, str]] = Counter()
    for outcome in live:
        errors.update(outcome.errors)
    if tracemalloc.is_tracing():
        tracemalloc.stop()
    print()
    found = report(samples, args.plot, f"soak: {args.backend}, {args.rate:g} calls/s, "
                   f"{args.sessions} sessions, cleanup every {args.cleanup_every:g} s")  # fmt: skip
    for key, count in errors.items():
        print(f"  ERROR {count} x {key[0]}: {key[1]}")
    if worker.last_error is not None:
        print(f"  last cleanup error: {worker.last_error!r}")
    if total is not None:
        for kind, text in total.examples.items():
            print(f"\nfirst {kind}:\n{text}")
    emit(
        {
            "benchmark": "soak",
            "backend": args.backend,
            "size": args.size,
            "sessions": args.sessions,
            "rate_per_s": args.rate,
            "duration_s": args.duration,
            "interval_s": interval,
            "cleanup_every_s": args.cleanup_every,
            "cleanup_runs": worker.runs,
            "cleanup_failures": worker.failures,
            "tracemalloc": args.tracemalloc,
            "csv": str(args.csv),
            "errors_by_operation_and_type": {
                f"{op}: {kind}": n for (op, kind), n in errors.items()
            },
            **found,
        },
        sort_keys=True,
    )
    return 1 if found["errors"] or worker.failures else 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--backend", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--duration", type=float, default=600.0, help="seconds")
    parser.add_argument("--rate", type=float, default=DEFAULT_RATE,
                        help="calls per second, all sessions together (default: 4 x the "
                        "8-hour volume's rate, see above)")  # fmt: skip
    parser.add_argument("--interval", type=float, help="seconds between samples (default: "
                        "duration / 20, between 1 and 30)")  # fmt: skip
    parser.add_argument("--sessions", type=int, default=DEFAULT_SESSIONS)
    parser.add_argument("--size", type=int, default=10_000, help="memories pre-loaded")
    parser.add_argument("--mix", default="")
    parser.add_argument("--cleanup-every", type=float, default=300.0, help="seconds")
    parser.add_argument("--working-window", type=float, default=600.0, help="seconds")
    parser.add_argument("--episodic-window", type=float, default=1800.0, help="seconds")
    parser.add_argument("--embedder", choices=("none", "default"), default="none")
    parser.add_argument("--tracemalloc", action="store_true", help="trace the Python heap "
                        "(about ten times slower calls)")  # fmt: skip
    parser.add_argument("--postgres-url", default=DEFAULT_POSTGRES_URL)
    parser.add_argument("--seed", type=int, default=20240611)
    parser.add_argument("--csv", type=Path, default=Path("soak.csv"), help="samples, as taken")
    parser.add_argument("--plot", type=Path, help="write the PNG here")
    parser.add_argument("--from-csv", type=Path, help="report on this CSV instead of running")
    args = parser.parse_args(argv)
    if args.from_csv is not None:
        samples = read_samples(args.from_csv)
        if not samples:
            raise SystemExit(f"--from-csv: {args.from_csv} has no samples")
        found = report(samples, args.plot, f"soak: {args.from_csv.name}")
        return 1 if found["errors"] else 0
    if not args.rate > 0 or args.sessions < 1:
        raise SystemExit("--rate must be positive and --sessions at least 1")
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
