"""The swarm bus against the real Redis: tasks and leases, envelopes read back from Redis,
validation, findings, conflicts, escalations, context, access control, the scan, memories."""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import redis

from memory import HashingEmbedder, InvalidInputError, Memory, NotFoundError, PermissionDeniedError
from memory.swarm import (
    AgentKey,
    LeaseLostError,
    RememberFindings,
    SignatureError,
    SwarmBus,
    SwarmError,
    SwarmUnavailableError,
    TaskStatus,
)
from memory.telemetry.instruments import totals
from tests.swarm.conftest import Swarm, enforcement, free_port


def keys_under(client: redis.Redis, prefix: str) -> dict[str, Any]:
    """Every key under the prefix with its type and value: to prove nothing was written."""
    found = {}
    for key in sorted(client.scan_iter(match=f"{prefix}*", count=1000)):
        kind = client.type(key)
        value = client.hgetall(key) if kind == "hash" else client.dump(key)
        found[key] = (kind, value)
    return found


NESTED: Any = 1
for _ in range(25):
    NESTED = [NESTED]


# -- tasks --------------------------------------------------------------------------------------


def test_exactly_one_of_many_racing_claims_wins(swarm: Swarm) -> None:
    planner = swarm.bus("planner")
    workers = [swarm.bus(f"w{i}") for i in range(8)]
    for _ in range(20):
        task = planner.create_task("race me")
        start = threading.Barrier(len(workers))
        won: list[str] = []

        def claim(bus: SwarmBus, task_id: str, start: threading.Barrier, won: list[str]) -> None:
            start.wait()
            if bus.claim_task(task_id) is not None:
                won.append(bus.agent)

        threads = [
            threading.Thread(target=claim, args=(bus, task.id, start, won)) for bus in workers
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=10)
        assert len(won) == 1
        status = planner.check_task_status(task.id)
        assert status.status is TaskStatus.IN_PROGRESS
        assert status.assignee == won[0]
        assert status.claims == 1


def test_a_task_flows_from_request_to_completion_with_its_custody(swarm: Swarm) -> None:
    planner, worker = swarm.bus("planner"), swarm.bus("w1")
    task = planner.create_task("summarise", {"doc": "if://doc/1", "pages": [1, 2]}, type="summary")
    assert task.status is TaskStatus.PENDING
    assert swarm.client.pttl(f"{swarm.prefix}task:{task.id}") > 23 * 3600 * 1000
    claim = worker.get_unassigned_task()
    assert claim is not None and claim.task.id == task.id and not claim.reclaimed
    assert worker.get_unassigned_task() is None  # nothing else queued
    worker.heartbeat(claim)
    held = worker.hold_task(claim, TaskStatus.NEEDS_ASSIST)
    assert planner.check_task_status(task.id).status is TaskStatus.NEEDS_ASSIST
    assert worker.get_unassigned_task() is None  # held tasks are out of the queue
    done = worker.complete_task(held, {"summary": "short"})
    assert done.task.status is TaskStatus.COMPLETED
    stored = planner.check_task_status(task.id)
    assert (stored.status, stored.result, stored.data) == (
        TaskStatus.COMPLETED,
        {"summary": "short"},
        {"doc": "if://doc/1", "pages": [1, 2]},
    )
    assert [(e.agent, e.action.value, e.detail["status"]) for e in planner.custody(task.id)] == [
        ("planner", "REQUEST", "PENDING"),
        ("w1", "AGREE", "IN_PROGRESS"),
        ("w1", "HOLD", "NEEDS_ASSIST"),
        ("w1", "CONFIRM", "COMPLETED"),
    ]
    with pytest.raises(LeaseLostError):
        worker.complete_task(done)  # exactly once
    assert swarm.client.hget(f"{swarm.prefix}task:{task.id}", "completions") == "1"


