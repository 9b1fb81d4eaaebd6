"""``memctl mcp``: an MCP server on the official ``mcp`` SDK, a drop-in for the reference memory
server (``@modelcontextprotocol/server-memory``) with the memory tools on top.

The nine graph tools have the reference's names, titles, descriptions, annotations, input
and output schemas and result shapes (the text block is the JSON the reference prints, the
structured content the same object), so a host configured for the reference switches by
changing one command line; they are backed by ``Memory.graph(user)``, so the graph is in SQL,
migrated, backed up and shared like the rest. Two deliberate differences stay, as in
:mod:`memory.store.graph`: a relation or observation naming a missing entity is an error
instead of a dangling row, and repeated names or observations within one call are stored
once.

The memory tools (remember, recall, context, forget, preferences, session state and
resume) act through one :class:`memory.Scope`. Identity (user, agent, session) is fixed
when the server starts, from its configuration; no tool takes a user, and a tool argument
that is not in its schema is refused, so a prompt cannot steer the model into another
user's memory. Over HTTP every request must carry the configured bearer token.

Every call runs the store in a worker thread (``anyio.to_thread``), so one slow query does
not stall the other sessions of an HTTP server; calls that can take long (recall, context,
resume, read_graph, search_nodes) send progress notifications when the client asked for them.
"""

from __future__ import annotations

import dataclasses
import secrets
from collections.abc import Callable, Mapping
from typing import Any

import anyio
import anyio.to_thread
import jsonschema
import mcp_types as types
import pydantic_core
import uvicorn
from mcp.server import Server
from mcp.server.auth.provider import AccessToken
from mcp.server.auth.settings import AuthSettings
from mcp.server.context import ServerRequestContext
from mcp.server.stdio import stdio_server
from mcp.shared.exceptions import MCPError

from memory import (
    Entity,
    InvalidInputError,
    KnowledgeGraph,
    Memory,
    MemoryRecord,
    MemoryStoreError,
    Relation,
    SchemaError,
    Scope,
)

__all__ = ["Identity", "build_server", "http_app", "serve_http", "serve_stdio"]

SERVER_NAME = "tiered-memory"
SERVER_VERSION = "0.1.0"


@dataclasses.dataclass(frozen=True, slots=True)
class Identity:
    """Whom the server acts for, fixed at start: the graph and memories of ``user``, as
    ``agent``, in ``session`` (optional: session tools then refuse)."""

    user: str
    agent: str = "mcp"
    session: str | None = None


# -- the reference server's schemas, as it lists them (JSON Schema draft 07) ------------------

_DRAFT7 = "http://json-schema.org/draft-07/schema#"
_STRINGS = {"type": "array", "items": {"type": "string"}}


def _entity(closed: bool) -> dict[str, Any]:
    """An entity object; the reference closes (``additionalProperties: false``) the ones in
    output schemas only."""
    schema: dict[str, Any] = {
        "type": "object",
        "properties": {
            "name": {"type": "string", "description": "The name of the entity"},
            "entityType": {"type": "string", "description": "The type of the entity"},
            "observations": {
                **_STRINGS,
                "description": "An array of observation contents associated with the entity",
            },
        },
        "required": ["name", "entityType", "observations"],
    }
    return {**schema, "additionalProperties": False} if closed else schema


def _relation(closed: bool) -> dict[str, Any]:
    schema: dict[str, Any] = {
        "type": "object",
        "properties": {
            "from": {
                "type": "string",
                "description": "The name of the entity where the relation starts",
            },
            "to": {
                "type": "string",
                "description": "The name of the entity where the relation ends",
            },
            "relationType": {"type": "string", "description": "The type of the relation"},
        },
        "required": ["from", "to", "relationType"],
    }
    return {**schema, "additionalProperties": False} if closed else schema


def _object(
    properties: dict[str, Any], closed: bool, required: list[str] | None = None
) -> dict[str, Any]:
    schema: dict[str, Any] = {"$schema": _DRAFT7, "type": "object", "properties": properties}
    if required is None:
        required = list(properties)
    if required:
        schema["required"] = required
    return {**schema, "additionalProperties": False} if closed else schema


