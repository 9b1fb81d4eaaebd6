"""A grantee cannot widen a grant (issue 16, finding 5): what grants depend on (a memory's
tier and its metadata, which tag grants match) is changed by the owner agent only. A write
grant lets its holder change content and importance, nothing that decides who else reads.
"""

from __future__ import annotations

import pytest

from memory import Memory, NotFoundError, PermissionDeniedError


def _setup(memory: Memory, user: str) -> tuple[int, int]:
    owner = memory.scope(user, "owner")
    private = owner.add("the owner's private plan", tier="working", metadata={"team": "a"})
    tagged = owner.add("shared with c by tag", tier="working", metadata={"team": "c"})
    owner.share(memory_id=private.id, agents=["b"], access="write")
    owner.share(tag=("team", "c"), agents=["c"])
    owner.share(tier="semantic", agents=["c"])
    return private.id, tagged.id


@pytest.mark.parametrize(
    "change", [{"metadata": {"team": "c"}}, {"tier": "semantic"}], ids=["tags", "tier"]
)
def test_a_grantee_cannot_change_what_grants_depend_on(
    memory: Memory, user: str, change: dict[str, object]
) -> None:
    private, tagged = _setup(memory, user)
    grantee, bystander = memory.scope(user, "b"), memory.scope(user, "c")
    assert bystander.get(tagged).id == tagged
    version = grantee.get(private).version

    with pytest.raises(PermissionDeniedError, match="owner"):
        grantee.update(private, version=version, **change)  # type: ignore[arg-type]

    with pytest.raises(NotFoundError):
        bystander.get(private)
    record = memory.scope(user, "owner").get(private)
    assert (record.tier, record.metadata, record.version) == ("working", {"team": "a"}, version)
    # What the write grant is for still works.
    updated = grantee.update(private, version=version, content="revised by b", importance=0.9)
    assert (updated.content, updated.tier, updated.metadata) == (
        "revised by b", "working", {"team": "a"}
    )


def test_the_owner_still_changes_tier_and_tags(memory: Memory, user: str) -> None:
    private, _ = _setup(memory, user)
    owner = memory.scope(user, "owner")
    version = owner.get(private).version
    owner.update(private, version=version, metadata={"team": "c"})
    assert memory.scope(user, "c").get(private).id == private
