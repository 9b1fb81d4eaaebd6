"""The bus's Redis schema: key names, their types and TTLs, and the validated inputs.

Every key the bus writes has a TTL (``memctl swarm scan`` checks). ``{p}`` is the bus's key
prefix (empty by default; tests and shared servers use one to keep swarms apart).

======================================  ======  ========  =====================================
key                                     type    TTL       holds
======================================  ======  ========  =====================================
``{p}task:{id}``                        hash    24 h *    a task, its envelope and custody chain
``{p}task:{id}:findings``               zset    24 h      finding ids by time (per-task index)
``{p}finding:{id}``                     hash    24 h      a finding and its envelope
``{p}swarm:queue:{swarm}``              stream  24 h      pending work, consumer group workers
``{p}swarm:escalation:{id}``            hash    7 d       an escalation to a human
``{p}swarm:escalations:{swarm}``        zset    7 d       a swarm's open escalations by time
``{p}context:{scope}:{name}``           hash    24 h      notes, timeline, topics, shared data
``{p}session:infrafabric:{date}:{label}`` hash  30 d      a session summary's metrics
``{p}swarm:registry:{id}``              hash    7 d       roster (agents, roles, public keys),
                                                          readers allowed, artifacts
``{p}swarm:remediation:{date}:{type}``  hash    7 d       a recorded scan
======================================  ======  ========  =====================================

(*) configurable: ``SwarmBus(task_ttl=...)``. A write refreshes its key's TTL.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from typing import Any

from pydantic import AnyUrl, TypeAdapter, ValidationError

from memory import InvalidInputError
from memory.swarm.envelope import canonical

__all__ = [
    "ESCALATION_TTL",
    "FINDING_TTL",
    "KEY_KINDS",
    "LOW_CONFIDENCE",
    "TASK_TTL",
    "KeyKind",
    "TaskStatus",
    "check_citations",
    "check_confidence",
    "check_name",
    "json_value",
]

TASK_TTL = timedelta(hours=24)
FINDING_TTL = timedelta(hours=24)
CONTEXT_TTL = timedelta(hours=24)
SESSION_TTL = timedelta(days=30)
REGISTRY_TTL = timedelta(days=7)
REMEDIATION_TTL = timedelta(days=7)
ESCALATION_TTL = timedelta(days=7)
# A finding below this confidence is escalated to a human by itself.
LOW_CONFIDENCE = 0.2

MAX_TEXT = 10_000
MAX_CITATIONS = 100
MAX_JSON_BYTES = 256 * 1024
MAX_JSON_DEPTH = 20


class TaskStatus(StrEnum):
    """Where a task is: PENDING (queued), IN_PROGRESS (leased to a worker), NEEDS_ASSIST and
    BLOCKED (held by its worker, out of the queue), COMPLETED and FAILED (final)."""

    PENDING = "PENDING"
    IN_PROGRESS = "IN_PROGRESS"
    NEEDS_ASSIST = "NEEDS_ASSIST"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    BLOCKED = "BLOCKED"


# Swarm ids, agents, context scopes and names, labels: they become parts of key names, so
# no ':' (the separator) and nothing a glob pattern would read as a wildcard.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@\-]{0,127}")


def check_name(what: str, value: object) -> str:
    """``value`` if it is a usable id (1-128 letters, digits, ``_ . @ -``), else
    ``InvalidInputError`` naming ``what``."""
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise InvalidInputError(
            f"{what}: must be 1-128 letters, digits, '_', '.', '@' or '-' (starting with a "
            f"letter or digit), not {value!r}"
        )
    return value


def check_text(what: str, value: object, limit: int = MAX_TEXT) -> str:
    """Non-empty text of at most ``limit`` characters, valid UTF-8, no NUL."""
    if not isinstance(value, str):
        raise InvalidInputError(f"{what}: must be text, not {type(value).__name__}")
    if not value.strip():
        raise InvalidInputError(f"{what}: must not be empty")
    if len(value) > limit:
        raise InvalidInputError(f"{what}: at most {limit} characters (got {len(value)})")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInputError(f"{what}: not valid UTF-8 (a lone surrogate)") from None
    if "\x00" in value:
        raise InvalidInputError(f"{what}: must not contain NUL characters")
    return value


def check_confidence(value: object) -> float:
    """A confidence: a real number in [0, 1]; NaN, infinities, bools and text are refused."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidInputError(f"confidence: must be a number in [0, 1], not {value!r}")
    number = float(value)
    if math.isnan(number) or not 0.0 <= number <= 1.0:
        raise InvalidInputError(f"confidence: must be a number in [0, 1], not {value!r}")
    return number


_URI = TypeAdapter(AnyUrl)


