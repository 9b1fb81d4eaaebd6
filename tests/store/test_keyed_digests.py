"""A forgotten user cannot be confirmed from the log's digests (issue 16, finding 4): with
``$MEMORY_AUDIT_KEY`` set, digests are keyed, so the right guess of a redacted event's user
and target no longer reproduces its digest; verification with the key still checks every
digest, and the key is nowhere in the database.
"""

from __future__ import annotations

import json
import secrets
import uuid
from collections.abc import Callable

import pytest
import sqlalchemy as sa

from memory import HashingEmbedder, InvalidInputError, Memory
from memory.store.events import payload_digest, target_digest

PERSISTENT = ["sqlite-file", "postgresql"]


def _events(store: Memory) -> dict[int, dict[str, object]]:
    with store.engine.connect() as connection:
        return {
            row["seq"]: dict(row)
            for row in connection.execute(sa.text("SELECT * FROM memory_events")).mappings()
        }


def _guesses_that_match(store: Memory, before: dict[int, dict[str, object]], user: str) -> int:
    """How many of ``user``'s redacted events an attacker without the key confirms by
    guessing the right user id (and each event's target and payload, which are known)."""
    matched = 0
    for seq, row in _events(store).items():
        old = before.get(seq)
        if not row["redacted"] or old is None or old["user_id"] != user:
            continue
        data = json.loads(str(old["payload_json"]))
        matched += row["target_digest"] == target_digest(user, str(old["target"]))
        matched += row["payload_digest"] == payload_digest(user, data)
    return matched


@pytest.mark.parametrize("keyed", [True, False], ids=["with-key", "without-key"])
@pytest.mark.parametrize("backend", PERSISTENT)
def test_a_redacted_event_does_not_confirm_a_guessed_user(
    backend: str, keyed: bool, url_for: Callable[[str], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    key = secrets.token_hex(32)
    if keyed:
        monkeypatch.setenv("MEMORY_AUDIT_KEY", key)
    else:
        monkeypatch.delenv("MEMORY_AUDIT_KEY", raising=False)
    victim = f"victim-{uuid.uuid4().hex[:8]}"
    with Memory.open(url_for(backend), embedder=HashingEmbedder(), role="admin") as store:
        scope = store.scope(victim, "planner", "s1")
        for number in range(3):
            scope.add(f"note {number}")
        scope.set_preference("style", "terse")
        before = _events(store)
        store.forget_user(victim)

        matched = _guesses_that_match(store, before, victim)
        if keyed:
            assert matched == 0
            assert store.verify_events().ok
            assert key not in str(_events(store))
        else:
            # The control: without a key the right guess is confirmed, as the issue found.
            assert matched == 8


def test_verification_with_the_key_catches_an_edit_and_a_wrong_key(
    url_for: Callable[[str], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    url = url_for("sqlite-file")
    monkeypatch.setenv("MEMORY_AUDIT_KEY", secrets.token_hex(32))
    with Memory.open(url, embedder=HashingEmbedder()) as store:
        store.scope("ada", "planner").add("a note")
        assert store.verify_events().ok
    monkeypatch.setenv("MEMORY_AUDIT_KEY", secrets.token_hex(32))
    with Memory.open(url, embedder=HashingEmbedder()) as store:
        report = store.verify_events()
        assert not report.ok and "MEMORY_AUDIT_KEY" in str(report.reason)


def test_a_short_audit_key_is_refused(
    url_for: Callable[[str], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MEMORY_AUDIT_KEY", "too-short")
    with pytest.raises(InvalidInputError, match="MEMORY_AUDIT_KEY.*at least 32"):
        Memory.open(url_for("sqlite-file"), embedder=None)
