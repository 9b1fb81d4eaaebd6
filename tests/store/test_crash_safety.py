"""Writers killed with SIGKILL at random moments lose nothing they were told was stored,
and leave no half-applied batch behind.

Each writer is a separate process that opens ``Memory.open(url)`` and adds memories in a
loop, alternating single ``add`` calls and ``add_many`` batches of 20 (every memory carries
two metadata keys). Before each call it appends a ``begin`` line to its own acknowledgement
file; after the call returns it appends an ``ack`` line and fsyncs, so "acknowledged" means
exactly "the call returned". The test kills it with SIGKILL after a random delay (seeded
RNG, 5-300 ms after the writer's first call returned), two writers at a time on the same
database, 100 times on one SQLite file and 20 times on PostgreSQL. Then:

- SQLite: ``PRAGMA integrity_check`` is ``ok`` and ``PRAGMA foreign_key_check`` is empty;
- every acknowledged memory is present, with its id, content and metadata;
- every batch is all there or not there at all (the 20 items of a batch id, each with its
  metadata), and no memory lacks any of its metadata rows or, where the schema has the
  retrieval index, its keyword-terms and embedding rows;
- writers met no error before being killed, and at least a quarter of the kills (70-97 % in
  practice) landed inside a call rather than between calls;
- the database still works through the library afterwards (and on PostgreSQL the killed
  clients' server sessions go away).

Writers are forked from a ``forkserver`` that has already imported ``memory`` and this
module: a fresh interpreter spends ~1-2 s importing the library (SQLAlchemy, Alembic,
pydantic) on a 2-core machine, a fork from the server a few milliseconds. The server is a
clean single-threaded process, so each writer still opens its own engine and connections
after the fork, exactly like a freshly started process.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import random
import re
import signal
import sqlite3
import time
import traceback
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa

from memory import Memory

pytestmark = pytest.mark.slow

USER = "crash-user"
AGENT = "writer"
SESSION = "crash"
BATCH_SIZE = 20
METADATA_KEYS = 2  # every memory carries exactly this many metadata rows
SQLITE_KILLS = 100
POSTGRES_KILLS = 20
PARALLEL_WRITERS = 2
MIN_DELAY_SECONDS = 0.005
MAX_DELAY_SECONDS = 0.300
READY_TIMEOUT_SECONDS = 60.0
SEED = 20_240_611
WORDS = (
    "the deploy failed because the migration locked the audit table during peak traffic "
    "so the on-call engineer rolled back and asked for a smaller batch size next time"
).split()
INDEX_TABLES = ("memory_terms", "memory_embeddings")  # 1 row per memory, if present
REPOSITORY = str(Path(__file__).resolve().parents[2])
BATCH_CONTENT = re.compile(r"^(?P<batch>w\d+-b\d+) item (?P<item>\d+):")


# -- the writer process ----------------------------------------------------------------------


class DigestEmbedder:
    """A deterministic 16-dimension embedder: writes store vectors in the same transaction as
    the memory, as with the real model, without each writer spending seconds loading it."""

    model_name = "crash-test-digest-16"
    dimension = 16

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        digests = b"".join(hashlib.blake2b(t.encode(), digest_size=16).digest() for t in texts)
        matrix = np.frombuffer(digests, dtype=np.int8).reshape(len(texts), 16)
        matrix = matrix.astype(np.float32) + 0.5  # never the zero vector
        return matrix / np.linalg.norm(matrix, axis=1, keepdims=True)


def _line(fd: int, record: dict[str, Any], *, sync: bool) -> None:
    # One write(2) per line: a process killed around it leaves the whole line or none.
    os.write(fd, (json.dumps(record) + "\n").encode())
    if sync:
        os.fsync(fd)


def write_until_killed(url: str, ack_path: str, writer: str, seed: int, ready: Any) -> None:
    """Add memories forever, logging each call before it starts and after it returns."""
    fd = os.open(ack_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        rng = random.Random(seed)
        memory = Memory.open(url, embedder=DigestEmbedder())
        scope = memory.scope(USER, AGENT, SESSION)
        for number in range(1_000_000):
            words = " ".join(rng.choices(WORDS, k=12))
            if rng.random() < 0.5:
                name = f"{writer}-s{number:05d}"
                content = f"{name} single: {words}"
                _line(fd, {"begin": "single", "name": name}, sync=False)
                record = scope.add(content, metadata={"single": name, "writer": writer})
                _line(fd, {"ack": "single", "name": name, "id": record.id}, sync=True)
            else:
                batch = f"{writer}-b{number:05d}"
                items = [
                    {
                        "content": f"{batch} item {item:02d}: {words}",
                        "metadata": {"batch": batch, "item": item},
                    }
                    for item in range(BATCH_SIZE)
                ]
                _line(fd, {"begin": "batch", "batch": batch}, sync=False)
                records = scope.add_many(items)
                ids = [record.id for record in records]
                _line(fd, {"ack": "batch", "batch": batch, "ids": ids}, sync=True)
            if number == 0:
                # Ready once the first call returned: a process's first call is slow
                # (connecting, compiling every statement), on a busy machine longer than the
                # longest kill delay, so kills would land in start-up, not in steady writing.
                ready.set()
    except BaseException:
        _line(fd, {"error": traceback.format_exc()}, sync=True)
        raise


# -- the killer ------------------------------------------------------------------------------


@dataclass
class Crashes:
    """What the killed writers acknowledged, and how the kills went."""

    singles: dict[str, int] = field(default_factory=dict)  # name -> id
    batches: dict[str, list[int]] = field(default_factory=dict)  # batch id -> ids
    errors: list[str] = field(default_factory=list)
    kills: int = 0
    mid_call: int = 0  # kills whose writer had begun a call it never acknowledged
    ready_seconds: list[float] = field(default_factory=list)
    exit_codes: Counter[int | None] = field(default_factory=Counter)


def _context() -> Any:
    context = multiprocessing.get_context("forkserver")
    # Only takes effect if the server is not running yet; the preloads are an optimisation.
    context.set_forkserver_preload(["memory", "sqlalchemy.dialects.sqlite", __name__])
    return context


def _read_acks(path: Path, crashes: Crashes) -> None:
    text = path.read_text() if path.exists() else ""
    lines = text.split("\n")
    complete, last = lines[:-1], lines[-1]
    assert last == "", f"{path.name}: a line was cut short: {last!r}"
    records = [json.loads(line) for line in complete]
    for record in records:
        if "error" in record:
            crashes.errors.append(record["error"])
        elif record.get("ack") == "single":
            crashes.singles[record["name"]] = record["id"]
        elif record.get("ack") == "batch":
            crashes.batches[record["batch"]] = record["ids"]
    if records and "begin" in records[-1]:
        crashes.mid_call += 1


def kill_writers(
    url: str, directory: Path, kills: int, rng: random.Random, monkeypatch: pytest.MonkeyPatch
) -> Crashes:
    """Start writers ``PARALLEL_WRITERS`` at a time and SIGKILL each one at a random moment."""
    # The fork server imports this module (Python 3.11's fork server ignores the parent's
    # sys.path, hence PYTHONPATH); it must not leave bytecode behind.
    monkeypatch.setenv("PYTHONDONTWRITEBYTECODE", "1")
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join(filter(None, [REPOSITORY, os.environ.get("PYTHONPATH")]))
    )
    context = _context()
    crashes = Crashes()
    serial = 0
    while crashes.kills < kills:
        group = []
        for _ in range(min(PARALLEL_WRITERS, kills - crashes.kills)):
            writer = f"w{serial:03d}"
            serial += 1
            ready = context.Event()
            path = directory / f"{writer}.acks"
            process = context.Process(
                target=write_until_killed,
                args=(url, str(path), writer, rng.randrange(2**32), ready),
                daemon=True,
            )
            delay = rng.uniform(MIN_DELAY_SECONDS, MAX_DELAY_SECONDS)
            process.start()
            group.append((process, ready, path, delay, time.monotonic()))
        try:
            deadlines = []
            for process, ready, path, delay, started in group:
                if not ready.wait(READY_TIMEOUT_SECONDS):
                    process.join(1)
                    pytest.fail(f"writer {path.stem} never got ready: {path.read_text()!r}")
                now = time.monotonic()
                crashes.ready_seconds.append(now - started)
                deadlines.append((now + delay, process, path))
            for deadline, process, path in sorted(deadlines, key=lambda item: item[0]):
                time.sleep(max(0.0, deadline - time.monotonic()))
                alive = process.is_alive()
                os.kill(process.pid, signal.SIGKILL)
                process.join()
                crashes.kills += 1
                crashes.exit_codes[process.exitcode] += 1
                _read_acks(path, crashes)
                if not alive:
                    crashes.errors.append(f"{path.stem} had exited before the kill")
        finally:
            for process, *_ in group:
                if process.is_alive():
                    process.kill()
                process.join()
    return crashes


# -- the checks -------------------------------------------------------------------------------


@dataclass
class Stored:
    """What the tables hold for the test user."""

    contents: dict[int, str]  # memory id -> content
    metadata: dict[int, dict[str, Any]]  # memory id -> its metadata
    # memory id -> rows for it, per retrieval-index table (only tables the schema has)
    index_rows: dict[str, Counter[int]]


def _stored(url: str) -> Stored:
    """Read every memory, its metadata and its index rows straight from the tables."""
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        tables = set(sa.inspect(engine).get_table_names())
        with engine.connect() as connection:
            contents = dict(
                connection.execute(
                    sa.text("SELECT id, content FROM memories WHERE user_id = :user"),
                    {"user": USER},
                ).all()
            )
            metadata: dict[int, dict[str, Any]] = defaultdict(dict)
            rows = connection.execute(
                sa.text(
                    "SELECT d.memory_id, d.key, d.value_json FROM memory_metadata d "
                    "JOIN memories m ON m.id = d.memory_id WHERE m.user_id = :user"
                ),
                {"user": USER},
            )
            for memory_id, key, value in rows:
                metadata[memory_id][key] = json.loads(value)
            index_rows = {
                table: Counter(
                    memory_id
                    for (memory_id,) in connection.execute(
                        sa.text(
                            f"SELECT i.memory_id FROM {table} i "
                            "JOIN memories m ON m.id = i.memory_id WHERE m.user_id = :user"
                        ),
                        {"user": USER},
                    )
                )
                for table in INDEX_TABLES
                if table in tables
            }
    finally:
        engine.dispose()
    return Stored(contents, metadata, index_rows)


def _show(items: Any, limit: int = 5) -> str:
    items = list(items)
    return f"{len(items)}: {items[:limit]}{' ...' if len(items) > limit else ''}"


def check_nothing_lost_nothing_half_done(url: str, crashes: Crashes, kills: int) -> None:
    assert crashes.errors == [], f"writers failed before being killed: {crashes.errors[:3]}"
    assert crashes.kills == kills
    assert crashes.exit_codes == Counter({-signal.SIGKILL: kills}), crashes.exit_codes
    # The kills must hit calls in progress, not only the gaps between them.
    assert crashes.mid_call >= kills // 4, f"only {crashes.mid_call} kills landed mid-call"
    assert len(crashes.singles) + len(crashes.batches) >= kills, "the writers barely wrote"

    stored = _stored(url)
    contents, metadata = stored.contents, stored.metadata
    ready = sorted(crashes.ready_seconds)
    print(
        f"{crashes.kills} kills, {crashes.mid_call} mid-call; acknowledged "
        f"{len(crashes.singles)} adds and {len(crashes.batches)} batches; "
        f"{len(contents)} memories stored; writer ready after "
        f"{1000 * ready[len(ready) // 2]:.0f} ms (median), {1000 * ready[-1]:.0f} ms (max)"
    )
    by_batch: dict[str, dict[int, int]] = defaultdict(dict)  # batch -> item -> id
    for memory_id, content in contents.items():
        match = BATCH_CONTENT.match(content)
        if match:
            by_batch[match["batch"]][int(match["item"])] = memory_id

    # Every acknowledged write is there, under the id the writer was given.
    lost_singles = {
        name: memory_id
        for name, memory_id in crashes.singles.items()
        if not contents.get(memory_id, "").startswith(f"{name} single:")
        or metadata.get(memory_id) != {"single": name, "writer": name.split("-")[0]}
    }
    assert lost_singles == {}, f"acknowledged adds lost: {_show(lost_singles.items())}"
    lost_batches = {
        batch: ids
        for batch, ids in crashes.batches.items()
        if sorted(by_batch.get(batch, {}).values()) != sorted(ids) or len(ids) != BATCH_SIZE
    }
    assert lost_batches == {}, f"acknowledged batches lost: {_show(lost_batches)}"

    # No batch half applied, acknowledged or not.
    half = {
        batch: sorted(items)
        for batch, items in by_batch.items()
        if sorted(items) != list(range(BATCH_SIZE))
    }
    assert half == {}, f"half-applied batches: {_show(half.items())}"
    # No memory without (all of) its metadata, and the metadata is the memory's own.
    incomplete = {
        memory_id: metadata.get(memory_id, {})
        for memory_id in contents
        if len(metadata.get(memory_id, {})) != METADATA_KEYS
    }
    assert incomplete == {}, f"memories missing metadata: {_show(incomplete.items())}"
    mismatched = [
        (batch, item)
        for batch, items in by_batch.items()
        for item, memory_id in items.items()
        if metadata[memory_id] != {"batch": batch, "item": item}
    ]
    assert mismatched == [], f"batch metadata on the wrong memory: {_show(mismatched)}"
    # Where the schema has a retrieval index, it is written in the same transaction: every
    # memory has exactly one row in each index table (every writer stored vectors).
    for table, counts in stored.index_rows.items():
        wrong = {i: counts[i] for i in contents if counts[i] != 1}
        assert wrong == {}, f"memories with != 1 row in {table}: {_show(wrong.items())}"

    # The store is still usable through the library after all those crashes.
    with Memory.open(url, embedder=DigestEmbedder()) as memory:
        scope = memory.scope(USER, AGENT, SESSION)
        probe = scope.add("written after the last kill", metadata={"probe": True})
        assert scope.get(probe.id).metadata == {"probe": True}
        sample = sorted(crashes.batches)[:1]
        for batch in sample:
            assert len(scope.list(metadata={"batch": batch})) == BATCH_SIZE


# -- tests -------------------------------------------------------------------------------------


def test_sigkilled_sqlite_writers_lose_no_acknowledged_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    database = tmp_path / "crash.db"
    url = f"sqlite:///{database}"
    Memory.open(url, embedder=None).close()  # the schema exists before the first writer starts
    acks = tmp_path / "acks"
    acks.mkdir()

    crashes = kill_writers(url, acks, SQLITE_KILLS, random.Random(SEED), monkeypatch)

    # Opening the file runs WAL recovery; then the whole file must be consistent.
    connection = sqlite3.connect(database)
    try:
        assert connection.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert connection.execute("PRAGMA foreign_key_check").fetchall() == []
    finally:
        connection.close()
    check_nothing_lost_nothing_half_done(url, crashes, SQLITE_KILLS)


def _other_sessions(url: str) -> list[tuple[Any, ...]]:
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as connection:
            return [
                tuple(row)
                for row in connection.execute(
                    sa.text(
                        "SELECT pid, state, left(query, 60) FROM pg_stat_activity "
                        "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                    )
                )
            ]
    finally:
        engine.dispose()


def test_sigkilled_postgres_writers_lose_no_acknowledged_write(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    make_postgres_database: Callable[[], str],
) -> None:
    url = make_postgres_database()
    Memory.open(url, embedder=None).close()
    crashes = kill_writers(url, tmp_path, POSTGRES_KILLS, random.Random(SEED + 1), monkeypatch)

    # The server notices each dead client and rolls its transaction back.
    deadline = time.monotonic() + 15
    while (left := _other_sessions(url)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert left == [], f"killed clients left server sessions behind: {left}"
    check_nothing_lost_nothing_half_done(url, crashes, POSTGRES_KILLS)
