"""Keyword search in process: one user's term postings, ranked by BM25 in NumPy.

Ranking a query's matches by BM25 is most of a search's cost when the database does it:
FTS5 calls its ``bm25`` function once per matching row, and the common words of a question
match a large share of the rows, more of them the more memories a user has; PostgreSQL
parses every match's text. So where the process holds a user's vector index
(``memory.search.vectors``) it holds their terms beside it: for each term, the rows that contain
it and how often, read from ``memory_terms`` with the vectors and kept current by the same
catch-up on ``memory_changes``. A query costs a few vectorised passes over the postings of
its own terms. The statistics BM25 needs (how many memories, their average length, how
many contain each term) are exact counts over the live rows, and the score is computed
operation for operation as ``memory.search.keywords.bm25`` computes it from the stored terms, so
both give the same number for the same memory.

The database's full-text index (FTS5, ``tsvector`` + GIN) stays the keyword index of
record, written in each memory's own transaction; it answers where the process holds no
index: with no embedder, and on PostgreSQL with pgvector.
"""

from __future__ import annotations

import math
import sys
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import islice

import numpy as np

from memory.core.types import TIERS
from memory.search.rows import (
    ascending,
    code,
    codes_bytes,
    codes_of,
    count_of,
    decode_strings,
    encode_strings,
    find_rows,
    fitted,
    readable_rows,
    resized,
    tail_order,
    within,
)
from memory.store.sharing import Readable

# Postings added since the last merge are kept apart (sorted on first use) until they
# outnumber this share of the merged ones: a merge re-sorts every posting.
RECENT_SHARE = 16
RECENT_MIN = 4096
# The rows are compacted (dead ones and their postings dropped, the rest put in id order)
# once dead rows outnumber this and an eighth of the rows, or rows out of id order this and
# a sixteenth.
COMPACT_MIN = 1024
FREQUENCY_MAX = np.iinfo(np.uint16).max


@dataclass(frozen=True, slots=True)
class Rows:
    """The rows of a ``UserTerms`` at one moment. Its arrays are replaced when they grow or
    are compacted, and rows below ``size`` are never rewritten but for their deletion flag,
    so a search reads these after letting go of the lock while writes carry on."""

    ids: np.ndarray
    agents: np.ndarray
    tiers: np.ndarray
    live: np.ndarray
    size: int
    in_order: int
    # The rows after ``in_order`` in id order (stable: the latest of equal ids last).
    tail_order: np.ndarray
    codes: dict[str, int]

    def positions(self, ids: np.ndarray) -> np.ndarray:
        """The current row of each id (its latest, live or dead), -1 where none is held."""
        return find_rows(self.ids, self.in_order, self.size, self.tail_order, ids)

    def readable(self, reader: Readable) -> np.ndarray:
        """The rows ``reader`` may read (``memory.search.rows.readable_rows``)."""
        return readable_rows(reader, self)


class KeywordScores:
    """The BM25 score of every row of one user's terms for one query (0: no match), over
    the rows as they were when it was computed."""

    def __init__(self, rows: Rows, totals: np.ndarray) -> None:
        self.rows = rows
        self.totals = totals
        self._readable: tuple[Readable, np.ndarray] | None = None

    def best(self, reader: Readable, count: int) -> list[int]:
        """The ids of the ``count`` best matches ``reader`` may read, best first (ties: the
        newer id first)."""
        rows = np.flatnonzero((self.totals > 0) & self._readable_rows(reader))
        if len(rows) > count:
            scores = self.totals[rows]
            cut = np.partition(scores, len(rows) - count)[len(rows) - count]
            rows = rows[scores >= cut]
        ids = self.rows.ids[rows]
        order = np.lexsort((-ids, -self.totals[rows]))[:count]
        best: list[int] = ids[order].tolist()
        return best

    def visible(self, reader: Readable, ids: Sequence[int]) -> list[int]:
        """The ids among ``ids`` that ``reader`` may see, in their order."""
        rows = self.rows.positions(np.asarray(ids, dtype=np.int64))
        readable = self._readable_rows(reader)
        return [i for i, row in zip(ids, rows.tolist(), strict=True) if row >= 0 and readable[row]]

    def _readable_rows(self, reader: Readable) -> np.ndarray:
        if self._readable is None or self._readable[0] is not reader:
            self._readable = (reader, self.rows.readable(reader))
        return self._readable[1]

    def of(self, ids: Sequence[int]) -> dict[int, float]:
        """The score of each of ``ids`` the index holds (deleted ones have none)."""
        wanted = np.asarray(ids, dtype=np.int64)
        rows = self.rows.positions(wanted)
        held = rows >= 0
        held[held] = self.rows.live[rows[held]]
        scores = self.totals[rows[held]].tolist()
        return dict(zip(wanted[held].tolist(), scores, strict=True))


