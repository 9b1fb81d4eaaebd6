"""Validation of every public input, with pydantic v2.

Each model checks types strictly (no silent coercion of ``"0.5"`` to a float) and turns
broken text into clear errors before anything reaches the database. ``validate`` converts
pydantic's errors into ``InvalidInputError`` messages that name the field and the limit.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated, Any, Protocol, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
)

from memory.core.errors import InvalidInputError
from memory.core.types import ID_LENGTH, Tier, Visibility

MAX_CONTENT_CHARS = 32_768
MAX_METADATA_KEYS = 32
MAX_METADATA_VALUE_BYTES = 1024
MAX_PREFERENCE_VALUE_BYTES = 16_384
MAX_STATE_BYTES = 1_048_576
MAX_SNIPPET_CHARS = 65_536
MAX_DESCRIPTION_CHARS = 4_096
MAX_TAGS = 32
MAX_TAG_CHARS = 64
MAX_BATCH = 10_000
MAX_QUERY_CHARS = 4_096
MAX_TTL = timedelta(days=3650)
MAX_EVENT_DATA_BYTES = 65_536
# JSON values may nest this deep (counting every object and list, the outermost included);
# far below Python's recursion limit, so serialising and redacting a value cannot overflow.
MAX_JSON_DEPTH = 32
# The largest integer the database stores (a signed 64-bit BIGINT).
MAX_INT = 2**63 - 1


class _HasId(Protocol):
    @property
    def id(self) -> int: ...


_Identified = TypeVar("_Identified", bound=_HasId)


def id_list_chunks(items: Sequence[_Identified]) -> list[list[_Identified]]:
    """Split ``items`` into consecutive runs whose ids, as a JSON list, fit in one metadata
    value (``MAX_METADATA_VALUE_BYTES``: about a hundred ids), so that a summary's
    ``consolidated_from`` can always be stored: 300 four-digit ids make runs of 204 and 96.
    """
    chunks: list[list[_Identified]] = []
    current: list[_Identified] = []
    size = 2  # the brackets
    for item in items:
        extra = len(str(item.id)) + (1 if current else 0)
        if current and size + extra > MAX_METADATA_VALUE_BYTES:
            chunks.append(current)
            current, size, extra = [], 2, len(str(item.id))
        current.append(item)
        size += extra
    if current:
        chunks.append(current)
    return chunks

def _decode_text(value: Any) -> Any:
    """Accept bytes only when they are valid UTF-8; reject text that cannot be stored."""
    if isinstance(value, bytes | bytearray):
        try:
            value = bytes(value).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ValueError(f"is not valid UTF-8 (byte {exc.start})") from None
    if isinstance(value, str):
        if "\x00" in value:
            raise ValueError("contains a NUL character")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise ValueError(f"is not valid Unicode (lone surrogate at {exc.start})") from None
    return value


def _no_control_characters(value: str) -> str:
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in value):
        raise ValueError("must not contain control characters")
    if value != value.strip():
        raise ValueError("must not start or end with white space")
    return value


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be blank")
    return value


Text = Annotated[str, BeforeValidator(_decode_text)]
Identifier = Annotated[
    str,
    BeforeValidator(_decode_text),
    Field(min_length=1, max_length=ID_LENGTH),
    AfterValidator(_no_control_characters),
]
Name = Annotated[
    str,
    BeforeValidator(_decode_text),
    Field(min_length=1, max_length=ID_LENGTH * 2),
    AfterValidator(_not_blank),
]
Content = Annotated[
    str,
    BeforeValidator(_decode_text),
    Field(min_length=1, max_length=MAX_CONTENT_CHARS),
    AfterValidator(_not_blank),
]
Unit = Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)]


def canonical_json(value: Any) -> str:
    """Serialise a JSON value deterministically: sorted keys, no NaN, no white space.

    >>> canonical_json({"b": 1, "a": [True, None]})
    '{"a":[true,null],"b":1}'
    """
    depth = json_depth(value)
    if depth > MAX_JSON_DEPTH:
        raise ValueError(f"is nested {depth} levels deep; at most {MAX_JSON_DEPTH} are allowed")
    try:
        text = canonical_text(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"is not JSON-serialisable: {exc}") from None
    _decode_text(text)  # lone surrogates pass json.dumps but cannot be stored
    return text


def canonical_text(value: Any) -> str:
    """``canonical_json``'s text without its checks, for values that passed them already
    or that the code itself built: the event chain hashes the payloads it stored through
    ``canonical_json``, and checking them again was a third of a replay's time."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )


