"""Dataset versions: immutable curated splits, their fingerprint and curation report.

>>> from niche.data import DatasetVersion
>>> version = DatasetVersion.load(".niche/datasets/banking77")  # doctest: +SKIP
>>> version.fingerprint[:12], len(version.splits["train"])  # doctest: +SKIP
"""

from __future__ import annotations

import errno
import hashlib
import os
import secrets
import shutil
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from niche.data.loading import read_jsonl
from niche.data.rows import Rows
from niche.errors import (
    ArtifactError,
    ChecksumMismatchError,
    DatasetNotFoundError,
    DataValidationError,
)

__all__ = ["SPLITS", "CurationReport", "DatasetVersion", "fingerprint_splits"]

SPLITS = ("train", "test")
_VERSION_FILE = "version.json"
_OPTIONAL_FIELDS = frozenset({"origin"})
"""Report fields added after versions were first saved: a report may lack them."""


@dataclass
class CurationReport:
    """What :func:`~niche.data.curate` did, step by step, as counts of rows.

    ``conflicting_duplicates`` counts every removed copy of a text that carried different
    labels; ``conflict_examples`` keeps up to 20 ``{"text", "labels"}`` of them.
    ``near_duplicate_conflicts`` counts near-duplicates removed because an earlier kept row
    has a different label. ``rows_out`` maps split name to rows kept; ``labels`` is the
    number of train labels. ``origin`` says where the rows came from when curation alone
    cannot: for a version distilled from captured traffic, ``{"kind": "traffic", …}`` with
    the task, the window and the record-id range read (see :func:`niche.workflows.distil`);
    None for files and catalog datasets. It is not part of the fingerprint (the rows are).

        >>> CurationReport(rows_in=3).to_dict()["rows_in"]
        3
    """

    rows_in: int = 0
    texts_normalised: int = 0
    exact_duplicates: int = 0
    conflicting_duplicates: int = 0
    conflict_examples: list[dict[str, Any]] = field(default_factory=list)
    near_duplicates: int = 0
    near_duplicate_conflicts: int = 0
    leaks_removed: int = 0
    test_labels_unseen: int = 0
    rows_out: dict[str, int] = field(default_factory=dict)
    labels: int = 0
    seed: int = 0
    test_size: float = 0.2
    near_duplicate_threshold: float = 0.9
    origin: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready copy of every field."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CurationReport:
        """Rebuild a report from :meth:`to_dict` output; every field must be present, except
        those added since (:data:`_OPTIONAL_FIELDS`: reports saved before them lack them).

        >>> CurationReport.from_dict(CurationReport().to_dict()) == CurationReport()
        True
        """
        names = [f.name for f in fields(cls)]
        missing = [name for name in names if name not in data and name not in _OPTIONAL_FIELDS]
        if missing:
            raise DataValidationError(
                f"curation report lacks field(s) {', '.join(missing)}", column=missing[0]
            )
        unknown = sorted(set(data) - set(names))
        if unknown:
            raise DataValidationError(
                f"curation report has unknown field(s) {', '.join(unknown)}", column=unknown[0]
            )
        origin = data.get("origin")
        if origin is not None and not isinstance(origin, Mapping):
            raise DataValidationError(
                f"curation report's origin must be an object, got {origin!r}", column="origin"
            )
        return cls(**{name: data[name] for name in names if name in data})


def fingerprint_splits(splits: Mapping[str, Rows]) -> str:
    """sha256 hex of the rows' content, independent of file names, sources and line numbers.

    The digest covers, for every row of ``train`` then ``test`` in order, the bytes of
    ``orjson.dumps([split, text, label])`` followed by a newline.

        >>> fingerprint_splits({"train": rows, "test": test_rows})  # doctest: +SKIP
    """
    digest = hashlib.sha256()
    for split in SPLITS:
        rows = splits.get(split)
        if rows is None:
            continue
        for text, label in zip(rows.texts, rows.labels, strict=True):
            digest.update(orjson.dumps([split, text, label]))
            digest.update(b"\n")
    return digest.hexdigest()


