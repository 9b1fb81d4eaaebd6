"""Hybrid retrieval: keyword plus vector search, fused.

How a search runs, for one user:

1. Keyword candidates: where the process holds the user's index (below), from the term
   postings it keeps beside the vectors (``memory.search.postings``: BM25 over every match in
   NumPy); elsewhere from the database's full-text index, FTS5 on SQLite or a GIN-indexed
   ``tsvector`` on PostgreSQL (``memory.search.keywords``). All of them index the terms
   ``memory.core.text`` produced and score BM25 from the stored terms with exact per-user
   statistics, so a memory's keyword score is the same number on every path.
2. Vector candidates come from an in-process NumPy index of the user's embeddings
   (``memory.search.vectors``: sign bits and int8 codes narrow them down, and the few best are
   scored with their float32 vectors read from the database, in one query with the
   keyword candidates'), loaded on first use and kept current by reading
   ``memory_changes`` past the last sequence seen when the user's data version has moved
   (which is how other processes' writes show up). On PostgreSQL with pgvector they come
   from an HNSW index in the database instead (``memory.search.pgvector``), and no process
   holds the vectors or the terms. Either way a candidate's score is the cosine with its
   stored float32 vector, so the backends agree.
3. The memories stored just before and after the best candidates in their sessions join
   the pool (from the in-process index: no extra query), and everything is scored in
   ``memory.core.ranking``: weighted, normalised keyword and vector scores, plus a share of the
   session neighbours' scores, names and metadata the query mentions, and small priors.
   What ranking reads is read with every filter applied in SQL, so nothing outside the
   caller's scope or already expired is ever returned, and the returned hits' records in
   the same transaction.

If the embedder fails, step 2 is skipped, the search is answered from keywords, and the
degradation is counted.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from memory.core.errors import InvalidInputError, MemoryStoreError
from memory.core.inputs import SearchQuery
from memory.core.ranking import Facts, FusionWeights, Neighbours, rank, relevance
from memory.core.text import terms
from memory.core.types import Owner, SearchHit
from memory.search import pgvector as pgvector
from memory.search.embeddings import Embedder, Matrix
from memory.search.keywords import DatabaseKeywords, KeywordIndex
from memory.search.postings import KeywordScores, UserTerms
from memory.search.snapshots import SAVE_AFTER_CHANGES, Snapshots
from memory.search.vectors import ProcessVectors, UserVectors
from memory.store.db import Database
from memory.store.memories import Store, has_metadata, unexpired
from memory.store.sharing import Readable, ReaderCache, id_among
from memory.store.tables import Base, utcnow
from memory.telemetry import instruments as telemetry

logger = logging.getLogger(__name__)

memories = Base.metadata.tables["memories"]
memory_embeddings = Base.metadata.tables["memory_embeddings"]
memory_terms = Base.metadata.tables["memory_terms"]
memory_changes = Base.metadata.tables["memory_changes"]

# The best KEYWORD_KEPT keyword matches and VECTOR_CANDIDATES nearest vectors (or twice the
# limit asked for, if more) make the pool that is ranked. Forty of each ranked as well as a
# hundred of each on the LoCoMo development subset (recall@10 0.763 either way), and every
# candidate costs a vector and a row read.
KEYWORD_KEPT = 40
VECTOR_CANDIDATES = 40
# The best candidates (by keyword and vector evidence; at least the limit asked for) whose
# session neighbours join the pool: context can lift a neighbour of a strong match that
# neither list found.
NEIGHBOUR_SOURCES = 20

# Built once: every search and inject runs it, and building took longer than running it.
_DATA_VERSION = sa.select(sa.func.max(memory_changes.c.seq)).where(
    memory_changes.c.user_id == sa.bindparam("version_user", type_=memory_changes.c.user_id.type)
)

_QUERY_EMBEDDING_CACHE = {"cache": "query_embedding"}
_DEGRADED = {"search": {"operation": "search"}, "write": {"operation": "write"}}


@dataclass(frozen=True, slots=True)
class RetrievalStats:
    """Retrieval counts of this process, read from the metrics (``memory.telemetry.instruments``),
    which are the one place they are counted. Zero while metrics are disabled."""

    searches: int
    degraded_searches: int
    query_cache_hits: int
    query_cache_misses: int

    @classmethod
    def read(cls) -> RetrievalStats:
        """The counts so far."""
        now = telemetry.totals()
        durations = now.histogram(telemetry.RAG_SEARCH_DURATION)
        return cls(
            searches=durations.count if durations is not None else 0,
            degraded_searches=int(now.counter(telemetry.DEGRADED_SEARCHES)),
            query_cache_hits=int(now.counter(telemetry.CACHE_HITS, cache="query_embedding")),
            query_cache_misses=int(now.counter(telemetry.CACHE_MISSES, cache="query_embedding")),
        )


INDEX_BUDGET_ENV = "MEMORY_INDEX_BUDGET_MB"
DEFAULT_INDEX_BUDGET_MB = 1024


def index_budget(environ: Mapping[str, str]) -> int:
    """The in-process index budget in bytes: ``$MEMORY_INDEX_BUDGET_MB`` (a positive whole
    number of megabytes), else ``DEFAULT_INDEX_BUDGET_MB``."""
    raw = environ.get(INDEX_BUDGET_ENV, "").strip()
    if not raw:
        return DEFAULT_INDEX_BUDGET_MB * 2**20
    if not raw.isascii() or not raw.isdigit() or int(raw) < 1:
        raise InvalidInputError(
            f"{INDEX_BUDGET_ENV}: must be a positive whole number of megabytes, not {raw!r}"
        )
    return int(raw) * 2**20


class Retriever:
    """Hybrid search over one database, for every user this process asks about."""

    def __init__(
        self,
        db: Database,
        store: Store,
        embedder: Embedder | None,
        weights: FusionWeights | None = None,
        query_cache_size: int = 1024,
        index_budget: int | None = None,
        snapshots: Snapshots | None = None,
    ) -> None:
        self._db = db
        self._store = store
        self.embedder = embedder
        self.weights = weights or FusionWeights()
        self._hybrid = {"backend": db.dialect, "mode": "hybrid"}
        self._keyword = {"backend": db.dialect, "mode": "keyword"}
        for counter, attributes in (
            ("degraded_searches", _DEGRADED["search"]),
            ("degraded_searches", _DEGRADED["write"]),
            ("cache_hits", _QUERY_EMBEDDING_CACHE),
            ("cache_misses", _QUERY_EMBEDDING_CACHE),
        ):
            telemetry.declare_series(counter, attributes)
        # Per-user indexes in least-recently-used order, with the bytes each holds: past
        # ``index_budget`` bytes in all, the least recently used users' indexes are dropped
        # (they load again from the database on their next search).
        self._users: OrderedDict[str, UserVectors] = OrderedDict()
        self._terms: dict[str, UserTerms] = {}
        self._held: dict[str, int] = {}
        # Changes each held index applied since its snapshot was written or read.
        self._unsaved: dict[str, int] = {}
        self._snapshots = snapshots
        self._index_budget = index_budget
        self._users_lock = threading.Lock()
        telemetry.observe_index(self)
        self._query_vectors: OrderedDict[str, np.ndarray] = OrderedDict()
        self._query_cache_size = query_cache_size
        self._cache_lock = threading.Lock()
        self._warned = False
        # Whether vector search runs in the database (pgvector), decided on first use.
        self._in_database: bool | None = None
        self._readers = ReaderCache()
        self._keywords = KeywordIndex(db.dialect)

    # -- embeddings ---------------------------------------------------------------------------

    def embed_contents(self, contents: Sequence[str]) -> tuple[str, dict[str, np.ndarray]] | None:
        """Embed texts for a write; None (and a logged warning) when the embedder fails."""
        if self.embedder is None or not contents:
            return None
        unique = list(dict.fromkeys(contents))
        try:
            matrix = self.embedder.embed(unique)
        except Exception:  # the write must not fail because of the model
            self._degraded("write", "embedding for a write")
            return None
        return self.embedder.model_name, dict(zip(unique, matrix, strict=True))

    def _query_vector(self, query: str) -> np.ndarray | None:
        if self.embedder is None:
            self._degraded("search", "search (no embedder configured)")
            return None
        with self._cache_lock:
            cached = self._query_vectors.get(query)
            if cached is not None:
                self._query_vectors.move_to_end(query)
        if cached is not None:
            telemetry.instruments().cache_hits.add(1, _QUERY_EMBEDDING_CACHE)
            return cached
        telemetry.instruments().cache_misses.add(1, _QUERY_EMBEDDING_CACHE)
        try:
            vector: Matrix = self.embedder.embed([query])
        except Exception:
            self._degraded("search", "search")
            return None
        row: np.ndarray = vector[0]
        with self._cache_lock:
            self._query_vectors[query] = row
            while len(self._query_vectors) > self._query_cache_size:
                self._query_vectors.popitem(last=False)
        return row

    def _degraded(self, operation: Literal["search", "write"], what: str) -> None:
        telemetry.instruments().degraded_searches.add(1, _DEGRADED[operation])
        if not self._warned:
            self._warned = True
            # The traceback of the embedder's failure, when there is one (with no embedder
            # configured there is none to show).
            logger.warning(
                "embedder unavailable during %s; answering from keywords",
                what,
                exc_info=sys.exc_info()[0] is not None,
            )

    # -- the vector index ---------------------------------------------------------------------

    def _uses_database_index(self) -> bool:
        """True on PostgreSQL with pgvector (prepared on first use), else False."""
        if self._in_database is None:
            embedder = self.embedder
            if self._db.dialect != "postgresql" or embedder is None:
                self._in_database = False
            else:
                self._in_database = self._db.write(
                    lambda connection: pgvector.prepare(
                        connection, embedder.model_name, embedder.dimension
                    )
                )
        return self._in_database

    def _index(
        self, connection: Connection, user: str, version: int
    ) -> tuple[UserVectors, UserTerms] | None:
        """The user's in-process index, vectors and terms, loaded on first use and caught
        up with every change up to ``version`` (``data_version``)."""
        if self.embedder is None:
            return None
        with self._users_lock:
            index = self._users.get(user)
            # No change logged but some read: the user was forgotten (by another process,
            # or this one would have dropped the index), so what is held goes too.
            forgotten = index is not None and version == 0 and index.last_seq > 0
            if index is None or forgotten:
                index = self._users[user] = UserVectors(self.embedder.dimension)
                self._terms[user] = UserTerms(index.lock)
                self._unsaved[user] = 0
            self._users.move_to_end(user)
            postings = self._terms[user]
        if forgotten and self._snapshots is not None:
            self._snapshots.delete(user)
        with index.lock:
            loaded = (
                index.last_seq == 0
                and version > 0
                and self._snapshots is not None
                and self._snapshots.load(
                    connection, user, version, self.embedder.model_name, index, postings
                )
            )
            applied = 0
            if index.last_seq < version:
                applied = self._catch_up(connection, user, index, postings)
                with self._users_lock:
                    unsaved = self._unsaved.get(user, 0) + applied
                    if self._users.get(user) is index:
                        self._unsaved[user] = unsaved
                if unsaved >= SAVE_AFTER_CHANGES:
                    self._save(connection, user, index, postings)
            held = index.nbytes() + postings.nbytes() if loaded or applied else -1
        if held >= 0:
            self._account(user, index, held)
        return index, postings

    def _save(
        self, connection: Connection, user: str, index: UserVectors, postings: UserTerms
    ) -> bool:
        """Write ``user``'s snapshot (the caller holds ``index.lock``) if ``index`` is still
        the one held: a forgotten user's is never written again (``forget`` drops the index,
        then waits for its lock before it deletes the file)."""
        if self._snapshots is None or self.embedder is None:
            return False
        with self._users_lock:
            if self._users.get(user) is not index:
                return False
        model = self.embedder.model_name
        if not self._snapshots.save(connection, user, model, index, postings):
            return False
        with self._users_lock:
            if self._users.get(user) is index:
                self._unsaved[user] = 0
        return True

    def save_snapshots(self) -> int:
        """Write the snapshot of every held index changed since its last one (on close);
        how many were written."""
        if self._snapshots is None:
            return 0
        with self._users_lock:
            changed = [
                (user, self._users[user], self._terms[user])
                for user, unsaved in self._unsaved.items()
                if unsaved
            ]
        written = 0

        def save(connection: Connection) -> None:
            nonlocal written
            for user, index, postings in changed:
                with index.lock:
                    written += self._save(connection, user, index, postings)

        try:
            self._db.read(save)
        except MemoryStoreError as error:  # closing goes on; the next process catches up
            logger.warning("index snapshots not written: %s", error)
        return written

    def _account(self, user: str, index: UserVectors, held: int) -> None:
        """Record what ``user``'s index holds, and drop the least recently used other
        users' indexes while all of them hold more than the budget."""
        with self._users_lock:
            if self._users.get(user) is not index:
                return  # forgotten or replaced meanwhile
            self._held[user] = held
            if self._index_budget is None:
                return
            total = sum(self._held.values())
            while total > self._index_budget and len(self._users) > 1:
                oldest = next(iter(self._users))
                if oldest == user:
                    break
                # Its changes since the last snapshot are read again from the change log.
                self._users.pop(oldest)
                self._terms.pop(oldest, None)
                self._unsaved.pop(oldest, None)
                total -= self._held.pop(oldest, 0)

    def held_bytes(self) -> int:
        """Bytes the per-user indexes held at their last change (``index_bytes`` counts
        them now); the ``memory.index.held_bytes`` gauge."""
        with self._users_lock:
            return sum(self._held.values())

    def _catch_up(
        self, connection: Connection, user: str, index: UserVectors, postings: UserTerms
    ) -> int:
        """Apply the user's changes past ``index.last_seq``; how many there were."""
        assert self.embedder is not None
        changed = connection.execute(
            sa.select(memory_changes.c.seq, memory_changes.c.memory_id)
            .where(memory_changes.c.user_id == user, memory_changes.c.seq > index.last_seq)
            .order_by(memory_changes.c.seq)
        ).all()
        if not changed:
            return 0
        # In id order, so that a first load files each session's ids by appending.
        ids = sorted({row.memory_id for row in changed})
        index.reserve(int((index.positions(np.array(ids, dtype=np.int64)) < 0).sum()))
        # Every memory has terms; one whose embedding is missing (written while the
        # embedder failed) or of another model is found by keywords only.
        embedded = sa.and_(
            memory_embeddings.c.memory_id == memories.c.id,
            memory_embeddings.c.model == self.embedder.model_name,
        )
        for start in range(0, len(ids), 5000):
            batch = ids[start : start + 5000]
            rows = connection.execute(
                sa.select(
                    memories.c.id,
                    memories.c.agent_id,
                    memories.c.session_id,
                    memories.c.tier,
                    memory_terms.c.terms,
                    memory_embeddings.c.vector,
                )
                .join(memory_terms, memory_terms.c.memory_id == memories.c.id)
                .outerjoin(memory_embeddings, embedded)
                .where(memories.c.id.in_(batch))
                .order_by(memories.c.id)
            ).all()
            found = {row.id for row in rows}
            gone = [memory_id for memory_id in batch if memory_id not in found]
            postings.remove_many(gone)
            postings.upsert_many(
                [row.id for row in rows],
                [row.agent_id for row in rows],
                [row.tier for row in rows],
                [row.terms for row in rows],
            )
            vectors = [row for row in rows if row.vector is not None]
            for memory_id in [*gone, *(row.id for row in rows if row.vector is None)]:
                index.remove(memory_id)
            if vectors:
                matrix = np.frombuffer(b"".join(row.vector for row in vectors), dtype=np.float32)
                index.upsert_many(
                    [row.id for row in vectors],
                    [row.agent_id for row in vectors],
                    [row.session_id for row in vectors],
                    [row.tier for row in vectors],
                    matrix.reshape(len(vectors), -1),
                )
        index.last_seq = changed[-1].seq
        return len(changed)

    def forget(self, user: str | None) -> None:
        """Drop everything this process holds about ``user`` (after ``forget_user``; None:
        about everyone, when another process forgot a user it does not name).

        Cached query vectors go too: a query text can quote what the user said. The user's
        snapshot is deleted; with None, every snapshot that no longer matches the change
        log (``Snapshots.sweep``).
        """
        with self._users_lock:
            dropped = [
                self._users.pop(name, None)
                for name in (list(self._users) if user is None else [user])
            ]
            for name in list(self._terms) if user is None else [user]:
                self._terms.pop(name, None)
                self._held.pop(name, None)
                self._unsaved.pop(name, None)
        if self._snapshots is not None and user is not None:
            index = dropped[0]
            with index.lock if index is not None else nullcontext():  # a save in flight
                self._snapshots.delete(user)
        elif self._snapshots is not None:
            try:
                self._db.read(self._snapshots.sweep)
            except MemoryStoreError as error:  # a later load checks each file all the same
                logger.warning("index snapshots not swept: %s", error)
        with self._cache_lock:
            self._query_vectors.clear()
        self._readers.forget(user)
        self._keywords.forget(user)

    def data_version(self, connection: Connection, user: str) -> int:
        """The user's latest change sequence number: any write to their memories bumps it."""
        value = connection.execute(_DATA_VERSION, {"version_user": user}).scalar()
        return int(value or 0)

    def index_bytes(self) -> int:
        """Memory held by the in-process index (vectors and terms of every user loaded)."""
        with self._users_lock:
            vectors, postings = list(self._users.values()), list(self._terms.values())
        return sum(index.nbytes() for index in vectors) + sum(p.nbytes() for p in postings)

    # -- keyword search -----------------------------------------------------------------------

    def _keyword_source(
        self,
        connection: Connection,
        user: str,
        version: int,
        wanted: list[str],
        postings: UserTerms | None,
    ) -> KeywordScores | DatabaseKeywords:
        """This search's keyword matches: from the process's postings where it holds the
        user's index, else from the database's full-text index."""
        k1, b = self.weights.bm25_k1, self.weights.bm25_b
        if postings is not None:
            with postings.lock:
                return postings.scores(wanted, k1, b)
        statistics = self._keywords.statistics(connection, user, version, wanted)
        return DatabaseKeywords(self._keywords, connection, user, wanted, statistics, k1, b)

    # -- search -------------------------------------------------------------------------------

    def search(self, owner: Owner, query: SearchQuery) -> list[SearchHit]:
        """The ``query.limit`` best memories of this user and agent for ``query.text``."""
        started = time.perf_counter()
        wanted = list(dict.fromkeys(terms(query.text)))
        vector = self._query_vector(query.text)
        self._uses_database_index()
        hits = self._db.read(
            lambda connection: self._search(connection, owner, wanted, vector, query)
        )
        telemetry.instruments().rag_search_duration.record(
            telemetry.elapsed_ms(started), self._keyword if vector is None else self._hybrid
        )
        return hits

    def _search(
        self,
        connection: Connection,
        owner: Owner,
        wanted: list[str],
        vector: np.ndarray | None,
        query: SearchQuery,
    ) -> list[SearchHit]:
        # Keys the cached BM25 statistics, and the reader's grants when sharing is on.
        version = self.data_version(connection, owner.user)
        reader = self._readers.readable(connection, owner, version)
        held = None if self._in_database else self._index(connection, owner.user, version)
        source: ProcessVectors | pgvector.DatabaseVectors | None = None
        if vector is not None and self.embedder is not None:
            model = self.embedder.model_name
            if held is not None:
                source = ProcessVectors(held[0], model)
            elif self._in_database:
                source = pgvector.DatabaseVectors(owner.user, model, self.embedder.dimension)
        keywords = self._keyword_source(
            connection, owner.user, version, wanted, None if held is None else held[1]
        )
        keyword_ids = keywords.best(reader, max(KEYWORD_KEPT, 2 * query.limit))
        vector_scores: dict[int, float] = {}
        if source is not None and vector is not None:
            vector_scores = source.top(
                connection,
                reader,
                vector,
                max(VECTOR_CANDIDATES, 2 * query.limit),
                also=keyword_ids,
            )
        if not keyword_ids and not vector_scores:
            return []
        candidates = list(dict.fromkeys([*keyword_ids, *vector_scores]))
        keyword_scores = keywords.of(candidates)
        adjacent: dict[int, Neighbours] = {}
        pool = candidates
        if source is not None and vector is not None:
            unscored = [i for i in keyword_ids if i not in vector_scores]
            vector_scores.update(source.scores(connection, unscored, vector))
            evidence = relevance(
                candidates,
                keyword_scores,
                vector_scores,
                max(keyword_scores.values(), default=0.0),
                self.weights,
            )
            sources = sorted(candidates, key=lambda i: (-evidence[i], -i))
            sources = sources[: max(NEIGHBOUR_SOURCES, query.limit)]
            adjacent = source.neighbours(connection, candidates)
            known = set(candidates)
            added: list[int] = []
            for memory_id in sources:
                for neighbour in adjacent[memory_id]:
                    if neighbour is not None and neighbour not in known:
                        known.add(neighbour)
                        added.append(neighbour)
            # Session neighbours are another agent's memories as often as not: only those
            # the reader may see join the pool (and lend their scores to the ranking).
            added = keywords.visible(reader, added)
            vector_scores.update(source.scores(connection, added, vector))
            adjacent.update(source.neighbours(connection, added))
            pool = [*candidates, *added]
            if added:
                keyword_scores.update(keywords.of(added))
        facts = self._filtered(connection, reader, pool, query)
        # One flat tier (USE_HIERARCHICAL_TIERS off): no tier earns a bonus.
        weights = self.weights if owner.tiered else replace(self.weights, tier={})
        ranked = rank(facts, keyword_scores, vector_scores, adjacent, query.text, wanted, weights)
        ranked = ranked[: query.limit]
        # Whole records only for what is returned, read in the transaction that filtered.
        records = {
            record.id: record
            for record in self._store.select_memories(
                connection, memories.c.id.in_([hit.memory_id for hit in ranked])
            )
        }
        return [
            SearchHit(records[hit.memory_id], hit.score, hit.keyword_score, hit.vector_score)
            for hit in ranked
        ]

    def _filtered(
        self, connection: Connection, reader: Readable, candidates: list[int], query: SearchQuery
    ) -> dict[int, Facts]:
        """What ranking reads of the candidates that pass every filter of the query."""
        conditions = [
            id_among(connection.dialect.name, "pool_ids", candidates),
            reader.predicate,
            unexpired(utcnow()),
        ]
        if query.tiers:
            conditions.append(memories.c.tier.in_(query.tiers))
        if query.session is not None:
            conditions.append(memories.c.session_id == query.session)
        if query.created_after is not None:
            conditions.append(memories.c.created_at >= query.created_after)
        if query.created_before is not None:
            conditions.append(memories.c.created_at < query.created_before)
        conditions.extend(has_metadata(key, value) for key, value in query.metadata.items())
        rows = connection.execute(
            sa.select(
                memories.c.id, memories.c.content, memories.c.importance, memories.c.tier
            ).where(*conditions)
        ).all()
        metadata = self._store.metadata_of(connection, [row.id for row in rows])
        return {
            row.id: Facts(row.content, row.importance, row.tier, metadata[row.id]) for row in rows
        }
