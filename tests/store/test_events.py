"""The event log: every write appends a hash-chained event in its own transaction,
``memctl audit verify`` finds edited, deleted and reordered events, redaction keeps the
chain verifiable, ``memctl record`` writes an event and its memory at once, and shared
session contexts merge the same way everywhere.

Tampering is done with plain SQL on a database of the test's own (a SQLite file or a fresh
PostgreSQL database), exactly as an attacker with database access would.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner, Result

from memory import (
    HashingEmbedder,
    InvalidInputError,
    Memory,
    MemoryEvent,
    StaleVersionError,
    merge_patches,
)
from memory.cli import main
from memory.store.events import (
    append_event,
    event_table,
    rechain,
    record_reads,
    redact_user,
    verify_chain,
)
from memory.telemetry import instruments as telemetry

PERSISTENT = ["sqlite-file", "postgresql"]


def memctl(url: str, *args: str) -> Result:
    return CliRunner().invoke(main, ["--database-url", url, *args])


@pytest.fixture(params=PERSISTENT)
def own_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database nobody else uses (tampering must not disturb other tests)."""
    if request.param == "sqlite-file":
        return f"sqlite:///{tmp_path / 'events.db'}"
    make: Callable[[], str] = request.getfixturevalue("make_postgres_database")
    return make()


@pytest.fixture
def store(own_url: str) -> Iterator[Memory]:
    with Memory.open(own_url, embedder=HashingEmbedder()) as opened:
        yield opened


def _events(store: Memory) -> list[sa.RowMapping]:
    with store.engine.connect() as connection:
        return list(
            connection.execute(sa.text("SELECT * FROM memory_events ORDER BY seq")).mappings()
        )


def _write_everything(store: Memory, user: str) -> None:
    scope = store.scope(user, "planner", "s1")
    first = scope.add("the invoice export is split in two", tier="episodic")
    scope.add_many(
        ["the API is slow on Mondays", {"content": "ship on Friday", "tier": "semantic"}]
    )
    scope.update(first.id, version=first.version, importance=0.9)
    scope.set_preference("style", "concise")
    scope.delete_preference("style")
    scope.record_pattern("python", "retry", "for attempt in range(3): ...")
    scope.save_state({"step": "design"})
    scope.delete(first.id)


# -- every write, in its transaction ------------------------------------------------------------


def test_every_write_appends_one_event_in_order(memory: Memory, user: str) -> None:
    with memory.engine.connect() as connection:
        start = connection.execute(sa.text("SELECT COALESCE(MAX(seq), 0) FROM memory_events"))
        first_seq = start.scalar_one() + 1
    _write_everything(memory, user)
    with memory.engine.connect() as connection:
        rows = connection.execute(
            sa.text("SELECT seq, user_id, agent_id, operation FROM memory_events "
                    "WHERE user_id = :user ORDER BY seq"),
            {"user": user},
        ).all()
    assert [row.operation for row in rows] == [
        "memory.add", "memory.add", "memory.add", "memory.update", "preference.set",
        "preference.delete", "pattern.record", "state.save", "memory.delete",
    ]
    assert {(row.user_id, row.agent_id) for row in rows} == {(user, "planner")}
    assert rows[0].seq >= first_seq
    assert memory.verify_events().ok


def test_a_refused_write_appends_nothing(memory: Memory, user: str) -> None:
    scope = memory.scope(user, "planner")
    note = scope.add("first version")
    scope.update(note.id, version=note.version, content="second version")
    before = memory.verify_events().checked
    with pytest.raises(StaleVersionError):
        scope.update(note.id, version=note.version, content="lost update")
    with pytest.raises(InvalidInputError):
        scope.add_many(["fine", {"content": ""}])
    with pytest.raises(InvalidInputError, match="reserved"):
        scope.record_event("memory.add", {"forged": True})
    assert memory.verify_events().checked == before


