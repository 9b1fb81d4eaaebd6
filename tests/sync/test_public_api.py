"""The public names of ``memory.sync.items``, ``memory.sync.clocks`` and
``memory.ops.sync``: exactly these, sorted, each importable. The other sync branch builds
on them, so a rename fails here first."""

from __future__ import annotations

from types import ModuleType

import pytest

import memory.ops.sync
import memory.sync.clocks
import memory.sync.items

EXPECTED = {
    memory.sync.items: [
        "ALL_NODES", "MAX_BATCH_ITEMS", "MAX_BATCH_RANGES", "MAX_EMBEDDING_DIMS", "BatchFlags",
        "CompressedEmbedding", "EmbeddingEncoding", "MemorySyncBatch", "MemorySyncItem",
        "SyncOperation", "SyncPriority", "batch_checksum",
    ],
    memory.sync.clocks: [
        "HLC_LOGICAL_BITS", "HLC_MAX", "MAX_CLOCK_DRIFT_MS", "ChangeRange", "ClockDriftError",
        "ConflictResolution", "HybridLogicalClock", "Resolution", "Stamp", "VersionInfo",
        "VersionVector", "apply_ranges", "compute_delta", "hlc_logical", "hlc_pack",
        "hlc_wall_ms", "resolve",
    ],
    memory.ops.sync: [
        "ApplyReport", "ConflictRecord", "LocalNode", "OutboxEntry", "acknowledge",
        "apply_batch", "changes_since", "conflict_counts", "conflicts", "enable", "local_node",
        "outbox_batches", "pending_outbox", "queue_outbox", "state_checksum",
    ],
}


@pytest.mark.parametrize("module", list(EXPECTED), ids=lambda m: m.__name__)
def test_the_public_names_are_these(module: ModuleType) -> None:
    assert module.__all__ == EXPECTED[module]
    for name in EXPECTED[module]:
        assert getattr(module, name) is not None
    assert issubclass(memory.sync.clocks.ClockDriftError, memory.MemoryStoreError)
