"""How search candidates are scored: the evidence for each memory fused into one number.

Every input is a value both backends return identically (the stored terms, the stored
vectors, the memory rows and the order of their ids), and all arithmetic happens here in
Python, so SQLite and PostgreSQL rank the same candidates the same way.

A memory's score is the sum of

- its **relevance**: ``vector`` x cosine similarity (clipped at 0) + ``keyword`` x BM25
  divided by the best BM25 of the candidates;
- **context**: the larger of ``previous`` x the relevance of the memory stored just before
  it in the same session and ``following`` x the relevance of the memory stored just after
  it (same user, agent and session, in storage order). A memory is often understood
  through the one before it: an answer through its question, a result through the step
  that led to it. Memories stored without a session have no neighbours;
- **subject**: ``subject`` when the memory's first word is capitalised and the query names
  it (say "What does Ada drink?" and "Ada prefers green tea"; a speaker label
  "Ada: ..." is such a first word too). Query words count as names when capitalised and
  not the query's first word;
- **metadata**: ``metadata`` x the share of the query's terms found in the memory's
  metadata values (dates, tags, project names: "on 9 November, 2022" meets a memory whose
  ``date`` says so);
- small priors: ``importance`` x the memory's importance, plus its ``tier`` bonus.
"""

from __future__ import annotations

import bisect
import re
import sys
from array import array
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, NamedTuple

from memory.core.inputs import canonical_json
from memory.core.text import terms

_WORD = re.compile(r"\w+")

BM25_K1 = 1.2
# Memories are short (a sentence or two), so their lengths say little about how diluted a
# match is: length normalisation is kept mild (0.75 is the usual value for documents).
BM25_B = 0.3


@dataclass(frozen=True, slots=True)
class FusionWeights:
    """How the evidence is combined (see the module docstring); tuned on the LoCoMo
    development subset (``benchmarks/locomo_recall.py``)."""

    vector: float = 0.55
    keyword: float = 0.45
    previous: float = 0.5
    following: float = 0.3
    subject: float = 0.15
    metadata: float = 0.3
    importance: float = 0.02
    tier: dict[str, float] = field(
        default_factory=lambda: {"working": 0.0, "episodic": 0.0, "semantic": 0.01}
    )
    bm25_k1: float = BM25_K1
    bm25_b: float = BM25_B


Neighbours = tuple[int | None, int | None]


class SessionOrder:
    """The ids of each (agent, session) in storage order, to find a memory's neighbours.

    Ids only grow, so appends are the rule and an insertion in the middle the exception.
    The caller passes the key it filed a memory under and holds the lock of the index
    this order belongs to. Each session's ids are an ``array('q')``: 8 bytes an id, where
    a list of Python ints costs 40.
    """

    def __init__(self, groups: dict[tuple[str, str], array[int]] | None = None) -> None:
        # ``groups``: each key's ids, ascending and distinct (an order rebuilt in bulk).
        self._ids: dict[tuple[str, str], array[int]] = groups if groups is not None else {}

    def add(self, memory_id: int, key: tuple[str, str]) -> None:
        ordered = self._ids.get(key)
        if ordered is None:
            ordered = self._ids[key] = array("q")
        if not ordered or ordered[-1] < memory_id:
            ordered.append(memory_id)
            return
        at = bisect.bisect_left(ordered, memory_id)
        if at == len(ordered) or ordered[at] != memory_id:
            ordered.insert(at, memory_id)

    def discard(self, memory_id: int, key: tuple[str, str]) -> None:
        ordered = self._ids.get(key)
        if not ordered:
            return
        at = bisect.bisect_left(ordered, memory_id)
        if at < len(ordered) and ordered[at] == memory_id:
            del ordered[at]
            if not ordered:
                del self._ids[key]

    def neighbours(self, memory_id: int, key: tuple[str, str]) -> Neighbours:
        """The ids stored just before and just after ``memory_id`` under ``key``."""
        ordered = self._ids.get(key)
        if not ordered:
            return None, None
        at = bisect.bisect_left(ordered, memory_id)
        if at == len(ordered) or ordered[at] != memory_id:
            return None, None
        return (ordered[at - 1] if at > 0 else None), (
            ordered[at + 1] if at + 1 < len(ordered) else None
        )

    def nbytes(self) -> int:
        """Memory held: the mapping, its keys (the names in them are the index's) and the
        id arrays."""
        total = sys.getsizeof(self._ids)
        for key, ordered in self._ids.items():
            total += sys.getsizeof(key) + sys.getsizeof(ordered)
        return total


