"""``memctl serve``: open the store once, serve it over HTTP and gRPC (and ZeroMQ when
configured) until SIGTERM or SIGINT.

uvicorn handles the signals: it stops accepting connections, lets the requests under way
finish for up to ``drain_seconds``; then the gRPC server gives its calls the same time, and
the store is closed (its pending writes of access counts flushed) before the process exits.

Any number of replicas may serve one PostgreSQL database: each keeps its in-process search
index current from the event log. A SQLite database has one replica: the first takes an
exclusive lock on ``<file>.serve-lock`` for its lifetime (the kernel drops it when the
process dies, however it dies), and a second is refused, saying so.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import uvicorn

from memory import Embedder, HashingEmbedder, InvalidInputError, Memory, MiniLMEmbedder
from memory.service.breakers import GuardedEmbedder, breaker
from memory.service.core import Service
from memory.service.grpc import GrpcServer
from memory.service.http import configure_logging, create_app, log
from memory.service.settings import EmbedderName, ServiceSettings
from memory.service.zeromq import ZeroMQServer


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
        remote_procedures = GrpcServer(service, settings, settings.grpc_port, app.state.metrics)
        remote_procedures.start()
        legacy = None
        if settings.zmq_port is not None:
            legacy = ZeroMQServer(service, settings.host, settings.zmq_port)
            legacy.start()

        def stopped() -> None:
            # In the lifespan's shutdown, after the requests under way have finished:
            # uvicorn re-raises SIGTERM once it returns, so nothing after run() would run.
            remote_procedures.stop(settings.drain_seconds)
            if legacy is not None:
                legacy.stop()
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
            grpc_port=remote_procedures.port,
            backend=memory.backend,
        )
        uvicorn.Server(config).run()
