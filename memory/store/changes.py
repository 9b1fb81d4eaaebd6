"""Events that carry the change: row images sealed under a per-user data key.

Format 1 (``CHANGE_FORMAT``). An event's change is a JSON document
``{"rows": [{"table": T, "op": "upsert", "row": {column: value}}, {"table": T, "op":
"delete", "key": {column: value}}]}``: the rows of the source tables (memories, their
metadata, preferences, …) as the write left them, or the keys of the rows it deleted,
in the order it made them. Values are JSON: datetimes as ISO 8601 strings in UTC, and JSON
columns (``*_json``) as the text stored. Derived tables (keyword terms, embeddings, the
change log, FTS) are not in it: a replay rebuilds them. A reader that meets a format it
does not know stops; a new format gets a new number.

Sealing. The document is encrypted with AES-256-GCM (``cryptography``) under the data key
of the event's user, with the event's number and user as associated data, so a sealed
change moved to another event does not open. ``change_sealed`` is ``base64(nonce ||
ciphertext)``. Each user's data key is 32 random bytes, kept in ``memory_event_keys``
wrapped (AES-GCM again, the user id as associated data) by the deployment's event key,
which comes from ``$MEMORY_EVENT_KEY`` (HKDF-SHA256 of it) and is never stored in the
database. The chain hash covers the sealed bytes (``memory.store.events.event_hash``).

Crypto-shredding. Forgetting a user deletes their data key (``shred``): the sealed changes
stay in the log, still covered by the chain, and can no longer be opened by anyone.

Changes that belong to no user (the flags' state and audit, the maintenance run log) are
sealed under the data key of ``OPERATOR`` (the user id ``""``, which no user can have),
which no forget deletes. An event's ``user_id`` is also ``""`` once it is redacted: a replay
tells the two apart by ``redacted``.

Without ``$MEMORY_EVENT_KEY`` events carry no change (as before revision 0012) and the log
cannot rebuild the database.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from memory.core.errors import InvalidInputError, MemoryStoreError
from memory.core.inputs import canonical_json
from memory.store.tables import Base, utcnow

keys_table = Base.metadata.tables["memory_event_keys"]

EVENT_KEY_ENV = "MEMORY_EVENT_KEY"
# Where a transaction finds the deployment's event key (``memory.store.db.Database``).
EVENT_KEY_INFO = "memory.event_key"
MIN_EVENT_KEY_CHARS = 32
CHANGE_FORMAT = 1
# Events from before revision 0012: identifiers only, nothing to replay.
NOT_RECONSTRUCTIBLE = 0
# Such an event whose target still existed at revision 0014: the snapshot that revision
# appended carries its rows (migrations/versions/0014_convert_old_events.py).
IN_SNAPSHOT = -1
# The owner of changes that belong to no user (see the module docstring).
OPERATOR = ""
_NONCE_BYTES = 12
_HKDF_INFO = b"tiered-memory event key v1"


class ChangeKeyError(MemoryStoreError):
    """A sealed change or a wrapped key does not open: another event key, or tampering."""


def _aead() -> Any:
    try:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    except ImportError as error:  # an optional extra, like redis for the updates bus
        raise InvalidInputError(
            f"{EVENT_KEY_ENV} needs the cryptography package; install it with: "
            "pip install 'tiered-memory[events]'"
        ) from error
    return AESGCM


def event_key(environ: Mapping[str, str]) -> bytes | None:
    """The deployment's event key from ``$MEMORY_EVENT_KEY`` (None if unset), stretched to
    32 bytes with HKDF-SHA256; at least 32 characters, or ``InvalidInputError``."""
    value = environ.get(EVENT_KEY_ENV, "")
    if not value:
        return None
    if len(value) < MIN_EVENT_KEY_CHARS:
        raise InvalidInputError(
            f"{EVENT_KEY_ENV}: the event key must be at least {MIN_EVENT_KEY_CHARS} characters "
            f"(it has {len(value)}); generate one with: python -c "
            "'import secrets; print(secrets.token_hex(32))'"
        )
    _aead()
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    return HKDF(hashes.SHA256(), 32, salt=None, info=_HKDF_INFO).derive(value.encode("utf-8"))


def deployment_key(connection: Connection) -> bytes | None:
    """The event key the transaction on ``connection`` runs with, if any."""
    key: bytes | None = connection.info.get(EVENT_KEY_INFO)
    return key


def upsert(table: sa.Table, row: Mapping[Any, Any]) -> dict[str, Any]:
    """A change entry: ``row`` of ``table`` as the write left it."""
    return {"table": table.name, "op": "upsert", "row": _json_ready(table, row)}


def delete(table: sa.Table, key: Mapping[str, Any]) -> dict[str, Any]:
    """A change entry: the row of ``table`` with primary key ``key`` was deleted."""
    return {"table": table.name, "op": "delete", "key": _json_ready(table, key)}


def _json_ready(table: sa.Table, row: Mapping[Any, Any]) -> dict[str, Any]:
    return {
        name: value.isoformat() if isinstance(value, datetime) else value
        for name, value in row.items()
        if name in table.c
    }


def _seal(key: bytes, plaintext: bytes, associated: str) -> str:
    nonce = os.urandom(_NONCE_BYTES)
    sealed = _aead()(key).encrypt(nonce, plaintext, associated.encode("utf-8"))
    return base64.b64encode(nonce + sealed).decode("ascii")


def _open(key: bytes, sealed: str, associated: str) -> bytes:
    from cryptography.exceptions import InvalidTag

    raw = base64.b64decode(sealed.encode("ascii"), validate=True)
    try:
        plaintext: bytes = _aead()(key).decrypt(
            raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], associated.encode("utf-8")
        )
    except InvalidTag as error:
        raise ChangeKeyError(
            f"a sealed value does not open ({associated}): another {EVENT_KEY_ENV}, or tampering"
        ) from error
    return plaintext


def _insert(connection: Connection) -> Any:
    if connection.dialect.name == "postgresql":
        return postgresql.insert(keys_table)
    return sqlite.insert(keys_table)


def data_key(connection: Connection, user: str, *, create: bool) -> bytes | None:
    """``user``'s data key, unwrapped; made (and stored wrapped) if ``create`` and missing.
    None if there is no event key, or the key is gone (shredded) and not ``create``."""
    master = deployment_key(connection)
    if master is None:
        return None
    wrapped = connection.execute(
        sa.select(keys_table.c.wrapped_key).where(keys_table.c.user_id == user)
    ).scalar()
    if wrapped is None:
        if not create:
            return None
        # Two writers of a new user may race here: the first insert wins and both use it.
        connection.execute(
            _insert(connection)
            .values(
                user_id=user,
                wrapped_key=_seal(master, os.urandom(32), f"key:{user}"),
                created_at=utcnow(),
            )
            .on_conflict_do_nothing(index_elements=["user_id"])
        )
        wrapped = connection.execute(
            sa.select(keys_table.c.wrapped_key).where(keys_table.c.user_id == user)
        ).scalar_one()
    return _open(master, wrapped, f"key:{user}")


def seal_change(key: bytes, seq: int, user: str, change: list[dict[str, Any]]) -> str:
    """The sealed form of event ``seq``'s change (see the module docstring)."""
    document = canonical_json({"rows": change}).encode("utf-8")
    return _seal(key, document, f"event:{seq}:{user}")


