"""Train a :class:`~niche.specialists.TextSpecialist` on a dataset version, with lineage.

:func:`train_text_specialist` is ``train(version, "text", FitContext(...))`` with the text
kind's options as keywords.
"""

from __future__ import annotations

from niche.data import DatasetVersion
from niche.encoders import Encoder
from niche.progress import NO_PROGRESS, Progress
from niche.specialists import FitContext
from niche.training.fit import TrainedModel, code_version, stratified_sample, train

__all__ = ["TrainedModel", "code_version", "stratified_sample", "train_text_specialist"]


def train_text_specialist(
    version: DatasetVersion,
    encoder: Encoder,
    *,
    c: float | None = None,
    metric: str = "accuracy",
    seed: int = 0,
    fraction: float = 1.0,
    progress: Progress = NO_PROGRESS,
) -> TrainedModel:
    """Fit a text specialist on ``version``'s train split (``c=None``: the head's C and class
    weighting chosen by cross-validation on ``metric``).

    >>> trained = train_text_specialist(version, default_encoder())
    >>> trained.lineage["dataset_fingerprint"] == version.fingerprint
    True
    """
    context = FitContext(
        encoder=encoder, seed=seed, progress=progress, options={"c": c}, metric=metric
    )
    return train(version, "text", context, fraction=fraction)
