"""Keyword search in the database: full-text candidates, and the per-user statistics that
BM25 needs, for a process that holds no index of the user (no embedder; PostgreSQL with
pgvector). A process that holds one answers from its own postings (``memory.search.postings``).

Both are the SQL side of such a search, and at scale they are most of its cost, so this
module keeps them cheap:

- **Statistics are cached by data version.** BM25 needs the user's document count, their
  average length and each query term's document frequency. Counting them is a scan of the
  user's ``memory_terms`` plus one full-text count per term (tens of milliseconds at 100k
  memories); they only change when the user's memories do, so they are kept per user,
  keyed by ``Retriever.data_version`` (which every write of a memory, its terms or its
  deletion bumps), and a term is counted once per version. The numbers are exact: a
  cached value is the count at that version, never an estimate.
- **Visibility is tested once per candidate, not once per match.** The full-text query
  ranks the user's matches with no join (the database's own ranking, FTS5 ``bm25`` or
  ``ts_rank``, only preselects: the BM25 that orders candidates is computed in
  ``memory.search.retriever`` from the stored terms), and the reader's visibility condition is
  then applied to the best ``RANKED_MATCHES`` ids in one query. When those leave too few
  visible candidates while more matches exist (a reader that sees a small share of the
  user's memories), the query runs again with the condition inside it, as it always did.
  A reader known to see less than that share (its own memories and granted ids, counted
  once per data version) goes to the restricted query at once. Either way a row the
  reader may not see never becomes a candidate, and never takes a visible row's place:
  the visible rows among the best N matches are the best visible rows.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from memory.core.ranking import remembered
from memory.store.sharing import Readable, id_among
from memory.store.tables import Base

memories = Base.metadata.tables["memories"]
memory_terms = Base.metadata.tables["memory_terms"]

# The database's full-text ranking differs between backends (FTS5 bm25, ts_rank), so it only
# preselects a wide set of matches; the best of them by the BM25 computed from the stored
# terms become candidates. Both backends agree whenever a query matches fewer than
# RANKED_MATCHES of the user's memories, and nearly always beyond.
KEYWORD_CANDIDATES = 400
# How many of the user's best matches are ranked before visibility is tested, and how many
# visible ones among them are enough (fewer, while more matches exist: the query runs
# again with visibility inside it). A reader that owns a quarter of the user's memories
# keeps ~250 of 1,000, more than twice the 100 that ranking keeps.
RANKED_MATCHES = 1000
ENOUGH_VISIBLE = 200
# Bounds of the statistics cache: users, and terms counted per user and version.
CACHED_USERS = 256
CACHED_TERMS = 4096


@dataclass(frozen=True, slots=True)
class CorpusStatistics:
    """What BM25 needs of one user's memories: how many, their average length in terms,
    and how many contain each query term."""

    documents: int
    average: float
    frequencies: dict[str, int]
    version: int = 0


@dataclass(slots=True)
class _UserStatistics:
    version: int
    documents: int
    average: float
    frequencies: dict[str, int] = field(default_factory=dict)
    # Memories per agent, for the share of the user's memories a reader owns.
    owned: dict[str, int] = field(default_factory=dict)


class KeywordIndex:
    """Full-text candidates and BM25 statistics over one database (see the module doc)."""

    def __init__(self, dialect: str) -> None:
        self._dialect = dialect
        self._users: OrderedDict[str, _UserStatistics] = OrderedDict()
        self._lock = threading.Lock()

    # -- statistics ---------------------------------------------------------------------------

    def statistics(
        self, connection: Connection, user: str, version: int, wanted: Sequence[str]
    ) -> CorpusStatistics:
        """The statistics of ``user``'s memories at ``version`` for the terms ``wanted``."""
        with self._lock:
            entry = self._users.get(user)
            if entry is not None and entry.version == version:
                self._users.move_to_end(user)
                known = {t: entry.frequencies[t] for t in wanted if t in entry.frequencies}
            else:
                entry, known = None, {}
        if entry is None:
            documents, average = self._totals(connection, user)
            entry = _UserStatistics(version, documents, average)
        missing = [term for term in wanted if term not in known]
        counted = self._frequencies(connection, user, missing) if missing else {}
        with self._lock:
            current = self._users.get(user)
            # A newer version replaces an older one; an older one never a newer.
            if current is None or current.version < version:
                self._users[user] = current = entry
            if current.version == version:
                if len(current.frequencies) + len(counted) > CACHED_TERMS:
                    current.frequencies.clear()
                current.frequencies.update(counted)
                self._users.move_to_end(user)
            while len(self._users) > CACHED_USERS:
                self._users.popitem(last=False)
        frequencies = {term: known.get(term, counted.get(term, 0)) for term in wanted}
        return CorpusStatistics(entry.documents, entry.average, frequencies, version)

    def forget(self, user: str | None) -> None:
        """Drop what is cached about ``user`` (None: about everyone)."""
        with self._lock:
            if user is None:
                self._users.clear()
            else:
                self._users.pop(user, None)

    def _totals(self, connection: Connection, user: str) -> tuple[int, float]:
        row = connection.execute(
            sa.select(sa.func.count(), sa.func.avg(memory_terms.c.term_count)).where(
                memory_terms.c.user_id == user
            )
        ).one()
        return int(row[0]), float(row[1] or 0.0)

    def _frequencies(
        self, connection: Connection, user: str, wanted: Sequence[str]
    ) -> dict[str, int]:
        found = {}
        for term in wanted:
            if self._dialect == "sqlite":
                count = connection.exec_driver_sql(
                    "SELECT COUNT(*) FROM memory_fts WHERE memory_fts MATCH ?",
                    (f"owner:{_owner_token(user)} AND {quote(term)}",),
                ).scalar()
            else:
                count = connection.execute(
                    sa.text(
                        "SELECT COUNT(*) FROM memory_terms WHERE user_id = :user AND "
                        "to_tsvector('simple', terms) @@ to_tsquery('simple', :term)"
                    ),
                    {"user": user, "term": quote(term, "'")},
                ).scalar()
            found[term] = int(count or 0)
        return found

    # -- candidates ---------------------------------------------------------------------------

    def candidates(
        self,
        connection: Connection,
        user: str,
        wanted: Sequence[str],
        reader: Readable,
        statistics: CorpusStatistics,
        k1: float,
        b: float,
    ) -> list[int]:
        """Up to ``KEYWORD_CANDIDATES`` best full-text matches among the memories the
        reader may see, best first."""
        if not wanted:
            return []
        rank = _Preranking(wanted, statistics, k1, b)
        if not self._sees_little(connection, user, reader, statistics):
            ranked = self._ranked(connection, user, rank, None, RANKED_MATCHES)
            visible = visible_among(connection, reader, ranked)
            if len(ranked) < RANKED_MATCHES or len(visible) >= ENOUGH_VISIBLE:
                return visible[:KEYWORD_CANDIDATES]
        return self._ranked(connection, user, rank, reader, KEYWORD_CANDIDATES)

    def _sees_little(
        self, connection: Connection, user: str, reader: Readable, statistics: CorpusStatistics
    ) -> bool:
        """Whether the reader may see so small a share of the user's memories (its own and
        those its memory and tag grants name) that the best ``RANKED_MATCHES`` would hold
        fewer than ``ENOUGH_VISIBLE`` of them: then the query with visibility inside it
        runs at once, instead of after a wasted one. A tier grant admits an unknown share,
        so it never counts as little."""
        if reader.held.tiers or not statistics.documents:
            return False
        own = self._owned(connection, user, reader.owner.agent, statistics.version)
        seen = own + len(reader.held.memory_ids) + len(reader.tagged)
        return seen * RANKED_MATCHES < ENOUGH_VISIBLE * statistics.documents

    def _owned(self, connection: Connection, user: str, agent: str, version: int) -> int:
        """How many memories of ``user`` ``agent`` owns, counted once per data version."""
        with self._lock:
            entry = self._users.get(user)
            if entry is not None and entry.version == version and agent in entry.owned:
                return entry.owned[agent]
        count = connection.execute(
            sa.select(sa.func.count())
            .select_from(memories)
            .where(memories.c.user_id == user, memories.c.agent_id == agent)
        ).scalar_one()
        with self._lock:
            entry = self._users.get(user)
            if entry is not None and entry.version == version:
                if len(entry.owned) >= CACHED_TERMS:
                    entry.owned.clear()
                entry.owned[agent] = int(count)
        return int(count)

    def _ranked(
        self,
        connection: Connection,
        user: str,
        rank: _Preranking,
        reader: Readable | None,
        limit: int,
    ) -> list[int]:
        """The user's best ``limit`` matches (only those ``reader`` may see, if given)."""
        wanted = rank.wanted
        if self._dialect == "sqlite":
            expression = f"owner:{_owner_token(user)} AND ({' OR '.join(map(quote, wanted))})"
            if reader is None:
                rows = connection.exec_driver_sql(
                    "SELECT rowid FROM memory_fts WHERE memory_fts MATCH ? "
                    "ORDER BY bm25(memory_fts) LIMIT ?",
                    (expression, limit),
                )
                return [int(row[0]) for row in rows]
            rowid: sa.ColumnElement[int] = sa.literal_column("memory_fts.rowid")
            statement = (
                sa.select(rowid)
                .select_from(sa.table("memory_fts"))
                .join(memories, memories.c.id == rowid)
                .where(sa.text("memory_fts MATCH :expression").bindparams(expression=expression))
                .where(reader.candidates)
                .order_by(sa.text("bm25(memory_fts)"))
                .limit(limit)
            )
        else:
            query = sa.func.to_tsquery("simple", " | ".join(quote(t, "'") for t in wanted))
            document = sa.func.to_tsvector("simple", memory_terms.c.terms)
            statement = sa.select(memory_terms.c.memory_id).where(
                memory_terms.c.user_id == user, document.bool_op("@@")(query)
            )
            if reader is not None:
                statement = statement.join(
                    memories, memories.c.id == memory_terms.c.memory_id
                ).where(reader.candidates)
            statement = statement.order_by(
                rank.expression().desc(), memory_terms.c.memory_id
            ).limit(limit)
        return [int(row[0]) for row in connection.execute(statement)]


