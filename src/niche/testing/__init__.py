"""Conformance kits: the rules every specialist kind must keep, as one call.

>>> from niche.testing import check_predictor
>>> check_predictor(lambda: get_kind("text").load(path, context), texts, context=context)

A plug-in's own test suite runs :func:`check_predictor` on its kind the way niche runs it on
``text`` and ``zero-shot``; each broken rule raises a :class:`PredictorCheckError` naming it.
"""

from niche.testing._predictor import check_predictor
from niche.testing._rules import SAMPLE_INPUTS, PredictorCheckError, Rule

__all__ = ["SAMPLE_INPUTS", "PredictorCheckError", "Rule", "check_predictor"]
