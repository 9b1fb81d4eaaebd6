"""No public operation leaks Python memory, on SQLite (file) and PostgreSQL.

For each operation: run it ``WARMUP`` times (so that every bounded cache is full:
SQLAlchemy's compiled statements, the drivers' statement caches, pydantic's validators, the
stemmer's cache for the words used), take a ``tracemalloc`` snapshot, run it ``REPEATS``
times, take another snapshot, and require that the Python memory held by allocations made
in between grows by less than ``BOUND_BYTES``. ``tracemalloc`` traces the whole module, not
each operation (see ``tracing``).

Writes use new content on every call, so rows pile up in the database, not in the process;
reads and updates rotate over a fixed working set. The growth counted is every Python
allocation (all domains, so NumPy buffers too) except ``tracemalloc``'s own: the loop keeps
nothing itself, so whatever survives was kept by the library or by what it calls
(SQLAlchemy, the drivers, pydantic). On failure the message lists the allocation sites that
grew most, and the growth per file.

The bound, 64 KiB over 1,000 calls, is 64 bytes per call: keeping a returned record per call
(about 1 KiB with its strings, datetimes and metadata dict) is 15 times over it, keeping a
3-tuple of ints per call (72 B with its list slot) is just over it
(``test_the_measurement_sees_a_leak_just_over_the_bound``), a bare int per call (36 B) is
not. The noise it must absorb was measured at under 18 KiB: on SQLite the ``sqlite3`` module
keeps a list of weak references to the cursors of each connection and prunes it every 200
cursors, so a snapshot can land anywhere on a 0-16 KiB saw-tooth; on PostgreSQL psycopg's
bounded query cache moves by a few KiB. (1,000 calls, not more, because tracing makes each
call 2-4 times slower and there are 36 cases.)
"""

from __future__ import annotations

import gc
import hashlib
import linecache
import os
import tracemalloc
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest

from memory import Memory
from memory.telemetry import instruments as telemetry

pytestmark = pytest.mark.slow

WARMUP = 200
REPEATS = 1_000
BOUND_BYTES = 64 * 1024  # 64 B per call
WORKING_SET = 100  # memories, preferences, patterns ... that reads rotate over
BACKENDS = ["sqlite-file", "postgresql"]

Call = Callable[[int], object]


class DigestEmbedder:
    """A deterministic 16-dimension embedder: writes still compute and store vectors, without
    the test measuring (or waiting for) a neural network."""

    model_name = "leak-test-digest-16"
    dimension = 16

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        digests = b"".join(hashlib.blake2b(t.encode(), digest_size=16).digest() for t in texts)
        matrix = np.frombuffer(digests, dtype=np.int8).reshape(len(texts), 16)
        matrix = matrix.astype(np.float32) + 0.5
        return matrix / np.linalg.norm(matrix, axis=1, keepdims=True)


WORDS = ("amber", "birch", "cedar", "delta", "ember", "fjord", "grove", "heron", "ivory", "jade")


def sentence(number: int) -> str:
    """A distinct sentence per number, from a fixed vocabulary: every word has been seen
    (and stemmed, and cached) after the warm-up, so only the rows are new."""
    code = " ".join(WORDS[int(digit)] for digit in f"{number:06d}")
    return f"note {code}: the nightly export of invoices to the billing bucket took long"


def new_user() -> str:
    return f"leak-{uuid.uuid4().hex[:10]}"


# -- the operations ---------------------------------------------------------------------------
# Each builder prepares the data an operation needs (before anything is measured) and returns
# a call that takes the iteration number.


def add(memory: Memory) -> Call:
    scope = memory.scope(new_user(), "agent", "s1")
    return lambda i: scope.add(sentence(i), tier="episodic", metadata={"topic": "billing", "n": i})


def add_many(memory: Memory) -> Call:
    scope = memory.scope(new_user(), "agent", "s1")
    return lambda i: scope.add_many(
        {"content": sentence(5 * i + k), "metadata": {"batch": i}} for k in range(5)
    )


def _memory_ids(memory: Memory, count: int) -> tuple[Any, list[int]]:
    scope = memory.scope(new_user(), "agent", "s1")
    items = [{"content": sentence(n), "metadata": {"topic": "billing"}} for n in range(count)]
    ids = [
        record.id
        for chunk in range(0, count, 1000)
        for record in scope.add_many(items[chunk : chunk + 1000])
    ]
    return scope, ids


def get(memory: Memory) -> Call:
    scope, ids = _memory_ids(memory, WORKING_SET)
    return lambda i: scope.get(ids[i % len(ids)])


def update(memory: Memory) -> Call:
    scope, ids = _memory_ids(memory, WORKING_SET)
    versions = [1] * len(ids)

    def call(i: int) -> object:
        slot = i % len(ids)
        record = scope.update(
            ids[slot],
            version=versions[slot],
            content="revised: " + sentence(100_000 + i),
            metadata={"revision": i},
        )
        versions[slot] = record.version
        return record

    return call


