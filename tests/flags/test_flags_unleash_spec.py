"""Unleash's client specification, case by case, through UnleashFlagProvider + FlagEvaluator.

The specification is the npm package @unleash/client-specification pinned in tests/unleash/
(installed by ./scripts/check with `npm ci`). Each file's state is served by a loopback HTTP
server as the client API serves it, read by a real UnleashFlagProvider, and every one of its
``tests`` (is the toggle on?) and ``variantTests`` (which variant?) is one test here, asked
through FlagEvaluator. A missing package FAILS the tests: nothing here is skipped.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from flags import EvaluationContext, FlagEvaluator, UnleashFlagProvider, Variant
from tests.flags.unleash_offline import FeaturesServer

SPECIFICATIONS = (
    Path(__file__).resolve().parent.parent
    / "unleash"
    / "node_modules"
    / "@unleash"
    / "client-specification"
    / "specifications"
)

# Files whose state is not a features document: they test a client transport that
# UnleashFlagProvider does not use (README, "Unleash's client specification").
EXCLUDED = {
    "19-delta-api-hydration.json": "delta API (streaming) events, not a features document",
    "20-delta-api-events.json": "delta API (streaming) events, not a features document",
}


def _index() -> list[str]:
    index = SPECIFICATIONS / "index.json"
    if not index.is_file():
        return []
    names: list[str] = json.loads(index.read_text(encoding="utf-8"))
    return names


def _cases(kind: str) -> list[Any]:
    cases = []
    for name in _index():
        if name in EXCLUDED:
            continue
        specification = json.loads((SPECIFICATIONS / name).read_text(encoding="utf-8"))
        for case in specification.get(kind, []):
            case_id = f"{name.removesuffix('.json')}: {case['description']}"
            cases.append(pytest.param(name, case, id=case_id))
    # A missing package must fail, not leave nothing to run.
    return cases or [pytest.param(None, None, id="specification-not-installed")]


def _require(name: str | None) -> str:
    if name is None:
        pytest.fail(
            f"@unleash/client-specification is not installed in {SPECIFICATIONS.parents[2]}: "
            "run ./scripts/check (or `npm ci` in tests/unleash)",
            pytrace=False,
        )
    return name


def our_context(spec: Mapping[str, Any]) -> EvaluationContext:
    """A specification context as the caller of FlagEvaluator states it (README's table)."""
    attributes = {k: str(v) for k, v in (spec.get("properties") or {}).items() if v is not None}
    for key, value in spec.items():
        if key not in ("userId", "sessionId", "properties") and value is not None:
            attributes[key] = str(value)
    return EvaluationContext(
        user_id=spec.get("userId"), session_id=spec.get("sessionId"), attributes=attributes
    )


def as_unleash(variant: Variant) -> dict[str, Any]:
    result: dict[str, Any] = {
        "name": variant.name,
        "enabled": variant.enabled,
        "feature_enabled": variant.feature_enabled,
    }
    if variant.payload is not None:
        result["payload"] = {"type": variant.payload.type, "value": variant.payload.value}
    return result


class Evaluators:
    """One served document, provider and evaluator per specification file, made on demand."""

    def __init__(self) -> None:
        self._made: dict[str, tuple[FeaturesServer, UnleashFlagProvider, FlagEvaluator]] = {}

    def __call__(self, name: str) -> FlagEvaluator:
        if name not in self._made:
            specification = json.loads((SPECIFICATIONS / name).read_text(encoding="utf-8"))
            server = FeaturesServer()
            server.document = specification["state"]
            provider = UnleashFlagProvider(server.url, refresh_interval=3600)
            evaluator = FlagEvaluator(provider, registry={}, refresh_interval=3600, environ={})
            assert not evaluator.stale, f"{name}: the provider did not read the served state"
            self._made[name] = (server, provider, evaluator)
        return self._made[name][2]

    def close(self) -> None:
        for server, provider, _ in self._made.values():
            provider.close()
            server.close()


@pytest.fixture(scope="module")
def evaluators() -> Iterator[Evaluators]:
    made = Evaluators()
    yield made
    made.close()


def test_every_specification_file_is_run_or_excluded_with_a_reason() -> None:
    names = _index()
    assert names, f"@unleash/client-specification is not installed in {SPECIFICATIONS}"
    assert set(EXCLUDED) <= set(names), "an excluded file is no longer in the specification"
    assert len(names) - len(EXCLUDED) >= 20


@pytest.mark.parametrize(("name", "case"), _cases("tests"))
def test_enabled(evaluators: Evaluators, name: str | None, case: dict[str, Any]) -> None:
    evaluator = evaluators(_require(name))
    context = our_context(case["context"])
    assert evaluator.is_enabled(case["toggleName"], context) is case["expectedResult"]


@pytest.mark.parametrize(("name", "case"), _cases("variantTests"))
def test_variant(evaluators: Evaluators, name: str | None, case: dict[str, Any]) -> None:
    evaluator = evaluators(_require(name))
    context = our_context(case["context"])
    assert as_unleash(evaluator.variant(case["toggleName"], context)) == case["expectedResult"]
