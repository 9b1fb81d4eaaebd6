"""Vector search inside PostgreSQL with pgvector: an HNSW index instead of the in-process one.

Used when the database has the ``vector`` extension (installed already, or installable by
this role: ``prepare`` tries ``CREATE EXTENSION IF NOT EXISTS vector``); without it the
retriever keeps its in-process NumPy index, so vector search works on every PostgreSQL.

Why the pgvector structures are not part of the common schema (no Alembic revision): the
extension may be missing, or appear later, on any database, and the same chain of
revisions has to run everywhere. So ``prepare`` adds them, idempotently, the first time a
process searches a database that has the extension:

- ``memory_embeddings.embedding`` (an undimensioned ``vector`` column), filled by a
  ``BEFORE INSERT OR UPDATE`` trigger that decodes the float32 bytes every writer already
  stores in ``memory_embeddings.vector``. Being a trigger, it covers every path that
  writes vectors (the store, ``reembed``, a restore) inside that path's own transaction;
  rows written before the trigger existed are back-filled by ``prepare``;
- one partial HNSW index (cosine) per embedding model, over ``embedding::vector(N)``: the
  column holds vectors of every model, an index needs one dimension.

The HNSW index only chooses the candidates. Their scores are computed here from the stored
float32 bytes with the same arithmetic as the in-process index, so every backend scores a
candidate identically. HNSW is approximate: ``EF_SEARCH`` candidates are explored per scan
(with pgvector's iterative scan continuing in exact distance order until the user's and
agent's rows fill the limit), so at test sizes (fewer vectors of one model than
``EF_SEARCH``) the search visits every vector and is exact; at scale it trades a little
recall for not holding the vectors in every process.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from memory.core.ranking import Neighbours
from memory.core.types import NO_SESSION
from memory.store.sharing import Readable
from memory.store.tables import Base

logger = logging.getLogger(__name__)

memories = Base.metadata.tables["memories"]
memory_embeddings = Base.metadata.tables["memory_embeddings"]

EF_SEARCH = 400
# Serialises ``prepare`` across processes (an arbitrary constant of this library).
_PREPARE_LOCK = 7_317_001

# IEEE 754 single precision, little endian, decoded exactly (powers of two are exact in
# float8): sign bit, 8 exponent bits, 23 mantissa bits; exponent 0 is a subnormal.
# PostgreSQL gives every operator but a few the same precedence, hence the parentheses.
_DECODE_FUNCTION = """
CREATE OR REPLACE FUNCTION memory_float4_vector(data bytea) RETURNS vector
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
SELECT ARRAY(
    SELECT (CASE WHEN (bits & 2139095040) = 0 THEN (bits & 8388607) * (2::float8 ^ -149)
                 ELSE ((bits & 8388607) + 8388608) * (2::float8 ^ (((bits >> 23) & 255) - 150))
            END) * sign(bits + 0.5)
    FROM (
        SELECT i, (get_byte(data, i) | (get_byte(data, i + 1) << 8)
                   | (get_byte(data, i + 2) << 16) | (get_byte(data, i + 3) << 24)) AS bits
        FROM generate_series(0, length(data) - 4, 4) AS i
    ) AS words
    ORDER BY i
)::real[]::vector
$$
"""
_TRIGGER_FUNCTION = """
CREATE OR REPLACE FUNCTION memory_embeddings_fill_vector() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.embedding := memory_float4_vector(NEW.vector);
    RETURN NEW;
END
$$
"""


def index_name(model: str) -> str:
    """The HNSW index of one model's vectors (model names can be long or odd: hash them)."""
    return "ix_memory_embeddings_hnsw_" + hashlib.sha256(model.encode()).hexdigest()[:12]


def prepare(connection: Connection, model: str, dimension: int) -> bool:
    """Make the database ready for in-database vector search of ``model``; False when the
    ``vector`` extension is missing and this role cannot create it."""
    connection.execute(sa.select(sa.func.pg_advisory_xact_lock(_PREPARE_LOCK)))
    if not _extension_installed(connection):
        available = connection.exec_driver_sql(
            "SELECT 1 FROM pg_available_extensions WHERE name = 'vector'"
        ).scalar()
        if not available:
            return False
        try:
            with connection.begin_nested():
                connection.exec_driver_sql("CREATE EXTENSION IF NOT EXISTS vector")
        except DBAPIError as error:
            logger.info("pgvector is available but cannot be enabled here: %s", error.orig)
            return False
    connection.exec_driver_sql(_DECODE_FUNCTION)
    connection.exec_driver_sql(_TRIGGER_FUNCTION)
    connection.exec_driver_sql(
        "ALTER TABLE memory_embeddings ADD COLUMN IF NOT EXISTS embedding vector"
    )
    connection.exec_driver_sql(
        "CREATE OR REPLACE TRIGGER memory_embeddings_fill_vector "
        "BEFORE INSERT OR UPDATE OF vector ON memory_embeddings "
        "FOR EACH ROW EXECUTE FUNCTION memory_embeddings_fill_vector()"
    )
    connection.exec_driver_sql(
        "UPDATE memory_embeddings SET embedding = memory_float4_vector(vector) "
        "WHERE embedding IS NULL"
    )
    literal = model.replace("'", "''")
    connection.exec_driver_sql(
        f"CREATE INDEX IF NOT EXISTS {index_name(model)} ON memory_embeddings "
        f"USING hnsw ((embedding::vector({int(dimension)})) vector_cosine_ops) "
        f"WHERE model = '{literal}'"
    )
    return True


