"""Flags read from an Unleash server, decided exactly as Unleash decides them.

:class:`UnleashFlagProvider` lets the ``UnleashClient`` package poll the server's client API
in the background (every ``refresh_interval`` seconds) into an in-memory cache. When the
evaluator asks for a snapshot, the last features document becomes an
:class:`~flags._engine.EngineSnapshot`: every toggle that a :class:`FlagDefinition` can
express exactly is translated for the evaluator's fast path, and Unleash's own evaluation
engine (``yggdrasil-engine``, what ``UnleashClient`` 6 evaluates with), loaded with the same
document, decides everything else. A snapshot never waits on the network.

The fast path takes a toggle when its decision can be written as our rules:

- a disabled toggle (in the client's environment): off for everyone;
- an enabled toggle with no strategies: on for everyone;
- ``default`` and ``flexibleRollout`` strategies (whole-percent rollout, ``default``,
  ``userId``, ``sessionId`` or property stickiness, a non-empty ``groupId`` or none,
  which means the toggle's name); several
  rollout strategies must share stickiness and group (the largest rollout wins, their
  buckets are nested);
- constraints only on the agent field (``agentId``, the ``agent_field`` argument): ``IN``
  on a 100 % ``default``-stickiness strategy is the allow list, ``NOT_IN`` (or an inverted
  ``IN``), the same on every strategy, is the deny list; constraints from segments count
  as the strategy's own;
- at most one dependency: on a parent that is on (no variants required), where the parent
  exists, depends on nothing itself and is on the fast path too, with a ``groupId`` on
  each rollout (Unleash hashes a parent's rollout without one by the child's name).

Everything else goes to the engine: other strategies (``userWithId``, the gradual
rollouts, ``remoteAddress``, ``applicationHostname``), constraints on any other field or
with any other operator, fractional or random rollouts, strategies marked disabled,
dependencies on a disabled parent or on variants, several parents, and toggles whose name
is no flag name. A fast-path toggle also asks the engine when the context lacks the value
its rollout hashes, because there Unleash draws a random bucket (``default`` stickiness) or
is off even at 100 %.

Unleash allows one level of dependencies: a toggle whose parent is missing from the payload
or depends on another toggle itself (cycles included) is off. Such toggles are translated
as off and named in one warning; every other toggle is evaluated normally.

The context (:class:`EvaluationContext`) maps onto Unleash's as the README's table says:
``user_id`` -> ``userId``, ``session_id`` -> ``sessionId``, ``agent_id`` -> property
``agentId``; attributes named ``remoteAddress``, ``currentTime``, ``environment`` or
``appName`` fill those fields (the last two default to the provider's ``environment`` and
``app_name``, as in ``UnleashClient``), every other attribute is a property. Empty ids count
as missing, as everywhere in ``flags``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import socket
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, NamedTuple

from flags._context import EvaluationContext
from flags._definitions import FlagDefinition, Stickiness
from flags._engine import EngineSnapshot
from flags._exceptions import (
    FlagDefinitionError,
    FlagProviderError,
    FlagValueError,
    MissingPackageError,
)
from flags._flagset import OnceLog
from flags._variant import Variant, VariantPayload

try:
    from UnleashClient.cache import BaseCache
    from UnleashClient.clients.unleash_client import UnleashClient
    from UnleashClient.constants import ETAG, FEATURES_URL
    from UnleashClient.utils import InstanceAllowType
    from yggdrasil_engine.engine import UnleashEngine
except ImportError as exc:  # an optional extra: say how to install it
    raise MissingPackageError("the Unleash flag provider", "UnleashClient", "unleash") from exc

__all__ = ["Translation", "UnleashFlagProvider", "translate_features", "unleash_context"]

DEFAULT_AGENT_FIELD = "agentId"
# Unleash context fields that sit beside ``properties``; an attribute of that name fills
# the field. userId and sessionId come from the context's own ids only.
_FIELDS = frozenset({"remoteAddress", "currentTime", "environment", "appName"})
_IDS = frozenset({"userId", "sessionId"})


class _Unsupported(Exception):
    """A toggle uses an Unleash feature the fast path does not express: the engine decides."""


class _Off(Exception):
    """A toggle that Unleash's dependency rules turn off for everyone."""


