"""Quality metrics for label predictions: accuracy, per-class scores, macro-F1, calibration.

Pure functions over sequences of labels (``list[str]`` or numpy arrays); numpy only.

>>> accuracy(["a", "b", "b"], ["a", "b", "a"])
0.6666666666666666
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "ClassMetrics",
    "accuracy",
    "expected_calibration_error",
    "macro_f1",
    "per_class",
]

Labels = Sequence[Any] | np.ndarray


@dataclass(frozen=True)
class ClassMetrics:
    """Precision, recall and F1 of one label, and its support (rows with that true label).

    A ratio whose denominator is zero (a label never predicted, or never true) is 0.0.
    """

    precision: float
    recall: float
    f1: float
    support: int

    def to_dict(self) -> dict[str, float | int]:
        """JSON-ready form: ``{"precision": …, "recall": …, "f1": …, "support": …}``."""
        return {
            "precision": self.precision,
            "recall": self.recall,
            "f1": self.f1,
            "support": self.support,
        }


def _paired(
    y_true: Labels, y_pred: Labels, names: str = "y_true and y_pred"
) -> tuple[np.ndarray, np.ndarray]:
    true = np.asarray(y_true)
    pred = np.asarray(y_pred)
    if true.ndim != 1 or pred.ndim != 1:
        raise ValueError(f"{names} must be one-dimensional")
    if len(true) != len(pred):
        raise ValueError(f"{names} differ in length: {len(true)} != {len(pred)}")
    if len(true) == 0:
        raise ValueError(f"{names} are empty")
    return true, pred


def _as_correct(correct: np.ndarray, name: str = "correct") -> np.ndarray:
    """``correct`` as a bool array; it must hold only booleans or 0/1."""
    if correct.dtype == bool:
        return correct
    if correct.dtype.kind not in "iuf" or not np.isin(correct, (0, 1)).all():
        raise ValueError(f"{name} must hold booleans or 0/1 values")
    return correct.astype(bool)


def _encode(
    y_true: Labels, y_pred: Labels, labels: Labels | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    """Integer codes for both label arrays over one sorted class list.

    Returns ``(true_codes, pred_codes, classes, label_codes)``; ``label_codes`` are the codes
    of ``labels`` in the given order, or None when ``labels`` is None.
    """
    true, pred = _paired(y_true, y_pred)
    parts = [true, pred]
    if labels is not None:
        wanted = np.asarray(labels)
        if wanted.ndim != 1 or len(wanted) == 0:
            raise ValueError("labels must be a non-empty one-dimensional sequence")
        if len(np.unique(wanted)) != len(wanted):
            raise ValueError("labels contain duplicates")
        parts.append(wanted)
    classes, inverse = np.unique(np.concatenate(parts), return_inverse=True)
    n = len(true)
    label_codes = inverse[2 * n :] if labels is not None else None
    return inverse[:n], inverse[n : 2 * n], classes, label_codes


def _label_counts(
    true_codes: np.ndarray, pred_codes: np.ndarray, n_classes: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """True positives, predicted counts and true counts per class, shape ``(..., n_classes)``.

    Codes have shape ``(..., n)``; every leading index is counted separately (e.g. one row
    per bootstrap resample), with one ``bincount`` over offset codes instead of a Python loop.
    """
    lead = true_codes.shape[:-1]
    rows = int(np.prod(lead))
    offsets = (np.arange(rows) * n_classes)[:, None]
    t = true_codes.reshape(rows, -1) + offsets
    p = pred_codes.reshape(rows, -1) + offsets
    size = rows * n_classes
    tp = np.bincount(t[t == p], minlength=size)
    predicted = np.bincount(p.ravel(), minlength=size)
    support = np.bincount(t.ravel(), minlength=size)
    shape = (*lead, n_classes)
    return tp.reshape(shape), predicted.reshape(shape), support.reshape(shape)


def _f1(tp: np.ndarray, predicted: np.ndarray, support: np.ndarray) -> np.ndarray:
    # 2PR/(P+R) == 2TP/(predicted + support), and is 0 whenever TP is 0.
    denominator = predicted + support
    f1: np.ndarray = np.divide(2 * tp, denominator, out=np.zeros(tp.shape), where=denominator > 0)
    return f1


def _macro_from_counts(
    tp: np.ndarray, predicted: np.ndarray, support: np.ndarray, label_codes: np.ndarray | None
) -> np.ndarray | np.floating[Any]:
    """Macro-F1 over ``label_codes``, or over the classes with support when None.

    Shape ``counts.shape[:-1]``: one score per leading index, a numpy scalar for 1-D counts.
    """
    f1 = _f1(tp, predicted, support)
    macro: np.ndarray | np.floating[Any]
    if label_codes is not None:
        macro = f1[..., label_codes].mean(axis=-1)
    else:
        present = support > 0
        macro = (f1 * present).sum(axis=-1) / present.sum(axis=-1)
    return macro


def accuracy(y_true: Labels, y_pred: Labels) -> float:
    """Share of rows where the prediction equals the true label.

    >>> accuracy(["a", "b"], ["a", "a"])
    0.5
    """
    true, pred = _paired(y_true, y_pred)
    return float(np.mean(true == pred))


def per_class(
    y_true: Labels, y_pred: Labels, labels: Labels | None = None
) -> dict[str, ClassMetrics]:
    """Precision, recall, F1 and support for each label, keyed by ``str(label)``.

    ``labels`` defaults to the sorted distinct labels of ``y_true``; a label in ``labels``
    that never occurs scores 0.0 everywhere.

    >>> per_class(["a", "b"], ["a", "a"])["a"]
    ClassMetrics(precision=0.5, recall=1.0, f1=0.6666666666666666, support=1)
    """
    true_codes, pred_codes, classes, label_codes = _encode(y_true, y_pred, labels)
    tp, predicted, support = _label_counts(true_codes, pred_codes, len(classes))
    if label_codes is None:
        label_codes = np.flatnonzero(support > 0)
    f1 = _f1(tp, predicted, support)
    result = {}
    for code in label_codes:
        result[str(classes[code])] = ClassMetrics(
            precision=float(tp[code] / predicted[code]) if predicted[code] else 0.0,
            recall=float(tp[code] / support[code]) if support[code] else 0.0,
            f1=float(f1[code]),
            support=int(support[code]),
        )
    return result


def macro_f1(y_true: Labels, y_pred: Labels, labels: Labels | None = None) -> float:
    """Unweighted mean F1 over ``labels`` (default: the labels present in ``y_true``).

    Predicted labels that never occur in ``y_true`` lower the recall of the true classes
    they were given for but are not averaged themselves. This is scikit-learn's
    ``f1_score(y_true, y_pred, average="macro", labels=sorted(set(y_true)),
    zero_division=0)``.

    >>> macro_f1(["a", "b"], ["a", "a"])
    0.3333333333333333
    """
    true_codes, pred_codes, classes, label_codes = _encode(y_true, y_pred, labels)
    tp, predicted, support = _label_counts(true_codes, pred_codes, len(classes))
    return float(_macro_from_counts(tp, predicted, support, label_codes))


def expected_calibration_error(
    correct: Sequence[bool] | np.ndarray,
    confidences: Sequence[float] | np.ndarray,
    n_bins: int = 15,
) -> float:
    """Expected calibration error: Σ_bins (rows in bin / n) · |accuracy - mean confidence|.

    Bins are ``n_bins`` equal-width intervals ``[lo, hi)`` on [0, 1]; the last one is closed,
    so a confidence of exactly 1.0 falls in the last bin and 0.0 in the first.

    >>> expected_calibration_error([True, False], [0.9, 0.9])
    0.4
    """
    hits, conf = _paired(correct, confidences, "correct and confidences")
    hits = _as_correct(hits)
    conf = conf.astype(float)
    if not isinstance(n_bins, int | np.integer) or n_bins < 1:
        raise ValueError(f"n_bins must be a positive integer, got {n_bins!r}")
    if np.isnan(conf).any() or (conf < 0).any() or (conf > 1).any():
        raise ValueError("confidences must lie in [0, 1]")
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    # Inner edges only: values on an edge go to the upper bin, 1.0 to the last one.
    bins = np.searchsorted(edges[1:-1], conf, side="right")
    hit_sum = np.bincount(bins, weights=hits.astype(float), minlength=n_bins)
    conf_sum = np.bincount(bins, weights=conf, minlength=n_bins)
    # |Σhits - Σconf| / n per bin is (count/n)·|acc - mean conf| without dividing by zero.
    return float(np.abs(hit_sum - conf_sum).sum() / len(conf))
