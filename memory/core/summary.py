"""The default summarizer: a deterministic extractive summary of a few texts.

Retention consolidates old working memories into one episodic memory with it, and tiered
compaction reuses it. It never invents text: it picks whole sentences of the input.

How the sentences are chosen:

1. Every text is split into sentences (at ``.``, ``!``, ``?``, ``…`` followed by white
   space, after ``。！？``, and at line breaks); white space is collapsed and repeated
   sentences (ignoring case) are kept once.
2. A sentence's terms are its case-folded words of three or more characters (or digits)
   that are not stop words (the keyword index's list). A term weighs as much as the number of
   sentences it appears in: what a session keeps coming back to is what it was about.
3. Sentences are picked greedily by the weight of the terms they add that the summary does
   not cover yet, divided by the square root of their length (so a long sentence must add
   more), ties going to the earlier sentence, as long as they fit in ``max_chars``. A
   sentence that adds no new term is not picked (unless nothing has been picked yet).
4. The picked sentences are joined with line breaks in their original order.

If not even one sentence fits, the best one is cut at a word boundary and ends with ``…``,
so the result never exceeds ``max_chars`` characters (code points) and is empty only when
the input has no text at all.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from memory.core.text import STOPWORDS

DEFAULT_SUMMARY_CHARS = 1000
SEPARATOR = "\n"
ELLIPSIS = "…"

_SENTENCE_BREAK = re.compile(r"(?<=[.!?…])\s+|(?<=[。！？])|\n+")
_WORD = re.compile(r"\w+")
_MIN_TERM_CHARS = 3


@dataclass(frozen=True, slots=True)
class _Sentence:
    position: int
    text: str
    terms: frozenset[str]


def _terms(sentence: str) -> frozenset[str]:
    return frozenset(
        word
        for word in _WORD.findall(sentence.casefold())
        if (len(word) >= _MIN_TERM_CHARS or word.isdigit()) and word not in STOPWORDS
    )


def _sentences(texts: Sequence[str]) -> list[_Sentence]:
    found: list[_Sentence] = []
    seen: set[str] = set()
    for text in texts:
        for part in _SENTENCE_BREAK.split(text):
            sentence = " ".join(part.split())
            key = sentence.casefold()
            if not sentence or key in seen:
                continue
            seen.add(key)
            found.append(_Sentence(len(found), sentence, _terms(sentence)))
    return found


def _truncated(text: str, max_chars: int) -> str:
    if len(text) <= max_chars:
        return text
    room = max_chars - len(ELLIPSIS)
    if room <= 0:
        return ELLIPSIS[:max_chars]
    cut = text[: room + 1]
    # Cut at the last white space when there is one, so no word is broken.
    boundary = cut.rfind(" ")
    kept = cut[:boundary] if boundary > 0 else cut[:room]
    return kept.rstrip() + ELLIPSIS


def extractive_summary(texts: Sequence[str], max_chars: int = DEFAULT_SUMMARY_CHARS) -> str:
    """Summarise ``texts`` by picking their most informative sentences, in their original
    order, in at most ``max_chars`` characters. Deterministic: the same texts always give
    the same summary.

    >>> extractive_summary([
    ...     "The deploy failed. The cache was cold.",
    ...     "The deploy failed again because the cache was cold. Lunch was good.",
    ... ], max_chars=60)
    'The deploy failed again because the cache was cold.'
    """
    if isinstance(texts, str):
        raise TypeError("texts must be a sequence of strings, not one string")
    if max_chars < 1:
        raise ValueError(f"max_chars must be at least 1, not {max_chars}")
    sentences = _sentences(texts)
    if not sentences:
        return ""
    weight = Counter(term for sentence in sentences for term in sentence.terms)

    def value(sentence: _Sentence, covered: set[str]) -> tuple[float, int, int]:
        gain = sum(weight[term] for term in sentence.terms - covered)
        return gain / math.sqrt(len(sentence.text)), gain, -sentence.position

    chosen: list[_Sentence] = []
    covered: set[str] = set()
    used = 0
    remaining = list(sentences)
    while remaining:
        best: _Sentence | None = None
        best_value: tuple[float, int, int] | None = None
        for sentence in remaining:
            cost = len(sentence.text) + (len(SEPARATOR) if chosen else 0)
            if used + cost > max_chars:
                continue
            candidate = value(sentence, covered)
            if chosen and candidate[1] == 0:
                continue
            if best_value is None or candidate > best_value:
                best, best_value = sentence, candidate
        if best is None:
            break
        used += len(best.text) + (len(SEPARATOR) if chosen else 0)
        chosen.append(best)
        covered |= best.terms
        remaining.remove(best)
    if not chosen:
        top = max(sentences, key=lambda sentence: value(sentence, set()))
        return _truncated(top.text, max_chars)
    return SEPARATOR.join(sentence.text for sentence in sorted(chosen, key=lambda s: s.position))
