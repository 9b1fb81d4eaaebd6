"""Sharing: grants, teams, and the visibility predicate every read path puts in its query.

A memory is private to the agent that stored it. Its owner can grant another agent, or a
named team of the same user, ``read`` or ``write`` (read and update) access to

- one memory (``memory_id``),
- every memory of the owner carrying a metadata tag (``tag=(key, value)``), now or later,
- a whole tier of the owner's memories (``tier``),

optionally until an expiry; a grant can be revoked. Grants never cross users: the
predicate compares ``user_id`` on both sides, whatever a grant row says.

Enforcement is in the query. ``visible`` returns a SQL condition on ``memories`` (the
reader's own rows, or rows an EXISTS over ``sharing_grants`` admits) that get, list,
update, keyword search and the final read of every search put in their WHERE clause, and
``VectorScope`` restricts the in-process vector index to the same rows before any score is
computed. Nothing is filtered after the fact.

Before building the predicate, one indexed query asks which owners have granted the reader
anything live (``reader_grants``). With none, the predicate is the reader's own rows and
costs nothing extra; otherwise ``agent_id IN (reader, owners…)`` lets the planner walk only
those agents' rows, and the EXISTS clauses (one per kind of target in use) decide row by
row, inside the same statement, so a grant revoked in between is honoured.

Teams are defined by an admin (``Memory.set_team``): if agents could join teams
themselves, any agent could read what was shared with any team.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal

import sqlalchemy as sa
from pydantic import Field
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Connection, RowMapping

from memory.core.errors import InvalidInputError, NotFoundError
from memory.core.inputs import AwareDatetime, Identifier, _Input, canonical_json
from memory.core.types import MemoryEvent, Owner, Tier
from memory.store.changes import delete, upsert
from memory.store.events import append_event
from memory.store.tables import Base, utcnow

memories = Base.metadata.tables["memories"]
metadata_table = Base.metadata.tables["memory_metadata"]
grants = Base.metadata.tables["sharing_grants"]
teams = Base.metadata.tables["sharing_teams"]

Access = Literal["read", "write"]
GrantTarget = Literal["memory", "tag", "tier"]
GranteeType = Literal["agent", "team"]
MAX_GRANTEES = 100
MAX_TEAM_MEMBERS = 1000


@dataclass(frozen=True, slots=True)
class Grant:
    """One grant: ``owner_agent`` lets ``grantee`` read (or also update) a target."""

    id: int
    user_id: str
    owner_agent: str
    target: GrantTarget
    memory_id: int | None
    tier: Tier | None
    tag: tuple[str, Any] | None
    grantee_type: GranteeType
    grantee: str
    access: Access
    created_at: datetime
    expires_at: datetime | None


class NewGrant(_Input):
    memory_id: Annotated[int, Field(ge=1, lt=2**63)] | None = None
    tag_key: Identifier | None = None
    tag_value: Any = None
    tier: Tier | None = None
    agents: Annotated[list[Identifier], Field(max_length=MAX_GRANTEES)] = Field(
        default_factory=list
    )
    teams: Annotated[list[Identifier], Field(max_length=MAX_GRANTEES)] = Field(default_factory=list)
    access: Access = "read"
    expires_at: AwareDatetime = None


class TeamInput(_Input):
    user: Identifier
    team: Identifier
    agents: Annotated[list[Identifier], Field(max_length=MAX_TEAM_MEMBERS)]


def checked_grant(owner: Owner, item: NewGrant, now: datetime) -> NewGrant:
    """Refuse a grant that names no target or several, no grantee, or an expiry passed."""
    given = [
        name
        for name, value in (
            ("memory_id", item.memory_id),
            ("tag", item.tag_key),
            ("tier", item.tier),
        )
        if value is not None
    ]
    if len(given) != 1:
        raise InvalidInputError(
            f"target: give exactly one of memory_id, tag or tier (got {', '.join(given) or 'none'})"
        )
    if item.tag_key is None and item.tag_value is not None:
        raise InvalidInputError("tag: a tag value needs a tag key")
    if item.tag_key is not None:
        try:
            size = len(canonical_json(item.tag_value).encode("utf-8"))
        except ValueError as error:
            raise InvalidInputError(f"tag: value {error}") from None
        if size > 1024:
            raise InvalidInputError(f"tag: value must be at most 1024 bytes as JSON (got {size})")
    if not item.agents and not item.teams:
        raise InvalidInputError("grantee: name at least one agent or team to share with")
    if owner.agent in item.agents:
        raise InvalidInputError(f"agents: {owner.agent!r} already owns what it would share")
    if item.expires_at is not None and item.expires_at <= now:
        raise InvalidInputError(f"expires_at: {item.expires_at.isoformat()} has already passed")
    return item


def _target_key(
    target: str, memory_id: int | None, tier: str | None, tag: str | None, tag_json: str | None
) -> str:
    description = canonical_json([target, memory_id, tier, tag, tag_json])
    return hashlib.sha256(description.encode("utf-8")).hexdigest()


def _grant(row: RowMapping) -> Grant:
    tag = None
    if row["tag_key"] is not None:
        tag = (row["tag_key"], json.loads(row["tag_value_json"]))
    return Grant(
        id=row["id"],
        user_id=row["user_id"],
        owner_agent=row["owner_agent"],
        target=row["target"],
        memory_id=row["memory_id"],
        tier=row["tier"],
        tag=tag,
        grantee_type=row["grantee_type"],
        grantee=row["grantee"],
        access=row["access"],
        created_at=row["created_at"],
        expires_at=row["expires_at"],
    )


def _upsert(db_insert: Any) -> Any:
    statement = db_insert(grants)
    return statement.on_conflict_do_update(
        index_elements=["user_id", "owner_agent", "grantee_type", "grantee", "target_key"],
        set_={
            "access": statement.excluded.access,
            "expires_at": statement.excluded.expires_at,
            "created_at": statement.excluded.created_at,
        },
    ).returning(*grants.c)


def share(connection: Connection, db_insert: Any, owner: Owner, item: NewGrant) -> list[Grant]:
    """Write the grants of ``item`` (one per grantee) inside the caller's transaction.

    Sharing what is already shared with the same grantee replaces its access and expiry.
    A memory can only be shared by the agent that owns it.
    """
    now = utcnow()
    item = checked_grant(owner, item, now)
    if item.memory_id is not None:
        found = connection.execute(
            sa.select(memories.c.id).where(
                memories.c.id == item.memory_id,
                memories.c.user_id == owner.user,
                memories.c.agent_id == owner.agent,
            )
        ).first()
        if found is None:
            raise NotFoundError(
                f"memory {item.memory_id} does not exist in this scope (only its owner can "
                "share it)"
            )
    target: GrantTarget = (
        "memory" if item.memory_id is not None else "tier" if item.tier is not None else "tag"
    )
    tag_json = canonical_json(item.tag_value) if item.tag_key is not None else None
    key = _target_key(target, item.memory_id, item.tier, item.tag_key, tag_json)
    grantees = [("agent", agent) for agent in dict.fromkeys(item.agents)]
    grantees += [("team", team) for team in dict.fromkeys(item.teams)]
    rows = [
        {
            "user_id": owner.user,
            "owner_agent": owner.agent,
            "target": target,
            "target_key": key,
            "memory_id": item.memory_id,
            "tier": item.tier,
            "tag_key": item.tag_key,
            "tag_value_json": tag_json,
            "grantee_type": kind,
            "grantee": name,
            "access": item.access,
            "created_at": now,
            "expires_at": item.expires_at,
        }
        for kind, name in grantees
    ]
    # One statement per row: RETURNING of a multi-row upsert is not ordered on every backend.
    stored = [connection.execute(_upsert(db_insert), row).mappings().one() for row in rows]
    written = [_grant(row) for row in stored]
    for grant, row in zip(written, stored, strict=True):
        append_event(
            connection,
            owner.user,
            owner.agent,
            "grant.share",
            f"grant:{grant.id}",
            _describe(grant),
            [upsert(grants, row)],
        )
    return written


def _describe(grant: Grant) -> dict[str, Any]:
    return {
        "grant_id": grant.id,
        "target": grant.target,
        "memory_id": grant.memory_id,
        "tier": grant.tier,
        "tag": list(grant.tag) if grant.tag is not None else None,
        "grantee_type": grant.grantee_type,
        "grantee": grant.grantee,
        "access": grant.access,
        "expires_at": grant.expires_at.isoformat() if grant.expires_at else None,
    }


def revoke(connection: Connection, owner: Owner, grant_id: int) -> Grant:
    """Delete one grant that ``owner`` made; raises ``NotFoundError`` for any other."""
    row = (
        connection.execute(
            sa.delete(grants)
            .where(
                grants.c.id == grant_id,
                grants.c.user_id == owner.user,
                grants.c.owner_agent == owner.agent,
            )
            .returning(*grants.c)
        )
        .mappings()
        .first()
    )
    if row is None:
        raise NotFoundError(f"grant {grant_id} does not exist or was not made by this agent")
    grant = _grant(row)
    append_event(
        connection, owner.user, owner.agent, "grant.revoke", f"grant:{grant.id}", _describe(grant),
        [delete(grants, {"id": grant.id})],
    )
    return grant


def list_grants(connection: Connection, owner: Owner, received: bool) -> list[Grant]:
    """Live grants ``owner`` made, or (``received``) that it holds directly or by a team."""
    condition = _held_by(owner) if received else grants.c.owner_agent == owner.agent
    rows = connection.execute(
        sa.select(grants)
        .where(grants.c.user_id == owner.user, _live(utcnow()), condition)
        .order_by(grants.c.id)
    ).mappings()
    return [_grant(row) for row in rows]


def set_team(connection: Connection, actor: str, item: TeamInput) -> None:
    """Make ``item.agents`` the whole membership of the team (empty: the team is gone)."""
    connection.execute(
        sa.delete(teams).where(teams.c.user_id == item.user, teams.c.team == item.team)
    )
    now = utcnow()
    members = list(dict.fromkeys(item.agents))
    if members:
        connection.execute(
            teams.insert(),
            [
                {"user_id": item.user, "team": item.team, "agent_id": agent, "created_at": now}
                for agent in members
            ],
        )
    # The team's name goes in the payload, not the target: targets are hashed into the
    # chain and survive redaction, and a name can say something about the user.
    team = sa.and_(teams.c.user_id == item.user, teams.c.team == item.team)
    change = [delete(teams, {"user_id": item.user, "team": item.team})] + [
        upsert(teams, row)
        for row in connection.execute(sa.select(teams).where(team).order_by(teams.c.id)).mappings()
    ]
    append_event(
        connection, item.user, actor, "team.set", "teams", {"team": item.team, "agents": members},
        change,
    )


def team_members(connection: Connection, user: str) -> dict[str, list[str]]:
    """Every team of ``user`` with its members, sorted."""
    found: dict[str, list[str]] = {}
    rows = connection.execute(
        sa.select(teams.c.team, teams.c.agent_id)
        .where(teams.c.user_id == user)
        .order_by(teams.c.team, teams.c.agent_id)
    )
    for team, agent in rows:
        found.setdefault(team, []).append(agent)
    return found


# -- visibility -------------------------------------------------------------------------------


def _live(now: datetime | sa.ColumnElement[datetime]) -> sa.ColumnElement[bool]:
    return sa.or_(grants.c.expires_at.is_(None), grants.c.expires_at > now)


def _held_by(owner: Owner) -> sa.ColumnElement[bool]:
    """The grant names the reader, or a team the reader belongs to."""
    reader_teams = sa.select(teams.c.team).where(
        teams.c.user_id == owner.user, teams.c.agent_id == owner.agent
    )
    return sa.or_(
        sa.and_(grants.c.grantee_type == "agent", grants.c.grantee == owner.agent),
        sa.and_(
            grants.c.grantee_type == "team", grants.c.grantee.in_(reader_teams.scalar_subquery())
        ),
    )


@dataclass(frozen=True, slots=True)
class ReaderGrants:
    """What the reader holds, by owner and kind: enough to build a tight predicate."""

    owners: frozenset[str]
    targets: frozenset[str]
    memory_ids: frozenset[int]
    tiers: frozenset[tuple[str, str]]
    tags: frozenset[tuple[str, str, str]]


NO_GRANTS = ReaderGrants(frozenset(), frozenset(), frozenset(), frozenset(), frozenset())


def reader_grants(connection: Connection, owner: Owner, access: Access = "read") -> ReaderGrants:
    """The live grants ``owner`` holds for ``access`` (none unless sharing is on for it)."""
    if not owner.shared:
        return NO_GRANTS
    conditions = [grants.c.user_id == owner.user, _live(utcnow()), _held_by(owner)]
    if access == "write":
        conditions.append(grants.c.access == "write")
    rows = connection.execute(
        sa.select(
            grants.c.owner_agent,
            grants.c.target,
            grants.c.memory_id,
            grants.c.tier,
            grants.c.tag_key,
            grants.c.tag_value_json,
        ).where(*conditions)
    ).all()
    return ReaderGrants(
        owners=frozenset(row.owner_agent for row in rows),
        targets=frozenset(row.target for row in rows),
        memory_ids=frozenset(row.memory_id for row in rows if row.target == "memory"),
        tiers=frozenset((row.owner_agent, row.tier) for row in rows if row.target == "tier"),
        tags=frozenset(
            (row.owner_agent, row.tag_key, row.tag_value_json)
            for row in rows
            if row.target == "tag"
        ),
    )


def visible(
    connection: Connection, owner: Owner, access: Access = "read"
) -> sa.ColumnElement[bool]:
    """The SQL condition on ``memories`` that admits exactly the rows ``owner`` may read
    (``access="write"``: may update): its own, and those a live grant admits."""
    held = reader_grants(connection, owner, access)
    return visible_with(owner, held, access)


def visible_with(
    owner: Owner,
    held: ReaderGrants,
    access: Access = "read",
    now: datetime | sa.ColumnElement[datetime] | None = None,
) -> sa.ColumnElement[bool]:
    """``visible`` for grants already read in this transaction (``now``: the time expiries
    are compared with, the current time by default)."""
    own = sa.and_(memories.c.user_id == owner.user, memories.c.agent_id == owner.agent)
    if not held.owners:
        return own
    if now is None:
        now = utcnow()
    grant_rules = [
        grants.c.user_id == memories.c.user_id,
        grants.c.owner_agent == memories.c.agent_id,
        _live(now),
        _held_by(owner),
    ]
    if access == "write":
        grant_rules.append(grants.c.access == "write")
    admitted: list[sa.ColumnElement[bool]] = []
    if "memory" in held.targets:
        admitted.append(
            sa.exists().where(
                grants.c.memory_id == memories.c.id, grants.c.target == "memory", *grant_rules
            )
        )
    if "tier" in held.targets:
        admitted.append(
            sa.exists().where(
                grants.c.target == "tier", grants.c.tier == memories.c.tier, *grant_rules
            )
        )
    if "tag" in held.targets:
        tagged = grants.join(
            metadata_table,
            sa.and_(
                metadata_table.c.key == grants.c.tag_key,
                metadata_table.c.value_json == grants.c.tag_value_json,
            ),
        )
        admitted.append(
            sa.select(grants.c.id)
            .select_from(tagged)
            .where(
                metadata_table.c.memory_id == memories.c.id, grants.c.target == "tag", *grant_rules
            )
            .exists()
        )
    return sa.and_(
        memories.c.user_id == owner.user,
        memories.c.agent_id.in_(sorted({owner.agent, *held.owners})),
        sa.or_(memories.c.agent_id == owner.agent, *admitted),
    )


def agent_rows_readable(
    owner: Owner, user: sa.ColumnElement[str], agent: sa.ColumnElement[str]
) -> list[sa.ColumnElement[bool]]:
    """The conditions on a table of rows each agent writes for its user (preferences, code
    patterns, session state; ``user`` and ``agent`` its columns) that admit what ``owner``
    may read: with ``owner.shared`` (USE_CROSS_AGENT_SHARING) every row of its user, else
    its own agent's, as for memories without grants."""
    rules = [user == owner.user]
    if not owner.shared:
        rules.append(agent == owner.agent)
    return rules