class Translation(NamedTuple):
    """What :func:`translate_features` makes of a features document.

    - ``definitions``: a definition for every toggle with a valid flag name;
    - ``engine_only``: toggles only the engine can decide, with the reason;
    - ``off``: toggles that Unleash's dependency rules turn off, with the reason.
    """

    definitions: dict[str, FlagDefinition]
    engine_only: dict[str, str]
    off: dict[str, str]


def translate_features(document: object, *, agent_field: str = DEFAULT_AGENT_FIELD) -> Translation:
    """Sort the toggles of an Unleash client-API features document (see the module docstring).

    Raises :class:`FlagProviderError` when ``document`` is not a features document at all.

    >>> translation = translate_features({"features": [{
    ...     "name": "USE_X", "enabled": True, "strategies": [{"name": "flexibleRollout",
    ...     "parameters": {"rollout": "25", "stickiness": "sessionId", "groupId": "USE_X"}}]}]})
    >>> translation.definitions["USE_X"].rollout, translation.engine_only, translation.off
    (25, {}, {})
    """
    if not isinstance(document, Mapping) or not isinstance(document.get("features"), list):
        raise FlagProviderError("the Unleash answer is not a features document (no 'features')")
    features: dict[str, Mapping[str, Any]] = {}
    for feature in document["features"]:
        if not isinstance(feature, Mapping) or not isinstance(feature.get("name"), str):
            raise FlagProviderError(f"the Unleash features document lists {feature!r}")
        features[feature["name"]] = feature
    segments: dict[object, list[Any]] = {}
    for segment in document.get("segments") or ():
        if isinstance(segment, Mapping):
            segments[segment.get("id")] = list(segment.get("constraints") or ())
    result = Translation({}, {}, {})
    for name, feature in features.items():
        definition: FlagDefinition | None
        try:
            definition = _translate(feature, features, segments, agent_field)
        except _Off as exc:
            result.off[name] = str(exc)
            definition = _off(name)
        except (_Unsupported, FlagDefinitionError) as exc:
            result.engine_only[name] = str(exc)
            definition = _off(name)
        if definition is not None:
            result.definitions[name] = definition
    for name, definition in list(result.definitions.items()):
        parent = definition.parent
        if parent is None or features[parent].get("enabled") is not True:
            continue
        # Unleash evaluates the parent inside the child's evaluation, where a rollout with
        # no groupId hashes the child's name, not the parent's: only the engine knows that.
        if parent in result.engine_only or any(
            _get(strategy, "name") == "flexibleRollout"
            and "groupId" not in (_get(strategy, "parameters") or {})
            for strategy in features[parent].get("strategies") or ()
        ):
            result.engine_only[name] = (
                f"its parent {parent!r} is decided by the engine or rolls out without a groupId"
            )
            result.definitions[name] = FlagDefinition(name)
    return result


def _off(name: str) -> FlagDefinition | None:
    """An off definition, or None for a name that is no flag name."""
    try:
        return FlagDefinition(name)
    except FlagDefinitionError:
        return None


