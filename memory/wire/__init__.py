"""The hub's gRPC wire format: ``memory.proto`` (generated from the service core's request
and result models by ``memory.service.proto``), the code ``grpcio-tools`` generates from
it, and the conversion between its messages and the JSON-ready data both sides already
speak.

The messages are typed where protobuf can say exactly what the core's models say (strings,
integers, floats, booleans, lists of them, records as nested messages). A value protobuf
cannot type exactly (``Any``, a mapping, a union of several types, a list of lists) travels
as JSON text in a field named ``<name>_json``, so a preference's value or a memory's
metadata comes back with the types it went in with (``google.protobuf.Struct`` would turn
every number into a float). Every singular field has presence (``optional`` or a message),
so "not given" and "zero" stay apart.

This package imports nothing of ``memory``: the remote client (below the service in the
layers) and the service both use it. It needs the ``service`` extra (protobuf, grpcio).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, TypeVar

from google.protobuf.message import Message
from google.protobuf.unknown_fields import UnknownFieldSet

JSON_SUFFIX = "_json"
SERVICE = "tiered_memory.v1.MemoryHub"
# The metadata a call carries besides its message (lower case, as gRPC requires).
AUTHORIZATION = "authorization"
REQUEST_ID = "x-request-id"
IDEMPOTENCY_KEY = "idempotency-key"
# The trailers of a refused call: the library error's class name and its details (JSON).
ERROR_TYPE = "error-type"
ERROR_DETAILS = "error-details"

M = TypeVar("M", bound=Message)


def method_name(operation: str) -> str:
    """The RPC of ``operation``: ``add_many`` is ``AddMany``."""
    return "".join(part.title() for part in operation.split("_"))


def to_message(data: Mapping[str, Any], kind: type[M]) -> M:
    """``data`` (JSON-ready) as a ``kind`` message. A key the message has no field for, or
    a value of the wrong type, is a ``ValueError`` naming the field."""
    message = kind()
    _fill(message, data, "")
    return message


def _fill(message: Message, data: Mapping[str, Any], path: str) -> None:
    fields = message.DESCRIPTOR.fields_by_name
    for key, value in data.items():
        where = f"{path}{key}"
        field = fields.get(key)
        if field is None:
            encoded = fields.get(f"{key}{JSON_SUFFIX}")
            if encoded is None:
                raise ValueError(f"{where}: not a field of {message.DESCRIPTOR.name}")
            # JSON text even for None: an explicit null is a value (set_preference(k, None)).
            setattr(message, encoded.name, json.dumps(value, ensure_ascii=False, allow_nan=False))
            continue
        if value is None:
            continue  # absent: the field's default applies
        try:
            if field.message_type is not None:
                if field.is_repeated:
                    for index, item in enumerate(_items(value, where)):
                        _fill(getattr(message, key).add(), _object(item, f"{where}.{index}"),
                              f"{where}.{index}.")
                else:
                    child = getattr(message, key)
                    child.SetInParent()
                    _fill(child, _object(value, where), f"{where}.")
            elif field.is_repeated:
                getattr(message, key).extend(_items(value, where))
            else:
                setattr(message, key, value)
        except (TypeError, ValueError) as error:
            if str(error).startswith(f"{where}"):
                raise
            raise ValueError(f"{where}: {error}") from None


def _items(value: Any, where: str) -> list[Any]:
    if not isinstance(value, list | tuple):
        raise ValueError(f"{where}: a list is required, not {type(value).__name__}")
    return list(value)


def _object(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ValueError(f"{where}: an object is required, not {type(value).__name__}")
    return value


def from_message(message: Message, *, absent: bool, path: str = "") -> dict[str, Any]:
    """The JSON-ready data ``message`` carries. A field that was not set is left out when
    ``absent`` is false (a request: the default of the parameter applies) and is None when
    it is true (a result: every field of a record is there, None included). A ``_json``
    field that is not JSON is a ``ValueError`` naming it."""
    data: dict[str, Any] = {}
    for field in message.DESCRIPTOR.fields:
        name = field.name
        value = getattr(message, name)
        if field.is_repeated:
            if field.message_type is not None:
                data[name] = [
                    from_message(item, absent=absent, path=f"{path}{name}.{index}.")
                    for index, item in enumerate(value)
                ]
            else:
                data[name] = list(value)
        elif not message.HasField(name):
            if absent:
                data[name.removesuffix(JSON_SUFFIX)] = None
        elif name.endswith(JSON_SUFFIX):
            try:
                data[name.removesuffix(JSON_SUFFIX)] = json.loads(value)
            except (json.JSONDecodeError, RecursionError) as error:
                raise ValueError(f"{path}{name}: not JSON ({error})") from None
        elif field.message_type is not None:
            data[name] = from_message(value, absent=absent, path=f"{path}{name}.")
        else:
            data[name] = value
    return data


def unknown_fields(message: Message, path: str = "") -> list[str]:
    """Where ``message`` holds fields its type does not declare (a sender with another
    ``.proto``, or a forged message): protobuf keeps them silently, the hub refuses them."""
    unknown = UnknownFieldSet(message)
    found = [
        f"{path}{message.DESCRIPTOR.name} field number {unknown[index].field_number}"
        for index in range(len(unknown))
    ]
    for field in message.DESCRIPTOR.fields:
        if field.message_type is None:
            continue
        value = getattr(message, field.name)
        if field.is_repeated:
            for index, item in enumerate(value):
                found += unknown_fields(item, f"{path}{field.name}.{index}.")
        elif message.HasField(field.name):
            found += unknown_fields(value, f"{path}{field.name}.")
    return found
