"""``memory.cli`` is click over the public API: its modules import ``memory``, ``memory.ops``,
``memory.swarm``, ``memory.service`` (``memctl serve``), ``flags`` and each other, and no
private name of any of them (issue 13)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import memory.cli

CLI = Path(memory.cli.__file__).parent
ALLOWED = {"memory", "memory.ops", "memory.service", "memory.swarm", "flags"}


def imports(path: Path) -> list[tuple[str, str | None]]:
    """(module, name) of every import in ``path``; name None for ``import module``."""
    found: list[tuple[str, str | None]] = []
    for node in ast.walk(ast.parse(path.read_text("utf-8"))):
        if isinstance(node, ast.Import):
            found.extend((alias.name, None) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module is not None:
            found.extend((node.module, alias.name) for alias in node.names)
    return found


@pytest.mark.parametrize("path", sorted(CLI.glob("*.py")), ids=lambda path: path.name)
def test_a_cli_module_imports_only_the_public_api(path: Path) -> None:
    ours = [
        (module, name)
        for module, name in imports(path)
        if module.split(".")[0] in {"memory", "flags"}
    ]
    assert ours, f"{path.name} imports nothing of memory: is this test reading the right files?"
    wrong = [
        (module, name)
        for module, name in ours
        if not (module in ALLOWED or module.startswith("memory.cli"))
        or (name is not None and name.startswith("_"))
    ]
    assert wrong == []
