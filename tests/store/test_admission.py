"""Fair, bounded admission to the database (``memory.store.db``).

The gate admits callers in arrival order and never loses a permit, even when a waiter times
out just as a permit is handed to it. Through the library: a caller that cannot get a
PostgreSQL connection within the 5 s bound gets a clear ``DatabaseUnavailableError`` (not a
longer wait, not a pool error), and threads sharing a SQLite ``:memory:`` database (one
connection) no longer interleave their transactions on it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest
import sqlalchemy as sa

from memory import DatabaseUnavailableError, HashingEmbedder, Memory
from memory.store.db import AdmissionGate, Database
from memory.store.engine import POSTGRES_TIMEOUT_SECONDS, create_engine

WAIT = 10.0  # generous bound for a thread to reach a point on a busy machine


def wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.001)


def test_gate_admits_waiters_in_arrival_order() -> None:
    gate = AdmissionGate(1)
    assert gate.acquire(0)
    admitted: list[int] = []

    def waiter(number: int) -> None:
        assert gate.acquire(WAIT)
        admitted.append(number)
        gate.release()

    threads = []
    for number in range(12):
        thread = threading.Thread(target=waiter, args=(number,))
        thread.start()
        threads.append(thread)
        # The next waiter starts only once this one is queued: arrival order is known.
        wait_until(lambda n=number: gate.waiting == n + 1, f"waiter {number} queued")
    gate.release()
    for thread in threads:
        thread.join(WAIT)
    assert admitted == list(range(12))
    assert gate.waiting == 0


def test_gate_timeout_refuses_and_keeps_every_permit() -> None:
    gate = AdmissionGate(2)
    assert gate.acquire(0) and gate.acquire(0)
    started = time.monotonic()
    assert not gate.acquire(0.2)
    assert time.monotonic() - started >= 0.2
    assert gate.waiting == 0  # the timed-out waiter left the queue
    gate.release()
    gate.release()
    # Both permits came back: two callers get in at once, a third does not.
    assert gate.acquire(0) and gate.acquire(0)
    assert not gate.acquire(0)
    with pytest.raises(ValueError, match="at least 1 permit"):
        AdmissionGate(0)


def test_gate_hands_over_a_permit_racing_a_timeout() -> None:
    # Many short waits against quick releases: a permit handed to a waiter whose wait has
    # just expired must count as taken, never vanish and never be held twice.
    gate = AdmissionGate(1)
    holders = 0
    most = 0
    lock = threading.Lock()

    def worker() -> None:
        nonlocal holders, most
        for _ in range(300):
            if gate.acquire(0.0005):
                with lock:
                    holders += 1
                    most = max(most, holders)
                with lock:
                    holders -= 1
                gate.release()

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert most == 1
    assert gate.acquire(0), "a permit was lost"
    assert not gate.acquire(0), "a permit was duplicated"


def test_a_caller_without_a_connection_fails_at_the_timeout(postgres_url: str) -> None:
    engine = create_engine(postgres_url, pool_size=1, max_overflow=0)
    database = Database(engine)
    holding = threading.Event()
    done = threading.Event()

    def hold(connection: sa.Connection) -> None:
        holding.set()
        assert done.wait(3 * POSTGRES_TIMEOUT_SECONDS)

    holder = threading.Thread(target=database.read, args=(hold,))
    holder.start()
    try:
        assert holding.wait(WAIT)
        started = time.monotonic()
        with pytest.raises(DatabaseUnavailableError, match="no database connection came free"):
            database.read(lambda connection: connection.execute(sa.text("SELECT 1")))
        waited = time.monotonic() - started
        assert POSTGRES_TIMEOUT_SECONDS - 0.05 <= waited < POSTGRES_TIMEOUT_SECONDS + 1.0
    finally:
        done.set()
        holder.join(WAIT)
        # Once the connection is back, the next caller is served.
        assert database.read(lambda c: c.execute(sa.text("SELECT 1")).scalar_one()) == 1
        engine.dispose()


def test_threads_sharing_a_memory_database_do_not_interleave_transactions() -> None:
    errors: list[BaseException] = []
    with Memory.open("sqlite://", embedder=HashingEmbedder()) as memory:

        def writer(number: int) -> None:
            scope = memory.scope("shared-user", "agent", f"session-{number}")
            try:
                for item in range(25):
                    scope.add(f"thread {number} note {item}")
                    scope.list(limit=5)
            except Exception as error:  # collected: the assertion below shows them
                errors.append(error)

        threads = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert not errors, errors[:3]
        stored = memory.scope("shared-user", "agent").list(limit=1000)
    assert len(stored) == 8 * 25
