"""Writes applied once per ``Idempotency-Key`` (the hub service's retries).

The service announces a request's key with :func:`claiming` around the call; the first
write transaction of that call that appends events (every data write does) also inserts
the claim, in the same transaction (``memory.store.db``). So the claim exists exactly when
the write committed: a retry finds it and is answered from the stored response, never
applied again; a request that failed before committing left no claim and may simply be
sent again. If the process stopped after the commit but before the response was stored,
the retry learns that the write was applied (``ConflictError``), not a guess.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from memory.core.errors import ConflictError
from memory.store.tables import Base, utcnow

requests = Base.metadata.tables["idempotent_requests"]


@dataclass
class Claim:
    """The request a call is serving; ``committed`` once its write transaction is."""

    key_id: str
    request_key: str
    operation: str
    user: str | None
    committed: bool = False


_claim: ContextVar[Claim | None] = ContextVar("memory_idempotency_claim", default=None)


@contextmanager
def claiming(
    key_id: str, request_key: str, operation: str, user: str | None
) -> Iterator[Claim]:
    """Within the block, the first committed write claims ``request_key`` of ``key_id``
    (for ``user``, whose forgetting deletes the claim and its stored answer)."""
    claim = Claim(key_id, request_key, operation, user)
    token = _claim.set(claim)
    try:
        yield claim
    finally:
        _claim.reset(token)


def claim_in(connection: Connection) -> Claim | None:
    """Insert the pending claim inside the write transaction on ``connection`` (called by
    ``Database`` before it commits a transaction that appended events). A claim that
    already exists means the same request was applied concurrently (another replica):
    ``ConflictError``, and this transaction rolls back."""
    claim = _claim.get()
    if claim is None or claim.committed:
        return None
    exists = connection.execute(
        sa.select(sa.literal(1)).where(
            requests.c.key_id == claim.key_id, requests.c.request_key == claim.request_key
        )
    ).first()
    if exists is not None:
        raise ConflictError(
            "a request with this Idempotency-Key was applied concurrently; read the result back"
        )
    connection.execute(
        requests.insert().values(
            key_id=claim.key_id,
            request_key=claim.request_key,
            operation=claim.operation,
            user_id=claim.user,
            created_at=utcnow(),
        )
    )
    return claim


@dataclass(frozen=True, slots=True)
class Applied:
    """A request already applied: its operation and, if it was stored, its response."""

    operation: str
    response: Any
    answered: bool


def applied(connection: Connection, key_id: str, request_key: str) -> Applied | None:
    row = connection.execute(
        sa.select(requests.c.operation, requests.c.response_json).where(
            requests.c.key_id == key_id, requests.c.request_key == request_key
        )
    ).first()
    if row is None:
        return None
    answered = row.response_json is not None
    return Applied(row.operation, json.loads(row.response_json) if answered else None, answered)


def expired_count(connection: Connection, before: datetime) -> int:
    """How many claims were made before ``before``."""
    statement = sa.select(sa.func.count()).where(requests.c.created_at < before)
    return int(connection.execute(statement).scalar_one())


def remove_expired(connection: Connection, before: datetime, limit: int) -> int | None:
    """Delete up to ``limit`` claims made before ``before`` (retention); None when there
    were none left. A retry that comes after its claim is gone is applied again, so the
    window must outlast any client's retries (hours, where retries take seconds)."""
    oldest = (
        sa.select(requests.c.key_id, requests.c.request_key)
        .where(requests.c.created_at < before)
        .order_by(requests.c.created_at)
        .limit(limit)
    )
    keys = [tuple(row) for row in connection.execute(oldest)]
    if not keys:
        return None
    connection.execute(
        requests.delete().where(sa.tuple_(requests.c.key_id, requests.c.request_key).in_(keys))
    )
    return len(keys)


def store_response(connection: Connection, claim: Claim, response: Any) -> None:
    connection.execute(
        requests.update()
        .where(requests.c.key_id == claim.key_id, requests.c.request_key == claim.request_key)
        .values(response_json=json.dumps(response, ensure_ascii=False))
    )
