"""The seam between a :class:`flags.FlagSet` and an external evaluation engine.

A provider whose flags cannot all be written as :class:`FlagDefinition` (the Unleash
provider: constraints, segments, many strategies, variants) returns an
:class:`EngineSnapshot`: the definitions it could translate, which :class:`FlagSet`
evaluates on its own fast path, plus the engine that decides everything else. The engine is
also asked when a fast-path flag meets a context without the value it hashes, because that
is where Unleash's rules (random buckets, off at 100 %) differ from a plain rollout.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from types import MappingProxyType
from typing import Protocol

from flags._context import EvaluationContext
from flags._definitions import FlagDefinition
from flags._variant import Variant

__all__ = ["EngineSnapshot", "FlagEngine"]


class FlagEngine(Protocol):
    """Decides flags for a context; never raises (a failure is an off flag)."""

    def is_enabled(self, flag_name: str, context: EvaluationContext) -> bool:
        """Whether ``flag_name`` is on for ``context``."""
        ...

    def variant(self, flag_name: str, context: EvaluationContext) -> Variant:
        """The variant ``context`` gets for ``flag_name``."""
        ...


class EngineSnapshot(Mapping[str, FlagDefinition]):
    """A provider's snapshot whose flags are decided partly by an engine.

    As a mapping it holds the definitions (every toggle that has a valid flag name).
    ``engine_only`` maps each flag that only the engine can decide to the reason, and may
    name toggles that have no definition (a name that is no valid flag name, such as a
    UTF-8 Unleash toggle name).
    """

    __slots__ = ("_definitions", "engine", "engine_only")

    def __init__(
        self,
        definitions: Mapping[str, FlagDefinition],
        engine: FlagEngine,
        engine_only: Mapping[str, str],
    ) -> None:
        self._definitions = MappingProxyType(dict(definitions))
        self.engine = engine
        self.engine_only: Mapping[str, str] = MappingProxyType(dict(engine_only))

    def __getitem__(self, name: str) -> FlagDefinition:
        return self._definitions[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._definitions)

    def __len__(self) -> int:
        return len(self._definitions)
