"""The immutable values of the library: the records the public API returns, the scope a
store call acts for (``Owner``), and the constants every layer shares (tiers, identifier
width)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, get_args

Tier = Literal["working", "episodic", "semantic"]
Visibility = Literal["private", "shared"]
TIERS: tuple[Tier, ...] = get_args(Tier)
VISIBILITIES: tuple[Visibility, ...] = get_args(Visibility)

# Identifier columns (user, agent, session ids, names, keys) share one width; the inputs
# check it before the database would.
ID_LENGTH = 128
# Memories without a session store the empty string: SQL treats NULLs as distinct, so a
# NULL session would let the same content be stored twice in the same scope.
NO_SESSION = ""


@dataclass(frozen=True, slots=True)
class MemoryRecord:
    """One stored memory, as of the moment it was read."""

    id: int
    user_id: str
    agent_id: str
    session_id: str | None
    tier: Tier
    content: str
    content_hash: str
    importance: float
    visibility: Visibility
    metadata: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    last_accessed_at: datetime | None
    access_count: int
    expires_at: datetime | None
    version: int


@dataclass(frozen=True, slots=True)
class Preference:
    """The current value of one user preference and who set it."""

    user_id: str
    key: str
    value: Any
    source_agent: str
    confidence: float
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class CodePattern:
    """A reusable piece of code a user's agents have recorded."""

    id: int
    user_id: str
    agent_id: str
    language: str
    name: str
    description: str
    snippet: str
    tags: tuple[str, ...]
    usage_count: int
    last_used_at: datetime | None
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class SessionCheckpoint:
    """One saved state of a session; ``checkpoint_seq`` counts up from 1."""

    user_id: str
    session_id: str
    agent_id: str
    checkpoint_seq: int
    state: dict[str, Any]
    created_at: datetime
    expires_at: datetime | None


@dataclass(frozen=True, slots=True)
class Entity:
    """A node of the Phase 1 knowledge graph (MCP memory server semantics)."""

    name: str
    entity_type: str
    observations: tuple[str, ...] = ()

    def to_mcp(self) -> dict[str, Any]:
        """The MCP memory server's JSON shape of this entity."""
        return {
            "type": "entity",
            "name": self.name,
            "entityType": self.entity_type,
            "observations": list(self.observations),
        }


@dataclass(frozen=True, slots=True)
class Relation:
    """A directed, typed edge of the knowledge graph, in active voice (from → to)."""

    from_entity: str
    to_entity: str
    relation_type: str

    def to_mcp(self) -> dict[str, Any]:
        """The MCP memory server's JSON shape of this relation."""
        return {
            "type": "relation",
            "from": self.from_entity,
            "to": self.to_entity,
            "relationType": self.relation_type,
        }


@dataclass(frozen=True, slots=True)
class KnowledgeGraph:
    """Entities and the relations among them."""

    entities: tuple[Entity, ...] = ()
    relations: tuple[Relation, ...] = field(default=())


@dataclass(frozen=True, slots=True)
class AddedObservations:
    """The observations that ``add_observations`` actually added to one entity."""

    entity_name: str
    added_observations: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class SearchHit:
    """A memory found by search, with its fused score and the evidence behind it."""

    memory: MemoryRecord
    score: float
    keyword_score: float
    vector_score: float


@dataclass(frozen=True, slots=True)
class MemoryEvent:
    """One committed event, as the log stores it and subscribers receive it.

    ``data`` is None once the event has been redacted (its user forgotten).
    """

    seq: int
    created_at: datetime
    user_id: str
    agent_id: str
    operation: str
    target: str
    data: dict[str, Any] | None
    redacted: bool = False


@dataclass(frozen=True, slots=True)
class Owner:
    """Who a write belongs to and whose rows a read may see."""

    user: str
    agent: str
    session: str | None
    # Whether reads also see what other agents of the user shared with this one: the
    # USE_CROSS_AGENT_SHARING flag, decided per call (memory.store.sharing.visible);
    # the scope decides them once per call (memory.scope.Scope).
    shared: bool = False
    # False: memories are one flat tier, as in Phase 1 (USE_HIERARCHICAL_TIERS off, decided
    # per call): no tier filters or tier weights, no consolidation or promotion.
    tiered: bool = True

    @property
    def session_key(self) -> str:
        return self.session if self.session is not None else NO_SESSION
