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
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import uvicorn
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

import flags
from flags import FlagError, FlagEvaluator
from memory import Embedder, HashingEmbedder, InvalidInputError, Memory, MiniLMEmbedder
from memory.service.breakers import Breakers, GuardedEmbedder, GuardedFlagProvider
from memory.service.core import Service
from memory.service.grpc import GrpcServer
from memory.service.http import configure_logging, create_app, log
from memory.service.settings import EmbedderName, ServiceSettings
from memory.service.zeromq import ZeroMQServer

if TYPE_CHECKING:
    from flags import UnleashFlagProvider
    from memory.sync.hub import BackgroundHub


def _embedder(name: EmbedderName) -> Embedder | None:
    if name == "none":
        return None
    return HashingEmbedder() if name == "hashing" else MiniLMEmbedder()


# The OpenTelemetry SDK's own variables: with either set, the hub exports its spans.
OTLP_ENDPOINT_ENV = "OTEL_EXPORTER_OTLP_ENDPOINT"
OTLP_TRACES_ENDPOINT_ENV = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"


def _tracer_provider() -> TracerProvider | None:
    """An SDK tracer provider that exports the request spans over OTLP/HTTP (extra
    ``otlp``; endpoint, headers and ``OTEL_SERVICE_NAME`` as the SDK reads them) when an
    OTLP endpoint is configured; else None: the process's global provider, a no-op unless
    whoever embeds the server set one."""
    if not (os.environ.get(OTLP_TRACES_ENDPOINT_ENV) or os.environ.get(OTLP_ENDPOINT_ENV)):
        return None
    try:  # the otlp extra's: imported only when configured
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    except ImportError:
        raise InvalidInputError(
            f"{OTLP_ENDPOINT_ENV}: exporting the hub's spans needs the 'otlp' extra: "
            "pip install 'tiered-memory[otlp]'"
        ) from None
    provider = TracerProvider(resource=Resource.create({"service.name": "memory-hub"}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    return provider


def _unleash(
    settings: ServiceSettings, breakers: Breakers
) -> tuple[UnleashFlagProvider | None, FlagEvaluator | None]:
    """The Unleash provider and the evaluator over it (behind the ``unleash`` breaker) when
    ``unleash_url`` is set; else neither, and the store's own flag tables decide."""
    if settings.unleash_url is None:
        return None, None
    headers = {"Authorization": settings.unleash_token} if settings.unleash_token else None
    try:
        # The unleash extra's: looked up only when configured (flags imports it lazily).
        provider = flags.UnleashFlagProvider(settings.unleash_url, headers=headers)
        return provider, FlagEvaluator(GuardedFlagProvider(provider, breakers.add("unleash")))
    except (FlagError, ImportError) as error:  # a bad setting, or the extra is missing
        raise InvalidInputError(f"unleash_url: {error}") from None


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
        tls=server_tls(settings.sync_tls_certificate, settings.sync_tls_key),
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
    breakers = Breakers(settings.breaker_failures, settings.breaker_reset_seconds)
    embedder = _embedder(settings.embedder)
    if embedder is not None:
        embedder = GuardedEmbedder(embedder, breakers.add("embedder"))
    # Listed once the store says which bus it rings (none to guard in process).
    bus = breakers.make("updates")
    unleash, evaluator = _unleash(settings, breakers)
    with Memory.open(
        settings.database_url, embedder=embedder, role="admin", flags=evaluator, updates_guard=bus
    ) as memory, only_replica(memory):
        backend = memory.updates_status().backend
        if backend != "inprocess":
            breakers.add(backend, bus)
        tracing = _tracer_provider()
        service = Service(memory, tracing)
        app = create_app(service, settings, breakers)
        remote_procedures = GrpcServer(service, settings, settings.grpc_port, app.state.metrics)
        remote_procedures.start()
        legacy = None
        if settings.zmq_port is not None:
            legacy = ZeroMQServer(
                service, settings.host, settings.zmq_port, settings.request_timeout_seconds
            )
            legacy.start()
        hub = sync_hub(memory, settings)

        def stopped() -> None:
            # In the lifespan's shutdown, after the requests under way have finished:
            # uvicorn re-raises SIGTERM once it returns, so nothing after run() would run.
            remote_procedures.stop(settings.drain_seconds)
            if legacy is not None:
                legacy.stop()
            if hub is not None:
                hub.stop()
            memory.close()
            if unleash is not None:
                unleash.close()
            if tracing is not None:
                tracing.shutdown()  # exports the spans still batched
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
            sync_port=hub.gateway.port if hub is not None else None,
            backend=memory.backend,
        )
        uvicorn.Server(config).run()