def _translate(
    feature: Mapping[str, Any],
    features: Mapping[str, Mapping[str, Any]],
    segments: Mapping[object, list[Any]],
    agent_field: str,
) -> FlagDefinition:
    name: str = feature["name"]
    if feature.get("enabled") is not True:
        return FlagDefinition(name)
    parent = _parent(feature, features)
    strategies = list(feature.get("strategies") or ())
    if not strategies:
        return FlagDefinition(name, rollout=100, parent=parent)
    deny_lists: list[frozenset[str]] = []
    allowed: set[str] = set()
    rollouts: list[tuple[int, str, str]] = []
    for strategy in strategies:
        if not isinstance(strategy, Mapping):
            raise _Unsupported(f"strategy {strategy!r} is not an object")
        if strategy.get("disabled"):
            raise _Unsupported("a strategy is marked disabled")
        inside, outside = _agent_lists(_constraints(strategy, segments), agent_field)
        deny_lists.append(outside)
        rollout, stickiness, group = _rollout(strategy, name, agent_field)
        if inside is None:
            rollouts.append((rollout, stickiness, group))
        elif rollout == 100 and stickiness == Stickiness.DEFAULT.value:
            allowed |= inside
        else:
            raise _Unsupported(
                f"a strategy with an {agent_field} IN constraint is not a 100% rollout "
                "by default stickiness (an allow list)"
            )
    if any(d != deny_lists[0] for d in deny_lists):
        raise _Unsupported(f"its strategies carry different {agent_field} NOT_IN lists")
    if len({(s, g) for _, s, g in rollouts}) > 1:
        raise _Unsupported("its rollout strategies differ in stickiness or groupId")
    stickiness, group = (rollouts[0][1], rollouts[0][2]) if rollouts else ("default", name)
    return FlagDefinition(
        name,
        rollout=max((r for r, _, _ in rollouts), default=0),
        stickiness=stickiness,
        group_id=group,
        parent=parent,
        allowed_agents=allowed,
        denied_agents=deny_lists[0],
    )


def _get(value: object, key: str) -> Any:
    return value.get(key) if isinstance(value, Mapping) else None


def _parent(feature: Mapping[str, Any], features: Mapping[str, Mapping[str, Any]]) -> str | None:
    """The one parent the fast path can check, None without dependencies.

    Raises :class:`_Off` where Unleash's dependency rules make the toggle off whatever the
    context, :class:`_Unsupported` for every other kind of dependency.
    """
    dependencies = feature.get("dependencies") or []
    if not isinstance(dependencies, list):
        raise _Unsupported(f"its dependencies are {dependencies!r}")
    parents: list[str] = []
    for dependency in dependencies:
        parent = _get(dependency, "feature")
        if not isinstance(parent, str):
            raise _Unsupported(f"its dependency {dependency!r} names no parent toggle")
        if parent not in features:
            raise _Off(f"its parent {parent!r} is not in the payload")
        if features[parent].get("dependencies"):
            raise _Off(
                f"its parent {parent!r} depends on another toggle (Unleash allows one level)"
            )
        parents.append(parent)
    if not parents:
        return None
    # Unleash can list the same dependency more than once (it was added twice).
    unique = {json.dumps(d, sort_keys=True): d for d in dependencies}
    if len(unique) > 1:
        raise _Unsupported(f"it depends on {len(unique)} toggles")
    (dependency,) = unique.values()
    if dependency.get("enabled", True) is not True or dependency.get("variants"):
        raise _Unsupported(f"its dependency on {parents[0]!r} requires the parent off or a variant")
    return parents[0]


def _constraints(strategy: Mapping[str, Any], segments: Mapping[object, list[Any]]) -> list[Any]:
    constraints = list(strategy.get("constraints") or ())
    for segment_id in strategy.get("segments") or ():
        if segment_id not in segments:
            raise _Unsupported(f"a strategy uses segment {segment_id!r}, which was not sent")
        constraints.extend(segments[segment_id])
    return constraints


def _agent_lists(
    constraints: Iterable[Any], agent_field: str
) -> tuple[frozenset[str] | None, frozenset[str]]:
    """Return (allow list or None, deny list) from ``agent_field`` IN / NOT_IN constraints."""
    inside: frozenset[str] | None = None
    outside: frozenset[str] = frozenset()
    for constraint in constraints:
        field = _get(constraint, "contextName")
        operator = _get(constraint, "operator")
        values = _get(constraint, "values")
        if field != agent_field or operator not in ("IN", "NOT_IN"):
            raise _Unsupported(f"a strategy is constrained by {field!r} {operator!r}")
        if _get(constraint, "caseInsensitive") or not (
            isinstance(values, list) and all(isinstance(v, str) for v in values)
        ):
            raise _Unsupported(f"an {agent_field} constraint is {constraint!r}")
        # An inverted IN is a NOT_IN and the other way round.
        if (operator == "IN") != bool(_get(constraint, "inverted")):
            # All constraints of a strategy must hold: two IN lists intersect.
            inside = frozenset(values) if inside is None else inside & frozenset(values)
        else:
            outside |= frozenset(values)
    return inside, outside


