"""The public surface of the flags package: names, docs, typing marker, independence."""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
from pathlib import Path

import flags

EXPECTED_PUBLIC_NAMES = [
    "BUILTIN_FLAGS",
    "Decision",
    "EnvironmentOverride",
    "EnvironmentOverrideError",
    "EvaluationContext",
    "FlagDefinition",
    "FlagDefinitionError",
    "FlagDependencyError",
    "FlagError",
    "FlagEvaluator",
    "FlagProvider",
    "FlagProviderError",
    "FlagSet",
    "FlagState",
    "FlagValueError",
    "InMemoryFlagProvider",
    "MissingPackageError",
    "OpenFeatureFlagProvider",
    "Rule",
    "SessionOverride",
    "Stickiness",
    "USE_CROSS_AGENT_SHARING",
    "USE_ENHANCED_INJECTION",
    "USE_HIERARCHICAL_TIERS",
    "USE_SWARM_SIGNATURE_ENFORCEMENT",
    "UnleashFlagProvider",
    "Variant",
    "VariantPayload",
    "check_dependencies",
    "export_flag_states",
    "murmur3_32",
    "normalized_hash",
    "parse_environment_override",
    "read_environment",
]


def test_all_is_the_expected_sorted_list() -> None:
    assert flags.__all__ == EXPECTED_PUBLIC_NAMES
    assert flags.__all__ == sorted(flags.__all__)
    for name in flags.__all__:
        assert hasattr(flags, name), name


def test_public_callables_have_docstrings() -> None:
    for name in flags.__all__:
        obj = getattr(flags, name)
        if inspect.isclass(obj) or inspect.isfunction(obj):
            assert inspect.getdoc(obj), name
            for member_name, member in vars(obj).items() if inspect.isclass(obj) else ():
                if inspect.isfunction(member) and not member_name.startswith("_"):
                    assert inspect.getdoc(member), f"{name}.{member_name}"


def test_py_typed_marker_ships() -> None:
    assert (Path(flags.__file__).parent / "py.typed").is_file()


def test_flags_never_imports_memory() -> None:
    root = str(Path(flags.__file__).resolve().parent.parent)
    env = {**os.environ, "PYTHONPATH": root}
    code = (
        "import sys, flags\n"
        "flags.FlagEvaluator(environ={}).is_enabled('USE_ENHANCED_INJECTION')\n"
        "print(sorted(m for m in sys.modules if m == 'memory' or m.startswith('memory.')))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    assert result.stdout.strip() == "[]"
    for source in Path(flags.__file__).parent.glob("*.py"):
        text = source.read_text(encoding="utf-8")
        assert "import memory" not in text and "from memory" not in text, source.name
