"""The two-stage text kind: a static-embedding first tier, the MiniLM text specialist second.

    >>> spec = get_kind("text-two-stage").fit(texts, labels, FitContext(settings, encoder=enc))
    >>> spec.threshold_, spec.validation_["coverage"]
    (0.62, 0.71)
    >>> spec.predict(["I lost my card"]).labels        # the static tier answered: confident
    ['lost_or_stolen_card']

Each tier is a calibrated logistic-regression head (:class:`~niche.specialists.TextSpecialist`)
over the same sorted label set: the first on the distilled static encoder
(:class:`~niche.encoders.static.StaticEncoder`, ~20,000 texts/s), the second on the shared
MiniLM encoder. ``predict`` answers a text from the static tier when that tier's confidence is
above the threshold, from MiniLM otherwise; the registry, the gate, the loop and the gateway
see one specialist. The static tier's vector of a text does not depend on its batch, so
neither does its route.

The threshold is chosen at fit time on a stratified validation slice of the training rows:
both tiers are fitted on the rest, and the threshold is the lowest at which the combined
accuracy on the slice is at most ``max_loss`` (0.005) below the MiniLM tier's alone; then both
tiers are refitted on every row. An explicit ``threshold`` option skips the choice
(0: every text to the static tier; 1: every text to MiniLM).

The artifact is self-contained: ``heads.safetensors`` (both heads), the static model the
static head was fitted on (``static.safetensors``, the float16 table, and
``static-tokenizer.json``, ~16 MB together) and ``config.json``, which records the static
model's id, fingerprint and each of its files' sha256. Loading verifies them (a corrupt file
is a :class:`~niche.errors.ChecksumMismatchError`) and needs neither the cache, nor a
distillation, nor torch: a specialist fitted on one machine serves on another.
"""

from __future__ import annotations

import hashlib
import threading
import time
import weakref
from collections.abc import MutableMapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import numpy as np

from niche.encoders import Encoder
from niche.errors import (
    ArtifactError,
    ChecksumMismatchError,
    ConfigurationError,
    EncoderError,
    ValidationError,
)
from niche.progress import Progress
from niche.specialists.base import (
    Predictor,
    ProbabilityPredictor,
    SpecialistKind,
    TextInputs,
    check_fit_arguments,
)
from niche.specialists.context import Clock, FitContext, LoadContext
from niche.specialists.head_selection import DEFAULT_C, HeadChoice, search_identity
from niche.specialists.saving import CONFIG_FILE, read_config, staged_directory, write_config
from niche.specialists.text import TextSpecialist
from niche.specialists.tiers import choose_threshold, validation_split

if TYPE_CHECKING:
    from niche.encoders.static import StaticEncoder

__all__ = ["TwoStageKind", "TwoStageSpecialist"]

KIND = "text-two-stage"
HEADS_FILE = "heads.safetensors"
FORMAT_VERSION = 1
TIERS = ("static", "minilm")
# The static model's files in the artifact -> their names in the static model's manifest.
STATIC_ARTIFACT_FILES = MappingProxyType(
    {"static.safetensors": "embeddings.safetensors", "static-tokenizer.json": "tokenizer.json"}
)


