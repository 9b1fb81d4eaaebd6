"""The hybrid logical clock, version vectors, deltas and the conflict rule (pure; with
Hypothesis properties)."""

from __future__ import annotations

import itertools
from functools import reduce

import pytest
from hypothesis import given
from hypothesis import strategies as st

from memory.core.errors import InvalidInputError
from memory.sync.clocks import (
    HLC_MAX,
    ChangeRange,
    ClockDriftError,
    ConflictResolution,
    HybridLogicalClock,
    Stamp,
    VersionInfo,
    VersionVector,
    apply_ranges,
    compute_delta,
    hlc_logical,
    hlc_pack,
    hlc_wall_ms,
    resolve,
)

NODES = st.sampled_from(["a", "b", "c", "d"])
TIERS = st.sampled_from(["working", "episodic", "semantic"])
VECTORS = st.dictionaries(st.tuples(NODES, TIERS), st.integers(0, 50)).map(VersionVector)


def test_hlc_follows_the_wall_clock_when_it_moves_forward() -> None:
    clock = HybridLogicalClock().tick(1_000)
    assert (hlc_wall_ms(clock.last), hlc_logical(clock.last)) == (1_000, 0)
    assert clock.tick(2_000).last == hlc_pack(2_000)


def test_hlc_counts_when_the_wall_clock_stalls_or_goes_back() -> None:
    clock = HybridLogicalClock().tick(1_000).tick(1_000).tick(500)
    assert (hlc_wall_ms(clock.last), hlc_logical(clock.last)) == (1_000, 2)


def test_hlc_receive_moves_past_a_peer_that_is_ahead() -> None:
    peer = hlc_pack(1_050, 7)
    clock = HybridLogicalClock(hlc_pack(1_000)).receive(peer, wall_ms=1_000)
    assert clock.last == hlc_pack(1_050, 8)
    assert clock.tick(1_000).last > clock.last  # a local write after it is later still


def test_hlc_refuses_a_peer_too_far_ahead() -> None:
    with pytest.raises(ClockDriftError, match="ahead of ours"):
        HybridLogicalClock().receive(hlc_pack(10_000), wall_ms=1_000, max_drift_ms=5_000)
    with pytest.raises(InvalidInputError, match="not an integer in"):
        HybridLogicalClock().receive(HLC_MAX + 1, wall_ms=1_000)


def test_a_full_counter_carries_into_the_milliseconds() -> None:
    full = hlc_pack(1_000, 0xFFFF)
    assert HybridLogicalClock(full).tick(1_000).last == hlc_pack(1_001, 0)


@given(st.lists(st.tuples(st.booleans(), st.integers(0, 10_000), st.integers(0, 20_000))))
def test_hlc_is_strictly_increasing_whatever_happens(
    events: list[tuple[bool, int, int]],
) -> None:
    clock = HybridLogicalClock()
    for local, wall, remote in events:
        before = clock.last
        clock = (
            clock.tick(wall)
            if local
            else clock.receive(hlc_pack(remote), wall, max_drift_ms=20_000)
        )
        assert clock.last > before
        assert local or clock.last > hlc_pack(remote)


def test_compute_delta_names_exactly_the_missing_ranges() -> None:
    local = VersionVector({("a", "working"): 5, ("b", "working"): 2, ("a", "semantic"): 1})
    remote = VersionVector({("a", "working"): 3, ("b", "working"): 4})
    assert compute_delta(local, remote) == (
        ChangeRange("a", "semantic", 1, 1),
        ChangeRange("a", "working", 4, 5),
    )
    assert compute_delta(remote, local) == (ChangeRange("b", "working", 3, 4),)
    assert compute_delta(local, local) == ()


@given(VECTORS, VECTORS)
def test_delta_is_complete_and_exact(local: VersionVector, remote: VersionVector) -> None:
    delta = compute_delta(local, remote)
    # Applying the ranges brings the remote up to the merge of both, no further.
    assert apply_ranges(remote, delta) == remote.merge(local)
    assert apply_ranges(remote, delta).dominates(local)
    for change in delta:  # every range is something the remote lacks and local has
        assert change.first == remote.seq(change.node, change.tier) + 1
        assert change.last == local.seq(change.node, change.tier)
    assert (delta == ()) == remote.dominates(local)


