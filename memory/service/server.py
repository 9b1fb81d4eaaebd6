"""``memctl serve``: open the store once, serve it over HTTP until SIGTERM or SIGINT.

uvicorn handles the signals: it stops accepting connections, lets the requests under way
finish for up to ``drain_seconds``, and then the store is closed (its pending writes of
access counts flushed) before the process exits.
"""

from __future__ import annotations

import uvicorn

from memory import Embedder, HashingEmbedder, Memory, MiniLMEmbedder
from memory.service.core import Service
from memory.service.http import configure_logging, create_app, log
from memory.service.settings import EmbedderName, ServiceSettings


def _embedder(name: EmbedderName) -> Embedder | None:
    if name == "none":
        return None
    return HashingEmbedder() if name == "hashing" else MiniLMEmbedder()


def serve(settings: ServiceSettings) -> None:
    """Serve the store of ``settings`` until the process is told to stop."""
    configure_logging(settings.log_level)
    # The service opens the store as admin: what a request may do is decided per request
    # by its key (memory.service.core), not by the role the store was opened with.
    with Memory.open(
        settings.database_url, embedder=_embedder(settings.embedder), role="admin"
    ) as memory:
        app = create_app(Service(memory), max_body_bytes=settings.max_body_bytes)
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
        log.info("starting", host=settings.host, port=settings.http_port, backend=memory.backend)
        uvicorn.Server(config).run()
        log.info("stopped")
