"""Flag definitions read from an Unleash server through the ``UnleashClient`` package.

:class:`UnleashFlagProvider` lets the client poll the server's client API in the background
(every ``refresh_interval`` seconds) into an in-memory cache, and translates the cached
features document into :class:`FlagDefinition` objects when the evaluator asks for a
snapshot, so a snapshot never waits on the network. Evaluation stays ours: the same rules
and the same Unleash-compatible buckets as every other provider.

How an Unleash toggle becomes a definition (``agentId`` is the ``agent_field`` argument):

- a disabled toggle (in the client's environment) is off for everyone: rollout 0, no lists;
- an enabled toggle with no strategies is on for everyone (Unleash's rule): rollout 100;
- a ``flexibleRollout`` strategy gives ``rollout``, ``stickiness`` and ``groupId``; the
  ``default`` strategy is a rollout of 100 %; several rollout strategies must share
  stickiness and group, and then the largest rollout wins (their buckets are nested);
- a strategy with an ``agentId IN [...]`` constraint that rolls out to 100 % is the allow
  list; an ``agentId NOT_IN [...]`` constraint, the same on every strategy, is the deny
  list (constraints from segments count as the strategy's own);
- one dependency on a parent toggle (``enabled: true``, no variants) is the parent flag;
  a toggle whose parent is missing from the document is off, as Unleash has it.

A toggle that uses anything else (another strategy, a constraint on another field,
different deny lists, a dependency on a disabled parent, random stickiness) cannot be
expressed without changing who gets it: it is translated as off, and the reason is logged
once. Variants do not affect whether a flag is on and are ignored.

Two differences remain, both for contexts that lack the stickiness value: with
``default`` stickiness and neither a user id nor a session id, Unleash picks a random
bucket where we are off below 100 %; and at 100 % with ``userId``, ``sessionId`` or custom
stickiness, Unleash is off when that value is missing where we are on. Whenever the value
is present, both always agree.
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
from types import MappingProxyType
from typing import Any

from flags._definitions import FlagDefinition, Stickiness
from flags._exceptions import (
    FlagDefinitionError,
    FlagProviderError,
    FlagValueError,
    MissingPackageError,
)
from flags._flagset import OnceLog

try:
    from UnleashClient.cache import BaseCache
    from UnleashClient.clients.unleash_client import UnleashClient
    from UnleashClient.constants import ETAG, FEATURES_URL
    from UnleashClient.utils import InstanceAllowType
except ImportError as exc:  # an optional extra: say how to install it
    raise MissingPackageError("the Unleash flag provider", "UnleashClient", "unleash") from exc

__all__ = ["UnleashFlagProvider", "translate_features"]

DEFAULT_AGENT_FIELD = "agentId"


class _Unsupported(Exception):
    """A toggle uses an Unleash feature that a FlagDefinition cannot express."""


def translate_features(
    document: object, *, agent_field: str = DEFAULT_AGENT_FIELD
) -> tuple[dict[str, FlagDefinition], dict[str, str]]:
    """Translate an Unleash client-API features document into flag definitions.

    Returns ``(definitions, problems)``: ``problems`` maps the name of every toggle that
    could not be expressed faithfully to the reason. Such a toggle is defined as off, or
    left out if its name is not a valid flag name. Raises :class:`FlagProviderError` when
    ``document`` is not a features document at all.

    >>> definitions, problems = translate_features({"features": [{
    ...     "name": "USE_X", "enabled": True, "strategies": [{"name": "flexibleRollout",
    ...     "parameters": {"rollout": "25", "stickiness": "sessionId", "groupId": "USE_X"}}]}]})
    >>> definitions["USE_X"].rollout, definitions["USE_X"].stickiness, problems
    (25, 'sessionId', {})
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
    definitions: dict[str, FlagDefinition] = {}
    problems: dict[str, str] = {}
    for name, feature in features.items():
        try:
            definitions[name] = _translate(feature, features, segments, agent_field)
        except _Unsupported as exc:
            problems[name] = f"{exc}; it evaluates as off"
            try:
                definitions[name] = FlagDefinition(name)
            except FlagDefinitionError as invalid:
                problems[name] = f"{exc}; and it cannot be defined ({invalid})"
        except FlagDefinitionError as exc:
            problems[name] = f"{exc}; it is left out"
    return definitions, problems


def _translate(
    feature: Mapping[str, Any],
    features: Mapping[str, Mapping[str, Any]],
    segments: Mapping[object, list[Any]],
    agent_field: str,
) -> FlagDefinition:
    name: str = feature["name"]
    if feature.get("enabled") is not True:
        return FlagDefinition(name)
    parent = _parent(feature)
    if parent is not None and parent not in features:
        return FlagDefinition(name)
    # A strategy marked disabled is left out by the server; UnleashClient would evaluate
    # one that got through, so it is not skipped here either.
    strategies = list(feature.get("strategies") or ())
    if not strategies:
        return FlagDefinition(name, rollout=100, parent=parent)
    deny_lists: list[frozenset[str]] = []
    allowed: set[str] = set()
    rollouts: list[tuple[int, str, str]] = []
    for strategy in strategies:
        if not isinstance(strategy, Mapping):
            raise _Unsupported(f"strategy {strategy!r} is not an object")
        inside, outside = _agent_lists(_constraints(strategy, segments), agent_field)
        deny_lists.append(outside)
        rollout, stickiness, group = _rollout(strategy, name)
        if inside is None:
            rollouts.append((rollout, stickiness, group))
        elif rollout == 100:
            allowed |= inside
        else:
            raise _Unsupported(
                f"a strategy with an {agent_field} IN constraint must roll out to 100% "
                f"(an allow list), this one rolls out to {rollout}%"
            )
    if any(d != deny_lists[0] for d in deny_lists):
        raise _Unsupported(
            f"its strategies carry different {agent_field} NOT_IN lists; a deny list must be "
            "the same on every strategy"
        )
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


