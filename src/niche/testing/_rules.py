"""The rules of :func:`~niche.testing.check_predictor`, its error, and its sample inputs."""

from __future__ import annotations

import enum
from typing import Any

__all__ = ["SAMPLE_INPUTS", "WRONG_INPUTS", "PredictorCheckError", "Rule"]


class Rule(enum.StrEnum):
    """The rules :func:`check_predictor` checks, in the order it checks them."""

    PROTOCOL = "is a Predictor"
    REGISTERED = "kind registered"
    INPUT_TYPES = "rejects wrong inputs"
    ONE_PER_INPUT = "one prediction per input"
    EMPTY = "empty input gives empty predictions"
    PROBABILITIES = "confidences are the probabilities of the labels"
    USAGE = "usage recorded"
    DETERMINISTIC = "deterministic"
    IN_ORDER = "predictions in input order"
    ALONE = "deterministic alone as in a batch"
    SAVE_LOAD = "save, load, same predictions"
    THREADS = "safe from several threads"
    REBUILD = "rebuildable in another process"


class PredictorCheckError(AssertionError):
    """A predictor broke a rule: ``rule`` says which, the message says how.

    >>> err.rule, str(err)
    (<Rule.EMPTY: ...>, "kind 'short' breaks rule 'empty input gives ...': ...")
    """

    def __init__(self, rule: Rule, kind: str, detail: str) -> None:
        super().__init__(f"kind {kind!r} breaks rule {str(rule)!r}: {detail}")
        self.rule = rule
        self.kind = kind
        self.detail = detail


SAMPLE_INPUTS: dict[str, list[Any]] = {
    "text": [
        "where is my card? it still has not arrived",
        "I was charged twice for the same coffee",
        "WINNER!! Claim your free prize now, text CLAIM to 81010",
        "Are we still meeting for lunch at noon tomorrow?",
        "the exchange rate you gave me was wrong",
        "my top-up failed again",
        "Ça coûte combien pour envoyer de l'argent ?",
        "",
        "ok",
        "please cancel the transfer I made this morning to my landlord, I typed the wrong "
        "account number and the money has not arrived there either, what should I do now",
        "I lost my phone and my card",
        "thanks, that solved it!",
    ],
}
"""Inputs used when none are given, per input kind."""

# Wrong inputs per input kind, with how to describe each in a message.
WRONG_INPUTS: dict[str, list[tuple[str, Any]]] = {
    "text": [
        ("a single str", "a single string is not a batch"),
        ("a list holding an int", ["fine", 42]),
        ("None", None),
    ],
}
