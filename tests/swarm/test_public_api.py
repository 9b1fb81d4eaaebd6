"""``memory.swarm``'s public names: exactly these, sorted, each importable."""

from __future__ import annotations

import memory.swarm

EXPECTED = [
    "AgentKey",
    "Claim",
    "Conflict",
    "Context",
    "CustodyEntry",
    "Envelope",
    "Escalation",
    "Finding",
    "Issue",
    "LeaseLostError",
    "Registry",
    "RememberFindings",
    "ScanReport",
    "SignatureError",
    "SpeechAct",
    "SwarmBus",
    "SwarmError",
    "SwarmHealth",
    "SwarmUnavailableError",
    "Task",
    "TaskStatus",
    "connect",
    "verify",
]


def test_the_public_names_are_these() -> None:
    assert memory.swarm.__all__ == EXPECTED
    for name in EXPECTED:
        assert getattr(memory.swarm, name) is not None
    assert issubclass(memory.swarm.SwarmError, memory.MemoryStoreError)
