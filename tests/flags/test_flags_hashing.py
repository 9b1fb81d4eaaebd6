"""murmur3_32 and normalized_hash against golden vectors, mmh3 and the Unleash client."""

from __future__ import annotations

import mmh3
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from UnleashClient.utils import normalized_hash as unleash_normalized_hash

from flags import murmur3_32, normalized_hash
from flags._hashing import GroupHasher

FAST = settings(
    database=None, deadline=None, max_examples=300, suppress_health_check=[HealthCheck.too_slow]
)

# Published MurmurHash3 x86_32 reference values (SMHasher / Wikipedia test vectors).
REFERENCE_MURMUR = [
    (b"", 0, 0x00000000),
    (b"", 1, 0x514E28B7),
    (b"", 0xFFFFFFFF, 0x81F16F39),
    (b"test", 0, 0xBA6BD213),
    (b"Hello, world!", 0, 0xC0363E43),
    (b"The quick brown fox jumps over the lazy dog", 0, 0x2E4FF723),
]

# (group, identifier, bucket). The first two are the values in Unleash's own client tests
# (normalizedHash("123", "gr1") == 73, normalizedHash("999", "groupX") == 25); the rest
# cover the rollout flags, empty parts, non-ASCII, every tail length and a long identifier.
GOLDEN_BUCKETS = [
    ("gr1", "123", 73),
    ("groupX", "999", 25),
    ("USE_ENHANCED_INJECTION", "user-1", 90),
    ("USE_ENHANCED_INJECTION", "user-2", 38),
    ("USE_CROSS_AGENT_SHARING", "session-1", 95),
    ("USE_CROSS_AGENT_SHARING", "7c9e6679-7425-40de-944b-e07fc1f90ae7", 90),
    ("USE_HIERARCHICAL_TIERS", "alice@example.com", 27),
    ("Demo", "123", 13),
    ("Demo", "999", 7),
    ("groupA", "0", 35),
    ("", "", 31),
    ("g", "", 64),
    ("", "id", 58),
    ("flag", "日本語", 47),
    ("flag", "émoji-🚀", 1),
    ("toggle.name-1", "user_42", 76),
    ("a", "b", 32),
    ("abc", "defg", 30),
    ("USE_ENHANCED_INJECTION", "x" * 200, 79),
]


def _id(case: tuple[str, str, int]) -> str:
    group, identifier, _ = case
    return f"{group or '<empty>'}:{identifier[:12] or '<empty>'}"


@pytest.mark.parametrize(("data", "seed", "expected"), REFERENCE_MURMUR)
def test_murmur3_matches_reference_vectors(data: bytes, seed: int, expected: int) -> None:
    assert murmur3_32(data, seed) == expected
    assert mmh3.hash(data, seed=seed, signed=False) == expected


@pytest.mark.parametrize("case", GOLDEN_BUCKETS, ids=_id)
def test_golden_buckets(case: tuple[str, str, int]) -> None:
    group, identifier, expected = case
    assert normalized_hash(group, identifier) == expected
    # The same vector, computed by the C extension and by the Unleash client (which takes
    # the identifier first and the group second).
    assert mmh3.hash(f"{group}:{identifier}", signed=False) % 100 + 1 == expected
    assert unleash_normalized_hash(identifier, group) == expected


def test_str_is_hashed_as_utf8() -> None:
    assert murmur3_32("héllo wörld") == murmur3_32("héllo wörld".encode()) == 2549609076


def test_lone_surrogates_hash_instead_of_raising() -> None:
    # Not valid UTF-8, so no reference exists; the point is that evaluation cannot crash on
    # an odd identifier, and that the value is stable.
    assert murmur3_32("a\udc80b") == murmur3_32("a\udc80b".encode("utf-8", "surrogatepass"))


def test_modulus_is_respected() -> None:
    assert normalized_hash("gr1", "123", modulus=10000) == (
        mmh3.hash("gr1:123", signed=False) % 10000 + 1
    )
    assert {normalized_hash("g", str(i), modulus=3) for i in range(200)} == {1, 2, 3}


@FAST
@given(data=st.binary(min_size=0, max_size=7), seed=st.integers(0, 0xFFFFFFFF))
def test_short_inputs_match_mmh3(data: bytes, seed: int) -> None:
    # Lengths 0..7 exercise every tail length (0, 1, 2, 3) with zero and one full block.
    assert murmur3_32(data, seed) == mmh3.hash(data, seed=seed, signed=False)


@FAST
@given(data=st.binary(min_size=0, max_size=300), seed=st.integers(0, 0xFFFFFFFF))
def test_random_bytes_match_mmh3(data: bytes, seed: int) -> None:
    assert murmur3_32(data, seed) == mmh3.hash(data, seed=seed, signed=False)


# mmh3 crashes the interpreter on lone surrogates, so the text comparison excludes them.
_TEXT = st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=40)


@FAST
@given(text=_TEXT)
def test_non_ascii_text_matches_mmh3(text: str) -> None:
    assert murmur3_32(text) == mmh3.hash(text, signed=False)
    assert len(text.encode()) == 0 or murmur3_32(text) == mmh3.hash(text.encode(), signed=False)


@FAST
@given(group=_TEXT, identifier=_TEXT)
def test_normalized_hash_matches_unleash_client(group: str, identifier: str) -> None:
    bucket = normalized_hash(group, identifier)
    assert 1 <= bucket <= 100
    assert bucket == unleash_normalized_hash(identifier, group)


@FAST
@given(group=_TEXT, identifiers=st.lists(_TEXT, min_size=1, max_size=5))
def test_group_hasher_used_by_evaluation_equals_normalized_hash(
    group: str, identifiers: list[str]
) -> None:
    # Evaluation hashes the "{group}:" prefix once and memoizes buckets; neither shortcut
    # may change a single bucket.
    hasher = GroupHasher(group, memo_limit=2)
    for identifier in identifiers * 2:
        assert hasher.bucket(identifier) == normalized_hash(group, identifier)
        assert (
            hasher.bucket(identifier) == mmh3.hash(f"{group}:{identifier}", signed=False) % 100 + 1
        )
