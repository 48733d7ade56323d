"""Choosing the confidence threshold between a cheap first tier and a second one.

Used by the two-stage text kind (:mod:`niche.specialists.twostage`): both tiers are fitted on
the rows :func:`validation_split` keeps, and :func:`choose_threshold` picks, on the rows it
holds out, the lowest threshold whose routing costs at most ``max_loss`` accuracy.

    >>> fit_rows, held_rows = validation_split(targets, 0.2, seed=0)
    >>> choose_threshold(p_static[held_rows], p_minilm[held_rows], targets[held_rows])["coverage"]
    0.78
"""

from __future__ import annotations

from typing import Any

import numpy as np

from niche.specialists.holdout import stratified_holdout

__all__ = ["choose_threshold", "validation_split"]


def choose_threshold(
    static_probabilities: np.ndarray,
    minilm_probabilities: np.ndarray,
    targets: np.ndarray,
    *,
    max_loss: float = 0.005,
) -> dict[str, Any]:
    """The lowest threshold whose routing loses at most ``max_loss`` accuracy against MiniLM.

    A row goes to the static tier when its static confidence is above the threshold. The
    candidates are 0 and each distinct static confidence; when even the highest routes rows at
    a loss, or routes none, the threshold is 1 (every row to MiniLM). Returns the threshold and
    what it gives on these rows: ``coverage`` (share answered by the static tier) and the
    accuracies of ``static``, ``minilm`` and ``combined``.

        >>> choose_threshold(p_static, p_minilm, y)["threshold"]
        0.71
    """
    n = len(targets)
    if n == 0:
        return {"threshold": 1.0, "coverage": 0.0, "rows": 0}
    confidence = static_probabilities.max(axis=1)
    static_right = static_probabilities.argmax(axis=1) == targets
    minilm_right = minilm_probabilities.argmax(axis=1) == targets
    minilm_accuracy = float(minilm_right.mean())
    candidates = np.concatenate([[0.0], np.unique(confidence)])
    threshold = 1.0
    for candidate in candidates:  # ascending: the first that qualifies is the lowest
        routed = confidence > candidate
        if not routed.any():
            break
        combined = float(np.where(routed, static_right, minilm_right).mean())
        if combined >= minilm_accuracy - max_loss - 1e-12:
            threshold = float(candidate)
            break
    routed = confidence > threshold
    return {
        "threshold": threshold,
        "rows": n,
        "coverage": float(routed.mean()),
        "static_accuracy": float(static_right.mean()),
        "minilm_accuracy": minilm_accuracy,
        "combined_accuracy": float(np.where(routed, static_right, minilm_right).mean()),
        "max_loss": max_loss,
    }


def validation_split(targets: np.ndarray, share: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Stratified hold-out of ``share`` of each label with ≥ 3 rows (every label keeps two
    to fit on): the row indices to fit on and those held out, each sorted.

        >>> fit_rows, held_rows = validation_split(targets, 0.2, seed=0)
    """
    return stratified_holdout(targets, share, seed=seed, min_kept=2)
