"""The built-in registry: the rollout plan's flags, all off by default.

The registry is what evaluation falls back on when no provider has ever answered, so its
values are the safe ones: every new behaviour off.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from flags._definitions import FlagDefinition, Stickiness, check_dependencies

__all__ = [
    "BUILTIN_FLAGS",
    "USE_CROSS_AGENT_SHARING",
    "USE_ENHANCED_INJECTION",
    "USE_HIERARCHICAL_TIERS",
    "USE_SWARM_SIGNATURE_ENFORCEMENT",
]

USE_ENHANCED_INJECTION = "USE_ENHANCED_INJECTION"
USE_CROSS_AGENT_SHARING = "USE_CROSS_AGENT_SHARING"
USE_HIERARCHICAL_TIERS = "USE_HIERARCHICAL_TIERS"
USE_SWARM_SIGNATURE_ENFORCEMENT = "USE_SWARM_SIGNATURE_ENFORCEMENT"

_FLAGS = (
    FlagDefinition(
        name=USE_ENHANCED_INJECTION,
        description="Inject remembered context into agent prompts within a token budget.",
        default=False,
        rollout=0,
        stickiness=Stickiness.DEFAULT.value,
    ),
    FlagDefinition(
        name=USE_CROSS_AGENT_SHARING,
        description=(
            "Share memories between agents through explicit grants; needs enhanced injection."
        ),
        default=False,
        rollout=0,
        # Per session, not per user: one conversation must not see sharing switch on and off
        # between calls, while a user's other sessions are independent samples.
        stickiness=Stickiness.SESSION_ID.value,
        parent=USE_ENHANCED_INJECTION,
    ),
    FlagDefinition(
        name=USE_HIERARCHICAL_TIERS,
        description="Store memories in working, episodic and semantic tiers with compaction.",
        default=False,
        rollout=0,
        stickiness=Stickiness.DEFAULT.value,
    ),
    FlagDefinition(
        name=USE_SWARM_SIGNATURE_ENFORCEMENT,
        description=(
            "Refuse swarm bus envelopes whose custody chain is unsigned or badly signed; "
            "off, they are only warned about."
        ),
        default=False,
        rollout=0,
        # The swarm bus decides with the swarm id as the user: a whole swarm enforces or not.
        stickiness=Stickiness.DEFAULT.value,
    ),
)

BUILTIN_FLAGS: Mapping[str, FlagDefinition] = MappingProxyType({f.name: f for f in _FLAGS})
check_dependencies(BUILTIN_FLAGS)
