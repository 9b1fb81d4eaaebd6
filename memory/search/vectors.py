"""The in-process vector index: one user's embeddings, quantized, held as NumPy arrays.

``memory.search.retriever`` reads vector candidates from here when the database holds no vector
index of its own (SQLite, or PostgreSQL without pgvector). A search narrows the user's
memories in three steps, each exact on fewer rows:

1. **Sign bits** (one bit per dimension: 48 bytes for 384 dimensions), compared with the
   query's by Hamming distance (XOR and popcount over contiguous columns, a block of rows
   at a time). The ``shortlist(size)`` nearest rows the reader may see go on; the
   threshold is the shortlist-th smallest distance, found by selection, so no sort
   touches every row. Which rows a reader may see is kept per reader until the index
   changes.
2. **int8 codes** (each vector scaled by its largest component to -127..127, with the scale
   kept): the shortlist is rescored with them, and the ``exact_count(count)`` best go on.
3. **The stored float32 vectors** of those few, read from ``memory_embeddings`` in one
   query (``memory.search.pgvector.exact_scores``, as pgvector searches read them): the ``count``
   best by exact cosine are the candidates, with exact scores, so every backend scores a
   memory alike. Scores of other ids (keyword candidates, session neighbours) are read the
   same way.

No float32 copy stays in memory: about 460 bytes a memory instead of 1,550 (and 2 more for
each reader whose mask is kept), and a scan at 1M memories reads ~48 MB of bits instead of
1.5 GB of floats. Measured on MiniLM sentence vectors, the top 100 found this way hold
99-100 % of the exact top 100 when the query resembles the memories (benchmarks/README.md
has the figures and the harder cases).
When a reader may see no more than ``exact_count(count)`` rows, every one of them is
scored exactly, which is what small stores and the tests see.

Rows are kept in id order as far as ids arrive in order (they do: ids grow), so an id is
found with ``np.searchsorted``; ids that arrive out of order (concurrent writers on
PostgreSQL) go to a short unsorted tail, and removed rows stay as dead rows, until a
compaction re-sorts and drops them.
"""

from __future__ import annotations

import math
import sys
import threading
from array import array
from collections.abc import Mapping, Sequence

import numpy as np
from sqlalchemy.engine import Connection

from memory.core.ranking import Neighbours, SessionOrder, remembered
from memory.core.types import NO_SESSION, TIERS
from memory.search.pgvector import exact_scores
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

# Exact scores are read for RESCORED x the candidates asked for (the int8 ranking of the
# shortlist decides which); the shortlist itself grows with the index (SHORTLIST_SHARE),
# since the Hamming ranking blurs more of the true top 100 as more rows crowd near it.
# The int8 ranking barely blurs: at 1M MiniLM memories the exact top 100 of the shortlist
# lay within its int8 top 113 for benchmark questions and 112 for LoCoMo's (the hard,
# near-tied case), the top 40 within 45 and the top 10 within 14; the top 125 held all of
# the top 100 in the clustered test data. So half again, and at least EXACT_MARGIN more,
# is margin, and every row read costs.
RESCORED = 1.5
EXACT_MARGIN = 20
SHORTLIST_MIN = 2048
SHORTLIST_SHARE = 128
# Rows per block of the Hamming scan: a block's words, counts and sums (~0.5 MB) stay in
# a core's L2 cache between the XOR, the popcount and the sum, so the scan reads the sign
# bits from memory once and writes nothing but the distances.
SCAN_ROWS = 1 << 15
# Readers whose row masks are kept between searches (until the index changes).
KEPT_READERS = 4


def exact_count(count: int) -> int:
    """How many rows the int8 rescoring passes on to exact scoring, for ``count`` wanted."""
    return max(math.ceil(RESCORED * count), count + EXACT_MARGIN)


