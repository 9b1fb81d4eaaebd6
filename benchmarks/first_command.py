"""Benchmark: the README's first command in a brand-new directory: wall time and install size.

Run from the repository root::

    python benchmarks/first_command.py                       # 3 rounds, pip cache as it is
    python benchmarks/first_command.py --cold                # pip's cache empty every round
    python benchmarks/first_command.py --baseline-ref 8ef8b6f --baseline-rounds 1

Each round exports the committed tree (``git archive HEAD``) into a new temporary
directory and runs the first ``bash`` block of its ``README.md`` there, part by part (the
parts joined by ``&&``: make the venv, install, run ``memctl demo``), timing each part and
the whole. The demo builds the embedding model's graph in a new, empty cache
(``XDG_CACHE_HOME``), as on a new machine. Reported: the whole command's time (p50, p95 over
the rounds) and each part's median; the size of ``.venv`` on disk (MiB, as ``du``); and
whether torch, transformers or sentence-transformers got installed.

``--cold`` gives pip an empty cache each round (``PIP_CACHE_DIR`` in the round's directory);
otherwise pip keeps its usual cache. ``--baseline-ref`` runs the README's first command of
another commit the same way, interleaved with ours, for a before/after in one run.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# Runnable as a plain script from a checkout: make the repository root importable.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.measure import emit, load_average, shuffled_rounds, summary, table  # noqa: E402

REPOSITORY = Path(__file__).resolve().parent.parent
HEAVY = ("torch", "transformers", "sentence_transformers")
TIMEOUT_SECONDS = 1800


def readme_first_command(readme: str) -> str:
    """The first ``bash`` code block of a README, as one line."""
    match = re.search(r"```bash\n(.*?)```", readme, re.DOTALL)
    if match is None:
        raise ValueError("README.md has no ```bash block")
    return " ".join(match.group(1).replace("\\\n", " ").split())


def directory_mib(path: Path) -> float:
    """Disk use of everything under ``path``, as ``du`` counts it (allocated blocks)."""
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            total += os.lstat(os.path.join(root, name)).st_blocks * 512
    return total / 2**20


def export(ref: str, tree: Path) -> Path:
    """The files of commit ``ref`` in a new directory ``tree``."""
    tree.mkdir()
    archive = subprocess.run(
        ["git", "archive", ref], cwd=REPOSITORY, capture_output=True, check=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    return tree


def run_round(tree: Path, workdir: Path, cold: bool) -> dict[str, Any]:
    """Run the first command of ``tree``'s README in ``tree``; the figures, and the output
    of its last part (the demo)."""
    command = readme_first_command((tree / "README.md").read_text("utf-8"))
    env = {k: v for k, v in os.environ.items() if k not in {"VIRTUAL_ENV", "PYTHONPATH"}}
    env["XDG_CACHE_HOME"] = str(workdir / "cache")  # a new machine's empty cache
    env["TMPDIR"] = str(workdir)  # the demo's database lands here, removed with it
    if cold:
        env["PIP_CACHE_DIR"] = str(workdir / "pip-cache")
    else:  # keep pip's usual cache, which would otherwise follow XDG_CACHE_HOME
        env["PIP_CACHE_DIR"] = subprocess.run(
            [sys.executable, "-m", "pip", "cache", "dir"], capture_output=True, text=True,
            check=True,
        ).stdout.strip()  # fmt: skip
    parts = {}
    output = ""
    for part in command.split(" && "):
        start = time.perf_counter()
        completed = subprocess.run(
            ["bash", "-c", part], cwd=tree, env=env, capture_output=True, text=True,
            timeout=TIMEOUT_SECONDS, check=False,
        )  # fmt: skip
        parts[part] = (time.perf_counter() - start) * 1000
        if completed.returncode != 0:
            raise RuntimeError(f"{part!r} exited {completed.returncode}:\n{completed.stderr}")
        output = completed.stdout
    probe = "import importlib.util as u; print(','.join(m for m in %r if u.find_spec(m)))"
    heavy = subprocess.run(
        [str(tree / ".venv/bin/python"), "-c", probe % (HEAVY,)],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    return {
        "command": command,
        "parts_ms": parts,
        "total_ms": sum(parts.values()),
        "venv_mib": directory_mib(tree / ".venv"),
        "heavy": heavy,
        "output": output,
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cold", action="store_true", help="an empty pip cache each round")
    parser.add_argument("--ref", default="HEAD", help="the commit whose README is measured")
    parser.add_argument("--baseline-ref", default=None, help="a commit to compare with")
    parser.add_argument("--baseline-rounds", type=int, default=1)
    parser.add_argument("--seed", type=int, default=20261207)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    refs = {args.ref: args.rounds}
    if args.baseline_ref:
        refs[args.baseline_ref] = args.baseline_rounds
    results: dict[str, list[dict[str, Any]]] = {ref: [] for ref in refs}
    for order in shuffled_rounds(refs, max(refs.values()), random.Random(args.seed)):
        for ref in order:
            if len(results[ref]) < refs[ref]:
                with tempfile.TemporaryDirectory(prefix="first-command-") as workdir:
                    print(f"{ref}: round {len(results[ref]) + 1} ...", file=sys.stderr)
                    tree = export(ref, Path(workdir) / "tree")
                    results[ref].append(run_round(tree, Path(workdir), args.cold))
    rows = []
    for ref, rounds in results.items():
        total = summary([r["total_ms"] / 1000 for r in rounds], ("n", "p50", "p95"), unit="s")
        parts = {
            part: summary([r["parts_ms"][part] / 1000 for r in rounds], ("p50",), unit="s")
            for part in rounds[0]["parts_ms"]
        }
        size = max(r["venv_mib"] for r in rounds)
        heavy = sorted({name for r in rounds for name in r["heavy"].split(",") if name})
        rows.append([ref, total["n"], total["p50_s"], total["p95_s"], size, ",".join(heavy)])
        emit(
            {
                "benchmark": "first_command",
                "ref": ref,
                "command": rounds[0]["command"],
                "pip_cache": "empty" if args.cold else "as it is",
                "total": total,
                "parts_p50": parts,
                "venv_mib": round(size, 1),
                "heavy_packages": heavy,
            }
        )
        for part, figures in parts.items():
            print(f"  {ref}: {figures['p50_s']:7.2f} s  {part}")
    header = ["ref", "rounds", "total p50 s", "p95", "venv MiB", "torch & co."]
    print(table(header, rows))
    print(f"load average {load_average()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
