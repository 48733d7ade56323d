"""The ``text-finetuned`` kind: all-MiniLM-L6-v2 and a head fine-tuned together, served int8.

    >>> spec = get_kind("text-finetuned").fit(texts, labels, FitContext(options={"epochs": 2}))
    >>> spec.predict(["I lost my card"]).labels
    ['lost_or_stolen_card']
    >>> spec.save("models/v3")   # weights.safetensors + model.onnx + tokenizer.json + config.json

Fitting needs the ``train`` extra (torch; see :mod:`niche.specialists.finetuning`); serving
needs only onnxruntime and tokenizers: the specialist runs its own ONNX session (the fine-tuned
encoder, int8) and applies the head in numpy, so it ignores the shared encoder of its
:class:`~niche.specialists.LoadContext`. ``config.json`` records the sha256 of every file;
:meth:`FineTunedSpecialist.load` refuses a file that does not match. Confidences are
calibrated by temperature scaling on the validation slice that early stopping used, through
the served int8 graph.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
import threading
import time
import weakref
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np

from niche.encoders.onnx_encoder import encode_tokenized, open_session
from niche.errors import ArtifactError, ChecksumMismatchError, NotFittedError, ValidationError
from niche.specialists.base import (
    Predictor,
    ProbabilityPredictor,
    SpecialistKind,
    TextInputs,
    check_fit_arguments,
)
from niche.specialists.context import Clock, FitContext, LoadContext
from niche.specialists.finetuning import (
    MODEL_FILE,
    TOKENIZER_FILE,
    WEIGHTS_FILE,
    FineTuneOptions,
    fine_tune,
)
from niche.specialists.saving import CONFIG_FILE, read_config, staged_directory, write_config
from niche.specialists.text import fit_temperature, softmax

__all__ = ["FineTunedEncoder", "FineTunedKind", "FineTunedSpecialist", "check_options"]

KIND = "text-finetuned"
FORMAT_VERSION = 1
ENCODER_ID = "all-MiniLM-L6-v2/fine-tuned-onnx-int8"
FILES = (WEIGHTS_FILE, MODEL_FILE, TOKENIZER_FILE)
_INFERENCE_BATCH = 64

# name → (type, lowest allowed value, whether the lowest is excluded)
_BOUNDS: dict[str, tuple[type, float, bool]] = {
    "epochs": (int, 1, False),
    "learning_rate": (float, 0.0, True),
    "head_learning_rate": (float, 0.0, True),
    "batch_size": (int, 1, False),
    "max_tokens": (int, 2, False),
    "patience": (int, 1, False),
    "validation_size": (float, 0.0, False),
    "warmup": (float, 0.0, False),
    "weight_decay": (float, 0.0, False),
}


def check_options(options: Mapping[str, Any]) -> FineTuneOptions:
    """``options`` (resolved against the kind's defaults) as :class:`FineTuneOptions`; a wrong
    type or out-of-range value is a :class:`ValidationError` naming the option.

    >>> check_options({**FineTunedKind.options, "epochs": 2}).epochs
    2
    """
    values: dict[str, Any] = {}
    for name, value in options.items():
        kind, low, open_low = _BOUNDS[name]
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValidationError(
                f"specialist kind {KIND!r}: option {name} must be a number, got {value!r}",
                param=name,
            )
        if kind is int and value != int(value):
            raise ValidationError(
                f"specialist kind {KIND!r}: option {name} must be an integer, got {value!r}",
                param=name,
            )
        if value < low or (open_low and value == low):
            bound = f"> {low}" if open_low else f">= {low:g}"
            raise ValidationError(
                f"specialist kind {KIND!r}: option {name} must be {bound}, got {value!r}",
                param=name,
            )
        values[name] = kind(value)
    if not values["validation_size"] < 1 or not values["warmup"] < 1:
        name = "validation_size" if values["validation_size"] >= 1 else "warmup"
        raise ValidationError(
            f"specialist kind {KIND!r}: option {name} must be < 1, got {values[name]!r}",
            param=name,
        )
    if values["max_tokens"] > 512:
        raise ValidationError(
            f"specialist kind {KIND!r}: option max_tokens must be <= 512 (BERT's positions), "
            f"got {values['max_tokens']}",
            param="max_tokens",
        )
    return FineTuneOptions(**values)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class FineTunedEncoder:
    """A fine-tuned specialist's own encoder, as an :class:`~niche.encoders.Encoder`: what
    monitoring embeds live traffic with to check its input drift.

    Its ``id`` names the exact graph (the digest of its ``model.onnx``): two versions' vectors
    are never mixed under one id.

        >>> specialist.encoder.encode(["what is my balance"]).shape
        (1, 384)
    """

    def __init__(self, specialist: FineTunedSpecialist) -> None:
        self.specialist = specialist

    @property
    def id(self) -> str:
        """``all-MiniLM-L6-v2/fine-tuned-onnx-int8/<first 16 hex of model.onnx's sha256>``."""
        return f"{ENCODER_ID}/{self.specialist.config_['files'][MODEL_FILE]['sha256'][:16]}"

    @property
    def dim(self) -> int:
        """Width of the vectors: 384."""
        return int(self.specialist.config_["dim"])

    def encode(self, texts: Sequence[str], *, progress: Any = None) -> np.ndarray:
        """L2-normalised float32 embeddings, one row per text, in input order."""
        vectors = self.specialist.embed(texts)
        if progress is not None:
            progress(len(texts))
        return vectors


class FineTunedSpecialist(ProbabilityPredictor):
    """A fine-tuned encoder (ONNX, int8) + a linear head + a temperature, served without torch.

    Built by :meth:`FineTunedKind.fit` or :meth:`load`; ``files_`` is the folder holding
    its weights, graph and tokenizer, ``config_`` what ``config.json`` records.
    ``threads`` are onnxruntime's intra-op threads (0: one per usable CPU).
    """

    kind = KIND

    def __init__(self, *, threads: int = 0, clock: Clock = time.perf_counter) -> None:
        self.threads = threads
        self.clock = clock
        self._lock = threading.Lock()

    # -- building --------------------------------------------------------------------------

    def _open(self, folder: Path, config: dict[str, Any]) -> FineTunedSpecialist:
        """Verify the files of ``folder`` against ``config`` and start the session."""
        from safetensors import SafetensorError, safe_open
        from tokenizers import Tokenizer

        data = {name: _verified(folder, config, name) for name in (MODEL_FILE, TOKENIZER_FILE)}
        _verified(folder, config, WEIGHTS_FILE)
        try:
            with safe_open(str(folder / WEIGHTS_FILE), framework="numpy") as weights:
                coef = weights.get_tensor("head.weight")
                intercept = weights.get_tensor("head.bias")
        except (SafetensorError, OSError, KeyError) as exc:
            path = folder / WEIGHTS_FILE
            raise ArtifactError(f"{path}: unreadable head weights ({exc})", path=path) from exc
        labels = list(config["labels"])
        if coef.shape != (len(labels), config["dim"]) or intercept.shape != (len(labels),):
            path = folder / WEIGHTS_FILE
            raise ArtifactError(
                f"{path}: head of shape {coef.shape} does not match {len(labels)} labels x "
                f"{config['dim']} dimensions",
                path=path,
            )
        try:
            tokenizer = Tokenizer.from_str(data[TOKENIZER_FILE].decode("utf-8"))
        except Exception as exc:
            path = folder / TOKENIZER_FILE
            raise ArtifactError(f"{path}: not a valid tokenizer ({exc})", path=path) from exc
        tokenizer.no_padding()
        tokenizer.enable_truncation(int(config["params"]["max_tokens"]))
        try:
            session = open_session(data[MODEL_FILE], self.threads)
        except Exception as exc:
            path = folder / MODEL_FILE
            raise ArtifactError(f"{path}: onnxruntime cannot load it ({exc})", path=path) from exc
        self.session_ = session
        self.tokenizer_ = tokenizer
        self.coef_ = np.ascontiguousarray(coef, dtype=np.float32)
        self.intercept_ = np.ascontiguousarray(intercept, dtype=np.float32)
        self.label_set_ = labels
        self.temperature_ = float(config["temperature"])
        self.config_ = config
        self.files_ = folder
        return self

    @classmethod
    def load(
        cls,
        directory: str | Path,
        *,
        threads: int = 0,
        clock: Clock = time.perf_counter,
    ) -> FineTunedSpecialist:
        """The specialist saved in ``directory``; every file checked against its sha256."""
        directory = Path(directory)
        config = read_config(directory, kind=KIND, format_version=FORMAT_VERSION)
        return cls(threads=threads, clock=clock)._open(directory, config)

    # -- predicting ------------------------------------------------------------------------

    @property
    def label_set(self) -> list[str]:
        self._check_fitted()
        return list(self.label_set_)

    def _check_fitted(self) -> None:
        if not hasattr(self, "session_"):
            raise NotFittedError(
                "this FineTunedSpecialist is not fitted yet: fit it with "
                "get_kind('text-finetuned').fit(...) or load it with FineTunedSpecialist.load"
            )

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """The fine-tuned encoder's L2-normalised embeddings (n, 384), in input order."""
        self._check_fitted()
        return encode_tokenized(
            self._run,
            self.tokenizer_,
            texts,
            dim=int(self.config_["dim"]),
            batch_size=_INFERENCE_BATCH,
            same_length=True,
        )

    def _run(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        feed = {"input_ids": input_ids, "attention_mask": attention_mask}
        return np.asarray(self.session_.run(None, feed)[0], dtype=np.float32)

    @property
    def encoder(self) -> FineTunedEncoder:
        """Its own (fine-tuned) encoder; the shared one is never used."""
        self._check_fitted()
        return FineTunedEncoder(self)

    def logits(self, texts: Sequence[str]) -> np.ndarray:
        """The head's uncalibrated scores (n, n_labels), float64."""
        return self._logits(self.embed(texts))

    def _logits(self, embeddings: np.ndarray) -> np.ndarray:
        return (embeddings @ self.coef_.T + self.intercept_).astype(np.float64)

    def predict_proba_embeddings(self, embeddings: np.ndarray) -> np.ndarray:
        """Calibrated probabilities (n, n_labels) for embeddings of :attr:`encoder`."""
        self._check_fitted()
        return softmax(self._logits(embeddings) / self.temperature_)

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        """Calibrated probabilities (n, n_labels) over :attr:`label_set`."""
        return self.predict_proba_embeddings(self.embed(texts))

    # -- artifacts -------------------------------------------------------------------------

    def save(self, directory: str | Path) -> Path:
        """Copy the weights, graph and tokenizer (checked) and write ``config.json``,
        atomically."""
        self._check_fitted()
        target = Path(directory)
        with staged_directory(target) as staging:
            for name in FILES:
                (staging / name).write_bytes(_verified(self.files_, self.config_, name))
            write_config(staging, self.config_)
        return target


def _verified(folder: Path, config: dict[str, Any], name: str) -> bytes:
    """The bytes of ``folder/name`` after checking them against ``config``'s sha256."""
    path = folder / name
    try:
        expected = config["files"][name]["sha256"]
    except (KeyError, TypeError) as exc:
        raise ArtifactError(
            f"{folder / CONFIG_FILE}: records no sha256 for {name}", path=folder / CONFIG_FILE
        ) from exc
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ArtifactError(f"{path}: missing or unreadable ({exc})", path=path) from exc
    actual = _sha256(data)
    if actual != expected:
        raise ChecksumMismatchError(str(path), expected=expected, actual=actual)
    return data


class FineTunedKind(SpecialistKind):
    """The ``text-finetuned`` kind: MiniLM and a head trained end to end (torch), served int8.

    Options: ``epochs`` (4, with early stopping), ``learning_rate`` (encoder),
    ``head_learning_rate``, ``batch_size``, ``max_tokens``, ``patience``,
    ``validation_size``, ``warmup``, ``weight_decay`` (see
    :class:`~niche.specialists.finetuning.FineTuneOptions`). torch uses
    ``NICHE_ENCODER_THREADS`` threads, the served session too.

        >>> spec = get_kind("text-finetuned").fit(texts, labels, FitContext(options={"epochs": 1}))
    """

    name = KIND
    input_kind = "text"
    options = MappingProxyType(FineTuneOptions().to_dict())

    def resolve_options(self, given: Mapping[str, Any]) -> dict[str, Any]:
        """The kind's options updated with ``given``, each checked (type and range)."""
        resolved = super().resolve_options(given)
        return check_options(resolved).to_dict()

    def fit(
        self, inputs: TextInputs, labels: Sequence[str], context: FitContext
    ) -> FineTunedSpecialist:
        """Fine-tune on ``inputs`` with ``context.seed``; calibrate on the validation slice."""
        checked = check_fit_arguments(self, inputs, labels)
        checked_inputs = list(inputs)
        options = check_options(self.resolve_options(context.options))
        label_set = sorted(set(checked))
        if len(label_set) < 2:
            raise ValidationError(
                f"a {KIND} specialist needs at least 2 labels, got {label_set!r}", param="labels"
            )
        threads = int(context.settings.get("NICHE_ENCODER_THREADS"))
        folder = Path(tempfile.mkdtemp(prefix="niche-finetuned-"))
        try:
            result = fine_tune(
                checked_inputs,
                checked,
                options,
                directory=folder,
                seed=context.seed,
                threads=threads,
                progress=context.progress,
            )
            from niche.encoders.export import DIM

            config: dict[str, Any] = {
                "format_version": FORMAT_VERSION,
                "kind": KIND,
                "encoder_id": ENCODER_ID,
                "base_model": "all-MiniLM-L6-v2",
                "dim": DIM,
                "labels": result.label_set,
                "temperature": 1.0,
                "params": {**options.to_dict(), "seed": context.seed},
                "quantization": result.quantization,
                "training": {
                    "best_epoch": result.best_epoch,
                    "history": result.history,
                    "fit_rows": result.fit_rows,
                    "validation_rows": len(result.validation),
                    "torch_threads": result.torch_threads,
                },
                "files": {
                    name: {
                        "sha256": _sha256((folder / name).read_bytes()),
                        "bytes": (folder / name).stat().st_size,
                    }
                    for name in FILES
                },
            }
            specialist = FineTunedSpecialist(threads=threads, clock=context.clock)
            specialist._open(folder, config)
            if len(result.validation):
                with context.progress.task("calibrating on the validation slice", total=None):
                    texts = _take(checked_inputs, result.validation)
                    index = {label: i for i, label in enumerate(result.label_set)}
                    targets = np.array([index[checked[i]] for i in result.validation])
                    config["temperature"] = fit_temperature(specialist.logits(texts), targets)
                specialist.temperature_ = float(config["temperature"])
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        # The fitted files live until the specialist goes (save copies them).
        weakref.finalize(specialist, shutil.rmtree, folder, True)
        return specialist

    def load(self, directory: Path, context: LoadContext) -> FineTunedSpecialist:
        """The specialist in ``directory`` on its own ONNX session (the shared encoder is
        not used)."""
        threads = int(context.settings.get("NICHE_ENCODER_THREADS"))
        return FineTunedSpecialist.load(directory, threads=threads, clock=context.clock)

    def lineage(self, specialist: Predictor) -> dict[str, Any]:
        """The encoder, the parameters, the temperature and the epochs run."""
        if not isinstance(specialist, FineTunedSpecialist):
            raise TypeError(f"the {KIND} kind describes a FineTunedSpecialist, not {specialist!r}")
        config = specialist.config_
        training = config["training"]
        return {
            "encoder_id": config["encoder_id"],
            "params": dict(config["params"]),
            "temperature": specialist.temperature_,
            "best_epoch": training["best_epoch"],
            "epochs_run": len(training["history"]) - 1,
            "validation_rows": training["validation_rows"],
        }


def _take(inputs: TextInputs, rows: np.ndarray) -> list[str]:
    return [inputs[int(i)] for i in rows]
