"""The signals of one monitoring check, each computed by :mod:`niche.monitoring` over the
champion's window of traffic and its reference.

    >>> signals = drift_signals(champion, spec, ours, serving, database=url, seed=0,
    ...                         progress=NO_PROGRESS)
    >>> signals += quality_signals(champion, spec, ours) + sla_signals(spec, records)

Input drift on the specialist's own embeddings (and a cheap test on a projection),
prediction-mix drift, confidence drift, the cascade rate's change, live agreement with the
general model on the randomly sampled shadow traffic, accuracy on gold labels (else its
estimate from the calibrated confidences), and SLA compliance. A window of fewer than
``monitoring.min_rows`` records is reported with "insufficient data" and raises no alarm.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any, Final

import numpy as np

from niche.progress import Progress
from niche.workflows.monitor_reference import Champion, record_text

if TYPE_CHECKING:
    from niche.monitoring import Signal
    from niche.registry import StoredTrafficRecord
    from niche.registry.tasks import TaskSpec

__all__ = [
    "CASCADED_ROUTES",
    "drift_signals",
    "quality_signals",
    "sla_signals",
    "too_few",
    "unjudged_signal",
    "with_detail",
]

CASCADED_ROUTES: Final = frozenset({"general", "general-fallback", "specialist-fallback"})
"""Routes on which the specialist was asked but the general model was too: it was unsure
(``general``; ``specialist-fallback`` when the general model then failed) or it failed
(``general-fallback``)."""


def too_few(signal: Signal, n: int, min_rows: int) -> Signal:
    """``signal`` on a window under ``monitoring.min_rows``: kept for reading, never an alarm."""
    if n >= min_rows:
        return signal
    reason = f"{n} rows in the window, fewer than monitoring.min_rows ({min_rows})"
    return replace(
        signal, alarm=False, detail={**signal.detail, "insufficient": True, "reason": reason}
    )


def with_detail(signal: Signal, **detail: Any) -> Signal:
    return replace(signal, detail={**signal.detail, **detail})


def drift_signals(
    champion: Champion | None,
    spec: TaskSpec,
    ours: list[StoredTrafficRecord],
    serving: list[StoredTrafficRecord],
    *,
    database: str,
    seed: int,
    progress: Progress,
) -> list[Signal]:
    """Input, prediction-mix, confidence and cascade-rate drift of the champion's window."""
    from niche import monitoring
    from niche.monitoring import InputDriftReference

    mon = spec.monitoring
    reference = champion.reference if champion is not None else None
    signals: list[Signal] = []
    n = len(ours)

    # Input drift: the training rows' embeddings (else the first serving window's texts).
    with_text = [r for r in ours if record_text(r) is not None]
    encoder = champion.encoder if champion is not None else None
    names = ("input_drift", "input_drift_projection")
    if encoder is None:
        why = "the specialist has no encoder" if champion is not None else "no reference"
        signals += [
            unjudged_signal(name, "skipped", mon.input_drift_alpha, n, why) for name in names
        ]
    else:
        source = "training rows"
        inputs = reference.inputs if reference is not None else None
        if inputs is None:
            source = "first serving window"
            serving_texts = [t for t in map(record_text, serving) if t is not None]
            if serving_texts:
                inputs = InputDriftReference(seed=seed).fit(encoder.encode(serving_texts))
        if inputs is None or not with_text or champion is None:
            why = "no reference rows" if inputs is None else "no texts in the window"
            signals += [
                unjudged_signal(name, "skipped", mon.input_drift_alpha, len(with_text), why)
                for name in names
            ]
        else:
            current = champion.embed(database, with_text, progress)
            for test in (inputs.input_drift, inputs.input_drift_projection):
                signal = test(current, alpha=mon.input_drift_alpha, min_rows=mon.min_rows)
                signals.append(with_detail(signal, reference=source))

    # Prediction mix and confidence: held-out rows (else the first serving window).
    labels_now = [r.specialist_label for r in ours if r.specialist_label is not None]
    confidences_now = np.array(
        [r.specialist_confidence for r in ours if r.specialist_confidence is not None], dtype=float
    )
    if reference is not None and reference.labels:
        source = f"held-out rows ({reference.held_out_split})"
        labels_ref, confidences_ref = reference.labels, reference.confidences
    else:
        source = "first serving window"
        labels_ref = [r.specialist_label for r in serving if r.specialist_label is not None]
        confidences_ref = np.array(
            [r.specialist_confidence for r in serving if r.specialist_confidence is not None],
            dtype=float,
        )
    label_set = sorted(set(spec.labels) | set(labels_ref) | set(labels_now))
    if labels_ref and labels_now:
        signal = monitoring.prediction_drift(
            labels_ref,
            labels_now,
            labels=label_set,
            alpha=mon.prediction_drift_alpha,
            min_rows=mon.min_rows,
        )
        signals.append(with_detail(signal, reference=source))
    else:
        signals.append(
            unjudged_signal(
                "prediction_drift",
                "skipped",
                mon.prediction_drift_alpha,
                len(labels_now),
                "no reference answers" if not labels_ref else "no answers in the window",
            )
        )
    if len(confidences_ref) and len(confidences_now):
        signal = monitoring.confidence_drift(
            confidences_ref,
            confidences_now,
            alpha=mon.confidence_drift_alpha,
            min_rows=mon.min_rows,
        )
        signals.append(with_detail(signal, reference=source))
    else:
        signals.append(
            unjudged_signal(
                "confidence_drift",
                "skipped",
                mon.confidence_drift_alpha,
                len(confidences_now),
                "no reference confidences" if not len(confidences_ref) else "none in the window",
            )
        )

    # Cascade rate: the first serving window (else what held-out confidences predict).
    cascaded_now = sum(r.route in CASCADED_ROUTES for r in ours)
    if len(serving) >= mon.min_rows:
        ref_cascaded, ref_n = sum(r.route in CASCADED_ROUTES for r in serving), len(serving)
        source = "first serving window"
    elif reference is not None and len(reference.confidences):
        ref_cascaded = int(np.sum(reference.confidences < spec.cascade_threshold))
        ref_n = len(reference.confidences)
        source = f"held-out rows ({reference.held_out_split}) under cascade_threshold"
    else:
        ref_cascaded, ref_n, source = 0, 0, ""
    if ref_n and n:
        signal = monitoring.cascade_rate(
            ref_cascaded,
            ref_n,
            cascaded_now,
            n,
            alpha=mon.cascade_rate_alpha,
            min_rows=mon.min_rows,
        )
        signals.append(with_detail(signal, reference=source))
    else:
        signals.append(
            unjudged_signal(
                "cascade_rate",
                "skipped",
                mon.cascade_rate_alpha,
                n,
                "no reference window yet" if not ref_n else "no records in the window",
            )
        )
    return signals


