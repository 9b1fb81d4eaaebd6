"""``memctl serve``: open the store once, serve it over HTTP until SIGTERM or SIGINT.

uvicorn handles the signals: it stops accepting connections, lets the requests under way
finish for up to ``drain_seconds``, and then the store is closed (its pending writes of
access counts flushed) before the process exits.

Any number of replicas may serve one PostgreSQL database: each keeps its in-process search
index current from the event log. A SQLite database has one replica: the first takes an
exclusive lock on ``<file>.serve-lock`` for its lifetime (the kernel drops it when the
process dies, however it dies), and a second is refused, saying so.
"""

from __future__ import annotations

import fcntl
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import uvicorn

from memory import Embedder, HashingEmbedder, InvalidInputError, Memory, MiniLMEmbedder
from memory.service.breakers import GuardedEmbedder, breaker
from memory.service.core import Service
from memory.service.http import configure_logging, create_app, log
from memory.service.settings import EmbedderName, ServiceSettings
from memory.service.zeromq import ZeroMQServer

if TYPE_CHECKING:
    from memory.sync.hub import BackgroundHub


def _embedder(name: EmbedderName) -> Embedder | None:
    if name == "none":
        return None
    return HashingEmbedder() if name == "hashing" else MiniLMEmbedder()


@contextmanager
def only_replica(memory: Memory) -> Iterator[None]:
    """Hold the lock that makes this process the one replica of a SQLite database (on
    PostgreSQL, nothing to hold)."""
    database = memory.engine.url.database
    if memory.backend != "sqlite" or not database:
        yield
        return
    path = Path(f"{database}.serve-lock")
    handle = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise InvalidInputError(
                f"another memctl serve already serves {database}: a SQLite database has one "
                "replica (its writers share one lock); serve PostgreSQL for more"
            ) from None
        yield
    finally:
        os.close(handle)


def sync_hub(memory: Memory, settings: ServiceSettings) -> BackgroundHub | None:
    """The hub-spoke sync gateway over ``memory`` (this node's store), listening, when
    ``sync_port`` is set."""
    if settings.sync_port is None:
        return None
    assert settings.sync_secret is not None  # the settings require it with the port
    # The 'sync' extra's packages, imported only when sync is served.
    try:
        from memory.sync.hub import BackgroundHub, HubGateway
        from memory.sync.network import log_to, server_tls
        from memory.sync.spoke import SpokeStore
    except ImportError as error:
        raise InvalidInputError(
            f"sync_port needs the 'sync' extra ({error.name} is missing): "
            "pip install 'tiered-memory[sync]'"
        ) from None
    log_to(sys.stderr)  # beside the service's own JSON lines
    gateway = HubGateway(
        SpokeStore(memory),
        settings.sync_secret,
        host=settings.host,
        port=settings.sync_port,
        tls=server_tls(settings.sync_tls_cert, settings.sync_tls_key),
        max_frame_bytes=settings.sync_max_frame_bytes,
        rate_limit=settings.sync_rate_limit,
        low_seconds=settings.sync_low_seconds,
    )
    hub = BackgroundHub(gateway)
    hub.start()
    return hub


def serve(settings: ServiceSettings) -> None:
    """Serve the store of ``settings`` until the process is told to stop."""
    configure_logging(settings.log_level)
    # The service opens the store as admin: what a request may do is decided per request
    # by its key (memory.service.core), not by the role the store was opened with.
    embedder = _embedder(settings.embedder)
    breakers = {}
    if embedder is not None:
        breakers["embedder"] = breaker("embedder")
        embedder = GuardedEmbedder(embedder, breakers["embedder"])
    with Memory.open(
        settings.database_url, embedder=embedder, role="admin"
    ) as memory, only_replica(memory):
        service = Service(memory)
        app = create_app(service, settings, breakers)
        legacy = None
        if settings.zmq_port is not None:
            legacy = ZeroMQServer(service, settings.host, settings.zmq_port)
            legacy.start()
        hub = sync_hub(memory, settings)

        def stopped() -> None:
            # In the lifespan's shutdown, after the requests under way have finished:
            # uvicorn re-raises SIGTERM once it returns, so nothing after run() would run.
            if legacy is not None:
                legacy.stop()
            if hub is not None:
                hub.stop()
            memory.close()
            log.info("stopped")

        app.router.on_shutdown.append(stopped)
        config = uvicorn.Config(
            app,
            host=settings.host,
            port=settings.http_port,
            log_config=None,
            log_level=settings.log_level,
            access_log=False,  # the service logs each request itself, with its request id
            timeout_graceful_shutdown=settings.drain_seconds,
            server_header=False,
        )
        log.info(
            "starting",
            host=settings.host,
            port=settings.http_port,
            sync_port=hub.gateway.port if hub is not None else None,
            backend=memory.backend,
        )
        uvicorn.Server(config).run()
