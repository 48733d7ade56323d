"""The text kind's head is chosen by cross-validation on the training rows, scored on the
task's metric, and the choice is recorded (issue 12).

The real part: SMS spam rows (about 87 % ham, a skewed label set) and BANKING77 rows on the
real encoder. The pure checks of the fold dealing use small arrays of clustered points.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from niche.errors import ConfigurationError, ValidationError
from niche.specialists import FitContext, TextSpecialist, get_kind
from niche.specialists.context import FIT_METRICS
from niche.specialists.head_selection import C_GRID, DEFAULT_C, HeadChoice, choose_head
from tests.gateway_support import read_sms


@pytest.fixture(scope="module")
def sms_rows(datasets_dir: Path) -> tuple[list[str], list[str]]:
    texts, labels = read_sms(datasets_dir)
    return texts[:300], labels[:300]


def clusters(
    counts: dict[int, int], *, dim: int = 8, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Points around one centre per label (``counts``: label → rows), unit noise."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=2.0, size=(max(counts) + 1, dim))
    targets = np.concatenate([np.full(n, label) for label, n in counts.items()])
    return centres[targets] + rng.normal(size=(len(targets), dim)), targets


def best_of(choice: HeadChoice) -> str:
    return max(choice.cv_scores, key=lambda name: choice.cv_scores[name])


def test_the_fit_metrics_are_the_task_metrics() -> None:
    from niche.registry.tasks import METRICS

    assert tuple(METRICS) == FIT_METRICS


def test_on_a_skewed_label_set_c_and_class_weights_are_chosen_on_the_metric_and_saved(
    sms_rows: tuple[list[str], list[str]], encoder, tmp_path: Path
) -> None:
    texts, labels = sms_rows
    kind = get_kind("text")
    fitted = kind.fit(texts, labels, FitContext(encoder=encoder, seed=0, metric="macro_f1"))
    assert isinstance(fitted, TextSpecialist)
    head = fitted.head_
    assert (head.chosen_by, head.cv_metric, head.cv_folds, head.cv_rows) == (
        "cross-validation",
        "macro_f1",
        3,
        300,
    )
    # Skewed (ham ≥ 3x spam): each C is tried with and without balanced class weights.
    assert set(head.cv_scores) == {f"{c:g}" for c in C_GRID} | {f"{c:g}/balanced" for c in C_GRID}
    name = f"{head.c:g}" + ("/balanced" if head.class_weight else "")
    assert head.cv_scores[name] == max(head.cv_scores.values())
    assert all(0.0 <= score <= 1.0 for score in head.cv_scores.values())
    lineage = kind.lineage(fitted)
    assert lineage["head"] == head.to_dict()
    assert lineage["params"]["c"] is None and lineage["params"]["metric"] == "macro_f1"

    loaded = TextSpecialist.load(fitted.save(tmp_path / "sms"), encoder)
    assert loaded.head_ == head
    assert kind.lineage(loaded) == lineage
    assert np.array_equal(loaded.coef_, fitted.coef_)

    on_accuracy = kind.fit(texts, labels, FitContext(encoder=encoder, seed=0))
    assert on_accuracy.head_.cv_metric == "accuracy"
    # Accuracy and macro-F1 score the same out-of-fold predictions differently.
    assert on_accuracy.head_.cv_scores != head.cv_scores
    assert best_of(on_accuracy.head_) in on_accuracy.head_.cv_scores


def test_an_explicit_c_skips_cross_validation(sms_rows, encoder) -> None:
    texts, labels = sms_rows
    context = FitContext(encoder=encoder, options={"c": 4, "class_weight": "balanced"})
    fitted = get_kind("text").fit(texts, labels, context)
    assert fitted.head_ == HeadChoice(c=4.0, class_weight="balanced", chosen_by="given")
    assert fitted.get_params()["c"] == 4.0


def test_a_balanced_label_set_is_not_tried_with_class_weights() -> None:
    x, y = clusters({0: 30, 1: 30, 2: 25})
    choice = choose_head(x, y, seed=0)
    assert set(choice.cv_scores) == {f"{c:g}" for c in C_GRID}
    assert choice.class_weight is None


def test_the_choice_is_seeded_and_the_subsample_capped() -> None:
    x, y = clusters({0: 300, 1: 200, 2: 100}, seed=1)
    small = choose_head(x, y, seed=3, max_rows=120)
    assert small.cv_rows == 120  # 60 + 40 + 20: each label's share
    assert small == choose_head(x, y, seed=3, max_rows=120)
    assert choose_head(x, y, seed=0).cv_rows == 600


def test_ties_keep_the_default_c_without_class_weights() -> None:
    # Far-apart clusters: every candidate is perfect out of fold.
    x, y = clusters({0: 20, 1: 5}, dim=4)
    x[y == 1] += 50.0
    choice = choose_head(x, y, metric="macro_f1")
    assert set(choice.cv_scores.values()) == {1.0}
    assert (choice.c, choice.class_weight) == (DEFAULT_C, None)


def test_a_label_with_fewer_rows_than_folds_is_dealt_into_some_folds() -> None:
    # Warnings are errors in this suite: sklearn's "least populated class" one would fail it.
    x, y = clusters({0: 20, 1: 20, 2: 1, 3: 2})
    choice = choose_head(x, y, metric="macro_f1")
    assert (choice.chosen_by, choice.cv_folds, choice.cv_rows) == ("cross-validation", 3, 43)


def test_with_too_few_rows_to_fold_the_default_c_is_used() -> None:
    x, y = clusters({0: 1, 1: 1})
    choice = choose_head(x, y)
    assert (choice.chosen_by, choice.c, choice.cv_scores) == ("default", DEFAULT_C, {})


def test_the_head_chosen_on_banking77_rows_is_at_least_as_good_as_c10_out_of_fold(
    encoder, datasets_dir: Path
) -> None:
    from tests.test_conformance import read_banking

    texts, labels = read_banking(datasets_dir, "train.csv", 40)
    embeddings = encoder.encode(texts)
    index = {label: i for i, label in enumerate(sorted(set(labels)))}
    targets = np.array([index[label] for label in labels])
    choice = choose_head(embeddings, targets)
    assert choice.cv_scores[f"{choice.c:g}"] >= choice.cv_scores["10"]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"c": -1.0}, "option c must be a positive number or None, got -1.0"),
        ({"c": "strong"}, "option c must be a positive number or None, got 'strong'"),
        ({"c": True}, "option c must be a positive number or None, got True"),
        ({"c": 1.0, "class_weight": "heavy"}, "class_weight must be None or 'balanced'"),
        ({"class_weight": "balanced"}, "class_weight needs an explicit c"),
    ],
)
def test_bad_text_options_are_refused_naming_the_option(options, message) -> None:
    with pytest.raises(ValidationError, match=message) as raised:
        get_kind("text").resolve_options(options)
    assert raised.value.param in options


def test_an_unknown_metric_is_refused() -> None:
    with pytest.raises(ValidationError, match="metric must be one of accuracy, macro_f1"):
        FitContext(metric="f1")
    with pytest.raises(ConfigurationError, match="not 'f1'"):
        choose_head(np.zeros((4, 2)), np.array([0, 0, 1, 1]), metric="f1")


def test_train_and_register_tunes_for_the_tasks_metric(
    registry, encoder, sms_rows, tmp_path: Path
) -> None:
    import csv

    from niche.settings import Settings
    from niche.workflows import DataSpec, create_task, curate_data, edit_task, train_and_register

    path = tmp_path / "sms.csv"
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label"])
        writer.writerows(zip(*sms_rows, strict=True))
    settings = Settings()
    create_task("spam", labels=["ham", "spam"], registry=registry)
    version = curate_data(DataSpec(data=path), settings, seed=0, registry=registry).version
    common = {"task": "spam", "encoder": encoder, "registry": registry}
    on_accuracy = train_and_register(version, settings, **common)
    assert on_accuracy.lineage["head"]["cv_metric"] == "accuracy"
    edit_task("spam", ["metric=macro_f1"], registry=registry)
    on_macro = train_and_register(version, settings, **common)
    assert on_macro.lineage["head"]["cv_metric"] == "macro_f1"
    fixed = train_and_register(version, settings, options={"c": 10.0}, **common)
    assert fixed.lineage["head"] == HeadChoice(c=10.0).to_dict()
