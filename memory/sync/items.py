"""The units hub-spoke sync transfers: ``MemorySyncItem`` (one version of one memory) and
``MemorySyncBatch`` (checksummed items of one tier), their wire forms and the compressed
embeddings they carry.

The definitions live in ``memory.core.sync_items`` because the store applies them in one
transaction and may not import this package; this module is where sync code imports them.
"""

from memory.core.sync_items import (
    ALL_NODES,
    MAX_BATCH_ITEMS,
    MAX_BATCH_RANGES,
    MAX_EMBEDDING_DIMS,
    BatchFlags,
    CompressedEmbedding,
    EmbeddingEncoding,
    MemorySyncBatch,
    MemorySyncItem,
    SyncOperation,
    SyncPriority,
    batch_checksum,
)

__all__ = [
    "ALL_NODES",
    "MAX_BATCH_ITEMS",
    "MAX_BATCH_RANGES",
    "MAX_EMBEDDING_DIMS",
    "BatchFlags",
    "CompressedEmbedding",
    "EmbeddingEncoding",
    "MemorySyncBatch",
    "MemorySyncItem",
    "SyncOperation",
    "SyncPriority",
    "batch_checksum",
]
