"""The one contract every specialist kind and the general baseline honour.

>>> preds = predictor.predict(["where is my card?"])
>>> preds.labels[0], float(preds.confidences[0])
('card_arrival', 0.93)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

__all__ = ["Predictions", "Predictor"]


@dataclass(frozen=True)
class Predictions:
    """Labels and confidences for a batch, in input order.

    ``confidences[i]`` is the predicted probability of ``labels[i]`` (in [0, 1]).
    ``probabilities`` is the full (n, n_labels) matrix over ``label_set`` when the predictor
    has one.
    """

    labels: list[str]
    confidences: np.ndarray
    label_set: list[str] = field(default_factory=list)
    probabilities: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.labels)

    @classmethod
    def from_probabilities(cls, probabilities: np.ndarray, label_set: list[str]) -> Predictions:
        """The most probable label of each row of ``probabilities`` (n, len(label_set))."""
        best = probabilities.argmax(axis=1) if len(probabilities) else np.zeros(0, np.int64)
        return cls(
            labels=[label_set[i] for i in best],
            confidences=probabilities[np.arange(len(best)), best],
            label_set=list(label_set),
            probabilities=probabilities,
        )


@runtime_checkable
class Predictor(Protocol):
    """``predict(texts) -> Predictions``; ``kind`` names the predictor family."""

    kind: str

    @property
    def label_set(self) -> list[str]: ...

    def predict(self, texts: Sequence[str]) -> Predictions: ...