def list_filtered(memory: Memory) -> Call:
    scope = memory.scope(new_user(), "agent", "s1")
    since = datetime.now(UTC) - timedelta(hours=1)
    scope.add_many(
        {"content": sentence(n), "tier": "semantic", "metadata": {"topic": f"t{n % 5}"}}
        for n in range(WORKING_SET)
    )
    return lambda i: scope.list(
        tier="semantic",
        session="s1",
        metadata={"topic": f"t{i % 5}"},
        created_after=since,
        limit=20,
    )


def delete(memory: Memory) -> Call:
    scope, ids = _memory_ids(memory, 2 * WARMUP + REPEATS)
    return lambda i: scope.delete(ids[i])


def set_preference(memory: Memory) -> Call:
    scope = memory.scope(new_user(), "agent")
    return lambda i: scope.set_preference(f"key-{i}", {"style": "short", "n": i})


def _preferences(memory: Memory) -> Any:
    scope = memory.scope(new_user(), "agent")
    for n in range(20):
        scope.set_preference(f"key-{n}", {"style": "short", "n": n}, confidence=0.5)
    return scope


def get_preference(memory: Memory) -> Call:
    scope = _preferences(memory)
    return lambda i: scope.get_preference(f"key-{i % 20}")


def list_preferences(memory: Memory) -> Call:
    scope = _preferences(memory)
    return lambda i: scope.list_preferences()


def record_pattern(memory: Memory) -> Call:
    scope = memory.scope(new_user(), "agent")
    return lambda i: scope.record_pattern(
        "python", f"pattern-{i}", f"def f{i}(x):\n    return x + {i}\n", tags=["math", "tiny"]
    )


def _patterns(memory: Memory) -> tuple[Any, list[int]]:
    scope = memory.scope(new_user(), "agent")
    ids = [
        scope.record_pattern(
            ("python", "sql")[n % 2],
            f"pattern-{n}",
            f"retry with backoff, variant {n}",
            description="bounded retries",
            tags=[f"tag-{n % 3}", "retry"],
        ).id
        for n in range(30)
    ]
    return scope, ids


def find_patterns(memory: Memory) -> Call:
    scope, _ = _patterns(memory)
    return lambda i: scope.find_patterns(language="python", tag=f"tag-{i % 3}", text="backoff")


def use_pattern(memory: Memory) -> Call:
    scope, ids = _patterns(memory)
    return lambda i: scope.use_pattern(ids[i % len(ids)])


def save_state(memory: Memory) -> Call:
    scope = memory.scope(new_user(), "agent", "s1")
    return lambda i: scope.save_state({"step": i, "plan": ["read", "write"], "cursor": i * 7})


def load_state(memory: Memory) -> Call:
    scope = memory.scope(new_user(), "agent", "s1")
    for step in range(10):
        scope.save_state({"step": step, "plan": ["read", "write"]})
    return lambda i: scope.load_state()


def create_entities(memory: Memory) -> Call:
    graph = memory.graph(new_user())
    return lambda i: graph.create_entities(
        [{"name": f"entity-{i}", "entityType": "service", "observations": [sentence(i)]}]
    )


def _graph(memory: Memory) -> Any:
    graph = memory.graph(new_user())
    graph.create_entities(
        {"name": f"entity-{n}", "entityType": "service", "observations": [sentence(n)]}
        for n in range(30)
    )
    graph.create_relations(
        {"from": f"entity-{n}", "to": f"entity-{(n + 1) % 30}", "relationType": "calls"}
        for n in range(30)
    )
    return graph


def add_observations(memory: Memory) -> Call:
    graph = _graph(memory)
    return lambda i: graph.add_observations(
        [{"entityName": f"entity-{i % 30}", "contents": [f"observed {i}"]}]
    )


def search_nodes(memory: Memory) -> Call:
    graph = _graph(memory)
    return lambda i: graph.search_nodes(WORDS[i % len(WORDS)])


def read_graph(memory: Memory) -> Call:
    graph = _graph(memory)
    return lambda i: graph.read_graph()


OPERATIONS: dict[str, Callable[[Memory], Call]] = {
    "Scope.add": add,
    "Scope.add_many": add_many,
    "Scope.get": get,
    "Scope.update": update,
    "Scope.list(filters)": list_filtered,
    "Scope.delete": delete,
    "Scope.set_preference": set_preference,
    "Scope.get_preference": get_preference,
    "Scope.list_preferences": list_preferences,
    "Scope.record_pattern": record_pattern,
    "Scope.find_patterns": find_patterns,
    "Scope.use_pattern": use_pattern,
    "Scope.save_state": save_state,
    "Scope.load_state": load_state,
    "EntityGraph.create_entities": create_entities,
    "EntityGraph.add_observations": add_observations,
    "EntityGraph.search_nodes": search_nodes,
    "EntityGraph.read_graph": read_graph,
}


