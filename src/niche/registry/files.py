"""Dataset version files under ``NICHE_HOME/datasets/<fingerprint prefix>``.

The registry database records each dataset version and where its files are; this store
writes and finds the files (JSONL splits + ``version.json``).

    >>> path = LocalStore(Settings()).save_dataset(version)
"""

from __future__ import annotations

from pathlib import Path

from niche.data import DatasetVersion
from niche.errors import NotFoundError
from niche.settings import Settings

__all__ = ["ID_LENGTH", "LocalStore"]

ID_LENGTH = 16


class LocalStore:
    """Dataset versions under ``NICHE_HOME/datasets``. Nothing is created until a save."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or Settings()

    @property
    def datasets_dir(self) -> Path:
        return self.settings.home / "datasets"

    def save_dataset(self, version: DatasetVersion) -> Path:
        """Save ``version`` (idempotent: the directory is named by its fingerprint)."""
        return version.save(self.datasets_dir / version.fingerprint[:ID_LENGTH])

    def dataset_ids(self) -> list[str]:
        if not self.datasets_dir.is_dir():
            return []
        return sorted(p.name for p in self.datasets_dir.iterdir() if not p.name.startswith("."))

    def load_dataset(self, ref: str) -> DatasetVersion:
        """The dataset version whose fingerprint starts with ``ref``."""
        name = _resolve(ref, self.dataset_ids(), "dataset version")
        return DatasetVersion.load(self.datasets_dir / name)


def _resolve(ref: str, known: list[str], what: str) -> str:
    # Directories are named by the first ID_LENGTH hex digits: a full digest matches too.
    prefix = ref[:ID_LENGTH]
    matches = [name for name in known if name.startswith(prefix)] if prefix else []
    if len(matches) == 1:
        return matches[0]
    if not matches:
        listing = ", ".join(known[:10]) or "none saved yet"
        raise NotFoundError(f"no {what} {ref!r} (known: {listing})")
    raise NotFoundError(f"{what} {ref!r} is ambiguous: {', '.join(matches)}")