@dataclass(frozen=True, slots=True)
class _Preranking:
    """How PostgreSQL orders the matches it preselects: the BM25 of this module with each
    term counted once, from the stored terms text and length.

    Not ``ts_rank``: that parses every match's text into a tsvector (the GIN index is on an
    expression, nothing is stored) and measured 1.5 s for 66,000 matches, where these
    string tests take a sixth of it. Counting a term once is exact for the short texts
    memories mostly are, and the preselection is wide; the candidates' real BM25 is
    computed afterwards from their terms either way.
    """

    wanted: Sequence[str]
    statistics: CorpusStatistics
    k1: float
    b: float

    def expression(self) -> sa.ColumnElement[float]:
        padded = sa.literal(" ") + memory_terms.c.terms + sa.literal(" ")
        matched = [
            sa.case(
                (
                    sa.func.strpos(padded, sa.literal(f" {term} ")) > 0,
                    sa.literal(idf(self.statistics, term), sa.Float()),
                ),
                else_=sa.literal(0.0, sa.Float()),
            )
            for term in self.wanted
        ]
        average = sa.literal(self.statistics.average or 1.0, sa.Float())
        length = sa.cast(memory_terms.c.term_count, sa.Float())
        normaliser = 1 + self.k1 * (1 - self.b + self.b * length / average)
        total: sa.ColumnElement[float] = matched[0]
        for term in matched[1:]:
            total = total + term
        return total / normaliser


