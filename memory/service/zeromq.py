"""ZeroMQ over the service core: a ROUTER socket with JSON request/reply frames, for agents
that speak the checklist's legacy protocol (port 5713 there; off unless ``zmq_port`` is
set).

A request is one frame (after the peer's routing id; an empty delimiter frame, as a REQ
socket sends it, is kept and echoed) holding a JSON object::

    {"api_key": "tmk_...", "operation": "add", "request": {"arguments": {...}},
     "request_id": "optional", "idempotency_key": "optional, for writes"}

The key is the transport's credential slot, as the ``Authorization`` header is over HTTP:
the identity still comes only from it, and ``request`` is the same body as HTTP's. The
reply is ``{"ok": true, "result": ..., "request_id": ...}`` or ``{"ok": false, "status":
..., "error": {"type", "message", "details"}, "request_id": ...}``; a frame that is not
JSON gets a 422 reply, never silence. Requests run on a pool of threads; only the socket's
own thread touches the socket. A request has ``timeout`` seconds from its arrival (the
service's ``request_timeout_seconds``), as over HTTP: past it, a 504 reply and nothing
written.
"""

from __future__ import annotations

import json
import queue
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import structlog
import zmq

from memory import InvalidInputError, MemoryStoreError
from memory.service.core import Service, error_reply

log = structlog.get_logger("memory.service.zeromq")
_POLL_MS = 50


class ZeroMQServer:
    """Serves ``service`` on a ROUTER socket at ``tcp://host:port`` from a thread."""

    def __init__(
        self, service: Service, host: str, port: int, timeout: float = 30.0, workers: int = 8
    ) -> None:
        self.service = service
        self.timeout = timeout
        self.context = zmq.Context()
        self.socket = self.context.socket(zmq.ROUTER)
        self.socket.setsockopt(zmq.LINGER, 0)
        try:
            self.socket.bind(f"tcp://{host}:{port}")
        except zmq.ZMQError as error:
            self.socket.close()
            self.context.term()
            raise InvalidInputError(f"zmq_port: cannot listen on {host}:{port}: {error}") from None
        self._replies: queue.SimpleQueue[list[bytes]] = queue.SimpleQueue()
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="zeromq")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="zeromq", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop receiving, let the requests under way answer, close the socket."""
        self._stop.set()
        self._thread.join()
        self._pool.shutdown(wait=True)
        self._send_replies()
        self.socket.close()
        self.context.term()

    def _loop(self) -> None:
        poller = zmq.Poller()
        poller.register(self.socket, zmq.POLLIN)
        while not self._stop.is_set():
            if dict(poller.poll(_POLL_MS)).get(self.socket):
                frames = self.socket.recv_multipart()
                self._pool.submit(self._answer, frames)
            self._send_replies()

    def _send_replies(self) -> None:
        while True:
            try:
                self.socket.send_multipart(self._replies.get_nowait())
            except queue.Empty:
                return

    def _answer(self, frames: list[bytes]) -> None:
        envelope, payload = frames[:-1], frames[-1]
        reply = self.handle(payload)
        self._replies.put([*envelope, json.dumps(reply, ensure_ascii=False).encode()])

    def handle(self, payload: bytes) -> dict[str, Any]:
        """The reply to one request frame."""
        request_id = uuid.uuid4().hex
        deadline = time.monotonic() + self.timeout
        try:
            try:
                message = json.loads(payload)
            except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as error:
                raise _BadFrame(f"the frame is not a JSON object: {error}") from None
            if not isinstance(message, dict):
                raise _BadFrame("the frame must be a JSON object")
            given = message.get("request_id")
            if isinstance(given, str) and 0 < len(given) <= 128:
                request_id = given
            with structlog.contextvars.bound_contextvars(request_id=request_id):
                operation = message.get("operation")
                if not isinstance(operation, str):
                    raise _BadFrame("operation: a string is required")
                credential = message.get("api_key")
                key = self.service.authenticate(
                    credential if isinstance(credential, str) else None, deadline
                )
                body = message.get("request", {})
                if not isinstance(body, dict):
                    raise _BadFrame("request: must be a JSON object")
                request_key = message.get("idempotency_key")
                result = self.service.call(
                    key,
                    operation,
                    body,
                    request_key if isinstance(request_key, str) else None,
                    deadline,
                )
                log.info("zeromq", operation=operation, status=200)
                return {"ok": True, "result": result, "request_id": request_id}
        except MemoryStoreError as error:
            reply = error_reply(error)
            log.info("zeromq refused", status=reply.status, error=reply.type, request_id=request_id)
            return {"ok": False, "status": reply.status, **reply.body(), "request_id": request_id}
        except Exception:
            log.exception("zeromq failed", request_id=request_id)
            return {
                "ok": False,
                "status": 500,
                "error": {
                    "type": "InternalError",
                    "message": f"internal error; quote request id {request_id}",
                    "details": {},
                },
                "request_id": request_id,
            }


class _BadFrame(InvalidInputError):
    """A frame that is not a request (answered 422 like any invalid input)."""