def test_concurrent_writers_keep_the_chain_linear(own_url: str) -> None:
    with Memory.open(own_url, embedder=HashingEmbedder()) as store:
        errors: list[BaseException] = []

        def writer(number: int) -> None:
            try:
                scope = store.scope("ada", f"agent-{number}", "s")
                for index in range(15):
                    scope.add(f"note {index} from agent {number}")
                    scope.set_preference(f"key-{number}", index)
            except BaseException as error:  # pragma: no cover - reported below
                errors.append(error)

        threads = [threading.Thread(target=writer, args=(n,)) for n in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        report = store.verify_events()
        assert (report.ok, report.checked) == (True, 6 * 15 * 2)
        assert [row["seq"] for row in _events(store)] == list(range(1, 181))


# -- tamper detection -----------------------------------------------------------------------------


def _tamper(url: str, *statements: str) -> None:
    engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        with engine.begin() as connection:
            for statement in statements:
                connection.execute(sa.text(statement))
    finally:
        engine.dispose()


def _verify(url: str) -> Result:
    return memctl(url, "audit", "verify")


@pytest.fixture
def chain(store: Memory, own_url: str) -> str:
    _write_everything(store, "ada")
    _write_everything(store, "grace")
    assert _verify(own_url).exit_code == 0
    return own_url


def test_verify_passes_an_intact_chain(chain: str) -> None:
    result = _verify(chain)
    assert (result.exit_code, result.stdout) == (0, "ok: 18 events, the chain is intact\n")


def test_verify_finds_an_edited_payload(chain: str) -> None:
    _tamper(chain, """UPDATE memory_events SET payload_json = '{"key":"tone"}' WHERE seq = 5""")
    result = _verify(chain)
    assert result.exit_code == 1
    assert result.stdout.startswith("TAMPERED: first bad event 5:"), result.stdout
    before = telemetry.totals().counter("memory.integrity.failures", check="event_chain")
    with Memory.open(chain, embedder=None) as store:
        report = store.verify_events()
    assert (report.ok, report.first_bad_seq, report.checked) == (False, 5, 4)
    if telemetry.enabled():
        after = telemetry.totals().counter("memory.integrity.failures", check="event_chain")
        assert after == before + 1


def test_verify_finds_an_edited_field_the_hash_covers(chain: str) -> None:
    _tamper(chain, "UPDATE memory_events SET agent_id = 'intruder' WHERE seq = 7")
    result = _verify(chain)
    assert result.exit_code == 1
    assert "first bad event 7: event 7: its hash does not match" in result.stdout


def test_verify_finds_an_edited_target(chain: str) -> None:
    # The hash covers a digest of the target, and the digest is checked against it.
    _tamper(chain, "UPDATE memory_events SET target = 'preference:tone' WHERE seq = 5")
    result = _verify(chain)
    assert result.exit_code == 1
    assert "first bad event 5: event 5: the target does not match its digest" in result.stdout
    _tamper(chain, "UPDATE memory_events SET target = 'preference:style', "
                   "target_digest = NULL WHERE seq = 5")
    result = _verify(chain)
    assert result.exit_code == 1
    assert "first bad event 5: event 5: its hash does not match" in result.stdout


def test_verify_finds_a_deleted_event(chain: str) -> None:
    _tamper(chain, "DELETE FROM memory_events WHERE seq = 4")
    result = _verify(chain)
    assert result.exit_code == 1
    assert result.stdout.startswith("TAMPERED: first bad event 4: event 4 is missing")


def test_verify_finds_a_deleted_event_renumbered_over(chain: str) -> None:
    # Hiding the gap by renumbering the rest still breaks the links.
    _tamper(
        chain,
        "DELETE FROM memory_events WHERE seq = 4",
        "UPDATE memory_events SET seq = seq - 1 WHERE seq > 4",
    )
    result = _verify(chain)
    assert result.exit_code == 1
    assert result.stdout.startswith("TAMPERED: first bad event 4:"), result.stdout


def test_verify_finds_reordered_events(chain: str) -> None:
    _tamper(
        chain,
        "UPDATE memory_events SET seq = -1 WHERE seq = 10",
        "UPDATE memory_events SET seq = 10 WHERE seq = 11",
        "UPDATE memory_events SET seq = 11 WHERE seq = -1",
    )
    result = _verify(chain)
    assert result.exit_code == 1
    assert result.stdout.startswith("TAMPERED: first bad event 10:"), result.stdout


# -- redaction ------------------------------------------------------------------------------------


def test_redaction_removes_the_user_and_keeps_the_chain_verifiable(store: Memory,
                                                                    own_url: str) -> None:
    _write_everything(store, "ada")
    _write_everything(store, "grace")
    grace_before = [row for row in _events(store) if row["user_id"] == "grace"]

    def forget(connection: sa.Connection) -> int:
        return redact_user(connection, "ada", "admin")

    assert store._db.write(forget) == 9
    rows = _events(store)
    assert [row for row in rows if "\"ada\"" in json.dumps(dict(row), default=str)] == []
    redacted = [row for row in rows if row["redacted"]]
    assert [row["seq"] for row in redacted] == list(range(1, 10))
    assert all(
        row["payload_json"] is None and row["user_id"] == "" and row["target"] == ""
        for row in redacted
    )
    # The targets named ada's preference key and session; their digests stay.
    assert all(len(row["target_digest"]) == 64 for row in rows)
    assert [row for row in rows if row["user_id"] == "grace"] == grace_before
    last = rows[-1]
    assert (last["operation"], json.loads(last["payload_json"])) == (
        "events.redact", {"seqs": [[1, 9]]}
    )
    assert _verify(own_url).exit_code == 0


def test_redaction_rehashes_events_from_before_target_digests(store: Memory) -> None:
    """Events restored from an archive of revision 0008/0009 have no target digest: the
    hash covers the target. Redacting them re-hashes the chain first, so it verifies."""
    _write_everything(store, "ada")
    _write_everything(store, "grace")
    store._db.write(
        lambda connection: rechain(connection, event_table(True), with_target_digests=False)
    )
    assert [row for row in _events(store) if row["target_digest"] is not None] == []
    assert store.verify_events().ok

    assert store._db.write(lambda connection: redact_user(connection, "ada", "admin")) == 9
    rows = _events(store)
    assert [row["target"] for row in rows if row["redacted"]] == [""] * 9
    assert all(row["target_digest"] is not None for row in rows)
    assert store.verify_events().ok


def test_redaction_cannot_hide_an_edit(chain: str) -> None:
    # Marking an event redacted without a redaction event that lists it is tampering.
    _tamper(chain, "UPDATE memory_events SET redacted = TRUE, payload_json = NULL, "
                   "user_id = '', target = '' WHERE seq = 3")
    result = _verify(chain)
    assert result.exit_code == 1
    assert "first bad event 3: event 3 is redacted, but no later redaction" in result.stdout


def test_reads_of_other_agents_memories_are_recorded(store: Memory) -> None:
    owner = store.scope("ada", "planner")
    notes = [owner.add("shared finding"), owner.add("another finding")]

    def read(reader: str) -> Callable[[sa.Connection], list[MemoryEvent]]:
        return lambda connection: record_reads(connection, "ada", reader, notes)

    recorded = store._db.write(read("reviewer"))
    assert [(e.operation, e.agent_id, e.data) for e in recorded] == [
        ("memory.read", "reviewer", {"memory_id": note.id, "owner_agent": "planner"})
        for note in notes
    ]
    # An agent reading its own memories is not a shared read.
    assert store._db.write(read("planner")) == []
    assert store.verify_events().checked == 4


# -- memctl record --------------------------------------------------------------------------------


def test_memctl_record_writes_the_event_and_its_memory(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("memory.client.default_embedder", HashingEmbedder)
    url = f"sqlite:///{tmp_path / 'record.db'}"
    data = tmp_path / "result.json"
    carried = {"content": "BILL-311: export split shipped", "tier": "episodic",
               "metadata": {"ticket": "BILL-311"}}
    data.write_text(json.dumps({"task": "BILL-311", "status": "done", "memory": carried}))
    result = memctl(url, "record", "--agent", "dispatcher", "--event", "task.done",
                    "--user", "ada", "--data", f"@{data}")
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)
    assert printed["event"] == "task.done" and printed["memory_id"] is not None
    plain = memctl(url, "record", "--agent", "consumer", "--event", "research.finished",
                   "--user", "ada", "--data", '{"papers": 3}')
    assert plain.exit_code == 0 and json.loads(plain.stdout)["memory_id"] is None

    with Memory.open(url, embedder=HashingEmbedder()) as store:
        (stored,) = store.scope("ada", "dispatcher").list()
        assert (stored.id, stored.tier, stored.metadata) == (
            printed["memory_id"], "episodic", {"ticket": "BILL-311"}
        )
        rows = _events(store)
        assert [(r["operation"], r["agent_id"]) for r in rows] == [
            ("memory.add", "dispatcher"), ("task.done", "dispatcher"),
            ("research.finished", "consumer"),
        ]
        assert json.loads(rows[1]["payload_json"]) == {
            "task": "BILL-311", "status": "done", "memory_id": stored.id
        }
        assert store.verify_events().ok


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--event", "task.done", "--data", "{not json"], "not JSON"),
        (["--event", "task.done", "--data", "[1, 2]"], "must be a JSON object"),
        (["--event", "task.done", "--data", "@/nonexistent/file.json"], "cannot read"),
        (["--event", "Task Done", "--data", "{}"], "event"),
        (["--event", "memory.delete", "--data", "{}"], "reserved"),
        (["--event", "task.done", "--data", '{"memory": {"content": ""}}'], "memory.content"),
        (["--event", "task.done", "--data", '{"memory": "text"}'], "must be a JSON object"),
    ],
)
def test_memctl_record_refuses_bad_input_and_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str], message: str
) -> None:
    monkeypatch.setattr("memory.client.default_embedder", HashingEmbedder)
    url = f"sqlite:///{tmp_path / 'record.db'}"
    Memory.open(url, embedder=None).close()
    result = memctl(url, "record", "--agent", "dispatcher", "--user", "ada", *args)
    assert result.exit_code != 0
    assert message in result.output and "Traceback" not in result.output
    with Memory.open(url, embedder=None) as store:
        assert _events(store) == [] and store.scope("ada", "dispatcher").list() == []


