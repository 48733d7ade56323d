"""Text specialist: frozen sentence encoder + calibrated multinomial logistic-regression head.

    >>> spec = TextSpecialist(encoder).fit(texts, labels)
    >>> spec.predict(["I lost my card"]).labels
    ['lost_or_stolen_card']
    >>> spec.save("models/banking77")   # head.safetensors + config.json, never pickle

Confidences are calibrated by temperature scaling on a held-out slice of the training rows.
Without an explicit ``c``, the head's regularisation (and class weighting, for a skewed label
set) is chosen by cross-validation on the training rows, scored on ``metric``
(:mod:`niche.specialists.head_selection`); the choice is saved with the head.
:class:`TextKind` is the ``text`` kind that fits and loads it (``get_kind("text")``).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np

from niche.encoders import Encoder
from niche.errors import ArtifactError, ConfigurationError, NotFittedError, ValidationError
from niche.progress import NO_PROGRESS, Progress
from niche.specialists.base import (
    Predictor,
    ProbabilityPredictor,
    SpecialistKind,
    TextInputs,
    check_fit_arguments,
)
from niche.specialists.context import Clock, FitContext, LoadContext
from niche.specialists.head_selection import (
    HeadChoice,
    choose_head,
    one_blas_thread,
    search_identity,
)
from niche.specialists.holdout import stratified_holdout
from niche.specialists.saving import CONFIG_FILE, read_config, staged_directory, write_config

__all__ = ["TextKind", "TextSpecialist", "fit_temperature", "softmax"]

HEAD_FILE = "head.safetensors"
FORMAT_VERSION = 1


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax, stable for large logits."""
    shifted: np.ndarray = logits - logits.max(axis=1, keepdims=True)
    np.exp(shifted, out=shifted)
    shifted /= shifted.sum(axis=1, keepdims=True)
    return shifted


def fit_temperature(logits: np.ndarray, targets: np.ndarray) -> float:
    """The temperature T minimising the negative log-likelihood of ``softmax(logits / T)``
    against smoothed targets.

    Temperature scaling (Guo et al. 2017) keeps the argmax, so accuracy is unchanged while the
    confidences become honest enough for a cascade threshold. The targets are Platt's (1999):
    the true label gets ``(n + 1) / (n + 2)`` of the mass and the others share the rest, for
    ``n`` calibration rows. With hard targets a slice the head classifies perfectly (a small
    one, an easy task) drives T to its lower bound and every answer, even to a text unlike
    any seen, to confidence 1 — nothing would cascade; the smoothed ones converge to the
    plain fit as the slice grows.
    """
    from scipy.optimize import minimize_scalar

    n, k = logits.shape
    rows = np.arange(len(targets))
    true_mass = (n + 1) / (n + 2)
    smoothed = np.full(logits.shape, (1.0 - true_mass) / max(k - 1, 1))
    smoothed[rows, targets] = true_mass

    def nll(log_t: float) -> float:
        scaled = logits / np.exp(log_t)
        scaled = scaled - scaled.max(axis=1, keepdims=True)
        log_probs = scaled - np.log(np.exp(scaled).sum(axis=1, keepdims=True))
        return float(-np.mean((smoothed * log_probs).sum(axis=1)))

    result = minimize_scalar(nll, bounds=(np.log(0.01), np.log(100.0)), method="bounded")
    return float(np.exp(result.x))