def relevance(
    ids: Iterable[int],
    keyword: Mapping[int, float],
    vector: Mapping[int, float],
    best_keyword: float,
    weights: FusionWeights,
) -> dict[int, float]:
    """The weighted keyword and vector evidence of each id (0 for no evidence)."""
    scale = best_keyword or 1.0
    return {
        memory_id: weights.vector * max(vector.get(memory_id, 0.0), 0.0)
        + weights.keyword * keyword.get(memory_id, 0.0) / scale
        for memory_id in ids
    }


def remembered(
    known: dict[int, float], ids: Sequence[int], read: Callable[[list[int]], Mapping[int, float]]
) -> dict[int, float]:
    """The scores of ``ids``: those in ``known``, and the rest from ``read`` (kept in
    ``known``), so a search reads each memory's score once. Ids without one are left out."""
    missing = [memory_id for memory_id in ids if memory_id not in known]
    if missing:
        known.update(read(missing))
    return {memory_id: known[memory_id] for memory_id in ids if memory_id in known}


class Facts(NamedTuple):
    """What ranking reads of a memory besides its evidence."""

    content: str
    importance: float
    tier: str
    metadata: Mapping[str, Any]


class Ranked(NamedTuple):
    """One ranked memory: its fused score and the evidence behind it."""

    memory_id: int
    score: float
    keyword_score: float
    vector_score: float


def rank(
    facts: Mapping[int, Facts],
    keyword: Mapping[int, float],
    vector: Mapping[int, float],
    adjacent: Mapping[int, Neighbours],
    query: str,
    wanted: list[str],
    weights: FusionWeights,
) -> list[Ranked]:
    """Score the memories of ``facts`` (the candidates that passed every filter), best
    first.

    ``keyword`` holds raw BM25 scores and ``vector`` cosine similarities, by id, for every
    candidate (filtered out or not: the keyword scale is the best of all of them);
    ``adjacent`` the (previous, following) ids of a memory in its session, where known.
    A memory with neither keyword nor vector evidence is left out.
    """
    best_keyword = max(keyword.values(), default=0.0)
    own = relevance(facts, keyword, vector, best_keyword, weights)
    entities = query_entities(query)
    wanted_set = set(wanted)
    ranked = []
    for memory_id, fact in facts.items():
        similarity = max(vector.get(memory_id, 0.0), 0.0)
        keyword_share = keyword.get(memory_id, 0.0) / (best_keyword or 1.0)
        if keyword_share == 0.0 and similarity == 0.0:
            continue  # no evidence at all: a vector candidate only by elimination
        before, after = adjacent.get(memory_id, (None, None))
        context = max(
            weights.previous * own.get(before, 0.0) if before is not None else 0.0,
            weights.following * own.get(after, 0.0) if after is not None else 0.0,
        )
        score = own[memory_id] + context
        if entities and subject(fact.content) in entities:
            score += weights.subject
        if weights.metadata and fact.metadata and wanted_set:
            score += (
                weights.metadata * metadata_overlap(fact.metadata, wanted_set) / len(wanted_set)
            )
        score += weights.importance * fact.importance + weights.tier.get(fact.tier, 0.0)
        ranked.append(
            Ranked(memory_id, round(score, 6), round(keyword_share, 6), round(similarity, 6))
        )
    ranked.sort(key=lambda hit: (-hit.score, -hit.memory_id))
    return ranked


def query_entities(text: str) -> frozenset[str]:
    """The terms of the query's capitalised words, its first word excepted: the names it
    mentions (people, places, products)."""
    words = _WORD.findall(text)
    return frozenset(term for word in words[1:] if word[:1].isupper() for term in terms(word))


def subject(content: str) -> str | None:
    """The term of a memory's first word when that word is capitalised (who or what the
    memory is about, or who said it), else None."""
    match = _WORD.search(content)
    if match is None or not match.group()[:1].isupper():
        return None
    found = terms(match.group())
    return found[0] if found else None


def metadata_overlap(metadata: Mapping[str, Any], wanted: set[str]) -> int:
    """How many of the query's terms occur in the memory's metadata values."""
    found: set[str] = set()
    for value in metadata.values():
        if isinstance(value, str):
            text = value
        elif isinstance(value, int | float) and not isinstance(value, bool):
            text = str(value)
        else:
            text = canonical_json(value)
        found |= _value_terms(text)
    return len(wanted & found)


@lru_cache(maxsize=4096)
def _value_terms(text: str) -> frozenset[str]:
    return frozenset(terms(text))
