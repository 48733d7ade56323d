"""``--since`` values: an ISO-8601 time or a duration back from now (``30m``, ``2d``).

>>> parse_since("1h", datetime(2026, 3, 1, 12, tzinfo=UTC)).isoformat()
'2026-03-01T11:00:00+00:00'
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from niche.errors import ValidationError
from niche.registry.validation import aware

__all__ = ["parse_since"]

_RELATIVE = re.compile(r"^(\d+)\s*([smhdw])$")
_UNITS_S = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}


def parse_since(text: str, now: datetime) -> datetime:
    """A point in time from ISO-8601 or a duration before ``now`` (``30s``, ``15m``, ``1h``,
    ``2d``, ``1w``); an ISO time without an offset is read as UTC.

        >>> parse_since("1h", datetime(2026, 3, 1, 12, tzinfo=UTC)).isoformat()
        '2026-03-01T11:00:00+00:00'
    """
    raw = text.strip() if isinstance(text, str) else ""
    relative = _RELATIVE.match(raw.lower())
    if relative:
        amount, unit = relative.groups()
        return aware(now, "now") - timedelta(seconds=int(amount) * _UNITS_S[unit])
    try:
        parsed = datetime.fromisoformat(raw)
    except ValueError:
        raise ValidationError(
            f"--since {text!r} is neither ISO-8601 (2026-03-01T12:00:00Z) nor a duration "
            "like 30m, 1h or 2d",
            param="since",
        ) from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
