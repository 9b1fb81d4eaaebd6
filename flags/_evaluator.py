"""The evaluator an application holds: cached provider state, refreshed on a timer.

Evaluation is an in-memory lookup in the current :class:`FlagSet`. Every
``refresh_interval`` seconds the first evaluation after the interval asks the provider for a
new snapshot and rebuilds the set; if the provider fails (raises, or returns definitions
that do not validate), the evaluator keeps the last snapshot that worked, or, if none ever
did, falls back on the built-in registry's defaults. A failure is logged once per outage
(a warning when it starts, an info line when the provider recovers), never per call.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Literal, TypedDict

from flags._context import EvaluationContext
from flags._definitions import FlagDefinition
from flags._engine import EngineSnapshot
from flags._environment import EnvironmentOverride, read_environment
from flags._exceptions import FlagDefinitionError, FlagProviderError, FlagValueError
from flags._flagset import Decision, FlagSet, OnceLog, utc_now
from flags._providers import FlagProvider
from flags._registry import BUILTIN_FLAGS
from flags._variant import Variant

__all__ = ["FlagEvaluator", "FlagState", "export_flag_states"]

logger = logging.getLogger("flags")


Source = Literal["environment", "provider", "last_known", "registry"]


class FlagState(TypedDict):
    """One flag's current state as plain data (see :func:`export_flag_states`)."""

    name: str
    description: str
    enabled_by_default: bool
    rollout: int
    source: Source
    parent: str | None
    stickiness: str
    environment: str | None


