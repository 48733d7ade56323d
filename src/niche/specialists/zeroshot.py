"""The built-in offline general model: zero-shot classification by label-name embeddings.

    >>> general = ZeroShot(["card_arrival", "lost_or_stolen_card"], encoder)
    >>> general.predict(["my card never came"]).labels
    ['card_arrival']

It is general-purpose (no training on the task): each label is represented by its humanised
name (``card_arrival`` → "card arrival") or a description, and a text gets the label whose
representation is nearest in cosine similarity. It lets every comparison run with no API key.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import numpy as np

from niche.encoders import Encoder
from niche.errors import ConfigurationError
from niche.specialists.base import Predictions
from niche.specialists.text import softmax

__all__ = ["ZeroShot", "humanise_label"]

_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")


def humanise_label(label: str) -> str:
    """``card_arrival`` → "card arrival"; ``cardArrival`` → "card arrival"; ``top-up`` kept."""
    text = _CAMEL.sub(" ", label).replace("_", " ").replace(".", " ")
    return " ".join(text.split()).lower()


class ZeroShot:
    """Zero-shot classifier over ``label_set`` using ``encoder``.

    ``descriptions`` maps some labels to a sentence describing them (used instead of the
    humanised name). ``temperature`` turns cosine similarities into probabilities; the
    confidences are not calibrated on the task — this model never sees its data.
    """

    kind = "zero-shot"

    def __init__(
        self,
        label_set: Sequence[str],
        encoder: Encoder,
        *,
        descriptions: Mapping[str, str] | None = None,
        temperature: float = 0.05,
    ) -> None:
        self.labels = list(label_set)
        self.encoder = encoder
        self.descriptions = dict(descriptions or {})
        self.temperature = temperature

    @property
    def label_set(self) -> list[str]:
        return list(self.labels)

    def prompts(self) -> list[str]:
        """The text each label is represented by."""
        return [self.descriptions.get(label) or humanise_label(label) for label in self.labels]

    def _label_matrix(self) -> np.ndarray:
        if not hasattr(self, "label_embeddings_"):
            if len(self.labels) < 2:
                raise ConfigurationError(
                    f"zero-shot classification needs at least 2 labels, got {self.labels!r}"
                )
            self.label_embeddings_ = self.encoder.encode(self.prompts())
        return self.label_embeddings_

    def predict_proba_embeddings(self, embeddings: np.ndarray) -> np.ndarray:
        """Probabilities (n, n_labels) for precomputed, L2-normalised text embeddings."""
        similarities = embeddings.astype(np.float64) @ self._label_matrix().T.astype(np.float64)
        return softmax(similarities / self.temperature)

    def predict(self, texts: Sequence[str]) -> Predictions:
        """The nearest label for each text, with its softmax probability as confidence."""
        label_matrix = self._label_matrix()
        probabilities = (
            self.predict_proba_embeddings(self.encoder.encode(texts))
            if len(texts)
            else np.zeros((0, len(label_matrix)))
        )
        return Predictions.from_probabilities(probabilities, self.labels)
