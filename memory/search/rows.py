"""What a user's two in-process indexes (``memory.search.vectors``, ``postings``) share: rows
of memories kept in arrays, found by id, and tested for visibility.

Both file a memory's agent as an integer code and its tier as an index, keep the rows of
ascending ids first (ids grow, so appends are the rule) and the rest, which came out of
order, after them in a tail searched through its own sort order.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
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


# The interpreter shares the ints up to 256; every larger code a dict holds is an object of
# its own (28 bytes, allocated in 32).
SHARED_INTS = 257
INT_BYTES = 32


def codes_bytes(codes: dict[str, int], key_bytes: int) -> int:
    """What a dict from names to their codes holds: its table, its keys (``key_bytes``:
    their ``sys.getsizeof`` summed) and the codes that are objects of their own."""
    return sys.getsizeof(codes) + key_bytes + max(0, len(codes) - SHARED_INTS) * INT_BYTES


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


def fitted(
    state: Mapping[str, np.ndarray], name: str, dtype: type, shape: tuple[int, ...]
) -> np.ndarray:
    """``state[name]`` if it has ``dtype`` and ``shape``, else ``ValueError`` (a snapshot
    whose arrays do not fit together is not used)."""
    array = state.get(name)
    if array is None or array.dtype != np.dtype(dtype) or array.shape != shape:
        found = None if array is None else (array.dtype, array.shape)
        raise ValueError(f"{name}: expected {np.dtype(dtype)} {shape}, found {found}")
    return array


def count_of(state: Mapping[str, np.ndarray], name: str) -> int:
    """The non-negative whole number ``state[name]`` holds (a one-element int64 array)."""
    value = int(fitted(state, name, np.int64, (1,))[0])
    if value < 0:
        raise ValueError(f"{name}: negative")
    return value


def encode_strings(strings: list[str]) -> np.ndarray:
    """``strings`` as one array of UTF-8 JSON, for a snapshot (no pickling on load)."""
    return np.frombuffer(json.dumps(strings, ensure_ascii=False).encode("utf-8"), dtype=np.uint8)


def decode_strings(state: Mapping[str, np.ndarray], name: str) -> list[str]:
    """The strings ``encode_strings`` stored as ``state[name]`` (``ValueError`` if not)."""
    array = state.get(name)
    if array is None or array.dtype != np.uint8 or array.ndim != 1:
        raise ValueError(f"{name}: not an encoded list of strings")
    strings = json.loads(array.tobytes().decode("utf-8"))
    if not isinstance(strings, list) or not set(map(type, strings)) <= {str}:
        raise ValueError(f"{name}: not a list of strings")
    return strings


def codes_of(names: list[str], name: str) -> dict[str, int]:
    """Each name's code (its position) for names restored from a snapshot, which must be
    distinct."""
    codes = dict(zip(names, range(len(names)), strict=True))
    if len(codes) != len(names):
        raise ValueError(f"{name}: repeated names")
    return codes


def within(array: np.ndarray, name: str, limit: int) -> None:
    """``ValueError`` unless every value of ``array`` is in ``0..limit - 1``."""
    if len(array) and (int(array.min()) < 0 or int(array.max()) >= limit):
        raise ValueError(f"{name}: values outside 0..{limit - 1}")


def ascending(ids: np.ndarray, in_order: int) -> None:
    """``ValueError`` unless the first ``in_order`` of ``ids`` ascend (and exist)."""
    if in_order > len(ids) or np.any(np.diff(ids[:in_order]) <= 0):
        raise ValueError("in_order: the rows before it do not ascend")
