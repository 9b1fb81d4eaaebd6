"""A PostgreSQL connection lost during COMMIT: the caller's update (or delete) is applied
exactly once, and reported as it happened.

The store talks to the real server through a TCP proxy in this test. Armed, the proxy waits
for the transaction that updates (deletes from) ``memories`` and cuts the connection at its
COMMIT, in one of two ways:

- ``after``: the COMMIT reaches the server, which commits; the proxy then drops the
  connection instead of relaying the server's reply (a network failure or a crashed proxy
  between client and server). The client cannot know whether its transaction committed.
- ``before``: the proxy drops the connection instead of relaying the COMMIT, so the server
  rolls the transaction back.

Either way the store retries (a lost connection is transient). The retry of an update whose
first attempt committed must not report a stale version (its own commit bumped the version)
and must not apply the change again, and the retry of such a delete must not report the
memory missing; a retry after a rollback applies the change, once.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from memory import HashingEmbedder, Memory, NotFoundError, StaleVersionError
from memory.core.types import MemoryEvent

# PostgreSQL frontend/backend protocol messages: a simple-protocol COMMIT (what psycopg
# sends for ``connection.commit()``) and the server's CommandComplete for it.
COMMIT_QUERY = b"Q\x00\x00\x00\x0bCOMMIT\x00"
COMMIT_DONE = b"C\x00\x00\x00\x0bCOMMIT\x00"
PUBLISHED_WITHIN_SECONDS = 2.0  # well below the subscriber's 5 s idle check of the log


@dataclass
class Link:
    """One client connection through the proxy."""

    client: socket.socket
    server: socket.socket
    changing: bool = False  # the transaction in flight ran the statement armed for
    committing: bool = False  # its COMMIT went to the server; the reply is to be dropped
    closed: bool = False

    def close(self) -> None:
        """Drop both ends (both pumps then stop); the first call does it."""
        if self.closed:
            return
        self.closed = True
        for end in (self.client, self.server):
            try:
                end.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # the peer is gone already
            end.close()


class CommitCutter:
    """A TCP proxy to PostgreSQL that, when armed, cuts at COMMIT the next transaction that
    runs a given statement."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.mode: str | None = None  # "before" or "after" while armed
        self.statement = b""
        self.cuts = 0
        self._lock = threading.Lock()
        self._links: list[Link] = []
        self._threads = [threading.Thread(target=self._accept)]
        self._threads[0].start()

    def arm(self, mode: str, statement: bytes) -> None:
        with self._lock:
            self.mode, self.statement = mode, statement

    def close(self) -> None:
        self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        self._threads[0].join(5)  # no link is added after this
        with self._lock:
            for link in self._links:
                link.close()
        for thread in self._threads[1:]:
            thread.join(5)

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return  # closed
            with self._lock:
                link = Link(client, socket.create_connection(self.upstream))
                self._links.append(link)
                for pump in (self._to_server, self._to_client):
                    self._threads.append(threading.Thread(target=pump, args=(link,)))
                    self._threads[-1].start()

    def _to_server(self, link: Link) -> None:
        while data := _receive(link.client):
            with self._lock:
                if self.mode is not None and self.statement in data:
                    link.changing = True
                if link.changing and COMMIT_QUERY in data:
                    if self.mode == "before":
                        self._cut(link)
                        return
                    link.committing = True
            if not _send(link.server, data):
                break
        with self._lock:
            link.close()

    def _to_client(self, link: Link) -> None:
        while data := _receive(link.server):
            with self._lock:
                if link.committing and COMMIT_DONE in data:
                    self._cut(link)
                    return
            if not _send(link.client, data):
                break
        with self._lock:
            link.close()

    def _cut(self, link: Link) -> None:
        self.mode = None
        self.cuts += 1
        link.close()


def _receive(end: socket.socket) -> bytes:
    try:
        return end.recv(65536)
    except OSError:
        return b""


def _send(end: socket.socket, data: bytes) -> bool:
    try:
        end.sendall(data)
    except OSError:
        return False
    return True