class TwoStageSpecialist(ProbabilityPredictor):
    """Two :class:`TextSpecialist` tiers and the threshold between them.

    ``static`` runs on the static encoder, ``minilm`` on the shared MiniLM encoder; both are
    fitted (or loaded) already, over the same label set. ``clock`` times each :meth:`predict`
    (both tiers), recorded as the predictions' usage.
    """

    kind = KIND

    def __init__(
        self,
        static: TextSpecialist,
        minilm: TextSpecialist,
        *,
        threshold: float,
        static_fingerprint: str,
        params: dict[str, Any],
        validation: dict[str, Any] | None = None,
        clock: Clock = time.perf_counter,
    ) -> None:
        if static.label_set != minilm.label_set:
            raise ConfigurationError("the two tiers of a two-stage specialist differ in labels")
        self.static = static
        self.minilm = minilm
        self.threshold_ = float(threshold)
        self.static_fingerprint_ = static_fingerprint
        self.params = dict(params)
        self.validation_ = dict(validation or {})
        self.clock = clock

    @property
    def label_set(self) -> list[str]:
        return self.static.label_set

    def route(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """The static tier's probabilities for ``texts`` and which rows it answers."""
        probabilities = self.static.predict_proba(texts)
        confident = (
            probabilities.max(axis=1) > self.threshold_ if len(texts) else np.zeros(0, dtype=bool)
        )
        return probabilities, confident

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        """Probabilities (n, n_labels) over :attr:`label_set`, each row from its tier."""
        probabilities, confident = self.route(texts)
        rest = np.flatnonzero(~confident).tolist()
        if rest:
            probabilities[rest] = self.minilm.predict_proba([texts[i] for i in rest])
        return probabilities

    # -- artifacts -----------------------------------------------------------------------

    def config(self) -> dict[str, Any]:
        """The JSON config saved next to the two heads."""
        return {
            "format_version": FORMAT_VERSION,
            "kind": self.kind,
            "labels": self.label_set,
            "threshold": self.threshold_,
            "static_model": {
                "id": self.static.encoder_id_,
                "sha256": self.static_fingerprint_,
                "files": {
                    name: {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
                    for name, data in self.static_files().items()
                },
            },
            "encoder_id": self.minilm.encoder_id_,
            "tiers": {
                name: {
                    "temperature": tier.temperature_,
                    "params": tier.get_params(),
                    "head": tier.head_.to_dict(),
                }
                for name, tier in zip(TIERS, (self.static, self.minilm), strict=True)
            },
            "params": dict(self.params),
            "validation": dict(self.validation_),
        }

    def static_files(self) -> dict[str, bytes]:
        """The static model's files as the artifact names them, their bytes unchanged."""
        from niche.encoders.static import StaticEncoder

        encoder = self.static.encoder
        if not isinstance(encoder, StaticEncoder):
            raise ConfigurationError(f"the static tier runs on {encoder!r}, not a static model")
        files = encoder.files()
        return {name: files[source] for name, source in STATIC_ARTIFACT_FILES.items()}

    def save(self, directory: str | Path) -> Path:
        """Write the heads, the static model and ``config.json`` into ``directory``
        atomically; the same specialist always gives the same bytes."""
        from safetensors.numpy import save_file

        target = Path(directory)
        tensors = {}
        for name, tier in zip(TIERS, (self.static, self.minilm), strict=True):
            tensors[f"{name}.coef"] = tier.coef_
            tensors[f"{name}.intercept"] = tier.intercept_
        with staged_directory(target) as staging:
            # No safetensors metadata (see TextSpecialist.save): model ids digest these bytes.
            save_file(tensors, str(staging / HEADS_FILE))
            for name, data in self.static_files().items():
                (staging / name).write_bytes(data)
            write_config(staging, self.config())
        return target

    @classmethod
    def load(
        cls,
        directory: str | Path,
        encoder: Encoder,
        *,
        shared: MutableMapping[str, StaticEncoder] | None = None,
        clock: Clock = time.perf_counter,
    ) -> TwoStageSpecialist:
        """Load a saved one; ``encoder`` must be the MiniLM encoder it was fitted on.

        The static model comes from the artifact itself, each file checked against the sha256
        in ``config.json``. ``shared`` maps fingerprints to static encoders already loaded: one
        of the same fingerprint is used instead of a second copy (and this one is added).
        """
        from safetensors import SafetensorError
        from safetensors.numpy import load_file

        from niche.encoders.static import STATIC_ID

        directory = Path(directory)
        heads_path = directory / HEADS_FILE
        for path in (directory / CONFIG_FILE, heads_path):
            if not path.is_file():
                raise ArtifactError(f"{path}: missing; not a saved {KIND} specialist", path=path)
        config = read_config(directory, kind=KIND, format_version=FORMAT_VERSION)
        try:
            labels = list(config["labels"])
            static_model = config["static_model"]
            static_records = {name: static_model["files"][name] for name in STATIC_ARTIFACT_FILES}
            tiers_config = config["tiers"]
            threshold = float(config["threshold"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ArtifactError(
                f"{directory / CONFIG_FILE}: lacks a usable {exc}", path=directory
            ) from exc
        if config.get("encoder_id") != encoder.id:
            raise ArtifactError(
                f"{directory}: trained with encoder {config.get('encoder_id')!r} but "
                f"{encoder.id!r} was given",
                path=directory,
            )
        if static_model.get("id") != STATIC_ID:
            raise ArtifactError(
                f"{directory}: trained with static model {static_model.get('id')!r}; this "
                f"niche knows {STATIC_ID!r}",
                path=directory,
            )
        static_encoder = _load_static(directory, static_model, static_records, shared)
        try:
            tensors = load_file(str(heads_path))
        except (SafetensorError, OSError) as exc:
            raise ArtifactError(
                f"{heads_path}: unreadable weights ({exc})", path=heads_path
            ) from exc
        tiers = []
        for name, tier_encoder in zip(TIERS, (static_encoder, encoder), strict=True):
            tier = TextSpecialist(tier_encoder, **tiers_config[name]["params"], clock=clock)
            try:
                tier.coef_ = tensors[f"{name}.coef"]
                tier.intercept_ = tensors[f"{name}.intercept"]
            except KeyError as exc:
                raise ArtifactError(f"{heads_path}: no tensor {exc}", path=heads_path) from exc
            tier.label_set_ = labels
            tier.temperature_ = float(tiers_config[name]["temperature"])
            head = tiers_config[name].get("head")
            tier.head_ = (
                HeadChoice.from_dict(head)
                if isinstance(head, dict)
                else HeadChoice(c=float(tier.c if tier.c is not None else DEFAULT_C))
            )
            tier.encoder_id_ = tier_encoder.id
            if tier.coef_.shape != (len(labels), tier_encoder.dim):
                raise ArtifactError(
                    f"{heads_path}: {name} weights of shape {tier.coef_.shape} do not match "
                    f"{len(labels)} labels x {tier_encoder.dim} dimensions",
                    path=heads_path,
                )
            tiers.append(tier)
        return cls(
            tiers[0],
            tiers[1],
            threshold=threshold,
            static_fingerprint=static_encoder.fingerprint,
            params=dict(config.get("params", {})),
            validation=dict(config.get("validation", {})),
            clock=clock,
        )


def _load_static(
    directory: Path,
    static_model: dict[str, Any],
    records: dict[str, Any],
    shared: MutableMapping[str, StaticEncoder] | None,
) -> StaticEncoder:
    """The artifact's static model, its files verified against ``config.json``."""
    from niche.encoders.static import StaticEncoder, files_fingerprint

    files: dict[str, bytes] = {}
    for name, source in STATIC_ARTIFACT_FILES.items():
        path = directory / name
        try:
            data = path.read_bytes()
            expected = str(records[name]["sha256"])
        except OSError as exc:
            raise ArtifactError(
                f"{path}: cannot be read ({exc}); a {KIND} specialist keeps its static model",
                path=path,
            ) from exc
        except (KeyError, TypeError) as exc:
            raise ArtifactError(
                f"{directory / CONFIG_FILE}: records no sha256 for {name}", path=directory
            ) from exc
        actual = hashlib.sha256(data).hexdigest()
        if actual != expected:
            raise ChecksumMismatchError(
                f"{path} (the static model of this {KIND} specialist)",
                expected=expected,
                actual=actual,
            )
        files[source] = data
    fingerprint = files_fingerprint(files)
    if fingerprint != static_model.get("sha256"):
        raise ArtifactError(
            f"{directory / CONFIG_FILE}: the static model's fingerprint "
            f"{static_model.get('sha256')} is not that of its files ({fingerprint})",
            path=directory,
        )
    if shared is not None and (known := shared.get(fingerprint)) is not None:
        return known
    try:
        encoder = StaticEncoder.from_files(files, where=directory)
    except EncoderError as exc:
        raise ArtifactError(str(exc), path=directory) from exc
    if shared is not None:
        shared[fingerprint] = encoder
    return encoder


class TwoStageKind(SpecialistKind):
    """The ``text-two-stage`` kind: a static first tier, the MiniLM text specialist second.

    Options: ``threshold`` (None: chosen on a validation slice), ``validation_size`` (0.2),
    ``max_loss`` (0.005 accuracy against MiniLM alone on that slice), ``min_validation_rows``
    (200: on a smaller slice one row weighs more than ``max_loss``, so the static tier stays
    off and MiniLM answers every text), ``c`` and
    ``static_c`` (each tier's inverse regularisation; None, the default: chosen by
    cross-validation on the task's metric, like the text kind's), ``max_iter``,
    ``calibration_size``.
    Fitting distils the static model into ``settings.cache_dir`` on first use (``train``
    extra) and saves a copy of it in each artifact; loading reads only the artifact.

        >>> spec = get_kind("text-two-stage").fit(texts, labels, FitContext(settings, encoder=e))
    """

    name = KIND
    input_kind = "text"
    options = MappingProxyType(
        {
            "threshold": None,
            "validation_size": 0.2,
            "max_loss": 0.005,
            "min_validation_rows": 200,
            "c": None,
            "static_c": None,
            "max_iter": 2000,
            "calibration_size": 0.1,
        }
    )

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # The static models loaded through this kind, by fingerprint: a gateway loading many
        # two-stage specialists of one static model keeps one copy of it (~32 MB) in memory.
        self._shared: weakref.WeakValueDictionary[str, StaticEncoder] = (
            weakref.WeakValueDictionary()
        )
        self._fitting: weakref.WeakKeyDictionary[LoadContext, StaticEncoder] = (
            weakref.WeakKeyDictionary()
        )

    def static_encoder(self, context: LoadContext) -> StaticEncoder:
        """The static encoder to fit with: the distillation in ``context.settings.cache_dir``
        (made there first if absent, which needs the ``train`` extra), loaded and verified.

        One per context: fitting many specialists through one context reads the model once.
        """
        from niche.encoders.static import StaticEncoder

        with self._lock:
            encoder = self._fitting.get(context)
            if encoder is None:
                encoder = StaticEncoder(cache_dir=context.settings.cache_dir)
                self._fitting[context] = encoder
        encoder.load()
        with self._lock:
            return self._shared.setdefault(encoder.fingerprint, encoder)

    def fit(
        self, inputs: TextInputs, labels: Sequence[str], context: FitContext
    ) -> TwoStageSpecialist:
        """Fit both tiers, choose the threshold (unless given), refit both on every row."""
        checked = check_fit_arguments(self, inputs, labels)
        options = self.resolve_options(context.options)
        threshold = options["threshold"]
        if threshold is not None and not 0.0 <= float(threshold) <= 1.0:
            raise ValidationError(
                f"kind {KIND!r}: threshold must lie in [0, 1], not {threshold!r}",
                param="threshold",
            )
        static_encoder = self.static_encoder(context)
        progress: Progress = context.progress
        texts = list(inputs)
        with progress.task("embedding training texts (static)", total=len(texts)) as advance:
            static_x = static_encoder.encode(texts, progress=advance)
        with progress.task("embedding training texts", total=len(texts)) as advance:
            minilm_x = context.encoder.encode(texts, progress=advance)

        def tiers(rows: np.ndarray | None) -> tuple[TextSpecialist, TextSpecialist]:
            fitted = []
            for encoder, x, c in (
                (static_encoder, static_x, options["static_c"]),
                (context.encoder, minilm_x, options["c"]),
            ):
                tier = TextSpecialist(
                    encoder,
                    c=None if c is None else float(c),
                    metric=context.metric,
                    max_iter=int(options["max_iter"]),
                    calibration_size=float(options["calibration_size"]),
                    seed=context.seed,
                    clock=context.clock,
                )
                if rows is None:
                    tier.fit(texts, checked, embeddings=x)
                else:
                    tier.fit(
                        [texts[i] for i in rows], [checked[i] for i in rows], embeddings=x[rows]
                    )
                fitted.append(tier)
            return fitted[0], fitted[1]

        label_set = sorted(set(checked))
        index = {label: i for i, label in enumerate(label_set)}
        targets = np.fromiter((index[label] for label in checked), np.int64, len(checked))
        if threshold is None:
            fit_rows, held_rows = validation_split(
                targets, float(options["validation_size"]), context.seed
            )
            if len(held_rows) >= int(options["min_validation_rows"]) and len(held_rows):
                static, minilm = tiers(fit_rows)
                validation = choose_threshold(
                    static.predict_proba_embeddings(static_x[held_rows]),
                    minilm.predict_proba_embeddings(minilm_x[held_rows]),
                    targets[held_rows],
                    max_loss=float(options["max_loss"]),
                )
            else:
                # Too few rows to tell half a point apart (or no label with 3 rows): the
                # static tier could lose far more on unseen texts, so MiniLM answers all.
                validation = {
                    "threshold": 1.0,
                    "rows": len(held_rows),
                    "coverage": 0.0,
                    "reason": f"{len(held_rows)} validation rows, fewer than "
                    f"min_validation_rows={options['min_validation_rows']}",
                }
            validation["source"] = "validation"
        else:
            validation = {"threshold": float(threshold), "source": "option"}
        static, minilm = tiers(None)
        return TwoStageSpecialist(
            static,
            minilm,
            threshold=float(validation["threshold"]),
            static_fingerprint=static_encoder.fingerprint,
            params={
                k: options[k]
                for k in ("validation_size", "max_loss", "min_validation_rows", "threshold")
            },
            validation=validation,
            clock=context.clock,
        )

    def fit_identity(self, context: FitContext) -> dict[str, Any]:
        """Everything but the rows that decides both tiers and the threshold: options, metric,
        both encoders, format and the head search (a second quickstart reuses the fit)."""
        from niche.encoders.static import STATIC_ID

        return {
            "options": self.resolve_options(context.options),
            "metric": context.metric,
            "encoder_id": context.encoder.id,
            "static_id": STATIC_ID,
            "format_version": FORMAT_VERSION,
            "head_selection": search_identity(),
        }

    def load(self, directory: Path, context: LoadContext) -> TwoStageSpecialist:
        """The :class:`TwoStageSpecialist` in ``directory``, with the static model saved in
        it (verified); neither the cache nor torch is needed."""
        encoder = context.encoder
        if (Path(directory) / CONFIG_FILE).is_file():
            saved = read_config(Path(directory), kind=KIND, format_version=FORMAT_VERSION)
            if isinstance(saved.get("encoder_id"), str):
                # The MiniLM tier's own encoder: a model trained on another precision keeps it.
                encoder = context.encoder_for(saved["encoder_id"])
        with self._lock:
            return TwoStageSpecialist.load(
                directory, encoder, shared=self._shared, clock=context.clock
            )

    def lineage(self, specialist: Predictor) -> dict[str, Any]:
        """Both encoders, the parameters, each tier's temperature, the threshold and how it
        was chosen (validation coverage and accuracies)."""
        if not isinstance(specialist, TwoStageSpecialist):
            raise TypeError(f"the {KIND} kind describes a TwoStageSpecialist, not {specialist!r}")
        return {
            "encoder_id": specialist.minilm.encoder_id_,
            "static_model": {
                "id": specialist.static.encoder_id_,
                "sha256": specialist.static_fingerprint_,
            },
            "params": {
                **specialist.params,
                "c": specialist.minilm.c,
                "static_c": specialist.static.c,
            },
            "heads": {
                "static": specialist.static.head_.to_dict(),
                "minilm": specialist.minilm.head_.to_dict(),
            },
            "temperatures": {
                "static": specialist.static.temperature_,
                "minilm": specialist.minilm.temperature_,
            },
            "threshold": specialist.threshold_,
            "validation": dict(specialist.validation_),
        }