def json_depth(value: Any, stop: int = MAX_JSON_DEPTH + 1) -> int:
    """How deeply ``value`` nests mappings and lists (0 for a scalar), counted without
    recursion and no further than ``stop`` (a hostile value may nest a million levels)."""
    deepest = 0
    pending = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, Mapping | list | tuple):
            deepest = max(deepest, depth)
            if depth >= stop:
                return depth
            children = item.values() if isinstance(item, Mapping) else item
            pending.extend((child, depth + 1) for child in children)
    return deepest


def content_hash(text: str) -> str:
    """The SHA-256 of the text, used to de-duplicate memories and observations."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _json_within(limit: int) -> AfterValidator:
    def check(value: Any) -> Any:
        size = len(canonical_json(value).encode("utf-8"))
        if size > limit:
            raise ValueError(f"must be at most {limit} bytes as JSON (got {size})")
        return value

    return AfterValidator(check)


def _metadata_rules(value: dict[str, Any]) -> dict[str, Any]:
    if len(value) > MAX_METADATA_KEYS:
        raise ValueError(f"must have at most {MAX_METADATA_KEYS} keys (got {len(value)})")
    for key, item in value.items():
        size = len(canonical_json(item).encode("utf-8"))
        if size > MAX_METADATA_VALUE_BYTES:
            raise ValueError(
                f"value of {key!r} must be at most {MAX_METADATA_VALUE_BYTES} bytes as JSON "
                f"(got {size})"
            )
    return value


Metadata = Annotated[dict[Identifier, Any], AfterValidator(_metadata_rules)]


def _positive_ttl(value: timedelta | None) -> timedelta | None:
    if value is not None and not (timedelta(0) < value <= MAX_TTL):
        raise ValueError(f"must be positive and at most {MAX_TTL.days} days")
    return value


def _aware(value: datetime | None) -> datetime | None:
    if value is not None and value.tzinfo is None:
        raise ValueError("must be timezone-aware")
    return value


Ttl = Annotated[timedelta | None, AfterValidator(_positive_ttl)]
AwareDatetime = Annotated[datetime | None, AfterValidator(_aware)]


QUOTA_MEMORIES_ENV = "MEMORY_MAX_MEMORIES_PER_USER"
QUOTA_CHECKPOINTS_ENV = "MEMORY_MAX_CHECKPOINTS_PER_SESSION"
QUOTA_BYTES_ENV = "MEMORY_MAX_BYTES_PER_USER"


@dataclass(frozen=True, slots=True)
class Quotas:
    """Per-user limits of a deployment. ``memories``: live memories a user may hold;
    ``bytes``: the bytes of text a user may store (``memory.store.usage`` says which);
    ``checkpoints``: checkpoints kept per session and agent, the newest (older ones are
    deleted as new ones are saved). None: no limit. The shared context of a session
    (``merge_context``) is held to the state limit, ``MAX_STATE_BYTES``, like
    ``save_state``."""

    memories: int | None = None
    bytes: int | None = None
    checkpoints: int | None = None

    @property
    def per_user(self) -> bool:
        """Whether a limit on a user's total is set: a write must then see every earlier
        write of that user to check it, so writers of one user take turns."""
        return self.memories is not None or self.bytes is not None

    @classmethod
    def from_environment(cls, environ: Mapping[str, str]) -> Quotas:
        """The quotas ``$MEMORY_MAX_MEMORIES_PER_USER``, ``$MEMORY_MAX_BYTES_PER_USER`` and
        ``$MEMORY_MAX_CHECKPOINTS_PER_SESSION`` set (positive whole numbers)."""
        return cls(
            memories=_positive_setting(environ, QUOTA_MEMORIES_ENV),
            bytes=_positive_setting(environ, QUOTA_BYTES_ENV),
            checkpoints=_positive_setting(environ, QUOTA_CHECKPOINTS_ENV),
        )


def _positive_setting(environ: Mapping[str, str], name: str) -> int | None:
    raw = environ.get(name, "").strip()
    if not raw:
        return None
    if not raw.isascii() or not raw.isdigit() or int(raw) < 1:
        raise InvalidInputError(f"{name}: must be a positive whole number, not {raw!r}")
    return int(raw)


class _Input(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


# The agent name the library acts under for operators (forget, teams): no caller's agent
# may take it, so that the log's "admin" entries are the operators' alone.
ADMIN_AGENT = "admin"


def _not_admin(value: str) -> str:
    if value.strip().casefold() == ADMIN_AGENT:
        raise ValueError(f"{ADMIN_AGENT!r} is reserved for the operators' own log entries")
    return value


class UserInput(_Input):
    user: Identifier


class ScopeInput(_Input):
    user: Identifier
    agent: Annotated[Identifier, AfterValidator(_not_admin)]
    session: Identifier | None = None


class NewMemory(_Input):
    content: Content
    tier: Tier = "working"
    importance: Unit = 0.5
    visibility: Visibility = "private"
    metadata: Metadata = Field(default_factory=dict)
    ttl: Ttl = None


class MemoryChanges(_Input):
    version: Annotated[int, Field(ge=1, le=MAX_INT)]
    content: Content | None = None
    tier: Tier | None = None
    importance: Unit | None = None
    metadata: Metadata | None = None


class MemoryQuery(_Input):
    tier: Tier | None = None
    session: Identifier | None = None
    metadata: Metadata = Field(default_factory=dict)
    created_after: AwareDatetime = None
    created_before: AwareDatetime = None
    before_id: Annotated[int, Field(ge=1, le=MAX_INT)] | None = None
    limit: Annotated[int, Field(ge=1, le=1000)] = 100


QueryText = Annotated[
    str,
    BeforeValidator(_decode_text),
    Field(min_length=1, max_length=MAX_QUERY_CHARS),
    AfterValidator(_not_blank),
]


class SearchQuery(_Input):
    text: QueryText
    tiers: list[Tier] = Field(default_factory=list)
    session: Identifier | None = None
    metadata: Metadata = Field(default_factory=dict)
    created_after: AwareDatetime = None
    created_before: AwareDatetime = None
    limit: Annotated[int, Field(ge=1, le=100)] = 10


class InjectRequest(_Input):
    text: QueryText
    budget_tokens: Annotated[int, Field(ge=16, le=131_072)]


class NewPreference(_Input):
    key: Identifier
    value: Annotated[Any, _json_within(MAX_PREFERENCE_VALUE_BYTES)]
    confidence: Unit = 1.0


class NewCodePattern(_Input):
    language: Annotated[Identifier, Field(max_length=64)]
    name: Name
    snippet: Annotated[Text, Field(min_length=1, max_length=MAX_SNIPPET_CHARS)]
    description: Annotated[Text, Field(max_length=MAX_DESCRIPTION_CHARS)] = ""
    tags: Annotated[
        list[Annotated[Identifier, Field(max_length=MAX_TAG_CHARS)]],
        Field(max_length=MAX_TAGS),
    ] = Field(default_factory=list)


class CodePatternQuery(_Input):
    language: Annotated[Identifier, Field(max_length=64)] | None = None
    tag: Annotated[Identifier, Field(max_length=MAX_TAG_CHARS)] | None = None
    text: Annotated[Text, Field(min_length=1, max_length=ID_LENGTH)] | None = None
    limit: Annotated[int, Field(ge=1, le=1000)] = 20


class NewSessionState(_Input):
    state: Annotated[dict[str, Any], _json_within(MAX_STATE_BYTES)]
    ttl: Ttl = None


def _non_empty(value: dict[str, Any]) -> dict[str, Any]:
    if not value:
        raise ValueError("must change at least one key")
    return value


class ContextPatch(_Input):
    patch: Annotated[
        dict[Identifier, Any], _json_within(MAX_STATE_BYTES), AfterValidator(_non_empty)
    ]
    seen: Annotated[int, Field(ge=0, le=MAX_INT)] | None = None
    timestamp: AwareDatetime = None
    ttl: Ttl = None


# Event types the library writes itself: an external event may not pose as one of them.
RESERVED_EVENT_PREFIXES = (
    "context.", "events.", "grant.", "memory.", "pattern.", "preference.", "retention.",
    "share.", "sharing.", "state.", "team.", "user.",
)


def _not_reserved(value: str) -> str:
    if value.startswith(RESERVED_EVENT_PREFIXES):
        raise ValueError(f"{value!r} is reserved for the library's own events")
    return value


class RecordedEvent(_Input):
    event: Annotated[
        str, Field(pattern=r"^[a-z][a-z0-9_.:-]{0,63}$"), AfterValidator(_not_reserved)
    ]
    data: Annotated[dict[str, Any], _json_within(MAX_EVENT_DATA_BYTES)]
    memory: NewMemory | None = None


# -- Phase 1: MCP memory server shapes (camelCase names as in its tools) ----------------------


Observation = Annotated[
    str,
    BeforeValidator(_decode_text),
    Field(min_length=1, max_length=MAX_CONTENT_CHARS),
    AfterValidator(_not_blank),
]


class EntityInput(_Input):
    name: Name
    entityType: Identifier  # noqa: N815 - the MCP memory server's field name
    observations: list[Observation] = Field(default_factory=list)


class EntityName(_Input):
    name: Name


class RelationInput(_Input):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True, populate_by_name=True)

    from_: Name = Field(alias="from")
    to: Name
    relationType: Identifier  # noqa: N815


class ObservationInput(_Input):
    entityName: Name  # noqa: N815
    contents: list[Observation]


class ObservationDeletion(_Input):
    entityName: Name  # noqa: N815
    observations: list[Observation]


M = TypeVar("M", bound=BaseModel)


def validate(model: type[M], data: Any) -> M:
    """Validate ``data`` as ``model``; raise ``InvalidInputError`` naming field and limit."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise InvalidInputError(_describe(exc)) from None


