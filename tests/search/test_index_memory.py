"""What the in-process index reports holding is what it costs the process (issue 16,
finding 9): a fresh process loads one user's index of N memories, and the growth of its
resident set is compared with ``held_bytes()`` (the ``memory_index_held_bytes`` gauge the
budget evicts on).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from memory import HashingEmbedder, Memory

MEMORIES = 20_000
# The reported bytes are within this share of the resident growth, either way: what a
# count of objects cannot see is the allocator's rounding, and pages of the arrays' spare
# capacity that nothing has touched yet (not resident, though counted). Measured: within
# 12 % at 20k memories and 5 % at 100k on SQLite.
TOLERANCE = 0.15
WARM_LOADS = 4
MEASURED_LOADS = 3

# In a fresh interpreter: load the user's index and drop it WARM_LOADS times, so that what
# the first loads of a process cost once (the database's page cache and prepared
# statements, SQLAlchemy's compiled statements, the interpreter's object arenas and
# NumPy's first use of each path: 20-25 MB here at 20k and 100k memories alike, settling
# over the first few loads) is spent, then compare the growth of each of MEASURED_LOADS more
# loads with what the index reports (their median).
LOAD = r"""
import ctypes, gc, json, statistics, sys
from memory import HashingEmbedder, Memory

libc = ctypes.CDLL("libc.so.6")

def resident() -> int:
    gc.collect()
    libc.malloc_trim(0)  # give back freed heap, so what stays is what is held
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096

url, user, warm, measured = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
with Memory.open(url, embedder=HashingEmbedder()) as store:
    scope = store.scope(user, "planner")
    retriever = store._retriever
    growth = []
    for load in range(warm + measured):
        before = resident()
        scope.search("launch plan budget")
        growth.append(resident() - before)
        held = retriever.held_bytes()
        retriever.forget(user)
    print(json.dumps({"rss_growth": statistics.median(growth[warm:]), "held": held}))
"""


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqlite-file", "postgresql"])
def test_reported_index_bytes_match_the_resident_growth(
    backend: str, url_for: Callable[[str], str], user: str, tmp_path: Path
) -> None:
    url = url_for(backend)
    with Memory.open(url, embedder=HashingEmbedder()) as store:
        for agent in ("planner", "coder", "reviewer"):
            for start in range(0, MEMORIES // 3, 2000):
                store.scope(user, agent, session=f"{agent}-{start // 400}").add_many(
                    [
                        f"{agent} {n}: launch plan budget {n % 97} billing migration "
                        f"person{n % 311} ticket ATL-{n} staging outage region{n % 13}"
                        for n in range(start, min(start + 2000, MEMORIES // 3))
                    ]
                )
    done = subprocess.run(
        [sys.executable, "-c", LOAD, url, user, str(WARM_LOADS), str(MEASURED_LOADS)],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
        env={"MEMORY_INDEX_CACHE_DIR": "off", "PATH": "/usr/bin:/bin"},
    )
    measured = json.loads(done.stdout.strip().splitlines()[-1])
    growth, held = measured["rss_growth"], measured["held"]
    assert growth > 0 and held > 0
    assert abs(held - growth) <= TOLERANCE * growth, measured
