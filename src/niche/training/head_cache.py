"""A cache of fitted specialists: the same rows, kind, options, encoder and metric, the same head.

    >>> cache = HeadCache(settings.cache_dir / "heads")
    >>> parts = fit_key_parts(version, "train", 1.0, 0, "text", identity)
    >>> cache.get(cache_key(parts), kind, context) is None     # a miss: fit, then put
    True
    >>> cache.put(cache_key(parts), parts, specialist)

:func:`niche.training.train` asks it before fitting a kind that declares a
:meth:`~niche.specialists.SpecialistKind.fit_identity`, so a second ``niche quickstart`` on the
same data loads the head it fitted the first time (``NICHE_HEAD_CACHE`` turns this off).
An entry is ``<root>/<key>/``: the specialist's own saved files under ``model/`` and
``entry.json``, which names the key's parts and each file's SHA-256 and carries a checksum of
itself; the whole directory is written atomically. The cache is derived data: an entry that
fails its checksums or its kind's load is ignored with a warning and refitted, and one that
cannot be written is skipped with a warning; neither fails the training.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

from niche.data import DatasetVersion
from niche.errors import NicheError
from niche.specialists import FitContext, Specialist, SpecialistKind
from niche.specialists.saving import staged_directory

__all__ = ["ENTRY_FILE", "HeadCache", "cache_key", "fit_key_parts"]

ENTRY_FILE = "entry.json"
_MODEL_DIR = "model"
_FORMAT_VERSION = 1

logger = logging.getLogger(__name__)


def fit_key_parts(
    version: DatasetVersion,
    split: str,
    fraction: float,
    seed: int,
    kind: str,
    identity: dict[str, Any],
) -> dict[str, Any]:
    """What a cached fit is keyed by: the rows (dataset fingerprint, split, fraction, seed),
    the kind and its :meth:`~niche.specialists.SpecialistKind.fit_identity`, and niche's
    version (a release may fit differently)."""
    from niche import __version__

    return {
        "dataset_fingerprint": version.fingerprint,
        "split": split,
        "fraction": fraction,
        "seed": seed,
        "kind": kind,
        "identity": identity,
        "niche_version": __version__,
    }


def _canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


def cache_key(parts: dict[str, Any]) -> str:
    """The SHA-256 (hex) of ``parts`` in canonical JSON: the entry's directory name."""
    return hashlib.sha256(_canonical(parts)).hexdigest()


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _manifest_checksum(manifest: dict[str, Any]) -> str:
    return hashlib.sha256(
        _canonical({k: v for k, v in manifest.items() if k != "checksum"})
    ).hexdigest()


class _CorruptEntry(ValueError):
    pass


class HeadCache:
    """Fitted specialists under ``root`` (``NICHE_CACHE_DIR/heads``), one directory per key."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def path(self, key: str) -> Path:
        """The directory of ``key``'s entry (it may not exist)."""
        return self.root / key

    def get(
        self, key: str, kind: SpecialistKind, context: FitContext
    ) -> tuple[Specialist, float | None] | None:
        """The specialist cached under ``key``, loaded by ``kind``, and the seconds its fit
        took when it was cached (None: not recorded); None when there is no entry or it is
        corrupt (logged as a warning: the caller refits and overwrites it)."""
        entry = self.path(key)
        manifest_path = entry / ENTRY_FILE
        if not manifest_path.is_file():
            return None
        try:
            manifest = json.loads(manifest_path.read_text())
            if not isinstance(manifest, dict) or manifest.get("format_version") != _FORMAT_VERSION:
                raise _CorruptEntry(f"{ENTRY_FILE} is not a head cache entry v{_FORMAT_VERSION}")
            if manifest.get("checksum") != _manifest_checksum(manifest):
                raise _CorruptEntry(f"{ENTRY_FILE} fails its checksum")
            parts = manifest.get("parts")
            if manifest.get("key") != key or not isinstance(parts, dict) or cache_key(parts) != key:
                raise _CorruptEntry(f"{ENTRY_FILE} is the entry of another key")
            files = manifest["files"]
            for name, digest in files.items():
                if _file_digest(entry / name) != digest:
                    raise _CorruptEntry(f"{name} fails its SHA-256")
            fit_seconds = manifest.get("fit_seconds")
            recorded = float(fit_seconds) if isinstance(fit_seconds, int | float) else None
            return kind.load(entry / _MODEL_DIR, context), recorded
        except (OSError, ValueError, KeyError, TypeError, AttributeError, NicheError) as exc:
            logger.warning("%s: ignoring a corrupt head cache entry (%s); refitting", entry, exc)
            return None

    def put(
        self,
        key: str,
        parts: dict[str, Any],
        specialist: Specialist,
        *,
        fit_seconds: float | None = None,
    ) -> Path | None:
        """Save ``specialist`` as ``key``'s entry with the seconds its fit took, atomically;
        None (and a warning logged) when it cannot be written."""
        entry = self.path(key)
        try:
            with staged_directory(entry) as staging:
                specialist.save(staging / _MODEL_DIR)
                files = {
                    path.relative_to(staging).as_posix(): _file_digest(path)
                    for path in sorted((staging / _MODEL_DIR).rglob("*"))
                    if path.is_file()
                }
                manifest: dict[str, Any] = {
                    "format_version": _FORMAT_VERSION,
                    "key": key,
                    "parts": parts,
                    "files": files,
                    "fit_seconds": fit_seconds,
                }
                manifest["checksum"] = _manifest_checksum(manifest)
                (staging / ENTRY_FILE).write_text(json.dumps(manifest, indent=2) + "\n")
        except (OSError, NicheError) as exc:
            logger.warning("%s: cannot write the head cache entry (%s); not cached", entry, exc)
            return None
        return entry
