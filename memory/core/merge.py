"""Shared session context: several agents update one session's context concurrently.

Each update is a *patch* (``{key: value}``) stamped with the agent's timestamp, appended
to the event log as ``context.patch`` on the session's target. The merged context is a
pure function of the patches: for every key, the value of the last patch in the order
``(timestamp, agent, seq)``. The agent id breaks ties between equal timestamps and the log
sequence number breaks ties within one agent, so the order is total and the same wherever
it is computed: every subscriber that folds the ``context.patch`` events it received gets
exactly the state the store saved (``merge_patches``).

Nothing is dropped silently. A key of a new patch that does not win, or that overrides a
value written by another agent after what the patch's author had ``seen``, produces a
``context.conflict`` event naming both values (the kept and the overridden one, each with
its agent, timestamp and sequence number). Both values stay in the log.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from memory.core.types import MemoryEvent

PATCH_OPERATION = "context.patch"
CONFLICT_OPERATION = "context.conflict"


@dataclass(frozen=True, slots=True)
class ContextWrite:
    """One key written by one patch."""

    agent: str
    timestamp: datetime
    seq: int
    value: Any

    def order(self) -> tuple[datetime, str, int]:
        """The total order of writes: time, then agent id, then log position."""
        return (self.timestamp, self.agent, self.seq)

    def as_dict(self) -> dict[str, Any]:
        return {
            "agent": self.agent,
            "timestamp": self.timestamp.isoformat(),
            "seq": self.seq,
            "value": self.value,
        }


@dataclass(frozen=True, slots=True)
class ContextConflict:
    """A key two agents wrote differently: ``kept`` is in the merged context, and
    ``overridden`` is what lost (it stays in the log)."""

    key: str
    kept: ContextWrite
    overridden: ContextWrite


@dataclass(frozen=True, slots=True)
class MergedContext:
    """The result of ``Scope.merge_context``: the merged state, the checkpoint and patch
    event that hold it, and the conflicts this patch produced."""

    state: dict[str, Any]
    checkpoint_seq: int
    event_seq: int
    conflicts: tuple[ContextConflict, ...]


def _writes(events: Iterable[MemoryEvent]) -> dict[str, list[ContextWrite]]:
    by_key: dict[str, list[ContextWrite]] = {}
    for event in events:
        if event.operation != PATCH_OPERATION or event.data is None:
            continue
        stamp = datetime.fromisoformat(event.data["timestamp"])
        for key, value in event.data["patch"].items():
            by_key.setdefault(key, []).append(ContextWrite(event.agent_id, stamp, event.seq, value))
    return by_key


def merge_patches(events: Iterable[MemoryEvent]) -> dict[str, Any]:
    """The merged context of a session from its ``context.patch`` events (any order).

    >>> from memory.store.tables import utcnow
    >>> def patch(seq, agent, when, **values):
    ...     data = {"session": "s", "timestamp": when, "patch": values}
    ...     return MemoryEvent(seq, utcnow(), "u", agent, PATCH_OPERATION, "session:s", data)
    >>> merge_patches([patch(2, "coder", "2026-01-01T10:00:00+00:00", step="build"),
    ...                patch(1, "planner", "2026-01-01T10:00:00+00:00", step="plan")])
    {'step': 'build'}
    """
    return {
        key: max(writes, key=ContextWrite.order).value
        for key, writes in sorted(_writes(events).items())
    }


def conflicts_of(
    events: Iterable[MemoryEvent], patch: MemoryEvent, seen: int | None
) -> list[ContextConflict]:
    """The conflicts ``patch`` (already among ``events``) produced: a key it wrote that
    lost to a later-stamped write, or that overrode another agent's different value the
    author had not seen (written after ``seen``; None means the author saw everything)."""
    by_key = _writes(events)
    found = []
    for key, value in sorted((patch.data or {}).get("patch", {}).items()):
        writes = by_key[key]
        mine = next(write for write in writes if write.seq == patch.seq)
        winner = max(writes, key=ContextWrite.order)
        if winner is not mine:
            if winner.value != value:
                found.append(ContextConflict(key, winner, mine))
            continue
        unseen = [
            write
            for write in writes
            if write is not mine
            and write.agent != patch.agent_id
            and seen is not None
            and write.seq > seen
            and write.value != value
        ]
        if unseen:
            found.append(ContextConflict(key, mine, max(unseen, key=ContextWrite.order)))
    return found
