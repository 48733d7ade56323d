"""Evaluation: metrics with bootstrap intervals, paired tests, latency, cost and cascades.

>>> from niche.evaluation import compare, evaluate
>>> spec = evaluate(specialist, texts, labels, cpu_hour_usd=0.045, watts_per_core=10.0)
>>> general = evaluate(zero_shot, texts, labels, cpu_hour_usd=0.045, watts_per_core=10.0)
>>> compare(spec, general, labels).to_dict()["paired_test"]["p_value"]

Cost and energy are pure functions of recorded usage:
``cost_usd(predictions.usage, Prices(cpu_hour_usd=0.045))``.
"""

from niche.evaluation.cascade import DEFAULT_THRESHOLDS, CascadePoint, cascade_curve
from niche.evaluation.cost import Prices, cost_per_1m, cost_usd, energy_wh, usage_per_1m
from niche.evaluation.evaluate import Comparison, Evaluation, compare, evaluate
from niche.evaluation.metrics import (
    ClassMetrics,
    accuracy,
    expected_calibration_error,
    macro_f1,
    per_class,
)
from niche.evaluation.performance import (
    Latency,
    Throughput,
    cost_per_1m_usd,
    measure_latency,
    measure_throughput,
    wh_per_query,
)
from niche.evaluation.stats import (
    McNemar,
    PairedBootstrap,
    PairedTest,
    accuracy_ci,
    bootstrap_ci,
    macro_f1_ci,
    mcnemar,
    paired_bootstrap,
    paired_macro_f1_bootstrap,
    paired_test,
)

__all__ = [
    "DEFAULT_THRESHOLDS",
    "CascadePoint",
    "ClassMetrics",
    "Comparison",
    "Evaluation",
    "Latency",
    "McNemar",
    "PairedBootstrap",
    "PairedTest",
    "Prices",
    "Throughput",
    "accuracy",
    "accuracy_ci",
    "bootstrap_ci",
    "cascade_curve",
    "compare",
    "cost_per_1m",
    "cost_per_1m_usd",
    "cost_usd",
    "energy_wh",
    "evaluate",
    "expected_calibration_error",
    "macro_f1",
    "macro_f1_ci",
    "mcnemar",
    "measure_latency",
    "measure_throughput",
    "paired_bootstrap",
    "paired_macro_f1_bootstrap",
    "paired_test",
    "per_class",
    "usage_per_1m",
    "wh_per_query",
]
