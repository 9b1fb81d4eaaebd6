"""The user's preferences and code patterns: what every agent of a user shares.

Inputs arrive validated (``memory.core.inputs``); each public method is one transaction.
"""

from __future__ import annotations

import json

import sqlalchemy as sa
from sqlalchemy.engine import Connection, RowMapping

from memory.core.errors import NotFoundError
from memory.core.inputs import CodePatternQuery, NewCodePattern, NewPreference, canonical_json
from memory.core.types import CodePattern, Owner, Preference
from memory.store.changes import delete, upsert
from memory.store.db import Database
from memory.store.events import append_event
from memory.store.sharing import agent_rows_readable
from memory.store.tables import Base, utcnow

preferences = Base.metadata.tables["user_preferences"]
patterns = Base.metadata.tables["code_patterns"]


class Preferences:
    """Preferences (one current value per user and key) and code patterns (one per user,
    language and name), written by any agent of the user."""

    def __init__(self, db: Database) -> None:
        self.db = db

    # -- preferences --------------------------------------------------------------------------

    def set_preference(self, owner: Owner, item: NewPreference) -> Preference:
        """Make ``item`` the user's one current value for its key."""

        def operation(connection: Connection) -> Preference:
            now = utcnow()
            statement = self.db.insert(preferences).values(
                user_id=owner.user,
                key=item.key,
                value_json=canonical_json(item.value),
                source_agent=owner.agent,
                confidence=item.confidence,
                created_at=now,
                updated_at=now,
            )
            statement = statement.on_conflict_do_update(
                index_elements=["user_id", "key"],
                set_={
                    "value_json": statement.excluded.value_json,
                    "source_agent": statement.excluded.source_agent,
                    "confidence": statement.excluded.confidence,
                    "updated_at": statement.excluded.updated_at,
                },
            ).returning(*preferences.c)
            row = connection.execute(statement).mappings().one()
            stored = preference_of(row)
            append_event(
                connection, owner.user, owner.agent, "preference.set", f"preference:{item.key}",
                {"key": item.key, "confidence": item.confidence}, [upsert(preferences, row)],
            )
            return stored

        return self.db.write(operation, user=owner.user)

    def get_preference(self, owner: Owner, key: str) -> Preference | None:
        """The user's current value for ``key``, or None."""

        def operation(connection: Connection) -> Preference | None:
            row = (
                connection.execute(
                    sa.select(preferences).where(
                        *_readable_preferences(owner), preferences.c.key == key
                    )
                )
                .mappings()
                .first()
            )
            return preference_of(row) if row is not None else None

        return self.db.read(operation)

    def list_preferences(self, owner: Owner) -> list[Preference]:
        """Every preference of the user, by key."""
        return self.db.read(lambda connection: list_preferences(connection, owner))

    def delete_preference(self, owner: Owner, key: str) -> None:
        """Remove the user's preference ``key``."""

        def operation(connection: Connection) -> None:
            result = connection.execute(
                sa.delete(preferences).where(
                    preferences.c.user_id == owner.user, preferences.c.key == key
                )
            )
            if result.rowcount == 0:
                raise NotFoundError(f"preference {key!r} does not exist for this user")
            append_event(
                connection, owner.user, owner.agent, "preference.delete", f"preference:{key}",
                {"key": key}, [delete(preferences, {"user_id": owner.user, "key": key})],
            )

        self.db.write(operation, user=owner.user)

    # -- code patterns ------------------------------------------------------------------------

    def record_pattern(self, owner: Owner, item: NewCodePattern) -> CodePattern:
        """Store a code pattern, or refresh the one with the same language and name."""

        def operation(connection: Connection) -> CodePattern:
            now = utcnow()
            statement = self.db.insert(patterns).values(
                user_id=owner.user,
                agent_id=owner.agent,
                language=item.language,
                name=item.name,
                description=item.description,
                snippet=item.snippet,
                tags_json=canonical_json(sorted(set(item.tags))),
                usage_count=0,
                last_used_at=None,
                created_at=now,
                updated_at=now,
            )
            statement = statement.on_conflict_do_update(
                index_elements=["user_id", "language", "name"],
                set_={
                    "agent_id": statement.excluded.agent_id,
                    "description": statement.excluded.description,
                    "snippet": statement.excluded.snippet,
                    "tags_json": statement.excluded.tags_json,
                    "updated_at": statement.excluded.updated_at,
                },
            ).returning(*patterns.c)
            row = connection.execute(statement).mappings().one()
            stored = pattern_of(row)
            append_event(
                connection, owner.user, owner.agent, "pattern.record", f"pattern:{stored.id}",
                {"pattern_id": stored.id, "language": stored.language, "name": stored.name},
                [upsert(patterns, row)],
            )
            return stored

        return self.db.write(operation, user=owner.user)

    def use_pattern(self, owner: Owner, pattern_id: int) -> CodePattern:
        """Count one use of a pattern; returns it as updated."""

        def operation(connection: Connection) -> CodePattern:
            row = (
                connection.execute(
                    sa.update(patterns)
                    .where(patterns.c.id == pattern_id, patterns.c.user_id == owner.user)
                    .values(usage_count=patterns.c.usage_count + 1, last_used_at=utcnow())
                    .returning(*patterns.c)
                )
                .mappings()
                .first()
            )
            if row is None:
                raise NotFoundError(f"code pattern {pattern_id} does not exist for this user")
            append_event(
                connection, owner.user, owner.agent, "pattern.use", f"pattern:{pattern_id}",
                {"pattern_id": pattern_id}, [upsert(patterns, row)],
            )
            return pattern_of(row)

        return self.db.write(operation, user=owner.user)

    def find_patterns(self, owner: Owner, query: CodePatternQuery) -> list[CodePattern]:
        """The user's patterns matching ``query``, most used first."""
        return self.db.read(lambda connection: find_patterns(connection, owner, query))


