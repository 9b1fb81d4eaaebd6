"""Peak memory of ``memctl import-mcp`` on a large ``memory.jsonl`` file (issue 16, finding 8).

A generated file of ``--megabytes`` MB (default 50): entities of 3-5 observations of 60-200
characters built from a word list with a seeded RNG (the same file on every run), then one
relation per four entities, in the order the MCP memory server writes its file. The
benchmark runs ``memctl import-mcp FILE --user U --json`` as a child process on a new
database and reads the child's peak resident set size from ``wait4``; the baseline, in the
same run, is the same command importing a one-line file (the interpreter, the library and
the database driver). What the import itself costs is the difference. The import streams
in bounded batches, so that difference must not grow with the file: ``--megabytes 10`` and
``--megabytes 50`` should show about the same figure.

Run (from the repository root)::

    .venv/bin/python benchmarks/import_memory.py
    .venv/bin/python benchmarks/import_memory.py --backend postgresql --megabytes 10

Output: a table, then one JSON line (``grep '^{'``).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _scratch import DEFAULT_POSTGRES_URL, scratch_database
from measure import emit, load_average, table

WORDS = (
    "agent user prefers python tests deploy budget memory search vector cache session "
    "review branch merge tier graph planner coder nightly report latency summary index"
).split()


def write_file(path: Path, megabytes: float, seed: int = 16) -> tuple[int, int]:
    """Write the generated ``memory.jsonl``; return its entity and relation counts."""
    rng = random.Random(seed)
    target = int(megabytes * 1_000_000)
    written = entities = 0
    with path.open("w", encoding="utf-8") as file:
        while written < target:
            observations = [
                " ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 28)))
                for _ in range(rng.randint(3, 5))
            ]
            line = json.dumps(
                {
                    "type": "entity",
                    "name": f"entity-{entities}",
                    "entityType": rng.choice(("person", "project", "tool")),
                    "observations": observations,
                }
            )
            file.write(line + "\n")
            written += len(line) + 1
            entities += 1
        relations = entities // 4
        for number in range(relations):
            line = json.dumps(
                {
                    "type": "relation",
                    "from": f"entity-{rng.randrange(entities)}",
                    "to": f"entity-{number}",
                    "relationType": rng.choice(("uses", "owns", "knows")),
                }
            )
            file.write(line + "\n")
    return entities, relations


def peak_rss(url: str, file: Path, user: str) -> tuple[float, float, dict[str, Any]]:
    """Run ``memctl import-mcp`` on ``file``; return its peak RSS in MB, its wall time in
    seconds and its JSON report."""
    memctl = Path(sys.executable).with_name("memctl")
    started = time.perf_counter()
    child = subprocess.Popen(
        [str(memctl), "import-mcp", str(file), "--user", user, "--json"],
        env={**os.environ, "MEMORY_DATABASE_URL": url},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    # communicate() reaps the child; wait4 must do it to get its rusage, so read first.
    assert child.stdout is not None and child.stderr is not None
    out, err = child.stdout.read(), child.stderr.read()
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    elapsed = time.perf_counter() - started
    if child.returncode != 0:
        raise SystemExit(f"memctl import-mcp failed ({child.returncode}): {err.decode()}")
    return usage.ru_maxrss / 1024, elapsed, json.loads(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--megabytes", type=float, default=50.0)
    parser.add_argument("--backend", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--postgres-url", default=DEFAULT_POSTGRES_URL)
    arguments = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="import-memory-") as directory:
        big, small = Path(directory) / "memory.jsonl", Path(directory) / "one.jsonl"
        entities, relations = write_file(big, arguments.megabytes)
        small.write_text('{"type": "entity", "name": "one", "entityType": "t"}\n')
        with scratch_database(arguments.backend, arguments.postgres_url, "import_memory") as url:
            baseline, _, _ = peak_rss(url, small, "baseline")
            peak, seconds, report = peak_rss(url, big, "importer")
    if (report["entities"], report["relations"]) != (entities, relations):
        raise SystemExit(f"imported {report}, expected {entities} entities, {relations} relations")
    result = {
        "benchmark": "import_memory",
        "backend": arguments.backend,
        "file_mb": arguments.megabytes,
        "lines": entities + relations,
        "baseline_peak_rss_mb": round(baseline, 1),
        "import_peak_rss_mb": round(peak, 1),
        "import_cost_mb": round(peak - baseline, 1),
        "seconds": round(seconds, 1),
        "lines_per_s": round((entities + relations) / seconds),
        "load_average": load_average(),
    }
    figures = [key for key in result if key not in ("benchmark", "load_average")]
    print(table(figures, [[result[key] for key in figures]], digits=1))
    emit(result)


if __name__ == "__main__":
    main()
