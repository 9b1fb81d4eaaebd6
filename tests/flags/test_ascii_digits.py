"""Flag percentages and durations take ASCII digits only (issue 16, finding 13): Python's
``\\d`` and ``int()`` also accept other scripts' digits, so ``٥٠%`` (Arabic-Indic) was read
as 50 %.
"""

from __future__ import annotations

import pytest

from flags import EnvironmentOverrideError, parse_environment_override

FOREIGN = ["٥٠%", "５０%", "५०%", "50\u2009%", "٥0%"]


@pytest.mark.parametrize("value", FOREIGN)
def test_an_environment_percentage_in_other_digits_is_refused(value: str) -> None:
    with pytest.raises(EnvironmentOverrideError, match="USE_ENHANCED_INJECTION"):
        parse_environment_override("USE_ENHANCED_INJECTION", value)


@pytest.mark.parametrize("value", ["50%", " 50 % ", "0%", "100%"])
def test_ascii_percentages_still_work(value: str) -> None:
    override = parse_environment_override("USE_ENHANCED_INJECTION", value)
    assert override is not None and override.rollout == int(value.strip().rstrip("%").strip())
