"""API keys of the hub service: create, verify, revoke, list.

A key is ``tmk_<key_id>_<secret>``: ``key_id`` is public and is the row's primary key, so
checking a key is one lookup by id and one hash comparison, never a scan. The secret is
stored only as its scrypt hash with a random salt per key: ``hashlib.scrypt`` (OpenSSL's,
in the standard library, so no new dependency) is memory-hard, so a stolen table does not
turn into working keys. Its cost (about 50 ms) is paid once per key and process: the
derived hash of a presented secret is memoised (``_derive``), and revocation and expiry are
read from the row on every request all the same.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Annotated, Literal

import sqlalchemy as sa
from pydantic import Field
from sqlalchemy.engine import Connection, RowMapping

from memory.core.errors import InvalidInputError, NotFoundError
from memory.core.inputs import AwareDatetime, Identifier, _Input
from memory.store.tables import Base, utcnow

api_keys = Base.metadata.tables["api_keys"]

KEY_PREFIX = "tmk"
# scrypt's cost: n=2**14, r=8 (16 MiB, tens of milliseconds), the parameters the Python
# documentation and OWASP give for interactive logins.
_SCRYPT = {"n": 2**14, "r": 8, "p": 1, "maxmem": 64 * 1024 * 1024, "dklen": 32}
# last_used_at is written at most this often per key: a write on every request would make
# each read a write.
LAST_USE_RESOLUTION = timedelta(seconds=60)


KeyRole = Literal["agent", "admin"]
MAX_KEY_USERS = 1000


class NewApiKey(_Input):
    agent: Identifier
    users: Annotated[list[Identifier], Field(max_length=MAX_KEY_USERS)] = Field(
        default_factory=list
    )
    role: KeyRole = "agent"
    expires_at: AwareDatetime = None


@dataclass(frozen=True, slots=True)
class ApiKey:
    """What a key lets its bearer act as; never the secret."""

    key_id: str
    agent: str
    users: tuple[str, ...]  # empty: any user
    role: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None


@lru_cache(maxsize=4096)
def _derive(secret: str, salt: str) -> str:
    return hashlib.scrypt(secret.encode(), salt=bytes.fromhex(salt), **_SCRYPT).hex()


def _key(row: RowMapping) -> ApiKey:
    return ApiKey(
        key_id=row["key_id"],
        agent=row["agent_id"],
        users=tuple(json.loads(row["users_json"])),
        role=row["role"],
        created_at=row["created_at"],
        expires_at=row["expires_at"],
        revoked_at=row["revoked_at"],
        last_used_at=row["last_used_at"],
    )


def create_key(connection: Connection, item: NewApiKey) -> tuple[ApiKey, str]:
    """Store a new key; return it and its full secret text (shown once, never stored)."""
    now = utcnow()
    if item.expires_at is not None and item.expires_at <= now:
        raise InvalidInputError(f"expires_at: must be in the future, not {item.expires_at}")
    users = tuple(dict.fromkeys(item.users))
    key_id = secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)
    salt = secrets.token_hex(16)
    connection.execute(
        api_keys.insert().values(
            key_id=key_id,
            agent_id=item.agent,
            users_json=json.dumps(list(users)),
            role=item.role,
            salt=salt,
            secret_hash=_derive(secret, salt),
            created_at=now,
            expires_at=item.expires_at,
        )
    )
    key = ApiKey(key_id, item.agent, users, item.role, now, item.expires_at, None, None)
    return key, f"{KEY_PREFIX}_{key_id}_{secret}"


def split_key(text: str) -> tuple[str, str] | None:
    """``(key_id, secret)`` of a key's text, or None when it is not shaped like a key."""
    prefix, _, rest = text.partition("_")
    key_id, _, secret = rest.partition("_")
    if prefix != KEY_PREFIX or len(key_id) != 16 or not secret or len(secret) > 128:
        return None
    return key_id, secret


def verify_key(connection: Connection, key_id: str, secret: str) -> ApiKey | None:
    """The key whose id and secret these are (active or not), or None for no such pair.

    The hash is compared in constant time; an unknown id costs a derivation too, so the
    time taken does not tell whether a key id exists."""
    row = connection.execute(sa.select(api_keys).where(api_keys.c.key_id == key_id)).mappings()
    found = row.first()
    salt = found["salt"] if found is not None else "00" * 16
    derived = _derive(secret, salt)
    if found is None or not hmac.compare_digest(derived, found["secret_hash"]):
        return None
    return _key(found)


def touch_key(connection: Connection, key: ApiKey, now: datetime) -> None:
    """Record a use of ``key`` now (callers do it at most every ``LAST_USE_RESOLUTION``)."""
    connection.execute(
        api_keys.update().where(api_keys.c.key_id == key.key_id).values(last_used_at=now)
    )


def revoke_key(connection: Connection, key_id: str) -> ApiKey:
    """Revoke ``key_id`` now (revoking twice keeps the first time). Raises NotFoundError."""
    connection.execute(
        api_keys.update()
        .where(api_keys.c.key_id == key_id, api_keys.c.revoked_at.is_(None))
        .values(revoked_at=utcnow())
    )
    row = connection.execute(sa.select(api_keys).where(api_keys.c.key_id == key_id)).mappings()
    found = row.first()
    if found is None:
        raise NotFoundError(f"no API key {key_id!r}; see `memctl keys list`")
    return _key(found)


def list_keys(connection: Connection) -> list[ApiKey]:
    """Every key, oldest first."""
    rows = connection.execute(
        sa.select(api_keys).order_by(api_keys.c.created_at, api_keys.c.key_id)
    ).mappings()
    return [_key(row) for row in rows]


def forget_user_in_keys(connection: Connection, user: str) -> int:
    """Take ``user`` out of every key's list of users (forgetting the user); a key that
    acted for that user alone is revoked, since an empty list would mean any user.
    Returns how many keys changed."""
    changed = 0
    rows = connection.execute(
        sa.select(api_keys.c.key_id, api_keys.c.users_json, api_keys.c.revoked_at)
    ).all()
    for row in rows:
        users = json.loads(row.users_json)
        if user not in users:
            continue
        remaining = [item for item in users if item != user]
        values: dict[str, object] = {"users_json": json.dumps(remaining)}
        if not remaining and row.revoked_at is None:
            values["revoked_at"] = utcnow()
        connection.execute(
            api_keys.update().where(api_keys.c.key_id == row.key_id).values(**values)
        )
        changed += 1
    return changed