# Events about memories, grants and teams: another agent's say which memories exist, whom
# they are shared with and what they hold, so they reach only the agent that acted...
_AGENT_PRIVATE_EVENTS = ("memory.", "grant.", "team.")
# ...except the events that change a memory the reader may read (through a grant): it reads
# the change anyway. Not memory.read (who read what stays with the reader) nor
# memory.delete (the memory is gone, and with it what a grant of it could admit).
_SHARED_MEMORY_EVENTS = ("memory.add", "memory.update", "memory.promote", "memory.consolidate")
_MEMORY_TARGET = "memory:"


def event_readable(
    owner: Owner, event: MemoryEvent, memory_readable: Callable[[int], bool]
) -> bool:
    """Whether ``owner`` may see ``event`` on a subscription: its own user's events that
    its own agent wrote, and with ``owner.shared`` (USE_CROSS_AGENT_SHARING) also the
    user's preference, pattern, session-state and context events of other agents, which
    its reads then see too, and their events that add or change a memory ``owner`` may
    read when the event is delivered (``memory_readable(memory_id)``, the ``visible``
    rule: a grant revoked since stops them). Never another user's, nor an operator's or a
    redacted event. The one rule every subscriber (in process, or the service) applies;
    ``memory_readable`` is asked only about those events."""
    if event.redacted or event.user_id != owner.user:
        return False
    if event.agent_id == owner.agent:
        return True
    if not owner.shared:
        return False
    if event.operation in _SHARED_MEMORY_EVENTS and event.target.startswith(_MEMORY_TARGET):
        return memory_readable(int(event.target.removeprefix(_MEMORY_TARGET)))
    return not event.operation.startswith(_AGENT_PRIVATE_EVENTS)