_GRAPH_OUT = _object(
    {
        "entities": {"type": "array", "items": _entity(True)},
        "relations": {"type": "array", "items": _relation(True)},
    },
    closed=True,
)
_DONE_OUT = _object({"success": {"type": "boolean"}, "message": {"type": "string"}}, closed=True)


def _hints(read_only: bool, destructive: bool, idempotent: bool) -> types.ToolAnnotations:
    return types.ToolAnnotations(
        read_only_hint=read_only,
        destructive_hint=destructive,
        idempotent_hint=idempotent,
        open_world_hint=False,
    )


_WRITE = _hints(read_only=False, destructive=False, idempotent=False)
_DELETE = _hints(read_only=False, destructive=True, idempotent=True)
_READ = _hints(read_only=True, destructive=False, idempotent=True)

GRAPH_TOOLS: tuple[types.Tool, ...] = (
    types.Tool(
        name="create_entities",
        title="Create Entities",
        description="Create multiple new entities in the knowledge graph",
        input_schema=_object(
            {"entities": {"type": "array", "items": _entity(False)}}, closed=False
        ),
        output_schema=_object({"entities": {"type": "array", "items": _entity(True)}}, True),
        annotations=_WRITE,
    ),
    types.Tool(
        name="create_relations",
        title="Create Relations",
        description="Create multiple new relations between entities in the knowledge graph. "
        "Relations should be in active voice",
        input_schema=_object(
            {"relations": {"type": "array", "items": _relation(False)}}, closed=False
        ),
        output_schema=_object({"relations": {"type": "array", "items": _relation(True)}}, True),
        annotations=_WRITE,
    ),
    types.Tool(
        name="add_observations",
        title="Add Observations",
        description="Add new observations to existing entities in the knowledge graph",
        input_schema=_object(
            {
                "observations": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "entityName": {
                                "type": "string",
                                "description": "The name of the entity to add the observations to",
                            },
                            "contents": {
                                **_STRINGS,
                                "description": "An array of observation contents to add",
                            },
                        },
                        "required": ["entityName", "contents"],
                    },
                }
            },
            closed=False,
        ),
        output_schema=_object(
            {
                "results": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "entityName": {"type": "string"},
                            "addedObservations": _STRINGS,
                        },
                        "required": ["entityName", "addedObservations"],
                        "additionalProperties": False,
                    },
                }
            },
            closed=True,
        ),
        annotations=_WRITE,
    ),
    types.Tool(
        name="delete_entities",
        title="Delete Entities",
        description="Delete multiple entities and their associated relations from the knowledge "
        "graph",
        input_schema=_object(
            {"entityNames": {**_STRINGS, "description": "An array of entity names to delete"}},
            closed=False,
        ),
        output_schema=_DONE_OUT,
        annotations=_DELETE,
    ),
    types.Tool(
        name="delete_observations",
        title="Delete Observations",
        description="Delete specific observations from entities in the knowledge graph",
        input_schema=_object(
            {
                "deletions": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "entityName": {
                                "type": "string",
                                "description": "The name of the entity containing the observations",
                            },
                            "observations": {
                                **_STRINGS,
                                "description": "An array of observations to delete",
                            },
                        },
                        "required": ["entityName", "observations"],
                    },
                }
            },
            closed=False,
        ),
        output_schema=_DONE_OUT,
        annotations=_DELETE,
    ),
    types.Tool(
        name="delete_relations",
        title="Delete Relations",
        description="Delete multiple relations from the knowledge graph",
        input_schema=_object(
            {
                "relations": {
                    "type": "array",
                    "items": _relation(False),
                    "description": "An array of relations to delete",
                }
            },
            closed=False,
        ),
        output_schema=_DONE_OUT,
        annotations=_DELETE,
    ),
    types.Tool(
        name="read_graph",
        title="Read Graph",
        description="Read the entire knowledge graph",
        input_schema=_object({}, closed=False),
        output_schema=_GRAPH_OUT,
        annotations=_READ,
    ),
    types.Tool(
        name="search_nodes",
        title="Search Nodes",
        description="Search for nodes in the knowledge graph based on a query",
        input_schema=_object(
            {
                "query": {
                    "type": "string",
                    "description": "The search query to match against entity names, types, and "
                    "observation content",
                }
            },
            closed=False,
        ),
        output_schema=_GRAPH_OUT,
        annotations=_READ,
    ),
    types.Tool(
        name="open_nodes",
        title="Open Nodes",
        description="Open specific nodes in the knowledge graph by their names",
        input_schema=_object(
            {"names": {**_STRINGS, "description": "An array of entity names to retrieve"}},
            closed=False,
        ),
        output_schema=_GRAPH_OUT,
        annotations=_READ,
    ),
)