@pytest.fixture
def cutter(postgres_url: str) -> Iterator[CommitCutter]:
    url = make_url(postgres_url)
    proxy = CommitCutter((url.host or "127.0.0.1", url.port or 5432))
    yield proxy
    proxy.close()


def proxied(postgres_url: str, cutter: CommitCutter) -> str:
    # Without TLS, so that the proxy can read the protocol.
    url = make_url(postgres_url).set(
        host="127.0.0.1", port=cutter.port, query={"sslmode": "disable"}
    )
    return url.render_as_string(hide_password=False)


def stored(postgres_url: str, memory_id: int) -> tuple[tuple[int, str] | None, list[str]]:
    """Version and content of the memory (None once deleted), and the operations of its
    events other than the add, read directly (not through the proxy)."""
    engine = sa.create_engine(postgres_url)
    try:
        with engine.connect() as connection:
            row = connection.execute(
                sa.text("SELECT version, content FROM memories WHERE id = :id"), {"id": memory_id}
            ).first()
            logged = connection.execute(
                sa.text(
                    "SELECT operation FROM memory_events "
                    "WHERE target = :target AND operation <> 'memory.add' ORDER BY seq"
                ),
                {"target": f"memory:{memory_id}"},
            ).scalars()
            return (None if row is None else (row[0], row[1])), list(logged)
    finally:
        engine.dispose()


def wait_for(published: list[MemoryEvent]) -> None:
    deadline = time.monotonic() + PUBLISHED_WITHIN_SECONDS
    while not published and time.monotonic() < deadline:
        time.sleep(0.01)


@pytest.mark.parametrize("mode", ["after", "before"])
def test_an_update_cut_at_commit_is_applied_once_and_succeeds(
    mode: str, postgres_url: str, cutter: CommitCutter, user: str
) -> None:
    published: list[MemoryEvent] = []
    with Memory.open(proxied(postgres_url, cutter), embedder=HashingEmbedder()) as memory:
        scope = memory.scope(user, "writer", "s1")
        note = scope.add("the deploy is on Tuesday", metadata={"topic": "release"})
        subscription = scope.subscribe(published.append)
        try:
            cutter.arm(mode, b"UPDATE memories")
            updated = scope.update(
                note.id, version=note.version, content="the deploy moved to Thursday",
                metadata={"topic": "release", "moved": True},
            )
            assert cutter.cuts == 1, "the proxy never cut the update's COMMIT"
            wait_for(published)
        finally:
            subscription.close()
        assert (updated.version, updated.content) == (2, "the deploy moved to Thursday")
        assert updated.metadata == {"topic": "release", "moved": True}
        assert scope.get(note.id).version == 2
        # A caller that really is behind is still told so.
        with pytest.raises(StaleVersionError):
            scope.update(note.id, version=note.version, content="a stale edit")

    assert stored(postgres_url, note.id) == (
        (2, "the deploy moved to Thursday"), ["memory.update"]
    )
    assert [(event.operation, event.data and event.data["version"]) for event in published] == [
        ("memory.update", 2)
    ], "the update's event was not published"


@pytest.mark.parametrize("mode", ["after", "before"])
def test_a_delete_cut_at_commit_is_applied_once_and_succeeds(
    mode: str, postgres_url: str, cutter: CommitCutter, user: str
) -> None:
    published: list[MemoryEvent] = []
    with Memory.open(proxied(postgres_url, cutter), embedder=HashingEmbedder()) as memory:
        scope = memory.scope(user, "writer", "s1")
        note = scope.add("the old staging password is in the vault")
        subscription = scope.subscribe(published.append)
        try:
            cutter.arm(mode, b"DELETE FROM memories")
            scope.delete(note.id)
            assert cutter.cuts == 1, "the proxy never cut the delete's COMMIT"
            wait_for(published)
        finally:
            subscription.close()
        # A memory that really is not there is still reported missing.
        with pytest.raises(NotFoundError):
            scope.delete(note.id)

    assert stored(postgres_url, note.id) == (None, ["memory.delete"])
    assert [event.operation for event in published] == ["memory.delete"]