class UserTerms:
    """One user's memories as term postings, with the fields visibility needs.

    Rows are appended: a changed memory gets a new row and its old one is retired (dead,
    with its postings, until the next compaction drops both), so no change rewrites the
    postings. Rows up to ``in_order`` hold ascending ids; rows after them (changed
    memories, ids that arrived out of order) are searched through their own sort order,
    and the latest row of an id is its current one. Postings are compressed-row arrays by
    term id: ``rows[offsets[t]:offsets[t + 1]]`` hold term ``t``, with their frequencies
    beside. Callers hold ``lock`` (the vector index's, whose catch-up writes both) around
    every call; what a call returns stays valid after it (``Rows``).
    """

    def __init__(self, lock: threading.Lock | None = None) -> None:
        self.lock = lock or threading.Lock()
        self.ids = np.zeros(0, dtype=np.int64)
        self.agents = np.zeros(0, dtype=np.int32)
        self.tiers = np.zeros(0, dtype=np.int8)
        self.lengths = np.zeros(0, dtype=np.int32)
        self.live = np.zeros(0, dtype=bool)
        self.size = 0
        self.in_order = 0
        self.dead = 0
        # BM25's statistics over the live rows, kept as they change.
        self.documents = 0
        self.total_length = 0
        self.codes: dict[str, int] = {}
        self.names: list[str] = []
        self.vocabulary: dict[str, int] = {}
        # The vocabulary's words' sizes, summed as they are added (counting them again at
        # every change would cost a pass over every word).
        self._word_bytes = 0
        self.offsets = np.zeros(1, dtype=np.int64)
        self.rows = np.zeros(0, dtype=np.int32)
        self.frequencies = np.zeros(0, dtype=np.uint16)
        # Postings since the last merge: (term ids, rows, frequencies) per batch.
        self._recent: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self._recent_sorted: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        # The rows after ``in_order`` in id order (None: sort them again).
        self._tail_order: np.ndarray | None = None

    # -- writing ------------------------------------------------------------------------------

    def upsert_many(
        self,
        ids: Sequence[int],
        agents: Sequence[str],
        tiers: Sequence[str],
        documents: Sequence[str],
    ) -> None:
        """File these memories (distinct ids, ascending) with their stored terms (space
        separated); a memory already held is filed again with these."""
        if not len(ids):
            return
        wanted = np.asarray(ids, dtype=np.int64)
        self._retire(self.positions(wanted))
        count = len(wanted)
        self._reserve(count)
        ordered = self.in_order == self.size and (
            not self.size or int(wanted[0]) > int(self.ids[self.size - 1])
        )
        rows = np.arange(self.size, self.size + count)
        self.size += count
        if ordered:
            self.in_order = self.size
        self._tail_order = None
        split = [document.split() for document in documents]
        lengths = np.fromiter(map(len, split), dtype=np.int64, count=count)
        self.ids[rows] = wanted
        self.agents[rows] = [code(self.codes, self.names, agent) for agent in agents]
        self.tiers[rows] = [TIERS.index(tier) for tier in tiers]
        self.lengths[rows] = lengths
        self.live[rows] = True
        self.documents += count
        self.total_length += int(lengths.sum())
        vocabulary = self.vocabulary
        known = len(vocabulary)
        term_ids = np.fromiter(
            (vocabulary.setdefault(term, len(vocabulary)) for terms in split for term in terms),
            dtype=np.int64,
            count=int(lengths.sum()),
        )
        # New words are the last ones in the dict.
        new_words = islice(reversed(vocabulary), len(vocabulary) - known)
        self._word_bytes += sum(map(sys.getsizeof, new_words))
        # One key per (term, row): their counts are the term frequencies.
        keys, counts = np.unique((term_ids << 32) | np.repeat(rows, lengths), return_counts=True)
        self._recent.append(
            (
                keys >> 32,
                (keys & 0xFFFFFFFF).astype(np.int32),
                np.minimum(counts, FREQUENCY_MAX).astype(np.uint16),
            )
        )
        self._recent_sorted = None
        if sum(len(batch[0]) for batch in self._recent) > max(
            RECENT_MIN, len(self.rows) // RECENT_SHARE
        ):
            self._merge()
        self._tidy()

    def remove_many(self, ids: Sequence[int]) -> None:
        """Forget these memories (those not held are ignored)."""
        self._retire(self.positions(np.asarray(ids, dtype=np.int64)))
        self._tidy()

    def _retire(self, rows: np.ndarray) -> None:
        """Mark the live ones among ``rows`` (-1: none) dead and count them out."""
        rows = rows[rows >= 0]
        rows = rows[self.live[rows]]
        self.live[rows] = False
        self.documents -= len(rows)
        self.total_length -= int(self.lengths[rows].sum())
        self.dead += len(rows)

    def _tidy(self) -> None:
        """Compact when dead or out-of-order rows have piled up (see ``COMPACT_MIN``)."""
        slack = max(COMPACT_MIN, self.size // 16)
        if self.dead > max(COMPACT_MIN, self.size // 8) or self.size - self.in_order > slack:
            self._compact()

    def _keep_postings(self, keep: np.ndarray, rows: np.ndarray) -> None:
        """Keep the merged postings where ``keep`` holds, with ``rows`` as their rows."""
        terms = self._posting_terms()
        self.rows = rows[keep].astype(np.int32)
        self.frequencies = self.frequencies[keep]
        self.offsets = _offsets(terms[keep], len(self.offsets) - 1)

    def _posting_terms(self) -> np.ndarray:
        return np.repeat(np.arange(len(self.offsets) - 1), np.diff(self.offsets))

    def _merge(self) -> None:
        """Fold the recent postings into the compressed rows."""
        if not self._recent:
            return
        terms = np.concatenate([self._posting_terms(), *(batch[0] for batch in self._recent)])
        rows = np.concatenate([self.rows, *(batch[1] for batch in self._recent)])
        frequencies = np.concatenate([self.frequencies, *(batch[2] for batch in self._recent)])
        order = np.argsort(terms, kind="stable")
        self.rows = rows[order]
        self.frequencies = frequencies[order]
        self.offsets = _offsets(terms, len(self.vocabulary))
        self._recent.clear()
        self._recent_sorted = None

    def _compact(self) -> None:
        """Drop dead rows and their postings, and put the rest in id order."""
        self._merge()
        live = np.flatnonzero(self.live[: self.size])
        kept = live[np.argsort(self.ids[live], kind="stable")]
        renumbered = np.full(self.size, -1, dtype=np.int64)
        renumbered[kept] = np.arange(len(kept))
        moved = renumbered[self.rows]
        self._keep_postings(moved >= 0, moved)
        self.ids, self.agents, self.tiers, self.lengths, self.live = (
            resized(array[kept], len(kept))
            for array in (self.ids, self.agents, self.tiers, self.lengths, self.live)
        )
        self.size = self.in_order = len(kept)
        self.dead = 0
        self._tail_order = None

    def _reserve(self, needed: int) -> None:
        if self.size + needed <= len(self.ids):
            return
        capacity = self.size + needed + (0 if needed > 1 else max(16, self.size // 32))
        self.ids, self.agents, self.tiers, self.lengths, self.live = (
            resized(array[: self.size], capacity)
            for array in (self.ids, self.agents, self.tiers, self.lengths, self.live)
        )

    # -- snapshots ----------------------------------------------------------------------------

    def state(self) -> dict[str, np.ndarray]:
        """The rows and postings, as arrays (``memory.search.snapshots`` writes them to a
        file). Recent postings are merged first, so the state is three arrays of them."""
        self._merge()
        size = self.size
        return {
            "ids": self.ids[:size],
            "agents": self.agents[:size],
            "tiers": self.tiers[:size],
            "lengths": self.lengths[:size],
            "live": self.live[:size],
            "offsets": self.offsets,
            "rows": self.rows,
            "frequencies": self.frequencies,
            "names": encode_strings(self.names),
            # The vocabulary's insertion order is its term ids' order.
            "vocabulary": encode_strings(list(self.vocabulary)),
            # Summing a million words' sizes again on load would cost a third of a second.
            "word_bytes": np.array([self._word_bytes], dtype=np.int64),
            "in_order": np.array([self.in_order], dtype=np.int64),
        }

    def restore(self, state: Mapping[str, np.ndarray]) -> None:
        """Take the rows and postings of ``state`` (``state()`` read back), replacing what
        is held; ``ValueError`` if its arrays do not fit together, and then nothing
        changes. BM25's statistics are counted again from the rows."""
        ids = fitted(state, "ids", np.int64, (len(state.get("ids", ())),))
        size = len(ids)
        names = decode_strings(state, "names")
        codes = codes_of(names, "names")
        words = decode_strings(state, "vocabulary")
        vocabulary = codes_of(words, "vocabulary")
        agents = fitted(state, "agents", np.int32, (size,))
        tiers = fitted(state, "tiers", np.int8, (size,))
        lengths = fitted(state, "lengths", np.int32, (size,))
        live = fitted(state, "live", np.bool_, (size,))
        offsets = fitted(state, "offsets", np.int64, (len(words) + 1,))
        postings = len(state.get("rows", ()))
        rows = fitted(state, "rows", np.int32, (postings,))
        frequencies = fitted(state, "frequencies", np.uint16, (postings,))
        in_order = count_of(state, "in_order")
        # At least what empty strings would take (the figure only feeds the budget).
        word_bytes = max(count_of(state, "word_bytes"), len(words) * sys.getsizeof(""))
        within(agents, "agents", len(names))
        within(tiers, "tiers", len(TIERS))
        within(rows, "rows", size)
        within(lengths, "lengths", int(np.iinfo(np.int32).max))
        ascending(ids, in_order)
        if int(offsets[0]) != 0 or int(offsets[-1]) != postings or np.any(np.diff(offsets) < 0):
            raise ValueError("offsets: not the bounds of the postings")
        self.ids, self.agents, self.tiers, self.lengths = ids, agents, tiers, lengths
        self.live = live
        self.offsets, self.rows, self.frequencies = offsets, rows, frequencies
        self.codes, self.names, self.vocabulary = codes, names, vocabulary
        self._word_bytes = word_bytes
        self.size, self.in_order = size, in_order
        self.dead = size - int(np.count_nonzero(live))
        self.documents = size - self.dead
        self.total_length = int(lengths[live].sum())
        self._recent.clear()
        self._recent_sorted = None
        self._tail_order = None

    # -- reading ------------------------------------------------------------------------------

    def view(self) -> Rows:
        """The rows as they are now (see ``Rows``)."""
        if self._tail_order is None:
            self._tail_order = tail_order(self.ids, self.in_order, self.size)
        return Rows(
            self.ids,
            self.agents,
            self.tiers,
            self.live,
            self.size,
            self.in_order,
            self._tail_order,
            self.codes,
        )

    def positions(self, ids: np.ndarray) -> np.ndarray:
        """The current row of each id (its latest, live or dead), -1 where none is held."""
        return self.view().positions(ids)

    def _postings(self, term: int) -> tuple[np.ndarray, np.ndarray]:
        """The rows holding ``term`` (dead ones included) and its frequency in each."""
        rows: list[np.ndarray] = []
        frequencies: list[np.ndarray] = []
        if term < len(self.offsets) - 1:
            start, stop = self.offsets[term], self.offsets[term + 1]
            rows.append(self.rows[start:stop])
            frequencies.append(self.frequencies[start:stop])
        if self._recent:
            terms, recent_rows, recent_frequencies = self._sorted_recent()
            start, stop = np.searchsorted(terms, [term, term + 1])
            rows.append(recent_rows[start:stop])
            frequencies.append(recent_frequencies[start:stop])
        if len(rows) == 1:
            return rows[0], frequencies[0]
        if not rows:
            return np.zeros(0, dtype=np.int32), np.zeros(0, dtype=np.uint16)
        return np.concatenate(rows), np.concatenate(frequencies)

    def _sorted_recent(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if self._recent_sorted is None:
            terms = np.concatenate([batch[0] for batch in self._recent])
            order = np.argsort(terms, kind="stable")
            self._recent_sorted = (
                terms[order],
                np.concatenate([batch[1] for batch in self._recent])[order],
                np.concatenate([batch[2] for batch in self._recent])[order],
            )
        return self._recent_sorted

    def scores(self, wanted: Sequence[str], k1: float, b: float) -> KeywordScores:
        """Okapi BM25 of every row for the query terms ``wanted``: the formula and order of
        operations of ``memory.search.keywords.bm25``, over the same statistics."""
        totals = np.zeros(self.size, dtype=np.float64)
        documents = self.documents
        average = (self.total_length / documents if documents else 0.0) or 1.0
        for term in wanted:
            term_id = self.vocabulary.get(term)
            if term_id is None:
                continue
            rows, frequencies = self._postings(term_id)
            alive = self.live[rows]
            rows = rows[alive]
            if not len(rows):
                continue
            found = frequencies[alive].astype(np.float64)
            weight = math.log(1 + (documents - len(rows) + 0.5) / (len(rows) + 0.5))
            lengths = np.maximum(self.lengths[rows], 1).astype(np.float64)
            normaliser = k1 * (1 - b + b * lengths / average)
            totals[rows] += weight * found * (k1 + 1) / (found + normaliser)
        return KeywordScores(self.view(), totals)

    def nbytes(self) -> int:
        """Everything held: arrays, postings, the vocabulary and the name codes."""
        arrays: list[np.ndarray] = [
            self.ids,
            self.agents,
            self.tiers,
            self.lengths,
            self.live,
            self.offsets,
            self.rows,
            self.frequencies,
        ]
        arrays.extend(array for batch in self._recent for array in batch)
        if self._tail_order is not None:
            arrays.append(self._tail_order)
        words = codes_bytes(self.vocabulary, self._word_bytes)
        names = codes_bytes(self.codes, sum(map(sys.getsizeof, self.names)))
        names += sys.getsizeof(self.names)
        return int(sum(array.nbytes for array in arrays)) + words + names


def _offsets(terms: np.ndarray, vocabulary: int) -> np.ndarray:
    offsets = np.zeros(vocabulary + 1, dtype=np.int64)
    np.cumsum(np.bincount(terms, minlength=vocabulary), out=offsets[1:])
    return offsets
