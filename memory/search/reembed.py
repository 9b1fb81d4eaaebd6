"""Re-embedding: give every memory a vector from the current model, in batches.

Opening a store whose vectors came from another model does not fail: search compares the
query only with vectors of the current model (the rest answer through keywords) until
``memctl reembed`` has refreshed them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from memory.search.embeddings import Embedder
from memory.store.db import Database
from memory.store.indexing import log_changes
from memory.store.tables import Base

memories = Base.metadata.tables["memories"]
memory_embeddings = Base.metadata.tables["memory_embeddings"]


def _stale(model: str) -> sa.ColumnElement[bool]:
    current = (
        sa.select(memory_embeddings.c.memory_id)
        .where(memory_embeddings.c.memory_id == memories.c.id, memory_embeddings.c.model == model)
        .exists()
    )
    return ~current


def stale_count(db: Database, embedder: Embedder | None) -> int:
    """How many memories have no vector from ``embedder``'s model."""
    if embedder is None:
        return 0
    return db.read(
        lambda connection: int(
            connection.execute(
                sa.select(sa.func.count()).select_from(memories).where(_stale(embedder.model_name))
            ).scalar_one()
        )
    )


def _next_batch(db: Database, model: str, after: int, size: int) -> list[Any]:
    statement = (
        sa.select(memories.c.id, memories.c.user_id, memories.c.content)
        .where(memories.c.id > after, _stale(model))
        .order_by(memories.c.id)
        .limit(size)
    )
    return list(db.read(lambda connection: connection.execute(statement).all()))


def _store_batch(db: Database, embedder: Embedder, rows: list[Any], vectors: np.ndarray) -> None:
    def operation(connection: Connection) -> None:
        ids = [row.id for row in rows]
        # A memory deleted or rewritten since the batch was read keeps what it has now.
        current = {
            row.id: row.content
            for row in connection.execute(
                sa.select(memories.c.id, memories.c.content).where(memories.c.id.in_(ids))
            )
        }
        fresh = [
            (row, vector)
            for row, vector in zip(rows, vectors, strict=True)
            if current.get(row.id) == row.content
        ]
        if not fresh:
            return
        connection.execute(
            sa.delete(memory_embeddings).where(
                memory_embeddings.c.memory_id.in_([row.id for row, _ in fresh])
            )
        )
        connection.execute(
            memory_embeddings.insert(),
            [
                {
                    "memory_id": row.id,
                    "model": embedder.model_name,
                    "dimension": embedder.dimension,
                    "vector": vector.astype(np.float32).tobytes(),
                }
                for row, vector in fresh
            ],
        )
        log_changes(connection, [(row.user_id, row.id) for row, _ in fresh])

    db.write(operation)


def reembed(
    db: Database,
    embedder: Embedder,
    batch_size: int = 256,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Embed stale memories batch by batch (each batch one transaction); returns the count."""
    done = 0
    last_id = 0
    while rows := _next_batch(db, embedder.model_name, last_id, batch_size):
        _store_batch(db, embedder, rows, embedder.embed([row.content for row in rows]))
        done += len(rows)
        last_id = rows[-1].id
        if progress is not None:
            progress(len(rows))
    return done
