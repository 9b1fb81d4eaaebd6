"""Benchmark: cost of one flag evaluation with cached provider state, against UnleashClient.

Run from the repository root::

    python benchmarks/flag_evaluation.py            # table + one JSON line
    python benchmarks/flag_evaluation.py --check    # exit 1 if the targets are missed

Each measurement times batches of ``--batch-size`` calls (default 1000) with
``time.perf_counter_ns`` and reports the median and 95th percentile of the per-call time over
``--batches`` batches, with the garbage collector paused while a batch runs. The batches of
all contenders are interleaved, in a shuffled order per round (``benchmarks/measure.py``), so
that machine noise hits them alike.

One features document with two toggles is served, as Unleash's client API serves it, by a
loopback HTTP server in this process, and read both by ``flags.UnleashFlagProvider`` (into a
``FlagEvaluator``) and by an ``UnleashClient`` (bootstrapped from the same document in
memory, never initialized: it neither fetches, registers nor sends metrics):

- ``BENCH_ROLLOUT``: ``flexibleRollout`` 25 % by ``sessionId``, which the evaluator decides
  on its fast path;
- ``BENCH_ENGINE``: the same rollout behind a ``STR_STARTS_WITH`` constraint on a property,
  which the evaluator hands to Unleash's engine (``yggdrasil-engine``, the engine
  ``UnleashClient`` evaluates with too).

Contenders, for each toggle:

- ``flags, warm ids``: ``FlagEvaluator.is_enabled`` for 1000 session ids asked about before,
  the steady state of agents that ask about the same sessions over and over (the fast
  path's buckets are memoized);
- ``flags, new ids``: the same, but every call uses a session id never seen before, so
  the fast path runs the pure-Python MurmurHash3 on every call;
- ``UnleashClient``: ``UnleashClient.is_enabled`` for the warm ids (it memoizes nothing, so
  new ids cost it the same);
- ``OpenFeature client`` (fast-path toggle only): ``get_boolean_value`` of an openfeature-sdk
  client whose provider is ``flags.OpenFeatureFlagProvider`` over the same evaluator (warm
  ids). Reported, not judged: the SDK's hooks and context merging come on top.

Targets: on the fast path a median of at most 5 µs for new ids, and both medians below
UnleashClient's; for the engine toggle, both medians no slower than UnleashClient's. Every
contender must give the same answers as UnleashClient.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import sys
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import metadata
from pathlib import Path
from typing import Any

# Runnable as a plain script from a checkout: make the repository root importable.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from measure import call_each, emit, interleaved  # noqa: E402
from measure import summary as measure_summary  # noqa: E402

from flags import EvaluationContext, FlagEvaluator  # noqa: E402

FAST = "BENCH_ROLLOUT"
ENGINE = "BENCH_ENGINE"
ROLLOUT = 25
TARGET_MEDIAN_US = 5.0
TENANT = "acme-7"  # every context's tenant: the engine toggle's constraint holds


def _rollout_strategy(group: str, constraints: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "name": "flexibleRollout",
        "parameters": {"rollout": str(ROLLOUT), "stickiness": "sessionId", "groupId": group},
        "constraints": constraints,
    }


FEATURES = {
    "version": 2,
    "features": [
        {"name": FAST, "enabled": True, "strategies": [_rollout_strategy(FAST, [])]},
        {
            "name": ENGINE,
            "enabled": True,
            "strategies": [
                _rollout_strategy(
                    ENGINE,
                    [{"contextName": "tenant", "operator": "STR_STARTS_WITH", "values": ["acme"]}],
                )
            ],
        },
    ],
}


def _session_ids(rng: random.Random, count: int) -> list[str]:
    return [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(count)]


def _contexts(sessions: Sequence[str]) -> list[EvaluationContext]:
    return [EvaluationContext(session_id=s, attributes={"tenant": TENANT}) for s in sessions]


@contextmanager
def _served(document: Mapping[str, Any]) -> Iterator[str]:
    """Serve ``document`` as Unleash's client API on a loopback port; yield the API URL."""
    body = json.dumps(document).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/api"
    finally:
        server.shutdown()
        server.server_close()


