"""MurmurHash3 (x86, 32-bit) and Unleash's normalized bucket, in pure Python.

Unleash places a user in a rollout with ``murmur3_32(f"{group}:{id}", seed=0) % 100 + 1`` and
our buckets must be the same numbers, so that a flag moved from local evaluation to an Unleash
server keeps every user on the side of the rollout they were on. The tests check both
functions against the ``mmh3`` C extension and against the Unleash client itself; at run time
nothing here needs a compiled dependency.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

__all__ = ["murmur3_32", "normalized_hash"]

_MASK = 0xFFFFFFFF


def murmur3_32(data: bytes | str, seed: int = 0) -> int:
    """Return the unsigned 32-bit MurmurHash3 (x86_32) of ``data``.

    ``str`` input is encoded as UTF-8 first, which is what ``mmh3.hash`` and the Unleash
    clients do. Lone surrogates (which cannot be UTF-8) are encoded with ``surrogatepass`` so
    that the function is total instead of raising on odd identifiers.

    >>> murmur3_32(b"")
    0
    >>> murmur3_32("hello")
    613153351
    """
    if isinstance(data, str):
        data = data.encode("utf-8", "surrogatepass")
    return _finish(seed & _MASK, data, len(data))


def _mix_blocks(h: int, data: bytes) -> int:
    """Mix every whole 4-byte block of ``data`` into state ``h`` (the tail is left over)."""
    nblocks = len(data) >> 2
    lanes = _LANES.get(nblocks)
    if lanes is None:
        lanes = _LANES[nblocks] = _Lanes(nblocks)
    # Each block's own scrambling (k * c1, rotate 15, * c2) does not depend on the running
    # state, so it is done for all blocks at once: the blocks sit in 64-bit lanes of one big
    # integer, a product never carries out of its lane, and masking every lane back to 32
    # bits after each step is exact 32-bit arithmetic. Only the state update, which chains
    # block to block, is left to the loop; this cuts the per-call cost by a quarter.
    x = int.from_bytes(lanes.widen(*lanes.words(data)), "little") * 0xCC9E2D51 & lanes.mask
    x = (x << 15 | x >> 17) & lanes.mask
    x = x * 0x1B873593 & lanes.mask
    for k in lanes.narrow(x.to_bytes(lanes.size, "little")):
        h ^= k
        h = ((h << 13 | h >> 19) * 5 + 0xE6546B64) & _MASK
    return h


class _Lanes:
    """Precompiled conversions between ``n`` little-endian 32-bit blocks and 64-bit lanes."""

    __slots__ = ("words", "widen", "narrow", "mask", "size")

    def __init__(self, n: int) -> None:
        self.words: Callable[[bytes], tuple[int, ...]] = struct.Struct(f"<{n}I").unpack_from
        lanes = struct.Struct(f"<{n}Q")
        self.widen: Callable[..., bytes] = lanes.pack
        self.narrow: Callable[[bytes], tuple[int, ...]] = lanes.unpack
        self.mask = int.from_bytes(b"\xff\xff\xff\xff\x00\x00\x00\x00" * n, "little")
        self.size = 8 * n


_LANES: dict[int, _Lanes] = {}


def _finish(h: int, data: bytes, length: int) -> int:
    """Hash ``data`` starting from state ``h``; ``length`` counts every byte ever hashed."""
    size = len(data)
    if size > 3:
        h = _mix_blocks(h, data)
    tail = size & 3
    if tail:
        k = int.from_bytes(data[size - tail :], "little") * 0xCC9E2D51 & _MASK
        h ^= (k << 15 | k >> 17) * 0x1B873593 & _MASK
    h ^= length
    h = (h ^ h >> 16) * 0x85EBCA6B & _MASK
    h = (h ^ h >> 13) * 0xC2B2AE35 & _MASK
    return h ^ h >> 16


def normalized_hash(group_id: str, identifier: str, modulus: int = 100) -> int:
    """Return the Unleash bucket of ``identifier`` in ``group_id``: a number in 1..modulus.

    A rollout of ``p`` percent includes exactly the identifiers whose bucket is ``<= p``, so
    raising ``p`` only ever adds identifiers. Note the argument order: the Unleash Python
    client's own ``normalized_hash`` takes ``(identifier, activation_group)``.

    >>> normalized_hash("USE_ENHANCED_INJECTION", "user-1")
    90
    """
    return murmur3_32(f"{group_id}:{identifier}", 0) % modulus + 1


class GroupHasher:
    """``normalized_hash`` for one group, with the ``"{group}:"`` prefix hashed once.

    MurmurHash3 consumes its input in 4-byte blocks from left to right, so the state after
    the prefix's whole blocks can be kept and only the identifier (plus at most three
    leftover prefix bytes) hashed per call: a third to a half of the work for typical flag
    names and UUIDs. Buckets are memoized per identifier, because agents ask about the same
    sessions over and over. The memo holds at most ``memo_limit`` identifiers (about half a
    megabyte by default; the memory layer's whole heap budget is 100 MB) in two generations:
    when the recent one is full it becomes the old one and the previous old one is dropped,
    and a hit in the old generation moves back to the recent one. Ids in use survive a
    stream of one-off ids, at the price of one dict lookup per hit, which a true LRU
    could not match in pure Python.
    """

    __slots__ = ("_state", "_rest", "_prefix_length", "_recent", "_older", "_generation")

    def __init__(self, group_id: str, memo_limit: int = 4096) -> None:
        prefix = f"{group_id}:".encode("utf-8", "surrogatepass")
        whole = len(prefix) & ~3
        # The state after the prefix's whole blocks (seed 0) is exactly the state the full
        # hash reaches at that point, whatever identifier follows.
        self._state = _mix_blocks(0, prefix) if whole else 0
        self._rest = prefix[whole:]
        self._prefix_length = len(prefix)
        self._recent: dict[str, int] = {}
        self._older: dict[str, int] = {}
        self._generation = max(1, memo_limit // 2)

    def bucket(self, identifier: str) -> int:
        """Return ``normalized_hash(group_id, identifier)`` (modulus 100)."""
        found = self._recent.get(identifier)
        if found is not None:
            return found
        found = self._older.get(identifier)
        if found is None:
            # str(): a caller passing an int id gets the bucket of its decimal string, as
            # Unleash would, rather than a failure.
            data = self._rest + str(identifier).encode("utf-8", "surrogatepass")
            length = self._prefix_length + len(data) - len(self._rest)
            found = _finish(self._state, data, length) % 100 + 1
        # Races between threads can at worst drop a memo entry: the value is recomputed.
        if len(self._recent) >= self._generation:
            self._older = self._recent
            self._recent = {}
        self._recent[identifier] = found
        return found
