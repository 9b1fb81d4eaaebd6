"""The local half of a spoke: its own ``Memory`` as a sync node.

``SpokeStore`` makes delta batches for a peer at a given version vector, applies batches
received (once per batch id, conflicts resolved the same way on every node, content
re-embedded when the sender's model is not ours), and keeps the outbox: local writes
queued in the store's own database until a peer acknowledges them, so writes made offline
go out on reconnect. No networking here: the transport (``memory.sync`` client and hub
gateway) moves the batches this produces and consumes.

    >>> spoke = SpokeStore(Memory.open("sqlite:///edge.db"))  # doctest: +SKIP
    >>> for batch in spoke.queue_local():  # doctest: +SKIP
    ...     send(batch)  # then, on the hub's acknowledgement:
    ...     spoke.acknowledge(batch.batch_id)
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

from memory import Memory
from memory.core.errors import InvalidInputError
from memory.core.sync_clocks import ConflictResolution, VersionVector
from memory.core.sync_items import (
    ALL_NODES,
    MAX_BATCH_ITEMS,
    EmbeddingEncoding,
    MemorySyncBatch,
    SyncPriority,
)
from memory.core.types import TIERS, Tier
from memory.ops import sync as ops
from memory.ops.sync import ApplyReport, ConflictRecord


class SpokeStore:
    """A local ``Memory`` as a sync node.

    ``encoding`` is how embeddings travel (int8 by default: a quarter of float32);
    ``max_items`` bounds a batch.
    """

    def __init__(
        self,
        memory: Memory,
        *,
        encoding: EmbeddingEncoding = EmbeddingEncoding.INT8,
        max_items: int = MAX_BATCH_ITEMS,
    ) -> None:
        if not 1 <= max_items <= MAX_BATCH_ITEMS:
            raise InvalidInputError(f"max_items must be 1..{MAX_BATCH_ITEMS}")
        self.memory = memory
        self.encoding = EmbeddingEncoding(encoding)
        self.max_items = max_items
        # A spoke syncs: its store becomes a node (once; its memories logged).
        self.node_id = ops.enable(memory).node_id

    def vector(self) -> VersionVector:
        """What this node has: the vector a peer computes its delta against."""
        return ops.local_node(self.memory).vector

    def delta(
        self,
        remote: VersionVector,
        *,
        target: str = ALL_NODES,
        tiers: Sequence[Tier] = TIERS,
        priority: SyncPriority = SyncPriority.NORMAL,
    ) -> list[MemorySyncBatch]:
        """Batches with everything of ``tiers`` a node at ``remote`` lacks, in order."""
        return ops.changes_since(
            self.memory, remote, target=target, tiers=tiers, priority=priority,
            encoding=self.encoding, max_items=self.max_items,
        )

    def apply(self, batch: MemorySyncBatch, *, now: datetime | None = None) -> ApplyReport:
        """Apply a received batch; applying it again changes nothing."""
        return ops.apply_batch(self.memory, batch, now=now)

    def queue_local(
        self, *, target: str = ALL_NODES, priority: SyncPriority = SyncPriority.NORMAL
    ) -> list[MemorySyncBatch]:
        """Queue the local writes not queued for ``target`` yet and return every batch
        still waiting for ``target``'s acknowledgement, oldest first."""
        ops.queue_outbox(self.memory, target=target, priority=priority, max_items=self.max_items)
        return self.pending(target)

    def pending(self, target: str | None = None) -> list[MemorySyncBatch]:
        """The outbox batches not acknowledged yet (for ``target``, or all), as they are
        to be sent now: their ids kept, the memories' current state."""
        entries = ops.pending_outbox(self.memory, target)
        return ops.outbox_batches(self.memory, entries, self.encoding)

    def acknowledge(self, batch_id: uuid.UUID) -> bool:
        """A peer has applied outbox batch ``batch_id``; False if it was not pending."""
        return ops.acknowledge(self.memory, batch_id)

    def conflicts(self, limit: int = 100) -> list[ConflictRecord]:
        """The latest conflicts resolved here, each with its losing version."""
        return ops.conflicts(self.memory, limit)

    def conflict_counts(self) -> dict[ConflictResolution, int]:
        """Conflicts resolved here, by resolution."""
        return ops.conflict_counts(self.memory)

    def checksum(self) -> str:
        """SHA-256 of this node's memories as sync sees them: equal on converged nodes."""
        return ops.state_checksum(self.memory)