def test_release_requeues_and_fail_is_final(swarm: Swarm) -> None:
    planner, w1, w2 = swarm.bus("planner"), swarm.bus("w1"), swarm.bus("w2")
    task = planner.create_task("try")
    first = w1.get_unassigned_task()
    assert first is not None
    w1.release_task(first)
    second = w2.get_unassigned_task()
    assert second is not None and second.task.id == task.id and second.token == 2
    w2.fail_task(second, "source unreachable")
    stored = planner.check_task_status(task.id)
    assert stored.status is TaskStatus.FAILED and stored.result == {"reason": "source unreachable"}
    assert [e.action.value for e in stored.envelope.chain_of_custody] == [
        "REQUEST", "AGREE", "REFUSE", "AGREE", "FAILURE"
    ]  # fmt: skip
    assert w1.get_unassigned_task() is None


def test_an_expired_lease_is_reclaimed_and_the_old_holder_cannot_complete(swarm: Swarm) -> None:
    lease = timedelta(milliseconds=300)
    planner = swarm.bus("planner")
    w1, w2 = swarm.bus("w1", lease=lease), swarm.bus("w2", lease=lease)
    task = planner.create_task("slow")
    before = totals().counter("memory.swarm.lease_expiries")
    stale = w1.get_unassigned_task()
    assert stale is not None
    assert w2.get_unassigned_task() is None  # leased: not yet
    reclaimed = w2.get_unassigned_task(block=timedelta(seconds=3))
    assert reclaimed is not None and reclaimed.task.id == task.id and reclaimed.reclaimed
    with pytest.raises(LeaseLostError, match="no longer 'w1'"):
        w1.complete_task(stale)
    with pytest.raises(LeaseLostError):
        w1.heartbeat(stale)
    w2.complete_task(reclaimed)
    assert totals().counter("memory.swarm.lease_expiries") == before + 1
    assert [(e.agent, e.action.value) for e in planner.custody(task.id)] == [
        ("planner", "REQUEST"),
        ("w1", "AGREE"),
        ("w2", "AGREE"),
        ("w2", "CONFIRM"),
    ]


def test_heartbeats_keep_a_lease(swarm: Swarm) -> None:
    lease = timedelta(milliseconds=400)
    planner, w1, w2 = (
        swarm.bus("planner"),
        swarm.bus("w1", lease=lease),
        swarm.bus("w2", lease=lease),
    )
    planner.create_task("long")
    claim = w1.get_unassigned_task()
    assert claim is not None
    for _ in range(5):
        time.sleep(0.15)
        w1.heartbeat(claim)
        assert w2.get_unassigned_task() is None
    w1.complete_task(claim)


# -- envelopes read back from Redis ---------------------------------------------------------------


def _tamper(swarm: Swarm, task_id: str, **fields: str) -> None:
    swarm.client.hset(f"{swarm.prefix}task:{task_id}", mapping=fields)


def test_tampered_tasks_are_refused_with_enforcement_on(swarm: Swarm) -> None:
    planner, worker = swarm.bus("planner"), swarm.bus("w1")
    before = totals().counter("memory.swarm.signature_failures", outcome="refused")
    changed = planner.create_task("pay 10")
    _tamper(swarm, changed.id, description="pay 10000")
    with pytest.raises(SignatureError, match="bad signature"):
        worker.claim_task(changed.id)
    status_changed = planner.create_task("check")
    _tamper(swarm, status_changed.id, status="COMPLETED")
    with pytest.raises(SignatureError, match="not what the last custody entry left"):
        planner.check_task_status(status_changed.id)
    # A removed custody entry: the chain no longer links.
    removed = planner.create_task("chain")
    claim = worker.claim_task(removed.id)
    assert claim is not None
    worker.heartbeat(claim)
    key = f"{swarm.prefix}task:{removed.id}"
    entries = [swarm.client.hget(key, f"custody:{i}") for i in range(2)]
    worker.release_task(claim)
    third = swarm.client.hget(key, "custody:2")
    swarm.client.hset(key, mapping={"custody:1": third, "custody_n": "2"})
    swarm.client.hdel(key, "custody:2")
    assert entries[1] != third
    with pytest.raises(SignatureError, match="does not chain"):
        planner.check_task_status(removed.id)
    assert totals().counter("memory.swarm.signature_failures", outcome="refused") == before + 3
    # Nothing claimed the tampered task.
    assert swarm.client.hget(f"{swarm.prefix}task:{changed.id}", "status") == "PENDING"