def checked_count(name: str, value: object, most: int) -> int:
    """``value`` if it is an integer from 1 to ``most`` (a bool is not), else
    ``InvalidInputError`` naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= most:
        raise InvalidInputError(f"{name}: must be an integer from 1 to {most}, not {value!r}")
    return value


def as_list(items: Any, what: str) -> list[Any]:
    """``items`` as a list; a string or a mapping is refused (a common slip for a list)."""
    if isinstance(items, str | bytes | Mapping) or not isinstance(items, Iterable):
        raise InvalidInputError(f"{what}: must be a list, not {type(items).__name__}")
    return list(items)


def validate_many(model: type[M], items: Any, what: str) -> list[M]:
    """Validate a list of inputs; the error names the position of the first bad item."""
    items = as_list(items, what)
    if len(items) > MAX_BATCH:
        raise InvalidInputError(f"{what}: at most {MAX_BATCH} items per call (got {len(items)})")
    result = []
    for index, item in enumerate(items):
        try:
            result.append(model.model_validate(item))
        except ValidationError as exc:
            raise InvalidInputError(f"{what}[{index}]." + _describe(exc)) from None
    return result


def _describe(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors(include_url=False):
        location = (
            ".".join(_short(part) for part in error["loc"] if not _is_type_tag(part)) or "value"
        )
        context = error.get("ctx", {})
        unit = "characters" if isinstance(error.get("input"), str) else "items"
        if error["type"] in {"string_too_long", "too_long"}:
            message = (
                f"must be at most {context.get('max_length')} {unit} "
                f"(got {_length(error.get('input'))})"
            )
        elif error["type"] in {"string_too_short", "too_short"}:
            message = f"must be at least {context.get('min_length')} {unit}"
        else:
            message = error["msg"].removeprefix("Value error, ")
        parts.append(f"{location}: {message}")
    return "; ".join(parts)


def _short(part: object) -> str:
    text = str(part)
    return text if len(text) <= 40 else text[:37] + "..."


def _is_type_tag(part: object) -> bool:
    # pydantic adds union-member tags such as 'str' or 'function-after[...]' to locations.
    return isinstance(part, str) and (part in {"str", "bytes", "int", "float"} or "[" in part)


def _length(value: object) -> int | str:
    try:
        return len(value)  # type: ignore[arg-type]
    except TypeError:
        return "?"
