"""Circuit breakers (pybreaker) around what the hub calls that can fail slowly: today the
embedding model. A breaker that has seen ``fail_max`` failures in a row opens: calls fail
at once instead of waiting on a broken model (search answers from keywords meanwhile,
as it does whenever the embedder fails), and after ``reset_timeout`` one call is let
through to try again. Each breaker's state is in ``/ready`` and in the metric
``memory_service_breaker_state`` (0 closed, 1 half-open, 2 open).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import pybreaker

from memory import Embedder

STATE_VALUES = {"closed": 0, "half-open": 1, "open": 2}


def breaker(
    name: str, fail_max: int = 5, reset_timeout: float = 30.0
) -> pybreaker.CircuitBreaker:
    """A breaker named ``name`` (its label in /ready and the metrics)."""
    return pybreaker.CircuitBreaker(fail_max=fail_max, reset_timeout=reset_timeout, name=name)


class GuardedEmbedder:
    """``embedder`` behind ``guard``: the same ``Embedder``, failing fast while open."""

    def __init__(self, embedder: Embedder, guard: pybreaker.CircuitBreaker) -> None:
        self.embedder = embedder
        self.guard = guard

    @property
    def model_name(self) -> str:
        return self.embedder.model_name

    @property
    def dimension(self) -> int:
        return self.embedder.dimension

    def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        result: npt.NDArray[np.float32] = self.guard.call(self.embedder.embed, texts)
        return result