def memory_readable(connection: Connection, owner: Owner, memory_id: int) -> bool:
    """Whether ``owner`` may read the memory ``memory_id`` now (``visible``)."""
    return bool(
        connection.execute(
            sa.select(
                sa.exists().where(memories.c.id == memory_id, visible(connection, owner))
            )
        ).scalar_one()
    )


@dataclass(frozen=True, slots=True)
class Readable:
    """What one search may read: the grants the reader held at the start of the search
    (kept by ``ReaderCache`` while the grants and the user's memories are unchanged).

    ``candidates`` is those grants spelled out as literal conditions (own agent, granted
    ids, owner and tier pairs), for the queries that restrict matches in SQL; ``admits`` is
    the same rule in Python, for candidates already read (``memory.search.keywords.
    visible_among``). Both only choose what gets scored. ``predicate`` is
    ``visible`` (the EXISTS form), which the final read of the ranked rows applies, so a
    grant revoked while the search ran is honoured there too. ``held`` and ``tagged`` are
    what the in-process vector index builds its mask from.
    """

    owner: Owner
    held: ReaderGrants
    predicate: sa.ColumnElement[bool]
    candidates: sa.ColumnElement[bool]
    tagged: frozenset[int]
    # The ids memory and tag grants name (``held.memory_ids | tagged``), for ``admits``.
    granted: frozenset[int] = frozenset()

    def admits(self, user: str, agent: str, tier: str, memory_id: int) -> bool:
        """``candidates`` tested in Python on a row already read (its user, agent, tier and
        id): the same rule, for a set of candidates the search has read anyway. It only
        narrows what the search considers; the final read still applies ``predicate``."""
        if user != self.owner.user:
            return False
        if agent == self.owner.agent:
            return True
        held = self.held
        if agent not in held.owners:
            return False
        return memory_id in self.granted or (agent, tier) in held.tiers