def test_ranges_that_leave_a_gap_do_not_advance_a_vector() -> None:
    vector = VersionVector({("a", "working"): 2})
    gap = ChangeRange("a", "working", 5, 9)
    assert apply_ranges(vector, [gap]) == vector
    assert apply_ranges(vector, [gap, ChangeRange("a", "working", 3, 4)]).seq("a", "working") == 9


def test_vector_order() -> None:
    low = VersionVector({("a", "working"): 1})
    high = VersionVector({("a", "working"): 2, ("b", "working"): 1})
    side = VersionVector({("c", "working"): 1})
    assert high.dominates(low) and not low.dominates(high)
    assert low.concurrent_with(side) and not low.concurrent_with(high)
    assert VersionVector({("a", "working"): 0}) == VersionVector()


@given(VECTORS)
def test_vector_wire_round_trip(vector: VersionVector) -> None:
    assert VersionVector.from_wire(vector.to_wire()) == vector


@pytest.mark.parametrize(
    ("wire", "problem"),
    [
        ({"a": 1}, "must be a list"),
        ([["a", "working"]], r"\[node, tier, seq\]"),
        ([["a", "cold", 1]], "tier must be one of"),
        ([["a", "working", -1]], "sequence"),
        ([["a", "working", True]], "sequence"),
        ([["*", "working", 1]], "node id"),
        ([["a", "working", 1], ["a", "working", 2]], "twice"),
    ],
)
def test_vector_from_wire_refuses_bad_shapes(wire: object, problem: str) -> None:
    with pytest.raises(InvalidInputError, match=problem):
        VersionVector.from_wire(wire)


def _version(hlc: int, node: str, version: int, deleted: bool = False) -> VersionInfo:
    return VersionInfo(Stamp(hlc, node), version, deleted)


def test_a_causal_successor_wins_without_a_conflict() -> None:
    outcome = resolve(_version(10, "a", 1), _version(20, "b", 2))
    assert (outcome.incoming_wins, outcome.conflict) == (True, False)
    stale = resolve(_version(20, "b", 2), _version(10, "a", 1))
    assert (stale.incoming_wins, stale.conflict) == (False, False)


def test_concurrent_updates_go_to_the_later_writer() -> None:
    outcome = resolve(_version(10, "a", 2), _version(20, "b", 2))
    assert outcome == resolve(_version(10, "a", 2), _version(20, "b", 2))
    assert (outcome.incoming_wins, outcome.conflict) == (True, True)
    assert outcome.resolution is ConflictResolution.LAST_WRITER


def test_equal_clocks_go_to_the_greater_node_id() -> None:
    outcome = resolve(_version(10, "b", 2), _version(10, "a", 2))
    assert (outcome.incoming_wins, outcome.resolution) == (False, ConflictResolution.NODE_ID)


def test_a_tombstone_wins_against_older_updates_and_loses_to_newer() -> None:
    delete = _version(20, "a", 3, deleted=True)
    older = resolve(delete, _version(15, "b", 3))
    assert (older.incoming_wins, older.resolution) == (False, ConflictResolution.TOMBSTONE)
    newer = resolve(delete, _version(25, "b", 3))
    assert (newer.incoming_wins, newer.resolution) == (True, ConflictResolution.LAST_WRITER)


def test_the_same_version_twice_is_no_change() -> None:
    assert resolve(_version(10, "a", 1), _version(10, "a", 1)).incoming_wins is False
    assert resolve(_version(10, "a", 1), _version(10, "a", 1)).conflict is False


VERSIONS = st.builds(_version, st.integers(1, 30), NODES, st.integers(1, 5), st.booleans())


@given(st.lists(VERSIONS, min_size=1, max_size=6))
def test_resolution_is_order_independent(versions: list[VersionInfo]) -> None:
    # Versions that share a stamp are the same write: keep one of each.
    versions = list({v.stamp: v for v in versions}.values())

    def arrive(stored: VersionInfo, incoming: VersionInfo) -> VersionInfo:
        return incoming if resolve(stored, incoming).incoming_wins else stored

    winners = {
        reduce(arrive, order[1:], order[0])
        for order in itertools.islice(itertools.permutations(versions), 50)
    }
    assert winners == {max(versions, key=lambda v: v.stamp)}


@given(VERSIONS, VERSIONS)
def test_resolution_is_symmetric(first: VersionInfo, second: VersionInfo) -> None:
    if first.stamp == second.stamp:
        return
    one, other = resolve(first, second), resolve(second, first)
    assert one.incoming_wins != other.incoming_wins
    assert (one.conflict, one.resolution) == (other.conflict, other.resolution)