def _parent(feature: Mapping[str, Any]) -> str | None:
    dependencies = feature.get("dependencies") or []
    if not dependencies:
        return None
    # Unleash can list the same dependency more than once (it was added twice).
    unique = {json.dumps(d, sort_keys=True): d for d in dependencies}
    if len(unique) > 1:
        raise _Unsupported(f"it depends on {len(unique)} toggles; one parent is supported")
    (dependency,) = unique.values()
    parent = _get(dependency, "feature")
    if not isinstance(parent, str):
        raise _Unsupported(f"its dependency {dependency!r} names no parent toggle")
    if dependency.get("enabled", True) is not True or dependency.get("variants"):
        raise _Unsupported(
            f"its dependency on {parent!r} requires the parent off or a variant; "
            "only 'parent is on' is supported"
        )
    return parent


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
            raise _Unsupported(
                f"a strategy is constrained by {field!r} {operator!r}; only {agent_field} "
                "IN and NOT_IN constraints are supported"
            )
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise _Unsupported(f"an {agent_field} constraint has values {values!r}")
        # An inverted IN is a NOT_IN and the other way round.
        if (operator == "IN") != bool(_get(constraint, "inverted")):
            # All constraints of a strategy must hold: two IN lists intersect.
            inside = frozenset(values) if inside is None else inside & frozenset(values)
        else:
            outside |= frozenset(values)
    return inside, outside


def _rollout(strategy: Mapping[str, Any], name: str) -> tuple[int, str, str]:
    """Return (rollout, stickiness, group id) of a rollout strategy."""
    kind = strategy.get("name")
    if kind == "default":
        return 100, Stickiness.DEFAULT.value, name
    if kind != "flexibleRollout":
        raise _Unsupported(f"strategy {kind!r} is not supported (use flexibleRollout or default)")
    parameters = strategy.get("parameters") or {}
    # Unleash evaluates a flexibleRollout without a rollout as off for everyone.
    raw = parameters.get("rollout", 0)
    try:
        rollout = int(raw)
    except (TypeError, ValueError):
        raise _Unsupported(f"flexibleRollout has rollout {raw!r}, not a whole percentage") from None
    if not 0 <= rollout <= 100 or (isinstance(raw, float) and raw != rollout):
        raise _Unsupported(f"flexibleRollout has rollout {raw!r}, not a whole percentage")
    stickiness = parameters.get("stickiness") or Stickiness.DEFAULT.value
    if stickiness == "random":
        raise _Unsupported("flexibleRollout with random stickiness is not consistent per user")
    group = parameters.get("groupId", name)
    if not isinstance(group, str) or not group:
        # Unleash hashes an empty group literally; a definition's empty group is its name.
        raise _Unsupported(f"flexibleRollout has groupId {group!r}; give it a name")
    return rollout, str(stickiness), group


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
        if not isinstance(agent_field, str) or not agent_field:
            raise FlagValueError(f"agent_field must be a non-empty string, got {agent_field!r}")
        self._url = url
        self._stale_after = float(stale_after)
        self._refresh_interval = refresh_interval
        self._agent_field = agent_field
        self._clock = clock
        self._cache = _StateCache(clock)
        self._log_once = OnceLog()
        self._lock = threading.Lock()
        self._translated_from: object = None
        self._definitions: Mapping[str, FlagDefinition] = MappingProxyType({})
        self._client = UnleashClient(
            url=url,
            app_name=app_name,
            instance_id=instance_id or f"{socket.gethostname()}-{os.getpid()}",
            refresh_interval=refresh_interval,
            request_timeout=request_timeout,
            # One attempt per poll: retries would stretch a poll past request_timeout.
            request_retries=0,
            # Evaluation happens in our evaluator, not in the client, so the client's
            # metrics would report no evaluations; registration is skipped with them.
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

    def snapshot(self) -> Mapping[str, FlagDefinition]:
        """Return the toggles of the last successful poll as flag definitions.

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
            if document is not self._translated_from:
                self._definitions = self._translate(document)
                self._translated_from = document
            return self._definitions

    def _translate(self, document: object) -> Mapping[str, FlagDefinition]:
        if isinstance(document, str | bytes):
            try:
                document = json.loads(document)
            except ValueError as exc:
                raise FlagProviderError(
                    f"Unleash at {self._url} sent a features document that is not JSON: {exc}"
                ) from None
        definitions, problems = translate_features(document, agent_field=self._agent_field)
        for name, problem in sorted(problems.items()):
            self._log_once((name, problem), logging.ERROR, "Unleash toggle %r: %s", name, problem)
        return MappingProxyType(definitions)

    def close(self) -> None:
        """Stop polling. Snapshots keep answering from the last poll until it goes stale."""
        self._client.destroy()

    def __enter__(self) -> UnleashFlagProvider:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
