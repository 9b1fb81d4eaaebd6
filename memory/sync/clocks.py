"""Hub-spoke sync's clocks: the hybrid logical clock (pure; callers pass wall time),
version vectors per (node, tier), ``compute_delta`` and the deterministic conflict rule.

The definitions live in ``memory.core.sync_clocks`` because the store stamps local writes
and resolves incoming versions inside its transactions and may not import this package;
this module is where sync code imports them.
"""

from memory.core.sync_clocks import (
    HLC_LOGICAL_BITS,
    HLC_MAX,
    MAX_CLOCK_DRIFT_MS,
    ChangeRange,
    ClockDriftError,
    ConflictResolution,
    HybridLogicalClock,
    Resolution,
    Stamp,
    VersionInfo,
    VersionVector,
    apply_ranges,
    compute_delta,
    hlc_logical,
    hlc_pack,
    hlc_wall_ms,
    resolve,
)

__all__ = [
    "HLC_LOGICAL_BITS",
    "HLC_MAX",
    "MAX_CLOCK_DRIFT_MS",
    "ChangeRange",
    "ClockDriftError",
    "ConflictResolution",
    "HybridLogicalClock",
    "Resolution",
    "Stamp",
    "VersionInfo",
    "VersionVector",
    "apply_ranges",
    "compute_delta",
    "hlc_logical",
    "hlc_pack",
    "hlc_wall_ms",
    "resolve",
]