def test_a_refused_task_leaves_the_queue_and_the_others_go_on(swarm: Swarm) -> None:
    planner, worker = swarm.bus("planner"), swarm.bus("w1")
    bad = planner.create_task("pay 10")
    good = planner.create_task("fine")
    _tamper(swarm, bad.id, description="pay 10000")
    with pytest.raises(SignatureError):
        worker.get_unassigned_task()
    claim = worker.get_unassigned_task()
    assert claim is not None and claim.task.id == good.id
    worker.complete_task(claim)
    assert worker.get_unassigned_task() is None
    assert swarm.client.xlen(planner.queue_key) == 0
    assert swarm.client.hget(f"{swarm.prefix}task:{bad.id}", "status") == "PENDING"


def test_an_unregistered_or_unsigned_agent_is_refused(swarm: Swarm) -> None:
    planner = swarm.bus("planner")
    stranger = SwarmBus(
        swarm.client, swarm.name, "stranger", key=AgentKey.generate(), prefix=swarm.prefix,
        flags=enforcement(True),
    )  # fmt: skip
    unsigned = swarm.bus("anon", signed=False)
    from_stranger = stranger.create_task("run this")
    with pytest.raises(SignatureError, match="no registered key"):
        planner.claim_task(from_stranger.id)
    from_anon = unsigned.create_task("and this")
    with pytest.raises(SignatureError, match="unsigned"):
        planner.claim_task(from_anon.id)
    # Registering the stranger's key makes its envelopes verify.
    planner.register_agent("stranger", stranger._key.public_key)  # type: ignore[union-attr]
    assert planner.claim_task(from_stranger.id) is not None


def test_with_enforcement_off_bad_envelopes_are_warned_about_and_accepted(
    swarm: Swarm, caplog: pytest.LogCaptureFixture
) -> None:
    planner = swarm.bus("planner", enforce=False)
    worker = swarm.bus("w1", enforce=False)
    task = planner.create_task("pay 10")
    _tamper(swarm, task.id, description="pay 10000")
    before = totals().counter("memory.swarm.signature_failures", outcome="warned")
    with caplog.at_level(logging.WARNING, logger="memory.swarm"):
        claim = worker.claim_task(task.id)
    assert claim is not None
    assert totals().counter("memory.swarm.signature_failures", outcome="warned") == before + 1
    assert [
        r.getMessage()
        for r in caplog.records
        if "USE_SWARM_SIGNATURE_ENFORCEMENT is off" in r.getMessage()
    ]


# -- validation ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"confidence": 1.5}, r"confidence: must be a number in \[0, 1\]"),
        ({"confidence": -0.1}, r"confidence: must be a number in \[0, 1\]"),
        ({"confidence": math.nan}, r"confidence: must be a number in \[0, 1\], not nan"),
        ({"confidence": "0.5"}, r"confidence: must be a number"),
        ({"confidence": True}, r"confidence: must be a number"),
        ({"citations": ["not a uri"]}, r"citations\[0\]: 'not a uri' is not an absolute URI"),
        ({"citations": ["if://"]}, r"citations\[0\]: 'if://' is not an absolute URI"),
        ({"citations": "https://example.org"}, r"citations: must be a list of URIs"),
        ({"citations": [{"uri": 1}]}, r"citations\[0\]: must be text"),
        ({"speech_act": "SHOUT"}, r"speech_act: 'SHOUT' is not a speech act"),
        ({"claim": ""}, r"claim: must not be empty"),
        ({"claim": "x" * 20_000}, r"claim: at most 10000 characters"),
        ({"claim": "bad \ud800 text"}, r"claim: not valid UTF-8"),
        ({"contradicts": ["../../etc"]}, r"contradicts: must be 1-128 letters"),
    ],
)
def test_invalid_findings_are_clear_errors_and_write_nothing(
    swarm: Swarm, arguments: dict[str, Any], message: str
) -> None:
    worker = swarm.bus("w1")
    task = worker.create_task("t")
    before = keys_under(swarm.client, swarm.prefix)
    call = {"claim": "the sky is blue", "confidence": 0.5, "citations": ["if://citation/1"]}
    with pytest.raises(InvalidInputError, match=message):
        worker.post_finding(task.id, **(call | arguments))
    assert keys_under(swarm.client, swarm.prefix) == before


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"description": None}, "description: must be text"),
        ({"data": {"deep": NESTED}}, "nested deeper than 20"),
        ({"data": {"x": math.inf}}, "numbers must be finite"),
        ({"data": {1: "x"}}, "object keys must be strings"),
        ({"data": {"blob": "x" * 300_000}}, "larger than 262144 bytes"),
        ({"data": {"x": object()}}, "object is not JSON data"),
        ({"type": "a:b"}, "type: must be 1-128 letters"),
    ],
)
def test_invalid_tasks_are_clear_errors_and_write_nothing(
    swarm: Swarm, arguments: dict[str, Any], message: str
) -> None:
    planner = swarm.bus("planner")
    before = keys_under(swarm.client, swarm.prefix)
    with pytest.raises(InvalidInputError, match=message):
        planner.create_task(**({"description": "d"} | arguments))
    assert keys_under(swarm.client, swarm.prefix) == before