# The current time, taken when a statement runs (``visible_with`` of a cached predicate).
_NOW = sa.bindparam("visible_now", callable_=utcnow, type_=grants.c.expires_at.type)


@dataclass(frozen=True, slots=True)
class _Entry:
    version: tuple[object, ...]
    readable: Readable


class ReaderCache:
    """The grants each reader holds (and the ids its tag grants admit), kept between
    searches while neither the user's grants and teams (``grants_version``) nor the user's
    memories (``data_version``: a tag can be added to a memory) have changed.

    Reading a thousand grants and their tags costs more than the rest of the enforcement;
    checking that they are unchanged costs one aggregate query. The entry holds the whole
    ``Readable``, its SQL conditions built once per version too (the predicate compares
    expiries with the time each statement runs, a bound parameter evaluated then).
    """

    def __init__(self, size: int = 1024) -> None:
        self._size = size
        self._entries: OrderedDict[tuple[str, str], _Entry] = OrderedDict()
        self._lock = threading.Lock()

    def readable(self, connection: Connection, owner: Owner, data_version: int) -> Readable:
        """The ``Readable`` of ``owner`` (its own memories only unless ``owner.shared``)."""
        if not owner.shared:
            return Readable(
                owner,
                NO_GRANTS,
                visible_with(owner, NO_GRANTS),
                _granted_rows(connection.dialect.name, owner, NO_GRANTS, frozenset()),
                frozenset(),
            )
        key = (owner.user, owner.agent)
        version = (*grants_version(connection, owner.user), data_version)
        with self._lock:
            cached = self._entries.get(key)
        if cached is None or cached.version != version:
            held = reader_grants(connection, owner)
            tagged = frozenset(tagged_ids(connection, owner)) if held.tags else frozenset()
            granted = held.memory_ids | tagged
            cached = _Entry(
                version,
                Readable(
                    owner,
                    held,
                    # Built once per version: the expiry comparison takes the time of each
                    # statement that runs it, not the time the entry was built.
                    visible_with(owner, held, now=_NOW),
                    _granted_rows(connection.dialect.name, owner, held, granted),
                    tagged,
                    granted,
                ),
            )
            with self._lock:
                self._entries[key] = cached
                self._entries.move_to_end(key)
                while len(self._entries) > self._size:
                    self._entries.popitem(last=False)
        if cached.readable.owner == owner:
            return cached.readable
        return dataclasses.replace(cached.readable, owner=owner)

    def forget(self, user: str | None) -> None:
        """Drop every reader of ``user`` (None: every reader)."""
        with self._lock:
            for key in [key for key in self._entries if user is None or key[0] == user]:
                del self._entries[key]