def _unleash_client() -> Any:
    try:
        from UnleashClient import UnleashClient
        from UnleashClient.cache import BaseCache
        from UnleashClient.utils import InstanceAllowType
    except ImportError:
        sys.exit("this benchmark needs the Unleash client: pip install 'tiered-memory[unleash]'")
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

    return UnleashClient(
        url="http://127.0.0.1:9/never-contacted",
        app_name="flag-evaluation-benchmark",
        disable_metrics=True,
        disable_registration=True,
        cache=MemoryCache(FEATURES),
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
    from flags import UnleashFlagProvider

    with _served(FEATURES) as url, UnleashFlagProvider(url, refresh_interval=3600) as provider:
        return _run(args, provider)


def _run(args: argparse.Namespace, provider: Any) -> int:
    rng = random.Random(args.seed)
    # A refresh interval longer than the run: the snapshot stays cached throughout.
    evaluator = FlagEvaluator(provider, refresh_interval=3600, environ={})
    for flag, rule in ((FAST, "rollout"), (ENGINE, "engine")):
        decided_by = evaluator.explain(flag, _contexts(["probe"])[0]).rule
        if decided_by != rule:
            sys.exit(f"{flag} is decided by rule {decided_by!r}, not {rule!r}: not this benchmark")
    client = _unleash_client()
    openfeature = _openfeature_client(evaluator)
    from openfeature.evaluation_context import EvaluationContext as OpenFeatureContext

    warm_ids = _session_ids(rng, args.batch_size)
    warm = _contexts(warm_ids)
    theirs = [{"sessionId": s, "properties": {"tenant": TENANT}} for s in warm_ids]
    openfeature_contexts = [
        OpenFeatureContext(attributes={"session_id": s, "tenant": TENANT}) for s in warm_ids
    ]

    def ours(flag: str) -> Callable[[EvaluationContext], bool]:
        return lambda context: evaluator.is_enabled(flag, context)

    def unleash(flag: str) -> Callable[[dict[str, Any]], bool]:
        return lambda context: bool(client.is_enabled(flag, context))

    def through_openfeature(context: Any) -> bool:
        return bool(openfeature.get_boolean_value(FAST, False, context))

    # Same inputs, same answers, or the comparison would be meaningless.
    agreement = {
        flag: sum(ours(flag)(a) == unleash(flag)(b) for a, b in zip(warm, theirs, strict=True))
        for flag in (FAST, ENGINE)
    }
    agreement["openfeature"] = sum(
        ours(FAST)(a) == through_openfeature(b)
        for a, b in zip(warm, openfeature_contexts, strict=True)
    )
    share_on = {flag: sum(map(ours(flag), warm)) / len(warm) for flag in (FAST, ENGINE)}

    # name -> (label, call, arguments or None for new ids each batch)
    contenders: dict[str, tuple[str, Callable[[Any], bool], Sequence[Any] | None]] = {
        "fast_warm": ("fast path: flags, warm ids", ours(FAST), warm),
        "fast_new": ("fast path: flags, new ids", ours(FAST), None),
        "fast_unleash": ("fast path: UnleashClient", unleash(FAST), theirs),
        "engine_warm": ("engine: flags, warm ids", ours(ENGINE), warm),
        "engine_new": ("engine: flags, new ids", ours(ENGINE), None),
        "engine_unleash": ("engine: UnleashClient", unleash(ENGINE), theirs),
        "openfeature": ("fast path: OpenFeature", through_openfeature, openfeature_contexts),
    }
    warmup = 3  # memoized buckets, caches, branch predictors
    # New ids for every round, built before timing starts (their contexts are not measured).
    fresh = [_contexts(_session_ids(rng, args.batch_size)) for _ in range(warmup + args.batches)]

    def batch(
        call: Callable[[Any], bool], arguments: Sequence[Any] | None
    ) -> Callable[[int], None]:
        return lambda number: call_each(call, arguments if arguments is not None else fresh[number])

    samples = interleaved(
        {name: batch(call, arguments) for name, (_, call, arguments) in contenders.items()},
        args.batches,
        rng,
        warmup=warmup,
    )
    summary = {
        name: measure_summary(
            [ms * 1000 / args.batch_size for ms in values], ("median", "p95"), "us"
        )
        for name, values in samples.items()
    }
    median = {name: figures["median_us"] for name, figures in summary.items()}
    meets_target = median["fast_new"] <= TARGET_MEDIAN_US
    fast_faster = max(median["fast_warm"], median["fast_new"]) < median["fast_unleash"]
    engine_not_slower = max(median["engine_warm"], median["engine_new"]) <= median["engine_unleash"]

    print(
        f"flag evaluation, {args.batches} batches x {args.batch_size} calls, rollout "
        f"{ROLLOUT}% by sessionId, through UnleashFlagProvider with cached state"
    )
    print(f"{'contender':<28} {'median µs':>10} {'p95 µs':>10} {'vs Unleash':>11}")
    for name, (label, _, _) in contenders.items():
        reference = median["engine_unleash" if name.startswith("engine") else "fast_unleash"]
        print(
            f"{label:<28} {median[name]:>10.3f} {summary[name]['p95_us']:>10.3f} "
            f"{reference / median[name]:>10.1f}x"
        )
    count = len(warm)
    print(
        f"agreement with UnleashClient on {count} ids: fast path {agreement[FAST]}/{count}, "
        f"engine {agreement[ENGINE]}/{count}, OpenFeature {agreement['openfeature']}/{count}; "
        f"share on {share_on[FAST]:.1%} / {share_on[ENGINE]:.1%}; fast path new-id median <= "
        f"{TARGET_MEDIAN_US} µs: {'met' if meets_target else 'MISSED'}; fast path faster than "
        f"UnleashClient: {'yes' if fast_faster else 'NO'}; engine no slower than "
        f"UnleashClient: {'yes' if engine_not_slower else 'NO'}"
    )
    emit(
        {
            "benchmark": "flag_evaluation",
            "batches": args.batches,
            "batch_size": args.batch_size,
            "rollout": ROLLOUT,
            "results_us_per_call": summary,
            "target_median_us": TARGET_MEDIAN_US,
            "meets_target": meets_target,
            "fast_path_faster_than_unleash": fast_faster,
            "engine_not_slower_than_unleash": engine_not_slower,
            "agreement": {k: v / count for k, v in agreement.items()},
            "unleash_client": metadata.version("UnleashClient"),
            "yggdrasil_engine": metadata.version("yggdrasil-engine"),
            "openfeature_sdk": metadata.version("openfeature-sdk"),
        },
        sort_keys=True,
    )
    ok = (
        meets_target
        and fast_faster
        and engine_not_slower
        and all(v == count for v in agreement.values())
    )
    client.destroy()
    return 1 if args.check and not ok else 0


if __name__ == "__main__":
    sys.exit(main())
