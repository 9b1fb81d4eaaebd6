"""Rotating the deployment's event key (``memctl events rotate-key``).

Each user's data key (``memory.store.changes``) is stored wrapped by the deployment's event
key, ``$MEMORY_EVENT_KEY``. Rotating it re-wraps every data key under the new key in one
transaction: the events, their sealed changes and the hash chain are not touched (the data
keys do not change), so the chain verifies as before and a forgotten user's events stay
unreadable (their data key is gone, not re-wrapped). The new key comes from
``$MEMORY_NEW_EVENT_KEY``, never from the command line (where ``ps`` would show it).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from memory.core.errors import InvalidInputError
from memory.store.changes import EVENT_KEY_ENV, event_key, rewrap_keys
from memory.store.db import Database
from memory.store.engine import EngineOrUrl, engine_for
from memory.store.schema import CHANGES_REVISION, database_revision, revision_at_least

__all__ = ["KeyRotation", "NEW_EVENT_KEY_ENV", "rotate_event_key"]

NEW_EVENT_KEY_ENV = "MEMORY_NEW_EVENT_KEY"


@dataclass(frozen=True, slots=True)
class KeyRotation:
    """What a rotation did: how many users' data keys it re-wrapped."""

    rewrapped: int


def rotate_event_key(
    database: EngineOrUrl, environ: Mapping[str, str] | None = None
) -> KeyRotation:
    """Re-wrap every data key of ``database`` from ``$MEMORY_EVENT_KEY`` (the current key)
    to ``$MEMORY_NEW_EVENT_KEY`` (see the module docstring); all or nothing. Afterwards,
    run the deployment with the new key as ``$MEMORY_EVENT_KEY``.

    >>> rotate_event_key("postgresql://…")  # doctest: +SKIP
    KeyRotation(rewrapped=1200)
    """
    env = os.environ if environ is None else environ
    old = event_key(env)
    if old is None:
        raise InvalidInputError(
            f"{EVENT_KEY_ENV} is not set: give the current event key there (and the new "
            f"one in {NEW_EVENT_KEY_ENV})"
        )
    try:
        new = event_key({EVENT_KEY_ENV: env.get(NEW_EVENT_KEY_ENV, "")})
    except InvalidInputError as error:  # its rules, under the new key's name
        raise InvalidInputError(str(error).replace(EVENT_KEY_ENV, NEW_EVENT_KEY_ENV, 1)) from None
    if new is None:
        raise InvalidInputError(f"{NEW_EVENT_KEY_ENV} is not set: give the new event key there")
    if new == old:
        raise InvalidInputError(
            f"{NEW_EVENT_KEY_ENV} is the current key ({EVENT_KEY_ENV}); give a new one"
        )
    with engine_for(database) as engine:
        revision = database_revision(engine)
        if not revision_at_least(revision, CHANGES_REVISION):
            raise InvalidInputError(
                f"the database is at {revision or 'an empty schema'}: it has no event keys "
                f"before revision {CHANGES_REVISION}; run `memctl migrate`"
            )
        count = Database(engine).write(lambda connection: rewrap_keys(connection, old, new))
    return KeyRotation(count)
