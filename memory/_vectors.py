"""The in-process vector index: one user's embeddings held as NumPy arrays.

``memory._retrieval`` reads vector candidates from here when the database holds no vector
index of its own (SQLite, or PostgreSQL without pgvector).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np
from sqlalchemy.engine import Connection

from memory._models import NO_SESSION, TIERS
from memory._ranking import Neighbours, SessionOrder
from memory._sharing import Readable


class UserVectors:
    """One user's embeddings as a matrix, with the fields filters need.

    The matrix is allocated to fit: the first load reserves exactly what it reads, and
    later growth adds 1/32 of the size (amortised copies stay cheap, and the slack stays
    under 50 bytes a memory; doubling had left up to 1.5 KB a memory unused). Agents and
    sessions are small integer codes, so the agent filter is one vectorised comparison
    and no memory holds strings of its own.
    """

    def __init__(self, dimension: int) -> None:
        self.matrix = np.zeros((0, dimension), dtype=np.float32)
        self.ids = np.zeros(0, dtype=np.int64)
        self.live = np.zeros(0, dtype=bool)
        self.agents = np.zeros(0, dtype=np.int32)
        self.sessions = np.zeros(0, dtype=np.int32)
        self.tiers = np.zeros(0, dtype=np.int8)
        self.codes: dict[str, int] = {}
        self.names: list[str] = []
        self.slot: dict[int, int] = {}
        self.order = SessionOrder()
        self.size = 0
        self.last_seq = 0
        self.lock = threading.Lock()

    def reserve(self, needed: int) -> None:
        """Room for ``needed`` more rows, with no slack when the whole batch is known."""
        capacity = self.matrix.shape[0]
        if self.size + needed <= capacity:
            return
        new_capacity = self.size + needed + (0 if needed > 1 else max(16, self.size // 32))
        matrix = np.zeros((new_capacity, self.matrix.shape[1]), dtype=np.float32)
        matrix[: self.size] = self.matrix[: self.size]
        self.matrix = matrix
        self.ids = resized(self.ids, new_capacity, self.size)
        self.live = resized(self.live, new_capacity, self.size)
        self.agents = resized(self.agents, new_capacity, self.size)
        self.sessions = resized(self.sessions, new_capacity, self.size)
        self.tiers = resized(self.tiers, new_capacity, self.size)

    def code(self, name: str) -> int:
        found = self.codes.get(name)
        if found is None:
            found = self.codes[name] = len(self.names)
            self.names.append(name)
        return found

    def upsert(
        self, memory_id: int, agent: str, session: str, tier: str, vector: np.ndarray
    ) -> None:
        position = self.slot.get(memory_id)
        if position is None:
            self.reserve(1)
            position = self.size
            self.size += 1
            self.slot[memory_id] = position
        else:
            self._unorder(memory_id, position)
        self.agents[position] = self.code(agent)
        self.sessions[position] = self.code(session)
        self.tiers[position] = TIERS.index(tier)
        if session != NO_SESSION:
            self.order.add(memory_id, self._key(position))
        self.matrix[position] = vector
        self.ids[position] = memory_id
        self.live[position] = True

    def remove(self, memory_id: int) -> None:
        position = self.slot.pop(memory_id, None)
        if position is not None:
            self.live[position] = False
            self._unorder(memory_id, position)

    def _key(self, position: int) -> tuple[str, str]:
        return self.names[self.agents[position]], self.names[self.sessions[position]]

    def _unorder(self, memory_id: int, position: int) -> None:
        self.order.discard(memory_id, self._key(position))

    def neighbours(self, memory_id: int) -> Neighbours:
        """The live memories stored just before and just after this one in its session."""
        position = self.slot.get(memory_id)
        if position is None:
            return None, None
        return self.order.neighbours(memory_id, self._key(position))

    def readable(self, reader: Readable) -> np.ndarray:
        """The rows ``reader`` may read: its own, and those its grants admit (the rule of
        ``memory._sharing.visible``, which the final read of a search applies in SQL too)."""
        agents = self.agents[: self.size]
        mask = agents == self.codes.get(reader.owner.agent, -1)
        held = reader.held
        for owner_agent, tier in held.tiers:
            tier_rows = self.tiers[: self.size] == TIERS.index(tier)
            mask |= (agents == self.codes.get(owner_agent, -1)) & tier_rows
        granted = [self.slot[i] for i in (*held.memory_ids, *reader.tagged) if i in self.slot]
        if granted:
            # A memory or tag grant admits only memories of the agent that made it.
            owners = [self.codes.get(agent, -1) for agent in held.owners]
            positions = np.array(granted, dtype=np.int64)
            mask[positions[np.isin(agents[positions], owners)]] = True
        readable: np.ndarray = mask & self.live[: self.size]
        return readable

    def top(self, query: np.ndarray, reader: Readable, count: int) -> list[tuple[int, float]]:
        if self.size == 0:
            return []
        mask = self.readable(reader)
        scores = self.matrix[: self.size] @ query
        scores = np.where(mask, scores, -np.inf)
        count = min(count, int(mask.sum()))
        if count == 0:
            return []
        best = np.argpartition(-scores, count - 1)[:count]
        return [(int(self.ids[i]), float(scores[i])) for i in best]

    def score(self, memory_id: int, query: np.ndarray) -> float | None:
        position = self.slot.get(memory_id)
        if position is None or not self.live[position]:
            return None
        return float(self.matrix[position] @ query)

    def nbytes(self) -> int:
        arrays = (self.matrix, self.ids, self.live, self.agents, self.sessions)
        return int(sum(array.nbytes for array in arrays))


def resized(array: np.ndarray, capacity: int, size: int) -> np.ndarray:
    grown = np.zeros(capacity, dtype=array.dtype)
    grown[:size] = array[:size]
    return grown


class ProcessVectors:
    """The in-process index behind the interface ``memory._pgvector.DatabaseVectors``
    offers, so a search reads the same way from either."""

    def __init__(self, index: UserVectors) -> None:
        self.index = index

    def top(
        self, connection: Connection, reader: Readable, query: np.ndarray, count: int
    ) -> dict[int, float]:
        with self.index.lock:
            return dict(self.index.top(query, reader, count))

    def scores(
        self, connection: Connection, ids: Sequence[int], query: np.ndarray
    ) -> dict[int, float]:
        found = {}
        with self.index.lock:
            for memory_id in ids:
                score = self.index.score(memory_id, query)
                if score is not None:
                    found[memory_id] = score
        return found

    def neighbours(self, connection: Connection, ids: Sequence[int]) -> dict[int, Neighbours]:
        with self.index.lock:
            return {memory_id: self.index.neighbours(memory_id) for memory_id in ids}
