"""The shape ARCHITECTURE.md describes: no import cycle, and migrations that import only the
store. The layer contracts themselves are import-linter's (``lint-imports``, in
``scripts/check``, configured in pyproject.toml)."""

from __future__ import annotations

import ast
from pathlib import Path

import grimp
import pytest

REPOSITORY = Path(__file__).resolve().parent.parent
PACKAGES = ["memory", "flags"]


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    return grimp.build_graph(*PACKAGES)


def _cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan, iteratively)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(graph.modules):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.find_modules_directly_imported_by(root))))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            module, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    imported = graph.find_modules_directly_imported_by(child)
                    work.append((child, iter(sorted(imported))))
                elif child in on_stack:
                    low[module] = min(low[module], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[module])
            if low[module] == index[module]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == module:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_no_module_imports_itself_through_others(graph: grimp.ImportGraph) -> None:
    assert _cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    graph = grimp.ImportGraph()
    for module in ("a", "a.b", "a.c", "a.d"):
        graph.add_module(module)
    graph.add_import(importer="a.b", imported="a.c")
    graph.add_import(importer="a.c", imported="a.b")
    graph.add_import(importer="a.d", imported="a.b")
    assert _cycles(graph) == [["a.b", "a.c"]]


def test_no_package_imports_a_package_that_imports_it(graph: grimp.ImportGraph) -> None:
    packages = sorted(
        module
        for module in graph.modules
        if module.count(".") == 1 and module.startswith("memory.")
    )
    both_ways = [
        (first, second)
        for first in packages
        for second in packages
        if first < second
        and graph.chain_exists(importer=first, imported=second, as_packages=True)
        and graph.chain_exists(importer=second, imported=first, as_packages=True)
    ]
    assert both_ways == []


def test_migrations_import_only_the_store_and_core() -> None:
    # memory._migrations ships from migrations/ (package-dir), which import-linter cannot
    # see: read the imports of every script instead.
    allowed = ("memory.store", "memory.core", "memory._migrations")
    for script in sorted((REPOSITORY / "migrations").rglob("*.py")):
        for node in ast.walk(ast.parse(script.read_text(), str(script))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            for name in names:
                if name == "memory" or name.startswith("memory."):
                    assert name.startswith(allowed), f"{script.name} imports {name}"
