"""Properties of the rollout: monotone in p, close to p, stable across processes, and the
same decisions as the Unleash client's own engine."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from UnleashClient import UnleashClient

import flags
from flags import EvaluationContext, FlagDefinition, FlagSet
from tests.flags.unleash_offline import offline_client

PROPERTY = settings(database=None, deadline=None, max_examples=200)

_IDS = st.text(min_size=1, max_size=40)
_PERCENT = st.integers(min_value=0, max_value=100)


def _rollout_flag(rollout: int, stickiness: str = "sessionId") -> FlagSet:
    return FlagSet([FlagDefinition("F", rollout=rollout, stickiness=stickiness)])


@PROPERTY
@given(session=_IDS, p=_PERCENT, q=_PERCENT)
def test_on_at_p_stays_on_at_every_larger_q(session: str, p: int, q: int) -> None:
    low, high = sorted((p, q))
    context = EvaluationContext(session_id=session)
    if _rollout_flag(low).is_enabled("F", context):
        assert _rollout_flag(high).is_enabled("F", context)
    # And the converse: off at the higher percentage means off at the lower one.
    if not _rollout_flag(high).is_enabled("F", context):
        assert not _rollout_flag(low).is_enabled("F", context)


@PROPERTY
@given(user=_IDS, session=_IDS, group=st.sampled_from(["F", "shared-group", "ümlaut"]))
def test_each_id_is_on_exactly_from_its_bucket_upwards(user: str, session: str, group: str) -> None:
    context = EvaluationContext(user_id=user, session_id=session)
    flag_sets = [FlagSet([FlagDefinition("F", rollout=p, group_id=group)]) for p in range(0, 101)]
    on = [flag_set.is_enabled("F", context) for flag_set in flag_sets]
    threshold = flags.normalized_hash(group, user)  # default stickiness hashes the user id
    assert on == [p >= threshold for p in range(0, 101)]


@pytest.mark.parametrize("percent", [1, 10, 25, 50, 90])
def test_share_on_is_within_one_point_of_the_rollout(percent: int) -> None:
    rng = random.Random(percent)  # deterministic: a flaky statistics test helps nobody
    flag_set = _rollout_flag(percent)
    total = 100_000
    on = sum(
        flag_set.is_enabled(
            "F", EvaluationContext(session_id=str(uuid.UUID(int=rng.getrandbits(128))))
        )
        for _ in range(total)
    )
    share = 100 * on / total
    assert percent - 1 <= share <= percent + 1, share


_DECIDE = """
import json, sys
from flags import EvaluationContext, FlagDefinition, FlagSet

def decide(ids):
    flag_set = FlagSet([
        FlagDefinition("USE_ENHANCED_INJECTION", rollout=37),
        FlagDefinition("USE_CROSS_AGENT_SHARING", rollout=61, stickiness="sessionId",
                       parent="USE_ENHANCED_INJECTION"),
    ])
    return [
        [flag_set.is_enabled(name, EvaluationContext(user_id=i, session_id=i[::-1]))
         for name in ("USE_ENHANCED_INJECTION", "USE_CROSS_AGENT_SHARING")]
        for i in ids
    ]
"""


def test_decisions_are_identical_across_processes_and_hash_seeds() -> None:
    rng = random.Random(7)
    ids = [str(uuid.UUID(int=rng.getrandbits(128))) for _ in range(500)]
    ids += ["ü", "日本語", "user-1", "x" * 300]
    namespace: dict[str, Any] = {}
    exec(_DECIDE, namespace)
    local = namespace["decide"](ids)
    assert any(row[0] for row in local) and not all(row[0] for row in local)
    assert any(row[1] for row in local) and not all(row[1] for row in local)
    root = str(Path(flags.__file__).resolve().parent.parent)
    for seed in ("0", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
        result = subprocess.run(
            [sys.executable, "-c", _DECIDE + "print(json.dumps(decide(json.load(sys.stdin))))"],
            input=json.dumps(ids),
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
            check=True,
        )
        assert json.loads(result.stdout) == local, f"PYTHONHASHSEED={seed}"


def _unleash_client(rollouts: Mapping[str, tuple[int, str, str]]) -> UnleashClient:
    """An offline client: bootstrapped from memory, never initialized, so no network."""
    features = {
        "version": 1,
        "features": [
            {
                "name": name,
                "enabled": True,
                "strategies": [
                    {
                        "name": "flexibleRollout",
                        "parameters": {
                            "rollout": str(rollout),
                            "stickiness": stickiness,
                            "groupId": group,
                        },
                    }
                ],
            }
            for name, (rollout, stickiness, group) in rollouts.items()
        ],
    }
    return offline_client(features, "flags-compatibility-test")


def test_same_decisions_as_the_unleash_engine() -> None:
    rollouts = {
        "BY_SESSION": (33, "sessionId", "BY_SESSION"),
        "BY_USER": (58, "userId", "other-group"),
        "BY_DEFAULT": (12, "default", "BY_DEFAULT"),
        "ALL": (100, "sessionId", "ALL"),
        "NONE": (0, "userId", "NONE"),
    }
    client = _unleash_client(rollouts)
    ours = FlagSet(
        [
            FlagDefinition(name, rollout=rollout, stickiness=stickiness, group_id=group)
            for name, (rollout, stickiness, group) in rollouts.items()
        ]
    )
    rng = random.Random(11)
    agreed = 0
    for n in range(1500):
        user = f"user-{rng.getrandbits(40)}"
        session = str(uuid.UUID(int=rng.getrandbits(128)))
        for name in rollouts:
            theirs = client.is_enabled(name, {"userId": user, "sessionId": session})
            mine = ours.is_enabled(name, EvaluationContext(user_id=user, session_id=session))
            assert mine == theirs, (name, user, session, n)
            agreed += theirs
    assert agreed > 1500  # the comparison saw plenty of "on" decisions