def _extension_installed(connection: Connection) -> bool:
    found = connection.exec_driver_sql("SELECT 1 FROM pg_extension WHERE extname = 'vector'")
    return found.scalar() is not None


# Built once: bound ids skip the coercion of each id as a literal (a quarter of the call's
# time for the 200 ids a search scores), and the compiled form is cached.
_EXACT_VECTORS = sa.select(memory_embeddings.c.memory_id, memory_embeddings.c.vector).where(
    memory_embeddings.c.memory_id.in_(sa.bindparam("ids", expanding=True)),
    memory_embeddings.c.model == sa.bindparam("model"),
)


def exact_scores(
    connection: Connection, ids: Sequence[int], model: str, query: np.ndarray
) -> dict[int, float]:
    """Cosine similarity of ``query`` with the stored ``model`` vectors of ``ids``."""
    if not ids:
        return {}
    rows = connection.execute(_EXACT_VECTORS, {"ids": list(ids), "model": model}).all()
    return _scored(rows, query)


def _scored(rows: Sequence[Any], query: np.ndarray) -> dict[int, float]:
    if not rows:
        return {}
    matrix = np.frombuffer(b"".join(row[1] for row in rows), dtype=np.float32)
    scores = matrix.reshape(len(rows), -1) @ query
    return {int(row[0]): float(score) for row, score in zip(rows, scores, strict=True)}


class DatabaseVectors:
    """One user's vector candidates, scores and session neighbours, read from PostgreSQL."""

    def __init__(self, user: str, model: str, dimension: int) -> None:
        self.user = user
        self.model = model
        self.dimension = dimension

    def top(
        self,
        connection: Connection,
        reader: Readable,
        query: np.ndarray,
        count: int,
        also: Sequence[int] = (),
    ) -> dict[int, float]:
        """The ``count`` memories the reader may see nearest to ``query`` (HNSW), exactly
        scored; the visibility predicate is part of the scan, not a filter afterwards.
        (``also``, the ids whose scores are asked next, are read when asked: the HNSW scan
        reads no other rows to share a query with.)"""
        connection.exec_driver_sql(f"SET LOCAL hnsw.ef_search = {max(EF_SEARCH, count)}")
        connection.exec_driver_sql("SET LOCAL hnsw.iterative_scan = strict_order")
        dimension = int(self.dimension)
        distance = sa.text(
            f"memory_embeddings.embedding::vector({dimension}) "
            f"<=> CAST(:query AS vector({dimension}))"
        ).bindparams(query="[" + ",".join(repr(x) for x in query.tolist()) + "]")
        rows = connection.execute(
            sa.select(memory_embeddings.c.memory_id, memory_embeddings.c.vector)
            .join(memories, memories.c.id == memory_embeddings.c.memory_id)
            .where(
                memory_embeddings.c.model == self.model,
                memories.c.user_id == self.user,
                reader.candidates,
            )
            .order_by(distance)
            .limit(count)
        ).all()
        return _scored(rows, query)

    def scores(
        self, connection: Connection, ids: Sequence[int], query: np.ndarray
    ) -> dict[int, float]:
        """Exact scores of the memories among ``ids`` that have a vector of this model."""
        return exact_scores(connection, ids, self.model, query)

    def neighbours(self, connection: Connection, ids: Sequence[int]) -> dict[int, Neighbours]:
        """For each id, the memories with a vector of this model stored just before and
        just after it in its session (the in-process index's ``SessionOrder``, in SQL)."""
        if not ids:
            return {}
        source = memories.alias("source")
        other = memories.alias("other")

        def nearest(before: bool) -> sa.ScalarSelect[Any]:
            return (
                sa.select(sa.func.max(other.c.id) if before else sa.func.min(other.c.id))
                .select_from(
                    other.join(memory_embeddings, memory_embeddings.c.memory_id == other.c.id)
                )
                .where(
                    other.c.user_id == source.c.user_id,
                    other.c.agent_id == source.c.agent_id,
                    other.c.session_id == source.c.session_id,
                    other.c.id < source.c.id if before else other.c.id > source.c.id,
                    memory_embeddings.c.model == self.model,
                )
                .scalar_subquery()
            )

        indexed = (
            sa.select(memory_embeddings.c.memory_id)
            .where(
                memory_embeddings.c.memory_id == source.c.id,
                memory_embeddings.c.model == self.model,
            )
            .exists()
        )
        rows = connection.execute(
            sa.select(source.c.id, nearest(True), nearest(False)).where(
                source.c.id.in_(list(ids)),
                source.c.user_id == self.user,
                source.c.session_id != NO_SESSION,
                indexed,
            )
        ).all()
        found: dict[int, Neighbours] = {int(row[0]): (row[1], row[2]) for row in rows}
        return {memory_id: found.get(memory_id, (None, None)) for memory_id in ids}