def shortlist(size: int) -> int:
    """How many rows the Hamming scan passes on to the int8 rescoring."""
    return max(SHORTLIST_MIN, size // SHORTLIST_SHARE)


def sign_words(vectors: np.ndarray) -> np.ndarray:
    """The sign bits of each row of ``vectors``, packed into uint64 words: (rows, words)."""
    rows, dimension = vectors.shape
    words = (dimension + 63) // 64
    packed = np.zeros((rows, words * 8), dtype=np.uint8)
    packed[:, : (dimension + 7) // 8] = np.packbits(vectors > 0, axis=1)
    return packed.view(np.uint64)


def int8_codes(vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each row scaled by its largest component to -127..127, and the scale to undo it."""
    scales = np.abs(vectors).max(axis=1) / 127.0
    scales[scales == 0] = 1.0
    codes = np.rint(vectors / scales[:, None]).astype(np.int8)
    return codes, scales.astype(np.float32)


class UserVectors:
    """One user's embeddings, quantized (sign bits and int8), with the fields filters need.

    Arrays are allocated to fit: the first load reserves exactly what it reads, and later
    growth adds 1/32 of the size (amortised copies stay cheap, the slack small). Agents and
    sessions are small integer codes, so the agent filter is one vectorised comparison and
    no memory holds strings of its own. The caller holds ``lock`` around every call.
    """

    def __init__(self, dimension: int) -> None:
        self.dimension = dimension
        self.words = (dimension + 63) // 64
        # Word-major: each word of every row is one contiguous column for the scan.
        self.signs = np.zeros((self.words, 0), dtype=np.uint64)
        self.codes8 = np.zeros((0, dimension), dtype=np.int8)
        self.scales = np.zeros(0, dtype=np.float32)
        self.ids = np.zeros(0, dtype=np.int64)
        self.live = np.zeros(0, dtype=bool)
        self.agents = np.zeros(0, dtype=np.int32)
        self.sessions = np.zeros(0, dtype=np.int32)
        self.tiers = np.zeros(0, dtype=np.int8)
        self.codes: dict[str, int] = {}
        self.names: list[str] = []
        self.order = SessionOrder()
        self.size = 0
        # ids[:in_order] ascend; the rows after them (ids that came out of order) do not,
        # and their order by id is kept here between changes.
        self.in_order = 0
        self._tail_order: np.ndarray | None = None
        self.dead = 0
        self.last_seq = 0
        # What ``visible`` computed for the last few readers, dropped on every change.
        self._visible: dict[tuple[object, ...], tuple[np.ndarray, int]] = {}
        self.lock = threading.Lock()

    # -- storage ------------------------------------------------------------------------------

    def reserve(self, needed: int) -> None:
        """Room for ``needed`` more rows, with no slack when the whole batch is known."""
        capacity = self.ids.shape[0]
        if self.size + needed <= capacity:
            return
        new_capacity = self.size + needed + (0 if needed > 1 else max(16, self.size // 32))
        self._reshape(np.arange(self.size), new_capacity)

    def _reshape(self, rows: np.ndarray, capacity: int) -> None:
        """Keep ``rows`` (positions, in their new order) in arrays of ``capacity`` rows."""
        self._visible.clear()
        kept = len(rows)
        signs = np.zeros((self.words, capacity), dtype=np.uint64)
        signs[:, :kept] = self.signs[:, rows]
        self.signs = signs
        codes8 = np.zeros((capacity, self.dimension), dtype=np.int8)
        codes8[:kept] = self.codes8[rows]
        self.codes8 = codes8
        self.scales = resized(self.scales[rows], capacity)
        self.ids = resized(self.ids[rows], capacity)
        self.live = resized(self.live[rows], capacity)
        self.agents = resized(self.agents[rows], capacity)
        self.sessions = resized(self.sessions[rows], capacity)
        self.tiers = resized(self.tiers[rows], capacity)

    def compact(self) -> None:
        """Drop dead rows and put the rest in id order (after removals or stray ids)."""
        live = np.flatnonzero(self.live[: self.size])
        rows = live[np.argsort(self.ids[live], kind="stable")]
        self._reshape(rows, len(rows) + max(16, len(rows) // 32))
        self.size = self.in_order = len(rows)
        self.dead = 0
        self._tail_order = None

    def _untidy(self) -> bool:
        slack = max(1024, self.size // 64)
        return self.size - self.in_order > slack or self.dead > max(1024, self.size // 8)

    def positions(self, ids: np.ndarray) -> np.ndarray:
        """The row of each id (live or dead), -1 where the index has none."""
        if self._tail_order is None:
            self._tail_order = tail_order(self.ids, self.in_order, self.size)
        return find_rows(self.ids, self.in_order, self.size, self._tail_order, ids)

    def position(self, memory_id: int) -> int | None:
        found = int(self.positions(np.array([memory_id], dtype=np.int64))[0])
        return found if found >= 0 else None

    def upsert_many(
        self,
        ids: Sequence[int],
        agents: Sequence[str],
        sessions: Sequence[str],
        tiers: Sequence[str],
        vectors: np.ndarray,
    ) -> None:
        """File these memories (ids ascending, as the catch-up reads them)."""
        if not len(ids):
            return
        self._visible.clear()
        wanted = np.asarray(ids, dtype=np.int64)
        rows = self.positions(wanted)
        new = rows < 0
        added = int(new.sum())
        self.reserve(added)
        # New ids above every id held extend the ordered prefix; others join the tail.
        ordered = self.in_order == self.size and (
            self.size == 0 or not added or int(wanted[new][0]) > int(self.ids[self.size - 1])
        )
        rows[new] = np.arange(self.size, self.size + added)
        self.size += added
        if ordered:
            self.in_order = self.size
        elif added:
            self._tail_order = None
        for i in np.flatnonzero(~new):
            row = int(rows[i])
            if self.live[row]:
                self._unorder(int(wanted[i]), row)
            else:
                self.dead -= 1
        codes8, scales = int8_codes(np.asarray(vectors, dtype=np.float32))
        self.signs[:, rows] = sign_words(vectors).T
        self.codes8[rows] = codes8
        self.scales[rows] = scales
        self.ids[rows] = wanted
        self.live[rows] = True
        self.agents[rows] = [code(self.codes, self.names, agent) for agent in agents]
        self.sessions[rows] = [code(self.codes, self.names, session) for session in sessions]
        self.tiers[rows] = [TIERS.index(tier) for tier in tiers]
        for memory_id, row, session in zip(wanted.tolist(), rows.tolist(), sessions, strict=True):
            if session != NO_SESSION:
                self.order.add(memory_id, self._key(row))
        if self._untidy():
            self.compact()

    def upsert(
        self, memory_id: int, agent: str, session: str, tier: str, vector: np.ndarray
    ) -> None:
        """File one memory (or refile it, if held)."""
        self.upsert_many([memory_id], [agent], [session], [tier], vector.reshape(1, -1))

    def remove(self, memory_id: int) -> None:
        row = self.position(memory_id)
        if row is not None and self.live[row]:
            self._visible.clear()
            self.live[row] = False
            self.dead += 1
            self._unorder(memory_id, row)
            if self._untidy():
                self.compact()

    def _key(self, row: int) -> tuple[str, str]:
        return self.names[self.agents[row]], self.names[self.sessions[row]]

    def _unorder(self, memory_id: int, row: int) -> None:
        self.order.discard(memory_id, self._key(row))

    # -- snapshots ----------------------------------------------------------------------------

    def state(self) -> dict[str, np.ndarray]:
        """The rows in use, as arrays (``memory.search.snapshots`` writes them to a file)."""
        size = self.size
        return {
            "signs": self.signs[:, :size],
            "codes8": self.codes8[:size],
            "scales": self.scales[:size],
            "ids": self.ids[:size],
            "live": self.live[:size],
            "agents": self.agents[:size],
            "sessions": self.sessions[:size],
            "tiers": self.tiers[:size],
            "names": encode_strings(self.names),
            "in_order": np.array([self.in_order], dtype=np.int64),
        }

    def restore(self, state: Mapping[str, np.ndarray]) -> None:
        """Take the rows of ``state`` (``state()`` of an index, read back), replacing what
        is held; ``ValueError`` if its arrays do not fit together, and then nothing changes.
        The session order is rebuilt from the rows rather than stored."""
        ids = fitted(state, "ids", np.int64, (len(state.get("ids", ())),))
        size = len(ids)
        names = decode_strings(state, "names")
        codes = codes_of(names, "names")
        signs = fitted(state, "signs", np.uint64, (self.words, size))
        codes8 = fitted(state, "codes8", np.int8, (size, self.dimension))
        scales = fitted(state, "scales", np.float32, (size,))
        live = fitted(state, "live", np.bool_, (size,))
        agents = fitted(state, "agents", np.int32, (size,))
        sessions = fitted(state, "sessions", np.int32, (size,))
        tiers = fitted(state, "tiers", np.int8, (size,))
        in_order = count_of(state, "in_order")
        within(agents, "agents", len(names))
        within(sessions, "sessions", len(names))
        within(tiers, "tiers", len(TIERS))
        ascending(ids, in_order)
        order = session_order(ids, live, agents, sessions, names, codes.get(NO_SESSION, -1))
        self.signs, self.codes8, self.scales = signs, codes8, scales
        self.ids, self.live, self.agents, self.sessions, self.tiers = (
            ids,
            live,
            agents,
            sessions,
            tiers,
        )
        self.codes, self.names, self.order = codes, names, order
        self.size, self.in_order = size, in_order
        self.dead = size - int(np.count_nonzero(live))
        self._tail_order = None
        self._visible.clear()

    # -- reading ------------------------------------------------------------------------------

    def neighbours(self, ids: Sequence[int]) -> dict[int, Neighbours]:
        """For each id, the live memories stored just before and just after it in its
        session."""
        rows = self.positions(np.asarray(ids, dtype=np.int64)).tolist()
        found: dict[int, Neighbours] = {}
        for memory_id, row in zip(ids, rows, strict=True):
            if row < 0 or not self.live[row]:
                found[memory_id] = (None, None)
            else:
                found[memory_id] = self.order.neighbours(memory_id, self._key(row))
        return found

    def readable(self, reader: Readable) -> np.ndarray:
        """The rows ``reader`` may read (``memory.search.rows.readable_rows``)."""
        return readable_rows(reader, self)

    def visible(self, reader: Readable) -> tuple[np.ndarray, int]:
        """The distance floor of each row for ``reader`` (uint16: 0 where it may read the
        row, more than any Hamming distance where not) and how many rows it may read.

        Kept for the last ``KEPT_READERS`` readers until the index changes: building it
        reads every row's agent, tier and liveness (~0.2 ms at 1M rows).
        Readers are told apart by what ``readable`` reads; the ``ReaderCache`` hands out
        the same grant sets while they are unchanged, so the key compares by identity."""
        held = reader.held
        key = (reader.owner.agent, held.tiers, held.memory_ids, held.owners, reader.tagged)
        found = self._visible.get(key)
        if found is None:
            mask = self.readable(reader)
            floor = np.logical_not(mask).view(np.uint8).astype(np.uint16)
            floor *= np.uint16(64 * self.words + 1)
            found = floor, int(np.count_nonzero(mask))
            if len(self._visible) >= KEPT_READERS:
                del self._visible[next(iter(self._visible))]
            self._visible[key] = found
        return found

    def distances(self, query: np.ndarray, floor: np.ndarray) -> np.ndarray:
        """Hamming distance of every row's sign bits to the query's (uint16), plus
        ``floor`` (``visible``: what puts the rows a reader may not see last)."""
        words = sign_words(query.reshape(1, -1))[0]
        distances = np.empty(self.size, dtype=np.uint16)
        block = min(SCAN_ROWS, self.size)
        xor = np.empty(block, dtype=np.uint64)
        # Up to three words are summed in uint8 (at most 192 bits differ), then added to
        # the uint16 distances: half the wide additions, in fewer passes over the block.
        count = np.empty(block, dtype=np.uint8)
        partial = np.empty(block, dtype=np.uint8)
        for start in range(0, self.size, SCAN_ROWS):
            stop = min(start + SCAN_ROWS, self.size)
            rows = stop - start
            out = distances[start:stop]
            for first in range(0, self.words, 3):
                for word in range(first, min(first + 3, self.words)):
                    np.bitwise_xor(self.signs[word, start:stop], words[word], out=xor[:rows])
                    target = partial[:rows] if word == first else count[:rows]
                    np.bitwise_count(xor[:rows], out=target)
                    if word > first:
                        np.add(partial[:rows], count[:rows], out=partial[:rows])
                base = floor[start:stop] if first == 0 else out
                np.add(base, partial[:rows], out=out)
        return distances

    def candidates(self, query: np.ndarray, reader: Readable, count: int) -> np.ndarray:
        """The ids whose exact scores decide the ``count`` best rows ``reader`` may read:
        every readable row when there are few, else the int8 best of the Hamming best."""
        if self.size == 0 or count <= 0:
            return np.zeros(0, dtype=np.int64)
        floor, readable = self.visible(reader)
        wanted = exact_count(count)
        if readable <= wanted:
            return self.ids[np.flatnonzero(floor == 0)]
        limit = shortlist(self.size)
        if readable <= limit:
            rows = np.flatnonzero(floor == 0)
        else:
            distances = self.distances(query, floor)
            # The limit-th smallest distance: a selection, not a sort (NumPy's AVX-512
            # selection of 16-bit keys takes a tenth of a histogram's time at 1M rows).
            cut = int(np.partition(distances, limit - 1)[limit - 1])
            rows = np.flatnonzero(distances <= cut)
            if len(rows) > limit:  # ties at the cut: the first of them, in id order
                below = rows[distances[rows] < cut]
                tied = rows[distances[rows] == cut]
                rows = np.concatenate([below, tied[: limit - len(below)]])
        # einsum's own loop, not BLAS: a matrix-vector product this size wakes OpenBLAS's
        # threads, which cost 5-10x the CPU time on a busy 2-core machine. Given the int8
        # rows, it converts them a buffer at a time (no float32 copy of the shortlist).
        estimates = np.einsum("ij,j->i", self.codes8[rows], query) * self.scales[rows]
        best = np.argpartition(-estimates, wanted - 1)[:wanted]
        return self.ids[rows[best]]

    def nbytes(self) -> int:
        """Everything the index holds: arrays, the readers' kept masks, name codes and the
        session order."""
        arrays = (
            self.signs,
            self.codes8,
            self.scales,
            self.ids,
            self.live,
            self.agents,
            self.sessions,
            self.tiers,
        )
        names = codes_bytes(self.codes, sum(map(sys.getsizeof, self.names)))
        names += sys.getsizeof(self.names)
        tail = 0 if self._tail_order is None else self._tail_order.nbytes
        tail += sum(floor.nbytes for floor, _ in self._visible.values())
        return int(sum(array.nbytes for array in arrays)) + tail + names + self.order.nbytes()


def session_order(
    ids: np.ndarray,
    live: np.ndarray,
    agents: np.ndarray,
    sessions: np.ndarray,
    names: list[str],
    no_session: int,
) -> SessionOrder:
    """The session order of these rows, built in bulk: the live rows of each (agent,
    session) by id (``ValueError`` if an id repeats among them). One sort, then a slice of
    one byte string per session: a session costs no NumPy call of its own."""
    rows = np.flatnonzero(live & (sessions != no_session))
    rows = rows[np.lexsort((ids[rows], sessions[rows], agents[rows]))]
    keys = (agents[rows].astype(np.int64) << 32) | sessions[rows].astype(np.int64)
    ordered_ids = ids[rows]
    if np.any((np.diff(keys) == 0) & (np.diff(ordered_ids) == 0)):
        raise ValueError("ids: a live id repeats in a session")
    starts = np.flatnonzero(np.diff(keys, prepend=-1))  # codes are >= 0
    stops = np.append(starts[1:], len(rows)) if len(rows) else starts
    blob = ordered_ids.tobytes()
    firsts = rows[starts]
    groups: dict[tuple[str, str], array[int]] = {}
    for agent, session, start, stop in zip(
        agents[firsts].tolist(),
        sessions[firsts].tolist(),
        (starts * 8).tolist(),
        (stops * 8).tolist(),
        strict=True,
    ):
        group = groups[names[agent], names[session]] = array("q")
        group.frombytes(blob[start:stop])
    return SessionOrder(groups)


class ProcessVectors:
    """The in-process index behind the interface ``memory.search.pgvector.DatabaseVectors``
    offers, so a search reads the same way from either. One per search: it keeps the
    exact scores it has read."""

    def __init__(self, index: UserVectors, model: str) -> None:
        self.index = index
        self.model = model
        self._scored: dict[int, float] = {}

    def top(
        self,
        connection: Connection,
        reader: Readable,
        query: np.ndarray,
        count: int,
        also: Sequence[int] = (),
    ) -> dict[int, float]:
        """The ``count`` best of the rows ``reader`` may read, exactly scored. The exact
        scores of ``also`` (asked for next) are read in the same query."""
        with self.index.lock:
            ids = self.index.candidates(query, reader, count).tolist()
        scores = self.scores(connection, [*dict.fromkeys([*ids, *also])], query)
        scored = [(memory_id, scores[memory_id]) for memory_id in ids if memory_id in scores]
        best = sorted(scored, key=lambda item: (-item[1], -item[0]))[:count]
        return dict(best)

    def scores(
        self, connection: Connection, ids: Sequence[int], query: np.ndarray
    ) -> dict[int, float]:
        return remembered(
            self._scored, ids, lambda missing: exact_scores(connection, missing, self.model, query)
        )

    def neighbours(self, connection: Connection, ids: Sequence[int]) -> dict[int, Neighbours]:
        with self.index.lock:
            return self.index.neighbours(ids)