class DatabaseKeywords:
    """One search's keyword matches from the database's full-text index: the interface
    ``memory.search.postings.KeywordScores`` offers, for a process that holds no index."""

    def __init__(
        self,
        index: KeywordIndex,
        connection: Connection,
        user: str,
        wanted: Sequence[str],
        statistics: CorpusStatistics,
        k1: float,
        b: float,
    ) -> None:
        self._index = index
        self._connection = connection
        self._user = user
        self._wanted = wanted
        self._statistics = statistics
        self._k1 = k1
        self._b = b
        self._scores: dict[int, float] = {}

    def best(self, reader: Readable, count: int) -> list[int]:
        """The ids of the ``count`` best matches ``reader`` may read, best first (ties: the
        newer id first): the BM25 best of the full-text candidates."""
        matches = self._index.candidates(
            self._connection, self._user, self._wanted, reader, self._statistics, self._k1, self._b
        )
        scores = self.of(matches)
        return sorted(matches, key=lambda i: (-scores.get(i, 0.0), -i))[:count]

    def visible(self, reader: Readable, ids: Sequence[int]) -> list[int]:
        """The ids among ``ids`` that ``reader`` may see, in their order."""
        return visible_among(self._connection, reader, ids)

    def of(self, ids: Sequence[int]) -> dict[int, float]:
        """The BM25 score of each of ``ids``, from their stored terms."""
        return remembered(
            self._scores,
            ids,
            lambda missing: bm25(
                self._connection, self._wanted, self._statistics, missing, self._k1, self._b
            ),
        )