class TextSpecialist(ProbabilityPredictor):
    """A text classifier: ``encoder`` embeddings → logistic regression → calibrated softmax.

    Parameters are stored as given; :meth:`fit` or :meth:`load` does the work. ``c`` is the
    inverse regularisation, ``None`` to choose it (and ``class_weight``) by cross-validation
    on ``metric`` (``accuracy`` or ``macro_f1``). Learned state ends in ``_``: ``coef_``
    (n_labels, dim), ``intercept_``, ``label_set_``, ``temperature_``, ``head_`` (the
    :class:`~niche.specialists.head_selection.HeadChoice`). ``clock`` times each
    :meth:`predict`, recorded as the predictions' usage.
    """

    kind = "text"

    def __init__(
        self,
        encoder: Encoder,
        *,
        c: float | None = 10.0,
        class_weight: str | None = None,
        metric: str = "accuracy",
        max_iter: int = 2000,
        calibration_size: float = 0.1,
        seed: int = 0,
        clock: Clock = time.perf_counter,
    ) -> None:
        self.encoder = encoder
        self.c = c
        self.class_weight = class_weight
        self.metric = metric
        self.max_iter = max_iter
        self.calibration_size = calibration_size
        self.seed = seed
        self.clock = clock

    def get_params(self) -> dict[str, Any]:
        """The constructor parameters (without the encoder), as recorded in lineage."""
        return {
            "c": self.c,
            "class_weight": self.class_weight,
            "metric": self.metric,
            "max_iter": self.max_iter,
            "calibration_size": self.calibration_size,
            "seed": self.seed,
        }

    # -- fitting -------------------------------------------------------------------------

    def fit(
        self,
        texts: Sequence[str],
        labels: Sequence[str],
        *,
        embeddings: np.ndarray | None = None,
        progress: Progress = NO_PROGRESS,
    ) -> TextSpecialist:
        """Embed ``texts`` and fit the head; calibrate the temperature on a held-out slice.

        Without ``c``, C and class weighting are first chosen by cross-validation on every
        row. The head is fitted on the rows outside the calibration slice, the temperature on
        the slice, then the head is refitted on every row (the temperature carries over).
        """
        if len(texts) != len(labels):
            raise ValueError(f"{len(texts)} texts but {len(labels)} labels")
        label_set = sorted(set(labels))
        if len(label_set) < 2:
            raise ConfigurationError(
                f"a text specialist needs at least 2 labels, got {label_set!r}"
            )
        if embeddings is None:
            with progress.task("embedding training texts", total=len(texts)) as advance:
                embeddings = self.encoder.encode(texts, progress=advance)
        index = {label: i for i, label in enumerate(label_set)}
        targets = np.fromiter((index[label] for label in labels), dtype=np.int64, count=len(labels))

        with one_blas_thread():
            return self._fit_head(embeddings, targets, label_set, progress)

    def _fit_head(
        self,
        embeddings: np.ndarray,
        targets: np.ndarray,
        label_set: list[str],
        progress: Progress,
    ) -> TextSpecialist:
        if self.c is None:
            with progress.task("choosing the head by cross-validation", total=None):
                choice = choose_head(
                    embeddings, targets, metric=self.metric, seed=self.seed, max_iter=self.max_iter
                )
        else:
            choice = HeadChoice(c=float(self.c), class_weight=self.class_weight)

        with progress.task("fitting the head", total=2) as advance:
            head = self._new_head(choice)
            fit_rows, calib_rows = self._calibration_split(targets)
            temperature = 1.0
            if len(calib_rows) and len(set(targets[fit_rows].tolist())) == len(label_set):
                head.fit(embeddings[fit_rows], targets[fit_rows])
                coef, intercept = self._expand_binary(head.coef_, head.intercept_)
                logits = embeddings[calib_rows] @ coef.T + intercept
                temperature = fit_temperature(logits, targets[calib_rows])
            advance(1)
            # Warm-started from the fit above, the refit on every row takes few iterations.
            head.fit(embeddings, targets)
            coef, intercept = self._expand_binary(head.coef_, head.intercept_)
            advance(1)

        # C order: sklearn's coef_ can be Fortran-ordered, and safetensors writes raw bytes.
        self.coef_ = np.ascontiguousarray(coef, dtype=np.float32)
        self.intercept_ = np.ascontiguousarray(intercept, dtype=np.float32)
        self.label_set_ = label_set
        self.temperature_ = temperature
        self.head_ = choice
        self.encoder_id_ = self.encoder.id
        return self

    def _calibration_split(self, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Stratified hold-out: a ``calibration_size`` share of each label with ≥ 3 rows."""
        return stratified_holdout(targets, self.calibration_size, seed=self.seed)

    def _new_head(self, choice: HeadChoice) -> Any:
        from sklearn.linear_model import LogisticRegression

        return LogisticRegression(
            C=choice.c,
            class_weight=choice.class_weight,
            max_iter=self.max_iter,
            random_state=self.seed,
            warm_start=True,
        )

    @staticmethod
    def _expand_binary(coef: np.ndarray, intercept: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        coef = np.asarray(coef, dtype=np.float64)
        intercept = np.asarray(intercept, dtype=np.float64)
        if coef.shape[0] == 1:
            # sklearn stores one row for two classes: expand so softmax sees both.
            coef = np.vstack([-coef / 2, coef / 2])
            intercept = np.array([-intercept[0] / 2, intercept[0] / 2])
        return coef, intercept

    # -- predicting ----------------------------------------------------------------------

    @property
    def label_set(self) -> list[str]:
        self._check_fitted()
        return list(self.label_set_)

    def _check_fitted(self) -> None:
        if not hasattr(self, "coef_"):
            raise NotFittedError(
                "this TextSpecialist is not fitted yet: call fit(texts, labels) or "
                "TextSpecialist.load(directory) first"
            )

    def predict_proba_embeddings(self, embeddings: np.ndarray) -> np.ndarray:
        """Calibrated probabilities (n, n_labels) for precomputed embeddings."""
        self._check_fitted()
        logits = embeddings @ self.coef_.T + self.intercept_
        return softmax(logits.astype(np.float64) / self.temperature_)

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        """Calibrated probabilities (n, n_labels) over :attr:`label_set`."""
        self._check_fitted()
        return self.predict_proba_embeddings(self.encoder.encode(texts))

    # -- artifacts -----------------------------------------------------------------------

    def config(self) -> dict[str, Any]:
        """The JSON config saved next to the weights."""
        self._check_fitted()
        return {
            "format_version": FORMAT_VERSION,
            "kind": self.kind,
            "encoder_id": self.encoder_id_,
            "labels": list(self.label_set_),
            "temperature": self.temperature_,
            "params": self.get_params(),
            "head": self.head_.to_dict(),
        }

    def save(self, directory: str | Path) -> Path:
        """Write ``head.safetensors`` + ``config.json`` into ``directory`` atomically."""
        from safetensors.numpy import save_file

        self._check_fitted()
        target = Path(directory)
        with staged_directory(target) as staging:
            # No safetensors metadata: its header order is not stable, and the bytes must be,
            # since model ids are digests of them. config.json carries kind and format.
            save_file({"coef": self.coef_, "intercept": self.intercept_}, str(staging / HEAD_FILE))
            write_config(staging, self.config())
        return target

    @classmethod
    def load(
        cls, directory: str | Path, encoder: Encoder, *, clock: Clock = time.perf_counter
    ) -> TextSpecialist:
        """Load a saved specialist; ``encoder`` must be the one it was trained with."""
        from safetensors import SafetensorError
        from safetensors.numpy import load_file

        directory = Path(directory)
        head_path = directory / HEAD_FILE
        for path in (directory / CONFIG_FILE, head_path):
            if not path.is_file():
                raise ArtifactError(f"{path}: missing; not a saved text specialist", path=path)
        config = read_config(directory, kind=cls.kind, format_version=FORMAT_VERSION)
        if config["encoder_id"] != encoder.id:
            raise ArtifactError(
                f"{directory}: trained with encoder {config['encoder_id']!r} but "
                f"{encoder.id!r} was given",
                path=directory,
            )
        try:
            tensors = load_file(str(head_path))
        except (SafetensorError, OSError) as exc:
            raise ArtifactError(f"{head_path}: unreadable weights ({exc})", path=head_path) from exc
        spec = cls(encoder, **config["params"], clock=clock)
        spec.coef_ = tensors["coef"]
        spec.intercept_ = tensors["intercept"]
        spec.label_set_ = list(config["labels"])
        spec.temperature_ = float(config["temperature"])
        spec.encoder_id_ = config["encoder_id"]
        head = config.get("head")
        # An artifact saved before heads were chosen by CV: its head had the params' C.
        spec.head_ = (
            HeadChoice.from_dict(head)
            if isinstance(head, dict)
            else HeadChoice(c=float(spec.c if spec.c is not None else 10.0))
        )
        if spec.coef_.shape != (len(spec.label_set_), encoder.dim):
            raise ArtifactError(
                f"{head_path}: weights of shape {spec.coef_.shape} do not match "
                f"{len(spec.label_set_)} labels x {encoder.dim} dimensions",
                path=head_path,
            )
        return spec


class TextKind(SpecialistKind):
    """The ``text`` kind: a frozen encoder + a calibrated logistic-regression head.

    Options: ``c`` (inverse regularisation; ``None``, the default, chooses it and the class
    weighting by cross-validation on the context's metric), ``class_weight`` (``None`` or
    ``"balanced"``, with an explicit ``c``), ``max_iter``, ``calibration_size``.

        >>> spec = get_kind("text").fit(texts, labels, FitContext(encoder=encoder))
        >>> spec.head_.chosen_by
        'cross-validation'
    """

    name = "text"
    input_kind = "text"
    options = MappingProxyType(
        {"c": None, "class_weight": None, "max_iter": 2000, "calibration_size": 0.1}
    )

    def resolve_options(self, given: Mapping[str, Any]) -> dict[str, Any]:
        """The options with ``given`` applied, each checked (``c`` > 0 or None, …)."""
        options = super().resolve_options(given)
        c = options["c"]
        if c is not None:
            if isinstance(c, bool) or not isinstance(c, int | float) or not c > 0:
                raise ValidationError(
                    f"text kind option c must be a positive number or None, got {c!r}",
                    param="c",
                )
            options["c"] = float(c)
        if options["class_weight"] not in (None, "balanced"):
            raise ValidationError(
                "text kind option class_weight must be None or 'balanced', got "
                f"{options['class_weight']!r}",
                param="class_weight",
            )
        if options["class_weight"] is not None and c is None:
            raise ValidationError(
                "text kind option class_weight needs an explicit c (without one, both are "
                "chosen by cross-validation)",
                param="class_weight",
            )
        return options

    def fit(self, inputs: TextInputs, labels: Sequence[str], context: FitContext) -> TextSpecialist:
        """Fit a :class:`TextSpecialist` on the context's encoder with ``context.seed``,
        tuned for ``context.metric``."""
        checked = check_fit_arguments(self, inputs, labels)
        options = self.resolve_options(context.options)
        specialist = TextSpecialist(
            context.encoder,
            c=options["c"],
            class_weight=options["class_weight"],
            metric=context.metric,
            max_iter=int(options["max_iter"]),
            calibration_size=float(options["calibration_size"]),
            seed=context.seed,
            clock=context.clock,
        )
        return specialist.fit(inputs, checked, progress=context.progress)

    def fit_identity(self, context: FitContext) -> dict[str, Any]:
        """Everything but the rows that decides the head: options, metric, encoder, format."""
        return {
            "options": self.resolve_options(context.options),
            "metric": context.metric,
            "encoder_id": context.encoder.id,
            "format_version": FORMAT_VERSION,
            "head_selection": search_identity(),
        }

    def load(self, directory: Path, context: LoadContext) -> TextSpecialist:
        """The :class:`TextSpecialist` in ``directory``, on the encoder it was trained with
        (:meth:`LoadContext.encoder_for`: the shared one when the ids match)."""
        encoder = context.encoder
        config_path = Path(directory) / CONFIG_FILE
        if config_path.is_file():
            config = read_config(Path(directory), kind=self.name, format_version=FORMAT_VERSION)
            saved = config.get("encoder_id")
            if isinstance(saved, str):
                encoder = context.encoder_for(saved)
        return TextSpecialist.load(directory, encoder, clock=context.clock)

    def lineage(self, specialist: Predictor) -> dict[str, Any]:
        """The encoder, the parameters, the head's chosen C and class weighting (with their
        cross-validation scores) and the fitted temperature."""
        if not isinstance(specialist, TextSpecialist):
            raise TypeError(f"the text kind describes a TextSpecialist, not {specialist!r}")
        return {
            "encoder_id": specialist.encoder_id_,
            "params": specialist.get_params(),
            "head": specialist.head_.to_dict(),
            "temperature": specialist.temperature_,
        }