def test_a_queue_key_of_the_wrong_type_fails_cleanly(swarm: Swarm) -> None:
    planner = swarm.bus("planner")
    swarm.client.set(planner.queue_key, "not a stream", px=60_000)
    before = keys_under(swarm.client, swarm.prefix)
    with pytest.raises(SwarmError, match="WRONGTYPE"):
        planner.create_task("t")
    assert keys_under(swarm.client, swarm.prefix) == before


def test_hostile_ids_are_refused_before_reaching_redis(swarm: Swarm) -> None:
    bus = swarm.bus("w1")
    for bad in ("*", "task:1", "a b", "", "x" * 200, "../etc"):
        with pytest.raises(InvalidInputError):
            bus.check_task_status(bad)
    with pytest.raises(NotFoundError, match="no such task"):
        bus.check_task_status("0" * 32)
    with pytest.raises(InvalidInputError, match="swarm: must be"):
        SwarmBus(swarm.client, "bad:swarm", "w1", prefix=swarm.prefix)


# -- findings, conflicts, escalations -------------------------------------------------------------


def test_conflicts_by_confidence_and_by_declaration(swarm: Swarm) -> None:
    planner, w1, w2 = swarm.bus("planner"), swarm.bus("w1"), swarm.bus("w2")
    task = planner.create_task("is X true?")
    a = w1.post_finding(task.id, "X is true", 0.9, ["https://example.org/a"])
    b = w2.post_finding(task.id, "  x IS   true ", 0.4, ["if://citation/b"])
    c = w2.post_finding(task.id, "X is true", 0.8, [])
    d = w2.post_finding(task.id, "X is false", 0.7, ["if://citation/d"], contradicts=[a.id])
    # Declared contradictions whatever the threshold; a = 0.9 vs b = 0.4 is not above 0.5.
    assert [
        (c.first.id, c.second.id, c.reason) for c in w1.detect_finding_conflicts(task.id, 0.5)
    ] == [(a.id, d.id, "contradicts")]
    pairs = {
        (conflict.first.id, conflict.second.id, conflict.reason)
        for conflict in w1.detect_finding_conflicts(task.id, 0.3)
    }
    assert pairs == {
        (a.id, b.id, "confidence"),
        (b.id, c.id, "confidence"),
        (a.id, d.id, "contradicts"),
    }
    assert [f.id for f in planner.findings(task.id)] == [a.id, b.id, c.id, d.id]
    assert swarm.client.pttl(f"{swarm.prefix}finding:{a.id}") > 0
    with pytest.raises(InvalidInputError, match="confidence"):
        w1.detect_finding_conflicts(task.id, 2)


