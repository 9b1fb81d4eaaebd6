"""Write memory/wire/memory.proto from the service core and generate its Python code with
grpcio-tools (messages, type stubs, the gRPC stub). Run after changing a Scope method's
signature or a record; tests/service/test_grpc_code.py fails until you do.

    python scripts/generate_grpc.py [OUTPUT_ROOT]

OUTPUT_ROOT (default: the repository) is where memory/wire/ is written.
"""

from __future__ import annotations

import sys
from pathlib import Path

from grpc_tools import protoc

from memory.service.proto import proto_text

PROTO = Path("memory/wire/memory.proto")


def generate(root: Path) -> None:
    """The .proto and its generated modules under ``root``."""
    (root / PROTO).parent.mkdir(parents=True, exist_ok=True)
    (root / PROTO).write_text(proto_text(), encoding="utf-8")
    status = protoc.main(
        [
            "grpc_tools.protoc",
            f"--proto_path={root}",
            f"--python_out={root}",
            f"--pyi_out={root}",
            f"--grpc_python_out={root}",
            str(root / PROTO),
        ]
    )
    if status != 0:
        raise SystemExit(f"grpc_tools.protoc failed ({status})")


if __name__ == "__main__":
    generate(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[1])