def _rollout(strategy: Mapping[str, Any], name: str, agent_field: str) -> tuple[int, str, str]:
    """Return (rollout, stickiness, group id) of a rollout strategy."""
    kind = strategy.get("name")
    if kind == "default":
        return 100, Stickiness.DEFAULT.value, name
    if kind != "flexibleRollout":
        raise _Unsupported(f"strategy {kind!r}")
    parameters = strategy.get("parameters") or {}
    # Unleash evaluates a flexibleRollout without a rollout as off for everyone.
    raw = parameters.get("rollout", 0)
    try:
        rollout = int(raw)
    except (TypeError, ValueError):
        raise _Unsupported(f"flexibleRollout has rollout {raw!r}") from None
    if not 0 <= rollout <= 100 or isinstance(raw, bool) or str(rollout) != str(raw).strip():
        raise _Unsupported(f"flexibleRollout has rollout {raw!r}, not a whole percentage")
    stickiness = parameters.get("stickiness", Stickiness.DEFAULT.value)
    if (
        not isinstance(stickiness, str)
        or not stickiness
        or stickiness in _FIELDS
        or stickiness in (agent_field, "random")
    ):
        raise _Unsupported(f"flexibleRollout has stickiness {stickiness!r}")
    group = parameters.get("groupId", name)
    if not isinstance(group, str) or not group:
        # Unleash hashes an empty group literally; a definition's empty group is its name.
        raise _Unsupported(f"flexibleRollout has groupId {group!r}")
    return rollout, stickiness, group


def unleash_context(
    context: EvaluationContext,
    *,
    app_name: str,
    environment: str,
    agent_field: str = DEFAULT_AGENT_FIELD,
) -> dict[str, Any]:
    """Our context as Unleash's (see the module docstring and the README's table).

    >>> unleash_context(EvaluationContext(user_id="u-1", agent_id="coder",
    ...     attributes={"remoteAddress": "10.0.0.1", "tenant": "acme"}),
    ...     app_name="tiered-memory", environment="production")  # doctest: +NORMALIZE_WHITESPACE
    {'appName': 'tiered-memory', 'environment': 'production', 'remoteAddress': '10.0.0.1',
     'userId': 'u-1', 'properties': {'tenant': 'acme', 'agentId': 'coder'}}
    """
    result: dict[str, Any] = {"appName": app_name, "environment": environment}
    properties: dict[str, str] = {}
    for key, value in context.attributes.items():
        if value is None or key in _IDS or key == agent_field:
            continue
        if key in _FIELDS:
            result[key] = str(value)
        else:
            properties[key] = str(value)
    if context.user_id:
        result["userId"] = context.user_id
    if context.session_id:
        result["sessionId"] = context.session_id
    if context.agent_id:
        properties[agent_field] = context.agent_id
    result["properties"] = properties
    return result


class _Engine:
    """Unleash's engine loaded with one features document (a :class:`FlagEngine`)."""

    __slots__ = ("_engine", "_app_name", "_environment", "_agent_field")

    def __init__(
        self,
        document: str,
        names: Iterable[str],
        *,
        app_name: str,
        environment: str,
        agent_field: str,
    ) -> None:
        self._engine = UnleashEngine()
        self._engine.take_state(document)
        # The engine refuses a document it cannot read (one without "version", say) without
        # a word, and would then answer off for every toggle: refuse the snapshot instead.
        missing = set(names) - {t.name for t in self._engine.list_known_toggles()}
        if missing:
            raise FlagProviderError(
                f"Unleash's engine did not take the features document ({len(missing)} "
                f"toggles missing, e.g. {sorted(missing)[0]!r})"
            )
        self._app_name = app_name
        self._environment = environment
        self._agent_field = agent_field

    def _context(self, context: EvaluationContext) -> dict[str, Any]:
        return unleash_context(
            context,
            app_name=self._app_name,
            environment=self._environment,
            agent_field=self._agent_field,
        )

    def is_enabled(self, flag_name: str, context: EvaluationContext) -> bool:
        # check_enabled: the same answer as is_enabled without counting it for metrics,
        # which this provider does not send.
        return bool(self._engine.check_enabled(flag_name, self._context(context)).is_enabled)

    def variant(self, flag_name: str, context: EvaluationContext) -> Variant:
        found = self._engine.check_variant(flag_name, self._context(context)).variant
        payload = found.payload
        return Variant(
            name=found.name,
            enabled=bool(found.enabled),
            feature_enabled=bool(found.feature_enabled),
            payload=(
                VariantPayload(str(payload.get("type")), str(payload.get("value")))
                if payload
                else None
            ),
        )


