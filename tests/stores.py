"""Stores in the states tests need beyond "new": the helpers test modules share (conftest
modules cannot be imported)."""

from __future__ import annotations

from memory import HashingEmbedder, Memory
from memory import ops as ops

PHASE_1_REVISION = "0003"


def upgraded_from_phase_1(url: str) -> str:
    """Make the empty database at ``url`` a Phase 1 store an agent has used (an entity
    graph with one entity), upgraded to head as the migration runbook does: agents have
    written to it, and every rollout flag is off with nothing in the flag audit."""
    ops.migrate(url, PHASE_1_REVISION)
    with Memory.open(url, embedder=HashingEmbedder()) as store:
        store.graph("ada").create_entities(
            [{"name": "Ada", "entityType": "person", "observations": ["exports invoices"]}]
        )
    ops.migrate(url)
    return url
