"""``TieredStore``: a LangGraph ``BaseStore`` (``langgraph-checkpoint``) on a ``Memory``.

>>> store = TieredStore(Memory.open("sqlite:///agent.db"), user="ada")  # doctest: +SKIP
>>> graph = builder.compile(store=store)                                # doctest: +SKIP

How LangGraph's model maps onto ours (the store is small: only ``batch`` is its own, as
LangGraph's base class intends; ``get``/``put``/``search``/… are the base's):

- **Identity** is the store's configuration: every item is a memory of one ``user``, written
  as one ``agent`` (default ``langgraph``), in one ``session`` if given. A namespace never
  names the user (a graph that wants per-user memory opens one store per user), so no
  namespace a node computes can reach another user's data.
- **Namespaces** are tags: an item in ``("notes", "work")`` carries the metadata
  ``lg_ns_0="notes"``, ``lg_ns_1="work"``, the whole namespace as ``lg_ns`` and its key as
  ``lg_key``, so a prefix search is an exact metadata filter in SQL. A label or key is at
  most 1,024 bytes as JSON, and a namespace at most 27 labels deep.
- **Values** are stored as the memory's content, the JSON of ``{"namespace", "key",
  "value"}`` (at most 32,768 characters), and read back with ``json.loads``: any JSON object
  round-trips exactly (key order, Unicode, integers of any size, floats to the last bit).
  NaN, infinities and non-JSON types are refused, and so is a value the store's redaction
  policy would change: a value is stored exactly or not at all.
- **Search** with a ``query`` is our hybrid search (keywords and vectors) over the whole
  item, among the 100 best matches, then ``filter``, ``offset`` and ``limit``; items put with
  ``index=False`` are never ranked and, as in LangGraph's ``InMemoryStore``, only fill a
  page after the ranked ones (score None). ``index`` as a list of fields is accepted but the
  whole item is indexed. Without a query, items come in creation order.
- **TTL** (minutes) is the memory's expiry, set when the item is put; ``refresh_ttl`` is
  ignored (reading does not extend it). Re-putting an item with a ``ttl`` stores it anew,
  which resets its ``created_at``.
- **batch** runs its operations in order, each in its own transaction. **abatch** runs
  ``batch`` in a worker thread (``asyncio.to_thread``), so the event loop never waits on the
  database.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable, Iterator
from datetime import timedelta
from typing import Any

from langgraph.store.base import (
    BaseStore,
    GetOp,
    Item,
    ListNamespacesOp,
    MatchCondition,
    Op,
    PutOp,
    Result,
    SearchItem,
    SearchOp,
)

from memory import InvalidInputError, Memory, MemoryRecord, Scope

__all__ = ["TieredStore"]

_NS = "lg_ns"
_KEY = "lg_key"
_INDEXED = "lg_indexed"
# 32 metadata keys per memory, less lg_ns, lg_key, lg_indexed and one to spare.
MAX_DEPTH = 27
# What scope.search returns at most: query search ranks among this many matches.
SEARCH_WINDOW = 100
_PAGE = 1000


def _label_key(position: int) -> str:
    return f"{_NS}_{position}"


def _compare(value: Any, wanted: Any) -> bool:
    """LangGraph's filter semantics: exact match (nested objects and lists alike) or the
    operators ``$eq``, ``$ne``, ``$gt``, ``$gte``, ``$lt``, ``$lte``."""
    if isinstance(wanted, dict):
        if any(str(k).startswith("$") for k in wanted):
            return all(_operator(value, op, operand) for op, operand in wanted.items())
        return isinstance(value, dict) and all(
            _compare(value.get(k), v) for k, v in wanted.items()
        )
    if isinstance(wanted, list | tuple):
        return (
            isinstance(value, list | tuple)
            and len(value) == len(wanted)
            and all(_compare(v, w) for v, w in zip(value, wanted, strict=True))
        )
    return bool(value == wanted)


def _operator(value: Any, operator: str, operand: Any) -> bool:
    if operator == "$eq":
        return bool(value == operand)
    if operator == "$ne":
        return bool(value != operand)
    comparisons = {
        "$gt": lambda a, b: a > b,
        "$gte": lambda a, b: a >= b,
        "$lt": lambda a, b: a < b,
        "$lte": lambda a, b: a <= b,
    }
    if operator not in comparisons:
        raise InvalidInputError(f"filter: unsupported operator {operator!r}")
    if not isinstance(value, int | float) or isinstance(value, bool):
        return False  # a missing or non-numeric field matches no comparison
    return bool(comparisons[operator](float(value), float(operand)))


def _matches(namespace: tuple[str, ...], condition: MatchCondition) -> bool:
    path = condition.path
    if len(namespace) < len(path):
        return False
    pairs = (
        zip(namespace, path, strict=False)
        if condition.match_type == "prefix"
        else zip(reversed(namespace), reversed(path), strict=False)
    )
    return all(wanted == "*" or label == wanted for label, wanted in pairs)


class TieredStore(BaseStore):
    """A LangGraph store on ``memory``, acting for ``user`` as ``agent`` (see the module
    docstring for the mapping). The caller keeps ``memory`` open while the store is used."""

    supports_ttl = True

    def __init__(
        self,
        memory: Memory,
        *,
        user: str,
        agent: str = "langgraph",
        session: str | None = None,
    ) -> None:
        self._memory = memory
        self._scope: Scope = memory.scope(user, agent, session)

    # -- the one seam LangGraph asks a backend for -------------------------------------------

    def batch(self, ops: Iterable[Op]) -> list[Result]:
        """Run ``ops`` in order; each result is what LangGraph's own stores return."""
        results: list[Result] = []
        for op in ops:
            if isinstance(op, GetOp):
                results.append(self._get(op.namespace, op.key))
            elif isinstance(op, PutOp):
                self._put(op)
                results.append(None)
            elif isinstance(op, SearchOp):
                results.append(self._search(op))
            elif isinstance(op, ListNamespacesOp):
                results.append(self._list_namespaces(op))
            else:
                raise InvalidInputError(f"ops: unknown operation {type(op).__name__}")
        return results

    async def abatch(self, ops: Iterable[Op]) -> list[Result]:
        """``batch`` in a worker thread: the store is synchronous, the event loop is not
        blocked while it works."""
        return await asyncio.to_thread(self.batch, list(ops))

    # -- operations ------------------------------------------------------------------------------

    def _find(self, namespace: tuple[str, ...], key: str) -> MemoryRecord | None:
        found = self._scope.list(metadata=self._identity(namespace, key), limit=1)
        return found[0] if found else None

    def _get(self, namespace: tuple[str, ...], key: str) -> Item | None:
        record = self._find(namespace, key)
        return _item(record) if record is not None else None

    def _put(self, op: PutOp) -> None:
        existing = self._find(op.namespace, op.key)
        if op.value is None:
            if existing is not None:
                self._scope.delete(existing.id)
            return
        content = _content(op.namespace, op.key, op.value)
        metadata = {
            **self._identity(op.namespace, op.key),
            **{_label_key(i): label for i, label in enumerate(op.namespace)},
            _INDEXED: op.index is not False,
        }
        redaction = self._memory.redaction
        if redaction.text(content) != content or redaction.value(metadata) != metadata:
            raise InvalidInputError(
                "value: contains text this store's redaction policy would change; "
                "TieredStore stores a value exactly or not at all"
            )
        ttl = timedelta(minutes=op.ttl) if op.ttl is not None else None
        if existing is not None and ttl is None:
            self._scope.update(
                existing.id, version=existing.version, content=content, metadata=metadata
            )
            return
        if existing is not None:
            self._scope.delete(existing.id)
        self._scope.add(content, metadata=metadata, ttl=ttl)

    def _identity(self, namespace: tuple[str, ...], key: str) -> dict[str, Any]:
        if not isinstance(namespace, tuple) or not all(isinstance(x, str) for x in namespace):
            raise InvalidInputError(f"namespace: must be a tuple of strings, not {namespace!r}")
        if len(namespace) > MAX_DEPTH:
            raise InvalidInputError(
                f"namespace: at most {MAX_DEPTH} labels deep (got {len(namespace)})"
            )
        if not isinstance(key, str):
            raise InvalidInputError(f"key: must be a string, not {type(key).__name__}")
        # PostgreSQL's JSON cannot hold NUL, so neither may a label or key on any backend.
        if any("\x00" in text for text in (key, *namespace)):
            raise InvalidInputError("namespace and key: must not contain a NUL character")
        return {_NS: json.dumps(list(namespace), ensure_ascii=False), _KEY: key}

    def _records(self, prefix: tuple[str, ...]) -> Iterator[MemoryRecord]:
        """Every item under ``prefix``, oldest first."""
        wanted = {_label_key(i): label for i, label in enumerate(prefix)}
        pages: list[list[MemoryRecord]] = []
        before: int | None = None
        while True:
            page = self._scope.list(metadata=wanted, before_id=before, limit=_PAGE)
            pages.append(page)
            if len(page) < _PAGE:
                break
            before = page[-1].id
        for page in reversed(pages):
            yield from reversed(page)

    def _search(self, op: SearchOp) -> list[SearchItem]:
        def keep(item: SearchItem) -> bool:
            return not op.filter or all(
                _compare(item.value.get(k), v) for k, v in op.filter.items()
            )

        if len(op.namespace_prefix) > MAX_DEPTH:
            return []
        if not op.query:
            every = [i for i in map(_search_item, self._records(op.namespace_prefix)) if keep(i)]
            return every[op.offset : op.offset + op.limit]
        prefix = {_label_key(i): label for i, label in enumerate(op.namespace_prefix)}
        hits = self._scope.search(
            op.query, limit=SEARCH_WINDOW, metadata={**prefix, _INDEXED: True}
        )
        ranked = [i for i in (_search_item(h.memory, h.score) for h in hits) if keep(i)]
        page = ranked[op.offset : op.offset + op.limit]
        if len(page) < op.limit:  # unindexed items fill the page, unscored, as InMemoryStore
            skipped = max(op.offset - len(ranked), 0)
            unindexed = [
                item
                for item in (
                    _search_item(record)
                    for record in self._records(op.namespace_prefix)
                    if record.metadata.get(_INDEXED) is False
                )
                if keep(item)
            ]
            page += unindexed[skipped : skipped + op.limit - len(page)]
        return page

    def _list_namespaces(self, op: ListNamespacesOp) -> list[tuple[str, ...]]:
        namespaces = {_namespace(record) for record in self._records(())}
        if op.match_conditions:
            namespaces = {
                ns for ns in namespaces if all(_matches(ns, c) for c in op.match_conditions)
            }
        if op.max_depth is not None:
            namespaces = {ns[: op.max_depth] for ns in namespaces}
        return sorted(namespaces)[op.offset : op.offset + op.limit]


# -- records <-> items --------------------------------------------------------------------------


def _content(namespace: tuple[str, ...], key: str, value: Any) -> str:
    if not isinstance(value, dict):
        raise InvalidInputError(f"value: must be a dict, not {type(value).__name__}")
    try:
        return json.dumps(
            {"namespace": list(namespace), "key": key, "value": value},
            ensure_ascii=False,
            allow_nan=False,
        )
    except (TypeError, ValueError) as error:
        raise InvalidInputError(f"value: must be JSON: {error}") from None


def _namespace(record: MemoryRecord) -> tuple[str, ...]:
    return tuple(json.loads(record.metadata[_NS]))


def _fields(record: MemoryRecord) -> dict[str, Any]:
    """An item's fields, from the memory that stores it."""
    document = json.loads(record.content)
    return {
        "namespace": tuple(document["namespace"]),
        "key": document["key"],
        "value": document["value"],
        "created_at": record.created_at,
        "updated_at": record.updated_at,
    }


def _search_item(record: MemoryRecord, score: float | None = None) -> SearchItem:
    return SearchItem(**_fields(record), score=score)


def _item(record: MemoryRecord) -> Item:
    return Item(**_fields(record))
