"""Cost and energy as pure functions of recorded usage; evaluate() prices its batch's usage."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

from niche.evaluation import (
    Prices,
    cost_per_1m_usd,
    cost_usd,
    energy_wh,
    evaluate,
    usage_per_1m,
    wh_per_query,
)
from niche.settings import Settings
from niche.specialists import Predictions, Usage


def test_cost_of_compute_and_of_tokens_exact() -> None:
    prices = Prices(cpu_hour_usd=0.05, input_per_1m_tokens_usd=2.5, output_per_1m_tokens_usd=10.0)
    assert cost_usd(Usage(compute_s=3600.0), prices) == pytest.approx(0.05)
    assert cost_usd(Usage(input_tokens=1_000_000), prices) == pytest.approx(2.5)
    assert cost_usd(Usage(output_tokens=200), prices) == pytest.approx(200 * 10.0 / 1e6)
    both = Usage(compute_s=36.0, input_tokens=400, output_tokens=2)
    assert cost_usd(both, prices) == pytest.approx(0.0005 + (400 * 2.5 + 2 * 10.0) / 1e6)
    assert cost_usd(Usage(), prices) == 0.0
    # Unpriced tokens cost nothing: a local specialist is priced by its compute alone.
    assert cost_usd(Usage(compute_s=36.0, input_tokens=10**6), Prices(cpu_hour_usd=0.05)) == (
        pytest.approx(0.0005)
    )


def test_cost_is_additive_over_usage() -> None:
    prices = Prices(cpu_hour_usd=0.045, input_per_1m_tokens_usd=0.15)
    a, b = Usage(compute_s=0.5, input_tokens=10), Usage(compute_s=1.5, input_tokens=30)
    assert cost_usd(a + b, prices) == pytest.approx(cost_usd(a, prices) + cost_usd(b, prices))


def test_energy_counts_compute_only() -> None:
    assert energy_wh(Usage(compute_s=0.0018), watts_per_core=2.0) == pytest.approx(1e-6)
    assert energy_wh(Usage(compute_s=1.0, input_tokens=500), watts_per_core=36.0) == 0.01


def test_usage_per_1m_scales_compute_and_tokens() -> None:
    assert usage_per_1m(Usage(compute_s=2.0, input_tokens=30), 1000) == Usage(
        compute_s=2000.0, input_tokens=30_000, output_tokens=None
    )
    with pytest.raises(ValueError, match="n must be at least 1"):
        usage_per_1m(Usage(), 0)


def test_the_older_helpers_are_the_same_functions_bit_for_bit() -> None:
    for cpu_s_per_item in (0.0036, 0.001, 0.0, 1.7e-4, 0.123456789):
        for price in (0.05, 0.045, 1.0):
            assert cost_per_1m_usd(cpu_s_per_item, price) == cpu_s_per_item * 1e6 / 3600 * price
        for watts in (2.0, 10.0):
            assert wh_per_query(cpu_s_per_item, watts) == cpu_s_per_item * watts / 3600


def test_prices_from_settings() -> None:
    settings = Settings(
        cpu_hour_usd=0.1,
        general_price_input_per_1m_tokens_usd=0.15,
        general_price_output_per_1m_tokens_usd=0.6,
    )
    assert Prices.from_settings(settings) == Prices(0.1, 0.15, 0.6)
    assert Prices.from_settings(Settings(environ={})).cpu_hour_usd == 0.045


class MeteredPredictor:
    """Answers "spam" at 0.8 and records tokens, as a remote model would; advances the clocks."""

    kind = "metered"

    def __init__(self) -> None:
        self.wall = 10.0
        self.cpu = 20.0

    @property
    def label_set(self) -> list[str]:
        return ["ham", "spam"]

    def predict(self, inputs: Sequence[str]) -> Predictions:
        self.wall += 0.001 * len(inputs)
        self.cpu += 0.004 * len(inputs)
        return Predictions(
            labels=["spam"] * len(inputs),
            confidences=np.full(len(inputs), 0.8),
            usage=Usage(compute_s=0.001 * len(inputs), input_tokens=7 * len(inputs)),
        )


def test_evaluate_prices_the_cpu_seconds_of_its_batch_call() -> None:
    predictor = MeteredPredictor()
    result = evaluate(
        predictor,
        ["win cash", "hello", "free prize", "lunch?"],
        ["spam", "ham", "spam", "ham"],
        n_resamples=50,
        latency_samples=0,
        cpu_hour_usd=0.045,
        watts_per_core=10.0,
        clock=lambda: predictor.wall,
        cpu_clock=lambda: predictor.cpu,
    )
    # The process CPU seconds of the batch (4 x 4 ms), not the predictor's own 1 ms per row.
    assert result.cpu_s_per_1m == pytest.approx(4000.0)
    # Priced exactly as before: the million predictions' CPU seconds at the core-hour price.
    assert result.cost_per_1m_usd == result.cpu_s_per_1m / 3600 * 0.045
    assert result.cost_per_1m_usd == pytest.approx(4000 / 3600 * 0.045)
    # Its tokens are in the batch's usage, but evaluate() prices compute only.
    assert result.wh_per_query == pytest.approx(0.004 * 10.0 / 3600)