def preference_of(row: RowMapping) -> Preference:
    """The preference a ``user_preferences`` row holds."""
    return Preference(
        user_id=row["user_id"],
        key=row["key"],
        value=json.loads(row["value_json"]),
        source_agent=row["source_agent"],
        confidence=row["confidence"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def pattern_of(row: RowMapping) -> CodePattern:
    """The code pattern a ``code_patterns`` row holds."""
    return CodePattern(
        id=row["id"],
        user_id=row["user_id"],
        agent_id=row["agent_id"],
        language=row["language"],
        name=row["name"],
        description=row["description"],
        snippet=row["snippet"],
        tags=tuple(json.loads(row["tags_json"])),
        usage_count=row["usage_count"],
        last_used_at=row["last_used_at"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def _readable_preferences(owner: Owner) -> list[sa.ColumnElement[bool]]:
    return agent_rows_readable(owner, preferences.c.user_id, preferences.c.source_agent)


def list_preferences(connection: Connection, owner: Owner) -> list[Preference]:
    """Every preference of ``owner``'s user it may read, by key, inside a transaction."""
    rows = connection.execute(
        sa.select(preferences)
        .where(*_readable_preferences(owner))
        .order_by(preferences.c.key)
    ).mappings()
    return [preference_of(row) for row in rows]


def find_patterns(
    connection: Connection, owner: Owner, query: CodePatternQuery
) -> list[CodePattern]:
    """The user's patterns matching ``query``, most used first, inside a transaction."""
    conditions = agent_rows_readable(owner, patterns.c.user_id, patterns.c.agent_id)
    if query.language is not None:
        conditions.append(patterns.c.language == query.language)
    rows = connection.execute(
        sa.select(patterns)
        .where(*conditions)
        .order_by(patterns.c.usage_count.desc(), patterns.c.id)
    ).mappings()
    found = []
    # Tag and text matching happen here, not in SQL, so that case folding is the
    # same on every backend; the user index bounds how many rows are read.
    for row in rows:
        pattern = pattern_of(row)
        if query.tag is not None and query.tag not in pattern.tags:
            continue
        if query.text is not None and not _mentions(pattern, query.text):
            continue
        found.append(pattern)
        if len(found) == query.limit:
            break
    return found


def _mentions(pattern: CodePattern, text: str) -> bool:
    needle = text.casefold()
    return any(
        needle in field.casefold() for field in (pattern.name, pattern.description, pattern.snippet)
    )