def test_low_confidence_escalates_by_itself_and_a_person_resolves(swarm: Swarm) -> None:
    planner, worker, human = swarm.bus("planner"), swarm.bus("w1"), swarm.bus("ops")
    task = planner.create_task("check")
    before = totals().counter("memory.swarm.escalations", cause="automatic")
    worker.post_finding(task.id, "probably fine", 0.2, ["if://citation/1"])  # not below 0.2
    low = worker.post_finding(task.id, "no idea", 0.19, ["if://citation/2"])
    manual = worker.escalate_to_human(task.id, "sources disagree", [low.id])
    assert totals().counter("memory.swarm.escalations", cause="automatic") == before + 1
    open_ = human.escalations()
    assert [(e.cause, e.findings, e.raised_by) for e in open_] == [
        ("automatic", (low.id,), "w1"),
        ("manual", (low.id,), "w1"),
    ]
    assert "0.19 is below 0.2" in open_[0].reason
    resolved = human.resolve_escalation(manual.id, "use source 2")
    assert (resolved.status, resolved.resolved_by, resolved.resolution) == (
        "resolved", "ops", "use source 2"
    )  # fmt: skip
    assert [e.id for e in human.escalations()] == [open_[0].id]
    assert {e.id for e in human.escalations(include_resolved=True)} == {open_[0].id, manual.id}
    with pytest.raises(Exception, match="not open any more"):
        human.resolve_escalation(manual.id, "again")
    with pytest.raises(NotFoundError):
        worker.escalate_to_human("0" * 32, "no such task")


# -- access control -------------------------------------------------------------------------------


def test_reads_across_swarms_need_the_registry_s_allowlist(make_swarm: Any) -> None:
    red, blue = make_swarm("red"), make_swarm("blue")
    red_bus, blue_bus = red.bus("r1"), blue.bus("b1")
    task = red_bus.create_task("red secret")
    red_bus.put_context("plan", notes=["n1"])
    with pytest.raises(PermissionDeniedError, match="may not read swarm 'red'"):
        blue_bus.check_task_status(task.id)
    with pytest.raises(PermissionDeniedError):
        blue_bus.get_context("plan", scope="red")
    with pytest.raises(PermissionDeniedError):
        blue_bus.post_finding(task.id, "mine", 0.5)
    red_bus.allow_reader("blue")
    blue_bus.registry("red", fresh=True)
    assert blue_bus.check_task_status(task.id).description == "red secret"
    assert blue_bus.get_context("plan", scope="red").notes == ["n1"]
    # Reading is all it allows: claiming and posting stay with red.
    with pytest.raises(PermissionDeniedError):
        blue_bus.claim_task(task.id)
    with pytest.raises(PermissionDeniedError):
        blue_bus.post_finding(task.id, "mine", 0.5)


def test_acl_users_and_a_dead_server(own_redis: Any) -> None:
    admin = redis.Redis(port=own_redis.port, decode_responses=True)
    admin.execute_command("ACL", "SETUSER", "swarm", "on", ">s3cret", "~*", "&*", "+@all")
    admin.execute_command("ACL", "SETUSER", "reader", "on", ">r", "~*", "+@read", "+info", "+ping")
    url = f"redis://swarm:s3cret@127.0.0.1:{own_redis.port}/0"
    bus = SwarmBus.open(url, "acl", "w1", flags=enforcement(False))
    assert bus.create_task("over ACL").status is TaskStatus.PENDING
    with pytest.raises(SwarmUnavailableError, match="credentials"):
        SwarmBus.open(f"redis://swarm:wrong@127.0.0.1:{own_redis.port}/0", "acl", "w1")
    reader = SwarmBus.open(f"redis://reader:r@127.0.0.1:{own_redis.port}/0", "acl", "w2")
    with pytest.raises(SwarmUnavailableError, match="ACL refused"):
        reader.create_task("not allowed to write")
    reader.close()
    own_redis.kill()
    with pytest.raises(SwarmUnavailableError, match="is unreachable"):
        bus.create_task("nobody listens")
    with pytest.raises(SwarmUnavailableError, match="is unreachable"):
        SwarmBus.open(f"redis://127.0.0.1:{free_port()}/0", "acl", "w1")
    with pytest.raises(InvalidInputError, match="redis url"):
        SwarmBus.open("http://127.0.0.1/", "acl", "w1")
    admin.close()
    bus.close()


