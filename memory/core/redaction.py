"""Redaction before storage: secrets (on by default), e-mail addresses and phone numbers.

``Redaction`` is given to ``Memory.open``; every write of a scope passes its text through
it before validation, so what is stored, indexed, embedded and logged is already redacted:
memory content and metadata values, preference values, code patterns (name, description,
snippet, tags) and session state. Each match is replaced by ``[REDACTED:<kind>]``; for
``key = value`` secrets only the value is replaced, so the text keeps its meaning
("the password is [REDACTED:password]").

What counts as a secret: private key blocks (PEM, OpenSSH, PGP), well-known token formats
(AWS access key ids, GitHub, GitLab, Slack, Stripe, OpenAI/Anthropic-style ``sk-`` keys,
Google API keys, JSON Web Tokens), ``Bearer`` / ``Basic`` authorization values, passwords
in URLs (``scheme://user:password@host``), and the value after a secret-like name
(``password``, ``passwd``, ``pwd``, ``secret``, ``token``, ``api_key``, ``access_key``,
``client_secret``, ``auth``…) followed by ``:`` or ``=``.

Every pattern is linear: no nested quantifiers and bounded repetitions, so a hostile input
cannot make redaction slow. Redaction is deliberately eager; a false positive costs a few
characters of a memory, a false negative leaks a credential into every backup.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

MARK = "[REDACTED:{}]"
# How deep ``Redaction.value`` descends (see there).
_BEYOND_DEPTH = 100

# (kind, pattern): the whole match is replaced, unless the pattern has a group named
# "value", in which case only that group is.
_SECRET_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    (
        "private_key",
        re.compile(
            r"-----BEGIN[A-Z0-9 ]{0,40}PRIVATE KEY( BLOCK)?-----"
            r"(?:.*?-----END[A-Z0-9 ]{0,40}PRIVATE KEY( BLOCK)?-----|.*\Z)",
            re.DOTALL,
        ),
    ),
    ("aws_access_key", re.compile(r"\b(?:AKIA|ASIA|AGPA|AIDA|AROA)[0-9A-Z]{16}\b")),
    ("github_token", re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{30,255}|github_pat_\w{20,255})")),
    ("gitlab_token", re.compile(r"\bglpat-[A-Za-z0-9_\-]{20,255}")),
    ("slack_token", re.compile(r"\bxox[abposr]-[A-Za-z0-9\-]{10,255}")),
    ("stripe_key", re.compile(r"\b[rsp]k_(?:live|test)_[A-Za-z0-9]{16,255}")),
    ("api_key", re.compile(r"\bsk-(?:[A-Za-z0-9_\-]{2,40}-)?[A-Za-z0-9_\-]{20,255}")),
    ("google_api_key", re.compile(r"\bAIza[0-9A-Za-z_\-]{35}")),
    (
        "jwt",
        re.compile(
            r"\beyJ[A-Za-z0-9_\-]{5,4096}\.eyJ[A-Za-z0-9_\-]{5,4096}\.[A-Za-z0-9_\-]{0,4096}"
        ),
    ),
    (
        "authorization",
        re.compile(
            r"(?i)\b(?:bearer|basic|token)\s{1,8}(?!\[REDACTED:)"
            r"(?P<value>[A-Za-z0-9_\-.~+/=]{16,4096})"
        ),
    ),
    (
        "url_password",
        re.compile(r"(?i)\b[a-z][a-z0-9+.\-]{1,20}://[^\s:/@]{1,256}:(?P<value>[^\s@/]{1,256})@"),
    ),
    (
        "password",
        re.compile(
            r"(?i)(?:\b|_)(?:password|passwd|passphrase|pwd|secret|client_secret|api[_\-]?key"
            r"|access[_\-]?key|secret[_\-]?key|private[_\-]?key|auth[_\-]?token|access[_\-]?token"
            r"|refresh[_\-]?token|token)[\"']?\s{0,8}[:=]\s{0,8}[\"']?"
            r"(?!\[REDACTED:)(?P<value>[^\s\"',;]{1,4096})"
        ),
    ),
    (
        "password",
        re.compile(
            r"(?i)\b(?:password|passwd|passphrase)\s{1,8}(?:is|was)\s{1,8}[\"']?"
            r"(?!\[REDACTED:)(?P<value>[^\s\"',;]{1,4096})"
        ),
    ),
)
_EMAIL = re.compile(
    r"\b[A-Za-z0-9._%+\-]{1,64}@[A-Za-z0-9\-]{1,63}(?:\.[A-Za-z0-9\-]{1,63}){0,8}\.[A-Za-z]{2,24}\b"
)
# International (+ and 7-15 digits) or national numbers of 9-15 digits, with the usual
# separators; at least 9 digits keeps dates, versions and short ids out.
_PHONE = re.compile(
    r"(?<![\w+])(?:\+\d{1,3}[\s.\-]?)?(?:\(\d{1,4}\)[\s.\-]?)?\d(?:[\s.\-]?\d){6,14}(?!\w)"
)


@dataclass(frozen=True, slots=True)
class Redaction:
    """What ``Memory.open`` redacts before anything is stored.

    >>> Redaction().text("deploy with password=hunter2!")
    'deploy with password=[REDACTED:password]'
    >>> Redaction(emails=True).text("write to ada@example.org")
    'write to [REDACTED:email]'
    """

    secrets: bool = True
    emails: bool = False
    phones: bool = False

    def __post_init__(self) -> None:
        for name in ("secrets", "emails", "phones"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"Redaction.{name}: must be True or False")

    @property
    def active(self) -> bool:
        """True when at least one kind of redaction is on."""
        return self.secrets or self.emails or self.phones

    def text(self, text: str) -> str:
        """``text`` with every enabled kind of sensitive value replaced by a marker."""
        if self.secrets:
            for kind, pattern in _SECRET_PATTERNS:
                text = pattern.sub(functools.partial(_replace, kind=kind), text)
        if self.emails:
            text = _EMAIL.sub(MARK.format("email"), text)
        if self.phones:
            text = _PHONE.sub(_phone, text)
        return text

    def value(self, value: Any, _depth: int = 0) -> Any:
        """A JSON-like value with every string in it (keys included) redacted; text given
        as UTF-8 bytes is redacted as text (other bytes are left for validation to refuse).
        Below ``_BEYOND_DEPTH`` levels a value is returned as it is: far deeper than
        validation allows (``memory.core.inputs.MAX_JSON_DEPTH``), which refuses it, and
        far from Python's recursion limit."""
        if not self.active or _depth > _BEYOND_DEPTH:
            return value
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, bytes | bytearray):
            try:
                return self.text(bytes(value).decode("utf-8"))
            except UnicodeDecodeError:
                return value
        if isinstance(value, Mapping):
            # Keys too: a metadata, preference or state key can hold a secret as well.
            return {
                self.text(key) if isinstance(key, str) else key: self.value(item, _depth + 1)
                for key, item in value.items()
            }
        if isinstance(value, list | tuple):
            return [self.value(item, _depth + 1) for item in value]
        return value


def _replace(match: re.Match[str], kind: str) -> str:
    if "value" in match.re.groupindex and match.group("value") is not None:
        start, end = match.span("value")
        offset = match.start()
        whole = match.group(0)
        return whole[: start - offset] + MARK.format(kind) + whole[end - offset :]
    return MARK.format(kind)


def _phone(match: re.Match[str]) -> str:
    digits = sum(character.isdigit() for character in match.group(0))
    return MARK.format("phone") if digits >= 9 else match.group(0)


NO_REDACTION = Redaction(secrets=False)