# -- the memory tools: closed schemas, descriptions written for a model ----------------------

_TIER = {
    "type": "string",
    "enum": ["working", "episodic", "semantic"],
    "description": "working: scratch notes for the current task (cleaned up after a day); "
    "episodic: what happened (events, outcomes); semantic: lasting facts and knowledge.",
}
_MEMORY_OUT = {
    "type": "object",
    "properties": {
        "id": {"type": "integer"},
        "content": {"type": "string"},
        "tier": {"type": "string"},
        "importance": {"type": "number"},
        "metadata": {"type": "object"},
        "session": {"type": ["string", "null"]},
        "created_at": {"type": "string"},
        "version": {"type": "integer"},
    },
    "required": ["id", "content", "tier", "importance", "metadata", "session", "created_at",
                 "version"],
}

MEMORY_TOOLS: tuple[types.Tool, ...] = (
    types.Tool(
        name="remember",
        title="Remember",
        description="Store one memory for the current user, so it can be recalled in later "
        "conversations. Write one self-contained fact or event per call, in plain words. "
        "Storing the same content again returns the existing memory.",
        input_schema=_object(
            {
                "content": {"type": "string", "minLength": 1, "maxLength": 32768,
                            "description": "The memory, as a self-contained sentence."},
                "tier": {**_TIER, "default": "working"},
                "importance": {"type": "number", "minimum": 0, "maximum": 1, "default": 0.5,
                               "description": "How much this matters later, 0 to 1."},
                "metadata": {"type": "object", "maxProperties": 32,
                             "description": "Optional tags, e.g. {\"project\": \"billing\"}; "
                             "recall can filter on them."},
            },
            closed=True,
            required=["content"],
        ),
        output_schema=_object({"memory": _MEMORY_OUT}, closed=False),
        annotations=_WRITE,
    ),
    types.Tool(
        name="recall",
        title="Recall",
        description="Find the current user's memories most relevant to a question (keyword "
        "and semantic search combined), best first, each with its id and a relevance score.",
        input_schema=_object(
            {
                "query": {"type": "string", "minLength": 1, "maxLength": 4096,
                          "description": "What to look for, in natural language."},
                "limit": {"type": "integer", "minimum": 1, "maximum": 100, "default": 10},
                "tiers": {"type": "array", "items": _TIER,
                          "description": "Only these tiers (default: all)."},
                "metadata": {"type": "object",
                             "description": "Only memories with exactly these tags."},
            },
            closed=True,
            required=["query"],
        ),
        output_schema=_object(
            {"hits": {"type": "array", "items": {
                "type": "object",
                "properties": {"score": {"type": "number"}, "memory": _MEMORY_OUT},
                "required": ["score", "memory"],
            }}},
            closed=False,
        ),
        annotations=_READ,
    ),
    types.Tool(
        name="context",
        title="Context",
        description="Build the context to read before answering: session state, the user's "
        "preferences, recent working notes and the memories relevant to the query, within a "
        "token budget. Call it at the start of a task.",
        input_schema=_object(
            {
                "query": {"type": "string", "minLength": 1, "maxLength": 4096,
                          "description": "The task or question at hand."},
                "budget_tokens": {"type": "integer", "minimum": 16, "maximum": 131072,
                                  "default": 512,
                                  "description": "The most tokens the context may take."},
            },
            closed=True,
            required=["query"],
        ),
        output_schema=_object(
            {
                "text": {"type": "string"},
                "tokens": {"type": "integer"},
                "budget": {"type": "integer"},
                "overflow": {"type": "boolean"},
                "items": {"type": "array", "items": {"type": "object"}},
                "disabled_by": {"type": ["string", "null"]},
            },
            closed=False,
        ),
        annotations=_READ,
    ),
    types.Tool(
        name="forget",
        title="Forget a memory",
        description="Delete one memory by the id that remember or recall returned. Use it "
        "when the user asks to forget something or a memory turned out to be wrong.",
        input_schema=_object(
            {"memory_id": {"type": "integer", "minimum": 1,
                           "description": "The id of the memory to delete."}},
            closed=True,
        ),
        output_schema=_DONE_OUT,
        annotations=_DELETE,
    ),
    types.Tool(
        name="set_preference",
        title="Set a preference",
        description="Record a preference of the user (e.g. key 'answer_style', value "
        "'short'); it replaces the previous value of that key and shows up in context.",
        input_schema=_object(
            {
                "key": {"type": "string", "minLength": 1, "maxLength": 128,
                        "description": "A short snake_case name."},
                "value": {"description": "Any JSON value."},
                "confidence": {"type": "number", "minimum": 0, "maximum": 1, "default": 1},
            },
            closed=True,
            required=["key", "value"],
        ),
        output_schema=_object(
            {"key": {}, "value": {}, "confidence": {"type": "number"}}, closed=False
        ),
        annotations=_WRITE,
    ),
    types.Tool(
        name="get_preferences",
        title="Get preferences",
        description="All of the user's preferences, as an object from key to value.",
        input_schema=_object({}, closed=True),
        output_schema=_object({"preferences": {"type": "object"}}, closed=False),
        annotations=_READ,
    ),
    types.Tool(
        name="save_session_state",
        title="Save session state",
        description="Save the state of the current session (a JSON object: the task, the "
        "plan, what is done) as a checkpoint, so the work can be resumed after a restart.",
        input_schema=_object(
            {"state": {"type": "object", "description": "The whole state to save."}},
            closed=True,
        ),
        output_schema=_object(
            {"checkpoint": {"type": "integer"}, "session": {"type": "string"}}, closed=False
        ),
        annotations=_WRITE,
    ),
    types.Tool(
        name="resume_session",
        title="Resume session",
        description="Restore the current session: its last saved state and its recent working "
        "memories. Call it when a conversation continues earlier work.",
        input_schema=_object({}, closed=True),
        output_schema=_object(
            {
                "session": {"type": "string"},
                "checkpoint": {"type": "integer"},
                "state": {"type": "object"},
                "working_memory": {"type": "array", "items": _MEMORY_OUT},
            },
            closed=False,
        ),
        annotations=_READ,
    ),
)

