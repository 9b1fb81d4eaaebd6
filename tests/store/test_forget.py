"""The right to be forgotten: ``forget_user`` / ``memctl forget`` remove every row of a user,
leave nothing recoverable in the SQLite file or its WAL, keep the event chain verifiable, and
change no other user's rows.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from memory import HashingEmbedder, Memory
from memory.cli import main
from memory.core.text import terms
from memory.ops import DatabaseFlagProvider, table_checksums
from memory.store.tables import Base

PERSISTENT = ["sqlite-file", "postgresql"]
# The logs change by design: the event log is redacted and records the forget (its chain
# is verified instead, and other users' events are compared row by row), and the flag
# audit's entries about the user's sessions lose the session id. The sync node's clock and
# change sequences (sync_node, sync_vectors) moved on with the user's writes and never go
# back: a sequence once issued is never issued again.
UNCHANGED_TABLES = sorted(
    set(Base.metadata.tables) - {"memory_events", "flag_audit", "sync_node", "sync_vectors"}
)


def _populate(store: Memory, user: str, word: str, session: str) -> None:
    """Rows of ``user`` in every table that holds user data, each carrying ``word``."""
    planner = store.scope(user, "planner", session)
    coder = store.scope(user, "coder", session)
    note = planner.add(f"the launch code is {word} remember it", tier="semantic",
                       metadata={"secret": word})
    planner.add(f"working note {word}", tier="working")
    planner.share(memory_id=note.id, agents=["coder"])
    planner.share(tag=("secret", word), agents=["coder"])
    store.set_team(user, f"team-{word}", ["coder"])
    # Preference keys and session ids are also event targets (and the session id is in the
    # flag audit below): forget must reach those too.
    coder.set_preference(f"launch-{word}", {"value": word})
    coder.record_pattern("python", f"pattern-{word}", f"print('{word}')", description=word,
                         tags=[word])
    coder.save_state({"note": word})
    # A search caches its query vector; the query quotes the user.
    coder.search(f"launch code {word}")
    graph = store.graph(user)
    graph.create_entities([{"name": f"entity-{word}", "entityType": "secret",
                            "observations": [f"observed {word}"]}])
    graph.create_entities([{"name": f"other-{word}", "entityType": "secret",
                            "observations": []}])
    graph.create_relations([{"from": f"entity-{word}", "to": f"other-{word}",
                             "relationType": f"knows-{word}"}])
    DatabaseFlagProvider(store.engine).override(
        "USE_CROSS_AGENT_SHARING", session=session, on=True, actor="test"
    )


def _rows(connection: sa.Connection, table: str) -> dict[int, dict[str, object]]:
    """Every row of ``table`` (one with an integer key) by that key."""
    key = "seq" if table == "memory_events" else "id"
    return {
        row[key]: dict(row)
        for row in connection.execute(sa.text(f"SELECT * FROM {table}")).mappings()
    }


def _raw_bytes(database: Path) -> bytes:
    found = b""
    for suffix in ("", "-wal", "-shm", "-journal"):
        path = database.with_name(database.name + suffix)
        if path.exists():
            found += path.read_bytes()
    return found


def _text_hits(connection: sa.Connection, needle: str) -> dict[str, int]:
    """Rows per table whose text form (every column) contains ``needle`` (PostgreSQL)."""
    hits = {}
    for name in Base.metadata.tables:
        count = connection.execute(
            sa.text(f'SELECT count(*) FROM "{name}" AS t WHERE CAST(t AS text) LIKE :needle'),
            {"needle": f"%{needle}%"},
        ).scalar_one()
        if count:
            hits[name] = count
    return hits


@pytest.mark.parametrize("backend", PERSISTENT)
def test_forget_leaves_nothing_and_changes_no_other_user(
    backend: str, url_for: Callable[[str], str], tmp_path: Path
) -> None:
    canary = f"canary{uuid.uuid4().hex}"
    victim, bystander = f"victim-{uuid.uuid4().hex[:8]}", f"bystander-{uuid.uuid4().hex[:8]}"
    url = url_for(backend)
    with Memory.open(url, embedder=HashingEmbedder(), role="admin") as store:
        _populate(store, bystander, "ordinary", f"s-{uuid.uuid4().hex[:8]}")
        with store.engine.connect() as connection:
            before = table_checksums(connection, UNCHANGED_TABLES)
            audit_before = _rows(connection, "flag_audit")
        # The session id carries the canary: it lands in event targets and the flag audit.
        _populate(store, victim, canary, f"s-{canary}")
        with store.engine.connect() as connection:
            events_before = _rows(connection, "memory_events")
            assert canary in str(_rows(connection, "flag_audit"))
        with store.engine.connect() as connection:
            assert table_checksums(connection, UNCHANGED_TABLES) != before

        report = store.forget_user(victim)

        assert report.rows["memories"] == 2 and report.rows["entities"] == 2
        assert report.rows["sharing_grants"] == 2 and report.rows["flag_session_overrides"] == 1
        assert report.events_redacted > 0 and report.audit_entries_redacted == 1
        with store.engine.connect() as connection:
            assert table_checksums(connection, UNCHANGED_TABLES) == before
            # The bystander's events and flag audit entries are exactly as they were.
            events_after = _rows(connection, "memory_events")
            assert {
                seq: row for seq, row in events_after.items() if row["user_id"] == bystander
            } == {seq: row for seq, row in events_before.items() if row["user_id"] == bystander}
            audit_after = _rows(connection, "flag_audit")
            assert {id_: audit_after[id_] for id_ in audit_before} == audit_before
            assert canary not in str(audit_after) and "[forgotten]" in str(audit_after)
            assert canary not in str(events_after) and victim not in str(events_after)
            for name, table in Base.metadata.tables.items():
                if "user_id" in table.c:
                    left = connection.execute(
                        sa.select(sa.func.count()).select_from(table)
                        .where(table.c.user_id == victim)
                    ).scalar_one()
                    assert left == 0, name
            if backend == "postgresql":
                assert _text_hits(connection, canary) == {}
        assert store.verify_events().ok
        # The forgotten user's memories are gone from this process too.
        assert victim not in store._retriever._users
        assert store.scope(victim, "coder").search(f"launch code {canary}") == []
        assert len(store.scope(bystander, "planner").list()) == 2

    if backend == "sqlite-file":
        raw = _raw_bytes(tmp_path / "memory.db")
        assert raw, "the database file should exist"
        for needle in {canary, *terms(canary), victim}:
            assert needle.encode() not in raw, needle


def test_the_sqlite_check_would_see_the_canary(tmp_path: Path) -> None:
    """The raw-bytes check above can fail: before forget the canary is in the files."""
    canary = f"canary{uuid.uuid4().hex}"
    database = tmp_path / "memory.db"
    with Memory.open(f"sqlite:///{database}", embedder=HashingEmbedder(), role="admin") as store:
        store.scope("ada", "planner").add(f"remember {canary}")
    assert canary.encode() in _raw_bytes(database)


def test_memctl_forget_acts_as_admin_and_says_so(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'memory.db'}"
    with Memory.open(url, embedder=HashingEmbedder()) as store:
        store.scope("ada", "planner").add("ada's note")
        store.scope("grace", "planner").add("grace's note")
    runner = CliRunner()
    result = runner.invoke(main, ["--database-url", url, "forget", "--user", "ada", "--yes"])
    assert result.exit_code == 0, result.output
    assert "acting as admin" in result.stderr
    assert "forgot user 'ada'" in result.stdout
    with Memory.open(url, embedder=HashingEmbedder()) as store:
        assert store.scope("ada", "planner").list() == []
        assert len(store.scope("grace", "planner").list()) == 1
    refused = runner.invoke(main, ["--database-url", url, "forget", "--user", ""])
    assert refused.exit_code != 0 and "user" in refused.output


@pytest.mark.parametrize("backend", PERSISTENT)
def test_a_session_id_another_user_names_too_is_left_alone(
    backend: str, url_for: Callable[[str], str]
) -> None:
    """Flag overrides and their audit are keyed by session id alone: one that another user's
    rows name too is theirs as much as the forgotten user's, so forget keeps it."""
    victim, bystander = f"victim-{uuid.uuid4().hex[:8]}", f"bystander-{uuid.uuid4().hex[:8]}"
    session = f"s-{uuid.uuid4().hex[:8]}"
    with Memory.open(url_for(backend), embedder=HashingEmbedder(), role="admin") as store:
        store.scope(victim, "planner", session).save_state({"step": 1})
        store.scope(bystander, "planner", session).save_state({"step": 1})
        DatabaseFlagProvider(store.engine).override(
            "USE_CROSS_AGENT_SHARING", session=session, on=True, actor="test"
        )
        with store.engine.connect() as connection:
            audit_before = _rows(connection, "flag_audit")

        report = store.forget_user(victim)

        assert report.rows["session_state"] == 1 and report.audit_entries_redacted == 0
        assert report.rows["flag_session_overrides"] == 0
        with store.engine.connect() as connection:
            assert _rows(connection, "flag_audit") == audit_before
        assert store.verify_events().ok


