"""Drift tests of niche.monitoring: each detects a real shift, keeps its false-alarm rate near
alpha on same-distribution windows (fresh seeded draws), refuses bad input by name, and reports
windows too small to judge without alarming."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import stats

from niche.errors import NotFittedError, ValidationError
from niche.monitoring import (
    MIN_ROWS,
    InputDriftReference,
    cascade_rate,
    confidence_drift,
    input_drift,
    input_drift_projection,
    prediction_drift,
)

DIM = 48
CLUSTERS = 40


def _centres(seed: int = 0) -> np.ndarray:
    """Fixed cluster centres on the unit sphere: the 'intents' of the synthetic embeddings."""
    centres = np.random.default_rng(seed).normal(size=(CLUSTERS, DIM))
    return centres / np.linalg.norm(centres, axis=1, keepdims=True)


CENTRES = _centres()


def _embeddings(
    rng: np.random.Generator, n: int, clusters: np.ndarray | range, spread: float = 0.08
) -> np.ndarray:
    """``n`` L2-normalised float32 rows around centres drawn uniformly from ``clusters``."""
    chosen = rng.choice(np.asarray(clusters), n)
    rows = CENTRES[chosen] + rng.normal(scale=spread, size=(n, DIM))
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


KNOWN = range(30)
NOVEL = range(30, 40)


def _window(rng: np.random.Generator, n: int, novel_share: float) -> np.ndarray:
    k = round(n * novel_share)
    return np.concatenate([_embeddings(rng, n - k, KNOWN), _embeddings(rng, k, NOVEL)])


def _false_alarms(check, draws: int = 50) -> int:
    """How many of ``draws`` seeded same-distribution (reference, window) pairs alarm."""
    return sum(check(np.random.default_rng(1000 + i)) for i in range(draws))


# Binomial(50, 0.1): P(X = 0) = 0.005 and P(X >= 12) = 0.006, so 1..11 is where a test with a
# 10 % false-alarm rate lands; both a test that never alarms and one that alarms too often fail.
FALSE_ALARMS_AT_0_1 = range(1, 12)


# -- input drift ----------------------------------------------------------------------------


def test_input_drift_detects_a_tenth_of_unseen_clusters() -> None:
    rng = np.random.default_rng(1)
    reference = _embeddings(rng, 600, KNOWN)
    signal = input_drift(reference, _window(rng, 200, 0.10), alpha=0.01)
    assert signal.name == "input_drift" and signal.method == "knn-novelty"
    assert signal.alarm and signal.p_value is not None and signal.p_value < 1e-4
    assert signal.n == 200 and signal.threshold == 0.01
    assert signal.statistic is not None and signal.statistic > 3
    # All 20 unseen texts are farther than 90 % of the reference from it: about 0.1 + 0.9 x
    # 0.1 of the window, against about 0.1 without drift.
    assert signal.detail["beyond_reference_p90"] == pytest.approx(0.19, abs=0.03)
    assert signal.detail["reference_n"] == 600 and signal.detail["test"] == "log-rank"


def test_input_drift_false_alarm_rate_is_near_alpha() -> None:
    def alarms(rng: np.random.Generator) -> bool:
        reference = _embeddings(rng, 400, KNOWN)
        return input_drift(reference, _embeddings(rng, 100, KNOWN), alpha=0.1).alarm

    assert _false_alarms(alarms) in FALSE_ALARMS_AT_0_1


def test_input_drift_p_values_are_exact_and_seeded() -> None:
    rng = np.random.default_rng(2)
    reference, window = _embeddings(rng, 300, KNOWN), _window(rng, 100, 0.05)
    first = input_drift(reference, window, alpha=0.01)
    again = input_drift(reference, window, alpha=0.01)
    assert first == again


def test_input_drift_is_the_log_rank_test_of_nearest_neighbour_distances() -> None:
    rng = np.random.default_rng(3)
    reference, window = _embeddings(rng, 300, KNOWN), _window(rng, 100, 0.1)
    signal = input_drift(reference, window, alpha=0.01)
    # Recompute from the distances: leave-one-out for the reference, nearest for the window.
    between = np.linalg.norm(window[:, None, :] - reference[None, :, :], axis=2).min(axis=1)
    within = np.linalg.norm(reference[:, None, :] - reference[None, :, :], axis=2)
    np.fill_diagonal(within, np.inf)
    expected = stats.logrank(between, within.min(axis=1), alternative="less")
    assert signal.p_value == pytest.approx(expected.pvalue, rel=1e-4)
    assert signal.statistic == pytest.approx(-expected.statistic, rel=1e-4)
    beyond = np.mean(between > np.quantile(within.min(axis=1), 0.9))
    assert signal.detail["beyond_reference_p90"] == pytest.approx(beyond)


def test_a_prepared_reference_gives_the_same_answers_as_the_functions() -> None:
    rng = np.random.default_rng(4)
    reference, window = _embeddings(rng, 400, KNOWN), _window(rng, 120, 0.1)
    prepared = InputDriftReference(seed=3).fit(reference)
    assert prepared.novelty_ is not None and prepared.novelty_.shape == (400,)
    assert prepared.input_drift(window, alpha=0.01) == input_drift(
        reference, window, alpha=0.01, seed=3
    )
    assert prepared.input_drift_projection(window, alpha=0.01) == input_drift_projection(
        reference, window, alpha=0.01, seed=3
    )


def test_input_drift_does_not_alarm_when_traffic_narrows_to_known_clusters() -> None:
    # A mix change inside the reference's support is not novelty: the projection test and
    # prediction_drift are the signals that see it (below).
    rng = np.random.default_rng(5)
    reference = _embeddings(rng, 600, KNOWN)
    narrowed = _embeddings(rng, 200, range(8))
    assert not input_drift(reference, narrowed, alpha=0.01).alarm
    projection = input_drift_projection(reference, narrowed, alpha=0.01)
    assert projection.alarm and projection.method == "pca-ks"
    assert len(projection.detail["components"]) == 5


def test_input_drift_projection_false_alarm_rate_is_near_alpha() -> None:
    def alarms(rng: np.random.Generator) -> bool:
        reference = _embeddings(rng, 400, KNOWN)
        return input_drift_projection(reference, _embeddings(rng, 100, KNOWN), alpha=0.1).alarm

    assert _false_alarms(alarms) in FALSE_ALARMS_AT_0_1


def test_projection_p_value_is_bonferroni_over_the_components() -> None:
    rng = np.random.default_rng(6)
    reference, window = _embeddings(rng, 300, KNOWN), _window(rng, 100, 0.25)
    signal = input_drift_projection(reference, window, alpha=0.01, components=3)
    smallest = min(c["p_value"] for c in signal.detail["components"])
    assert signal.p_value == pytest.approx(min(1.0, 3 * smallest))
    assert signal.statistic == max(c["ks"] for c in signal.detail["components"])


@pytest.mark.parametrize("check", [input_drift, input_drift_projection])
def test_too_few_rows_are_reported_without_alarm(check) -> None:
    rng = np.random.default_rng(7)
    reference = _embeddings(rng, 300, KNOWN)
    few = _embeddings(rng, MIN_ROWS - 1, NOVEL)  # all novel, yet too few to judge
    signal = check(reference, few, alpha=0.01)
    assert not signal.alarm and signal.p_value is None and signal.statistic is None
    assert signal.detail["insufficient"] is True and signal.detail["reference_n"] == 300
    assert signal.n == MIN_ROWS - 1
    small_reference = check(reference[: MIN_ROWS - 1], _embeddings(rng, 100, NOVEL), alpha=0.01)
    assert not small_reference.alarm and small_reference.detail["insufficient"] is True
    raised_floor = check(reference, _embeddings(rng, 60, NOVEL), alpha=0.01, min_rows=61)
    assert raised_floor.detail == {**raised_floor.detail, "insufficient": True}


def test_an_empty_window_is_insufficient() -> None:
    rng = np.random.default_rng(8)
    signal = input_drift(_embeddings(rng, 100, KNOWN), np.empty((0, DIM)), alpha=0.01)
    assert signal.n == 0 and signal.detail["insufficient"] is True and not signal.alarm


@pytest.mark.parametrize(
    ("current", "message"),
    [
        (np.zeros((40, DIM + 1), dtype=np.float32), "current has 49 dimensions"),
        (np.zeros(DIM, dtype=np.float32), "current must be a 2-D array"),
        (np.full((40, DIM), np.nan, dtype=np.float32), "current holds NaN"),
        ([["a"] * DIM] * 40, "current must be a numeric array"),
    ],
)
def test_input_drift_refuses_a_bad_window_by_name(current, message: str) -> None:
    reference = _embeddings(np.random.default_rng(9), 100, KNOWN)
    with pytest.raises(ValidationError, match=message) as caught:
        input_drift(reference, current, alpha=0.01)
    assert caught.value.param == "current"


def test_a_bad_reference_is_refused_by_name() -> None:
    reference = _embeddings(np.random.default_rng(10), 100, KNOWN)
    reference[5, 3] = np.inf
    with pytest.raises(ValidationError, match=r"reference holds NaN or infinite values") as caught:
        InputDriftReference().fit(reference)
    assert caught.value.param == "reference"


@pytest.mark.parametrize("alpha", [0, 1, 1.5, -0.01, True, "0.01", None])
def test_alpha_out_of_range_is_refused(alpha) -> None:
    rng = np.random.default_rng(11)
    reference, window = _embeddings(rng, 100, KNOWN), _embeddings(rng, 50, KNOWN)
    for check in (
        lambda: input_drift(reference, window, alpha=alpha),
        lambda: input_drift_projection(reference, window, alpha=alpha),
        lambda: confidence_drift(np.full(50, 0.9), np.full(50, 0.9), alpha=alpha),
        lambda: prediction_drift(["a"] * 50, ["a"] * 50, labels=["a"], alpha=alpha),
        lambda: cascade_rate(5, 50, 5, 50, alpha=alpha),
    ):
        with pytest.raises(ValidationError, match="alpha must be") as caught:
            check()
        assert caught.value.param == "alpha"


def test_bad_reference_options_are_refused_by_name() -> None:
    reference = _embeddings(np.random.default_rng(12), 100, KNOWN)
    for options, param in (({"neighbours": 0}, "neighbours"), ({"components": 0}, "components")):
        with pytest.raises(ValidationError) as caught:
            InputDriftReference(**options).fit(reference)
        assert caught.value.param == param


def test_an_unfitted_reference_says_what_to_call() -> None:
    with pytest.raises(NotFittedError, match=r"call \.fit\(reference\)"):
        InputDriftReference().input_drift(np.zeros((40, DIM)), alpha=0.01)


def test_signals_are_json_ready() -> None:
    rng = np.random.default_rng(13)
    signal = input_drift(_embeddings(rng, 200, KNOWN), _window(rng, 100, 0.2), alpha=0.01)
    data = json.loads(json.dumps(signal.to_dict()))
    assert data["name"] == "input_drift" and data["alarm"] is True
    assert set(data) >= {"name", "statistic", "p_value", "interval", "threshold", "alarm"}
    assert isinstance(data["detail"]["beyond_reference_p90"], float)


# -- prediction mix -------------------------------------------------------------------------

LABELS = ["billing", "cards", "loans", "fraud", "other"]


def test_prediction_drift_detects_a_label_mix_change() -> None:
    rng = np.random.default_rng(20)
    reference = rng.choice(LABELS, 1000).tolist()
    current = rng.choice(LABELS, 300, p=[0.1, 0.1, 0.2, 0.4, 0.2]).tolist()
    signal = prediction_drift(reference, current, labels=LABELS, alpha=0.01)
    assert signal.alarm and signal.method == "chi-square" and signal.detail["dof"] == 4
    assert signal.detail["largest_changes"][0]["label"] == "fraud"


def test_prediction_drift_is_scipys_contingency_test() -> None:
    reference = ["a"] * 50 + ["b"] * 30 + ["c"] * 20
    current = ["a"] * 20 + ["b"] * 20 + ["c"] * 20
    signal = prediction_drift(reference, current, labels=["a", "b", "c", "unused"], alpha=0.05)
    expected = stats.chi2_contingency([[20, 20, 20], [50, 30, 20]], correction=False)
    assert signal.statistic == pytest.approx(expected.statistic)
    assert signal.p_value == pytest.approx(expected.pvalue)
    assert signal.detail["dof"] == 2  # the label never seen on either side is left out


def test_prediction_drift_pools_rare_labels() -> None:
    labels = [f"l{i}" for i in range(12)]
    reference = ["l0"] * 200 + ["l1"] * 200 + [f"l{i}" for i in range(2, 12)] * 2
    current = ["l0"] * 50 + ["l1"] * 50 + ["l2", "l3"]
    signal = prediction_drift(reference, current, labels=labels, alpha=0.01)
    # Ten labels expected below 5 in the window become one bin: 3 columns, 2 degrees of freedom.
    assert signal.detail["pooled_labels"] == 10 and signal.detail["dof"] == 2


def test_prediction_drift_false_alarm_rate_is_near_alpha() -> None:
    def alarms(rng: np.random.Generator) -> bool:
        p = [0.4, 0.3, 0.15, 0.1, 0.05]
        reference = rng.choice(LABELS, 800, p=p).tolist()
        current = rng.choice(LABELS, 200, p=p).tolist()
        return prediction_drift(reference, current, labels=LABELS, alpha=0.1).alarm

    assert _false_alarms(alarms) in FALSE_ALARMS_AT_0_1


def test_prediction_drift_names_an_unknown_label() -> None:
    with pytest.raises(ValidationError, match=r"current holds the label 'refunds'") as caught:
        prediction_drift(["cards"] * 40, ["cards"] * 39 + ["refunds"], labels=LABELS, alpha=0.01)
    assert caught.value.param == "current"
    with pytest.raises(ValidationError, match="'cards' more than once") as caught:
        prediction_drift(["cards"] * 40, ["cards"] * 40, labels=["cards", "cards"], alpha=0.01)
    assert caught.value.param == "labels"
    with pytest.raises(ValidationError, match="not a string") as caught:
        prediction_drift("cards", ["cards"] * 40, labels=LABELS, alpha=0.01)
    assert caught.value.param == "reference"


def test_prediction_drift_with_too_few_rows_does_not_alarm() -> None:
    signal = prediction_drift(["cards"] * 100, ["fraud"] * 10, labels=LABELS, alpha=0.01)
    assert not signal.alarm and signal.detail["insufficient"] is True and signal.n == 10


# -- confidence -----------------------------------------------------------------------------


def _confidences(rng: np.random.Generator, n: int, unsure_share: float = 0.0) -> np.ndarray:
    k = round(n * unsure_share)
    return np.concatenate([rng.beta(9, 1.5, n - k), rng.beta(2, 3, k)])


def test_confidence_drift_detects_a_tenth_of_unsure_answers() -> None:
    rng = np.random.default_rng(30)
    signal = confidence_drift(_confidences(rng, 2000), _confidences(rng, 500, 0.1), alpha=0.01)
    assert signal.alarm and signal.method == "log-rank"
    assert signal.statistic is not None and signal.statistic > 2.5
    assert signal.detail["below_reference_p10"] > 0.15


def test_confidence_drift_false_alarm_rate_is_near_alpha() -> None:
    def alarms(rng: np.random.Generator) -> bool:
        return confidence_drift(_confidences(rng, 400), _confidences(rng, 100), alpha=0.1).alarm

    assert _false_alarms(alarms) in FALSE_ALARMS_AT_0_1


def test_higher_confidence_does_not_alarm() -> None:
    rng = np.random.default_rng(31)
    reference = _confidences(rng, 1000, 0.2)
    assert not confidence_drift(reference, _confidences(rng, 300), alpha=0.01).alarm


def test_confidence_drift_is_the_log_rank_test_of_doubt() -> None:
    reference = np.array([0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 0.97, 0.85, 0.75])
    current = np.array([0.1, 0.2, 0.85, 0.4, 0.6])
    signal = confidence_drift(reference, current, alpha=0.1, min_rows=5)
    expected = stats.logrank(1 - current, 1 - reference, alternative="less")
    assert signal.p_value == pytest.approx(expected.pvalue)
    assert signal.statistic == pytest.approx(-expected.statistic) and signal.alarm
    # Three of the five are below the reference's 10th percentile (0.59).
    assert signal.detail["below_reference_p10"] == pytest.approx(3 / 5)


def test_identical_confidences_do_not_alarm() -> None:
    signal = confidence_drift(np.ones(100), np.ones(50), alpha=0.01)
    assert signal.p_value == 1.0 and signal.statistic == 0.0 and not signal.alarm


@pytest.mark.parametrize(
    ("reference", "current", "param"),
    [
        (np.full(50, 0.9), np.full(50, 1.2), "current"),
        (np.full(50, -0.1), np.full(50, 0.9), "reference"),
        (np.full(50, 0.9), np.array([0.5, np.nan] * 25), "current"),
        (np.full((50, 2), 0.9), np.full(50, 0.9), "reference"),
    ],
)
def test_confidence_drift_refuses_bad_confidences(reference, current, param: str) -> None:
    with pytest.raises(ValidationError) as caught:
        confidence_drift(reference, current, alpha=0.01)
    assert caught.value.param == param and param in str(caught.value)


# -- cascade rate ---------------------------------------------------------------------------


def test_cascade_rate_alarms_on_a_rise_only() -> None:
    rising = cascade_rate(100, 1000, 90, 500, alpha=0.01)
    assert rising.alarm and rising.statistic == pytest.approx(0.18)
    assert rising.detail["reference_rate"] == pytest.approx(0.1)
    expected = stats.fisher_exact([[90, 410], [100, 900]], alternative="greater")
    assert rising.p_value == pytest.approx(expected.pvalue)
    falling = cascade_rate(100, 1000, 20, 500, alpha=0.01)
    assert not falling.alarm and falling.p_value is not None and falling.p_value > 0.99


def test_cascade_rate_false_alarm_rate_is_near_alpha() -> None:
    def alarms(rng: np.random.Generator) -> bool:
        reference, current = rng.binomial(1000, 0.15), rng.binomial(300, 0.15)
        return cascade_rate(int(reference), 1000, int(current), 300, alpha=0.1).alarm

    assert _false_alarms(alarms) in FALSE_ALARMS_AT_0_1


def test_cascade_rate_refuses_impossible_counts() -> None:
    with pytest.raises(ValidationError, match=r"current_cascaded \(60\) exceeds current_n") as e:
        cascade_rate(5, 100, 60, 50, alpha=0.01)
    assert e.value.param == "current_cascaded"
    with pytest.raises(ValidationError) as e:
        cascade_rate(-1, 100, 5, 50, alpha=0.01)
    assert e.value.param == "reference_cascaded"
    small = cascade_rate(5, 100, 10, 10, alpha=0.01)
    assert not small.alarm and small.detail["insufficient"] is True


# -- real embeddings ------------------------------------------------------------------------


@pytest.mark.slow
def test_real_embeddings_of_unseen_intents_are_flagged_and_known_ones_are_not(
    encoder, datasets_dir
) -> None:
    import csv

    with (datasets_dir / "banking77" / "train.csv").open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    intents = sorted({r["category"] for r in rows})
    rng = np.random.default_rng(0)
    unseen = set(rng.choice(intents, 8, replace=False).tolist())
    known = [r["text"] for r in rows if r["category"] not in unseen]
    novel = [r["text"] for r in rows if r["category"] in unseen]
    picked = rng.permutation(len(known))
    reference = [known[i] for i in picked[:600]]
    same = [known[i] for i in picked[600:800]]
    shifted = same[:160] + [novel[i] for i in rng.choice(len(novel), 40, replace=False)]
    vectors = encoder.encode(reference + same + shifted)
    prepared = InputDriftReference().fit(vectors[:600])
    assert not prepared.input_drift(vectors[600:800], alpha=0.01).alarm
    assert not prepared.input_drift_projection(vectors[600:800], alpha=0.01).alarm
    flagged = prepared.input_drift(vectors[800:], alpha=0.01)
    assert flagged.alarm and flagged.p_value is not None and flagged.p_value < 1e-3
