"""The walk-through behind ``memctl demo``: two agents working for one user, through the
public API only (:mod:`memory` for the agents, :mod:`memory.ops` for the operator)."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path

from flags import USE_CROSS_AGENT_SHARING, USE_ENHANCED_INJECTION
from memory import InvalidInputError, Memory, StaleVersionError
from memory import ops as ops


def run_demo(path: Path | None, say: Callable[[str], None]) -> None:
    """Create a fresh SQLite store at ``path`` (a temporary file by default) and narrate."""
    if path is None:
        path = Path(tempfile.mkdtemp(prefix="memctl-demo-")) / "memory.db"
    if path.exists():
        raise InvalidInputError(f"{path} exists; the demo starts from a fresh file")
    url = f"sqlite:///{path}"

    say(f"== 1. Migrate a fresh SQLite file: {path}")
    say(f"   schema at revision {ops.migrate(url).after}")
    # A store this library creates starts with its features on (memctl flags audit says so);
    # an operator upgrading a Phase 1 store rolls them out stage by stage instead.
    on = [item.flag.name for item in ops.list_flags(url).flags if item.flag.enabled]
    say(f"   features on in a new store (memctl flags list): {', '.join(on)}")

    with Memory.open(url) as memory:
        say("\n== 2. Phase 1 entity graph for user 'ada' (MCP memory server semantics)")
        graph = memory.graph("ada")
        graph.create_entities(
            [
                {
                    "name": "Ada",
                    "entityType": "person",
                    "observations": ["Prefers concise answers", "Works on the billing service"],
                },
                {
                    "name": "billing-service",
                    "entityType": "project",
                    "observations": ["Written in Python 3.12", "Deploys on Fridays"],
                },
            ]
        )
        graph.create_relations([{"from": "Ada", "to": "billing-service", "relationType": "owns"}])
        for entity in graph.read_graph().entities:
            say(f"   entity {entity.name} ({entity.entity_type}): {'; '.join(entity.observations)}")
        for relation in graph.read_graph().relations:
            say(
                f"   relation {relation.from_entity} --{relation.relation_type}--> "
                f"{relation.to_entity}"
            )

        say("\n== 3. Memories in each tier, written by two agents in session 'sprint-42'")
        planner = memory.scope(user="ada", agent="planner", session="sprint-42")
        coder = memory.scope(user="ada", agent="coder", session="sprint-42")
        planner.add(
            "Ada asked to split the invoice export into two steps",
            tier="working",
            metadata={"ticket": "BILL-311"},
        )
        planner.add(
            "Last sprint the export job timed out on large accounts",
            tier="episodic",
            importance=0.7,
        )
        planner.add(
            "Ada's team ships billing changes only behind a feature flag",
            tier="semantic",
            importance=0.9,
        )
        coder.add(
            "Tests for the export live in tests/export/test_invoice.py",
            tier="working",
            metadata={"ticket": "BILL-311"},
        )
        duplicate = coder.add("Tests for the export live in tests/export/test_invoice.py")
        for scope in (planner, coder):
            for item in scope.list():
                say(
                    f"   [{scope.agent:7}] #{item.id} {item.tier:8} "
                    f"importance={item.importance:.1f}  {item.content}"
                )
        say(f"   adding the same content again returns memory #{duplicate.id}: no duplicate row")
        tagged = planner.list(metadata={"ticket": "BILL-311"})
        say(f"   planner's memories tagged BILL-311: {[item.id for item in tagged]}")

        say("\n== 4. Optimistic locking: an update names the version it read")
        first = planner.list(tier="working")[0]
        updated = planner.update(first.id, version=first.version, importance=0.8)
        say(f"   memory #{updated.id} now at version {updated.version}")
        try:
            planner.update(first.id, version=first.version, importance=0.1)
        except StaleVersionError as error:  # shown to the reader, not swallowed
            say(f"   a stale update is refused: {error}")

        say("\n== 5. Preferences (one current value per user and key)")
        planner.set_preference("answer_style", "concise", confidence=0.9)
        coder.set_preference("test_framework", "pytest")
        coder.set_preference("answer_style", "concise, with code", confidence=0.95)
        for preference in coder.list_preferences():
            say(
                f"   {preference.key} = {preference.value!r} (from {preference.source_agent}, "
                f"confidence {preference.confidence})"
            )

        say("\n== 6. Code patterns")
        pattern = coder.record_pattern(
            "python",
            "retry-with-backoff",
            "for attempt in range(5):\n    try:\n        return call()\n"
            "    except TransientError:\n        time.sleep(2 ** attempt)",
            description="Retry a flaky call with exponential backoff",
            tags=["resilience", "network"],
        )
        coder.use_pattern(pattern.id)
        for found in planner.find_patterns(tag="resilience"):
            say(
                f"   {found.language}/{found.name}: {found.description} (used {found.usage_count}x)"
            )

        say("\n== 7. Session state checkpoints")
        planner.save_state({"step": "design", "open_questions": 2})
        coder.save_state({"step": "implement", "files": ["export.py"]})
        checkpoint = planner.load_state()
        assert checkpoint is not None
        say(
            f"   session sprint-42 resumes at checkpoint {checkpoint.checkpoint_seq} "
            f"saved by {checkpoint.agent_id}: {checkpoint.state}"
        )

        query = "why did exporting big customers fail?"
        say("\n== 8. Hybrid search (keywords + all-MiniLM-L6-v2 vectors, offline)")
        say(f"   the planner asks: {query!r}")
        for hit in planner.search(query, limit=3):
            say(f"   {hit.score:.3f} (keyword {hit.keyword_score:.2f}, vector "
                f"{hit.vector_score:.2f})  {hit.memory.content}")

        task = "plan the invoice export change"
        say("\n== 9. Context injection within a 96-token budget")
        say(f"   the planner's next task: {task!r}")
        context = planner.inject(task, budget_tokens=96)
        for line in context.text.splitlines():
            say(f"   {line}")
        say(f"   -- {context.tokens}/{context.budget} tokens; sources: "
            + ", ".join(item.source for item in context.items))

        say("\n== 10. Resuming the session in a new process would restore")
        resumed = coder.resume()
        say(f"   checkpoint {resumed.checkpoint.checkpoint_seq}: {resumed.checkpoint.state}; "
            f"{len(resumed.working_memory)} working "
            f"{'memory' if len(resumed.working_memory) == 1 else 'memories'} of the coder")

        say("\n== 11. Sharing between agents: memories are private until shared")
        note = planner.list(tier="semantic")[0]
        before = [hit.memory.id for hit in coder.search("feature flag billing", limit=3)]
        say(f"   the coder searches 'feature flag billing': planner's #{note.id} "
            f"{'found' if note.id in before else 'not visible'}")
        (grant,) = planner.share(memory_id=note.id, agents=["coder"])
        after = [hit.memory.id for hit in coder.search("feature flag billing", limit=3)]
        say(f"   planner shares #{note.id} with the coder (grant {grant.id}, {grant.access}); "
            f"now {'found' if note.id in after else 'still not visible'}")
        say(f"   ({USE_CROSS_AGENT_SHARING} decides where grants apply: memctl flags explain)")

        say("\n== 12. A flag switched off and back on (the operator's kill switch)")
        ops.set_flag(url, USE_ENHANCED_INJECTION, on=False, actor="memctl demo",
                     reason="demo: kill switch")
        memory.flags.refresh()  # agents pick a change up within 10 s; the demo reads it now
        off = planner.inject(task, budget_tokens=96)
        say(f"   {USE_ENHANCED_INJECTION} off: inject() is empty ({off.tokens} tokens), "
            f"disabled_by={off.disabled_by}")
        # Back on at once: a store with traffic normally climbs 10 -> 50 -> 100 % through
        # the gates; --force goes past them and the audit says so.
        ops.set_flag(url, USE_ENHANCED_INJECTION, on=True, force=True, actor="memctl demo",
                     reason="demo: back on")
        memory.flags.refresh()
        again = planner.inject(task, budget_tokens=96)
        say(f"   back on: {again.tokens} tokens again; memctl flags audit shows both changes")

    say("\n== 13. Forgetting a user (the right to be forgotten)")
    with Memory.open(url) as memory:
        bob = memory.scope(user="bob", agent="planner", session="s1")
        bob.add("Bob's card ends in 4242", tier="semantic")
        bob.set_preference("language", "fr")
        bob.save_state({"step": "checkout"})
    report = ops.forget(url, "bob")
    say(f"   forgot user 'bob': {report.total} rows removed, "
        f"{report.events_redacted} events redacted")
    with Memory.open(url) as memory:
        left = memory.scope(user="bob", agent="planner").search("card", limit=3)
        chain = memory.verify_events()
    say(f"   a search as bob finds {len(left)} memories; the event log's hash chain "
        f"{'still verifies' if chain.ok else 'is BROKEN'} ({chain.checked} events)")

    say(f"\nDone. Inspect it with: memctl --database-url sqlite:///{path} memories list "
        "--user ada --agent planner")
