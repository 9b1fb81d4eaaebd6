"""MCP tool-call latency over stdio, against the reference memory server in the same run, and
``TieredStore.search`` against LangGraph's ``InMemoryStore`` with the same embedder.

1. **MCP over stdio.** The reference server (``@modelcontextprotocol/server-memory``, pinned
   in ``tests/mcp_reference``; ``npm ci`` there first) and ``memctl mcp`` get the same
   knowledge graph (``--entities`` entities, two relations each, three observations each:
   the reference from its ``memory.jsonl``, ours through ``memctl import-mcp`` of the same
   lines) and ours also ``--memories`` memories (the default embedder, as a user runs it).
   One client session per server; in each round, in a new shuffled order, the reference's
   ``search_nodes`` (the baseline) and ours, plus our ``recall`` and ``context``, each with
   the round's query (for ``context`` made unique, so the injection cache never answers).
   Latency is the client's wall time from request to result.
2. **LangGraph store search.** ``--items`` items put into ``TieredStore`` (SQLite file) and
   into ``InMemoryStore``, both embedding with the hashing embedder (``--embedder minilm``
   for the real model), then ``search(("docs",), query=q, limit=10)`` on both, interleaved.

Run (from the repository root)::

    .venv/bin/python benchmarks/mcp_latency.py
    .venv/bin/python benchmarks/mcp_latency.py --entities 2000 --rounds 300 --items 10000

Prints a table per part (p50 / p95, ms) and one JSON line per part (``grep '^{'``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from langgraph.store.memory import InMemoryStore
from mcp import ClientSession, StdioServerParameters, stdio_client
from measure import emit, interleaved, load_average, shuffled_rounds, summary, table

from memory import Embedder, HashingEmbedder, Memory, MiniLMEmbedder
from memory.integrations.langgraph import TieredStore

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = ROOT / "tests" / "mcp_reference" / "node_modules" / ".bin" / "mcp-server-memory"
MEMCTL = Path(sys.executable).parent / "memctl"
USER = "bench"
WARMUP = 10
FLAGS_ON = {"USE_HIERARCHICAL_TIERS": "on", "USE_ENHANCED_INJECTION": "on"}

PEOPLE = "Ada Grace Linus Margaret Alan Barbara Ken Dennis Frances Edsger Radia Hedy".split()
SERVICES = "billing checkout search auth inventory reporting ingest payments gateway".split()
PROBLEMS = "timeout deadlock leak race retry cache quota schema latency outage".split()
QUERIES = [*PEOPLE[:6], *SERVICES[:6], *PROBLEMS[:6]]


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _sentence(rng: random.Random) -> str:
    return (
        f"{rng.choice(PEOPLE)} fixed the {rng.choice(PROBLEMS)} in {rng.choice(SERVICES)} "
        f"after the {rng.choice(PROBLEMS)} on day {rng.randrange(1, 365)}"
    )


def graph_lines(entities: int, rng: random.Random) -> list[str]:
    names = [f"{rng.choice(PEOPLE)}-{number}" for number in range(entities)]
    lines = [
        json.dumps({"type": "entity", "name": name, "entityType": rng.choice(["person", "team"]),
                    "observations": [_sentence(rng) for _ in range(3)]})
        for name in names
    ]
    edges = {(names[i], rng.choice(names), rng.choice(["mentors", "reviews", "owns"]))
             for i in range(entities) for _ in range(2)}
    lines += [json.dumps({"type": "relation", "from": a, "to": b, "relationType": kind})
              for a, b, kind in sorted(edges) if a != b]
    return lines


def seed_ours(url: str, lines: list[str], memories: int, rng: random.Random) -> None:
    imported = subprocess.run(
        [str(MEMCTL), "--database-url", url, "import-mcp", "--user", USER, "-"],
        input="\n".join(lines), capture_output=True, text=True, timeout=600, check=False,
    )
    if imported.returncode != 0:
        raise SystemExit(f"import-mcp failed: {imported.stderr}")
    with Memory.open(url) as memory:
        scope = memory.scope(USER, "mcp")
        for start in range(0, memories, 500):
            scope.add_many([_sentence(rng) for _ in range(min(500, memories - start))])


async def mcp_rounds(directory: Path, url: str, rounds: int, seed: int) -> dict[str, list[float]]:
    reference = StdioServerParameters(
        command=str(REFERENCE), env={"MEMORY_FILE_PATH": str(directory / "memory.jsonl")}
    )
    ours = StdioServerParameters(
        command=str(MEMCTL), args=["--database-url", url, "mcp", "--user", USER], env=FLAGS_ON
    )
    samples: dict[str, list[float]] = {
        "reference search_nodes": [], "ours search_nodes": [], "ours recall": [],
        "ours context": [],
    }
    with open(os.devnull, "w") as quiet:
        async with (
            stdio_client(reference, errlog=quiet) as (ref_read, ref_write),
            stdio_client(ours, errlog=quiet) as (our_read, our_write),
            ClientSession(ref_read, ref_write) as theirs,
            ClientSession(our_read, our_write) as mine,
        ):
            await theirs.initialize()
            await mine.initialize()
            calls: dict[str, Any] = {
                "reference search_nodes": lambda q: theirs.call_tool("search_nodes", {"query": q}),
                "ours search_nodes": lambda q: mine.call_tool("search_nodes", {"query": q}),
                "ours recall": lambda q: mine.call_tool("recall", {"query": q, "limit": 10}),
                # A query no earlier round asked: the injection cache would answer a repeat.
                "ours context": lambda q: mine.call_tool(
                    "context", {"query": f"{q} #{next(fresh)}", "budget_tokens": 512}
                ),
            }
            fresh = iter(range(10**9))
            rng = random.Random(seed)
            for number, order in enumerate(shuffled_rounds(calls, WARMUP + rounds, rng)):
                query = QUERIES[number % len(QUERIES)]
                for name in order:
                    start = time.perf_counter_ns()
                    result = await calls[name](query)
                    elapsed = (time.perf_counter_ns() - start) / 1e6
                    if result.is_error:
                        raise SystemExit(f"{name} failed: {result.content}")
                    if number >= WARMUP:
                        samples[name].append(elapsed)
    return samples


def mcp_part(args: argparse.Namespace) -> None:
    if not REFERENCE.exists():
        install = REFERENCE.parent.parent.parent
        raise SystemExit(f"the reference server is not installed: (cd {install} && npm ci)")
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory(prefix="mcp-latency-") as name:
        directory = Path(name)
        lines = graph_lines(args.entities, rng)
        (directory / "memory.jsonl").write_text("\n".join(lines))
        url = f"sqlite:///{directory / 'memory.db'}"
        log(f"seeding {args.entities} entities, {len(lines) - args.entities} relations, "
            f"{args.memories} memories")
        seed_ours(url, lines, args.memories, rng)
        log(f"{args.rounds} rounds over stdio")
        samples = asyncio.run(mcp_rounds(directory, url, args.rounds, args.seed))
    stats = {name: summary(values, ("n", "p50", "p95")) for name, values in samples.items()}
    print(table(["tool call (stdio)", "n", "p50 ms", "p95 ms"],
                [[name, s["n"], s["p50_ms"], s["p95_ms"]] for name, s in stats.items()]))
    emit({"benchmark": "mcp_latency", "part": "mcp_stdio", "entities": args.entities,
          "memories": args.memories, "rounds": args.rounds, "stats": stats,
          "load_average_after": load_average()})


def _embedder(name: str) -> Embedder:
    return MiniLMEmbedder() if name == "minilm" else HashingEmbedder()


def store_part(args: argparse.Namespace) -> None:
    embedder = _embedder(args.embedder)

    def embed(texts: Sequence[str]) -> list[list[float]]:
        return [list(map(float, row)) for row in embedder.embed(list(texts))]

    rng = random.Random(args.seed)
    items = [(f"item-{n}", {"text": _sentence(rng), "n": n}) for n in range(args.items)]
    theirs = InMemoryStore(index={"dims": embedder.dimension, "embed": embed})
    with tempfile.TemporaryDirectory(prefix="mcp-latency-store-") as name:
        url = f"sqlite:///{Path(name) / 'memory.db'}"
        with Memory.open(url, embedder=embedder) as memory:
            ours = TieredStore(memory, user=USER)
            log(f"putting {args.items} items into both stores")
            start = time.perf_counter()
            for key, value in items:
                ours.put(("docs",), key, value)
            put_ours = time.perf_counter() - start
            start = time.perf_counter()
            for key, value in items:
                theirs.put(("docs",), key, value)
            put_theirs = time.perf_counter() - start
            log(f"searching, {args.rounds} rounds")
            samples = interleaved(
                {
                    "InMemoryStore.search": lambda n: theirs.search(
                        ("docs",), query=QUERIES[n % len(QUERIES)], limit=10),
                    "TieredStore.search": lambda n: ours.search(
                        ("docs",), query=QUERIES[n % len(QUERIES)], limit=10),
                },
                args.rounds,
                random.Random(args.seed),
                warmup=WARMUP,
            )
    stats = {name: summary(values, ("n", "p50", "p95")) for name, values in samples.items()}
    print(table([f"search at {args.items} items ({args.embedder})", "n", "p50 ms", "p95 ms"],
                [[name, s["n"], s["p50_ms"], s["p95_ms"]] for name, s in stats.items()]))
    print(f"put {args.items} items: TieredStore {put_ours:.1f} s, "
          f"InMemoryStore {put_theirs:.1f} s")
    emit({"benchmark": "mcp_latency", "part": "langgraph_search", "items": args.items,
          "embedder": args.embedder, "rounds": args.rounds, "stats": stats,
          "put_seconds": {"TieredStore": round(put_ours, 1),
                          "InMemoryStore": round(put_theirs, 1)},
          "load_average_after": load_average()})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entities", type=int, default=1000)
    parser.add_argument("--memories", type=int, default=2000)
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--embedder", choices=["hashing", "minilm"], default="hashing")
    parser.add_argument("--part", choices=["all", "mcp", "store"], default="all")
    parser.add_argument("--seed", type=int, default=19)
    args = parser.parse_args()
    if args.part in ("all", "mcp"):
        mcp_part(args)
    if args.part in ("all", "store"):
        store_part(args)


if __name__ == "__main__":
    main()
