"""What a user stores, in bytes: the measure ``$MEMORY_MAX_BYTES_PER_USER`` limits.

Counted: the UTF-8 bytes of the text a user's writes put in the tables (memory content,
metadata keys and values, preference keys and values, saved session state, code patterns'
names, descriptions, snippets and tags, and the knowledge graph's entity names and types,
observations and relation types). Not counted: what the library derives or keeps for
itself (ids, timestamps, embeddings, keyword terms, the event log), which grows with the
counted text, not with what a caller chooses to store.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from memory.store.tables import Base

_tables = Base.metadata.tables
memories = _tables["memories"]
metadata = _tables["memory_metadata"]
preferences = _tables["user_preferences"]
patterns = _tables["code_patterns"]
states = _tables["session_state"]
entities = _tables["entities"]
observations = _tables["observations"]
relations = _tables["relations"]


def stored_bytes(connection: Connection, user: str) -> int:
    """The bytes ``user`` stores (see the module docstring), in one statement."""
    postgres = connection.dialect.name == "postgresql"

    def size(*columns: sa.ColumnElement[str]) -> sa.ColumnElement[int]:
        # SQLite before 3.43 has no octet_length; the length of a text cast to a blob is
        # its size in the database's encoding (UTF-8 here).
        lengths: list[sa.ColumnElement[int]] = [
            sa.func.octet_length(column)
            if postgres
            else sa.func.length(sa.cast(column, sa.LargeBinary))
            for column in columns
        ]
        total = lengths[0]
        for length in lengths[1:]:
            total = total + length
        return sa.func.coalesce(sa.func.sum(total), 0)

    parts = [
        sa.select(size(memories.c.content)).where(memories.c.user_id == user),
        sa.select(size(metadata.c.key, metadata.c.value_json))
        .join(memories, memories.c.id == metadata.c.memory_id)
        .where(memories.c.user_id == user),
        sa.select(size(preferences.c.key, preferences.c.value_json)).where(
            preferences.c.user_id == user
        ),
        sa.select(size(states.c.state_json)).where(states.c.user_id == user),
        sa.select(
            size(
                patterns.c.name,
                patterns.c.description,
                patterns.c.snippet,
                patterns.c.tags_json,
            )
        ).where(patterns.c.user_id == user),
        sa.select(size(entities.c.name, entities.c.entity_type)).where(
            entities.c.user_id == user
        ),
        sa.select(size(observations.c.content))
        .join(entities, entities.c.id == observations.c.entity_id)
        .where(entities.c.user_id == user),
        sa.select(size(relations.c.relation_type)).where(relations.c.user_id == user),
    ]
    total: sa.ColumnElement[int] = parts[0].scalar_subquery()
    for part in parts[1:]:
        total = total + part.scalar_subquery()
    return int(connection.execute(sa.select(total)).scalar_one())
