"""What a user's two in-process indexes (``memory.search.vectors``, ``postings``) share: rows
of memories kept in arrays, found by id, and tested for visibility.

Both file a memory's agent as an integer code and its tier as an index, keep the rows of
ascending ids first (ids grow, so appends are the rule) and the rest, which came out of
order, after them in a tail searched through its own sort order.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from memory.core.types import TIERS
from memory.store.sharing import Readable


class Filed(Protocol):
    """Rows of memories as the in-process indexes file them: each row's agent code (in
    ``codes``), tier index and liveness, the first ``size`` rows in use."""

    @property
    def agents(self) -> np.ndarray: ...
    @property
    def tiers(self) -> np.ndarray: ...
    @property
    def live(self) -> np.ndarray: ...
    @property
    def size(self) -> int: ...
    @property
    def codes(self) -> dict[str, int]: ...
    def positions(self, ids: np.ndarray) -> np.ndarray: ...


def readable_rows(reader: Readable, filed: Filed) -> np.ndarray:
    """The rows ``reader`` may read: its own, and those its grants admit (the rule of
    ``memory.store.sharing.visible``, which the final read of a search applies in SQL too)."""
    size, codes = filed.size, filed.codes
    agents, tiers = filed.agents[:size], filed.tiers[:size]
    mask = agents == codes.get(reader.owner.agent, -1)
    held = reader.held
    for owner_agent, tier in held.tiers:
        mask |= (agents == codes.get(owner_agent, -1)) & (tiers == TIERS.index(tier))
    granted = filed.positions(np.array([*held.memory_ids, *reader.tagged], dtype=np.int64))
    granted = granted[granted >= 0]
    if len(granted):
        # A memory or tag grant admits only memories of the agent that made it.
        owners = [codes.get(agent, -1) for agent in held.owners]
        mask[granted[np.isin(agents[granted], owners)]] = True
    readable: np.ndarray = mask & filed.live[:size]
    return readable


def code(codes: dict[str, int], names: list[str], name: str) -> int:
    """The integer code of ``name`` (``names[code]``), given the next one if new."""
    found = codes.get(name)
    if found is None:
        found = codes[name] = len(names)
        names.append(name)
    return found


def tail_order(held: np.ndarray, in_order: int, size: int) -> np.ndarray:
    """The rows after ``in_order`` in id order (stable: the latest of equal ids last)."""
    return np.argsort(held[in_order:size], kind="stable")


def find_rows(
    held: np.ndarray, in_order: int, size: int, tail: np.ndarray, ids: np.ndarray
) -> np.ndarray:
    """The row of each of ``ids`` among ``held[:size]`` (ascending up to ``in_order``, then
    in ``tail`` order), -1 where none: of equal ids the latest row, the tail's over the
    ordered rows'."""
    found = np.full(len(ids), -1, dtype=np.int64)
    if not size or not len(ids):
        return found
    if in_order:
        ordered = held[:in_order]
        at = np.minimum(np.searchsorted(ordered, ids), in_order - 1)
        hit = ordered[at] == ids
        found[hit] = at[hit]
    if size > in_order:
        ordered = held[in_order:size][tail]
        at = np.maximum(np.searchsorted(ordered, ids, side="right") - 1, 0)
        hit = ordered[at] == ids
        found[hit] = in_order + tail[at[hit]]
    return found


def resized(array: np.ndarray, capacity: int) -> np.ndarray:
    """``array`` at the start of a zeroed array of ``capacity`` rows."""
    grown = np.zeros(capacity, dtype=array.dtype)
    grown[: len(array)] = array
    return grown