TOOLS: dict[str, types.Tool] = {tool.name: tool for tool in (*GRAPH_TOOLS, *MEMORY_TOOLS)}
_VALIDATORS = {
    name: jsonschema.Draft7Validator(tool.input_schema) for name, tool in TOOLS.items()
}
# Tools that can take a while on a large store: they report progress.
_LONG_CALLS = frozenset({"recall", "context", "resume_session", "read_graph", "search_nodes"})


# -- results ------------------------------------------------------------------------------------


def _entity_json(entity: Entity) -> dict[str, Any]:
    return {k: v for k, v in entity.to_mcp().items() if k != "type"}


def _relation_json(relation: Relation) -> dict[str, Any]:
    return {k: v for k, v in relation.to_mcp().items() if k != "type"}


def _graph_json(graph: KnowledgeGraph) -> dict[str, Any]:
    return {
        "entities": [_entity_json(e) for e in graph.entities],
        "relations": [_relation_json(r) for r in graph.relations],
    }


def _memory_json(record: MemoryRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "content": record.content,
        "tier": record.tier,
        "importance": record.importance,
        "metadata": record.metadata,
        "session": record.session_id,
        "created_at": record.created_at.isoformat(),
        "version": record.version,
    }


def _json_text(value: Any) -> str:
    """As the reference prints its results: ``JSON.stringify(value, null, 2)``. pydantic-core
    writes the same text as ``json.dumps(value, indent=2, ensure_ascii=False)`` some fifty
    times faster (indenting turns off the standard library's C encoder), which matters for
    a large graph."""
    return pydantic_core.to_json(value, indent=2).decode("utf-8")


