"""all-MiniLM-L6-v2 on onnxruntime + tokenizers: the serving-path text encoder (no torch).

>>> encoder = OnnxEncoder(precision="int8-static").load()
>>> encoder.encode(["where is my card?"]).shape
(1, 384)
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from niche.encoders.base import ProgressCallback, check_texts
from niche.encoders.export import (
    DIM,
    INPUT_NAMES,
    MODEL_FILE,
    OUTPUT_NAME,
    TOKENIZER_FILE,
    check_precision,
    encoder_id,
    ensure_export,
    read_manifest,
    read_verified,
)
from niche.errors import ConfigurationError, EncoderError

__all__ = ["OnnxEncoder", "encode_tokenized", "open_session", "usable_cpus"]

# BERT's learned position embeddings stop at 512.
_MAX_POSITIONS = 512
_OUTPUTS = [OUTPUT_NAME]


class OnnxEncoder:
    """Sentence embeddings from all-MiniLM-L6-v2 exported to ONNX, optionally int8-quantised.

    The constructor only stores its arguments; :meth:`load` exports the model on first use
    (once, into ``cache_dir/encoders/``), verifies its checksum and starts the session.
    :meth:`encode` calls :meth:`load` if needed.

    Texts are tokenised without padding, sorted by length and run in batches of at most
    ``batch_size``, then put back in input order. With ``int8-static`` and ``fp32`` a batch
    holds texts of one token length only (no padding at all: measured +14 % throughput);
    with dynamic ``int8`` a batch is padded to its own longest text.

        >>> encoder = OnnxEncoder(precision="fp32", threads=2, cache_dir=".niche/cache")
        >>> encoder.encode(["hello", "good morning"]).shape
        (2, 384)

    ``threads=0`` uses one onnxruntime thread per CPU this process may run on.

    ``int8-static`` (the default) uses activation scales calibrated once at export
    (:mod:`niche.encoders.static_int8`): a text's vector is the same alone and in any batch
    (to float rounding, ~1e-7). ``int8`` uses dynamic quantisation: one activation scale per
    batch tensor, so its vector moves slightly with its batch-mates (cosine about 0.99
    between a text encoded alone and in a batch). fp32 vectors do not depend on the batch.
    """

    def __init__(
        self,
        precision: str = "int8-static",
        threads: int = 0,
        batch_size: int = 64,
        max_tokens: int = 256,
        cache_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        self.precision = precision
        self.threads = threads
        self.batch_size = batch_size
        self.max_tokens = max_tokens
        self.cache_dir = cache_dir
        self._lock = threading.Lock()
        self.session_: Any = None
        self.tokenizer_: Any = None
        self.export_dir_: Path | None = None
        self.manifest_: dict[str, Any] | None = None

    def __repr__(self) -> str:
        return (
            f"OnnxEncoder(precision={self.precision!r}, threads={self.threads!r}, "
            f"batch_size={self.batch_size!r}, max_tokens={self.max_tokens!r}, "
            f"cache_dir={self.cache_dir!r})"
        )

    @property
    def id(self) -> str:
        """``"all-MiniLM-L6-v2/onnx-<precision>"``; known without loading the model."""
        return encoder_id(self.precision)

    @property
    def dim(self) -> int:
        """Width of the vectors: 384."""
        return DIM

    def load(self) -> OnnxEncoder:
        """Export (first use only), verify and open the model; return ``self``.

        >>> encoder = OnnxEncoder().load()
        """
        with self._lock:
            if self.session_ is None:
                self._load()
        return self

    def _load(self) -> None:
        check_precision(self.precision)
        threads = self._check_arguments()
        cache_dir = self._resolved_cache_dir()
        folder = ensure_export(cache_dir, self.precision)
        manifest = read_manifest(folder)
        if manifest.get("encoder_id") != self.id or manifest.get("dim") != DIM:
            raise EncoderError(
                f"{folder} holds {manifest.get('encoder_id')!r} (dim {manifest.get('dim')}), "
                f"not {self.id!r} (dim {DIM}); delete it to export the encoder again"
            )
        model_bytes = read_verified(folder, manifest, MODEL_FILE)
        tokenizer_bytes = read_verified(folder, manifest, TOKENIZER_FILE)

        from tokenizers import Tokenizer

        try:
            tokenizer = Tokenizer.from_str(tokenizer_bytes.decode("utf-8"))
        except Exception as exc:
            raise EncoderError(
                f"{folder / TOKENIZER_FILE} is not a valid tokenizer: {exc}"
            ) from exc
        # The packaged tokenizer.json pads every input to 128 tokens: padding is done per
        # batch instead, to that batch's longest text.
        tokenizer.no_padding()
        tokenizer.enable_truncation(self.max_tokens)

        try:
            session = open_session(model_bytes, threads)
        except Exception as exc:
            raise EncoderError(f"onnxruntime cannot load {folder / MODEL_FILE}: {exc}") from exc

        inputs = sorted(i.name for i in session.get_inputs())
        outputs = [o.name for o in session.get_outputs()]
        if inputs != sorted(INPUT_NAMES) or OUTPUT_NAME not in outputs:
            raise EncoderError(
                f"{folder / MODEL_FILE} takes {inputs} and gives {outputs}, not "
                f"{sorted(INPUT_NAMES)} -> {OUTPUT_NAME!r}; delete {folder} to export it again"
            )
        self.tokenizer_ = tokenizer
        self.export_dir_ = folder
        self.manifest_ = manifest
        self.session_ = session

    def _check_arguments(self) -> int:
        for name in ("threads", "batch_size", "max_tokens"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise ConfigurationError(f"OnnxEncoder {name}={value!r} is not an integer")
        if self.threads < 0:
            raise ConfigurationError(
                f"OnnxEncoder threads={self.threads} must be 0 (one per CPU) or more",
                setting="NICHE_ENCODER_THREADS",
            )
        if self.batch_size < 1:
            raise ConfigurationError(
                f"OnnxEncoder batch_size={self.batch_size} must be at least 1",
                setting="NICHE_ENCODER_BATCH_SIZE",
            )
        if not 2 <= self.max_tokens <= _MAX_POSITIONS:
            raise ConfigurationError(
                f"OnnxEncoder max_tokens={self.max_tokens} must be between 2 and {_MAX_POSITIONS}",
                setting="NICHE_ENCODER_MAX_TOKENS",
            )
        return self.threads or usable_cpus()

    def _resolved_cache_dir(self) -> Path:
        if self.cache_dir is not None:
            return Path(self.cache_dir)
        from niche.settings import Settings

        return Settings().cache_dir

    def encode(
        self, texts: Sequence[str], *, progress: ProgressCallback | None = None
    ) -> np.ndarray:
        """L2-normalised float32 embeddings, shape ``(len(texts), 384)``, in input order.

        ``progress(k)`` is called after each batch with the number of texts it held.

            >>> OnnxEncoder().encode(["a", "b"], progress=print).shape
            2
            (2, 384)
        """
        check_texts(texts)
        n = len(texts)
        if n == 0:
            return np.empty((0, DIM), dtype=np.float32)
        if self.session_ is None:
            self.load()
        return encode_tokenized(
            self._run,
            self.tokenizer_,
            texts,
            dim=DIM,
            batch_size=self.batch_size,
            same_length=self.precision != "int8",
            progress=progress,
        )

    def _run(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        out = self.session_.run(
            _OUTPUTS, {"input_ids": input_ids, "attention_mask": attention_mask}
        )[0]
        return np.asarray(out, dtype=np.float32)


def encode_tokenized(
    run: Callable[[np.ndarray, np.ndarray], np.ndarray],
    tokenizer: Any,
    texts: Sequence[str],
    *,
    dim: int,
    batch_size: int,
    same_length: bool,
    progress: ProgressCallback | None = None,
) -> np.ndarray:
    """``run(input_ids, attention_mask)`` over ``texts`` in batches; rows in input order.

    The texts are tokenised without padding and sorted by length. With ``same_length`` a batch
    holds texts of one token length only, so no text is padded and its vector does not depend
    on its batch-mates; otherwise a batch of at most ``batch_size`` is padded to its longest
    text. One text skips the sorting: the serving hot path.
    """
    n = len(texts)
    if n == 0:
        return np.empty((0, dim), dtype=np.float32)
    if n == 1:
        ids = np.array([tokenizer.encode(texts[0]).ids], dtype=np.int64)
        out = np.asarray(run(ids, np.ones_like(ids)), dtype=np.float32)
        if progress is not None:
            progress(1)
        return out
    encodings = tokenizer.encode_batch(list(texts))
    lengths = np.fromiter((len(e.ids) for e in encodings), dtype=np.int64, count=n)
    # Sorting by length makes each batch nearly uniform, so padding costs little.
    order = np.argsort(lengths, kind="stable")
    result = np.empty((n, dim), dtype=np.float32)
    for rows in _batches(order, lengths, batch_size, same_length):
        width = int(lengths[rows[-1]])
        input_ids = np.zeros((len(rows), width), dtype=np.int64)
        attention_mask = np.zeros((len(rows), width), dtype=np.int64)
        for r, i in enumerate(rows):
            length = lengths[i]
            input_ids[r, :length] = encodings[i].ids
            attention_mask[r, :length] = 1
        result[rows] = run(input_ids, attention_mask)
        if progress is not None:
            progress(len(rows))
    return result


def _batches(
    order: np.ndarray, lengths: np.ndarray, size: int, same_length: bool
) -> list[np.ndarray]:
    """Rows (indices in length order) of each batch: runs of one length with ``same_length``,
    else padded batches of ``size``."""
    if not same_length:
        return [order[start : start + size] for start in range(0, len(order), size)]
    sorted_lengths = lengths[order]
    cuts = np.flatnonzero(np.diff(sorted_lengths)) + 1
    batches: list[np.ndarray] = []
    for run in np.split(order, cuts):
        batches.extend(run[start : start + size] for start in range(0, len(run), size))
    return batches


def open_session(model: bytes, threads: int) -> Any:
    """An onnxruntime CPU session on ``model`` with ``threads`` intra-op threads (0: one per
    usable CPU), sequential, every graph optimisation on."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads or usable_cpus()
    options.inter_op_num_threads = 1
    options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    return onnxruntime.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def usable_cpus() -> int:
    """The CPUs this process may run on: honours taskset/cgroup affinity, unlike os.cpu_count()."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1
