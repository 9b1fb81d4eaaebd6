"""Every free-text input is redacted the same way (issue 16, finding 6): a secret put in
merge_context values, graph entity names and observations, record_event data and its
memory, shared tag values, and metadata, preference and state keys is stored nowhere in
clear, and lookups by the same (secret-bearing) name still find what was stored.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable

import pytest
import sqlalchemy as sa

from memory import HashingEmbedder, Memory
from memory.store.tables import Base


def _everything_stored(store: Memory) -> str:
    """Every row of every table, as text."""
    found = []
    with store.engine.connect() as connection:
        for name in Base.metadata.tables:
            rows = connection.execute(sa.text(f'SELECT * FROM "{name}"')).all()
            found.append(repr(rows))
    return "\n".join(found)


@pytest.mark.parametrize("backend", ["sqlite-file", "postgresql"])
def test_a_secret_in_any_free_text_input_is_not_stored(
    backend: str, url_for: Callable[[str], str], user: str
) -> None:
    secret = "ghp_" + uuid.uuid4().hex + uuid.uuid4().hex[:8]
    with Memory.open(url_for(backend), embedder=HashingEmbedder()) as store:
        scope = store.scope(user, "planner", "s1")
        scope.merge_context({"token": secret, secret: "as a key"})
        scope.save_state({secret: "state key", "nested": {"deep": secret}})
        scope.set_preference(f"pref-{secret}", "value")
        note = scope.add("tagged note", metadata={f"meta-{secret}": 1, "tag": secret})
        scope.share(tag=("tag", secret), agents=["coder"])
        scope.record_event("task.done", {"output": secret},
                           memory={"content": f"event memory {secret}"})
        graph = store.graph(user)
        graph.create_entities([{"name": f"entity {secret}", "entityType": "token",
                                "observations": [f"observed {secret}"]}])
        graph.add_observations([{"entityName": f"entity {secret}",
                                 "contents": [f"again {secret}"]}])

        stored = _everything_stored(store)
        assert secret not in stored
        assert "[REDACTED:github_token]" in stored
        # Looked up by the same name, what was stored is still found.
        assert scope.get_preference(f"pref-{secret}") is not None
        assert graph.open_nodes([f"entity {secret}"]).entities
        assert store.scope(user, "coder", "s1").get(note.id).id == note.id
