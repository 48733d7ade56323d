"""Making a traffic record storable whatever a client or an upstream sent, before it is stored.

Every string a client or the general model supplied may hold a NUL byte (PostgreSQL refuses
those), may be longer than its column (PostgreSQL refuses that too) or be blank (the store
refuses a blank model). :func:`clean_traffic` removes NULs, cuts each string to its column
(``TRAFFIC_LENGTHS`` characters; unbounded text columns to ``max_input_bytes`` bytes of
UTF-8), names a blank model ``(blank)`` and clips the input to ``max_input_bytes`` of JSON,
recording its size before in ``input_bytes`` (None: stored whole) and setting ``cleaned`` when
anything changed. A record that needs none of it is returned as it is.

    >>> record = clean_traffic(TrafficRecord(model="a\\x00b", route="passthrough", input="hi",
    ...                                      latency_ms=1.0, status=200))
    >>> record.model, record.cleaned, record.input_bytes
    ('ab', True, None)
"""

from __future__ import annotations

import dataclasses
import math
import sys
from typing import Any, Final

import orjson

from niche.errors import DataValidationError
from niche.registry.records import TRAFFIC_LENGTHS, TrafficRecord

__all__ = ["BLANK_MODEL", "DEFAULT_MAX_INPUT_BYTES", "clean_traffic"]

DEFAULT_MAX_INPUT_BYTES: Final = 65_536
"""The default of ``NICHE_GATEWAY_CAPTURE_MAX_INPUT_BYTES``."""
BLANK_MODEL: Final = "(blank)"
"""What a record's ``model`` becomes when the client sent a blank one."""

_TEXT_FIELDS: Final = ("specialist_label", "general_answer", "general_label", "text", "gold_label")
_JSON_OPTIONS: Final = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS


class _Cleaner:
    """One record's cleaning: remembers whether anything changed."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.changed = False

    def text(self, value: Any, *, chars: int | None = None, max_bytes: int | None = None) -> Any:
        """``value`` without NULs and lone surrogates, cut to ``chars`` or ``max_bytes``."""
        if value is None:
            return None
        if not isinstance(value, str):
            self.changed = True
            value = str(value)
        limit_bytes = self.max_bytes if max_bytes is None and chars is None else max_bytes
        if (
            value.isascii()
            and "\x00" not in value
            and (chars is None or len(value) <= chars)
            and (limit_bytes is None or len(value) <= limit_bytes)
        ):
            return value  # the common case, without encoding
        raw = value.replace("\x00", "").encode("utf-8", "replace")
        if limit_bytes is not None and len(raw) > limit_bytes:
            raw = raw[:limit_bytes]
        cleaned = raw.decode("utf-8", "ignore")  # "ignore": a character cut in half goes
        if chars is not None and len(cleaned) > chars:
            cleaned = cleaned[:chars]
        if cleaned != value:
            self.changed = True
        return cleaned

    def value(self, value: Any, max_bytes: int) -> Any:
        """A JSON value with every string (keys too) cleaned and cut to ``max_bytes``."""
        if isinstance(value, str):
            return self.text(value, max_bytes=max_bytes)
        if isinstance(value, dict):
            return {
                self.text(str(k), max_bytes=max_bytes): self.value(v, max_bytes)
                for k, v in value.items()
            }
        if isinstance(value, list | tuple):
            return [self.value(v, max_bytes) for v in value]
        if isinstance(value, float) and not math.isfinite(value):
            self.changed = True
            return None
        return value


def _strings(value: Any) -> int:
    if isinstance(value, str):
        return 1
    if isinstance(value, dict):
        return sum(1 + _strings(v) for v in value.values())
    if isinstance(value, list | tuple):
        return sum(_strings(v) for v in value)
    return 0


def _json_size(value: Any, what: str) -> int:
    try:
        return len(orjson.dumps(value, option=_JSON_OPTIONS))
    except (TypeError, orjson.JSONEncodeError) as exc:
        raise DataValidationError(f"{what} is not JSON-serialisable ({exc})", column=what) from None


def _clip_input(cleaner: _Cleaner, value: Any) -> Any:
    """``value`` cleaned and, when its JSON is over the cap, its strings cut to fair shares
    of it (a structure still over the cap is kept as the start of its JSON text)."""
    cap = cleaner.max_bytes
    cleaned = cleaner.value(value, cap)
    if _json_size(cleaned, "input") <= cap:
        return cleaned
    cleaner.changed = True
    share = max(1, cap // max(1, _strings(cleaned)) - 8)  # 8: quotes, commas, a key's colon
    fair = cleaner.value(cleaned, share)
    if _json_size(fair, "input") <= cap:
        return fair
    text = orjson.dumps(cleaned, option=_JSON_OPTIONS)[:cap]
    return text.decode("utf-8", "ignore")


def _fits(value: Any, chars: int) -> bool:
    return value is None or (
        type(value) is str and value.isascii() and "\x00" not in value and len(value) <= chars
    )


def _is_clean(record: TrafficRecord, max_bytes: int) -> bool:
    """Whether ``record`` needs no cleaning (ASCII strings only: others take the long way)."""
    if not all(_fits(getattr(record, name), n) for name, n in TRAFFIC_LENGTHS.items()):
        return False
    if not all(_fits(getattr(record, name), max_bytes) for name in _TEXT_FIELDS):
        return False
    if not record.model.strip() or not record.route.strip():
        return False
    try:
        raw = orjson.dumps(record.input, option=_JSON_OPTIONS)
    except (TypeError, orjson.JSONEncodeError):  # e.g. a lone surrogate: cleaned below
        return False
    return len(raw) <= max_bytes and b"\\u0000" not in raw


def clean_traffic(
    record: TrafficRecord, *, max_input_bytes: int = DEFAULT_MAX_INPUT_BYTES
) -> TrafficRecord:
    """``record`` made storable: strings cleaned and cut to their columns, the input clipped.

    Raises :class:`~niche.errors.DataValidationError` only for an input that is not JSON.

        >>> clean_traffic(record, max_input_bytes=65_536).cleaned
        False
    """
    if max_input_bytes < 1:
        raise DataValidationError(
            f"max_input_bytes must be at least 1, got {max_input_bytes!r}", column="input"
        )
    if _is_clean(record, max_input_bytes):
        return record  # the common case: no copy, nothing encoded twice
    cleaner = _Cleaner(max_input_bytes)
    changes: dict[str, Any] = {
        name: cleaner.text(getattr(record, name), chars=length)
        for name, length in TRAFFIC_LENGTHS.items()
    }
    for name in _TEXT_FIELDS:
        changes[name] = cleaner.text(getattr(record, name))
    if not isinstance(changes["model"], str) or not changes["model"].strip():
        cleaner.changed = True
        changes["model"] = BLANK_MODEL
    if not isinstance(changes["route"], str) or not changes["route"].strip():
        cleaner.changed = True
        changes["route"] = BLANK_MODEL
    try:
        size = len(orjson.dumps(record.input, option=_JSON_OPTIONS))
    except (TypeError, orjson.JSONEncodeError):  # a lone surrogate: the size without it
        size = _json_size(_Cleaner(max_input_bytes).value(record.input, sys.maxsize), "input")
    changes["input"] = _clip_input(cleaner, record.input)
    clipped = size > max_input_bytes
    changes["input_bytes"] = size if clipped and record.input_bytes is None else record.input_bytes
    changes["cleaned"] = record.cleaned or cleaner.changed
    return dataclasses.replace(record, **changes)