def test_tls_with_rediss(tls_redis: Any) -> None:
    bus = SwarmBus.open(tls_redis.url, "tls", "w1", flags=enforcement(False))
    task = bus.create_task("over TLS")
    assert bus.check_task_status(task.id).description == "over TLS"
    bus.close()
    plain = f"redis://127.0.0.1:{tls_redis.port}/0"
    with pytest.raises(SwarmUnavailableError):
        SwarmBus.open(plain, "tls", "w1")
    untrusted = f"rediss://127.0.0.1:{tls_redis.port}/0"  # the system CAs do not know ours
    with pytest.raises(SwarmUnavailableError, match="certificate verify failed"):
        SwarmBus.open(untrusted, "tls", "w1")


# -- context, summaries, the scan -----------------------------------------------------------------


def test_every_key_the_bus_writes_has_its_ttl(swarm: Swarm) -> None:
    planner, worker = swarm.bus("planner"), swarm.bus("w1")
    planner.add_artifact("report", "https://example.org/report.pdf")
    task = planner.create_task("everything")
    claim = worker.get_unassigned_task()
    assert claim is not None
    worker.post_finding(task.id, "low", 0.05, ["if://citation/x"])
    worker.complete_task(claim, {"ok": True})
    planner.put_context("plan", notes=["a"], timeline=[{"at": "t", "what": "start"}], topics=["x"])
    planner.put_context("plan", shared={"k": "v"})
    assert planner.get_context("plan").notes == ["a"]
    planner.record_session_summary("daily", {"tasks": 1, "p99_ms": 3.5})
    report = planner.scan()
    assert report.clean, report.issues
    assert report.kinds == {
        "task": 1, "findings_index": 1, "finding": 1, "queue": 1, "escalation": 1,
        "escalations": 1, "context": 1, "session": 1, "registry": 1,
    }  # fmt: skip
    for key in swarm.client.scan_iter(match=f"{swarm.prefix}*"):
        assert swarm.client.pttl(key) > 0, key  # the scan's own record included


def test_the_scan_finds_and_cleans_what_is_wrong(swarm: Swarm) -> None:
    bus = swarm.bus("planner")
    task = bus.create_task("fine")
    p, client = swarm.prefix, swarm.client
    client.set(f"{p}task:{'a' * 32}", "a string, not a hash")
    client.hset(f"{p}context:research:plan", mapping={"notes": "[]"})  # no TTL, fields missing
    client.hset(f"{p}finding:{'b' * 32}", mapping={"swarm": "research"})
    client.pexpire(f"{p}finding:{'b' * 32}", 60_000)
    client.persist(f"{p}task:{task.id}")
    client.set(f"{p}swarm:somebody-else", "x")
    report = bus.scan(scan_type="nightly")
    problems = {issue.key.removeprefix(p): issue.problem for issue in report.issues}
    assert problems == {
        f"task:{'a' * 32}": "is a string, not a hash",
        "context:research:plan": "schema violation: missing field(s) timeline, topics, shared",
        f"finding:{'b' * 32}": (
            "schema violation: missing field(s) task, claim, confidence, citations, "
            "tracking_id, custody_n"
        ),
        f"task:{task.id}": "has no TTL",
        "swarm:somebody-else": "matches no kind of key the bus writes (left alone)",
    }
    record = client.hgetall(report.recorded_at)
    assert report.recorded_at.startswith(f"{p}swarm:remediation:") and report.recorded_at.endswith(
        ":nightly"
    )
    assert len(json.loads(record["issues"])) == 5
    cleaned = bus.scan(clean=True)
    assert {i.key.removeprefix(p): i.fixed for i in cleaned.issues} == {
        f"task:{'a' * 32}": "deleted",
        "context:research:plan": "deleted",
        f"finding:{'b' * 32}": "deleted",
        f"task:{task.id}": "TTL set to 1 day, 0:00:00",
        "swarm:somebody-else": None,
    }
    assert bus.check_task_status(task.id).status is TaskStatus.PENDING
    assert [i.kind for i in bus.scan().issues] == ["unknown"]


