"""A file store for dataset versions and model versions under ``NICHE_HOME``."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from niche.data import DatasetVersion
from niche.encoders import Encoder
from niche.errors import ArtifactError, ChecksumMismatchError, NotFoundError
from niche.settings import Settings
from niche.specialists.text import CONFIG_FILE, HEAD_FILE, TextSpecialist
from niche.training import TrainedModel

__all__ = ["LocalStore", "ModelRecord"]

LINEAGE_FILE = "lineage.json"
ID_LENGTH = 16


@dataclass(frozen=True)
class ModelRecord:
    """A saved model version: its id (content digest prefix), directory and lineage."""

    id: str
    path: Path
    lineage: dict[str, Any]


def _digest_files(directory: Path, names: tuple[str, ...]) -> dict[str, str]:
    return {name: hashlib.sha256((directory / name).read_bytes()).hexdigest() for name in names}


def _content_id(digests: dict[str, str]) -> str:
    joined = "\n".join(f"{name}:{digests[name]}" for name in sorted(digests))
    return hashlib.sha256(joined.encode()).hexdigest()


class LocalStore:
    """Dataset versions under ``NICHE_HOME/datasets``, model versions under ``NICHE_HOME/models``.

    Nothing is created until something is saved.
    """

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or Settings()

    @property
    def datasets_dir(self) -> Path:
        return self.settings.home / "datasets"

    @property
    def models_dir(self) -> Path:
        return self.settings.home / "models"

    # -- dataset versions ----------------------------------------------------------------

    def save_dataset(self, version: DatasetVersion) -> Path:
        """Save ``version`` (idempotent: the directory is named by its fingerprint)."""
        return version.save(self.datasets_dir / version.fingerprint[:ID_LENGTH])

    def dataset_ids(self) -> list[str]:
        if not self.datasets_dir.is_dir():
            return []
        return sorted(p.name for p in self.datasets_dir.iterdir() if not p.name.startswith("."))

    def load_dataset(self, ref: str) -> DatasetVersion:
        """The dataset version whose fingerprint starts with ``ref``."""
        return DatasetVersion.load(
            self.datasets_dir / self._resolve(ref, self.dataset_ids(), "dataset version")
        )

    # -- model versions ------------------------------------------------------------------

    def save_model(self, trained: TrainedModel) -> ModelRecord:
        """Save weights, config and lineage; the id is a digest of the weights and config."""
        self.models_dir.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=self.models_dir))
        try:
            trained.specialist.save(staging / "model")
            model_dir = staging / "model"
            digests = _digest_files(model_dir, (HEAD_FILE, CONFIG_FILE))
            model_id = _content_id(digests)[:ID_LENGTH]
            lineage = {"model_id": model_id, "sha256": digests, **trained.lineage}
            (model_dir / LINEAGE_FILE).write_text(json.dumps(lineage, indent=2) + "\n")
            target = self.models_dir / model_id
            if not target.exists():
                os.replace(model_dir, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return ModelRecord(id=model_id, path=target, lineage=lineage)

    def model_ids(self) -> list[str]:
        if not self.models_dir.is_dir():
            return []
        return sorted(p.name for p in self.models_dir.iterdir() if not p.name.startswith("."))

    def model_record(self, ref: str) -> ModelRecord:
        """The saved model whose id starts with ``ref``, its digests verified."""
        model_id = self._resolve(ref, self.model_ids(), "model")
        path = self.models_dir / model_id
        lineage_path = path / LINEAGE_FILE
        try:
            lineage = json.loads(lineage_path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ArtifactError(
                f"{lineage_path}: unreadable lineage ({exc})", path=lineage_path
            ) from exc
        for name, expected in lineage.get("sha256", {}).items():
            actual = hashlib.sha256((path / name).read_bytes()).hexdigest()
            if actual != expected:
                raise ChecksumMismatchError(str(path / name), expected=expected, actual=actual)
        return ModelRecord(id=model_id, path=path, lineage=lineage)

    def load_model(self, ref: str, encoder: Encoder) -> tuple[TextSpecialist, ModelRecord]:
        """Load the specialist saved as ``ref`` (an id or a unique prefix of one)."""
        record = self.model_record(ref)
        return TextSpecialist.load(record.path, encoder), record

    # -- lookup --------------------------------------------------------------------------

    @staticmethod
    def _resolve(ref: str, known: list[str], what: str) -> str:
        # Directories are named by the first ID_LENGTH hex digits: a full digest matches too.
        ref = ref[:ID_LENGTH]
        matches = [name for name in known if name.startswith(ref)] if ref else []
        if len(matches) == 1:
            return matches[0]
        if not matches:
            listing = ", ".join(known[:10]) or "none saved yet"
            raise NotFoundError(f"no {what} {ref!r} (known: {listing})")
        raise NotFoundError(f"{what} {ref!r} is ambiguous: {', '.join(matches)}")
