"""The checks every section of a task spec makes: unknown fields refused, numbers checked for
range, each error naming its field (``sla.min_quality``, ``loop.min_rows``).

    >>> fraction(0.2, "serving.shadow_fraction")
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from niche.errors import ValidationError

__all__ = ["fraction", "non_negative", "strict"]


def strict(cls: type, data: dict[str, Any], where: str) -> dict[str, Any]:
    """``data`` when every key is a field of ``cls``; else an error listing the known ones."""
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValidationError(
            f"{where}: unknown field(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
        )
    return data


def non_negative(value: float | None, name: str) -> None:
    """Refuse a ``value`` that is set and not a number >= 0, naming the field ``name``."""
    if value is not None and (not isinstance(value, int | float) or value < 0):
        raise ValidationError(f"{name} must be a non-negative number, got {value!r}")


def fraction(value: float | None, name: str) -> None:
    """Refuse a ``value`` that is set and not a number in [0, 1], naming the field ``name``."""
    if value is not None and (
        isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1
    ):
        raise ValidationError(f"{name} must be a number in [0, 1], got {value!r}")
