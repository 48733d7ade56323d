"""The one contract every text encoder honours.

>>> vectors = encoder.encode(["where is my card?", "I lost my PIN"])
>>> vectors.shape, vectors.dtype
((2, 384), dtype('float32'))
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable

import numpy as np

__all__ = ["Encoder", "ProgressCallback", "check_texts"]

ProgressCallback = Callable[[int], None]
"""Called with the number of texts just finished, e.g. ``bar.update``."""


@runtime_checkable
class Encoder(Protocol):
    """Texts in, L2-normalised float32 rows out, one per text, in input order.

    ``id`` names the model *and* the numerics that produce the vectors (two precisions of one
    model have two ids), so vectors stored under one id are never mixed with another's.

        >>> encoder.encode(["hello"], progress=bar.update).shape
        (1, 384)
    """

    @property
    def id(self) -> str: ...

    @property
    def dim(self) -> int: ...

    def encode(
        self, texts: Sequence[str], *, progress: ProgressCallback | None = None
    ) -> np.ndarray: ...


def check_texts(texts: Sequence[str]) -> Sequence[str]:
    """``texts`` unchanged if it is a sequence of ``str``; ``TypeError`` otherwise.

    A bare string is refused: iterating it would encode one character per row.
    """
    if isinstance(texts, str | bytes):
        raise TypeError("encode() takes a sequence of texts, not a single string: use [text]")
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"texts[{i}] is {type(text).__name__}, not str")
    return texts
