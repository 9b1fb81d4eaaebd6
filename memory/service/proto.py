"""``memory.proto``, derived from the service core: one RPC per operation, its request and
reply messages from the operation's request model and result type (their JSON Schemas), so
the gRPC surface cannot drift from the one the HTTP API and the embedded ``Scope`` have.

``python scripts/generate_grpc.py`` writes it to ``memory/wire/memory.proto`` and runs
``grpcio-tools`` on it; ``tests/service/test_grpc_code.py`` checks both are current. See
``memory.wire`` for how values protobuf cannot type exactly travel (JSON text).
"""

from __future__ import annotations

from typing import Any

from memory.service.core import CHANGES_REQUEST, EVENT, OPERATIONS
from memory.wire import JSON_SUFFIX, SERVICE, method_name

_SCALARS = {"string": "string", "integer": "int64", "number": "double", "boolean": "bool"}
_NULL = {"type": "null"}


class _Messages:
    """The message definitions found while walking the schemas, by name, in order."""

    def __init__(self) -> None:
        self.bodies: dict[str, list[str]] = {}

    def add(self, name: str, schema: dict[str, Any], defs: dict[str, Any]) -> str:
        lines = []
        for number, (field, item) in enumerate(schema.get("properties", {}).items(), 1):
            kind = self.field_type(item, defs)
            if kind is None:
                lines.append(f"optional string {field}{JSON_SUFFIX} = {number};")
            else:
                label, type_name = kind
                lines.append(f"{label}{type_name} {field} = {number};")
        known = self.bodies.get(name)
        if known is not None and known != lines:
            raise ValueError(f"two different messages would be named {name}")
        self.bodies[name] = lines
        return name

    def field_type(self, schema: dict[str, Any], defs: dict[str, Any]) -> tuple[str, str] | None:
        """(label, type) of a field, or None when protobuf cannot type it exactly."""
        schema = _resolved(schema, defs)
        options = schema.get("anyOf")
        if options is not None:
            # One protobuf type for every option but null (``str | bytes``: a string):
            # that type, with presence for the null. Else JSON says which option it is.
            found = {self.field_type(option, defs) for option in options if option != _NULL}
            if len(found) != 1:
                return None
            (single,) = found
            if single is None or single[0] == "repeated ":
                return None  # a list or null: the difference needs JSON
            return single
        kind = schema.get("type")
        if kind in _SCALARS:
            return "optional ", _SCALARS[kind]
        if kind == "array" and "items" in schema and "prefixItems" not in schema:
            inner = self.field_type(schema["items"], defs)
            if inner is None or inner[0] == "repeated ":
                return None
            return "repeated ", inner[1]
        # A record or an arguments model (extra="forbid" says additionalProperties: false);
        # an object that takes other keys is a mapping: JSON.
        if kind == "object" and "properties" in schema and not schema.get("additionalProperties"):
            return "", self.add(schema["title"], schema, defs)
        return None


def _resolved(schema: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    while True:
        if "$ref" in schema:
            schema = defs[schema["$ref"].rsplit("/", 1)[-1]]
        elif "allOf" in schema and len(schema["allOf"]) == 1:
            schema = schema["allOf"][0]
        else:
            return schema


def proto_text() -> str:
    """The whole ``memory.proto``."""
    messages = _Messages()
    rpcs = []
    for operation in OPERATIONS.values():
        method = method_name(operation.name)
        request = operation.request.model_json_schema()
        messages.add(f"{method}Request", request, request.get("$defs", {}))
        result = operation.result.json_schema(mode="serialization")
        reply = {"properties": {"result": result}}
        messages.add(f"{method}Reply", reply, result.get("$defs", {}))
        rpcs.append(f"  rpc {method} ({method}Request) returns ({method}Reply);")
    changes = CHANGES_REQUEST.model_json_schema()
    messages.add("ChangesRequest", changes, changes.get("$defs", {}))
    event = EVENT.json_schema(mode="serialization")
    event_name = messages.add(event["title"], event, event.get("$defs", {}))
    rpcs.append(f"  rpc Changes (ChangesRequest) returns (stream {event_name});")
    package, service = SERVICE.rsplit(".", 1)
    lines = [
        "// Generated from the service core by memory/service/proto.py",
        "// (python scripts/generate_grpc.py); do not edit by hand.",
        'syntax = "proto3";',
        "",
        f"package {package};",
        "",
        f"service {service} {{",
        *rpcs,
        "}",
    ]
    for name, body in messages.bodies.items():
        lines += ["", f"message {name} {{", *(f"  {line}" for line in body), "}"]
    return "\n".join(lines) + "\n"
