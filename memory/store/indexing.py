"""Writing the retrieval index: keyword terms, embeddings and the change log.

The store calls these inside the same transaction as the memory write itself, so the
keyword index, the vectors and the change log can never disagree with the memories.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from memory.core.text import terms
from memory.store.tables import Base

memories = Base.metadata.tables["memories"]
memory_terms = Base.metadata.tables["memory_terms"]
memory_embeddings = Base.metadata.tables["memory_embeddings"]
memory_changes = Base.metadata.tables["memory_changes"]

_BACKFILL_BATCH = 1000


@dataclass(frozen=True, slots=True)
class IndexEntry:
    """What the index needs of one memory: its id, owner, text and (maybe) vector."""

    memory_id: int
    user_id: str
    content: str
    vector: np.ndarray | None = None


def terms_row(memory_id: int, user_id: str, content: str) -> dict[str, object]:
    """The ``memory_terms`` row for a memory's content."""
    found = terms(content)
    return {
        "memory_id": memory_id,
        "user_id": user_id,
        "terms": " ".join(found),
        "term_count": len(found),
    }


def write_index(connection: Connection, entries: Sequence[IndexEntry], model: str | None) -> None:
    """Insert terms and embeddings for new memories and log the change."""
    if not entries:
        return
    connection.execute(
        memory_terms.insert(), [terms_row(e.memory_id, e.user_id, e.content) for e in entries]
    )
    vectors = [
        {
            "memory_id": e.memory_id,
            "model": model,
            "dimension": int(e.vector.shape[0]),
            "vector": e.vector.astype(np.float32).tobytes(),
        }
        for e in entries
        if e.vector is not None
    ]
    if vectors:
        connection.execute(memory_embeddings.insert(), vectors)
    log_changes(connection, [(e.user_id, e.memory_id) for e in entries])


def replace_index(connection: Connection, entry: IndexEntry, model: str | None) -> None:
    """Re-index a memory whose content changed."""
    connection.execute(sa.delete(memory_terms).where(memory_terms.c.memory_id == entry.memory_id))
    connection.execute(
        sa.delete(memory_embeddings).where(memory_embeddings.c.memory_id == entry.memory_id)
    )
    write_index(connection, [entry], model)


def log_changes(connection: Connection, changes: Iterable[tuple[str, int]]) -> None:
    """Record that these (user, memory) pairs changed, for other processes' indexes."""
    rows = [{"user_id": user_id, "memory_id": memory_id} for user_id, memory_id in changes]
    if rows:
        connection.execute(memory_changes.insert(), rows)


def rebuild_missing_terms(connection: Connection) -> int:
    """Derive keyword terms (and log a change) for every memory that has none.

    Terms and the change log are derived data: a downgrade drops them without archiving,
    and this rebuilds them, when migration 0005 runs on existing memories and after
    ``restore_archive`` has put memories back. Returns how many memories it indexed.
    """
    done = 0
    last = 0
    missing = ~sa.exists().where(memory_terms.c.memory_id == memories.c.id)
    while True:
        rows = connection.execute(
            sa.select(memories.c.id, memories.c.user_id, memories.c.content)
            .where(memories.c.id > last, missing)
            .order_by(memories.c.id)
            .limit(_BACKFILL_BATCH)
        ).all()
        if not rows:
            return done
        connection.execute(
            memory_terms.insert(), [terms_row(row.id, row.user_id, row.content) for row in rows]
        )
        log_changes(connection, [(row.user_id, row.id) for row in rows])
        done += len(rows)
        last = rows[-1].id
