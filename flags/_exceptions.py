"""Exceptions raised by the flag package.

Evaluation itself never raises (it falls back and logs); these are raised when a flag is
defined, when the environment is read at start-up, and by providers::

    FlagError
    ├── FlagValueError (ValueError)         an input is invalid; names the field and the limit
    │   ├── FlagDefinitionError             a FlagDefinition or SessionOverride field
    │   │   └── FlagDependencyError         an unknown parent flag or a dependency cycle
    │   └── EnvironmentOverrideError        an environment variable holds no valid setting
    ├── FlagProviderError                   a provider could not produce a snapshot
    └── MissingPackageError (ImportError)   an optional provider's package is not installed
"""

from __future__ import annotations

__all__ = [
    "EnvironmentOverrideError",
    "FlagDefinitionError",
    "FlagDependencyError",
    "FlagError",
    "FlagProviderError",
    "FlagValueError",
    "MissingPackageError",
]


class FlagError(Exception):
    """Base class of every error raised by the flag package."""


class FlagValueError(FlagError, ValueError):
    """An input value is invalid; the message names the field and the allowed range."""


class FlagDefinitionError(FlagValueError):
    """A field of a flag definition (or of one of its overrides) is invalid."""

    def __init__(self, flag: str | None, field: str, problem: str) -> None:
        where = f"flag {flag!r}: " if flag else ""
        super().__init__(f"{where}{field} {problem}")
        self.flag = flag
        self.field = field


class FlagDependencyError(FlagDefinitionError):
    """A flag names a parent that does not exist, or parents form a cycle."""


class EnvironmentOverrideError(FlagValueError):
    """An environment variable meant to switch a flag holds a value that is not a setting."""

    def __init__(self, variable: str, value: str) -> None:
        super().__init__(
            f"environment variable {variable}={value!r} is not a valid flag setting: "
            "use on, off, true, false, 1, 0 (any case) or a whole percentage 0%..100% "
            "such as 25%"
        )
        self.variable = variable
        self.value = value


class FlagProviderError(FlagError):
    """A provider could not produce a snapshot of flag definitions."""


class MissingPackageError(FlagError, ImportError):
    """An optional provider needs a package that is not installed; the message says how to
    install it (``pip install 'tiered-memory[EXTRA]'``)."""

    def __init__(self, feature: str, package: str, extra: str) -> None:
        super().__init__(
            f"{feature} needs the {package} package, which is not installed: "
            f"pip install 'tiered-memory[{extra}]'",
            name=package,
        )
        self.package = package
        self.extra = extra
