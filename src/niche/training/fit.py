"""Fit a specialist of any kind on a dataset version, and record its lineage.

>>> trained = train(version, "text", FitContext(settings, encoder=encoder))
>>> trained.specialist.kind, trained.lineage["dataset_fingerprint"] == version.fingerprint
('text', True)
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from niche.data import DatasetVersion
from niche.errors import ConfigurationError, ValidationError
from niche.specialists import FitContext, Specialist, SpecialistKind, get_kind

__all__ = ["TrainedModel", "code_version", "stratified_sample", "train"]


@dataclass(frozen=True)
class TrainedModel:
    """A fitted specialist and where it came from (dataset, encoder, parameters, code)."""

    specialist: Specialist
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


def _training_rows(
    version: DatasetVersion, split: str = "train", fraction: float = 1.0, *, seed: int = 0
) -> tuple[list[str], list[str]]:
    """The texts and labels :func:`train` fits on: ``version``'s ``split``, sampled to
    ``fraction`` of each label's rows (seeded) when below 1."""
    if split not in version.splits:
        raise ValidationError(
            f"dataset version {version.fingerprint[:16]} has no split {split!r} "
            f"(splits: {', '.join(version.splits)})",
            param="split",
        )
    rows = version.splits[split]
    texts, labels = list(rows.texts), list(rows.labels)
    if fraction != 1.0:
        texts, labels = stratified_sample(texts, labels, fraction, seed=seed)
    return texts, labels


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


def _fit_or_reuse(
    kind: SpecialistKind,
    version: DatasetVersion,
    split: str,
    fraction: float,
    texts: list[str],
    labels: list[str],
    context: FitContext,
) -> tuple[Specialist, str | None, float | None]:
    """The fitted specialist, whether it came from the head cache (None: not cacheable) and,
    for a cached one, the seconds its original fit took (what training it cost)."""
    from niche.training.head_cache import HeadCache, cache_key, fit_key_parts

    identity = kind.fit_identity(context)
    if identity is None:
        return kind.fit(texts, labels, context), None, None
    if not context.settings.get("NICHE_HEAD_CACHE"):
        return kind.fit(texts, labels, context), "off", None
    parts = fit_key_parts(version, split, fraction, context.seed, kind.name, identity)
    key = cache_key(parts)
    cache = HeadCache(context.settings.cache_dir / "heads")
    cached = cache.get(key, kind, context)
    if cached is not None:
        with context.progress.task(
            f"reusing the head fitted before (cache {key[:12]})", total=None
        ):
            pass
        specialist, original_seconds = cached
        return specialist, "hit", original_seconds
    started = time.perf_counter()
    specialist = kind.fit(texts, labels, context)
    cache.put(key, parts, specialist, fit_seconds=time.perf_counter() - started)
    return specialist, "miss", None


def _utc_now() -> datetime:
    return datetime.now(UTC)


def train(
    version: DatasetVersion,
    kind: str = "text",
    context: FitContext | None = None,
    *,
    fraction: float = 1.0,
    split: str = "train",
    clock: Callable[[], float] = time.perf_counter,
    now: Callable[[], datetime] = _utc_now,
) -> TrainedModel:
    """Fit a specialist of ``kind`` on ``version``'s ``split``, with its lineage.

    ``context`` carries the settings, the encoder, the seed, progress, the kind's options and
    the task's metric (default: ``FitContext()``). ``fraction`` < 1 trains on a stratified
    sample (seeded by ``context.seed``); ``clock`` times the fit and ``now`` stamps it.

    A kind with a :meth:`~niche.specialists.SpecialistKind.fit_identity` (the text kind) is
    fitted once per dataset version, split, fraction, seed and identity: a second call loads
    the head cached under ``NICHE_CACHE_DIR/heads`` (:mod:`niche.training.head_cache`) and
    lineage says ``head_cache: hit`` (``miss`` when fitted, ``off`` when ``NICHE_HEAD_CACHE``
    is false).

    >>> trained = train(version, "text", FitContext(encoder=encoder, options={"c": 1.0}))
    >>> trained.lineage["params"]["c"]
    1.0
    """
    context = FitContext() if context is None else context
    texts, labels = _training_rows(version, split, fraction, seed=context.seed)
    specialist_kind = get_kind(kind)
    started = clock()
    specialist, cached, original_seconds = _fit_or_reuse(
        specialist_kind, version, split, fraction, texts, labels, context
    )
    fit_seconds = clock() - started
    # A reused head cost its original fit: TCO reads fit_seconds as the training cost.
    reuse = {} if original_seconds is None else {"reuse_seconds": round(fit_seconds, 3)}
    if original_seconds is not None:
        fit_seconds = original_seconds
    lineage = {
        "kind": specialist.kind,
        "dataset_fingerprint": version.fingerprint,
        "dataset_source": version.source,
        "train_rows": len(texts),
        "train_fraction": fraction,
        "labels": len(specialist.label_set),
        **specialist_kind.lineage(specialist),
        **({"head_cache": cached} if cached is not None else {}),
        "fit_seconds": round(fit_seconds, 3),
        **reuse,
        "trained_at": now().isoformat(timespec="seconds"),
        **code_version(),
    }
    return TrainedModel(specialist=specialist, lineage=lineage)
