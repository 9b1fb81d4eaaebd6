"""Redaction before storage: secrets by default, e-mail addresses and phone numbers on request,
on every kind of text a scope stores, with hostile inputs; and what is stored is redacted
(read back from the database, not just from the returned record).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa

from memory import HashingEmbedder, InvalidInputError, Memory, Redaction

SECRETS = {
    "aws": "AKIAIOSFODNN7EXAMPLE",
    "github": "ghp_" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8",
    "slack": "xoxb-123456789012-abcdefABCDEF",
    "stripe": "sk_live_" + "4eC39HqLyjWDarjtT1zdp7dc",
    "openai": "sk-proj-" + "x" * 40,
    "jwt": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0."
    "dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
    "google": "AIza" + "S" * 35,
}


@pytest.mark.parametrize(
    ("text", "leaked"),
    [
        (f"the key is {SECRETS['aws']} keep it safe", SECRETS["aws"]),
        (f"push with {SECRETS['github']}", SECRETS["github"]),
        (f"slack: {SECRETS['slack']}", SECRETS["slack"]),
        (f"stripe {SECRETS['stripe']}", SECRETS["stripe"]),
        (f"OPENAI_API_KEY={SECRETS['openai']}", SECRETS["openai"]),
        (f"Authorization: Bearer {SECRETS['jwt']}", SECRETS["jwt"]),
        (f"google {SECRETS['google']}", SECRETS["google"]),
        ("db at postgresql://admin:Tr0ub4dor&3@db.internal:5432/prod", "Tr0ub4dor&3"),
        ('config {"password": "hunter2", "user": "ada"}', "hunter2"),
        ("PASSWORD = 'correct horse'", "correct"),
        ("the password is swordfish, do not share", "swordfish"),
        ("client_secret:abc123def456", "abc123def456"),
        ("api-key=k3y-v4lu3", "k3y-v4lu3"),
        (
            "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmU\n"
            "-----END OPENSSH PRIVATE KEY-----",
            "b3BlbnNzaC1rZXktdjEAAAAABG5vbmU",
        ),
        # A key block someone forgot to close is redacted to the end of the text.
        ("-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA75\nno end", "MIIEpAIBAAKCAQEA75"),
    ],
)
def test_secrets_are_redacted_by_default(text: str, leaked: str) -> None:
    redacted = Redaction().text(text)
    assert leaked not in redacted
    assert "[REDACTED:" in redacted


@pytest.mark.parametrize(
    "text",
    [
        "the password field is validated on submit",
        "rotate the token every 24 hours",
        "release 2026-11-23, version 1.2.3, ticket BILL-311",
        "skip-the-line and sk-short",
        "ada@example.org wrote +44 20 7946 0958",  # e-mail and phone are off by default
    ],
)
def test_ordinary_text_is_left_alone(text: str) -> None:
    assert Redaction().text(text) == text


def test_emails_and_phones_when_asked() -> None:
    redaction = Redaction(emails=True, phones=True)
    text = "mail ada.lovelace+memo@analytical.engine.org or call +44 20 7946 0958 / (555) 123-4567"
    redacted = redaction.text(text)
    assert "ada.lovelace" not in redacted and "7946" not in redacted and "123-4567" not in redacted
    assert redacted.count("[REDACTED:email]") == 1 and redacted.count("[REDACTED:phone]") == 2
    # Dates, versions and short numbers are not phone numbers.
    assert redaction.text("on 2026-11-23 at 10:30, v1.2.3, 42 items") == (
        "on 2026-11-23 at 10:30, v1.2.3, 42 items"
    )


@pytest.mark.parametrize(
    "hostile",
    [
        "a" * 200_000 + "@",
        "password=" * 20_000,
        "-----BEGIN PRIVATE KEY-----" * 5_000,
        ("1 " * 50_000),
        "eyJ" + "a" * 50_000 + "." * 3,
        "x@" * 50_000,
        "Bearer " * 30_000,
    ],
)
def test_hostile_inputs_take_linear_time(hostile: str) -> None:
    # Catastrophic backtracking would take minutes; linear patterns take milliseconds.
    started = time.process_time()
    Redaction(emails=True, phones=True).text(hostile)
    assert time.process_time() - started < 5.0


def test_redaction_options_are_checked() -> None:
    with pytest.raises(TypeError, match="emails"):
        Redaction(emails="yes")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="redaction"):
        Memory.open("sqlite://", embedder=None, redaction="secrets")  # type: ignore[arg-type]


def _stored_text(store: Memory) -> str:
    """Every text column of every table, as stored."""
    found = []
    with store.engine.connect() as connection:
        for name in sa.inspect(connection).get_table_names():
            for row in connection.execute(sa.text(f'SELECT * FROM "{name}"')):
                found.extend(str(value) for value in row)
    return "\n".join(found)


@pytest.mark.parametrize("backend", ["sqlite-file", "postgresql"])
def test_every_stored_text_is_redacted(
    backend: str, url_for: Callable[[str], str], tmp_path: Path, user: str
) -> None:
    secret = SECRETS["github"]
    hostile = f"password={secret}\x01\u202e ünïcödé {secret}"
    with Memory.open(
        url_for(backend), embedder=HashingEmbedder(), redaction=Redaction(emails=True)
    ) as store:
        scope = store.scope(user, "planner", "s1")
        note = scope.add(f"deploy with {secret} to ada@example.org", metadata={"token": secret,
                         "nested": {"list": [secret, "fine"]}})
        assert secret not in note.content and "ada@example.org" not in note.content
        assert note.metadata == {
            "token": "[REDACTED:github_token]",
            "nested": {"list": ["[REDACTED:github_token]", "fine"]},
        }
        scope.add_many([f"batch {secret}", {"content": hostile, "metadata": {"k": secret}}])
        scope.update(note.id, version=note.version, content=f"rotated to {secret}")
        scope.set_preference("deploy_token", {"value": secret})
        scope.record_pattern("bash", "deploy", f"curl -H 'Authorization: Bearer {secret}'",
                             description=f"uses {secret}")
        scope.save_state({"env": {"GITHUB_TOKEN": secret}})
        scope.search(f"deploy {secret}")
        stored = _stored_text(store)
        assert secret not in stored
        assert "ada@example.org" not in stored
        assert "[REDACTED:github_token]" in stored


def test_redaction_can_be_switched_off(tmp_path: Path, user: str) -> None:
    secret = SECRETS["aws"]
    with Memory.open(
        f"sqlite:///{tmp_path / 'm.db'}", embedder=None, redaction=Redaction(secrets=False)
    ) as store:
        assert store.scope(user, "planner").add(f"key {secret}").content == f"key {secret}"