def quality_signals(
    champion: Champion | None, spec: TaskSpec, ours: list[StoredTrafficRecord]
) -> list[Signal]:
    """Agreement with the general model, and accuracy (on gold labels, else estimated)."""
    from niche import monitoring

    mon = spec.monitoring
    signals: list[Signal] = []
    both = [r for r in ours if r.specialist_label is not None and r.general_label is not None]
    sampled = [r for r in both if r.sampled]
    agreed = sum(r.specialist_label == r.general_label for r in sampled)
    every = {"n": len(both), "agreed": sum(r.specialist_label == r.general_label for r in both)}
    if sampled:
        signal = monitoring.agreement(agreed, len(sampled), floor=mon.min_agreement)
        signals.append(with_detail(signal, all_records=every, sample="random shadow requests"))
    else:
        signals.append(
            unjudged_signal(
                "agreement",
                "wilson",
                mon.min_agreement,
                0,
                "no randomly sampled shadow requests in the window"
                + (f" ({len(both)} cascaded or shadowed ones, biased)" if both else ""),
            )
        )
    # sla.min_quality is on the task's metric: a floor for live accuracy only when that is it.
    floor = mon.min_accuracy
    if floor is None and spec.metric == "accuracy":
        floor = spec.sla.min_quality
    gold = [r for r in ours if r.gold_label is not None and r.specialist_label is not None]
    if gold:
        correct = sum(r.specialist_label == r.gold_label for r in gold)
        signals.append(monitoring.accuracy(correct, len(gold), floor=floor))
    else:
        confidences = np.array(
            [r.specialist_confidence for r in ours if r.specialist_confidence is not None],
            dtype=float,
        )
        if len(confidences):
            signal = monitoring.estimated_accuracy(confidences, floor=floor)
            signals.append(too_few(signal, len(confidences), mon.min_rows))
        else:
            signals.append(
                unjudged_signal(
                    "estimated_accuracy", "cbpe", floor, 0, "no specialist answers in the window"
                )
            )
    return signals


def sla_signals(spec: TaskSpec, records: list[StoredTrafficRecord]) -> list[Signal]:
    """Latency p95, error rate and cost per 1k requests over every record of the window.

    A failed request is one the gateway answered with a 5xx (client errors are not the
    service's failures)."""
    from niche import monitoring

    mon = spec.monitoring
    signals = monitoring.sla_signals(
        np.array([r.latency_ms for r in records], dtype=float),
        np.array([r.status >= 500 for r in records], dtype=bool),
        np.array([r.cost_usd for r in records], dtype=float),
        latency_p95_ms=spec.sla.latency_p95_ms,
        max_error_rate=mon.max_error_rate,
        max_cost_per_1k_usd=spec.sla.max_cost_per_1k_usd,
    )
    return [too_few(signal, len(records), mon.min_rows) for signal in signals]


def unjudged_signal(name: str, method: str, threshold: float | None, n: int, reason: str) -> Signal:
    """A signal that could not be computed: reported, never an alarm."""
    from niche.monitoring.signals import insufficient

    return insufficient(name, method, threshold, n, reason=reason)
