"""The contracts every specialist kind and the general baseline honour.

>>> preds = predictor.predict(["where is my card?"])
>>> preds.labels[0], float(preds.confidences[0]), preds.usage.compute_s
('card_arrival', 0.93, 0.004)

A *predictor* answers a batch of inputs (:class:`Predictor`); a *specialist* is a predictor its
kind can store and load again (:class:`Specialist`); a *kind* fits and loads specialists of one
family (:class:`SpecialistKind`, registered through entry points, see
:mod:`niche.specialists.kinds`). The inputs a predictor takes are typed by its kind's input
kind: a sequence of ``str`` for ``text`` (:data:`TextInputs`); ``tabular`` and ``chat`` next.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol, runtime_checkable

import numpy as np

from niche.errors import ValidationError

if TYPE_CHECKING:
    # Annotations only: the contexts import settings and encoders, this module stays at the bottom.
    from niche.specialists.context import FitContext, LoadContext

__all__ = [
    "INPUT_KINDS",
    "InputKind",
    "Predictions",
    "Predictor",
    "ProbabilityPredictor",
    "Specialist",
    "SpecialistKind",
    "TextInputs",
    "Usage",
    "check_fit_arguments",
    "check_labels",
    "check_text_inputs",
]

InputKind = Literal["text", "tabular", "chat"]
"""What a task's inputs are: ``text`` now; ``tabular`` and ``chat`` are the next kinds."""

INPUT_KINDS: tuple[InputKind, ...] = ("text", "tabular", "chat")

TextInputs = Sequence[str]
"""The inputs of a ``text`` predictor: a sequence of ``str`` (a ``list[str]``, a tuple…)."""


