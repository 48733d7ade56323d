from datetime import UTC, datetime

import numpy as np
import pytest

from niche.errors import ConfigurationError, ValidationError
from niche.specialists import FitContext, LoadContext, TextSpecialist, get_kind
from niche.training import TrainedModel, train, train_text_specialist
from niche.training.text import stratified_sample


def test_stratified_sample_keeps_the_share_of_each_label_and_the_order():
    texts = [f"t{i}" for i in range(100)]
    labels = ["a"] * 80 + ["b"] * 20
    kept_texts, kept_labels = stratified_sample(texts, labels, 0.1, seed=0)
    assert (kept_labels.count("a"), kept_labels.count("b")) == (8, 2)
    assert kept_texts == sorted(kept_texts, key=lambda t: int(t[1:]))
    assert stratified_sample(texts, labels, 0.1, seed=0) == (kept_texts, kept_labels)
    assert stratified_sample(texts, labels, 0.1, seed=1) != (kept_texts, kept_labels)


def test_every_label_keeps_at_least_two_rows():
    _, labels = stratified_sample(["x"] * 12, ["a"] * 10 + ["b"] * 2, 0.01)
    assert (labels.count("a"), labels.count("b")) == (2, 2)


@pytest.mark.parametrize("fraction", [0.0, -0.5, 1.5])
def test_fraction_outside_the_unit_interval_is_refused(fraction):
    with pytest.raises(ConfigurationError, match="fraction must be in"):
        stratified_sample(["a", "b"], ["x", "y"], fraction)


# -- train(version, kind, context): any kind, through the kind registry --------------------


@pytest.fixture(scope="module")
def sms_version(datasets_dir):
    from niche.data import Rows, curate
    from tests.gateway_support import read_sms

    texts, labels = read_sms(datasets_dir)
    return curate(Rows(texts[:300], labels[:300], "sms_spam"), test_size=0.2, seed=0)


class Ticks:
    """A clock reading 100.0, then 101.5: the fit takes exactly 1.5 s."""

    def __init__(self) -> None:
        self.readings = iter([100.0, 101.5])

    def __call__(self) -> float:
        return next(self.readings)


NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def test_train_records_the_same_lineage_as_before(sms_version, encoder):
    trained = train(
        sms_version,
        "text",
        FitContext(encoder=encoder, seed=0, options={"c": 10.0}),
        clock=Ticks(),
        now=lambda: NOW,
    )
    specialist = trained.specialist
    assert isinstance(specialist, TextSpecialist)
    assert specialist.kind == "text"
    lineage = trained.lineage
    assert list(lineage) == [
        "kind",
        "dataset_fingerprint",
        "dataset_source",
        "train_rows",
        "train_fraction",
        "labels",
        "encoder_id",
        "params",
        "head",
        "temperature",
        "head_cache",
        "fit_seconds",
        "trained_at",
        "niche_version",
        "git_revision",
    ]
    assert lineage["kind"] == "text"
    assert lineage["dataset_fingerprint"] == sms_version.fingerprint
    assert lineage["train_rows"] == len(sms_version.splits["train"])
    assert lineage["labels"] == 2
    assert lineage["encoder_id"] == encoder.id
    assert lineage["params"] == {
        "c": 10.0,
        "class_weight": None,
        "metric": "accuracy",
        "max_iter": 2000,
        "calibration_size": 0.1,
        "seed": 0,
    }
    assert lineage["head"] == {
        "c": 10.0,
        "class_weight": None,
        "chosen_by": "given",
        "cv_metric": None,
        "cv_scores": {},
        "cv_rows": 0,
        "cv_folds": 0,
    }
    assert lineage["head_cache"] == "miss"
    assert lineage["temperature"] == specialist.temperature_
    assert lineage["fit_seconds"] == 1.5
    assert lineage["trained_at"] == "2026-03-01T12:00:00+00:00"


def test_train_text_specialist_is_train_with_the_text_kind(sms_version, encoder):
    old_way = train_text_specialist(sms_version, encoder, c=1.0, seed=2, fraction=0.5)
    new_way = train(
        sms_version, "text", FitContext(encoder=encoder, seed=2, options={"c": 1.0}), fraction=0.5
    )
    assert isinstance(old_way, TrainedModel)
    assert np.array_equal(old_way.specialist.coef_, new_way.specialist.coef_)
    assert old_way.lineage["train_rows"] == new_way.lineage["train_rows"]
    assert old_way.lineage["train_fraction"] == 0.5
    assert old_way.lineage["params"]["seed"] == 2


def test_train_fits_any_registered_kind(sms_version, encoder, tmp_path):
    trained = train(sms_version, "zero-shot", FitContext(encoder=encoder))
    assert trained.specialist.kind == "zero-shot"
    assert sorted(trained.specialist.label_set) == ["ham", "spam"]
    assert trained.lineage["kind"] == "zero-shot"
    assert trained.lineage["params"] == {"descriptions": {}, "temperature": 0.05}
    path = trained.specialist.save(tmp_path / "zero-shot")
    loaded = get_kind("zero-shot").load(path, LoadContext(encoder=encoder))
    assert loaded.label_set == trained.specialist.label_set


def test_train_refuses_an_unknown_kind_and_a_missing_split(sms_version):
    with pytest.raises(ValidationError, match="unknown specialist kind 'lora'"):
        train(sms_version, "lora", FitContext())
    with pytest.raises(ValidationError, match="has no split 'validation'"):
        train(sms_version, "text", FitContext(), split="validation")
