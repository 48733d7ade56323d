"""Checks of the values callers hand the registry's stores; errors name the offending field.

>>> nonempty("text", "kind")
'text'
>>> version_ref("v3")
3
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Final

import orjson

from niche.errors import DataValidationError, ValidationError
from niche.registry import db

__all__ = [
    "LISTED",
    "alias_name",
    "aware",
    "json_value",
    "limit_count",
    "listing",
    "nonempty",
    "usd_amount",
    "version_ref",
]

_ALIAS = re.compile(r"^[a-z][a-z0-9_\-]{0,63}$")
LISTED: Final = 10
"""How many known names an error message lists before it says how many there are."""


def json_value(value: Any, what: str) -> Any:
    """``value`` as it will read back from a JSON column (numpy scalars become numbers)."""
    try:
        return orjson.loads(db.json_dumps(value))
    except (TypeError, orjson.JSONEncodeError) as exc:
        raise DataValidationError(f"{what} is not JSON-serialisable ({exc})", column=what) from None


def nonempty(value: str, what: str) -> str:
    """``value`` when it is a string with something in it."""
    if not isinstance(value, str) or not value.strip():
        raise ValidationError(f"{what} must be a non-empty string, got {value!r}")
    return value


def alias_name(alias: str) -> str:
    """``alias`` when it is a valid alias name (``champion``, ``challenger`` …)."""
    if not isinstance(alias, str) or not _ALIAS.match(alias):
        # Digit-only names are refused: a model reference "3" means version 3, not an alias.
        raise ValidationError(
            f"alias {alias!r} must be 1-64 lower-case letters, digits, '_' or '-', starting "
            "with a letter (e.g. champion, challenger)"
        )
    return alias


def version_ref(ref: int | str) -> int | str:
    """An int version from ``3``, ``"3"`` or ``"v3"``; otherwise the alias name."""
    if isinstance(ref, bool):
        raise ValidationError(f"model version must be a number or an alias, got {ref!r}")
    if isinstance(ref, int):
        return ref
    text = str(ref).strip()
    digits = text[1:] if text[:1] in ("v", "V") else text
    if digits.isdecimal():
        return int(digits)
    return text


def usd_amount(value: float | None, what: str) -> float | None:
    """``value`` as a finite, non-negative float (None stays None)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValidationError(f"{what} must be a finite number of US dollars, got {value!r}")
    if value < 0:
        raise ValidationError(f"{what} must not be negative, got {value!r}")
    return float(value)


def aware(value: datetime, what: str) -> datetime:
    """``value`` in UTC; naive datetimes are refused (their zone is a guess)."""
    if not isinstance(value, datetime) or value.tzinfo is None:
        raise ValidationError(f"{what} must be a timezone-aware datetime, got {value!r}")
    return value.astimezone(UTC)


def limit_count(limit: int | None) -> int | None:
    """``limit`` when it is None or a non-negative int."""
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise ValidationError(f"limit must be a non-negative integer, got {limit!r}")
    return limit


def listing(items: Sequence[str], empty: str) -> str:
    """``a, b, c`` (at most :data:`LISTED`, then how many in all), or ``empty``."""
    if not items:
        return empty
    shown = ", ".join(items[:LISTED])
    return shown + (f", … ({len(items)} in all)" if len(items) > LISTED else "")
