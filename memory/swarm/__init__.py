"""The swarm bus on Redis: tasks, findings with confidence and citations, conflicts and
escalation to a human, in signed envelopes with a chain of custody.

>>> from memory.swarm import AgentKey, SwarmBus                       # doctest: +SKIP
>>> key = AgentKey.generate()                                        # doctest: +SKIP
>>> bus = SwarmBus.open("redis://127.0.0.1:6379/0", "research", "w1", key=key)  # doctest: +SKIP
>>> bus.register_agent("w1", key.public_key)                         # doctest: +SKIP
>>> task = bus.create_task("Check the claim", data={"url": "https://example.org"})  # doctest: +SKIP
>>> claim = bus.get_unassigned_task()                                # doctest: +SKIP
>>> bus.post_finding(claim.task.id, "The claim holds", 0.9, ["if://citation/1"])  # doctest: +SKIP
>>> bus.complete_task(claim, {"verdict": "holds"})                   # doctest: +SKIP

Modules: :mod:`~memory.swarm.envelope` (the signed envelope, pure),
:mod:`~memory.swarm.schema` (keys, TTLs, input checks), :mod:`~memory.swarm.bus` (the bus),
:mod:`~memory.swarm.scan` (the remediation scan), :mod:`~memory.swarm.errors`.
``memctl swarm`` (``memory.cli.swarm``) is its command line.
"""

from memory.swarm.bus import (
    Claim,
    Conflict,
    Context,
    Escalation,
    Finding,
    Registry,
    RememberFindings,
    SwarmBus,
    SwarmHealth,
    Task,
    connect,
)
from memory.swarm.envelope import AgentKey, CustodyEntry, Envelope, SpeechAct, verify
from memory.swarm.errors import LeaseLostError, SignatureError, SwarmError, SwarmUnavailableError
from memory.swarm.scan import Issue, ScanReport
from memory.swarm.schema import TaskStatus

__all__ = [
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
