"""Cross-replica visibility: a write on hub replica A, searched for on replica B.

Two ``memctl serve`` processes (hashing embedder) over one throwaway PostgreSQL database;
the remote client (``Memory.open("http://…")``) adds a memory with a unique word on A and
then searches for that word on B until B finds it. The lag is from A's answer to B's first
answer that holds the memory, so it includes one search round trip; the baseline, measured
in the same run and interleaved with the writes, is that round trip alone (B searching for
a memory it already shows). The difference is what catching up from the event log costs.

Run (from the repository root)::

    .venv/bin/python benchmarks/replica_lag.py
    .venv/bin/python benchmarks/replica_lag.py --writes 500

Prints a table (p50 / p95 / p99 / max, ms) and one JSON line (``grep '^{'``). Target:
p99 ≤ 200 ms (the checklist's cross-replica consistency) and 100 % visible. Exit status 1
if missed. Each search is retried for at most 2 s, so a run is bounded.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

from _scratch import DEFAULT_POSTGRES_URL, scratch_database
from measure import emit, load_average, summary, table

# The test suite's helper that starts `memctl serve` on a free loopback port and stops it.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from memory import Memory  # noqa: E402
from memory import ops as ops  # noqa: E402
from tests.service.processes import served  # noqa: E402

TARGET_P99_MS = 200.0
GIVE_UP_SECONDS = 2.0
STATS = ("n", "p50", "p95", "p99", "max")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--writes", type=int, default=200, help="writes on replica A")
    parser.add_argument("--postgres-url", default=DEFAULT_POSTGRES_URL,
                        help="an existing database, used only to CREATE and DROP a throwaway one")
    args = parser.parse_args()
    print(f"replica_lag: writes={args.writes} cpus={os.cpu_count()} loadavg={load_average()}")
    lags: list[float] = []
    baseline: list[float] = []
    invisible = 0
    with (
        tempfile.TemporaryDirectory(prefix="replica-lag-") as scratch,
        scratch_database("postgresql", args.postgres_url, "replicalag") as url,
    ):
        ops.migrate(url)
        secret = ops.create_key(url, "bench", role="admin").secret
        quiet = {"MEMORY_SERVICE_LOG_LEVEL": "warning"}
        with (
            served(url, Path(scratch) / "a.log", **quiet) as a,
            served(url, Path(scratch) / "b.log", **quiet) as b,
            Memory.open(a.url, api_key=secret) as on_a,
            Memory.open(b.url, api_key=secret) as on_b,
        ):
            writer, reader = on_a.scope("ada", "bench"), on_b.scope("ada", "bench")
            known = f"known{uuid.uuid4().hex[:8]}"
            writer.add(f"a memory about {known}")
            deadline = time.monotonic() + 30
            while not reader.search(known) and time.monotonic() < deadline:
                time.sleep(0.05)
            for number in range(args.writes):
                word = f"w{number}x{uuid.uuid4().hex[:8]}"
                writer.add(f"a memory about {word}")
                written = time.perf_counter()
                while not reader.search(word):
                    if time.perf_counter() - written > GIVE_UP_SECONDS:
                        invisible += 1
                        break
                else:
                    lags.append((time.perf_counter() - written) * 1000)
                started = time.perf_counter()
                assert reader.search(known), "the baseline memory disappeared"
                baseline.append((time.perf_counter() - started) * 1000)

    lag, base = summary(lags, STATS), summary(baseline, STATS)
    visible = 100.0 * len(lags) / args.writes
    verdict = "PASS" if lag["p99_ms"] <= TARGET_P99_MS and invisible == 0 else "FAIL"
    print("\n" + table(
        ["ms", *STATS, f"p99 <= {TARGET_P99_MS:g} ms"],
        [["write on A -> found on B", *lag.values(), verdict],
         ["baseline: one search on B", *base.values(), ""]],
        digits=2,
    ) + f"\n\nvisible: {visible:.1f} % ({invisible} not within {GIVE_UP_SECONDS:g} s)\n")
    emit({"benchmark": "replica_lag", "writes": args.writes, "visible_percent": visible,
          "lag": lag, "baseline_search": base})
    return 0 if verdict == "PASS" else 1


if __name__ == "__main__":
    sys.exit(main())