class _StateCache(BaseCache):
    """UnleashClient's cache, in memory, recording when the server last answered.

    The client writes the features document here after every successful fetch and never
    raises on a failed one, so the time of the last write is how the provider tells a live
    server from a dead one. Entity tags are not kept: with one, an unchanged server answers
    "not modified" without a body, nothing is written, and a quiet server would look dead.
    """

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._data: dict[str, Any] = {}
        self.fetched_at: float | None = None

    def set(self, key: str, value: Any) -> None:
        if key == ETAG:
            return
        with self._lock:
            self._data[key] = value
            if key == FEATURES_URL:
                self.fetched_at = self._clock()

    def mset(self, data: Mapping[str, Any]) -> None:
        for key, value in data.items():
            self.set(key, value)

    def get(self, key: str, default: Any | None = None) -> Any:
        with self._lock:
            return self._data.get(key, default)

    def exists(self, key: str) -> bool:
        with self._lock:
            return key in self._data

    def destroy(self) -> None:
        with self._lock:
            self._data.clear()

    def features(self) -> tuple[Any, float | None]:
        """Return the last features document the server sent and when it arrived."""
        with self._lock:
            return self._data.get(FEATURES_URL), self.fetched_at


def _positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise FlagValueError(f"{name} must be a whole number of seconds >= 1, got {value!r}")
    return value