def _granted_rows(
    dialect: str, owner: Owner, held: ReaderGrants, ids: frozenset[int]
) -> sa.ColumnElement[bool]:
    own = sa.and_(memories.c.user_id == owner.user, memories.c.agent_id == owner.agent)
    if not held.owners:
        return own
    admitted: list[sa.ColumnElement[bool]] = [memories.c.agent_id == owner.agent]
    granted = sorted(ids)
    if granted:
        # Memory and tag grants only ever name memories of the agent that made them.
        admitted.append(
            sa.and_(
                memories.c.agent_id.in_(sorted(held.owners)),
                id_among(dialect, "granted_ids", granted),
            )
        )
    admitted.extend(
        sa.and_(memories.c.agent_id == owner_agent, memories.c.tier == tier)
        for owner_agent, tier in sorted(held.tiers)
    )
    return sa.and_(memories.c.user_id == owner.user, sa.or_(*admitted))


def id_among(
    dialect: str, name: str, ids: Sequence[int], column: sa.ColumnElement[int] = memories.c.id
) -> sa.ColumnElement[bool]:
    """``column IN ids`` as ONE bound parameter named ``name`` (a JSON array on SQLite, an
    array on PostgreSQL): a thousand separate parameters cost more to compile and bind than
    the lookups themselves. On PostgreSQL ``IN (SELECT unnest(array))``, not ``= ANY(array)``:
    the subquery is hashed once, where ANY compares each row with every id (a thousand rows
    against a thousand grants cost 45 ms of a search)."""
    if dialect == "postgresql":
        array = sa.bindparam(name, list(ids), type_=postgresql.ARRAY(sa.BigInteger()))
        return column.in_(sa.select(sa.func.unnest(array)).scalar_subquery())
    listed = sa.select(sa.column("value", sa.BigInteger())).select_from(
        sa.func.json_each(sa.bindparam(name, json.dumps(list(ids))))
    )
    return column.in_(listed.scalar_subquery())