# -- measuring --------------------------------------------------------------------------------


@dataclass
class Growth:
    """Python memory kept from allocations made during the measured calls."""

    total: int
    by_site: list[tracemalloc.StatisticDiff]  # largest growth first
    by_file: list[tracemalloc.StatisticDiff]
    by_traceback: list[tracemalloc.StatisticDiff]  # only when tracing keeps several frames

    def report(self, top: int = 12) -> str:
        lines = [
            f"grew by {self.total:,} bytes; allocation sites that grew most (the line that "
            "allocated, not the one that keeps it; LEAK_TEST_FRAMES=25 adds tracebacks):"
        ]
        for stat in self.by_site[:top]:
            frame = stat.traceback[0]
            code = linecache.getline(frame.filename, frame.lineno).strip()
            lines.append(
                f"  {stat.size_diff:+,} B in {stat.count_diff:+,} blocks  "
                f"{frame.filename}:{frame.lineno}  {code}"
            )
        for stat in self.by_traceback[:3]:
            lines.append(f"  {stat.size_diff:+,} B allocated through:")
            lines.extend(f"      {line}" for line in stat.traceback.format(limit=15))
        lines.append("by file:")
        lines.extend(
            f"  {stat.size_diff:+,} B  {stat.traceback[0].filename}" for stat in self.by_file[:5]
        )
        return "\n".join(lines)


_IGNORED = [
    tracemalloc.Filter(False, tracemalloc.__file__),
    tracemalloc.Filter(False, "<frozen importlib._bootstrap>"),
    tracemalloc.Filter(False, linecache.__file__),
]


def measure(call: Call, warmup: int = WARMUP, repeats: int = REPEATS) -> Growth:
    """Run ``call`` ``warmup`` times, then measure what ``repeats`` more calls leave behind.
    ``tracemalloc`` must be tracing already."""
    assert tracemalloc.is_tracing()
    for i in range(warmup):
        call(i)
    # Measurements queued for the metrics thread are in flight, not kept: how many happen
    # to wait at a snapshot depends on that thread's timing (and the machine's load).
    telemetry.flush()
    gc.collect()
    before = tracemalloc.take_snapshot().filter_traces(_IGNORED)
    for i in range(warmup, warmup + repeats):
        call(i)
    telemetry.flush()
    gc.collect()
    after = tracemalloc.take_snapshot().filter_traces(_IGNORED)
    by_site = after.compare_to(before, "lineno")
    return Growth(
        total=sum(stat.size_diff for stat in by_site),
        by_site=by_site,
        by_file=after.compare_to(before, "filename"),
        by_traceback=(
            after.compare_to(before, "traceback") if tracemalloc.get_traceback_limit() > 1 else []
        ),
    )


@pytest.fixture(scope="module", autouse=True)
def tracing() -> Iterator[None]:
    """Trace allocations for the whole module, not per operation: a structure that is
    rebuilt from time to time (the ``weakref.finalize`` registry, which SQLAlchemy touches on
    every checkout) would otherwise show up as growth the first time it is rebuilt after
    tracing starts, because freeing its untraced predecessor is invisible."""
    started = not tracemalloc.is_tracing()
    if started:
        # One frame is enough to measure and to name the allocating line; more frames (for a
        # failure's tracebacks) make tracing slower.
        tracemalloc.start(int(os.environ.get("LEAK_TEST_FRAMES", "1")))
    yield
    if started:
        tracemalloc.stop()


@pytest.fixture(scope="module", params=BACKENDS)
def store(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Memory]:
    """One store per backend, shared by every operation (each uses its own user)."""
    if request.param == "sqlite-file":
        url = f"sqlite:///{tmp_path_factory.mktemp('leaks') / 'memory.db'}"
    else:
        url = str(request.getfixturevalue("postgres_url"))
    with Memory.open(url, embedder=DigestEmbedder()) as memory:
        yield memory


@pytest.mark.parametrize("operation", list(OPERATIONS))
def test_operation_does_not_leak(store: Memory, operation: str) -> None:
    call = OPERATIONS[operation](store)
    growth = measure(call)
    assert growth.total < BOUND_BYTES, (
        f"{operation} on {store.backend}: {REPEATS} calls kept {growth.total:,} bytes "
        f"(bound {BOUND_BYTES:,}, i.e. {growth.total / REPEATS:.0f} B per call)\n" + growth.report()
    )


def test_the_measurement_sees_a_leak_just_over_the_bound() -> None:
    """A call that keeps one small tuple (64 B, plus its 8 B list slot) is caught."""
    kept: list[tuple[int, int, int]] = []
    growth = measure(lambda i: kept.append((i, i, i)), warmup=10)
    assert growth.total >= BOUND_BYTES, growth.report()
