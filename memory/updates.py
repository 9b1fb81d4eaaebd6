"""Real-time updates: every commit rings the store's doorbell on ``memory:updates:<store>``.

Backends (``Memory.open(..., updates=...)`` or ``$MEMORY_UPDATES_URL``):

- ``inprocess`` (the default): subscribers in this process only;
- ``postgresql``: LISTEN/NOTIFY on the store's own PostgreSQL database;
- ``redis://host:port/db``: Redis pub/sub (the ``redis`` extra).

Publishing happens after commit only (``memory.store.db.Database.after_commit``), so nobody hears
of a write that was rolled back. A publish that fails never fails the write: the
publisher marks itself degraded, and retries the bus at most once a second meanwhile.
A :class:`BusGuard` (the hub service passes a circuit breaker) may stand before every
publish and every (re)connection: while it refuses, the bus counts as down without being
tried, so a bus that fails slowly costs nothing per write.

The bus is only a doorbell, and carries nothing else: a message is empty, and whatever a
message says is ignored. Anyone who can reach the bus can publish on it, so a subscriber
never takes an event from a message: on any message it reads the events after the last one
it delivered from ``memory_events``, the truth. No payload, user id or key travels on the
bus; a forged message costs one read of the log and delivers nothing that is not there.

Each store rings its own channel, ``memory:updates:<store>``, where ``<store>`` is a digest
of the database's identity (``memory.store.events.store_channel``): two stores on one Redis
(whatever their Redis database numbers: pub/sub ignores them) do not hear each other.

A subscriber remembers the last sequence number it delivered and

- on (re)connecting, listens first and then reads every event after that number from the
  log, so nothing committed while it was away is missed;
- on a message, reads the log after that number;
- when the bus is down, reads the log every ``poll_interval`` (degraded, but delivering),
  and when the bus has been silent for ``idle_check`` seconds, looks at the log once (a
  publish that failed leaves no doorbell).

Committed event ``n`` implies ``1..n`` are committed (``memory.store.events``), so reading
the log after a number is always complete. Callbacks therefore see every event once, in
order.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from sqlalchemy.engine import Engine, make_url

from memory.core.errors import DatabaseUnavailableError, InvalidInputError, MemoryStoreError
from memory.core.types import MemoryEvent
from memory.store.db import Database
from memory.store.events import events_after, latest_seq, store_channel
from memory.telemetry import instruments as telemetry

logger = logging.getLogger(__name__)

UPDATES_URL_ENV = "MEMORY_UPDATES_URL"
_RETRY_SECONDS = 1.0
_BUS_TIMEOUT_SECONDS = 1.0
T = TypeVar("T")


class BusError(MemoryStoreError):
    """The notification connection (Redis, PostgreSQL LISTEN) failed."""


class BusGuard(Protocol):
    """Runs a call to the bus, or refuses it at once by raising (``pybreaker.CircuitBreaker``
    is one: it refuses while open)."""

    def call(self, func: Callable[..., T], *args: Any, **kwargs: Any) -> T: ...


class _Listener(Protocol):
    def poll(self, timeout: float) -> int:
        """Wait up to ``timeout`` seconds for the doorbell; how many rings were heard."""

    def close(self) -> None: ...


class _Backend(Protocol):
    name: str

    def publish(self) -> None: ...

    def listen(self) -> _Listener: ...

    def close(self) -> None: ...


# -- in process -----------------------------------------------------------------------------


class _QueueListener:
    def __init__(self, bus: _InProcessBackend) -> None:
        self._bus = bus
        self.queue: queue.SimpleQueue[None] = queue.SimpleQueue()

    def poll(self, timeout: float) -> int:
        try:
            self.queue.get(timeout=timeout)
        except queue.Empty:
            return 0
        heard = 1
        while True:
            try:
                self.queue.get_nowait()
            except queue.Empty:
                return heard
            heard += 1

    def close(self) -> None:
        self._bus.remove(self)


class _InProcessBackend:
    name = "inprocess"

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._listeners: list[_QueueListener] = []

    def publish(self) -> None:
        with self._lock:
            listeners = list(self._listeners)
        for listener in listeners:
            listener.queue.put(None)

    def listen(self) -> _Listener:
        listener = _QueueListener(self)
        with self._lock:
            self._listeners.append(listener)
        return listener

    def remove(self, listener: _QueueListener) -> None:
        with self._lock:
            if listener in self._listeners:
                self._listeners.remove(listener)

    def close(self) -> None:
        with self._lock:
            self._listeners.clear()


# -- PostgreSQL LISTEN/NOTIFY -----------------------------------------------------------------


def _psycopg_connect(dsn: str) -> Any:
    import psycopg

    try:
        return psycopg.connect(dsn, autocommit=True, connect_timeout=2)
    except psycopg.Error as error:
        raise BusError(f"PostgreSQL notification connection failed: {error}") from error


class _PostgresListener:
    def __init__(self, dsn: str, channel: str) -> None:
        self._connection = _psycopg_connect(dsn)
        try:
            self._connection.execute(f'LISTEN "{channel}"')
        except Exception as error:
            self._connection.close()
            raise BusError(f"LISTEN failed: {error}") from error

    def poll(self, timeout: float) -> int:
        import psycopg

        try:
            # Return at the first notification: without stop_after the generator keeps
            # collecting until the timeout, which would delay every update by up to it.
            heard = sum(1 for _ in self._connection.notifies(timeout=timeout, stop_after=1))
            if heard:
                heard += sum(1 for _ in self._connection.notifies(timeout=0))
            return heard
        except psycopg.Error as error:
            raise BusError(f"the PostgreSQL notification connection dropped: {error}") from error

    def close(self) -> None:
        self._connection.close()


class _PostgresBackend:
    name = "postgresql"

    def __init__(self, dsn: str, channel: str) -> None:
        self._dsn = dsn
        self._channel = channel
        self._lock = threading.Lock()
        self._connection: Any = None

    def publish(self) -> None:
        import psycopg

        with self._lock:
            try:
                if self._connection is None or self._connection.closed:
                    self._connection = _psycopg_connect(self._dsn)
                self._connection.execute("SELECT pg_notify(%s, '')", (self._channel,))
            except psycopg.Error as error:
                self._drop()
                raise BusError(f"NOTIFY failed: {error}") from error

    def _drop(self) -> None:
        if self._connection is not None:
            self._connection.close()
        self._connection = None

    def listen(self) -> _Listener:
        return _PostgresListener(self._dsn, self._channel)

    def close(self) -> None:
        with self._lock:
            self._drop()


# -- Redis pub/sub ----------------------------------------------------------------------------


def _redis_module() -> Any:
    try:
        import redis
    except ImportError as error:
        raise InvalidInputError(
            "updates: a redis:// URL needs the redis package; "
            "install it with: pip install 'tiered-memory[redis]'"
        ) from error
    return redis


class _RedisListener:
    def __init__(self, url: str, channel: str) -> None:
        redis = _redis_module()
        self._errors = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)
        self._client = redis.Redis.from_url(url, socket_connect_timeout=_BUS_TIMEOUT_SECONDS)
        self._pubsub = self._client.pubsub(ignore_subscribe_messages=True)
        try:
            self._pubsub.subscribe(channel)
        except self._errors as error:
            self.close()
            raise BusError(f"Redis SUBSCRIBE failed: {error}") from error

    def poll(self, timeout: float) -> int:
        heard = 0
        try:
            message = self._pubsub.get_message(timeout=timeout)
            while message is not None:
                heard += message["type"] == "message"
                message = self._pubsub.get_message(timeout=0)
        except self._errors as error:
            raise BusError(f"the Redis subscription dropped: {error}") from error
        return heard

    def close(self) -> None:
        try:
            self._pubsub.close()
        finally:
            self._client.close()


class _RedisBackend:
    name = "redis"

    def __init__(self, url: str, channel: str) -> None:
        redis = _redis_module()
        self._url = url
        self._channel = channel
        self._errors = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)
        self._client = redis.Redis.from_url(
            url,
            socket_connect_timeout=_BUS_TIMEOUT_SECONDS,
            socket_timeout=_BUS_TIMEOUT_SECONDS,
        )

    def publish(self) -> None:
        try:
            self._client.publish(self._channel, b"")
        except self._errors as error:
            raise BusError(f"Redis PUBLISH failed: {error}") from error

    def listen(self) -> _Listener:
        return _RedisListener(self._url, self._channel)

    def close(self) -> None:
        self._client.close()


def _backend(setting: str, db: Database) -> _Backend:
    if setting == "inprocess":  # the process's own store object: its own bus already
        return _InProcessBackend()
    if setting == "postgresql":
        if db.dialect != "postgresql":
            raise InvalidInputError(
                "updates: 'postgresql' (LISTEN/NOTIFY) needs a PostgreSQL store; "
                "use 'inprocess' or a redis:// URL"
            )
        url = db.engine.url.set(drivername="postgresql")
        return _PostgresBackend(url.render_as_string(hide_password=False), _channel(db))
    if setting.startswith(("redis://", "rediss://", "unix://")):
        make_url(setting)  # a clear error for a malformed URL, before any connection
        return _RedisBackend(setting, _channel(db))
    raise InvalidInputError(
        f"updates: {setting!r} is not a backend; use 'inprocess', 'postgresql' or redis://HOST"
    )


def _channel(db: Database) -> str:
    return db.read(store_channel)


# -- status, publisher, subscriptions --------------------------------------------------------


@dataclass(frozen=True, slots=True)
class UpdatesStatus:
    """The state of the ``memory:updates`` channel in this process.

    ``degraded`` is true while the publisher cannot reach the bus or a subscription is
    reading the log instead of listening; nothing is lost meanwhile, updates arrive late.
    """

    backend: str
    degraded: bool
    publish_failures: int
    reconnects: int
    subscriptions: int
    last_error: str | None


class Updates:
    """The ``memory:updates`` channel of one store: publishes committed events and hands
    out subscriptions."""

    def __init__(
        self, db: Database, setting: str = "inprocess", guard: BusGuard | None = None
    ) -> None:
        self._db = db
        self._backend = _backend(setting, db)
        # In process there is nothing that can fail slowly, so nothing to guard.
        self._guard = guard if self._backend.name != "inprocess" else None
        self._lock = threading.Lock()
        self._publish_degraded = False
        self._next_attempt = 0.0
        self._publish_failures = 0
        self._last_error: str | None = None
        self._subscriptions: list[Subscription] = []
        self._observers: list[Callable[[list[MemoryEvent]], None]] = []

    @property
    def backend(self) -> str:
        """``inprocess``, ``postgresql`` or ``redis``."""
        return self._backend.name

    def guarded(self, action: Callable[[], T]) -> T:
        """``action`` (a call to the bus) through the guard, if there is one; a refusal by
        the guard is a :class:`BusError` like the bus's own failures."""
        if self._guard is None:
            return action()
        try:
            return self._guard.call(action)
        except BusError:
            raise
        except Exception as error:  # the guard's refusal (an open breaker), whatever its type
            raise BusError(f"the bus is not tried for now: {error}") from error

    def observe(self, observer: Callable[[list[MemoryEvent]], None]) -> None:
        """Call ``observer`` with this process's own events, synchronously, after commit
        (how the store's caches hear of local writes whatever the backend)."""
        self._observers.append(observer)

    def publish(self, committed: list[MemoryEvent]) -> None:
        """Publish events that have committed. Never raises: the write is done."""
        for observer in self._observers:
            observer(committed)
        now = time.monotonic()
        with self._lock:
            if self._publish_degraded and now < self._next_attempt:
                self._publish_failures += 1
                return
        try:
            self.guarded(self._backend.publish)
        except BusError as error:
            telemetry.instruments().updates_bus_failures.add(1, {"role": "publish"})
            with self._lock:
                self._publish_failures += 1
                self._publish_degraded = True
                self._next_attempt = now + _RETRY_SECONDS
                self._last_error = str(error)
            logger.warning("memory:updates publish failed; subscribers read the log: %s", error)
            return
        with self._lock:
            self._publish_degraded = False

    def subscribe(
        self,
        callback: Callable[[MemoryEvent], None],
        *,
        after_seq: int | None = None,
        admits: Callable[[MemoryEvent], bool] | None = None,
        poll_interval: float = 0.5,
        idle_check: float = 5.0,
    ) -> Subscription:
        """Call ``callback`` with every event committed after ``after_seq`` (default: from
        now on) that ``admits`` (if given) lets through, in order, once each, on a thread of
        its own (see the module docstring)."""
        if after_seq is None:
            after_seq = self._db.read(latest_seq)
        subscription = Subscription(self, callback, after_seq, admits, poll_interval, idle_check)
        with self._lock:
            self._subscriptions = [s for s in self._subscriptions if s.running]
            self._subscriptions.append(subscription)
        subscription.start()
        return subscription

    def status(self) -> UpdatesStatus:
        """Whether updates flow, and the counters behind it."""
        with self._lock:
            live = [s for s in self._subscriptions if s.running]
            return UpdatesStatus(
                backend=self._backend.name,
                degraded=self._publish_degraded or any(s.degraded for s in live),
                publish_failures=self._publish_failures,
                reconnects=sum(s.reconnects for s in live),
                subscriptions=len(live),
                last_error=self._last_error
                or next((s.last_error for s in live if s.last_error), None),
            )

    def close(self) -> None:
        """Stop every subscription and close the bus connections."""
        with self._lock:
            subscriptions, self._subscriptions = self._subscriptions, []
        for subscription in subscriptions:
            subscription.close()
        self._backend.close()


