"""Forget under concurrent writes (issue 16, finding 1): real writer threads keep adding
memories, preferences, checkpoints and patterns for a user while an admin forgets them.

Every write must land entirely before the forget (then it is gone and its events are
redacted, each listed by the redaction event) or entirely after it (its rows stay and its
events are numbered after the ``user.forget`` event, unredacted). Nothing in between: no
row that survived with its event redacted or numbered before the forget, and a chain that
still verifies.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable

import pytest
import sqlalchemy as sa

from memory import HashingEmbedder, Memory
from memory.store.tables import Base

ROUNDS = 4
WRITES_BEFORE = 0.3  # seconds of writing before the forget starts
WRITES_PER_THREAD = 400  # bound on each writer's loop, whatever the timing
WRITER_SECONDS = 15.0  # and on its duration

_tables = Base.metadata.tables
events = _tables["memory_events"]


def _writers(store: Memory, user: str, stop: threading.Event, errors: list[str]) -> list[
    threading.Thread
]:
    def adder(agent: str) -> None:
        scope = store.scope(user, agent, "s1")
        deadline = time.monotonic() + WRITER_SECONDS
        for number in range(WRITES_PER_THREAD):
            if stop.is_set() or time.monotonic() > deadline:
                return
            try:
                scope.add(f"note {number} by {agent} {uuid.uuid4().hex}")
            except Exception as error:  # reported by the test, not lost in the thread
                errors.append(repr(error))

    def settler() -> None:
        deadline = time.monotonic() + WRITER_SECONDS
        for number in range(WRITES_PER_THREAD):
            if stop.is_set() or time.monotonic() > deadline:
                return
            # A new key, session and name each time: a row that survives names its write.
            scope = store.scope(user, "settler", f"s-{number}")
            try:
                scope.set_preference(f"key-{number}", number)
                scope.save_state({"step": number})
                scope.record_pattern("python", f"pattern-{number}", f"print({number})")
            except Exception as error:
                errors.append(repr(error))

    return [
        threading.Thread(target=adder, args=("a1",)),
        threading.Thread(target=adder, args=("a2",)),
        threading.Thread(target=settler),
    ]


def _targets_of_survivors(connection: sa.Connection, user: str) -> set[str]:
    """The event target each of ``user``'s remaining rows was written under."""
    survivors = {
        f"memory:{row.id}"
        for row in connection.execute(
            sa.select(_tables["memories"].c.id).where(_tables["memories"].c.user_id == user)
        )
    }
    preferences = _tables["user_preferences"]
    survivors |= {
        f"preference:{key}"
        for key in connection.execute(
            sa.select(preferences.c.key).where(preferences.c.user_id == user)
        ).scalars()
    }
    state = _tables["session_state"]
    survivors |= {
        f"session:{session}"
        for session in connection.execute(
            sa.select(state.c.session_id).where(state.c.user_id == user)
        ).scalars()
    }
    patterns = _tables["code_patterns"]
    survivors |= {
        f"pattern:{id_}"
        for id_ in connection.execute(
            sa.select(patterns.c.id).where(patterns.c.user_id == user)
        ).scalars()
    }
    return survivors


@pytest.mark.parametrize("backend", ["sqlite-file", "postgresql"])
def test_a_write_during_forget_is_entirely_forgotten_or_entirely_after_it(
    backend: str, url_for: Callable[[str], str]
) -> None:
    with Memory.open(url_for(backend), embedder=HashingEmbedder(), role="admin") as store:
        for _ in range(ROUNDS):
            user = f"user-{uuid.uuid4().hex[:10]}"
            stop, errors = threading.Event(), []
            threads = _writers(store, user, stop, errors)
            for thread in threads:
                thread.start()
            try:
                time.sleep(WRITES_BEFORE)
                report = store.forget_user(user)
                # Let the writers go on a little after the forget too.
                time.sleep(0.1)
            finally:
                stop.set()
                for thread in threads:
                    thread.join(WRITER_SECONDS + 10)
            assert errors == []
            assert report.total > 0, "the writers wrote nothing before the forget"

            with store.engine.connect() as connection:
                forget_seq = connection.execute(
                    sa.select(sa.func.max(events.c.seq)).where(events.c.operation == "user.forget")
                ).scalar_one()
                before = connection.execute(
                    sa.select(sa.func.count()).select_from(events)
                    .where(events.c.user_id == user, events.c.seq < forget_seq)
                ).scalar_one()
                after = {
                    row.target
                    for row in connection.execute(
                        sa.select(events.c.target).where(
                            events.c.user_id == user,
                            events.c.seq > forget_seq,
                            events.c.redacted.is_(False),
                        )
                    )
                }
                survivors = _targets_of_survivors(connection, user)
            # No event of the user before the forget kept its user id ...
            assert before == 0
            # ... and every row that survived was written after the forget.
            assert survivors <= after, sorted(survivors - after)[:5]
            report_check = store.verify_events()
            assert report_check.ok, report_check.reason
