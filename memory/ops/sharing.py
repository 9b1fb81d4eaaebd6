"""Admin verbs: ``forget`` a user, define a ``team``, and ``share``, ``revoke`` and list
``grants`` for an agent (``memctl`` of the same names).

An operator acts with the ``admin`` role: each verb opens the database at ``database``
(default ``$MEMORY_DATABASE_URL``) as admin, without an embedding model (none of them embeds
anything), and closes it. ``share`` and ``revoke`` still act as the agent named: a grant is
always made by the agent that owns what it shares.

>>> forget("sqlite:///memory.db", "ada").total  # doctest: +SKIP
42
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy.engine import URL

from memory.client import Memory
from memory.core.types import Tier
from memory.store.forget import ForgetReport
from memory.store.sharing import Access, Grant

__all__ = ["ForgetReport", "Grant", "forget", "grants", "revoke", "set_team", "share"]

DatabaseURL = str | URL | None


def _as_admin(database: DatabaseURL) -> Memory:
    """The store at ``database`` opened as admin, to be used in a ``with`` block."""
    return Memory.open(database, embedder=None, role="admin")


def forget(database: DatabaseURL, user: str) -> ForgetReport:
    """Remove every row of ``user`` in every table and redact their events, irrecoverably.
    Asking for confirmation is the caller's part."""
    with _as_admin(database) as memory:
        return memory.forget_user(user)


def set_team(database: DatabaseURL, user: str, team: str, agents: Iterable[str]) -> list[str]:
    """Make ``agents`` the members of ``user``'s team ``team`` (none: dissolve it); returns
    the members now stored."""
    with _as_admin(database) as memory:
        memory.set_team(user, team, agents)
        return memory.teams(user).get(team, [])


def share(
    database: DatabaseURL,
    user: str,
    agent: str,
    session: str | None = None,
    *,
    memory_id: int | None = None,
    tag: tuple[str, Any] | None = None,
    tier: Tier | None = None,
    agents: Iterable[str] = (),
    teams: Iterable[str] = (),
    access: Access = "read",
    expires_at: datetime | None = None,
) -> list[Grant]:
    """Share a memory, a tag or a tier of ``agent``'s memories with ``agents`` and ``teams``
    (see :meth:`memory.Scope.share`); one grant per grantee."""
    with _as_admin(database) as memory:
        return memory.scope(user, agent, session).share(
            memory_id=memory_id,
            tag=tag,
            tier=tier,
            agents=agents,
            teams=teams,
            access=access,
            expires_at=expires_at,
        )


def revoke(
    database: DatabaseURL, user: str, agent: str, grant_id: int, session: str | None = None
) -> Grant:
    """Revoke grant ``grant_id``, made by ``agent``; returns it as it was."""
    with _as_admin(database) as memory:
        return memory.scope(user, agent, session).revoke(grant_id)


def grants(
    database: DatabaseURL,
    user: str,
    agent: str,
    session: str | None = None,
    *,
    received: bool = False,
) -> list[Grant]:
    """The live grants ``agent`` made (``received``: those it holds)."""
    with _as_admin(database) as memory:
        return memory.scope(user, agent, session).grants(received=received)
