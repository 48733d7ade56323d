"""Predictor kinds behind one contract: ``predict(texts) -> Predictions``.

>>> from niche.specialists import TextSpecialist, ZeroShot
"""

from niche.specialists.base import Predictions, Predictor
from niche.specialists.kinds import load_predictor
from niche.specialists.text import TextSpecialist
from niche.specialists.zeroshot import ZeroShot, humanise_label

__all__ = [
    "Predictions",
    "Predictor",
    "TextSpecialist",
    "ZeroShot",
    "humanise_label",
    "load_predictor",
]
