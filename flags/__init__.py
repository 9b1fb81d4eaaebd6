"""Percentage-rollout feature flags with Unleash-compatible consistent hashing.

The pure core of the flag system: definitions, the evaluation rules, the environment layer,
providers and the evaluator that caches their state. It never imports ``memory``; the
memory layer asks an evaluator "is this flag on for this context?".

>>> from flags import FlagEvaluator, EvaluationContext, USE_ENHANCED_INJECTION
>>> evaluator = FlagEvaluator(environ={})
>>> evaluator.is_enabled(USE_ENHANCED_INJECTION, EvaluationContext(user_id="u-1"))
False
>>> evaluator.variant(USE_ENHANCED_INJECTION, EvaluationContext(user_id="u-1")).name
'disabled'

The Unleash and OpenFeature providers (:class:`UnleashFlagProvider`,
:class:`OpenFeatureFlagProvider`) need optional packages and are imported on first use, so
``import flags`` stays light; without their extra, using one raises
:class:`MissingPackageError` with the ``pip install`` line to run.
"""

import importlib
from typing import TYPE_CHECKING

from flags._context import EvaluationContext
from flags._definitions import FlagDefinition, SessionOverride, Stickiness, check_dependencies
from flags._environment import (
    EnvironmentOverride,
    parse_environment_override,
    read_environment,
)
from flags._evaluator import FlagEvaluator, FlagState, export_flag_states
from flags._exceptions import (
    EnvironmentOverrideError,
    FlagDefinitionError,
    FlagDependencyError,
    FlagError,
    FlagProviderError,
    FlagValueError,
    MissingPackageError,
)
from flags._flagset import Decision, FlagSet, Rule
from flags._hashing import murmur3_32, normalized_hash
from flags._providers import FlagProvider, InMemoryFlagProvider
from flags._registry import (
    BUILTIN_FLAGS,
    USE_CROSS_AGENT_SHARING,
    USE_ENHANCED_INJECTION,
    USE_HIERARCHICAL_TIERS,
    USE_SWARM_SIGNATURE_ENFORCEMENT,
)
from flags._variant import Variant, VariantPayload

if TYPE_CHECKING:
    from flags._openfeature import OpenFeatureFlagProvider
    from flags._unleash import UnleashFlagProvider

# Public name -> the private module that defines it, imported by __getattr__ on first use.
_OPTIONAL = {
    "OpenFeatureFlagProvider": "flags._openfeature",
    "UnleashFlagProvider": "flags._unleash",
}


def __getattr__(name: str) -> object:
    module = _OPTIONAL.get(name)
    if module is None:
        raise AttributeError(f"module 'flags' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "BUILTIN_FLAGS",
    "Decision",
    "EnvironmentOverride",
    "EnvironmentOverrideError",
    "EvaluationContext",
    "FlagDefinition",
    "FlagDefinitionError",
    "FlagDependencyError",
    "FlagError",
    "FlagEvaluator",
    "FlagProvider",
    "FlagProviderError",
    "FlagSet",
    "FlagState",
    "FlagValueError",
    "InMemoryFlagProvider",
    "MissingPackageError",
    "OpenFeatureFlagProvider",
    "Rule",
    "SessionOverride",
    "Stickiness",
    "USE_CROSS_AGENT_SHARING",
    "USE_ENHANCED_INJECTION",
    "USE_HIERARCHICAL_TIERS",
    "USE_SWARM_SIGNATURE_ENFORCEMENT",
    "UnleashFlagProvider",
    "Variant",
    "VariantPayload",
    "check_dependencies",
    "export_flag_states",
    "murmur3_32",
    "normalized_hash",
    "parse_environment_override",
    "read_environment",
]
