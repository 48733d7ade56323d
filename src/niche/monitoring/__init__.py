"""Monitoring statistics: drift tests and live-quality estimates on a window of traffic.

Pure functions on arrays (numpy / scipy / scikit-learn); each returns a :class:`Signal` with
its statistic, p-value or 95 % interval, threshold and verdict. ``niche monitor`` reads the
windows from the registry and calls these.

>>> from niche.monitoring import InputDriftReference, confidence_drift, agreement
>>> reference = InputDriftReference().fit(reference_embeddings)       # once per reference
>>> reference.input_drift(window_embeddings, alpha=0.01).alarm
>>> confidence_drift(held_out_confidences, window_confidences, alpha=0.01).p_value
>>> agreement(412, 500, floor=0.8).to_dict()
"""

from niche.monitoring.accuracy import accuracy, agreement, estimated_accuracy, wilson_interval
from niche.monitoring.drift import (
    InputDriftReference,
    cascade_rate,
    confidence_drift,
    input_drift,
    input_drift_projection,
    prediction_drift,
)
from niche.monitoring.signals import MIN_ROWS, Signal
from niche.monitoring.sla import sla_signals

__all__ = [
    "MIN_ROWS",
    "InputDriftReference",
    "Signal",
    "accuracy",
    "agreement",
    "cascade_rate",
    "confidence_drift",
    "estimated_accuracy",
    "input_drift",
    "input_drift_projection",
    "prediction_drift",
    "sla_signals",
    "wilson_interval",
]