def _result(structured: dict[str, Any], text: Any = None) -> types.CallToolResult:
    """A result whose text block is ``text`` (default: the structured object) as JSON."""
    shown = text if isinstance(text, str) else _json_text(structured if text is None else text)
    return types.CallToolResult(
        content=[types.TextContent(text=shown)], structured_content=structured
    )


def _done(message: str) -> types.CallToolResult:
    return _result({"success": True, "message": message}, message)


def _error(message: str) -> types.CallToolResult:
    return types.CallToolResult(content=[types.TextContent(text=message)], is_error=True)


# -- the handlers ---------------------------------------------------------------------------------

Handler = Callable[[dict[str, Any]], types.CallToolResult]


class _Tools:
    """The tool implementations: synchronous, run in a worker thread, each acting for the
    configured identity only."""

    def __init__(self, memory: Memory, identity: Identity) -> None:
        self._memory = memory
        self._identity = identity
        self._graph = memory.graph(identity.user)
        self._scope: Scope | None = None
        try:  # checks the identity now, not at the first call
            self._scope = memory.scope(identity.user, identity.agent, identity.session)
        except SchemaError:
            pass  # a database behind the memories revision still serves the graph

    @property
    def scope(self) -> Scope:
        if self._scope is None:  # raises the SchemaError that names `memctl migrate`
            identity = self._identity
            self._scope = self._memory.scope(identity.user, identity.agent, identity.session)
        return self._scope

    def handler(self, name: str) -> Handler:
        handler: Handler = getattr(self, f"_{name}")
        return handler

    # the reference's nine

    def _create_entities(self, args: dict[str, Any]) -> types.CallToolResult:
        created = self._graph.create_entities(args["entities"])
        entities = [_entity_json(e) for e in created]
        return _result({"entities": entities}, entities)

    def _create_relations(self, args: dict[str, Any]) -> types.CallToolResult:
        created = self._graph.create_relations(args["relations"])
        relations = [_relation_json(r) for r in created]
        return _result({"relations": relations}, relations)

    def _add_observations(self, args: dict[str, Any]) -> types.CallToolResult:
        added = self._graph.add_observations(args["observations"])
        results = [
            {"entityName": a.entity_name, "addedObservations": list(a.added_observations)}
            for a in added
        ]
        return _result({"results": results}, results)

    def _delete_entities(self, args: dict[str, Any]) -> types.CallToolResult:
        self._graph.delete_entities(args["entityNames"])
        return _done("Entities deleted successfully")

    def _delete_observations(self, args: dict[str, Any]) -> types.CallToolResult:
        self._graph.delete_observations(args["deletions"])
        return _done("Observations deleted successfully")

    def _delete_relations(self, args: dict[str, Any]) -> types.CallToolResult:
        self._graph.delete_relations(args["relations"])
        return _done("Relations deleted successfully")

    def _read_graph(self, args: dict[str, Any]) -> types.CallToolResult:
        return _result(_graph_json(self._graph.read_graph()))

    def _search_nodes(self, args: dict[str, Any]) -> types.CallToolResult:
        return _result(_graph_json(self._graph.search_nodes(args["query"])))

    def _open_nodes(self, args: dict[str, Any]) -> types.CallToolResult:
        return _result(_graph_json(self._graph.open_nodes(args["names"])))

    # memory tools

    def _remember(self, args: dict[str, Any]) -> types.CallToolResult:
        record = self.scope.add(
            args["content"],
            tier=args.get("tier", "working"),
            importance=float(args.get("importance", 0.5)),
            metadata=args.get("metadata"),
        )
        return _result({"memory": _memory_json(record)})

    def _recall(self, args: dict[str, Any]) -> types.CallToolResult:
        hits = self.scope.search(
            args["query"],
            limit=args.get("limit", 10),
            tiers=args.get("tiers", ()),
            metadata=args.get("metadata"),
        )
        return _result(
            {"hits": [{"score": hit.score, "memory": _memory_json(hit.memory)} for hit in hits]}
        )

    def _context(self, args: dict[str, Any]) -> types.CallToolResult:
        context = self.scope.inject(args["query"], budget_tokens=args.get("budget_tokens", 512))
        structured = {
            "text": context.text,
            "tokens": context.tokens,
            "budget": context.budget,
            "overflow": context.overflow,
            "items": [
                {"section": i.section, "source": i.source, "score": i.score, "tokens": i.tokens}
                for i in context.items
            ],
            "disabled_by": context.disabled_by,
        }
        # The text block is the context itself: what a host shows the model.
        return _result(structured, context.text)

    def _forget(self, args: dict[str, Any]) -> types.CallToolResult:
        self.scope.delete(args["memory_id"])
        return _done(f"Memory {args['memory_id']} deleted")

    def _set_preference(self, args: dict[str, Any]) -> types.CallToolResult:
        preference = self.scope.set_preference(
            args["key"], args["value"], confidence=float(args.get("confidence", 1.0))
        )
        return _result(
            {"key": preference.key, "value": preference.value, "confidence": preference.confidence}
        )

    def _get_preferences(self, args: dict[str, Any]) -> types.CallToolResult:
        return _result({"preferences": self.preferences()})

    def _save_session_state(self, args: dict[str, Any]) -> types.CallToolResult:
        checkpoint = self.scope.save_state(args["state"])
        return _result(
            {"checkpoint": checkpoint.checkpoint_seq, "session": checkpoint.session_id}
        )

    def _resume_session(self, args: dict[str, Any]) -> types.CallToolResult:
        if self._identity.session is None:
            raise InvalidInputError(
                "session: this server was started without --session; resume needs one"
            )
        resumed = self.scope.resume()
        return _result(
            {
                "session": resumed.checkpoint.session_id,
                "checkpoint": resumed.checkpoint.checkpoint_seq,
                "state": resumed.checkpoint.state,
                "working_memory": [_memory_json(r) for r in resumed.working_memory],
            }
        )

    # resources

    def knowledge_graph(self) -> dict[str, Any]:
        return _graph_json(self._graph.read_graph())

    def preferences(self) -> dict[str, Any]:
        return {p.key: p.value for p in self.scope.list_preferences()}

    def session_state(self) -> dict[str, Any]:
        if self._identity.session is None:
            return {"session": None, "checkpoint": None, "state": None}
        checkpoint = self.scope.load_state()
        return {
            "session": self._identity.session,
            "checkpoint": checkpoint.checkpoint_seq if checkpoint is not None else None,
            "state": checkpoint.state if checkpoint is not None else None,
        }