class FlagEvaluator:
    """Evaluate flags against a provider's cached snapshot; never raises while evaluating.

    - ``provider``: where definitions come from; None means the registry (and the
      environment) only.
    - ``registry``: the fallback definitions, decided by their ``default`` while no provider
      supplies them; the built-in rollout flags unless told otherwise.
    - ``refresh_interval``: seconds between provider reads (0 reads on every evaluation).
    - ``clock``: monotonic seconds, injected by tests; ``utcnow``: aware UTC now, for
      override expiry.
    - ``environ``: where the environment layer is read (``os.environ`` by default), again
      on every refresh.

    Raises :class:`EnvironmentOverrideError` if an environment variable named after a flag
    holds an invalid value, and :class:`FlagValueError` for a bad ``refresh_interval``.

    >>> from flags import InMemoryFlagProvider, FlagDefinition, EvaluationContext
    >>> provider = InMemoryFlagProvider([FlagDefinition("USE_ENHANCED_INJECTION", rollout=100)])
    >>> evaluator = FlagEvaluator(provider, environ={})
    >>> evaluator.is_enabled("USE_ENHANCED_INJECTION", EvaluationContext(user_id="u-1"))
    True
    """

    def __init__(
        self,
        provider: FlagProvider | None = None,
        *,
        registry: Mapping[str, FlagDefinition] = BUILTIN_FLAGS,
        refresh_interval: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        utcnow: Callable[[], datetime] = utc_now,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        if (
            isinstance(refresh_interval, bool)
            or not isinstance(refresh_interval, int | float)
            or not math.isfinite(refresh_interval)
            or refresh_interval < 0
        ):
            raise FlagValueError(
                f"refresh_interval must be a finite number of seconds >= 0, "
                f"got {refresh_interval!r}"
            )
        self._provider = provider
        self._registry: Mapping[str, FlagDefinition] = dict(registry)
        self._refresh_interval = float(refresh_interval)
        self._clock = clock
        self._utcnow = utcnow
        self._environ: Mapping[str, str] = os.environ if environ is None else environ
        self._log_once = OnceLog()
        self._refresh_lock = threading.Lock()
        self._last_snapshot: Mapping[str, FlagDefinition] | None = None
        self._failing = False
        # Validates the registry (cycles, names) before anything else can go wrong.
        self._flags = FlagSet(fallbacks=self._registry, utcnow=utcnow, log_once=self._log_once)
        self._next_refresh = 0.0
        with self._refresh_lock:
            self._load(strict=True)

    @property
    def refresh_interval(self) -> float:
        """Seconds between provider reads."""
        return self._refresh_interval

    @property
    def flags(self) -> FlagSet:
        """The :class:`FlagSet` evaluations currently use."""
        return self._flags

    @property
    def stale(self) -> bool:
        """True while the provider is failing and the evaluator uses old or default state."""
        return self._failing

    def is_enabled(self, flag_name: str, context: EvaluationContext | None = None) -> bool:
        """Return whether ``flag_name`` is on for ``context``. Never raises.

        An unknown flag is off and logged once. If evaluation itself fails, the registry
        default is returned and the failure logged once per flag.
        """
        # The hot path: the common "not due" check is made here rather than in a call to
        # _refresh_if_due, which keeps a warm decision as cheap as before FlagSet.is_enabled
        # took over the fallback.
        try:
            due = self._clock() >= self._next_refresh
        except Exception:  # a broken clock: _refresh_if_due logs it
            due = True
        if due:
            self._refresh_if_due()
        return self._flags.is_enabled(flag_name, context)

    def explain(self, flag_name: str, context: EvaluationContext | None = None) -> Decision:
        """Return the :class:`Decision` for ``flag_name``: value, deciding rule, detail text.

        Never raises; a failure is reported as rule ``error`` with the registry default.
        """
        self._refresh_if_due()
        return self._flags.explain(flag_name, context)

    def variant(self, flag_name: str, context: EvaluationContext | None = None) -> Variant:
        """Return the :class:`Variant` ``context`` gets for ``flag_name``. Never raises.

        Toggles read from Unleash answer Unleash's variant (strategy variants, stickiness,
        overrides); every other flag has none and answers ``"disabled"``, with
        ``feature_enabled`` saying whether it is on (see :meth:`FlagSet.variant`).
        """
        self._refresh_if_due()
        return self._flags.variant(flag_name, context)

    def refresh(self) -> None:
        """Read the provider and the environment now, whatever the interval.

        Provider failures are handled as during evaluation (logged, last known state kept).
        An invalid environment value raises :class:`EnvironmentOverrideError` after the rest
        of the refresh has been applied; that variable is ignored until it is fixed.
        """
        with self._refresh_lock:
            self._load(strict=True)

    def export_state(self) -> list[FlagState]:
        """Return every flag's current state as plain data, sorted by name."""
        flags = self._flags
        stale = self._failing
        states: list[FlagState] = []
        for name in sorted(flags.definitions):
            entry = flags._entries[name]
            definition = entry.definition
            env = entry.environment
            source: Source
            if env is not None:
                source = "environment"
            elif not entry.from_provider:
                source = "registry"
            else:
                source = "last_known" if stale else "provider"
            if env is not None and env.forced is not None:
                rollout = 100 if env.forced else 0
            elif entry.rollout is not None:
                rollout = entry.rollout
            else:
                # Decided by its default: the effective rollout is all or nothing.
                rollout = 100 if definition.default else 0
            states.append(
                FlagState(
                    name=name,
                    description=definition.description,
                    enabled_by_default=definition.default,
                    rollout=rollout,
                    source=source,
                    parent=definition.parent,
                    stickiness=definition.stickiness,
                    environment=env.value if env is not None else None,
                )
            )
        return states

    def _refresh_if_due(self) -> None:
        try:
            if self._clock() < self._next_refresh:
                return
            # One thread refreshes; the others keep evaluating against the current set
            # rather than queueing behind a slow provider.
            if not self._refresh_lock.acquire(blocking=False):
                return
            try:
                if self._clock() >= self._next_refresh:
                    self._load(strict=False)
            finally:
                self._refresh_lock.release()
        except Exception:  # a broken clock must not stop evaluation of the cached state
            self._log_once(
                "refresh",
                logging.ERROR,
                "refreshing flags failed; keeping the current state",
                exc_info=True,
            )

    def _load(self, *, strict: bool) -> None:
        """Rebuild the flag set; called with the refresh lock held."""
        self._next_refresh = self._clock() + self._refresh_interval
        try:
            snapshot = self._read_provider()
            names = {*self._registry, *snapshot}
            environment, env_errors = read_environment(names, self._environ)
            flags = self._flag_set(snapshot, environment)
        except Exception as exc:
            if not self._failing:
                self._failing = True
                kept = "the last known state" if self._last_snapshot else "the registry defaults"
                logger.warning("flag provider failed (%r); using %s until it recovers", exc, kept)
            else:
                logger.debug("flag provider still failing: %r", exc)
            base = {} if self._last_snapshot is None else self._last_snapshot
            names = {*self._registry, *base}
            environment, env_errors = read_environment(names, self._environ)
            # Both inputs were validated before, so this cannot fail for dependency reasons.
            flags = self._flag_set(base, environment)
        else:
            if self._failing:
                self._failing = False
                logger.info("flag provider recovered")
            self._last_snapshot = snapshot
        self._flags = flags
        for error in env_errors:
            self._log_once(
                ("environment", error.variable, error.value),
                logging.ERROR,
                "%s; ignoring it",
                error,
            )
        if strict and env_errors:
            raise env_errors[0]

    def _flag_set(
        self,
        snapshot: Mapping[str, FlagDefinition],
        environment: Mapping[str, EnvironmentOverride],
    ) -> FlagSet:
        return FlagSet(
            snapshot,
            fallbacks=self._registry,
            environment=environment,
            utcnow=self._utcnow,
            log_once=self._log_once,
        )

    def _read_provider(self) -> Mapping[str, FlagDefinition]:
        if self._provider is None:
            return {}
        raw = self._provider.snapshot()
        if not isinstance(raw, Mapping):
            raise FlagProviderError(
                f"provider returned {type(raw).__name__}, not a mapping of name to definition"
            )
        snapshot: dict[str, FlagDefinition] = {}
        for name, definition in raw.items():
            if not isinstance(definition, FlagDefinition):
                raise FlagDefinitionError(
                    str(name),
                    "definition",
                    f"must be a FlagDefinition, got {type(definition).__name__}",
                )
            snapshot[name] = definition
        # An engine snapshot is immutable and carries its engine: kept as it is.
        return raw if isinstance(raw, EngineSnapshot) else snapshot


def export_flag_states(evaluator: FlagEvaluator) -> list[FlagState]:
    """Return the current state of every flag ``evaluator`` knows, as plain dicts.

    Each item has ``name``, ``description``, ``enabled_by_default``, ``rollout`` (the
    effective percentage: 100/0 when the environment forces on/off or when the registry
    default decides), ``source`` (``environment``, ``provider``, ``last_known`` while the
    provider is failing, or ``registry``), ``parent``, ``stickiness`` and ``environment``
    (the raw variable value or None). Sorted by name, ready for a metrics exporter.
    """
    return evaluator.export_state()
