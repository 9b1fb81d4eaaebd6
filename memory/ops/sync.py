"""Hub-spoke sync verbs on a local :class:`memory.Memory`: the node's state, delta batches,
applying a batch (re-embedding where the sender's model differs), the outbox, conflicts.

``memory.sync`` (the spoke, the hub gateway) reaches the store only through these; the
SQL is ``memory.store.sync``'s.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

import numpy as np

from memory.client import Memory
from memory.core.sync_clocks import MAX_CLOCK_DRIFT_MS, ConflictResolution, VersionVector
from memory.core.sync_items import (
    ALL_NODES,
    MAX_BATCH_ITEMS,
    EmbeddingEncoding,
    MemorySyncBatch,
    SyncPriority,
)
from memory.core.types import TIERS, Tier
from memory.store import sync as store
from memory.store.sync import ApplyReport, ConflictRecord, LocalNode, OutboxEntry

__all__ = [
    "ApplyReport",
    "ConflictRecord",
    "LocalNode",
    "OutboxEntry",
    "acknowledge",
    "apply_batch",
    "changes_since",
    "conflict_counts",
    "conflicts",
    "enable",
    "local_node",
    "outbox_batches",
    "pending_outbox",
    "queue_outbox",
    "state_checksum",
]


def enable(memory: Memory) -> LocalNode:
    """Make this store a sync node if it is not one yet (idempotent) and return it: from
    now on its memory writes are logged for sync, and the memories already there are
    logged as its first changes. A store where sync is never enabled logs nothing."""
    return store.enable(memory.maintenance.db)


def local_node(memory: Memory) -> LocalNode:
    """This store's node id, clock and version vector (sync must be enabled)."""
    return store.local_node(memory.maintenance.db)


def changes_since(
    memory: Memory,
    remote: VersionVector,
    *,
    target: str = ALL_NODES,
    tiers: Sequence[Tier] = TIERS,
    priority: SyncPriority = SyncPriority.NORMAL,
    encoding: EmbeddingEncoding = EmbeddingEncoding.INT8,
    max_items: int = MAX_BATCH_ITEMS,
) -> list[MemorySyncBatch]:
    """Batches with everything of ``tiers`` a node at vector ``remote`` lacks, in order."""
    return store.delta_batches(
        memory.maintenance.db, remote, target=target, tiers=tiers, priority=priority,
        encoding=encoding, max_items=max_items,
    )


def apply_batch(
    memory: Memory,
    batch: MemorySyncBatch,
    *,
    now: datetime | None = None,
    max_drift_ms: int = MAX_CLOCK_DRIFT_MS,
) -> ApplyReport:
    """Apply a received batch once (a batch id seen before changes nothing), resolving
    conflicts. Items embedded by this store's model keep their vectors; the others are
    embedded again here, before the transaction."""
    maintenance = memory.maintenance
    embedder = memory.embedder
    vectors: dict[str, np.ndarray] = {}
    model = embedder.model_name if embedder is not None else None
    if embedder is not None:
        foreign = []
        for item in batch.items:
            if item.content is None:
                continue
            packed = item.embedding
            if packed is not None and packed.model == model and packed.dims == embedder.dimension:
                vector = np.asarray(packed.decompress(), dtype=np.float32)
                norm = float(np.linalg.norm(vector))
                vectors[item.memory_id] = vector / norm if norm else vector
            else:
                foreign.append(item)
        embedded = maintenance.embed([item.content for item in foreign if item.content])
        if embedded is not None:
            by_content = embedded[1]
            for item in foreign:
                if item.content in by_content:
                    vectors[item.memory_id] = by_content[item.content]
    return store.apply_batch(
        maintenance.db, batch, vectors=vectors, model=model, now=now, max_drift_ms=max_drift_ms
    )


def queue_outbox(
    memory: Memory,
    *,
    target: str = ALL_NODES,
    priority: SyncPriority = SyncPriority.NORMAL,
    max_items: int = MAX_BATCH_ITEMS,
) -> list[OutboxEntry]:
    """Queue this node's changes not yet queued for ``target`` (durably, in its database)."""
    return store.queue_outbox(
        memory.maintenance.db, target=target, priority=priority, max_items=max_items
    )


def pending_outbox(memory: Memory, target: str | None = None) -> list[OutboxEntry]:
    """Outbox entries not acknowledged yet, oldest first."""
    return store.pending_outbox(memory.maintenance.db, target)


def outbox_batches(
    memory: Memory,
    entries: Sequence[OutboxEntry],
    encoding: EmbeddingEncoding = EmbeddingEncoding.INT8,
) -> list[MemorySyncBatch]:
    """The batches to send for outbox ``entries`` (their batch ids kept)."""
    return store.outbox_batches(memory.maintenance.db, entries, encoding)


def acknowledge(memory: Memory, batch_id: uuid.UUID) -> bool:
    """Mark an outbox batch delivered; False if it was not pending."""
    return store.acknowledge(memory.maintenance.db, batch_id)


def conflicts(memory: Memory, limit: int = 100) -> list[ConflictRecord]:
    """The latest conflicts resolved here, newest first, each with its losing version."""
    return store.conflicts(memory.maintenance.db, limit)


def conflict_counts(memory: Memory) -> dict[ConflictResolution, int]:
    """How many conflicts were resolved here, by resolution."""
    return store.conflict_counts(memory.maintenance.db)


def state_checksum(memory: Memory) -> str:
    """SHA-256 of every memory's sync view here: equal on nodes that converged."""
    return store.state_checksum(memory.maintenance.db)