@dataclass(frozen=True)
class DatasetVersion:
    """Immutable curated ``train`` and ``test`` splits, their fingerprint and report.

    Build one with :func:`~niche.data.curate`; store it with :meth:`save` and read it back
    with :meth:`load`, which re-checks the fingerprint.

        >>> version = curate(load_file("tickets.csv"))  # doctest: +SKIP
        >>> version.save(Path(".niche/datasets/tickets"))  # doctest: +SKIP
    """

    fingerprint: str
    source: str
    splits: dict[str, Rows]
    report: CurationReport

    @property
    def label_set(self) -> list[str]:
        """The sorted labels of the train split."""
        return self.splits["train"].label_set()

    def save(self, directory: str | Path, *, created_at: datetime | None = None) -> Path:
        """Write ``train.jsonl``, ``test.jsonl`` and ``version.json`` into ``directory``.

        The files are written into a temporary folder next to ``directory`` and renamed into
        place, so ``directory`` is either complete or absent. When ``directory`` already holds
        this version it is left as it is; when it holds another one,
        :class:`~niche.errors.ArtifactError` is raised (versions are immutable).
        ``created_at`` defaults to now (UTC).

            >>> version.save(Path("out/v1"))  # doctest: +SKIP
            PosixPath('out/v1')
        """
        directory = Path(directory)
        if self._already_saved(directory):
            return directory
        directory.parent.mkdir(parents=True, exist_ok=True)
        staging = directory.parent / f".{directory.name}.{secrets.token_hex(6)}.tmp"
        staging.mkdir()
        try:
            for split in SPLITS:
                _write_synced(staging / f"{split}.jsonl", _jsonl_bytes(self.splits[split]))
            stamp = (created_at or datetime.now(UTC)).isoformat()
            meta = {
                "fingerprint": self.fingerprint,
                "source": self.source,
                "created_at": stamp,
                "report": self.report.to_dict(),
            }
            _write_synced(staging / _VERSION_FILE, orjson.dumps(meta, option=orjson.OPT_INDENT_2))
            try:
                os.replace(staging, directory)
            except OSError as exc:
                if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                    raise
                # Another writer won the race; fine if it wrote this very version.
                if not self._already_saved(directory):
                    raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return directory

    def _already_saved(self, directory: Path) -> bool:
        if not directory.exists():
            return False
        meta_path = directory / _VERSION_FILE
        if not meta_path.is_file():
            if directory.is_dir() and not any(directory.iterdir()):
                return False
            raise ArtifactError(
                f"{directory} exists and is not a saved dataset version; choose another directory",
                path=directory,
            )
        existing = _read_meta(meta_path).get("fingerprint")
        if existing == self.fingerprint:
            return True
        raise ArtifactError(
            f"{directory} already holds dataset version {existing}; versions are immutable, "
            f"save {self.fingerprint} elsewhere",
            path=directory,
        )

    @classmethod
    def load(cls, directory: str | Path) -> DatasetVersion:
        """Read a version written by :meth:`save` and verify its fingerprint.

        Raises :class:`~niche.errors.ChecksumMismatchError` when the rows no longer match the
        recorded fingerprint, :class:`~niche.errors.DatasetNotFoundError` when ``directory``
        holds no saved version.

            >>> DatasetVersion.load(Path("out/v1")).fingerprint  # doctest: +SKIP
        """
        directory = Path(directory)
        meta_path = directory / _VERSION_FILE
        if not meta_path.is_file():
            raise DatasetNotFoundError(
                f"{directory}: no saved dataset version ({_VERSION_FILE} missing)"
            )
        meta = _read_meta(meta_path)
        for key in ("fingerprint", "source", "report"):
            if key not in meta:
                raise DataValidationError("missing key", path=meta_path, column=key)
        try:
            report = CurationReport.from_dict(meta["report"])
        except DataValidationError as exc:
            raise DataValidationError(exc.problem, path=meta_path, column="report") from None
        splits = {
            split: read_jsonl(directory / f"{split}.jsonl", allow_empty=True) for split in SPLITS
        }
        actual = fingerprint_splits(splits)
        if actual != meta["fingerprint"]:
            raise ChecksumMismatchError(
                f"dataset version {directory}", expected=str(meta["fingerprint"]), actual=actual
            )
        return cls(fingerprint=actual, source=str(meta["source"]), splits=splits, report=report)


def _read_meta(path: Path) -> dict[str, Any]:
    try:
        meta = orjson.loads(path.read_bytes())
    except orjson.JSONDecodeError as exc:
        raise DataValidationError(f"malformed JSON ({exc})", path=path) from None
    if not isinstance(meta, dict):
        raise DataValidationError("expected a JSON object", path=path)
    return meta


def _jsonl_bytes(rows: Rows) -> bytes:
    return b"".join(
        orjson.dumps({"text": text, "label": label}) + b"\n"
        for text, label in zip(rows.texts, rows.labels, strict=True)
    )


def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
