"""The agent API (``memory``) and the operator API (``memory.ops``): exactly these names."""

from __future__ import annotations

import inspect
import types

import pytest

import memory
import memory.ops

AGENT_API = [
    "AddedObservations", "ArchiveError", "AsyncGraph", "AsyncMemory", "AsyncScope",
    "AuthenticationError", "ChainReport", "CodePattern",
    "ConflictError", "ContextConflict", "ContextItem", "ContextWrite", "DatabaseUnavailableError",
    "DeadlineExceededError", "EmbeddedOnlyError",
    "Embedder", "EmbedderUnavailableError", "Entity", "EntityGraph", "ExporterUnavailableError",
    "FlagOffWarning", "ForgetReport", "Grant", "HashingEmbedder", "InjectedContext",
    "InvalidInputError", "KnowledgeGraph", "Memory", "MemoryEvent", "MemoryRecord",
    "MemoryStoreError", "MergedContext", "MetricsSourceError", "MiniLMEmbedder",
    "NotFoundError", "PermissionDeniedError", "Preference", "QuotaExceededError", "Redaction",
    "Relation", "ResumedSession", "SchemaError", "Scope", "SearchHit", "SessionCheckpoint",
    "SessionExpiredError", "StaleVersionError", "StorageError", "StoreClosedError",
    "Subscription", "TokenCounter", "UpdatesStatus", "merge_patches",
]  # fmt: skip


def _public(module: types.ModuleType) -> list[str]:
    """The public names a module holds, less its submodules (importing a subpackage sets them
    as attributes; they are not part of the API)."""
    return sorted(
        name
        for name in dir(module)
        if not name.startswith("_") and not isinstance(getattr(module, name), types.ModuleType)
    )


def test_the_agent_api_is_exactly_these_names() -> None:
    assert memory.__all__ == AGENT_API
    assert _public(memory) == memory.__all__


@pytest.mark.parametrize("module", [memory, memory.ops], ids=["memory", "memory.ops"])
def test_all_is_sorted_and_every_name_is_documented(module: types.ModuleType) -> None:
    assert module.__all__ == sorted(module.__all__)
    assert _public(module) == module.__all__
    for name in module.__all__:
        value = getattr(module, name)
        if inspect.isclass(value) or inspect.isfunction(value):
            assert inspect.getdoc(value), f"{module.__name__}.{name} has no docstring"


def test_no_name_is_both_agent_and_operator_api() -> None:
    assert not set(memory.__all__) & set(memory.ops.__all__)