def test_another_process_drops_its_index_of_a_forgotten_user(tmp_path: Path) -> None:
    # Two stores on one file stand for two processes: the one that did not forget learns
    # of it from the user's emptied change log at its next search of that user.
    url = f"sqlite:///{tmp_path / 'memory.db'}"
    word = uuid.uuid4().hex[:8]
    with Memory.open(url, embedder=HashingEmbedder(), role="admin") as forgetting, Memory.open(
        url, embedder=HashingEmbedder()
    ) as other:
        forgetting.scope("u1", "planner", "s1").add(f"the launch code is {word}")
        assert other.scope("u1", "planner").search(f"launch code {word}")
        assert terms(word)[0] in other._retriever._terms["u1"].vocabulary

        forgetting.forget_user("u1")

        assert other.scope("u1", "planner").search(f"launch code {word}") == []
        assert terms(word)[0] not in other._retriever._terms["u1"].vocabulary
        assert other._retriever._users["u1"].size == 0


def _wait_for(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 10
    while not condition():
        assert time.monotonic() < deadline, "not heard within 10 s"
        time.sleep(0.02)


def test_a_process_on_the_bus_drops_what_it_holds_when_any_user_is_forgotten(
    url_for: Callable[[str], str],
) -> None:
    # The forget event names no user, so a subscriber cannot tell whose index and cached
    # contexts to drop: it drops everyone's, and reads them again as they are needed.
    url = url_for("postgresql")
    victim, bystander = (f"user-{uuid.uuid4().hex[:10]}" for _ in range(2))
    with Memory.open(
        url, embedder=HashingEmbedder(), role="admin", updates="postgresql"
    ) as forgetting, Memory.open(url, embedder=HashingEmbedder(), updates="postgresql") as other:
        for user in (victim, bystander):
            forgetting.scope(user, "planner", "s1").add(f"the launch code of {user}")
        # Once the adds have been heard (each moves its user's cache generation on), the
        # contexts cached below stay until something else is heard.
        _wait_for(lambda: all(other._injector._generations.get(u) for u in (victim, bystander)))
        for user in (victim, bystander):
            other.scope(user, "planner", "s1").inject("launch code", 200)
        assert {victim, bystander} <= set(other._retriever._terms)
        assert len(other._injector._cache) == 2

        forgetting.forget_user(victim)

        _wait_for(lambda: not other._retriever._terms and not other._injector._cache)
        assert other._injector._epoch == 1
        assert other.scope(victim, "planner").search("launch code") == []
        assert other.scope(bystander, "planner").search("launch code")