class UnleashFlagProvider:
    """A :class:`flags.FlagProvider` that reads toggles from an Unleash server.

    - ``url``: the server's API URL as ``UnleashClient`` takes it, e.g.
      ``http://unleash.internal:4242/api``; the client reads ``{url}/client/features``.
    - ``headers``: sent with every request, e.g. ``{"Authorization": "<client token>"}``;
      send none to a server running with ``authentication: none``, which refuses any.
    - ``refresh_interval``: seconds between polls (whole seconds, default 10).
    - ``request_timeout``: seconds one poll may take (default 2); polls are not retried,
      the next one comes ``refresh_interval`` later.
    - ``stale_after``: seconds without a successful poll after which :meth:`snapshot`
      raises :class:`FlagProviderError` (the evaluator then keeps its last known state);
      default ``2 * refresh_interval + request_timeout``.
    - ``project``: read only this Unleash project's toggles; ``agent_field``: the Unleash
      context field that carries the agent id (see the module docstring for the mapping).
    - ``app_name`` and ``environment``: the ``appName`` and ``environment`` of every
      context (unless its attributes name others), as ``UnleashClient`` sends them.

    Construction starts the client and polls once (at most ``request_timeout`` seconds);
    a server that is down then is not an error: snapshots raise until it answers. Call
    :meth:`close` (or use ``with``) to stop polling.

    >>> provider = UnleashFlagProvider("http://127.0.0.1:4242/api")  # doctest: +SKIP
    >>> evaluator = FlagEvaluator(provider)                           # doctest: +SKIP
    """

    def __init__(
        self,
        url: str,
        *,
        app_name: str = "tiered-memory",
        instance_id: str | None = None,
        headers: Mapping[str, str] | None = None,
        refresh_interval: int = 10,
        request_timeout: int = 2,
        stale_after: float | None = None,
        project: str | None = None,
        agent_field: str = DEFAULT_AGENT_FIELD,
        environment: str = "default",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise FlagValueError(f"url must be an http:// or https:// URL, got {url!r}")
        refresh_interval = _positive_int("refresh_interval", refresh_interval)
        request_timeout = _positive_int("request_timeout", request_timeout)
        if stale_after is None:
            stale_after = 2.0 * refresh_interval + request_timeout
        if (
            isinstance(stale_after, bool)
            or not isinstance(stale_after, int | float)
            or not math.isfinite(stale_after)
            or stale_after < refresh_interval
        ):
            raise FlagValueError(
                f"stale_after must be a number of seconds >= refresh_interval "
                f"({refresh_interval}), got {stale_after!r}"
            )
        for field, value in (
            ("agent_field", agent_field),
            ("app_name", app_name),
            ("environment", environment),
        ):
            if not isinstance(value, str) or not value:
                raise FlagValueError(f"{field} must be a non-empty string, got {value!r}")
        self._url = url
        self._stale_after = float(stale_after)
        self._refresh_interval = refresh_interval
        self._agent_field = agent_field
        self._app_name = app_name
        self._environment = environment
        self._clock = clock
        self._cache = _StateCache(clock)
        self._log_once = OnceLog()
        self._lock = threading.Lock()
        self._translated_from: object = None
        self._snapshot: EngineSnapshot | None = None
        self._client = UnleashClient(
            url=url,
            app_name=app_name,
            environment=environment,
            instance_id=instance_id or f"{socket.gethostname()}-{os.getpid()}",
            refresh_interval=refresh_interval,
            request_timeout=request_timeout,
            # One attempt per poll: retries would stretch a poll past request_timeout.
            request_retries=0,
            # Evaluation happens in our evaluator and our own engine, not in the client, so
            # the client's metrics would report no evaluations; registration goes with them.
            disable_metrics=True,
            disable_registration=True,
            custom_headers=dict(headers or {}),
            project_name=project,
            cache=self._cache,
            # Several evaluators in one process (one per store, say) are legitimate.
            multiple_instance_mode=InstanceAllowType.SILENTLY_ALLOW,
        )
        self._client.initialize_client()

    @property
    def url(self) -> str:
        """The Unleash API URL this provider polls."""
        return self._url

    @property
    def client(self) -> UnleashClient:
        """The underlying ``UnleashClient``, for its own API on the same fetched state."""
        return self._client

    def snapshot(self) -> EngineSnapshot:
        """Return the toggles of the last successful poll: definitions plus Unleash's engine.

        Raises :class:`FlagProviderError` if the server has not answered yet, has not
        answered for ``stale_after`` seconds, or sent something that is not a features
        document. Never does I/O: polling happens on the client's own thread.
        """
        document, fetched_at = self._cache.features()
        if document is None or fetched_at is None:
            raise FlagProviderError(f"Unleash at {self._url} has not answered yet")
        silent = self._clock() - fetched_at
        if silent > self._stale_after:
            raise FlagProviderError(
                f"Unleash at {self._url} has not answered for {silent:.0f} s "
                f"(polled every {self._refresh_interval} s)"
            )
        with self._lock:
            # The document is only replaced by a new fetch, so its identity says whether
            # the translation is current.
            if self._snapshot is None or document is not self._translated_from:
                self._snapshot = self._translate(document)
                self._translated_from = document
            return self._snapshot

    def _translate(self, document: object) -> EngineSnapshot:
        if isinstance(document, bytes):
            document = document.decode("utf-8", "replace")
        if isinstance(document, str):
            try:
                document = json.loads(document)
            except ValueError as exc:
                raise FlagProviderError(
                    f"Unleash at {self._url} sent a features document that is not JSON: {exc}"
                ) from None
        translation = translate_features(document, agent_field=self._agent_field)
        if translation.off:
            listed = "; ".join(f"{n!r}: {why}" for n, why in sorted(translation.off.items()))
            self._log_once(
                ("off", listed),
                logging.WARNING,
                "Unleash toggles off by Unleash's dependency rules (the others are unaffected): %s",
                listed,
            )
        engine = _Engine(
            json.dumps(document),
            [*translation.definitions, *translation.engine_only],
            app_name=self._app_name,
            environment=self._environment,
            agent_field=self._agent_field,
        )
        return EngineSnapshot(translation.definitions, engine, translation.engine_only)

    def close(self) -> None:
        """Stop polling. Snapshots keep answering from the last poll until it goes stale."""
        self._client.destroy()

    def __enter__(self) -> UnleashFlagProvider:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
