"""RemediationScan: walk the bus's keys with SCAN, find what is wrong, optionally clean it.

Each key under the bus's patterns is classified by :data:`memory.swarm.schema.KEY_KINDS`.
Problems: a key of no known kind (reported, never touched: it may not be ours), a wrong
Redis type, no TTL, a schema violation (a field missing, a status, confidence or JSON
that does not parse). ``clean`` deletes wrong types and schema violations and gives keys
without a TTL their kind's TTL. The scan itself is recorded at
``swarm:remediation:{date}:{scan_type}`` for 7 days.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from memory import InvalidInputError
from memory.swarm.schema import (
    KEY_KINDS,
    REMEDIATION_TTL,
    SCAN_PATTERNS,
    KeyKind,
    TaskStatus,
    check_citations,
    check_confidence,
    check_name,
)

__all__ = ["Issue", "ScanReport", "scan"]

# Keys SCAN asks for per round trip: large enough to be quick, small enough not to stall
# a Redis that serves other clients.
SCAN_COUNT = 500


@dataclass(frozen=True)
class Issue:
    """One problem with one key; ``fixed`` says what ``clean`` did about it."""

    key: str
    problem: str
    kind: str
    fixed: str | None = None


@dataclass(frozen=True)
class ScanReport:
    """What a scan saw: keys by kind, the issues, and where the scan was recorded."""

    scanned: int
    kinds: Mapping[str, int]
    issues: tuple[Issue, ...]
    recorded_at: str

    @property
    def clean(self) -> bool:
        """Whether nothing was wrong."""
        return not self.issues


def _kind(name: str) -> KeyKind | None:
    for kind in KEY_KINDS:
        if kind.pattern.fullmatch(name):
            return kind
    return None


def _json(text: str | None, expected: type) -> bool:
    try:
        return isinstance(json.loads(text or ""), expected)
    except ValueError:
        return False


def _violation(kind: KeyKind, fields: Mapping[str, str]) -> str | None:
    """The first schema violation of a hash of ``kind``, or None."""
    missing = [field for field in kind.fields if field not in fields]
    if missing:
        return f"missing field(s) {', '.join(missing)}"
    if kind.name == "task":
        if fields["status"] not in TaskStatus.__members__:
            return f"status {fields['status']!r} is not a task status"
        if not fields["custody_n"].isdigit():
            return "custody_n is not a count"
        if any(f"custody:{i}" not in fields for i in range(int(fields["custody_n"]))):
            return "a custody entry is missing"
    elif kind.name == "finding":
        try:
            check_confidence(float(fields["confidence"]))
            check_citations(json.loads(fields["citations"]))
        except (ValueError, InvalidInputError) as error:
            return str(error)
    elif kind.name == "context":
        for part, expected in (("notes", list), ("timeline", list), ("topics", list)):
            if not _json(fields[part], expected):
                return f"{part} is not a JSON list"
        if not _json(fields["shared"], dict):
            return "shared is not a JSON object"
    elif kind.name == "session" and not _json(fields["metrics"], dict):
        return "metrics is not a JSON object"
    elif kind.name == "registry":
        for field, value in fields.items():
            head, _, _ = field.partition(":")
            if head == "agent" and not _json(value, dict):
                return f"{field} is not a JSON object"
            if head not in ("agent", "reader", "artifact", "updated_at"):
                return f"unknown field {field!r}"
    return None


def scan(
    client: Any,
    prefix: str = "",
    *,
    clean: bool = False,
    scan_type: str = "full",
    now: datetime | None = None,
) -> ScanReport:
    """Scan the bus's keys under ``prefix`` with ``client`` (a redis-py client decoding
    replies, see :func:`memory.swarm.connect`); see the module. Returns the report, which is
    also recorded (the record's own key is not counted)."""
    check_name("scan type", scan_type)
    now = now or datetime.now(UTC)
    record = f"{prefix}swarm:remediation:{now.date().isoformat()}:{scan_type}"
    kinds: Counter[str] = Counter()
    issues: list[Issue] = []
    seen: set[str] = set()
    for pattern in SCAN_PATTERNS:
        for key in client.scan_iter(
            match=re.sub(r"([\[\]?*\\])", r"\\\1", prefix) + pattern, count=SCAN_COUNT
        ):
            if key in seen or key == record:
                continue
            seen.add(key)
            issue = _check(client, key, key[len(prefix) :], kinds, clean)
            if issue is not None:
                issues.append(issue)
    at = now.isoformat()
    with client.pipeline(transaction=True) as pipe:
        pipe.hset(
            record,
            mapping={
                "scanned": str(len(seen)),
                "kinds": json.dumps(dict(kinds)),
                "issues": json.dumps([issue.__dict__ for issue in issues]),
                "cleaned": "1" if clean else "0",
                "at": at,
            },
        )
        pipe.pexpire(record, int(REMEDIATION_TTL.total_seconds() * 1000))
        pipe.execute()
    return ScanReport(len(seen), dict(kinds), tuple(issues), record)


def _check(client: Any, key: str, name: str, kinds: Counter[str], clean: bool) -> Issue | None:
    kind = _kind(name)
    if kind is None:
        kinds["unknown"] += 1
        return Issue(key, "matches no kind of key the bus writes (left alone)", "unknown")
    kinds[kind.name] += 1
    actual = client.type(key)
    if actual == "none":  # expired between SCAN and now
        return None
    if actual != kind.type:
        fixed = "deleted" if clean and client.delete(key) else None
        return Issue(key, f"is a {actual}, not a {kind.type}", kind.name, fixed)
    if kind.type == "hash":
        problem = _violation(kind, client.hgetall(key))
        if problem is not None:
            fixed = "deleted" if clean and client.delete(key) else None
            return Issue(key, f"schema violation: {problem}", kind.name, fixed)
    if client.pttl(key) == -1:
        ttl = int(kind.ttl.total_seconds() * 1000)
        fixed = f"TTL set to {kind.ttl}" if clean and client.pexpire(key, ttl) else None
        return Issue(key, "has no TTL", kind.name, fixed)
    return None
