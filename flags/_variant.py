"""Variants: which variant of a flag a context gets, in the shape Unleash gives it.

Only toggles read from Unleash carry variants; every other flag answers the variant Unleash
gives a toggle without variants (``"disabled"``), with ``feature_enabled`` saying whether
the flag is on.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Variant", "VariantPayload"]


@dataclass(frozen=True, slots=True)
class VariantPayload:
    """A variant's payload as Unleash sends it: a type (``string``, ``json``, ``csv``,
    ``number``) and the value as text."""

    type: str
    value: str


@dataclass(frozen=True, slots=True)
class Variant:
    """The variant of a flag for one context.

    - ``name``: the variant's name; ``"disabled"`` when the context gets no variant;
    - ``enabled``: whether a variant was assigned (False for ``"disabled"``);
    - ``feature_enabled``: whether the flag itself is on for the context;
    - ``payload``: the variant's payload, if it has one.

    >>> Variant.disabled(feature_enabled=True)
    Variant(name='disabled', enabled=False, feature_enabled=True, payload=None)
    """

    name: str
    enabled: bool
    feature_enabled: bool
    payload: VariantPayload | None = None

    @classmethod
    def disabled(cls, *, feature_enabled: bool) -> Variant:
        """The variant of a context that gets none (the flag is off, or has no variants)."""
        return _ON_WITHOUT_VARIANT if feature_enabled else _OFF


_OFF = Variant("disabled", enabled=False, feature_enabled=False)
_ON_WITHOUT_VARIANT = Variant("disabled", enabled=False, feature_enabled=True)
