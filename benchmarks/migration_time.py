"""Migration time at scale, and how long it locks agents out, against the checklist's 5 minutes.

Two upgrades, on SQLite (a file) and PostgreSQL (a throwaway database), each timed with
``memory.ops.migrate`` as ``memctl migrate`` runs it (one transaction):

- ``phase1``: a Phase 1 database (revision 0003, the entity graph) holding ``--rows``
  observations (20 per entity, 100 entities per user) upgraded to head: the first Phase 2
  deployment;
- ``head-1``: a database holding ``--rows`` memories at the revision before head, upgraded
  to head: the next release's migration (head is 0010, which re-chains the event log, one
  event per memory). The memories are written at head with ``Scope.add_many`` (as
  ``restore_time.py`` builds them), then the schema is rolled back one revision with
  ``memory.ops.rollback``, so the data is what the code really writes.

The lock time is what agents feel: while the migration runs, two probe threads, each on its
own connection (and its own, long, lock timeout), repeat an agent's read and an agent's
write of the data being migrated (the entity graph: an observation by id and an update of
one entity's ``updated_at``; memories: one memory by id, and a no-op update of one event,
which takes the lock an agent's write takes to append its event)
every 20 ms. The longest single probe is the longest an agent waited; before the
migration, the same probes give the baseline, measured in the same run.

Run (from the repository root)::

    .venv/bin/python benchmarks/migration_time.py
    .venv/bin/python benchmarks/migration_time.py --backends sqlite --rows 20000

Output: a table, then one JSON line per backend and scenario (``grep '^{'``). The exit status
is 1 when an upgrade takes longer than the 5-minute objective.
"""

from __future__ import annotations

import argparse
import hashlib
import random
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from _scratch import DEFAULT_POSTGRES_URL, scratch_database
from measure import emit, load_average, summary, table, timed
from restore_time import DenseEmbedder, build

import memory.ops
from memory.store.schema import head_revision

OBJECTIVE_SECONDS = 5 * 60
PHASE_1_REVISION = "0003"
OBSERVATIONS_PER_ENTITY = 20
ENTITIES_PER_USER = 100
INSERT_CHUNK = 10_000
PROBE_PAUSE_SECONDS = 0.02


# -- building the databases ------------------------------------------------------------------------


def plain_engine(url: str) -> sa.Engine:
    """An engine that waits for locks as long as it takes (a probe must measure the wait, not
    give up after the library's 5 s), without the library's own settings."""
    if url.startswith("sqlite"):
        return sa.create_engine(url, poolclass=sa.NullPool, connect_args={"timeout": 3600})
    return sa.create_engine(url, poolclass=sa.NullPool)