def open_change(key: bytes, seq: int, user: str, sealed: str) -> list[dict[str, Any]]:
    """The row changes of event ``seq`` (``ChangeKeyError`` if they do not open)."""
    rows: list[dict[str, Any]] = json.loads(_open(key, sealed, f"event:{seq}:{user}"))["rows"]
    return rows


def rewrap_keys(connection: Connection, old: bytes, new: bytes) -> int:
    """Wrap every data key under the event key ``new`` instead of ``old`` (rotating the
    deployment's key): the data keys, and so the sealed changes and the chain, stay as
    they are. Returns how many keys were re-wrapped; ``ChangeKeyError`` (and, the caller's
    transaction rolled back, nothing changed) if one does not open with ``old``."""
    rows = connection.execute(
        sa.select(keys_table.c.user_id, keys_table.c.wrapped_key).order_by(keys_table.c.user_id)
    ).all()
    rewrapped = [
        {
            "key_user": row.user_id,
            "wrapped_key": _seal(new, _open(old, row.wrapped_key, f"key:{row.user_id}"),
                                 f"key:{row.user_id}"),
        }
        for row in rows
    ]
    if rewrapped:
        connection.execute(
            sa.update(keys_table).where(keys_table.c.user_id == sa.bindparam("key_user")),
            rewrapped,
        )
    return len(rewrapped)


def shred(connection: Connection, user: str) -> int:
    """Delete ``user``'s data key: their sealed changes can never be opened again."""
    return int(
        connection.execute(sa.delete(keys_table).where(keys_table.c.user_id == user)).rowcount
    )


def memory_changes(
    connection: Connection, memory_ids: list[int]
) -> dict[int, list[dict[str, Any]]]:
    """The change of each memory in ``memory_ids`` as it now is: its row and its metadata
    (replacing what was there), or, if it is gone, the deletion of both."""
    memories = Base.metadata.tables["memories"]
    metadata = Base.metadata.tables["memory_metadata"]
    rows = {
        row["id"]: row
        for row in connection.execute(
            sa.select(memories).where(memories.c.id.in_(memory_ids))
        ).mappings()
    }
    entries: dict[int, list[dict[str, Any]]] = {}
    for row in connection.execute(
        sa.select(metadata)
        .where(metadata.c.memory_id.in_(list(rows)))
        .order_by(metadata.c.memory_id, metadata.c.key)
    ).mappings():
        entries.setdefault(row["memory_id"], []).append(upsert(metadata, row))
    return {
        memory_id: (
            [upsert(memories, rows[memory_id]), delete(metadata, {"memory_id": memory_id})]
            + entries.get(memory_id, [])
            if memory_id in rows
            else memory_removed(memory_id)
        )
        for memory_id in memory_ids
    }


def memory_removed(memory_id: int) -> list[dict[str, Any]]:
    """The change of deleting a memory: its metadata, then its row."""
    return [
        delete(Base.metadata.tables["memory_metadata"], {"memory_id": memory_id}),
        delete(Base.metadata.tables["memories"], {"id": memory_id}),
    ]
