"""What a champion's monitoring checks compare with: its reference, built once per model
version and process from its dataset version (not its traffic), and its window's embeddings.

    >>> champion = load_champion(record, spec, settings, registry, encoder=None, seed=0,
    ...                          progress=NO_PROGRESS)
    >>> champion.reference.training_rows
    1000

The reference is a seeded sample of the version's training rows (what its inputs looked
like: the input-drift reference) and of its held-out rows (its answers and confidences on
data it did not learn). Champions are cached in memory per (artifact, dataset, sample size,
seed, encoder); the loop checks every few minutes.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Final

import numpy as np

from niche.errors import ArtifactError, ChecksumMismatchError, NotFoundError
from niche.progress import Progress
from niche.settings import Settings

if TYPE_CHECKING:
    from niche.encoders import Encoder
    from niche.monitoring import InputDriftReference
    from niche.registry import ModelVersionRecord, Registry, StoredTrafficRecord
    from niche.registry.tasks import TaskSpec

__all__ = ["UNREADABLE", "Champion", "Reference", "load_champion", "record_text"]

UNREADABLE: Final = (ArtifactError, ChecksumMismatchError, NotFoundError)
"""What a champion whose artifact or dataset files are gone or damaged raises: its check goes
on with what the traffic shows."""

_CACHED_REFERENCES: Final = 16


@dataclass(frozen=True)
class Reference:
    """What a champion's checks compare with, from its dataset version (not its traffic)."""

    inputs: InputDriftReference | None  # fitted on the training rows' embeddings
    labels: list[str]  # the champion's answers on held-out rows
    confidences: np.ndarray  # its top-class confidences on them
    training_rows: int
    held_out_rows: int
    held_out_split: str | None  # "test", or "train" when the version has no test rows
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Champion:
    record: ModelVersionRecord
    encoder: Encoder | None  # None: its kind has no encoder (remote, zero-shot)
    reference: Reference
    # The last window's embeddings, by database URL and record id: the next check (the loop
    # checks every few minutes) encodes only the records that arrived since.
    seen: dict[str, dict[int, np.ndarray]] = field(default_factory=dict)

    def embed(
        self, database: str, records: Sequence[StoredTrafficRecord], progress: Progress
    ) -> np.ndarray:
        """Embeddings of ``records``' texts (each has one), reusing the last window's."""
        if self.encoder is None:
            raise ValueError("a champion without an encoder embeds nothing")
        known = self.seen.get(database, {})
        missing = [r for r in records if r.id not in known]
        fresh = {r.id: known[r.id] for r in records if r.id in known}
        if missing:
            with progress.task("embedding the window", total=len(missing)) as step:
                vectors = np.asarray(
                    self.encoder.encode([record_text(r) or "" for r in missing]), dtype=np.float32
                )
                step(len(missing))
            fresh.update(zip((r.id for r in missing), vectors, strict=True))
        self.seen[database] = fresh
        return np.stack([fresh[r.id] for r in records])


_CACHE: OrderedDict[tuple[Any, ...], Champion] = OrderedDict()
_CACHE_LOCK = threading.Lock()


def _sample(texts: Sequence[str], size: int, rng: np.random.Generator) -> list[str]:
    if len(texts) <= size:
        return list(texts)
    chosen = np.sort(rng.choice(len(texts), size=size, replace=False))
    return [texts[i] for i in chosen]


def load_champion(
    record: ModelVersionRecord,
    spec: TaskSpec,
    settings: Settings,
    registry: Registry,
    *,
    encoder: Encoder | None,
    seed: int,
    progress: Progress,
) -> Champion:
    """The champion's encoder and reference, cached per (artifact, dataset, sample, encoder)."""
    size = spec.monitoring.reference_rows
    encoder_key = id(encoder) if encoder is not None else str(settings.cache_dir)
    key = (record.artifact_digest, record.dataset_fingerprint, size, seed, encoder_key)
    with _CACHE_LOCK:
        cached = _CACHE.get(key)
        if cached is not None:
            _CACHE.move_to_end(key)
            return cached
    champion = _build_champion(
        record, settings, registry, encoder=encoder, size=size, seed=seed, progress=progress
    )
    with _CACHE_LOCK:
        _CACHE[key] = champion
        while len(_CACHE) > _CACHED_REFERENCES:
            _CACHE.popitem(last=False)
    return champion


def _build_champion(
    record: ModelVersionRecord,
    settings: Settings,
    registry: Registry,
    *,
    encoder: Encoder | None,
    size: int,
    seed: int,
    progress: Progress,
) -> Champion:
    from niche.monitoring import InputDriftReference
    from niche.workflows.data import open_dataset
    from niche.workflows.models import load_specialist

    notes: list[str] = []
    empty = Reference(None, [], np.zeros(0), 0, 0, None)
    predictor = load_specialist(record, settings, encoder=encoder)
    own_encoder = getattr(predictor, "encoder", None)
    proba = getattr(predictor, "predict_proba_embeddings", None)
    label_set = list(getattr(predictor, "label_set", None) or [])
    if own_encoder is None or proba is None or not label_set:
        notes.append(
            f"v{record.version} ({record.kind}) has no encoder of its own: input drift is not "
            "checked, and its answers are compared with its first serving window"
        )
        return Champion(record, None, replace(empty, notes=tuple(notes)))
    try:
        version = open_dataset(record.dataset_fingerprint, settings, registry=registry)
    except UNREADABLE as exc:
        notes.append(
            f"the training rows of v{record.version} (dataset {record.dataset_fingerprint[:12]}) "
            f"cannot be read ({exc}): compared with its first serving window only"
        )
        return Champion(record, own_encoder, replace(empty, notes=tuple(notes)))
    rng = np.random.default_rng(seed)
    train = version.splits["train"].texts
    test = version.splits["test"].texts if "test" in version.splits else ()
    held_out_split = "test" if test else "train"
    if not test:
        notes.append(
            f"dataset {record.dataset_fingerprint[:12]} has no held-out rows: confidences are "
            "compared with those on training rows, which run high"
        )
    train_sample = _sample(train, size, rng)
    held_out = _sample(test or train, size, rng)
    with progress.task("embedding the reference", total=len(train_sample) + len(held_out)) as step:
        embeddings = np.asarray(own_encoder.encode(train_sample), dtype=np.float32)
        step(len(train_sample))
        probabilities = np.asarray(proba(np.asarray(own_encoder.encode(held_out))))
        step(len(held_out))
    best = probabilities.argmax(axis=1)
    reference = Reference(
        inputs=InputDriftReference(seed=seed).fit(embeddings),
        labels=[label_set[i] for i in best],
        confidences=probabilities[np.arange(len(best)), best],
        training_rows=len(train_sample),
        held_out_rows=len(held_out),
        held_out_split=held_out_split,
        notes=tuple(notes),
    )
    return Champion(record, own_encoder, reference)


def record_text(record: StoredTrafficRecord) -> str | None:
    """What the specialist classified: the record's text, else its input when a string."""
    if record.text:
        return record.text
    return record.input if isinstance(record.input, str) and record.input else None