def test_records_changed_outside_the_bus_are_clear_errors(swarm: Swarm) -> None:
    bus = swarm.bus("planner")
    bus.put_context("plan", notes=["a"])
    swarm.client.hset(f"{swarm.prefix}context:research:plan", "notes", "{not json")
    with pytest.raises(SwarmError, match="context:research:plan is malformed"):
        bus.get_context("plan")
    swarm.client.hset(f"{swarm.prefix}swarm:registry:research", "agent:evil", "{not json")
    with pytest.raises(SwarmError, match="registry is malformed at 'agent:evil'"):
        bus.registry(fresh=True)
    with pytest.raises(InvalidInputError, match="key: must be an AgentKey"):
        SwarmBus(swarm.client, "research", "w9", key="secret", prefix=swarm.prefix)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="day: must be a date"):
        bus.record_session_summary("daily", {"n": 1}, day="2026-12-07")  # type: ignore[arg-type]


def test_the_bus_counts_what_happens(swarm: Swarm) -> None:
    planner, worker = swarm.bus("planner"), swarm.bus("w1")
    names = ("claims", "findings", "conflicts", "lease_expiries")

    def counts() -> dict[str, float]:
        now = totals()
        found = {name: now.counter(f"memory.swarm.{name}") for name in names}
        for status in ("PENDING", "IN_PROGRESS", "COMPLETED"):
            found[status] = now.counter("memory.swarm.tasks", status=status)
        return found

    before = counts()
    task = planner.create_task("count me")
    claim = worker.get_unassigned_task()
    assert claim is not None
    worker.post_finding(task.id, "yes", 0.9)
    worker.post_finding(task.id, "yes", 0.3)
    assert len(worker.detect_finding_conflicts(task.id, 0.5)) == 1
    worker.complete_task(claim)
    after = counts()
    assert {name: after[name] - before[name] for name in after} == {
        "claims": 1, "findings": 2, "conflicts": 1, "lease_expiries": 0,
        "PENDING": 1, "IN_PROGRESS": 1, "COMPLETED": 1,
    }  # fmt: skip


def test_opening_a_bus_to_read_writes_nothing(swarm: Swarm) -> None:
    reader = swarm.bus("reader", signed=False)
    assert reader.escalations() == []
    assert reader.health_check().queue_length == 0
    assert reader.get_unassigned_task() is None  # a worker's first poll makes the group
    assert keys_under(swarm.client, swarm.prefix).keys() == {reader.queue_key}
    assert swarm.client.pttl(reader.queue_key) > 0


def test_health_check(swarm: Swarm) -> None:
    planner = swarm.bus("planner")
    planner.create_task("one")
    health = planner.health_check()
    assert health.queue_length == 1 and health.agents_registered == 1
    assert health.round_trip_ms > 0
    assert health.redis_version.split(".")[0] >= "6"
    unsigned = swarm.bus("anon", signed=False)
    assert "agent 'anon' has no signing key" in unsigned.health_check().problems


# -- into memory ----------------------------------------------------------------------------------


def test_confident_findings_become_memories_that_inject_sees(swarm: Swarm, tmp_path: Path) -> None:
    with Memory.open(f"sqlite:///{tmp_path / 'memory.db'}", embedder=HashingEmbedder()) as memory:
        remember = RememberFindings(memory, user="ada", agent="researcher", min_confidence=0.8)
        worker = swarm.bus("w1", remember=remember)
        task = worker.create_task("what does ada use?")
        worker.post_finding(task.id, "Ada deploys with Kubernetes", 0.92, ["if://citation/k8s"])
        worker.post_finding(task.id, "Ada deploys with Nomad", 0.5, ["if://citation/nomad"])
        scope = memory.scope("ada", "researcher")
        stored = scope.list()
        assert [m.content for m in stored] == ["Ada deploys with Kubernetes"]
        metadata = stored[0].metadata
        assert metadata["citations"] == ["if://citation/k8s"]
        assert metadata["swarm"] == "research" and metadata["task"] == task.id
        assert len(metadata["tracking_id"]) == 36
        context = scope.inject("how does Ada deploy?", budget_tokens=200)
        assert "Kubernetes" in context.text and "Nomad" not in context.text
    with pytest.raises(InvalidInputError, match="confidence"):
        RememberFindings(memory, user="ada", agent="r", min_confidence=1.5)
