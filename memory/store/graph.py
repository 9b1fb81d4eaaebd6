"""Phase 1 entity memory: a per-user knowledge graph with the MCP memory server's semantics.

The operations and their results follow the reference server (create entities and
relations, add and delete observations, delete entities with their relations, search and
open nodes, read the graph) with one deliberate difference: a relation or observation that
names a missing entity is refused with ``NotFoundError`` instead of being stored dangling,
because foreign keys hold here. Import and export use the server's ``memory.jsonl`` lines.

Every write that changes the graph appends one ``graph.<operation>`` event in its
transaction, carrying the rows it left (entities, observations, relations) and the keys of
those it deleted (``memory.store.changes``), so that a replay rebuilds the graph. A delete
lists the rows the foreign keys' cascade removes, so a replay does not depend on it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from memory.core.errors import InvalidInputError, NotFoundError
from memory.core.inputs import (
    MAX_STATE_BYTES,
    EntityInput,
    EntityName,
    ObservationDeletion,
    ObservationInput,
    RelationInput,
    as_list,
    content_hash,
    validate,
    validate_many,
)
from memory.core.redaction import NO_REDACTION, Redaction
from memory.core.types import AddedObservations, Entity, KnowledgeGraph, Relation
from memory.store.changes import delete, upsert
from memory.store.db import Database
from memory.store.events import append_event
from memory.store.tables import Base, utcnow

entities = Base.metadata.tables["entities"]
observations = Base.metadata.tables["observations"]
relations = Base.metadata.tables["relations"]

_from = entities.alias("source")
_to = entities.alias("target")


# The longest memory.jsonl line import_jsonl parses: as much as a session's state.
MAX_IMPORT_LINE_CHARS = MAX_STATE_BYTES
# What import_jsonl commits at once: enough lines that a transaction's fixed cost is small,
# few enough characters that a batch's parsed objects stay a few tens of MB.
IMPORT_BATCH_LINES = 1_000
IMPORT_BATCH_CHARS = 4 * MAX_STATE_BYTES
# The graph's operations take no agent (as the reference server's): its events name this.
GRAPH_AGENT = "graph"
# A change entry (memory.store.changes).
Change = list[dict[str, Any]]


class EntityGraph:
    """One user's knowledge graph. Get it from ``Memory.graph(user)``."""

    def __init__(
        self, db: Database, user: str, redaction: Redaction = NO_REDACTION, *, logged: bool = True
    ) -> None:
        self._db = db
        self.user = user
        # Whether the schema has the log of changes (revision 0012): a Phase 1 store, which
        # has no event log, keeps its graph working without one.
        self._logged = logged
        # Every input is redacted as memories are (names, types, observations), and names
        # looked up the same way, so that they still match what was stored.
        self._redaction = redaction

    def _redacted(self, items: Iterable[Any], what: str) -> list[Any]:
        redacted: list[Any] = self._redaction.value(as_list(items, what))
        return redacted

    # -- helpers ------------------------------------------------------------------------------

    def _entity_ids(self, connection: Connection, names: Iterable[str]) -> dict[str, int]:
        wanted = list(dict.fromkeys(names))
        if not wanted:
            return {}
        rows = connection.execute(
            sa.select(entities.c.name, entities.c.id).where(
                entities.c.user_id == self.user, entities.c.name.in_(wanted)
            )
        )
        return {row.name: row.id for row in rows}

    def _require(self, connection: Connection, names: Iterable[str]) -> dict[str, int]:
        wanted = list(dict.fromkeys(names))
        ids = self._entity_ids(connection, wanted)
        missing = [name for name in wanted if name not in ids]
        if missing:
            raise NotFoundError(f"entity {missing[0]!r} does not exist for this user")
        return ids

    def _record(
        self, connection: Connection, operation: str, change: Change, data: dict[str, int]
    ) -> None:
        """Append the event of a write that changed the graph (none if it changed nothing).
        Its data holds counts only: names and observations are the user's own words."""
        if change and self._logged:
            append_event(
                connection, self.user, GRAPH_AGENT, f"graph.{operation}", "graph", data, change
            )

    def _add_observations(
        self, connection: Connection, entity_id: int, contents: Iterable[str], change: Change
    ) -> tuple[str, ...]:
        now = utcnow()
        rows: dict[str, dict[str, Any]] = {
            content_hash(text): {
                "entity_id": entity_id,
                "content": text,
                "content_hash": content_hash(text),
                "created_at": now,
            }
            for text in contents
        }
        if not rows:
            return ()
        statement = (
            self._db.insert(observations)
            .on_conflict_do_nothing(index_elements=["entity_id", "content_hash"])
            .returning(*observations.c)
        )
        inserted = connection.execute(statement, list(rows.values())).mappings().all()
        added = {row["content_hash"] for row in inserted}
        if added:
            entity = connection.execute(
                sa.update(entities)
                .where(entities.c.id == entity_id)
                .values(updated_at=now)
                .returning(*entities.c)
            ).mappings().one()
            change.append(upsert(entities, entity))
            change.extend(upsert(observations, row) for row in inserted)
        return tuple(row["content"] for digest, row in rows.items() if digest in added)

    def _create_entities(
        self, connection: Connection, items: list[EntityInput], change: Change
    ) -> list[Entity]:
        now = utcnow()
        first = {item.name: item for item in reversed(items)}  # the first of a name wins
        existing = self._entity_ids(connection, first)
        created = []
        for item in items:
            if item.name in existing or first.get(item.name) is not item:
                continue
            entity = connection.execute(
                sa.insert(entities)
                .values(
                    user_id=self.user,
                    name=item.name,
                    entity_type=item.entityType,
                    created_at=now,
                    updated_at=now,
                )
                .returning(*entities.c)
            ).mappings().one()
            change.append(upsert(entities, entity))
            kept = self._add_observations(connection, entity["id"], item.observations, change)
            created.append(Entity(item.name, item.entityType, kept))
        return created

    def _create_relations(
        self, connection: Connection, items: list[RelationInput], change: Change
    ) -> list[Relation]:
        ids = self._require(connection, [n for item in items for n in (item.from_, item.to)])
        now = utcnow()
        created = []
        for item in dict.fromkeys(items):
            inserted = connection.execute(
                self._db.insert(relations)
                .values(
                    user_id=self.user,
                    from_entity_id=ids[item.from_],
                    to_entity_id=ids[item.to],
                    relation_type=item.relationType,
                    created_at=now,
                )
                .on_conflict_do_nothing(
                    index_elements=["from_entity_id", "to_entity_id", "relation_type"]
                )
                .returning(*relations.c)
            ).mappings().first()
            if inserted is not None:
                change.append(upsert(relations, inserted))
                created.append(Relation(item.from_, item.to, item.relationType))
        return created

    # -- MCP operations -----------------------------------------------------------------------

    def create_entities(self, items: Iterable[Mapping[str, Any]]) -> list[Entity]:
        """Create entities whose names are new for this user; return those created.

        >>> graph.create_entities([{"name": "Ada", "entityType": "person",
        ...                         "observations": ["writes Python"]}])  # doctest: +SKIP
        """
        validated = validate_many(EntityInput, self._redacted(items, "entities"), "entities")

        def operation(connection: Connection) -> list[Entity]:
            change: Change = []
            created = self._create_entities(connection, validated, change)
            self._record(connection, "create_entities", change, {"entities": len(created)})
            return created

        return self._db.write(operation, user=self.user)

    def create_relations(self, items: Iterable[Mapping[str, Any]]) -> list[Relation]:
        """Create relations (``from``, ``to``, ``relationType``); return the new ones."""
        validated = validate_many(RelationInput, self._redacted(items, "relations"), "relations")

        def operation(connection: Connection) -> list[Relation]:
            change: Change = []
            created = self._create_relations(connection, validated, change)
            self._record(connection, "create_relations", change, {"relations": len(created)})
            return created

        return self._db.write(operation, user=self.user)

    def add_observations(self, items: Iterable[Mapping[str, Any]]) -> list[AddedObservations]:
        """Add observations to existing entities; return what was not already there."""
        validated = validate_many(
            ObservationInput, self._redacted(items, "observations"), "observations"
        )

        def operation(connection: Connection) -> list[AddedObservations]:
            ids = self._require(connection, [item.entityName for item in validated])
            change: Change = []
            added = [
                AddedObservations(
                    item.entityName,
                    self._add_observations(
                        connection, ids[item.entityName], item.contents, change
                    ),
                )
                for item in validated
            ]
            count = sum(len(item.added_observations) for item in added)
            self._record(connection, "add_observations", change, {"observations": count})
            return added

        return self._db.write(operation, user=self.user)

    def delete_entities(self, names: Iterable[str]) -> None:
        """Delete entities with their observations and relations; unknown names are ignored."""
        wanted = [validate_name(name) for name in self._redacted(names, "entity names")]

        def operation(connection: Connection) -> None:
            ids = sorted(self._entity_ids(connection, wanted).values())
            if not ids:
                return
            connection.execute(sa.delete(entities).where(entities.c.id.in_(ids)))
            change: Change = []
            for entity_id in ids:
                change += [
                    delete(observations, {"entity_id": entity_id}),
                    delete(relations, {"from_entity_id": entity_id}),
                    delete(relations, {"to_entity_id": entity_id}),
                    delete(entities, {"id": entity_id}),
                ]
            self._record(connection, "delete_entities", change, {"entities": len(ids)})

        self._db.write(operation, user=self.user)

    def delete_observations(self, items: Iterable[Mapping[str, Any]]) -> None:
        """Delete the named observations; unknown entities and observations are ignored."""
        validated = validate_many(
            ObservationDeletion, self._redacted(items, "deletions"), "deletions"
        )

        def operation(connection: Connection) -> None:
            ids = self._entity_ids(connection, [item.entityName for item in validated])
            change: Change = []
            for item in validated:
                if item.entityName in ids and item.observations:
                    gone = connection.execute(
                        sa.delete(observations)
                        .where(
                            observations.c.entity_id == ids[item.entityName],
                            observations.c.content_hash.in_(
                                [content_hash(text) for text in item.observations]
                            ),
                        )
                        .returning(observations.c.id)
                    ).scalars()
                    change.extend(delete(observations, {"id": row_id}) for row_id in gone)
            self._record(connection, "delete_observations", change, {"observations": len(change)})

        self._db.write(operation, user=self.user)

    def delete_relations(self, items: Iterable[Mapping[str, Any]]) -> None:
        """Delete the given relations; ones that do not exist are ignored."""
        validated = validate_many(RelationInput, self._redacted(items, "relations"), "relations")

        def operation(connection: Connection) -> None:
            ids = self._entity_ids(connection, [n for r in validated for n in (r.from_, r.to)])
            change: Change = []
            for item in validated:
                if item.from_ in ids and item.to in ids:
                    gone = connection.execute(
                        sa.delete(relations)
                        .where(
                            relations.c.from_entity_id == ids[item.from_],
                            relations.c.to_entity_id == ids[item.to],
                            relations.c.relation_type == item.relationType,
                        )
                        .returning(relations.c.id)
                    ).scalars()
                    change.extend(delete(relations, {"id": row_id}) for row_id in gone)
            self._record(connection, "delete_relations", change, {"relations": len(change)})

        self._db.write(operation, user=self.user)

    def read_graph(self) -> KnowledgeGraph:
        """The user's whole graph: entities in creation order, then relations."""
        return self._db.read(self._read)

    def _read(self, connection: Connection) -> KnowledgeGraph:
        rows = connection.execute(
            sa.select(entities.c.id, entities.c.name, entities.c.entity_type)
            .where(entities.c.user_id == self.user)
            .order_by(entities.c.id)
        ).all()
        texts: dict[int, list[str]] = {row.id: [] for row in rows}
        found = connection.execute(
            sa.select(observations.c.entity_id, observations.c.content)
            .join(entities, entities.c.id == observations.c.entity_id)
            .where(entities.c.user_id == self.user)
            .order_by(observations.c.entity_id, observations.c.id)
        )
        for item in found:
            texts[item.entity_id].append(item.content)
        edges = connection.execute(
            sa.select(
                _from.c.name.label("source"), _to.c.name.label("target"), relations.c.relation_type
            )
            .join(_from, _from.c.id == relations.c.from_entity_id)
            .join(_to, _to.c.id == relations.c.to_entity_id)
            .where(relations.c.user_id == self.user)
            .order_by(relations.c.id)
        )
        return KnowledgeGraph(
            entities=tuple(Entity(r.name, r.entity_type, tuple(texts[r.id])) for r in rows),
            relations=tuple(Relation(e.source, e.target, e.relation_type) for e in edges),
        )

    def search_nodes(self, query: str) -> KnowledgeGraph:
        """Entities whose name, type or any observation contains ``query`` (ignoring case),
        with the relations that touch them."""
        if not isinstance(query, str):
            raise InvalidInputError(f"query: must be a string, not {type(query).__name__}")
        needle = self._redaction.text(query).casefold()
        graph = self.read_graph()
        # Case folding in Python, not SQL: SQLite's lower() only folds ASCII, and the result
        # must be the same on every backend (and as the reference server's toLowerCase).
        return _subgraph(
            graph,
            lambda e: (
                needle in e.name.casefold()
                or needle in e.entity_type.casefold()
                or any(needle in text.casefold() for text in e.observations)
            ),
        )

    def open_nodes(self, names: Iterable[str]) -> KnowledgeGraph:
        """The named entities with the relations that touch them; unknown names are
        ignored."""
        wanted = {validate_name(name) for name in self._redacted(names, "entity names")}
        return _subgraph(self.read_graph(), lambda entity: entity.name in wanted)

    # -- memory.jsonl -------------------------------------------------------------------------

    def export_jsonl(self) -> Iterator[str]:
        """The graph as the MCP memory server's ``memory.jsonl`` lines (no newlines)."""
        graph = self.read_graph()
        for entity in graph.entities:
            yield json.dumps(entity.to_mcp(), ensure_ascii=False)
        for relation in graph.relations:
            yield json.dumps(relation.to_mcp(), ensure_ascii=False)

    def import_jsonl(self, lines: Iterable[str]) -> tuple[int, int]:
        """Load ``memory.jsonl`` lines; merge observations into entities that exist. Returns
        how many entities and relations were created.

        The lines are read as they come and committed in batches (``IMPORT_BATCH_LINES``
        lines or ``IMPORT_BATCH_CHARS`` characters, one transaction each), so a large file
        costs the memory of one batch. A relation may name an entity of an earlier line or
        of its own batch, as in the files the MCP memory server writes (entities first).

        Not all-or-nothing, but resumable: a bad line raises ``InvalidInputError`` naming
        it and how far the import got (the batches before it are kept, nothing of its own
        batch is written); since importing a line twice adds nothing, importing the fixed
        file again finishes the job.
        """
        created = [0, 0]
        committed = 0  # the last line of the last committed batch
        batch: list[tuple[int, dict[str, Any]]] = []
        size = 0
        number = 0
        try:
            for number, line in enumerate(lines, start=1):
                record = self._parsed(number, line)
                if record is not None:
                    batch.append((number, record))
                    size += len(line)
                if len(batch) >= IMPORT_BATCH_LINES or size >= IMPORT_BATCH_CHARS:
                    self._import_batch(batch, created)
                    committed, batch, size = number, [], 0
            self._import_batch(batch, created)
        except (InvalidInputError, NotFoundError) as error:
            done = (
                f"lines 1-{committed} were imported ({created[0]} new entities, {created[1]} "
                "new relations) and are kept"
                if committed
                else "nothing was imported"
            )
            raise type(error)(
                f"{error}; {done}, nothing after line {committed} was. Importing a line again "
                "adds nothing: fix the file and import it again to finish"
            ) from None
        return created[0], created[1]

    def _parsed(self, number: int, line: str) -> dict[str, Any] | None:
        """Line ``number`` as a redacted record with its ``type``, or None when blank."""
        if len(line) > MAX_IMPORT_LINE_CHARS:
            # Refused before parsing: a huge line costs many times its size as objects.
            raise InvalidInputError(
                f"line {number}: {len(line)} characters; a memory.jsonl line may have at "
                f"most {MAX_IMPORT_LINE_CHARS}"
            )
        if not line.strip():
            return None
        try:
            record = json.loads(line)
        except ValueError as exc:
            raise InvalidInputError(f"line {number}: not JSON: {exc}") from None
        if not isinstance(record, dict):
            raise InvalidInputError(f"line {number}: expected a JSON object")
        redacted: dict[str, Any] = self._redaction.value(record)
        return redacted

    def _import_batch(self, batch: list[tuple[int, dict[str, Any]]], created: list[int]) -> None:
        """Validate and write one batch in one transaction; add what it created."""
        if not batch:
            return
        new_entities: list[EntityInput] = []
        new_relations: list[RelationInput] = []
        for number, record in batch:
            kind = record.pop("type", None)
            try:
                if kind == "entity":
                    new_entities.append(validate(EntityInput, record))
                elif kind == "relation":
                    new_relations.append(validate(RelationInput, record))
                else:
                    raise InvalidInputError(f"type must be 'entity' or 'relation', not {kind!r}")
            except InvalidInputError as exc:
                raise InvalidInputError(f"line {number}: {exc}") from None

        def operation(connection: Connection) -> tuple[int, int]:
            change: Change = []
            made = self._create_entities(connection, new_entities, change)
            made_names = {entity.name for entity in made}
            ids = self._entity_ids(connection, [item.name for item in new_entities])
            for item in new_entities:
                if item.name not in made_names:
                    self._add_observations(connection, ids[item.name], item.observations, change)
            linked = self._create_relations(connection, new_relations, change)
            counts = {"entities": len(made), "relations": len(linked)}
            self._record(connection, "import", change, counts)
            return len(made), len(linked)

        try:
            entities_made, relations_made = self._db.write(operation, user=self.user)
        except (InvalidInputError, NotFoundError) as error:
            raise type(error)(f"lines {batch[0][0]}-{batch[-1][0]}: {error}") from None
        created[0] += entities_made
        created[1] += relations_made


def validate_name(name: object) -> str:
    """Check one entity name as the graph's inputs do."""
    return validate(EntityName, {"name": name}).name


def _subgraph(graph: KnowledgeGraph, keep: Any) -> KnowledgeGraph:
    """The kept entities with every relation that has at least one end among them: the
    reference server does so since 2026.x, so that a caller discovers a node's connections
    to nodes outside the result without reading the whole graph."""
    kept = tuple(entity for entity in graph.entities if keep(entity))
    names = {entity.name for entity in kept}
    return KnowledgeGraph(
        entities=kept,
        relations=tuple(
            r for r in graph.relations if r.from_entity in names or r.to_entity in names
        ),
    )