RESOURCES: tuple[types.Resource, ...] = (
    # The reference's own resource, under its URI.
    types.Resource(
        uri="memory://knowledge-graph",
        name="knowledge-graph",
        title="Knowledge Graph",
        description="The full knowledge graph with all entities and relations",
        mime_type="application/json",
    ),
    types.Resource(
        uri="memory://preferences",
        name="preferences",
        title="Preferences",
        description="The user's preferences, as an object from key to value",
        mime_type="application/json",
    ),
    types.Resource(
        uri="memory://session",
        name="session",
        title="Session state",
        description="The current session's latest saved state (null without a session)",
        mime_type="application/json",
    ),
)


def _validation_message(name: str, error: jsonschema.ValidationError) -> str:
    where = "/".join(str(part) for part in error.absolute_path) or "arguments"
    message = error.message
    shown = repr(error.instance)
    if len(shown) > 80:  # name a huge value by its size instead of echoing it back
        size = len(error.instance) if hasattr(error.instance, "__len__") else "?"
        message = message.replace(shown, f"the {type(error.instance).__name__} of size {size}")
    return f"Input validation error: Invalid arguments for tool {name}: {message} at {where}"


def build_server(memory: Memory, identity: Identity) -> Server[Any]:
    """The MCP server acting for ``identity`` on ``memory`` (the caller closes ``memory``)."""
    tools = _Tools(memory, identity)

    async def list_tools(
        ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        return types.ListToolsResult(tools=list(TOOLS.values()))

    async def call_tool(
        ctx: ServerRequestContext[Any], params: types.CallToolRequestParams
    ) -> types.CallToolResult:
        name, args = params.name, params.arguments or {}
        if name not in TOOLS:
            return _error(f"Tool {name} not found")
        error = jsonschema.exceptions.best_match(_VALIDATORS[name].iter_errors(args))
        if error is not None:
            return _error(_validation_message(name, error))
        handler = tools.handler(name)
        long_call = name in _LONG_CALLS
        if long_call:
            await ctx.session.report_progress(0, 1, f"{name}: started")
        try:
            result = await anyio.to_thread.run_sync(handler, args)
        except MemoryStoreError as failure:  # the store's one-line reason, as the reference
            return _error(str(failure))
        if long_call:
            await ctx.session.report_progress(1, 1, f"{name}: done")
        return result

    async def list_resources(
        ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None
    ) -> types.ListResourcesResult:
        return types.ListResourcesResult(resources=list(RESOURCES))

    readers: Mapping[str, Callable[[], Any]] = {
        "memory://knowledge-graph": tools.knowledge_graph,
        "memory://preferences": tools.preferences,
        "memory://session": tools.session_state,
    }

    async def read_resource(
        ctx: ServerRequestContext[Any], params: types.ReadResourceRequestParams
    ) -> types.ReadResourceResult:
        reader = readers.get(str(params.uri))
        if reader is None:
            raise MCPError(code=types.INVALID_PARAMS, message=f"Resource {params.uri} not found")
        try:
            value = await anyio.to_thread.run_sync(reader)
        except MemoryStoreError as failure:
            raise MCPError(code=types.INTERNAL_ERROR, message=str(failure)) from None
        return types.ReadResourceResult(
            contents=[
                types.TextResourceContents(
                    uri=str(params.uri), mime_type="application/json", text=_json_text(value)
                )
            ]
        )

    return Server(
        SERVER_NAME,
        version=SERVER_VERSION,
        instructions=(
            "Long-term memory for the current user: a knowledge graph (entities, relations, "
            "observations) and memories you can remember, recall and forget. Call context at "
            "the start of a task."
        ),
        on_list_tools=list_tools,
        on_call_tool=call_tool,
        on_list_resources=list_resources,
        on_read_resource=read_resource,
    )


def serve_stdio(server: Server[Any]) -> None:
    """Serve ``server`` over this process's standard input and output until the client
    closes them."""

    async def serve() -> None:
        async with stdio_server() as (read_stream, write_stream):
            await server.run(read_stream, write_stream, server.create_initialization_options())

    anyio.run(serve)


class _ConfiguredToken:
    """The SDK's ``TokenVerifier``: one bearer token from the configuration, compared in
    constant time."""

    def __init__(self, token: str) -> None:
        self._token = token.encode("utf-8")

    async def verify_token(self, token: str) -> AccessToken | None:
        if not secrets.compare_digest(token.encode("utf-8"), self._token):
            return None
        # Whom the server acts for is its configuration; the token only lets a client in.
        return AccessToken(token=token, client_id="configured-token", scopes=[])


def http_app(server: Server[Any], token: str, host: str, port: int) -> Any:
    """``server`` as a streamable-HTTP ASGI app at ``/mcp``, behind the bearer ``token`` (the
    SDK's own bearer middleware: 401 without it) and the SDK's DNS-rebinding protection on
    loopback."""
    if len(token) < 16:
        raise InvalidInputError("token: the bearer token must be at least 16 characters")
    return server.streamable_http_app(
        host=host,
        # The token is configured here, not issued by an OAuth server: the issuer is this
        # server itself, and no authorization routes are mounted (no provider is given).
        auth=AuthSettings(issuer_url=f"http://{host}:{port}", resource_server_url=None),
        token_verifier=_ConfiguredToken(token),
    )


def serve_http(server: Server[Any], token: str, port: int, host: str = "127.0.0.1") -> None:
    """Serve ``server`` over streamable HTTP on ``host:port`` until interrupted."""
    app = http_app(server, token, host, port)
    uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning")).run()
