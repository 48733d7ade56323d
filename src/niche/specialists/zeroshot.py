"""The built-in offline general model: zero-shot classification by label-name embeddings.

    >>> general = ZeroShot(["card_arrival", "lost_or_stolen_card"], encoder)
    >>> general.predict(["my card never came"]).labels
    ['card_arrival']

It is general-purpose (no training on the task): each label is represented by its humanised
name (``card_arrival`` → "card arrival") or a description, and a text gets the label whose
representation is nearest in cosine similarity. It lets every comparison run with no API key.
:class:`ZeroShotKind` is the ``zero-shot`` kind: its ``fit`` takes only the label set (and
label descriptions), and a saved one is a ``config.json``.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np

from niche.encoders import Encoder
from niche.errors import ArtifactError, ConfigurationError, ValidationError
from niche.specialists.base import (
    Predictions,
    Predictor,
    SpecialistKind,
    TextInputs,
    Usage,
    check_fit_arguments,
    check_labels,
    check_text_inputs,
)
from niche.specialists.context import Clock, FitContext, LoadContext
from niche.specialists.saving import read_config, save_config
from niche.specialists.text import softmax

__all__ = ["ZeroShot", "ZeroShotKind", "humanise_label"]

FORMAT_VERSION = 1

_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")


def humanise_label(label: str) -> str:
    """``card_arrival`` → "card arrival"; ``cardArrival`` → "card arrival"; ``top-up`` kept."""
    text = _CAMEL.sub(" ", label).replace("_", " ").replace(".", " ")
    return " ".join(text.split()).lower()


class ZeroShot:
    """Zero-shot classifier over ``label_set`` using ``encoder``.

    ``descriptions`` maps some labels to a sentence describing them (used instead of the
    humanised name). ``temperature`` turns cosine similarities into probabilities; the
    confidences are not calibrated on the task — this model never sees its data. ``clock``
    times each :meth:`predict`, recorded as the predictions' usage.
    """

    kind = "zero-shot"

    def __init__(
        self,
        label_set: Sequence[str],
        encoder: Encoder,
        *,
        descriptions: Mapping[str, str] | None = None,
        temperature: float = 0.05,
        clock: Clock = time.perf_counter,
    ) -> None:
        self.labels = list(label_set)
        self.encoder = encoder
        self.descriptions = dict(descriptions or {})
        self.temperature = temperature
        self.clock = clock
        # The label embeddings are computed on first use; threads may be predicting already.
        self._lock = threading.Lock()

    @property
    def label_set(self) -> list[str]:
        return list(self.labels)

    def prompts(self) -> list[str]:
        """The text each label is represented by."""
        return [self.descriptions.get(label) or humanise_label(label) for label in self.labels]

    def _label_matrix(self) -> np.ndarray:
        with self._lock:
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

    def predict(self, inputs: TextInputs) -> Predictions:
        """The nearest label for each text, with its softmax probability as confidence."""
        texts = check_text_inputs(self.kind, inputs)
        started = self.clock()
        label_matrix = self._label_matrix()
        probabilities = (
            self.predict_proba_embeddings(self.encoder.encode(texts))
            if len(texts)
            else np.zeros((0, len(label_matrix)))
        )
        usage = Usage(compute_s=self.clock() - started)
        return Predictions.from_probabilities(probabilities, self.labels, usage=usage)

    # -- artifacts -----------------------------------------------------------------------

    def config(self) -> dict[str, Any]:
        """The JSON config that is the whole saved model (no weights: labels and prompts)."""
        return {
            "format_version": FORMAT_VERSION,
            "kind": self.kind,
            "encoder_id": self.encoder.id,
            "labels": list(self.labels),
            "descriptions": dict(self.descriptions),
            "temperature": self.temperature,
        }

    def save(self, directory: str | Path) -> Path:
        """Write ``config.json`` into ``directory`` atomically."""
        return save_config(directory, self.config())

    @classmethod
    def load(
        cls, directory: str | Path, encoder: Encoder, *, clock: Clock = time.perf_counter
    ) -> ZeroShot:
        """Load a saved zero-shot model; ``encoder`` must be the one it was saved with."""
        directory = Path(directory)
        config = read_config(directory, kind=cls.kind, format_version=FORMAT_VERSION)
        if config.get("encoder_id") != encoder.id:
            raise ArtifactError(
                f"{directory}: saved with encoder {config.get('encoder_id')!r} but "
                f"{encoder.id!r} was given",
                path=directory,
            )
        try:
            return cls(
                config["labels"],
                encoder,
                descriptions=config["descriptions"],
                temperature=float(config["temperature"]),
                clock=clock,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ArtifactError(
                f"{directory}: config.json lacks a usable {exc}", path=directory
            ) from exc


class ZeroShotKind(SpecialistKind):
    """The ``zero-shot`` kind: the offline general model, built from the label set alone.

    ``fit`` reads only the labels (their first-seen order; ``inputs`` may be empty). Options:
    ``descriptions`` (label → sentence) and ``temperature``.

        >>> general = get_kind("zero-shot").fit([], task.labels, FitContext(encoder=encoder))
    """

    name = "zero-shot"
    input_kind = "text"
    options = MappingProxyType({"descriptions": None, "temperature": 0.05})

    def fit(self, inputs: TextInputs, labels: Sequence[str], context: FitContext) -> ZeroShot:
        """A :class:`ZeroShot` over the distinct ``labels``, on the context's encoder."""
        if len(inputs):
            label_list = check_fit_arguments(self, inputs, labels)
        else:
            label_list = check_labels(self.name, labels)
        options = self.resolve_options(context.options)
        label_set = list(dict.fromkeys(label_list))
        if len(label_set) < 2:
            raise ValidationError(
                f"kind 'zero-shot' needs at least 2 labels, got {label_set!r}", param="labels"
            )
        return ZeroShot(
            label_set,
            context.encoder,
            descriptions=options["descriptions"],
            temperature=float(options["temperature"]),
            clock=context.clock,
        )

    def load(self, directory: Path, context: LoadContext) -> ZeroShot:
        """The :class:`ZeroShot` saved in ``directory``, on the context's encoder."""
        return ZeroShot.load(directory, context.encoder, clock=context.clock)

    def lineage(self, specialist: Predictor) -> dict[str, Any]:
        """The encoder and the prompt settings."""
        if not isinstance(specialist, ZeroShot):
            raise TypeError(f"the zero-shot kind describes a ZeroShot, not {specialist!r}")
        return {
            "encoder_id": specialist.encoder.id,
            "params": {
                "descriptions": dict(specialist.descriptions),
                "temperature": specialist.temperature,
            },
        }
