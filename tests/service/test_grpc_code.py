"""The checked-in gRPC code is what the service core generates: ``memory/wire/memory.proto``
is derived from the core's request and result models, and the Python modules are what
``grpcio-tools`` makes of it (``python scripts/generate_grpc.py`` rewrites them)."""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest

from memory.service.core import OPERATIONS
from memory.wire import memory_pb2, method_name

REPOSITORY = Path(__file__).resolve().parents[2]
GENERATED = ("memory.proto", "memory_pb2.py", "memory_pb2.pyi", "memory_pb2_grpc.py")


@pytest.fixture(scope="module")
def regenerated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("generated")
    script = runpy.run_path(str(REPOSITORY / "scripts" / "generate_grpc.py"))
    script["generate"](root)
    return root / "memory" / "wire"


@pytest.mark.parametrize("name", GENERATED)
def test_the_checked_in_grpc_code_is_current(regenerated: Path, name: str) -> None:
    checked_in = (REPOSITORY / "memory" / "wire" / name).read_text(encoding="utf-8")
    assert (regenerated / name).read_text(encoding="utf-8") == checked_in, (
        f"memory/wire/{name} is stale: run python scripts/generate_grpc.py"
    )


def test_every_operation_of_the_core_is_an_rpc_with_typed_messages() -> None:
    service = memory_pb2.DESCRIPTOR.services_by_name["MemoryHub"]
    assert {method.name for method in service.methods} == {
        *(method_name(name) for name in OPERATIONS), "Changes"
    }
    assert service.methods_by_name["Changes"].server_streaming
    # Typed where protobuf can say it: the record, not JSON text.
    fields = memory_pb2.AddReply.DESCRIPTOR.fields_by_name
    assert fields["result"].message_type.name == "MemoryRecord"
    arguments = memory_pb2.AddArguments.DESCRIPTOR.fields_by_name
    assert arguments["content"].type == arguments["content"].TYPE_STRING
    assert arguments["importance"].type == arguments["importance"].TYPE_DOUBLE
    assert "metadata_json" in arguments  # a mapping: JSON text