def idf(statistics: CorpusStatistics, term: str) -> float:
    """BM25's inverse document frequency of ``term`` among the user's memories."""
    documents, df = statistics.documents, statistics.frequencies.get(term, 0)
    return math.log(1 + (documents - df + 0.5) / (df + 0.5))


def visible_among(connection: Connection, reader: Readable, ids: Sequence[int]) -> list[int]:
    """The ids among ``ids`` that ``reader`` may see, in their order.

    One primary-key read of the columns the visibility rule tests (user, agent, tier; the
    ids bound as one parameter), and the rule applied here (``Readable.admits``, the
    grants read at the start of the search, held as sets): a thousand candidates against a
    thousand granted ids cost a set lookup each, where the SQL condition hashed the granted
    ids and tested an OR of clauses on every row. This only narrows the candidates; the
    final read of every search applies the visibility predicate in its query.
    """
    if not ids:
        return []
    rows = connection.execute(
        sa.select(memories.c.id, memories.c.user_id, memories.c.agent_id, memories.c.tier).where(
            id_among(connection.dialect.name, "among_ids", ids)
        )
    )
    admits = reader.admits
    found = {row[0] for row in rows if admits(row[1], row[2], row[3], row[0])}
    return [memory_id for memory_id in ids if memory_id in found]


def bm25(
    connection: Connection,
    wanted: Sequence[str],
    statistics: CorpusStatistics,
    candidates: Sequence[int],
    k1: float,
    b: float,
) -> dict[int, float]:
    """Okapi BM25 of each candidate from its stored terms and the user's statistics."""
    if not wanted or not candidates:
        return {}
    average = statistics.average
    among = id_among(connection.dialect.name, "scored_ids", candidates, memory_terms.c.memory_id)
    rows = connection.execute(
        sa.select(memory_terms.c.memory_id, memory_terms.c.terms).where(among)
    )
    weights = {term: idf(statistics, term) for term in wanted}
    scores = {}
    for memory_id, stored in rows:
        document = stored.split()
        total = 0.0
        normaliser = 0.0
        for term in wanted:
            frequency = document.count(term)
            if frequency:
                if not normaliser:
                    normaliser = k1 * (1 - b + b * (len(document) or 1) / (average or 1.0))
                total += weights[term] * frequency * (k1 + 1) / (frequency + normaliser)
        scores[int(memory_id)] = total
    return scores


def quote(term: str, mark: str = '"') -> str:
    """A term quoted for FTS5 (``"``) or tsquery (``'``).

    Terms are \\w+ runs, so they hold no quotes; quoting keeps FTS5 and tsquery from
    reading a term such as "near" or "and" as an operator.
    """
    return f"{mark}{term}{mark}"


def _owner_token(user: str) -> str:
    # The FTS5 ``owner`` column holds 'u' || hex(user_id) (migration 0005).
    return "u" + user.encode("utf-8").hex().upper()