def tagged_ids(connection: Connection, owner: Owner) -> set[int]:
    """Ids of the memories that ``owner``'s live tag grants admit, in one query."""
    rows = connection.execute(
        sa.select(metadata_table.c.memory_id)
        .select_from(
            grants.join(
                metadata_table,
                sa.and_(
                    metadata_table.c.key == grants.c.tag_key,
                    metadata_table.c.value_json == grants.c.tag_value_json,
                ),
            ).join(memories, memories.c.id == metadata_table.c.memory_id)
        )
        .where(
            grants.c.user_id == owner.user,
            grants.c.target == "tag",
            _live(utcnow()),
            _held_by(owner),
            memories.c.user_id == owner.user,
            memories.c.agent_id == grants.c.owner_agent,
        )
    )
    return set(rows.scalars())


def _grants_state() -> sa.Select[Any]:
    # One statement (the teams' aggregates as scalar subqueries): a round trip per search.
    # Built once, with the user and the time bound: building it took longer than running it.
    user = sa.bindparam("grants_user", type_=grants.c.user_id.type)
    user_teams = sa.select(teams.c.id).where(teams.c.user_id == user).subquery()
    team_count = sa.select(sa.func.count()).select_from(user_teams).scalar_subquery()
    team_sum = (
        sa.select(sa.func.coalesce(sa.func.sum(user_teams.c.id), 0))
        .select_from(user_teams)
        .scalar_subquery()
    )
    return sa.select(
        sa.func.count(),
        sa.func.coalesce(sa.func.sum(grants.c.id), 0),
        sa.func.count(grants.c.expires_at),
        sa.func.max(grants.c.created_at),
        team_count,
        team_sum,
    ).where(
        grants.c.user_id == user,
        _live(sa.bindparam("grants_now", type_=grants.c.expires_at.type)),
    )