# -- shared session context -----------------------------------------------------------------------


def test_concurrent_context_updates_merge_deterministically(memory: Memory, user: str) -> None:
    session = f"ctx-{user}"
    planner = memory.scope(user, "planner", session)
    coder = memory.scope(user, "coder", session)
    t0 = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)

    first = planner.merge_context({"step": "plan", "owner": "planner"}, timestamp=t0)
    assert (first.state, first.conflicts) == ({"owner": "planner", "step": "plan"}, ())
    # The coder writes "step" without having seen the planner's patch: a conflict, which
    # the coder wins (later timestamp); the planner's value stays in the log.
    second = coder.merge_context({"step": "build"}, timestamp=t0 + timedelta(seconds=1),
                                 seen=first.event_seq - 1)
    assert second.state == {"owner": "planner", "step": "build"}
    (conflict,) = second.conflicts
    assert (conflict.key, conflict.kept.agent, conflict.overridden.value) == (
        "step", "coder", "plan"
    )
    # A patch that arrives late (an older timestamp) loses, and that is recorded too.
    late = planner.merge_context({"step": "review"}, timestamp=t0 + timedelta(milliseconds=500))
    assert late.state["step"] == "build"
    (lost,) = late.conflicts
    assert (lost.kept.value, lost.overridden.value, lost.overridden.agent) == (
        "build", "review", "planner"
    )
    # Equal timestamps: the agent id breaks the tie, whatever the arrival order.
    tie = t0 + timedelta(seconds=5)
    coder.merge_context({"owner": "coder"}, timestamp=tie)
    final = planner.merge_context({"owner": "planner"}, timestamp=tie)
    assert final.state == {"owner": "planner", "step": "build"}
    assert planner.load_state() is not None
    assert planner.load_state().state == final.state  # type: ignore[union-attr]

    with memory.engine.connect() as connection:
        rows = connection.execute(
            sa.text("SELECT operation, payload_json FROM memory_events "
                    "WHERE user_id = :user AND target = :target ORDER BY seq"),
            {"user": user, "target": f"session:{session}"},
        ).all()
    operations = [row.operation for row in rows]
    assert operations.count("context.patch") == 5
    # The planner overrode the coder's tie knowingly (it had seen everything): that is an
    # update, not a conflict. Had the coder's patch arrived last, it would have lost and
    # been recorded as one.
    assert operations.count("context.conflict") == 2
    # Any subscriber folding the patch events, in any order, computes the same state.
    patches = [
        MemoryEvent(seq, t0, user, "x", "context.patch", f"session:{session}",
                    json.loads(row.payload_json))
        for seq, row in enumerate(rows)
        if row.operation == "context.patch"
    ]
    assert merge_patches(patches) == final.state == merge_patches(list(reversed(patches)))


def test_context_patches_are_validated(memory: Memory, user: str) -> None:
    scope = memory.scope(user, "planner", "s")
    with pytest.raises(InvalidInputError, match="patch"):
        scope.merge_context({})
    with pytest.raises(InvalidInputError, match="timestamp"):
        scope.merge_context({"a": 1}, timestamp=datetime(2026, 1, 1))
    with pytest.raises(InvalidInputError, match="session"):
        memory.scope(user, "planner").merge_context({"a": 1})


def test_append_event_outside_the_library_api_is_still_chained(store: Memory) -> None:
    event = store._db.write(
        lambda connection: append_event(connection, "ada", "dispatcher", "task.queued",
                                        "external", {"n": 1})
    )
    assert event.seq == 1
    with store.engine.connect() as connection:
        assert verify_chain(connection).checked == 1
