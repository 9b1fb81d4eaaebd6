"""Circuit breakers (pybreaker) around what the hub calls that can fail slowly: the
embedding model, the ``memory:updates`` bus (Redis, or PostgreSQL LISTEN/NOTIFY) and the
Unleash flag provider. A breaker that has seen ``fail_max`` failures in a row opens: calls
fail at once instead of waiting on a broken dependency, and after ``reset_timeout`` one
call is let through to try again. While one is open the hub degrades but serves:

- **embedder**: search answers from keywords, as it does whenever the embedder fails;
- **redis** / **postgresql** (the bus): writes commit without ringing the doorbell and
  subscribers read the event log instead of listening (``memory.updates``);
- **unleash**: the flags keep their last known state (``flags.FlagEvaluator``).

Each breaker's state is in ``/ready`` and in the metric ``memory_service_breaker_state``
(0 closed, 1 half-open, 2 open), an instrument of ``memory.telemetry``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import numpy.typing as npt
import pybreaker

from flags import FlagDefinition, FlagProvider
from memory import Embedder

STATE_VALUES = {"closed": 0, "half-open": 1, "open": 2}


def breaker(
    name: str, fail_max: int = 5, reset_timeout: float = 30.0
) -> pybreaker.CircuitBreaker:
    """A breaker named ``name`` (its label in /ready and the metrics)."""
    return pybreaker.CircuitBreaker(fail_max=fail_max, reset_timeout=reset_timeout, name=name)


class Breakers:
    """The service's breakers by name: what /ready lists and the breaker gauge reads."""

    def __init__(self, fail_max: int = 5, reset_timeout: float = 30.0) -> None:
        self.fail_max = fail_max
        self.reset_timeout = reset_timeout
        self.guards: dict[str, pybreaker.CircuitBreaker] = {}

    def make(self, name: str) -> pybreaker.CircuitBreaker:
        """A new breaker ``name`` with the service's thresholds, not yet listed here."""
        return breaker(name, self.fail_max, self.reset_timeout)

    def add(
        self, name: str, guard: pybreaker.CircuitBreaker | None = None
    ) -> pybreaker.CircuitBreaker:
        """List ``guard`` (default: a new breaker) under ``name``; return it."""
        self.guards[name] = guard if guard is not None else self.make(name)
        return self.guards[name]

    def states(self) -> dict[str, str]:
        """Each breaker's state: ``closed``, ``half-open`` or ``open``."""
        return {name: guard.current_state for name, guard in self.guards.items()}

    def breaker_states(self) -> Mapping[str, int]:
        """Each breaker's state as the gauge's number (``STATE_VALUES``)."""
        return {name: STATE_VALUES[state] for name, state in self.states().items()}


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


class GuardedFlagProvider:
    """A ``flags.FlagProvider`` behind ``guard``. The Unleash provider's snapshot does no
    I/O (its client polls on a thread of its own) but raises once the server has been
    silent for too long; the breaker turns those failures into a state an operator sees,
    and while it is open the evaluator keeps the last known flags without asking."""

    def __init__(self, provider: FlagProvider, guard: pybreaker.CircuitBreaker) -> None:
        self.provider = provider
        self.guard = guard

    def snapshot(self) -> Mapping[str, FlagDefinition]:
        result: Mapping[str, FlagDefinition] = self.guard.call(self.provider.snapshot)
        return result
