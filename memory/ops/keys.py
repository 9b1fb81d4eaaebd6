"""API keys of the hub service (``memctl keys create``, ``revoke``, ``list``) and the check
every request of ``memctl serve`` passes (:func:`authenticate`).

A key carries the identity a request acts with: its agent, the users it may act for (none
listed: any) and its role (``admin`` may also act as any agent and use the admin verbs).
Nothing in a request body can widen that.

>>> created = create_key("sqlite:///memory.db", "planner", users=["ada"])  # doctest: +SKIP
>>> created.secret  # shown once; only a hash is stored  # doctest: +SKIP
'tmk_…'
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.engine import URL

from memory.client import Memory
from memory.core.errors import AuthenticationError, ConflictError, InvalidInputError, SchemaError
from memory.core.inputs import as_list, validate
from memory.store import idempotency
from memory.store import keys as store
from memory.store.keys import ApiKey, KeyRole, NewApiKey
from memory.store.schema import KEYS_REVISION, revision_at_least
from memory.store.tables import utcnow

__all__ = [
    "ApiKey",
    "CreatedKey",
    "apply_once",
    "authenticate",
    "create_key",
    "list_keys",
    "revoke_key",
]
_REQUEST_KEY = re.compile(r"[A-Za-z0-9_.:-]{8,64}")

DatabaseURL = str | URL | None


@dataclass(frozen=True, slots=True)
class CreatedKey:
    """A new key and its secret: the only time the secret is available."""

    key: ApiKey
    secret: str


def _keys_store(database: DatabaseURL) -> Memory:
    return Memory.open(database, embedder=None, role="admin")


def _require_keys(memory: Memory) -> None:
    if not revision_at_least(memory.revision, KEYS_REVISION):
        raise SchemaError(
            f"API keys need schema revision {KEYS_REVISION}; the database is at "
            f"{memory.revision}: run `memctl migrate`"
        )


def create_key(
    database: DatabaseURL,
    agent: str,
    *,
    users: Iterable[str] = (),
    role: KeyRole = "agent",
    expires_at: datetime | None = None,
) -> CreatedKey:
    """Create a key that acts as ``agent`` for ``users`` (none: any user) with ``role``,
    valid until ``expires_at`` (aware; None: until revoked)."""
    item = validate(
        NewApiKey,
        {"agent": agent, "users": as_list(users, "users"), "role": role, "expires_at": expires_at},
    )
    with _keys_store(database) as memory:
        _require_keys(memory)
        key, secret = memory.maintenance.db.write(
            lambda connection: store.create_key(connection, item)
        )
    return CreatedKey(key, secret)


def revoke_key(database: DatabaseURL, key_id: str) -> ApiKey:
    """Revoke the key ``key_id`` now; requests with it fail from the next one on."""
    with _keys_store(database) as memory:
        _require_keys(memory)
        return memory.maintenance.db.write(lambda connection: store.revoke_key(connection, key_id))


def list_keys(database: DatabaseURL) -> list[ApiKey]:
    """Every key with its last use (to the minute), revoked and expired ones included."""
    with _keys_store(database) as memory:
        _require_keys(memory)
        return memory.maintenance.db.read(store.list_keys)


def authenticate(memory: Memory, credential: str | None) -> ApiKey:
    """The active key ``credential`` is, its use recorded; else ``AuthenticationError``
    with the reason (missing, malformed, unknown, revoked, expired), which never says
    anything about users."""
    if not credential:
        raise AuthenticationError(
            "no API key: send it as 'Authorization: Bearer <key>'", "missing"
        )
    parts = store.split_key(credential)
    if parts is None:
        raise AuthenticationError(
            "the API key is malformed (expected tmk_<id>_<secret>)", "malformed"
        )
    _require_keys(memory)
    db = memory.maintenance.db
    key = db.read(lambda connection: store.verify_key(connection, *parts))
    if key is None:
        raise AuthenticationError("the API key is not valid")
    now = utcnow()
    if key.revoked_at is not None:
        raise AuthenticationError("the API key was revoked", "revoked")
    if key.expires_at is not None and key.expires_at <= now:
        raise AuthenticationError("the API key has expired", "expired")
    if key.last_used_at is None or now - key.last_used_at >= store.LAST_USE_RESOLUTION:
        db.write(lambda connection: store.touch_key(connection, key, now))
    return key


def apply_once(
    memory: Memory,
    key: ApiKey,
    request_key: str,
    operation: str,
    user: str | None,
    run: Callable[[], Any],
) -> Any:
    """The result of ``run`` (a write of ``operation`` for ``user``; None for an admin
    verb), applied once per ``request_key`` of ``key``: a request seen before is answered
    with its stored result and not run again (see ``memory.store.idempotency``); one whose
    write committed but whose answer was lost raises ``ConflictError`` saying so."""
    if not _REQUEST_KEY.fullmatch(request_key):
        raise InvalidInputError(
            "Idempotency-Key: 8 to 64 letters, digits or ._:- (a UUID, for example)"
        )
    db = memory.maintenance.db
    seen = db.read(lambda connection: idempotency.applied(connection, key.key_id, request_key))
    if seen is not None:
        if seen.operation != operation:
            raise InvalidInputError(
                f"Idempotency-Key: already used for {seen.operation!r}, not {operation!r}"
            )
        if not seen.answered:
            raise ConflictError(
                "the write with this Idempotency-Key was applied, but its answer was lost "
                "(the replica stopped); read the result back instead of retrying"
            )
        return seen.response
    with idempotency.claiming(key.key_id, request_key, operation, user) as claim:
        result = run()
    if claim.committed:
        db.write(lambda connection: idempotency.store_response(connection, claim, result))
    return result
