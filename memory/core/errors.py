"""Exceptions raised by the memory layer.

Every error the library raises on purpose derives from ``MemoryStoreError``, so an agent
runtime can catch one type::

    MemoryStoreError
    ├── InvalidInputError (ValueError)     a public input broke a rule; names field and limit
    │   └── QuotaExceededError             the write would take the user past a quota
    ├── NotFoundError (LookupError)        no such memory, entity or session in this scope
    │   └── SessionExpiredError            the session's saved state has expired
    ├── PermissionDeniedError (PermissionError)  the call needs the admin role or the owner
    ├── AuthenticationError                the hub service did not accept the API key
    ├── ConflictError                      the write collides with what is stored
    │   └── StaleVersionError              optimistic locking: the row changed since it was read
    ├── SchemaError                        the database schema does not fit this code
    ├── ArchiveError                       a migration archive is missing, corrupt or unusable
    ├── DatabaseUnavailableError           the database could not be reached or stayed locked
    ├── DeadlineExceededError              the call missed its deadline; nothing was written
    ├── StorageError                       the database could not store the write (disk full, I/O)
    ├── EmbedderUnavailableError           the embedding model cannot be loaded
    ├── EmbeddedOnlyError                  a member of the embedded store a remote store lacks
    ├── ExporterUnavailableError           a metrics exporter's extra is not installed
    └── MetricsSourceError                 memctl gates could not read Prometheus
"""

from __future__ import annotations


class MemoryStoreError(Exception):
    """Base class of every error raised by the memory layer."""


class FlagOffWarning(UserWarning):
    """A rollout flag that is off changed what a call did (a tier ignored, an empty
    injection, a grant that cannot apply yet). Issued once per flag and process; the
    message names the flag and the command that turns it on."""


class InvalidInputError(MemoryStoreError, ValueError):
    """A public input failed validation; the message names the field and the limit."""


class QuotaExceededError(InvalidInputError):
    """The write would take the user past a per-user quota (``memory.core.inputs.Quotas``);
    nothing of it was written."""


class NotFoundError(MemoryStoreError, LookupError):
    """The requested object does not exist in the caller's scope."""


class SessionExpiredError(NotFoundError):
    """The session exists but its saved state is past its expiry."""


class ConflictError(MemoryStoreError):
    """The write collides with the stored data (same content, concurrent checkpoint)."""


class StaleVersionError(ConflictError):
    """An update named a version that is no longer current (optimistic locking)."""

    def __init__(self, memory_id: int, expected: int, current: int) -> None:
        super().__init__(
            f"memory {memory_id} is at version {current}, not {expected}: "
            "it changed since you read it; read it again and retry"
        )
        self.memory_id = memory_id
        self.expected = expected
        self.current = current


class SchemaError(MemoryStoreError):
    """The database schema is missing, too old for the call, or newer than this code."""


class ArchiveError(MemoryStoreError):
    """A migration archive could not be written, verified or restored."""


class StoreClosedError(MemoryStoreError):
    """The ``Memory`` (or a scope or graph it handed out) was used after ``close()``."""


class DatabaseUnavailableError(MemoryStoreError):
    """The database could not be reached, or stayed locked past the retry budget."""


class DeadlineExceededError(MemoryStoreError):
    """The call could not finish by its deadline (a hub request's timeout): it was refused
    before it began or rolled back before it committed, so nothing of it was written."""


class StorageError(MemoryStoreError):
    """The database could not store the write: its disk is full, or an I/O error. The
    transaction was rolled back, so nothing of it was written."""


class EmbedderUnavailableError(MemoryStoreError):
    """The embedding model cannot be loaded (for example, the extra is not installed)."""


class EmbeddedOnlyError(MemoryStoreError):
    """A member of the API that exists only in an embedded store (``Memory.open`` with a
    database URL) was used on a remote one (a hub service): the message names it."""

    def __init__(self, member: str) -> None:
        super().__init__(
            f"{member} exists only in an embedded store (Memory.open with a database URL); "
            "this store is a hub service (http:// or grpc://), which does not serve it: use it "
            "where the database is, or through the hub's operator commands"
        )
        self.member = member


class ExporterUnavailableError(MemoryStoreError):
    """A metrics exporter was asked for but its optional extra is not installed."""


class PermissionDeniedError(MemoryStoreError, PermissionError):
    """The call needs a role the caller does not have (``Memory.open(..., role="admin")``),
    or is the owner's alone (changing a shared memory's tier or metadata)."""


class AuthenticationError(MemoryStoreError):
    """The hub service's API key was missing, unknown, revoked or expired (HTTP 401);
    ``reason`` is that word (``missing``, ``malformed``, ``invalid``, ``revoked``,
    ``expired``), for metrics."""

    def __init__(self, message: str, reason: str = "invalid") -> None:
        super().__init__(message)
        self.reason = reason


class MetricsSourceError(MemoryStoreError):
    """A metrics source could not be read (Prometheus unreachable or answering an error)."""
