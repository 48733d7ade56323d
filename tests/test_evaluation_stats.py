"""Bootstrap intervals and paired tests: exact values, determinism, degenerate data, speed."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest

from niche.evaluation import (
    McNemar,
    accuracy_ci,
    bootstrap_ci,
    macro_f1,
    macro_f1_ci,
    mcnemar,
    paired_bootstrap,
    paired_test,
)


def _exact_mcnemar_p(b: int, c: int) -> float:
    """Two-sided exact binomial p at 0.5, from binomial coefficients."""
    n, k = b + c, min(b, c)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    return min(1.0, 2 * tail)


def _pairs(b: int, c: int, both: int = 0, neither: int = 0) -> tuple[np.ndarray, np.ndarray]:
    a = [1] * b + [0] * c + [1] * both + [0] * neither
    other = [0] * b + [1] * c + [1] * both + [0] * neither
    return np.array(a, dtype=bool), np.array(other, dtype=bool)


def test_mcnemar_exact_value() -> None:
    a, b = _pairs(10, 2, both=30, neither=5)
    result = mcnemar(a, b)
    assert result == McNemar(b=10, c=2, statistic=2, p_value=pytest.approx(79 / 2048))
    assert result.p_value == pytest.approx(_exact_mcnemar_p(10, 2))


@pytest.mark.parametrize(("b", "c"), [(5, 0), (0, 5), (7, 7), (3, 9), (40, 25)])
def test_mcnemar_matches_binomial_coefficients(b: int, c: int) -> None:
    assert mcnemar(*_pairs(b, c, both=3)).p_value == pytest.approx(_exact_mcnemar_p(b, c))


def test_mcnemar_without_discordant_rows_is_p_one() -> None:
    assert mcnemar(*_pairs(0, 0, both=4, neither=2)) == McNemar(0, 0, 0, 1.0)


def test_paired_test_reports_the_mcnemar_p_value() -> None:
    a, b = _pairs(10, 2, both=30, neither=5)
    result = paired_test(a, b, n_resamples=500, seed=3)
    assert result.p_value == result.mcnemar.p_value == pytest.approx(79 / 2048)
    assert result.bootstrap == paired_bootstrap(a, b, n_resamples=500, seed=3)
    assert result.to_dict() == {
        "p_value": result.p_value,
        "mcnemar": {"b": 10, "c": 2, "statistic": 2, "p_value": result.p_value},
        "bootstrap": {
            "diff": result.bootstrap.diff,
            "ci_low": result.bootstrap.ci_low,
            "ci_high": result.bootstrap.ci_high,
            "p_value": result.bootstrap.p_value,
        },
    }


def test_paired_bootstrap_diff_ci_and_determinism() -> None:
    a, b = _pairs(10, 2, both=30, neither=5)
    result = paired_bootstrap(a, b, n_resamples=1000, seed=0)
    assert result.diff == pytest.approx(8 / 47)
    assert result.ci_low < result.diff < result.ci_high
    assert result.ci_low > 0  # 10 vs 2 discordant rows: A is better
    assert 1 / 1001 <= result.p_value < 0.05
    assert paired_bootstrap(a, b, n_resamples=1000, seed=0) == result
    assert paired_bootstrap(a, b, n_resamples=1000, seed=1) != result


def test_paired_bootstrap_p_value_is_shifted_null() -> None:
    # Row differences [1, 0]: resampled sums are 0, 1, 2 with chance 1/4, 1/2, 1/4, so
    # P(|sum* - 1| >= 1) = 1/2.
    result = paired_bootstrap([1, 1], [0, 1], n_resamples=4000, seed=0)
    assert result.diff == 0.5
    assert result.p_value == pytest.approx(0.5, abs=0.03)


def test_paired_bootstrap_degenerate_inputs() -> None:
    same = paired_bootstrap([1, 0, 1], [1, 0, 1], n_resamples=200)
    assert (same.diff, same.ci_low, same.ci_high, same.p_value) == (0.0, 0.0, 0.0, 1.0)
    apart = paired_bootstrap([1] * 20, [0] * 20, n_resamples=200)
    assert (apart.diff, apart.ci_low, apart.ci_high) == (1.0, 1.0, 1.0)
    assert apart.p_value == 1 / 201  # the floor: no resample reaches the null
    one = paired_bootstrap([True], [False], n_resamples=200)
    assert (one.diff, one.ci_low, one.ci_high) == (1.0, 1.0, 1.0)


def test_accuracy_ci_is_the_percentile_interval_of_resampled_rows() -> None:
    rng = np.random.default_rng(5)
    correct = rng.random(300) < 0.8
    low, high = accuracy_ci(correct, n_resamples=2000, seed=11)
    # The same resamples by hand (scipy draws one (n_resamples, n) index matrix here).
    rows = np.random.default_rng(11).integers(0, 300, (2000, 300))
    expected = np.quantile(correct[rows].mean(axis=1), [0.025, 0.975])
    assert (low, high) == pytest.approx(tuple(expected))
    assert low < correct.mean() < high


def test_accuracy_ci_confidence_level_widens_the_interval() -> None:
    correct = np.arange(200) % 4 != 0
    low50, high50 = accuracy_ci(correct, confidence=0.5)
    low99, high99 = accuracy_ci(correct, confidence=0.99)
    assert low99 < low50 < 0.75 < high50 < high99


@pytest.mark.parametrize("correct", [[True] * 50, [0] * 50, [1], np.ones(10, dtype=np.int64)])
def test_constant_data_gives_a_point_interval_without_warnings(correct) -> None:
    value = float(np.mean(correct))
    assert accuracy_ci(correct) == (value, value)


def test_constant_statistic_gives_a_point_interval() -> None:
    assert bootstrap_ci([0.1, 0.7, 0.3], lambda x, axis=-1: np.zeros(x.shape[:-1])) == (0, 0)
    assert macro_f1_ci(["a", "b"] * 20, ["a", "b"] * 20) == (1.0, 1.0)


def test_bootstrap_ci_deterministic_per_seed() -> None:
    values = np.random.default_rng(0).normal(size=100)
    first = bootstrap_ci(values, np.mean, seed=4)
    assert bootstrap_ci(values, np.mean, seed=4) == first
    assert bootstrap_ci(values, np.mean, seed=5) != first
    assert first[0] < values.mean() < first[1]


def test_bootstrap_ci_paired_arrays_with_a_plain_statistic() -> None:
    rng = np.random.default_rng(2)
    y_true = rng.choice(["a", "b", "c", "d"], 60)
    y_pred = np.where(rng.random(60) < 0.7, y_true, rng.choice(["a", "b", "c", "e"], 60))
    # Not vectorised (no axis): called once per resample with 1-D arrays. It must see the
    # same resampled rows as the vectorised macro_f1_ci.
    plain = bootstrap_ci((y_true, y_pred), macro_f1, n_resamples=200, seed=7)
    assert plain == pytest.approx(macro_f1_ci(y_true, y_pred, n_resamples=200, seed=7))
    assert plain[0] < macro_f1(y_true, y_pred) < plain[1]


def test_macro_f1_ci_with_explicit_labels() -> None:
    y_true = ["a", "b", "a", "b", "a"] * 10
    y_pred = ["a", "b", "b", "b", "a"] * 10
    free = macro_f1_ci(y_true, y_pred, n_resamples=300)
    fixed = macro_f1_ci(y_true, y_pred, labels=["a", "b", "zz"], n_resamples=300)
    # An unseen label scores 0 in every resample: the interval scales by 2/3.
    assert fixed == pytest.approx((free[0] * 2 / 3, free[1] * 2 / 3))


def test_macro_f1_ci_is_fast_for_a_banking77_sized_test_set() -> None:
    rng = np.random.default_rng(0)
    names = np.array([f"intent_{i}" for i in range(77)])
    y_true = names[rng.integers(0, 77, 3000)]
    y_pred = np.where(rng.random(3000) < 0.85, y_true, names[rng.integers(0, 77, 3000)])
    started = time.perf_counter()
    low, high = macro_f1_ci(y_true, y_pred, n_resamples=1000, seed=0)
    assert time.perf_counter() - started < 2.0
    assert low < macro_f1(y_true, y_pred) < high
    assert high - low < 0.05


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: bootstrap_ci([], np.mean), "empty"),
        (lambda: bootstrap_ci(([1, 2], [1]), np.mean), "differ in length"),
        (lambda: bootstrap_ci(np.ones((2, 2)), np.mean), "one-dimensional"),
        (lambda: bootstrap_ci((), np.mean), "empty tuple"),
        (lambda: bootstrap_ci([1, 2], np.mean, n_resamples=0), "n_resamples"),
        (lambda: bootstrap_ci([1, 2], np.mean, confidence=1.0), "confidence"),
        (lambda: accuracy_ci([]), "empty"),
        (lambda: accuracy_ci(["yes", "no"]), "booleans or 0/1"),
        (lambda: macro_f1_ci(["a"], ["a", "b"]), "differ in length"),
        (lambda: mcnemar([1, 0], [1]), "differ in length"),
        (lambda: paired_bootstrap([], []), "empty"),
        (lambda: paired_test([2], [1]), "booleans or 0/1"),
    ],
)
def test_bad_input_is_a_value_error(call, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()
