"""Envelopes: JSON round trip, and every kind of tampering the custody chain must catch.
Pure: no Redis."""

from __future__ import annotations

import dataclasses
import json
import pickle

import pytest

from memory import InvalidInputError
from memory.swarm import AgentKey, Envelope, SignatureError, SpeechAct, verify

AT = "2026-12-07T20:00:00+00:00"


def chain() -> tuple[Envelope, dict[str, AgentKey]]:
    keys = {name: AgentKey.generate() for name in ("planner", "w1", "w2")}
    envelope = Envelope.new("planner", SpeechAct.REQUEST, {"description": "check", "n": 1.5}, AT)
    for agent, act, status in (
        ("planner", SpeechAct.REQUEST, "PENDING"),
        ("w1", SpeechAct.AGREE, "IN_PROGRESS"),
        ("w2", SpeechAct.AGREE, "IN_PROGRESS"),
        ("w2", SpeechAct.CONFIRM, "COMPLETED"),
    ):
        envelope = envelope.with_entry(
            envelope.hop(agent, act, AT, {"status": status}, keys[agent])
        )
    return envelope, keys


def registered(keys: dict[str, AgentKey]) -> dict[str, str]:
    return {name: key.public_key for name, key in keys.items()}


def test_an_intact_chain_verifies_and_survives_a_json_round_trip() -> None:
    envelope, keys = chain()
    assert verify(envelope, registered(keys)) == []
    again = Envelope.from_json(envelope.to_json())
    assert again == envelope
    assert verify(again, registered(keys)) == []
    data = json.loads(envelope.to_json())
    assert set(data) == {
        "tracking_id", "origin", "dispatched_at", "speech_act", "content", "chain_of_custody"
    }  # fmt: skip
    assert [(e["agent"], e["action"]) for e in data["chain_of_custody"]] == [
        ("planner", "REQUEST"),
        ("w1", "AGREE"),
        ("w2", "AGREE"),
        ("w2", "CONFIRM"),
    ]


def test_a_tampered_field_breaks_every_signature() -> None:
    envelope, keys = chain()
    tampered = dataclasses.replace(envelope, content={"description": "check", "n": 2.5})
    problems = verify(tampered, registered(keys))
    assert len(problems) == 1 + 4  # the first entry's prev_hash and four bad signatures
    assert all("bad signature" in p or "does not chain" in p for p in problems)
    assert verify(dataclasses.replace(envelope, origin="w1"), registered(keys))


def test_a_tampered_custody_detail_is_a_bad_signature() -> None:
    envelope, keys = chain()
    entries = list(envelope.chain_of_custody)
    entries[1] = dataclasses.replace(entries[1], detail={"status": "COMPLETED"})
    problems = verify(
        dataclasses.replace(envelope, chain_of_custody=tuple(entries)), registered(keys)
    )
    assert any("custody entry 1" in p and "bad signature" in p for p in problems)


def test_a_removed_custody_entry_breaks_the_chain() -> None:
    envelope, keys = chain()
    entries = envelope.chain_of_custody
    removed = dataclasses.replace(envelope, chain_of_custody=(entries[0], *entries[2:]))
    problems = verify(removed, registered(keys))
    assert problems == ["custody entry 1 (AGREE by 'w2') does not chain to the entry before it"]
    reordered = dataclasses.replace(
        envelope, chain_of_custody=(entries[0], entries[2], entries[1], entries[3])
    )
    assert verify(reordered, registered(keys))


def test_a_signature_by_an_unregistered_or_other_key_is_refused() -> None:
    envelope, keys = chain()
    known = registered(keys)
    del known["w2"]
    assert verify(envelope, known) == [
        "custody entry 2 (AGREE by 'w2') is signed by an agent with no registered key",
        "custody entry 3 (CONFIRM by 'w2') is signed by an agent with no registered key",
    ]
    impostor = registered(keys) | {"w1": AgentKey.generate().public_key}
    assert verify(envelope, impostor) == ["custody entry 1 (AGREE by 'w1') has a bad signature"]


def test_unsigned_entries_and_an_empty_chain_are_reported() -> None:
    envelope = Envelope.new("planner", SpeechAct.INFORM, {"x": 1}, AT)
    assert verify(envelope, {}) == ["the chain of custody is empty"]
    unsigned = envelope.with_entry(envelope.hop("planner", SpeechAct.INFORM, AT, {}, None))
    assert verify(unsigned, {}) == ["custody entry 0 (INFORM by 'planner') is unsigned"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (b"\xff\xfe{", "not valid JSON"),
        ("{not json", "not valid JSON"),
        ("[]", "must be an object"),
        ('{"tracking_id": "x", "origin": "a", "dispatched_at": "t"}', "must be a UUID"),
    ],
)
def test_broken_envelopes_are_clear_errors(text: str | bytes, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        Envelope.from_json(text)


def test_an_unknown_speech_act_is_named() -> None:
    envelope, _ = chain()
    data = json.loads(envelope.to_json())
    data["speech_act"] = "SHOUT"
    with pytest.raises(InvalidInputError, match=r"'SHOUT' is not a speech act; use one of INFORM"):
        Envelope.from_dict(data)


def test_keys_load_from_pem_and_refuse_other_material() -> None:
    key = AgentKey.generate()
    assert AgentKey.load(key.pem()).public_key == key.public_key
    with pytest.raises(InvalidInputError, match="not an unencrypted PEM key"):
        AgentKey.load(b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")


def test_a_signature_error_survives_pickling() -> None:
    # A worker process reports it to its parent (multiprocessing pickles exceptions).
    error = SignatureError("t-1", ["custody entry 0 is unsigned"])
    again = pickle.loads(pickle.dumps(error))
    assert (again.tracking_id, again.problems, str(again)) == (
        error.tracking_id, error.problems, str(error)
    )  # fmt: skip