class Subscription:
    """A running subscriber: delivers events to its callback until ``close()``."""

    def __init__(
        self,
        updates: Updates,
        callback: Callable[[MemoryEvent], None],
        after_seq: int,
        admits: Callable[[MemoryEvent], bool] | None,
        poll_interval: float,
        idle_check: float,
    ) -> None:
        self._updates = updates
        self._callback = callback
        self._admits = admits
        self._poll_interval = poll_interval
        self._idle_check = idle_check
        self.last_seq = after_seq
        self.degraded = False
        self.reconnects = 0
        self.last_error: str | None = None
        self.callback_errors = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name="memory-updates-subscriber", daemon=True
        )

    @property
    def running(self) -> bool:
        return self._thread.is_alive() and not self._stop.is_set()

    def start(self) -> None:
        self._thread.start()

    def close(self, timeout: float | None = 5.0) -> None:
        """Stop delivering and wait for the thread to end."""
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- the loop ---------------------------------------------------------------------------

    def _run(self) -> None:
        backoff = 0.05
        connected_once = False
        while not self._stop.is_set():
            listener: _Listener | None = None
            try:
                listener = self._updates.guarded(self._updates._backend.listen)
                if connected_once:
                    self.reconnects += 1
                connected_once = True
                # Listening before reading the log: whatever commits in between arrives
                # both ways, and the duplicate is dropped by its number.
                self._catch_up()
                self.degraded = False
                backoff = 0.05
                self._listen(listener)
            except (BusError, DatabaseUnavailableError) as error:
                telemetry.instruments().updates_bus_failures.add(1, {"role": "subscribe"})
                self.degraded = True
                self.last_error = str(error)
                logger.warning("memory:updates subscriber degraded: %s", error)
                self._degraded_wait(backoff)
                backoff = min(backoff * 2, 2.0)
            finally:
                if listener is not None:
                    listener.close()

    def _listen(self, listener: _Listener) -> None:
        quiet_since = time.monotonic()
        while not self._stop.is_set():
            if listener.poll(0.2):
                # A doorbell, whoever rang it: the log says what is new.
                self._catch_up()
                quiet_since = time.monotonic()
            elif time.monotonic() - quiet_since > self._idle_check:
                # A publish that failed while this listener was fine leaves no doorbell.
                self._catch_up()
                quiet_since = time.monotonic()

    def _degraded_wait(self, backoff: float) -> None:
        """Until the next reconnect attempt, deliver from the log."""
        deadline = time.monotonic() + max(backoff, self._poll_interval)
        while not self._stop.is_set() and time.monotonic() < deadline:
            try:
                self._catch_up()
            except DatabaseUnavailableError as error:
                self.last_error = str(error)
            self._stop.wait(min(self._poll_interval, max(0.0, deadline - time.monotonic())))

    def _catch_up(self) -> None:
        while not self._stop.is_set():
            found = self._updates._db.read(
                lambda connection: events_after(connection, self.last_seq)
            )
            if not found:
                return
            for event in found:
                self._deliver(event)

    def _deliver(self, event: MemoryEvent) -> None:
        self.last_seq = event.seq
        if self._admits is not None and not self._admits(event):
            return
        try:
            self._callback(event)
        except Exception:
            self.callback_errors += 1
            logger.exception("memory:updates callback failed on event %s", event.seq)


def probe(setting: str, engine: Engine) -> str:
    """Open one subscription on the bus ``setting`` names (a URL, or ``postgresql``), close
    it, and return the backend's name; raises :class:`BusError` when the bus cannot be
    reached. ``memctl health`` calls it."""
    backend = _backend(setting, Database(engine))
    try:
        backend.listen().close()
    finally:
        backend.close()
    return backend.name
