"""Hub-spoke sync's clocks: the hybrid logical clock that stamps every change, version
vectors over the nodes' change sequences, the delta one node owes another, and the
deterministic conflict rule.

Public through ``memory.sync.clocks``; it lives in ``core`` because the store stamps each
local write inside that write's transaction and resolves incoming versions inside the
apply transaction, and the store may not import ``memory.sync``.

Hybrid logical clock. A timestamp is one unsigned 64-bit integer: wall-clock milliseconds
in the high 48 bits, a logical counter in the low 16 (``hlc_pack``). Integers compare like
the (wall, counter) pairs they hold, travel as one msgpack int and index as one column.
The clock is pure: callers pass the wall time. A counter that would pass 16 bits carries
into the milliseconds, which keeps timestamps strictly increasing.

Version vectors. Every node numbers its own changes per tier 1, 2, 3, … (its change
sequence). A node's vector holds, per (node, tier), the highest sequence ``s`` such that it
has everything that node's changes 1..s wrote, or something that supersedes it; so the
changes it lacks from another node are exactly the ranges ``compute_delta`` returns.

Conflicts. Each version of a memory carries its ``Stamp`` (HLC, then writing node id) and
its per-memory version counter (each write is the previous version + 1). The version
with the greater stamp wins everywhere, whatever the order of arrival, so every node
converges on the same state; a delete is a version too (a tombstone), so it wins against
older updates and loses to newer ones. Two versions are *concurrent* (a conflict to
record) when their counters are equal, or order opposite to their stamps: neither was
written over the other.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from memory.core.errors import InvalidInputError
from memory.core.types import ID_LENGTH, TIERS, Tier

HLC_LOGICAL_BITS = 16
# 63 bits, not 64: a timestamp must fit a signed BIGINT column and a msgpack int64.
HLC_MAX = 2**63 - 1
_WALL_MS_MAX = HLC_MAX >> HLC_LOGICAL_BITS
_LOGICAL_MASK = (1 << HLC_LOGICAL_BITS) - 1
# How far ahead of our wall clock a peer's timestamp may be. Beyond it the peer's clock is
# wrong (or hostile): accepting it would drag every later local write ahead with it.
MAX_CLOCK_DRIFT_MS = 300_000
MAX_SEQ = 2**63 - 1


class ClockDriftError(InvalidInputError):
    """A received timestamp is further ahead of the local wall clock than allowed."""


def hlc_pack(wall_ms: int, logical: int = 0) -> int:
    """The timestamp of wall time ``wall_ms`` and counter ``logical``.

    >>> hlc_wall_ms(hlc_pack(1_700_000_000_000, 3)), hlc_logical(hlc_pack(1_700_000_000_000, 3))
    (1700000000000, 3)
    """
    if not 0 <= wall_ms <= _WALL_MS_MAX or not 0 <= logical <= _LOGICAL_MASK:
        raise InvalidInputError(f"HLC parts out of range: wall {wall_ms} ms, counter {logical}")
    return (wall_ms << HLC_LOGICAL_BITS) | logical


def hlc_wall_ms(timestamp: int) -> int:
    """The wall-clock milliseconds of a timestamp."""
    return timestamp >> HLC_LOGICAL_BITS


def hlc_logical(timestamp: int) -> int:
    """The logical counter of a timestamp."""
    return timestamp & _LOGICAL_MASK


@dataclass(frozen=True, slots=True)
class HybridLogicalClock:
    """The state of one node's clock: the last timestamp it issued or saw.

    Immutable: ``tick`` and ``receive`` return the next clock, whose ``last`` is the
    timestamp to use.

    >>> clock = HybridLogicalClock().tick(wall_ms=1000)
    >>> clock.last == hlc_pack(1000)
    True
    >>> clock.tick(wall_ms=999).last == hlc_pack(1000, 1)  # wall clock went back
    True
    """

    last: int = 0

    def tick(self, wall_ms: int) -> HybridLogicalClock:
        """The clock after a local event (a write) at wall time ``wall_ms``."""
        return HybridLogicalClock(self._after(hlc_pack(wall_ms)))

    def receive(
        self, remote: int, wall_ms: int, max_drift_ms: int = MAX_CLOCK_DRIFT_MS
    ) -> HybridLogicalClock:
        """The clock after seeing a peer's timestamp ``remote`` at wall time ``wall_ms``:
        later than both. Raises ``ClockDriftError`` if ``remote`` is more than
        ``max_drift_ms`` ahead of ``wall_ms``."""
        if not 0 <= remote <= HLC_MAX:
            raise InvalidInputError(f"HLC timestamp {remote} is not an integer in 0..2**63-1")
        ahead = hlc_wall_ms(remote) - wall_ms
        if ahead > max_drift_ms:
            raise ClockDriftError(
                f"a peer's clock is {ahead} ms ahead of ours (at most {max_drift_ms} ms "
                "allowed): fix the clock of the node that wrote it"
            )
        return HybridLogicalClock(self._after(max(hlc_pack(wall_ms), remote + 1)))

    def _after(self, candidate: int) -> int:
        following = max(candidate, self.last + 1)
        if following > HLC_MAX:
            raise InvalidInputError("the hybrid logical clock has run out of timestamps")
        return following


@dataclass(frozen=True, slots=True, order=True)
class Stamp:
    """Who wrote a version and when: ordered by HLC, then node id (the tie-break)."""

    hlc: int
    node: str


@dataclass(frozen=True, slots=True)
class ChangeRange:
    """Changes ``first``..``last`` (inclusive) of ``node`` in ``tier``."""

    node: str
    tier: Tier
    first: int
    last: int

    def __post_init__(self) -> None:
        check_node_id(self.node)
        check_tier(self.tier)
        if not 1 <= self.first <= self.last <= MAX_SEQ:
            raise InvalidInputError(
                f"change range {self.first}..{self.last} of {self.node!r} is not 1 <= first "
                f"<= last <= {MAX_SEQ}"
            )


class VersionVector(Mapping[tuple[str, Tier], int]):
    """Per (node, tier), the highest change sequence covered; absent means 0. Immutable.

    >>> v = VersionVector({("a", "working"): 3})
    >>> v.advance("a", "working", 5)[("a", "working")], v.get(("b", "semantic"), 0)
    (5, 0)
    """

    __slots__ = ("_seqs",)

    def __init__(self, seqs: Mapping[tuple[str, Tier], int] | None = None) -> None:
        checked: dict[tuple[str, Tier], int] = {}
        for (node, tier), seq in (seqs or {}).items():
            check_node_id(node)
            check_tier(tier)
            if isinstance(seq, bool) or not isinstance(seq, int) or not 0 <= seq <= MAX_SEQ:
                raise InvalidInputError(f"sequence of ({node!r}, {tier}) must be 0..{MAX_SEQ}")
            if seq:
                checked[(node, tier)] = seq
        self._seqs = checked

    def __getitem__(self, key: tuple[str, Tier]) -> int:
        return self._seqs[key]

    def __iter__(self) -> Iterator[tuple[str, Tier]]:
        return iter(sorted(self._seqs))

    def __len__(self) -> int:
        return len(self._seqs)

    def __repr__(self) -> str:
        return f"VersionVector({dict(sorted(self._seqs.items()))!r})"

    def __hash__(self) -> int:
        return hash(frozenset(self._seqs.items()))

    def seq(self, node: str, tier: Tier) -> int:
        """The highest sequence of ``node`` in ``tier`` covered (0 for none)."""
        return self._seqs.get((node, tier), 0)

    def advance(self, node: str, tier: Tier, seq: int) -> VersionVector:
        """This vector with (node, tier) raised to ``seq`` (never lowered)."""
        return VersionVector({**self._seqs, (node, tier): max(seq, self.seq(node, tier))})

    def merge(self, other: Mapping[tuple[str, Tier], int]) -> VersionVector:
        """The pointwise maximum of both vectors."""
        merged = dict(self._seqs)
        for key, seq in other.items():
            merged[key] = max(seq, merged.get(key, 0))
        return VersionVector(merged)

    def dominates(self, other: Mapping[tuple[str, Tier], int]) -> bool:
        """Whether this vector covers everything ``other`` covers."""
        return all(self._seqs.get(key, 0) >= seq for key, seq in other.items())

    def concurrent_with(self, other: Mapping[tuple[str, Tier], int]) -> bool:
        """Whether each vector covers something the other lacks."""
        return not self.dominates(other) and not VersionVector(other).dominates(self)

    def to_wire(self) -> list[list[Any]]:
        """``[[node, tier, seq], …]`` sorted, for msgpack."""
        return [[node, tier, seq] for (node, tier), seq in sorted(self._seqs.items())]

    @classmethod
    def from_wire(cls, value: object, max_entries: int = 4096) -> VersionVector:
        """Read ``to_wire``'s shape from an untrusted peer; ``InvalidInputError`` if it is
        anything else."""
        if not isinstance(value, list) or len(value) > max_entries:
            raise InvalidInputError(f"a version vector must be a list of at most {max_entries}")
        seqs: dict[tuple[str, Tier], int] = {}
        for entry in value:
            if not isinstance(entry, list) or len(entry) != 3:
                raise InvalidInputError("a version vector entry must be [node, tier, seq]")
            node, tier, seq = entry
            check_tier(tier)
            if (node, tier) in seqs:
                raise InvalidInputError(f"version vector names ({node!r}, {tier}) twice")
            seqs[(node, tier)] = seq
        return cls(seqs)


def compute_delta(
    local: Mapping[tuple[str, Tier], int], remote: Mapping[tuple[str, Tier], int]
) -> tuple[ChangeRange, ...]:
    """The change ranges ``local`` covers and ``remote`` lacks, sorted by (node, tier).

    >>> compute_delta({("a", "working"): 5, ("b", "working"): 1}, {("a", "working"): 2})
    (ChangeRange(node='a', tier='working', first=3, last=5), \
ChangeRange(node='b', tier='working', first=1, last=1))
    """
    return tuple(
        ChangeRange(node, tier, remote.get((node, tier), 0) + 1, seq)
        for (node, tier), seq in sorted(local.items())
        if seq > remote.get((node, tier), 0)
    )


def apply_ranges(vector: VersionVector, ranges: Iterable[ChangeRange]) -> VersionVector:
    """``vector`` raised by the ranges that continue it: a range is taken only if it
    starts at or before the next sequence the vector lacks, so coverage never skips a
    change. Ranges that leave a gap are ignored (their changes are still applied; a
    later delta fills the gap)."""
    for change in sorted(ranges, key=lambda r: (r.node, r.tier, r.first)):
        if change.first <= vector.seq(change.node, change.tier) + 1:
            vector = vector.advance(change.node, change.tier, change.last)
    return vector


class ConflictResolution(StrEnum):
    """How a conflict was decided (the ``resolution`` label of the conflict counter)."""

    LAST_WRITER = "last_writer"  # the later HLC won
    NODE_ID = "node_id"  # equal HLCs: the greater node id won
    TOMBSTONE = "tombstone"  # the winner is a delete


@dataclass(frozen=True, slots=True)
class VersionInfo:
    """What resolution needs of one version of a memory."""

    stamp: Stamp
    version: int
    deleted: bool


@dataclass(frozen=True, slots=True)
class Resolution:
    """The outcome of comparing the stored version with an incoming one.

    ``incoming_wins``: store the incoming version. ``conflict``: the two were concurrent,
    so the loser is kept as a conflict record, decided by ``resolution``. Equal stamps are
    the same version: nothing to do, no conflict.
    """

    incoming_wins: bool
    conflict: bool
    resolution: ConflictResolution | None


def resolve(stored: VersionInfo, incoming: VersionInfo) -> Resolution:
    """Decide between the stored and an incoming version of one memory; the same answer
    on every node, whichever arrived first (the greater ``Stamp`` wins).

    >>> old = VersionInfo(Stamp(10, "a"), 1, False)
    >>> new = VersionInfo(Stamp(20, "b"), 2, False)
    >>> resolve(old, new).incoming_wins, resolve(new, old).incoming_wins
    (True, False)
    """
    if stored.stamp == incoming.stamp:
        return Resolution(False, False, None)
    incoming_wins = incoming.stamp > stored.stamp
    ordered = (incoming.version > stored.version) == incoming_wins
    if incoming.version != stored.version and ordered:
        return Resolution(incoming_wins, False, None)
    winner = incoming if incoming_wins else stored
    if winner.deleted:
        how = ConflictResolution.TOMBSTONE
    elif incoming.stamp.hlc == stored.stamp.hlc:
        how = ConflictResolution.NODE_ID
    else:
        how = ConflictResolution.LAST_WRITER
    return Resolution(incoming_wins, True, how)


def check_node_id(node: object) -> None:
    """Raise ``InvalidInputError`` unless ``node`` can name a node ('*' means every node)."""
    if (
        not isinstance(node, str)
        or not 1 <= len(node) <= ID_LENGTH
        or not node.isprintable()
        or node == "*"
    ):
        raise InvalidInputError(
            f"node id must be 1..{ID_LENGTH} printable characters and not '*' (got {node!r:.60})"
        )


def check_tier(tier: object) -> None:
    """Raise ``InvalidInputError`` unless ``tier`` is a tier's name."""
    if tier not in TIERS:
        raise InvalidInputError(f"tier must be one of {', '.join(TIERS)} (got {tier!r:.40})")
