"""Where flag definitions come from.

A provider has one job: return a snapshot, a mapping of flag name to
:class:`FlagDefinition`. It may be slow or fail (a database, an Unleash server);
:class:`flags.FlagEvaluator` calls it only on refresh, never per evaluation, and survives
its failures.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Protocol, runtime_checkable

from flags._definitions import FlagDefinition, check_dependencies
from flags._exceptions import FlagDefinitionError

__all__ = ["FlagProvider", "InMemoryFlagProvider"]


@runtime_checkable
class FlagProvider(Protocol):
    """Anything that can list the current flag definitions."""

    def snapshot(self) -> Mapping[str, FlagDefinition]:
        """Return every flag this provider defines, by name.

        May raise (the evaluator then keeps its last known state); should not block for
        long, because a refresh runs on the thread of the evaluation that triggered it.
        """
        ...


class InMemoryFlagProvider:
    """A provider that holds definitions in memory: tests, scripts and embedded use.

    Every change is validated against the whole set, so a missing parent or a dependency
    cycle raises :class:`FlagDependencyError` at the call that would create it and leaves the
    provider unchanged.

    >>> provider = InMemoryFlagProvider([FlagDefinition("USE_X", rollout=10)])
    >>> provider.set(FlagDefinition("USE_X", rollout=20))
    >>> provider.snapshot()["USE_X"].rollout
    20
    """

    def __init__(self, definitions: Iterable[FlagDefinition] = ()) -> None:
        self._lock = threading.Lock()
        initial: dict[str, FlagDefinition] = {}
        for definition in definitions:
            if not isinstance(definition, FlagDefinition):
                raise FlagDefinitionError(
                    None,
                    "definition",
                    f"must be a FlagDefinition, got {type(definition).__name__}",
                )
            if definition.name in initial:
                raise FlagDefinitionError(
                    definition.name, "name", "is defined twice; flag names must be unique"
                )
            initial[definition.name] = definition
        check_dependencies(initial)
        self._definitions = initial

    def snapshot(self) -> Mapping[str, FlagDefinition]:
        """Return a read-only copy of the current definitions."""
        with self._lock:
            return MappingProxyType(dict(self._definitions))

    def set(self, definition: FlagDefinition) -> None:
        """Add or replace one definition (validated with its parent chain)."""
        with self._lock:
            candidate = {**self._definitions, definition.name: definition}
            check_dependencies(candidate)
            self._definitions = candidate

    def remove(self, name: str) -> None:
        """Remove a flag; raises :class:`FlagDependencyError` if another flag names it as parent.

        Removing a flag that does not exist does nothing.
        """
        with self._lock:
            candidate = {k: v for k, v in self._definitions.items() if k != name}
            check_dependencies(candidate)
            self._definitions = candidate
