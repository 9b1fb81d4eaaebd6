"""The swarm bus's errors; all are ``memory.MemoryStoreError``, so ``memctl`` prints them.

::

    MemoryStoreError
    ├── InvalidInputError          bad input: nothing was written (from memory)
    ├── PermissionDeniedError      a read across swarms the registry does not allow (from memory)
    ├── NotFoundError              no such task, finding or escalation (from memory)
    └── SwarmError
        ├── SwarmUnavailableError  Redis unreachable, refusing the credentials, or too old
        ├── SignatureError         an envelope refused: its custody chain does not verify
        └── LeaseLostError         the task is no longer this worker's (its lease was taken)
"""

from __future__ import annotations

from memory import MemoryStoreError

__all__ = ["LeaseLostError", "SignatureError", "SwarmError", "SwarmUnavailableError"]


class SwarmError(MemoryStoreError):
    """Something the swarm bus could not do."""


class SwarmUnavailableError(SwarmError):
    """Redis cannot be used: unreachable, refusing the credentials, or older than 6."""


class SignatureError(SwarmError):
    """An envelope was refused because its chain of custody does not verify."""

    def __init__(self, tracking_id: str, problems: list[str]) -> None:
        self.tracking_id = tracking_id
        self.problems = problems
        super().__init__(f"envelope {tracking_id} refused: {'; '.join(problems)}")

    def __reduce__(self) -> tuple[type[SignatureError], tuple[str, list[str]]]:
        # Rebuilt from its fields, so it survives pickling (a worker process reporting it).
        return (SignatureError, (self.tracking_id, self.problems))


class LeaseLostError(SwarmError):
    """The task's lease expired and another worker took it, or it was never this worker's."""
