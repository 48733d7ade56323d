"""Train a :class:`~niche.specialists.TextSpecialist` on a dataset version, with lineage."""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from niche.data import DatasetVersion
from niche.encoders import Encoder
from niche.errors import ConfigurationError
from niche.progress import NO_PROGRESS, Progress
from niche.specialists.text import TextSpecialist

__all__ = ["TrainedModel", "code_version", "stratified_sample", "train_text_specialist"]


@dataclass(frozen=True)
class TrainedModel:
    """A fitted specialist and where it came from (dataset, encoder, parameters, code)."""

    specialist: TextSpecialist
    lineage: dict[str, Any] = field(default_factory=dict)


def stratified_sample(
    texts: list[str], labels: list[str], fraction: float, *, seed: int = 0
) -> tuple[list[str], list[str]]:
    """A ``fraction`` of the rows of each label (at least 2 per label), in original order.

    >>> stratified_sample(texts, labels, 0.05, seed=0)  # a deliberately weak model
    """
    if not 0 < fraction <= 1:
        raise ConfigurationError(f"fraction must be in (0, 1], got {fraction}")
    rng = np.random.default_rng(seed)
    by_label: dict[str, list[int]] = {}
    for i, label in enumerate(labels):
        by_label.setdefault(label, []).append(i)
    keep: list[int] = []
    for label in sorted(by_label):
        rows = by_label[label]
        n = min(len(rows), max(2, round(len(rows) * fraction)))
        keep.extend(rng.choice(rows, size=n, replace=False).tolist())
    keep.sort()
    return [texts[i] for i in keep], [labels[i] for i in keep]


@lru_cache(maxsize=1)
def code_version() -> dict[str, str | None]:
    """niche's version and, when running from a git checkout, its revision."""
    from niche import __version__

    revision: str | None = None
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
        if result.returncode == 0:
            revision = result.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        revision = None
    return {"niche_version": __version__, "git_revision": revision}


def train_text_specialist(
    version: DatasetVersion,
    encoder: Encoder,
    *,
    c: float = 10.0,
    seed: int = 0,
    fraction: float = 1.0,
    progress: Progress = NO_PROGRESS,
) -> TrainedModel:
    """Fit a text specialist on ``version``'s train split.

    >>> trained = train_text_specialist(version, default_encoder())
    >>> trained.lineage["dataset_fingerprint"] == version.fingerprint
    True
    """
    train = version.splits["train"]
    texts, labels = list(train.texts), list(train.labels)
    if fraction != 1.0:
        texts, labels = stratified_sample(texts, labels, fraction, seed=seed)
    started = time.perf_counter()
    specialist = TextSpecialist(encoder, c=c, seed=seed).fit(texts, labels, progress=progress)
    lineage = {
        "kind": specialist.kind,
        "dataset_fingerprint": version.fingerprint,
        "dataset_source": version.source,
        "train_rows": len(texts),
        "train_fraction": fraction,
        "labels": len(specialist.label_set_),
        "encoder_id": encoder.id,
        "params": specialist.get_params(),
        "temperature": specialist.temperature_,
        "fit_seconds": round(time.perf_counter() - started, 3),
        "trained_at": datetime.now(UTC).isoformat(timespec="seconds"),
        **code_version(),
    }
    return TrainedModel(specialist=specialist, lineage=lineage)
