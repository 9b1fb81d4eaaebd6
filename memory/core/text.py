"""Text normalisation shared by indexing and querying, identical on every backend.

Keyword search must find the same memories on SQLite and PostgreSQL, so the database's own
tokenizers are not trusted with it: both store and query the terms produced here (Unicode
case folding, stop words removed, Snowball English stemming), and the database indexes
them verbatim (FTS5 ``unicode61`` / PostgreSQL's ``simple`` configuration).
"""

from __future__ import annotations

import re
import threading
import unicodedata
from functools import lru_cache
from typing import Any

import snowballstemmer

_WORD = re.compile(r"\w+")
_LOCAL = threading.local()

STOPWORDS = frozenset(
    """a about above after again against all am an and any are as at be because been before
    being below between both but by can could did do does doing down during each few for from
    further had has have having he her here hers herself him himself his how i if in into is it
    its itself just me more most my myself no nor not now of off on once only or other our ours
    ourselves out over own same she should so some such than that the their theirs them
    themselves then there these they this those through to too under until up very was we were
    what when where which while who whom why will with would you your yours yourself
    yourselves s t don""".split()
)


def _stemmer() -> Any:
    # A Snowball stemmer keeps the word it is working on in its own attributes, so threads
    # sharing one corrupt each other's stems: one stemmer per thread.
    stemmer = getattr(_LOCAL, "stemmer", None)
    if stemmer is None:
        stemmer = _LOCAL.stemmer = snowballstemmer.stemmer("english")
    return stemmer


@lru_cache(maxsize=8192)
def _stem(word: str) -> str:
    return str(_stemmer().stemWord(word))


def terms(text: str) -> list[str]:
    """The index terms of ``text``, in order, with repeats.

    >>> terms("The runners were running to Paris!")
    ['runner', 'run', 'pari']
    """
    folded = unicodedata.normalize("NFKC", text).casefold()
    return [_stem(word) for word in _WORD.findall(folded) if word not in STOPWORDS]
