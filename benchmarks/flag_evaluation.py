"""Benchmark: cost of one flag evaluation with cached provider state, against UnleashClient.

Run from the repository root::

    python benchmarks/flag_evaluation.py            # table + one JSON line
    python benchmarks/flag_evaluation.py --check    # exit 1 if the targets are missed

Each measurement times batches of ``--batch-size`` calls (default 1000) and reports the
median and 95th percentile of the per-call time over ``--batches`` batches, with the garbage
collector paused while a batch runs. The batches of the contenders are interleaved, in a
shuffled order per round (``benchmarks/measure.py``), so that machine noise hits them alike.

- ``flags (warm ids)``: ``FlagEvaluator.is_enabled`` on a provider snapshot already cached,
  for 1000 session ids asked about before, the steady state of agents that ask about the
  same sessions over and over (their buckets are memoized).
- ``flags (cold ids)``: the same, but every call uses a session id never seen before, so
  every call runs the pure-Python MurmurHash3.
- ``UnleashClient``: ``UnleashClient.is_enabled`` of the ``UnleashClient`` package (its Rust
  engine, yggdrasil) for an equivalent ``flexibleRollout`` toggle (same rollout, stickiness
  and group), bootstrapped from an in-memory cache; the client is never initialized, so it
  neither fetches, registers nor sends metrics: nothing touches the network or the disk.
- ``OpenFeature client``: ``get_boolean_value`` of an openfeature-sdk client whose provider
  is ``flags.OpenFeatureFlagProvider`` over the same evaluator (warm ids): what an
  application that reads our flags through OpenFeature pays. Reported, not judged: the
  SDK's hooks and context merging come on top of our evaluation.

Where the snapshot comes from (memory database, Unleash server, in memory) does not change
these figures: every provider is read on refresh only, and every evaluation runs on the
same cached flag set.

Targets: median at most 5 µs per evaluation, and faster than UnleashClient.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import sys
import uuid
from collections.abc import Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

# Runnable as a plain script from a checkout: make the repository root importable.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from measure import call_each, emit, interleaved, summary, table  # noqa: E402

from flags import (  # noqa: E402
    EvaluationContext,
    FlagDefinition,
    FlagEvaluator,
    InMemoryFlagProvider,
)

FLAG = "BENCH_ROLLOUT"
ROLLOUT = 25
TARGET_MEDIAN_US = 5.0


def _session_ids(rng: random.Random, count: int) -> list[str]:
    return [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(count)]


def _unleash_client() -> Any:
    try:
        from UnleashClient import UnleashClient
        from UnleashClient.cache import BaseCache
        from UnleashClient.utils import InstanceAllowType
    except ImportError:
        sys.exit("this benchmark needs the Unleash client: pip install 'UnleashClient>=6,<7'")
    from UnleashClient.constants import FEATURES_URL

    class MemoryCache(BaseCache):  # type: ignore[misc]
        """An Unleash cache in memory: bootstrapped, never written to disk."""

        def __init__(self, features: Mapping[str, Any]) -> None:
            self._data: dict[str, Any] = {FEATURES_URL: json.dumps(features)}
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

    features = {
        "version": 1,
        "features": [
            {
                "name": FLAG,
                "enabled": True,
                "strategies": [
                    {
                        "name": "flexibleRollout",
                        "parameters": {
                            "rollout": str(ROLLOUT),
                            "stickiness": "sessionId",
                            "groupId": FLAG,
                        },
                    }
                ],
            }
        ],
    }
    return UnleashClient(
        url="http://127.0.0.1:9/never-contacted",
        app_name="flag-evaluation-benchmark",
        disable_metrics=True,
        disable_registration=True,
        cache=MemoryCache(features),
        multiple_instance_mode=InstanceAllowType.SILENTLY_ALLOW,
    )


def _openfeature_client(evaluator: FlagEvaluator) -> Any:
    try:
        from openfeature import api
    except ImportError:
        sys.exit("this benchmark needs openfeature-sdk: pip install 'tiered-memory[openfeature]'")
    from flags import OpenFeatureFlagProvider

    api.set_provider(OpenFeatureFlagProvider(evaluator), domain="flag-evaluation-benchmark")
    return api.get_client("flag-evaluation-benchmark")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=200, help="batches per contender")
    parser.add_argument("--batch-size", type=int, default=1000, help="calls per batch")
    parser.add_argument("--seed", type=int, default=20250101)
    parser.add_argument("--check", action="store_true", help="exit 1 if a target is missed")
    args = parser.parse_args(argv)
    logging.getLogger("UnleashClient").setLevel(logging.ERROR)
    rng = random.Random(args.seed)

    provider = InMemoryFlagProvider([FlagDefinition(FLAG, rollout=ROLLOUT, stickiness="sessionId")])
    # The default 10 s refresh interval: the snapshot stays cached for the whole run.
    evaluator = FlagEvaluator(provider, environ={})
    client = _unleash_client()
    openfeature = _openfeature_client(evaluator)
    from openfeature.evaluation_context import EvaluationContext as OpenFeatureContext

    warm_ids = _session_ids(rng, args.batch_size)
    warm_contexts = [EvaluationContext(session_id=s) for s in warm_ids]
    unleash_contexts = [{"sessionId": s} for s in warm_ids]
    openfeature_contexts = [OpenFeatureContext(attributes={"session_id": s}) for s in warm_ids]

    def ours(context: EvaluationContext) -> bool:
        return evaluator.is_enabled(FLAG, context)

    def theirs(context: dict[str, str]) -> bool:
        return bool(client.is_enabled(FLAG, context))

    def through_openfeature(context: Any) -> bool:
        return bool(openfeature.get_boolean_value(FLAG, False, context))

    # Same inputs, same answers, or the comparison would be meaningless.
    agreement = sum(
        ours(a) == theirs(b) for a, b in zip(warm_contexts, unleash_contexts, strict=True)
    )
    agreement_openfeature = sum(
        ours(a) == through_openfeature(b)
        for a, b in zip(warm_contexts, openfeature_contexts, strict=True)
    )
    share_on = sum(ours(c) for c in warm_contexts) / len(warm_contexts)
    warmup = 3  # memoized buckets, caches, branch predictors
    # Every cold batch gets ids never seen before, built outside the timing.
    cold_contexts = [
        [EvaluationContext(session_id=s) for s in _session_ids(rng, args.batch_size)]
        for _ in range(warmup + args.batches)
    ]
    batches = interleaved(
        {
            "flags_warm": lambda _: call_each(ours, warm_contexts),
            "flags_cold": lambda number: call_each(ours, cold_contexts[number]),
            "unleash": lambda _: call_each(theirs, unleash_contexts),
            "openfeature": lambda _: call_each(through_openfeature, openfeature_contexts),
        },
        args.batches,
        random.Random(args.seed),
        warmup,
    )
    results = {
        name: summary([ms * 1000 / args.batch_size for ms in values], ("median", "p95"), "us")
        for name, values in batches.items()
    }
    unleash_median = results["unleash"]["median_us"]
    meets_target = results["flags_cold"]["median_us"] <= TARGET_MEDIAN_US
    faster = max(results["flags_warm"]["median_us"], results["flags_cold"]["median_us"]) < (
        unleash_median
    )

    labels = {
        "flags_warm": "flags (warm ids)",
        "flags_cold": "flags (cold ids)",
        "unleash": "UnleashClient.is_enabled",
        "openfeature": "OpenFeature client (flags)",
    }
    print(
        f"flag evaluation, {args.batches} batches x {args.batch_size} calls, "
        f"rollout {ROLLOUT}% by sessionId, cached provider state"
    )
    rows = [
        [label, *results[name].values(), f"{unleash_median / results[name]['median_us']:.1f}x"]
        for name, label in labels.items()
    ]
    print(table(["contender", "median µs", "p95 µs", "vs Unleash"], rows, digits=3))
    print(
        f"agreement with Unleash on {len(warm_contexts)} ids: {agreement}/{len(warm_contexts)}, "
        f"with OpenFeature: {agreement_openfeature}/{len(warm_contexts)}; "
        f"share on {share_on:.1%}; target median <= {TARGET_MEDIAN_US} µs (cold ids): "
        f"{'met' if meets_target else 'MISSED'}; faster than UnleashClient: "
        f"{'yes' if faster else 'NO'}"
    )
    emit(
        {
            "benchmark": "flag_evaluation",
            "batches": args.batches,
            "batch_size": args.batch_size,
            "rollout": ROLLOUT,
            "results_us_per_call": results,
            "target_median_us": TARGET_MEDIAN_US,
            "meets_target": meets_target,
            "faster_than_unleash": faster,
            "agreement": agreement / len(warm_contexts),
            "agreement_openfeature": agreement_openfeature / len(warm_contexts),
            "unleash_client": metadata.version("UnleashClient"),
            "openfeature_sdk": metadata.version("openfeature-sdk"),
        },
        sort_keys=True,
    )
    ok = (
        meets_target
        and faster
        and agreement == len(warm_contexts)
        and agreement_openfeature == len(warm_contexts)
    )
    return 1 if args.check and not ok else 0


if __name__ == "__main__":
    sys.exit(main())
