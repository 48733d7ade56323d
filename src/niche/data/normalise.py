r"""Text normalisation shared by loading and curation.

>>> from niche.data import normalise_text
>>> normalise_text("  \uff28ello\u200b   world\t\n")
'Hello world'
"""

from __future__ import annotations

import unicodedata

__all__ = ["normalise_text"]

# Invisible format characters that only change rendering (zero-width spaces and joiners, soft
# hyphen, bidi marks and isolates, BOM); they make otherwise identical texts differ.
_INVISIBLE = [
    0x00AD,
    0x180E,
    0xFEFF,
    *range(0x200B, 0x2010),
    *range(0x202A, 0x202F),
    *range(0x2060, 0x2065),
    *range(0x2066, 0x206A),
]
# Control characters go; whitespace controls (tab, newline, ...) stay so that split() turns
# them into word boundaries.
_CONTROLS = [cp for cp in [*range(0x20), *range(0x7F, 0xA0)] if not chr(cp).isspace()]
_DELETE: dict[int, None] = dict.fromkeys(_INVISIBLE + _CONTROLS)


def normalise_text(text: str) -> str:
    r"""Return ``text`` in the canonical form niche compares and trains on.

    Removes control and zero-width characters, applies Unicode NFKC, collapses every run of
    whitespace to one space and strips both ends. Idempotent.

        >>> normalise_text("\ufb01ne\u00a0\u00a0print ")
        'fine print'
    """
    cleaned = unicodedata.normalize("NFKC", text.translate(_DELETE))
    return " ".join(cleaned.split())
