"""Soak: the load driver's mixed load on one backend for a long time, watching memory.

Pre-loads ``--size`` memories (as ``load.py`` does), then runs ``--sessions`` session threads
sharing one ``Memory`` for ``--duration`` seconds (default 600) with ``load.py``'s mix, and
every ``--interval`` seconds samples

- the process RSS (``VmRSS`` from /proc/self/status),
- the Python heap as ``tracemalloc`` sees it (current traced size), and what tracing itself
  costs (``trace MB``, part of RSS); ``--no-tracemalloc`` turns tracing off, which makes the
  calls 2-4 times faster but leaves only RSS,
- the calls served and errors in the interval, and the p50 / p95 latency of the interval,
- the entries of the keyword stemmer's cache (``memory.core.text``), a bounded cache (65,536
  words) that fills as new words arrive and is the one structure expected to grow,

prints the series, and the least-squares slope of RSS and of the traced heap in MB per
minute, over the whole run and over its second half (after caches and pools warm up). The
driver keeps nothing per call (latencies are drained at every sample, the ids a session
remembers are capped), so growth is the library's or its dependencies'.

Run (from the repository root)::

    .venv/bin/python benchmarks/soak.py                          # SQLite, 600 s
    .venv/bin/python benchmarks/soak.py --backend postgresql --duration 60

Ends with one JSON line (``grep '^{'``). Exit status 1 on any error.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
import tracemalloc
import uuid
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # load.py, beside this file

import load  # noqa: E402
from _scratch import DEFAULT_POSTGRES_URL, scratch_database  # noqa: E402
from measure import emit, load_average, summary  # noqa: E402


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def stem_cache_entries() -> int | None:
    try:
        from memory.core import text as _text

        return int(_text._stem.cache_info().currsize)
    except (ImportError, AttributeError):
        return None


def slope_per_minute(times: Sequence[float], values: Sequence[float]) -> float:
    """Least-squares slope of ``values`` against ``times`` (seconds), per minute."""
    count = len(times)
    if count < 2:
        return float("nan")
    mean_t = sum(times) / count
    mean_v = sum(values) / count
    spread = sum((t - mean_t) ** 2 for t in times)
    if spread == 0:
        return float("nan")
    return (
        60 * sum((t - mean_t) * (v - mean_v) for t, v in zip(times, values, strict=True)) / spread
    )


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


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--backend", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--duration", type=float, default=600.0)
    parser.add_argument("--interval", type=float, help="seconds between samples (default: "
                        "duration / 20, between 1 and 30)")  # fmt: skip
    parser.add_argument("--sessions", type=int, default=100)
    parser.add_argument("--size", type=int, default=10_000)
    parser.add_argument("--think-ms", type=float, default=0.0)
    parser.add_argument("--mix", default="")
    parser.add_argument("--embedder", choices=("none", "default"), default="none")
    parser.add_argument("--no-tracemalloc", action="store_true")
    parser.add_argument("--postgres-url", default=DEFAULT_POSTGRES_URL)
    parser.add_argument("--seed", type=int, default=20240611)
    args = parser.parse_args(argv)
    interval = args.interval or min(30.0, max(1.0, args.duration / 20))
    mix = load.active_mix(load.parse_mix(args.mix))

    if not args.no_tracemalloc:
        tracemalloc.start()
    with (
        scratch_database(args.backend, args.postgres_url, "memload") as url,
        load.open_memory(url, args.embedder) as memory,
    ):
        rate = load.preload(memory, args.size, args.seed)
        ids = load.catalog(memory)
        print(
            f"soak: {args.backend}, {args.size:,} memories pre-loaded ({rate:,.0f}/s), "
            f"{args.sessions} sessions, {args.duration:g} s, a sample every {interval:g} s, "
            f"tracemalloc {'off' if args.no_tracemalloc else 'on'}, {os.cpu_count()} CPUs, "
            f"load average {load_average()[0]:.1f}"
        )
        print("mix: " + ", ".join(f"{op.name} {op.weight:g}" for op in mix))
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
                args.think_ms / 1000,
                f"soak-{uuid.uuid4().hex[:6]}",
                args.seed,
                start=started.set,
                live=live,
            )

        driver = threading.Thread(target=drive, daemon=True)
        driver.start()
        started.wait()
        began = time.perf_counter()
        samples: list[dict[str, Any]] = []
        errors_so_far = 0
        header = (
            f"{'t (s)':>7} {'RSS MB':>8} {'heap MB':>8} {'trace MB':>8} {'calls':>7} "
            f"{'calls/s':>8} {'p50 ms':>7} {'p95 ms':>7} {'errors':>6} {'stems':>7}"
        )
        print(header)
        previous = began
        while True:
            driver.join(timeout=max(0.0, previous + interval - time.perf_counter()))
            alive = driver.is_alive()
            now = time.perf_counter()
            latencies = drain(live)
            new_errors = error_count(live) - errors_so_far
            errors_so_far += new_errors
            sample = {
                "t": round(now - began, 1),
                "rss_mb": round(rss_mb(), 2),
                "heap_mb": (
                    round(tracemalloc.get_traced_memory()[0] / 2**20, 2)
                    if tracemalloc.is_tracing()
                    else None
                ),
                # tracemalloc's own bookkeeping: in RSS, not in the traced heap
                "tracemalloc_mb": round(tracemalloc.get_tracemalloc_memory() / 2**20, 2),
                "calls": len(latencies),
                "calls_per_s": round(len(latencies) / max(now - previous, 1e-9), 1),
                **summary([1000 * value for value in latencies], ("p50", "p95"), digits=2),
                "errors": new_errors,
                "stem_cache_entries": stem_cache_entries(),
            }
            samples.append(sample)
            heap = "-" if sample["heap_mb"] is None else f"{sample['heap_mb']:.2f}"
            stems = "-" if sample["stem_cache_entries"] is None else sample["stem_cache_entries"]
            print(
                f"{sample['t']:>7.1f} {sample['rss_mb']:>8.2f} {heap:>8} "
                f"{sample['tracemalloc_mb']:>8.2f} {sample['calls']:>7} "
                f"{sample['calls_per_s']:>8.1f} {sample['p50_ms']:>7.2f} {sample['p95_ms']:>7.2f}"
                f" {sample['errors']:>6} {stems!s:>7}",
                flush=True,
            )
            previous = now
            if not alive:
                break
        total = result.get("total")
    errors: Counter[tuple[str, str]] = Counter()
    for outcome in live:
        errors.update(outcome.errors)
    if tracemalloc.is_tracing():
        tracemalloc.stop()

    # The last sample comes after the sessions stopped: fit the ones taken under load.
    loaded = [sample for sample in samples if sample["calls"]] or samples
    times = [sample["t"] for sample in loaded]
    half = [sample for sample in loaded if sample["t"] >= loaded[-1]["t"] / 2]
    report: dict[str, Any] = {
        "benchmark": "soak",
        "backend": args.backend,
        "size": args.size,
        "sessions": args.sessions,
        "duration_s": args.duration,
        "interval_s": interval,
        "tracemalloc": not args.no_tracemalloc,
        "calls": sum(sample["calls"] for sample in samples),
        "errors": sum(errors.values()),
        "errors_by_operation_and_type": {f"{op}: {kind}": n for (op, kind), n in errors.items()},
        "rss_slope_mb_per_min": round(slope_per_minute(times, [s["rss_mb"] for s in loaded]), 3),
        "rss_slope_second_half_mb_per_min": round(
            slope_per_minute([s["t"] for s in half], [s["rss_mb"] for s in half]), 3
        ),
        "samples": samples,
    }
    if not args.no_tracemalloc:
        report["heap_slope_mb_per_min"] = round(
            slope_per_minute(times, [s["heap_mb"] for s in loaded]), 3
        )
        report["heap_slope_second_half_mb_per_min"] = round(
            slope_per_minute([s["t"] for s in half], [s["heap_mb"] for s in half]), 3
        )
    print(
        f"\nRSS slope: {report['rss_slope_mb_per_min']:+.3f} MB/min over the run, "
        f"{report['rss_slope_second_half_mb_per_min']:+.3f} MB/min over its second half"
    )
    if not args.no_tracemalloc:
        print(
            f"traced heap slope: {report['heap_slope_mb_per_min']:+.3f} MB/min over the run, "
            f"{report['heap_slope_second_half_mb_per_min']:+.3f} MB/min over its second half"
        )
    print(f"calls: {report['calls']:,}, errors: {report['errors']}")
    for key, count in report["errors_by_operation_and_type"].items():
        print(f"  ERROR {count} x {key}")
    if total is not None:
        for kind, text in total.examples.items():
            print(f"\nfirst {kind}:\n{text}")
    emit(report, sort_keys=True)
    return 1 if report["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