def check_citations(value: object) -> list[str]:
    """A list of absolute URIs (``https://``, ``if://citation/...``, ``urn:...``), as given."""
    if isinstance(value, str | bytes) or not isinstance(value, list | tuple):
        raise InvalidInputError(f"citations: must be a list of URIs, not {type(value).__name__}")
    if len(value) > MAX_CITATIONS:
        raise InvalidInputError(f"citations: at most {MAX_CITATIONS} (got {len(value)})")
    citations = []
    for index, item in enumerate(value):
        text = check_text(f"citations[{index}]", item, 2048)
        try:
            # pydantic's URL parser (the WHATWG rules): a scheme, then a host or a path.
            parsed = _URI.validate_python(text)
        except ValidationError:
            parsed = None
        if parsed is None or not (parsed.host or (parsed.path or "").strip("/")) or " " in text:
            raise InvalidInputError(f"citations[{index}]: {text!r} is not an absolute URI")
        citations.append(text)
    return citations


def json_value(what: str, value: Any) -> Any:
    """``value`` if it is plain JSON data (objects with string keys, lists, strings, finite
    numbers, booleans, null), at most 20 levels deep and 256 KiB encoded."""

    def walk(item: Any, depth: int) -> None:
        if depth > MAX_JSON_DEPTH:
            raise InvalidInputError(f"{what}: nested deeper than {MAX_JSON_DEPTH} levels")
        if isinstance(item, Mapping):
            for key, inner in item.items():
                if not isinstance(key, str):
                    raise InvalidInputError(f"{what}: object keys must be strings, not {key!r}")
                walk(inner, depth + 1)
        elif isinstance(item, list | tuple):
            for inner in item:
                walk(inner, depth + 1)
        elif isinstance(item, float) and not math.isfinite(item):
            raise InvalidInputError(f"{what}: numbers must be finite, not {item!r}")
        elif isinstance(item, str):
            if "\x00" in item:
                raise InvalidInputError(f"{what}: strings must not contain NUL characters")
        elif item is not None and not isinstance(item, bool | int | float):
            raise InvalidInputError(f"{what}: {type(item).__name__} is not JSON data")

    walk(value, 0)
    try:
        encoded = canonical(value)
    except UnicodeEncodeError:
        raise InvalidInputError(
            f"{what}: text that is not valid UTF-8 (a lone surrogate)"
        ) from None
    if len(encoded) > MAX_JSON_BYTES:
        raise InvalidInputError(f"{what}: larger than {MAX_JSON_BYTES} bytes as JSON")
    return value


@dataclass(frozen=True)
class KeyKind:
    """One kind of key: its pattern (after the prefix), Redis type, TTL and required fields."""

    name: str
    pattern: re.Pattern[str]
    type: str
    ttl: timedelta
    fields: tuple[str, ...] = ()


_ID = r"[A-Za-z0-9][A-Za-z0-9_.@\-]{0,127}"
_DATE = r"\d{4}-\d{2}-\d{2}"

#: Every kind of key the bus writes; the scan classifies keys by these patterns (in order).
KEY_KINDS: tuple[KeyKind, ...] = (
    KeyKind("findings_index", re.compile(rf"task:({_ID}):findings"), "zset", FINDING_TTL),
    KeyKind(
        "task",
        re.compile(rf"task:({_ID})"),
        "hash",
        TASK_TTL,
        ("swarm", "description", "type", "status", "tracking_id", "custody_n"),
    ),
    KeyKind(
        "finding",
        re.compile(rf"finding:({_ID})"),
        "hash",
        FINDING_TTL,
        ("swarm", "task", "claim", "confidence", "citations", "tracking_id", "custody_n"),
    ),
    KeyKind("queue", re.compile(rf"swarm:queue:({_ID})"), "stream", TASK_TTL),
    KeyKind(
        "escalation",
        re.compile(rf"swarm:escalation:({_ID})"),
        "hash",
        ESCALATION_TTL,
        ("swarm", "task", "reason", "status", "tracking_id", "custody_n"),
    ),
    KeyKind("escalations", re.compile(rf"swarm:escalations:({_ID})"), "zset", ESCALATION_TTL),
    KeyKind(
        "context",
        re.compile(rf"context:({_ID}):({_ID})"),
        "hash",
        CONTEXT_TTL,
        ("notes", "timeline", "topics", "shared"),
    ),
    KeyKind(
        "session",
        re.compile(rf"session:infrafabric:({_DATE}):({_ID})"),
        "hash",
        SESSION_TTL,
        ("metrics",),
    ),
    KeyKind("registry", re.compile(rf"swarm:registry:({_ID})"), "hash", REGISTRY_TTL),
    KeyKind(
        "remediation",
        re.compile(rf"swarm:remediation:({_DATE}):({_ID})"),
        "hash",
        REMEDIATION_TTL,
        ("scanned", "issues"),
    ),
)

#: The glob patterns (after the prefix) the scan walks.
SCAN_PATTERNS = ("task:*", "finding:*", "swarm:*", "context:*", "session:infrafabric:*")