_GRANTS_STATE = _grants_state()


def grants_version(connection: Connection, user: str) -> tuple[int, ...]:
    """A value that changes whenever what ``user``'s agents can see through grants may have:
    a grant or team membership added, changed, revoked or expired."""
    state = connection.execute(_GRANTS_STATE, {"grants_user": user, "grants_now": utcnow()}).one()
    changed = state[3]
    return (
        int(state[0]),
        int(state[1]),
        int(state[2]),
        int(changed.timestamp() * 1_000_000) if changed is not None else 0,
        int(state[4]),
        int(state[5]),
    )


def remove_expired(connection: Connection, now: datetime, limit: int) -> int | None:
    """Delete up to ``limit`` grants whose expiry has passed; None when there are none."""
    ids = list(
        connection.execute(
            sa.select(grants.c.id)
            .where(grants.c.expires_at <= now)
            .order_by(grants.c.expires_at, grants.c.id)
            .limit(limit)
        ).scalars()
    )
    if not ids:
        return None
    return int(connection.execute(sa.delete(grants).where(grants.c.id.in_(ids))).rowcount)


def expired_count(connection: Connection, now: datetime) -> int:
    """How many grants have expired (a dry run of retention)."""
    return int(
        connection.execute(
            sa.select(sa.func.count()).select_from(grants).where(grants.c.expires_at <= now)
        ).scalar_one()
    )
