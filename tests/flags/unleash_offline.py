"""Unleash without an Unleash server: a client bootstrapped from a features document held in
memory, so tests can ask the real client what it decides, and a loopback HTTP server that
answers the client API with a document a test sets, so the provider reads it as it would
from a server."""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from UnleashClient import UnleashClient
from UnleashClient.cache import BaseCache
from UnleashClient.constants import FEATURES_URL
from UnleashClient.utils import InstanceAllowType


class MemoryCache(BaseCache):
    """An UnleashClient cache bootstrapped with one document; nothing touches the disk."""

    def __init__(self, document: Mapping[str, Any]) -> None:
        self._data: dict[str, Any] = {FEATURES_URL: json.dumps(document)}
        self.bootstrapped = True

    def set(self, key: str, value: Any) -> None:
        self._data[key] = value

    def mset(self, data: dict[str, Any]) -> None:
        self._data.update(data)

    def get(self, key: str, default: Any | None = None) -> Any:
        return self._data.get(key, default)

    def exists(self, key: str) -> bool:
        return key in self._data

    def destroy(self) -> None:
        self._data.clear()


def offline_client(document: Mapping[str, Any], app_name: str) -> UnleashClient:
    """A client answering from ``document``; never initialized, so it opens no connection."""
    return UnleashClient(
        url="http://127.0.0.1:9/never-contacted",
        app_name=app_name,
        disable_metrics=True,
        disable_registration=True,
        cache=MemoryCache(document),
        multiple_instance_mode=InstanceAllowType.SILENTLY_ALLOW,
    )


class FeaturesServer:
    """A loopback HTTP server that answers the client API with a document the test sets."""

    def __init__(self) -> None:
        self.document: object = {"version": 2, "features": []}
        self.requests: list[dict[str, str]] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                owner.requests.append(dict(self.headers))
                body = (
                    owner.document
                    if isinstance(owner.document, str)
                    else json.dumps(owner.document)
                ).encode()
                self.send_response(200 if self.path.startswith("/api/client/features") else 404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/api"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
