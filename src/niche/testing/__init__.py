"""Conformance kits: the rules every specialist kind and every registry backend must keep.

>>> from niche.testing import check_predictor, check_registry_backend
>>> check_predictor(lambda: get_kind("text").load(path, context), texts, context=context)
>>> check_registry_backend("postgresql+psycopg://niche@localhost/niche")

A plug-in's own test suite runs :func:`check_predictor` on its kind the way niche runs it on
``text`` and ``zero-shot``; each broken rule raises a :class:`PredictorCheckError` naming it.
:func:`check_registry_backend` does the same for a database URL (SQLite and PostgreSQL here).
"""

from niche.testing._predictor import check_predictor
from niche.testing._registry import check_registry_backend
from niche.testing._rules import SAMPLE_INPUTS, PredictorCheckError, Rule

__all__ = [
    "SAMPLE_INPUTS",
    "PredictorCheckError",
    "Rule",
    "check_predictor",
    "check_registry_backend",
]
