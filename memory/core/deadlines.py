"""The deadline of the call under way: a ``time.monotonic()`` value set by whoever bounds
the call (the hub service, per request), read by the store, which refuses to begin or to
commit a transaction past it (``memory.store.db``).

A context variable, so it follows the call into the worker thread that runs it and goes
no further. This module reads no clock: callers pass the deadline and compare with theirs.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

_DEADLINE: ContextVar[float | None] = ContextVar("memory_deadline", default=None)


def current() -> float | None:
    """The deadline of the call under way, or None when it has none."""
    return _DEADLINE.get()


@contextmanager
def bounded(deadline: float | None) -> Iterator[None]:
    """Within the block, calls end by ``deadline`` (or by an earlier one already set)."""
    outer = _DEADLINE.get()
    if deadline is None or (outer is not None and outer <= deadline):
        yield
        return
    token = _DEADLINE.set(deadline)
    try:
        yield
    finally:
        _DEADLINE.reset(token)
