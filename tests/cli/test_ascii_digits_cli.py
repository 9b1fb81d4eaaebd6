"""``memctl flags set --rollout`` and ``flags override --ttl`` take ASCII digits only
(issue 16, finding 13): click's ``int`` reads "٥٠" as 50."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from memory import Memory
from memory.cli import main
from memory.ops import DatabaseFlagProvider

FLAG = "USE_ENHANCED_INJECTION"


@pytest.mark.parametrize("value", ["٥٠", "５０", "१०"])
def test_a_rollout_in_other_digits_is_refused_and_changes_nothing(
    tmp_path: Path, value: str
) -> None:
    url = f"sqlite:///{tmp_path / 'memory.db'}"
    with Memory.open(url) as memory:
        before = next(f for f in DatabaseFlagProvider(memory.engine).flags() if f.name == FLAG)
    result = CliRunner().invoke(
        main, ["--database-url", url, "flags", "set", FLAG, "--rollout", value, "--actor", "t"]
    )
    assert result.exit_code == 2 and "ASCII digits" in result.output
    assert "Traceback" not in result.output
    with Memory.open(url) as memory:
        after = next(f for f in DatabaseFlagProvider(memory.engine).flags() if f.name == FLAG)
    assert after == before


def test_a_ttl_in_other_digits_is_refused(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'memory.db'}"
    Memory.open(url).close()
    result = CliRunner().invoke(
        main,
        ["--database-url", url, "flags", "override", FLAG, "--session", "s1", "--on",
         "--ttl", "٣٠m", "--actor", "t"],
    )
    assert result.exit_code == 2 and "not a duration" in result.output