def build_phase1(url: str, observations: int, seed: int) -> int:
    """A Phase 1 database at 0003 holding ``observations`` observations; returns the count.

    Rows go in with bulk INSERTs (the graph API's per-entity calls would take hours at a
    million); they are what ``graph.create_entities`` stores: one entity per name and user,
    observations unique per entity by their SHA-256.
    """
    memory.ops.migrate(url, PHASE_1_REVISION)
    rng = random.Random(seed)
    engine = plain_engine(url)
    metadata = sa.MetaData()
    entities = sa.Table("entities", metadata, autoload_with=engine)
    observations_table = sa.Table("observations", metadata, autoload_with=engine)
    now = datetime.now(UTC).replace(tzinfo=None)
    count = 0
    entity_count = max(1, observations // OBSERVATIONS_PER_ENTITY)
    with engine.begin() as connection:
        for start in range(0, entity_count, INSERT_CHUNK):
            connection.execute(sa.insert(entities), [
                {"id": index + 1, "user_id": f"user-{index // ENTITIES_PER_USER:05d}",
                 "name": f"component {index}", "entity_type": "component",
                 "created_at": now, "updated_at": now}
                for index in range(start, min(start + INSERT_CHUNK, entity_count))
            ])  # fmt: skip
        rows: list[dict[str, Any]] = []
        for index in range(observations):
            content = (
                f"component {index // OBSERVATIONS_PER_ENTITY} "
                f"{rng.choice(('runs on', 'is owned by', 'depends on', 'was deployed to'))} "
                f"{rng.choice(('PostgreSQL 15', 'the payments team', 'Redis', 'eu-west-1'))} "
                f"since release {rng.randint(1, 400)} (note {index})"
            )
            rows.append({
                "id": index + 1, "entity_id": index // OBSERVATIONS_PER_ENTITY + 1,
                "content": content, "content_hash": hashlib.sha256(content.encode()).hexdigest(),
                "created_at": now,
            })  # fmt: skip
            if len(rows) == INSERT_CHUNK:
                connection.execute(sa.insert(observations_table), rows)
                count += len(rows)
                rows = []
        if rows:
            connection.execute(sa.insert(observations_table), rows)
            count += len(rows)
    if engine.dialect.name == "postgresql":
        with engine.connect() as connection:
            # Ids were given explicitly: move the sequences past them, as the API would have.
            for name in ("entities", "observations"):
                connection.execute(sa.text(
                    f"SELECT setval(pg_get_serial_sequence('{name}', 'id'), "
                    f"(SELECT max(id) FROM {name}))"
                ))  # fmt: skip
            connection.commit()
    engine.dispose()
    return count


def build_head_minus_one(url: str, memories: int, seed: int) -> tuple[int, str]:
    """``memories`` memories written at head, then the schema rolled back one revision."""
    stored = build(url, memories, seed, DenseEmbedder())
    done = memory.ops.rollback(url, "-1")
    return stored, done.after or ""


# -- probing for locks -----------------------------------------------------------------------------


@dataclass
class Probe:
    """Repeats one statement on its own connection and records how long each took."""

    url: str
    statement: sa.TextClause
    write: bool
    seconds: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        engine = plain_engine(self.url)
        try:
            while not self._stop.is_set():
                started = time.perf_counter()
                try:
                    with engine.begin() as connection:
                        connection.execute(self.statement)
                except sa.exc.DBAPIError as error:  # recorded, so a failed probe is seen
                    self.errors.append(str(error.orig).splitlines()[0])
                self.seconds.append(time.perf_counter() - started)
                self._stop.wait(PROBE_PAUSE_SECONDS)
        finally:
            engine.dispose()

    @contextmanager
    def running(self) -> Iterator[Probe]:
        thread = threading.Thread(target=self.run, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            thread.join(timeout=3600)


PROBES = {
    "phase1": {
        "read": "SELECT content FROM observations WHERE id = 1",
        "write": "UPDATE entities SET updated_at = updated_at WHERE id = 1",
    },
    # Every memory write appends to the event log, which head re-chains: the write probe
    # takes the lock an append takes (a no-op UPDATE: the chain stays as it is).
    "head-1": {
        "read": "SELECT content FROM memories WHERE id = (SELECT min(id) FROM memories)",
        "write": "UPDATE memory_events SET seq = seq "
        "WHERE seq = (SELECT min(seq) FROM memory_events)",
    },
}


def probed(url: str, scenario: str) -> dict[str, Probe]:
    return {
        kind: Probe(url, sa.text(sql), kind == "write") for kind, sql in PROBES[scenario].items()
    }


def baseline(url: str, scenario: str, seconds: float) -> dict[str, list[float]]:
    probes = probed(url, scenario)
    with probes["read"].running(), probes["write"].running():
        time.sleep(seconds)
    return {kind: probe.seconds for kind, probe in probes.items()}


def measure_upgrade(url: str, scenario: str) -> dict[str, Any]:
    before = baseline(url, scenario, 3.0)
    probes = probed(url, scenario)
    with probes["read"].running(), probes["write"].running():
        time.sleep(0.5)  # both probes are connected and running before the upgrade starts
        _, timing = timed(memory.ops.migrate, url)
        time.sleep(0.5)
    figures: dict[str, Any] = {"seconds": round(timing.wall / 1000, 2)}
    for kind, probe in probes.items():
        waits = [seconds * 1000 for seconds in probe.seconds]
        figures[f"{kind}_longest_wait_s"] = round(max(waits) / 1000, 3)
        figures[f"{kind}_probes"] = summary(waits, ("n", "p50", "p95", "max"), unit="ms")
        figures[f"{kind}_baseline"] = summary(
            [seconds * 1000 for seconds in before[kind]], ("n", "p50", "p95", "max"), unit="ms"
        )
        if probe.errors:  # a probe that failed measured nothing: no figure is better
            raise RuntimeError(f"the {kind} probe failed: {probe.errors[0]}")
    return figures


# -- the run ---------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", nargs="+", default=["sqlite", "postgresql"],
                        choices=["sqlite", "postgresql"])  # fmt: skip
    parser.add_argument("--scenarios", nargs="+", default=["phase1", "head-1"],
                        choices=["phase1", "head-1"])  # fmt: skip
    parser.add_argument("--rows", type=int, default=1_000_000,
                        help="observations (phase1) and memories (head-1); default 1,000,000")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--postgres-url", default=DEFAULT_POSTGRES_URL)
    arguments = parser.parse_args(argv)

    rows, failed = [], False
    for backend in arguments.backends:
        for scenario in arguments.scenarios:
            with scratch_database(backend, arguments.postgres_url, "bench_migrate") as url:
                started = time.perf_counter()
                if scenario == "phase1":
                    count, revision = build_phase1(url, arguments.rows, arguments.seed), "0003"
                else:
                    count, revision = build_head_minus_one(url, arguments.rows, arguments.seed)
                build_seconds = time.perf_counter() - started
                figures = measure_upgrade(url, scenario)
            passed = figures["seconds"] <= OBJECTIVE_SECONDS
            failed |= not passed
            rows.append([
                backend, scenario, count, f"{revision} -> {head_revision()}", figures["seconds"],
                figures["read_longest_wait_s"], figures["write_longest_wait_s"],
                figures["read_baseline"]["max_ms"] / 1000,
                figures["write_baseline"]["max_ms"] / 1000,
                "PASS" if passed else "FAIL",
            ])  # fmt: skip
            emit({
                "benchmark": "migration_time", "backend": backend, "scenario": scenario,
                "rows": count, "from": revision, "to": head_revision(),
                "build_seconds": round(build_seconds, 1), **figures,
                "objective_seconds": OBJECTIVE_SECONDS, "passed": passed,
                "load_average": load_average(),
            })  # fmt: skip
    print(table(
        ["backend", "scenario", "rows", "upgrade", "seconds", "read wait s", "write wait s",
         "read base s", "write base s", "5 min"],
        rows, labels=2,
    ))  # fmt: skip
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
