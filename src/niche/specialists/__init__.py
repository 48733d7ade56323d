"""Specialist kinds behind one contract: ``predict(inputs) -> Predictions`` (with usage).

>>> from niche.specialists import FitContext, get_kind
>>> spec = get_kind("text").fit(texts, labels, FitContext(encoder=encoder))
>>> spec.predict(["I lost my card"]).labels
['lost_or_stolen_card']

Kinds are plug-ins found through the entry-point group ``niche.specialist_kinds``
(:mod:`niche.specialists.kinds`); :func:`niche.testing.check_predictor` checks one.
"""

from niche.specialists.base import (
    INPUT_KINDS,
    InputKind,
    Predictions,
    Predictor,
    ProbabilityPredictor,
    Specialist,
    SpecialistKind,
    TextInputs,
    Usage,
    check_fit_arguments,
    check_labels,
    check_text_inputs,
)
from niche.specialists.context import FitContext, LoadContext
from niche.specialists.kinds import ENTRY_POINT_GROUP, available_kinds, get_kind, load_predictor
from niche.specialists.text import TextKind, TextSpecialist
from niche.specialists.zeroshot import ZeroShot, ZeroShotKind, humanise_label

__all__ = [
    "ENTRY_POINT_GROUP",
    "INPUT_KINDS",
    "FitContext",
    "InputKind",
    "LoadContext",
    "Predictions",
    "Predictor",
    "ProbabilityPredictor",
    "Specialist",
    "SpecialistKind",
    "TextInputs",
    "TextKind",
    "TextSpecialist",
    "Usage",
    "ZeroShot",
    "ZeroShotKind",
    "available_kinds",
    "check_fit_arguments",
    "check_labels",
    "check_text_inputs",
    "get_kind",
    "humanise_label",
    "load_predictor",
]
