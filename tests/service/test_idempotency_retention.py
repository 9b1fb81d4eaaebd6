"""The retention job removes the hub's Idempotency-Keys (and their stored answers) once
they are older than their window, in batches, on SQLite and PostgreSQL; a dry run only
counts them; a retry after that is applied again, as the window promises."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from memory import HashingEmbedder, Memory
from memory import ops as ops
from memory.service.core import Service


def claims(memory: Memory) -> int:
    with memory.engine.connect() as connection:
        return int(
            connection.execute(sa.text("SELECT COUNT(*) FROM idempotent_requests")).scalar_one()
        )


@pytest.mark.parametrize("backend", ["sqlite-file", "postgresql"])
def test_cleanup_removes_idempotency_keys_past_their_window(
    backend: str, url_for: Callable[[str], str], user: str
) -> None:
    url = url_for(backend)
    ops.migrate(url)
    with Memory.open(url, embedder=HashingEmbedder(), role="admin") as memory:
        service = Service(memory)
        key = ops.authenticate(memory, ops.create_key(url, "planner", users=[user]).secret)
        for number in range(5):
            body = {"arguments": {"content": f"note {number}"}}
            service.call(key, "add", body, request_key=f"request-{number}")
        assert claims(memory) == 5
        # Within the window (a day by default): kept, so a retry is still answered once.
        soon = ops.cleanup(memory, now=datetime.now(UTC) + timedelta(hours=23))
        assert soon.counts["idempotent_requests"] == 0 and claims(memory) == 5
        later = datetime.now(UTC) + timedelta(hours=25)
        dry = ops.cleanup(memory, now=later, dry_run=True)
        assert dry.counts["idempotent_requests"] == 5 and claims(memory) == 5
        report = ops.cleanup(memory, now=later, batch_size=2)
        assert report.counts["idempotent_requests"] == 5 and claims(memory) == 0
        # A shorter window, and None to keep them forever.
        service.call(key, "add", {"arguments": {"content": "again"}}, request_key="request-x")
        kept = ops.cleanup(
            memory, ops.RetentionPolicy(idempotent_requests=None), now=later + timedelta(days=9)
        )
        assert kept.counts["idempotent_requests"] == 0 and claims(memory) == 1
        short = ops.RetentionPolicy(idempotent_requests=timedelta(minutes=5))
        removed = ops.cleanup(memory, short, now=datetime.now(UTC) + timedelta(minutes=6))
        assert removed.counts["idempotent_requests"] == 1 and claims(memory) == 0
        memories = len(memory.scope(user, "planner").list(limit=100))
        # The claim is gone: the same request is a new write now.
        service.call(key, "add", {"arguments": {"content": "again, later"}}, "request-x")
        assert len(memory.scope(user, "planner").list(limit=100)) == memories + 1