@dataclass(frozen=True)
class Usage:
    """What a batch of predictions consumed, recorded by the predictor that made them.

    ``compute_s`` is the seconds the predictor spent computing (its own clock); token counts
    are for a remote model (None: not a token-priced model). Cost and energy are pure
    functions of it (:func:`niche.evaluation.cost_usd`, :func:`niche.evaluation.energy_wh`).

        >>> Usage(compute_s=0.25) + Usage(compute_s=0.5, input_tokens=12)
        Usage(compute_s=0.75, input_tokens=12, output_tokens=None)
    """

    compute_s: float = 0.0
    input_tokens: int | None = None
    output_tokens: int | None = None

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            compute_s=self.compute_s + other.compute_s,
            input_tokens=_add_tokens(self.input_tokens, other.input_tokens),
            output_tokens=_add_tokens(self.output_tokens, other.output_tokens),
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form: ``{"compute_s": …, "input_tokens": …, "output_tokens": …}``."""
        return asdict(self)


def _add_tokens(a: int | None, b: int | None) -> int | None:
    if a is None and b is None:
        return None
    return (a or 0) + (b or 0)


@dataclass(frozen=True)
class Predictions:
    """Labels and confidences for a batch, in input order, and what making them cost.

    ``confidences[i]`` is the predicted probability of ``labels[i]`` (in [0, 1]).
    ``probabilities`` is the full (n, n_labels) matrix over ``label_set`` when the predictor
    has one. ``usage`` is set by the predictor that made them (None: it records none).
    """

    labels: list[str]
    confidences: np.ndarray
    label_set: list[str] = field(default_factory=list)
    probabilities: np.ndarray | None = None
    usage: Usage | None = None

    def __len__(self) -> int:
        return len(self.labels)

    @classmethod
    def from_probabilities(
        cls, probabilities: np.ndarray, label_set: list[str], *, usage: Usage | None = None
    ) -> Predictions:
        """The most probable label of each row of ``probabilities`` (n, len(label_set))."""
        best = probabilities.argmax(axis=1) if len(probabilities) else np.zeros(0, np.int64)
        return cls(
            labels=[label_set[i] for i in best],
            confidences=probabilities[np.arange(len(best)), best],
            label_set=list(label_set),
            probabilities=probabilities,
            usage=usage,
        )


@runtime_checkable
class Predictor(Protocol):
    """``predict(inputs) -> Predictions``; ``kind`` names the predictor family.

    >>> predictor.predict(["where is my card?", "I lost my PIN"]).labels
    ['card_arrival', 'change_pin']
    """

    kind: str

    @property
    def label_set(self) -> list[str]: ...

    def predict(self, inputs: TextInputs) -> Predictions: ...


class ProbabilityPredictor:
    """A text predictor's :meth:`predict` built on its ``predict_proba``.

    A subclass gives ``kind``, ``clock`` (seconds, e.g. ``time.perf_counter``), ``label_set``
    and ``predict_proba(texts) -> (n, len(label_set))`` calibrated probabilities; ``predict``
    checks the inputs, times ``predict_proba`` with ``clock`` (the predictions' usage) and takes
    each row's most probable label.
    """

    kind: str
    clock: Callable[[], float]

    @property
    def label_set(self) -> list[str]:
        raise NotImplementedError

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        raise NotImplementedError

    def predict(self, inputs: TextInputs) -> Predictions:
        """Labels and calibrated confidences for ``inputs`` (texts), with their compute time."""
        texts = check_text_inputs(self.kind, inputs)
        started = self.clock()
        probabilities = self.predict_proba(texts)
        usage = Usage(compute_s=self.clock() - started)
        return Predictions.from_probabilities(probabilities, self.label_set, usage=usage)


@runtime_checkable
class Specialist(Predictor, Protocol):
    """A :class:`Predictor` its kind can store: ``save(directory)``, then ``kind.load``.

    >>> get_kind(spec.kind).load(spec.save("models/v1"), LoadContext(encoder=encoder))
    """

    def save(self, directory: str | Path) -> Path: ...


class SpecialistKind(ABC):
    """One family of specialists: how to fit one, and how to load a saved one.

    A plug-in subclasses this, sets ``name`` and ``input_kind``, implements :meth:`fit` and
    :meth:`load`, and declares the class under the entry-point group
    ``niche.specialist_kinds`` (see :mod:`niche.specialists.kinds`). ``options`` are the
    kind's fit options with their defaults; an unknown option is refused at once.

        >>> class Keywords(SpecialistKind):
        ...     name, input_kind = "keywords", "text"
        ...     def fit(self, inputs, labels, context): ...
        ...     def load(self, directory, context): ...
    """

    name: ClassVar[str]
    input_kind: ClassVar[InputKind] = "text"
    options: ClassVar[Mapping[str, Any]] = MappingProxyType({})

    @abstractmethod
    def fit(self, inputs: TextInputs, labels: Sequence[str], context: FitContext) -> Specialist:
        """A specialist fitted on ``inputs`` and their ``labels`` (``context.options`` apply)."""

    @abstractmethod
    def load(self, directory: Path, context: LoadContext) -> Specialist:
        """The specialist saved in ``directory`` by its ``save``."""

    def lineage(self, specialist: Predictor) -> dict[str, Any]:
        """What to record about a fitted specialist beyond the dataset (encoder, parameters)."""
        return {}

    def fit_identity(self, context: FitContext) -> dict[str, Any] | None:
        """Everything besides the training rows that decides what :meth:`fit` returns (its
        resolved options, the encoder's id, the metric…), as JSON-ready values; or None
        (the default): this kind's fits are not cached.

        Two fits on the same rows with equal identities must save the same bytes: then
        :func:`niche.training.train` reuses a cached fit (``NICHE_HEAD_CACHE``) instead.
        """
        return None

    def check_inputs(self, inputs: object) -> TextInputs:
        """``inputs`` unchanged if this kind takes them; :class:`ValidationError` otherwise."""
        if self.input_kind == "text":
            return check_text_inputs(self.name, inputs)
        raise NotImplementedError(
            f"kind {self.name!r}: override check_inputs for {self.input_kind}"
        )

    def resolve_options(self, given: Mapping[str, Any]) -> dict[str, Any]:
        """``options`` updated with ``given``; an option this kind does not have is refused."""
        unknown = sorted(set(given) - set(self.options))
        if unknown:
            known = ", ".join(sorted(self.options)) or "none"
            raise ValidationError(
                f"specialist kind {self.name!r} has no option {unknown[0]!r} (options: {known})",
                param=unknown[0],
            )
        return {**self.options, **given}

    def __repr__(self) -> str:
        return f"<specialist kind {self.name!r} ({self.input_kind} inputs)>"


def check_text_inputs(kind: str, inputs: object) -> TextInputs:
    """``inputs`` unchanged if it is a sequence of ``str``; :class:`ValidationError` otherwise.

    A bare string is refused: iterating it would predict one character per row.

        >>> check_text_inputs("text", ["where is my card?"])
        ['where is my card?']
    """
    expected = f"kind {kind!r} takes text inputs (a sequence of str)"
    if isinstance(inputs, str | bytes):
        raise ValidationError(
            f"{expected}, not a single {type(inputs).__name__}: pass [text]", param="inputs"
        )
    if not isinstance(inputs, Sequence):
        raise ValidationError(f"{expected}, not {type(inputs).__name__}", param="inputs")
    for i, text in enumerate(inputs):
        if not isinstance(text, str):
            raise ValidationError(
                f"{expected}: inputs[{i}] is {type(text).__name__}", param=f"inputs[{i}]"
            )
    return inputs


def check_labels(kind: str, labels: object) -> list[str]:
    """``labels`` as a list, if it is a sequence of ``str``; :class:`ValidationError` otherwise.

    >>> check_labels("text", ("spam", "ham"))
    ['spam', 'ham']
    """
    if isinstance(labels, str | bytes) or not isinstance(labels, Sequence):
        raise ValidationError(f"kind {kind!r}: labels must be a sequence of str", param="labels")
    for i, label in enumerate(labels):
        if not isinstance(label, str):
            raise ValidationError(
                f"kind {kind!r}: labels[{i}] is {type(label).__name__}, not str",
                param=f"labels[{i}]",
            )
    return list(labels)


def check_fit_arguments(kind: SpecialistKind, inputs: object, labels: object) -> list[str]:
    """The labels as a list, after checking ``inputs`` and ``labels`` match one to one.

    >>> check_fit_arguments(get_kind("text"), ["win a prize"], ["spam"])
    ['spam']
    """
    checked = kind.check_inputs(inputs)
    label_list = check_labels(kind.name, labels)
    if len(checked) != len(label_list):
        raise ValidationError(
            f"kind {kind.name!r}: {len(checked)} inputs but {len(label_list)} labels",
            param="labels",
        )
    return label_list
