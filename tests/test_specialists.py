"""One conformance suite for every Predictor kind, run on the real encoder and real data."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from niche.errors import ArtifactError, NotFittedError, ValidationError
from niche.specialists import (
    FitContext,
    LoadContext,
    Predictions,
    Predictor,
    TextSpecialist,
    Usage,
    ZeroShot,
    get_kind,
    humanise_label,
)
from niche.specialists.text import fit_temperature, softmax

LABELS = ["card_arrival", "lost_or_stolen_card", "exchange_rate", "top_up_failed"]


def read_banking(datasets_dir: Path, name: str, per_label: int) -> tuple[list[str], list[str]]:
    """The first ``per_label`` rows of each of :data:`LABELS` in BANKING77's ``name`` file."""
    texts: list[str] = []
    labels: list[str] = []
    counts = dict.fromkeys(LABELS, 0)
    with open(datasets_dir / "banking77" / name, newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            label = row["category"]
            if label in counts and counts[label] < per_label:
                counts[label] += 1
                texts.append(row["text"])
                labels.append(label)
    return texts, labels


@pytest.fixture(scope="module")
def banking_slice(datasets_dir: Path) -> tuple[list[str], list[str], list[str], list[str]]:
    """60 training and 20 test rows per label for four BANKING77 intents."""
    train_texts, train_labels = read_banking(datasets_dir, "train.csv", 60)
    test_texts, test_labels = read_banking(datasets_dir, "test.csv", 20)
    return train_texts, train_labels, test_texts, test_labels


@pytest.fixture(scope="module")
def fitted(encoder, banking_slice) -> TextSpecialist:
    train_texts, train_labels, _, _ = banking_slice
    return TextSpecialist(encoder).fit(train_texts, train_labels)


def _text(fitted: TextSpecialist, encoder) -> Predictor:
    return fitted


def _zero_shot(fitted: TextSpecialist, encoder) -> Predictor:
    return ZeroShot(LABELS, encoder)


FACTORIES: dict[str, Callable[[TextSpecialist, object], Predictor]] = {
    "text": _text,
    "zero-shot": _zero_shot,
}


@pytest.fixture(params=sorted(FACTORIES))
def predictor(request, fitted, encoder) -> Predictor:
    return FACTORIES[request.param](fitted, encoder)


# -- the conformance suite ---------------------------------------------------------------


def test_is_a_predictor(predictor):
    assert isinstance(predictor, Predictor)
    assert isinstance(predictor.kind, str)
    assert sorted(predictor.label_set) == sorted(LABELS)


def test_predictions_have_one_label_and_confidence_per_text(predictor, banking_slice):
    texts = banking_slice[2][:13]
    preds = predictor.predict(texts)
    assert isinstance(preds, Predictions)
    assert len(preds) == 13
    assert set(preds.labels) <= set(LABELS)
    assert preds.confidences.shape == (13,)
    assert np.all((preds.confidences >= 0) & (preds.confidences <= 1))
    assert preds.probabilities is not None
    assert np.allclose(preds.probabilities.sum(axis=1), 1.0)
    best = preds.probabilities.max(axis=1)
    assert np.allclose(preds.confidences, best)


def test_batch_and_single_predictions_agree(predictor, banking_slice):
    texts = banking_slice[2][:8]
    batch = predictor.predict(texts)
    for i, text in enumerate(texts):
        single = predictor.predict([text])
        assert single.labels[0] == batch.labels[i]
        # Static int8 scales are constants of the graph (dynamic int8 needed abs=0.05).
        assert single.confidences[0] == pytest.approx(batch.confidences[i], abs=1e-5)


def test_predictions_are_deterministic(predictor, banking_slice):
    texts = banking_slice[2][:10]
    first, second = predictor.predict(texts), predictor.predict(texts)
    assert first.labels == second.labels
    assert np.array_equal(first.confidences, second.confidences)


def test_empty_input_gives_empty_predictions(predictor):
    preds = predictor.predict([])
    assert len(preds) == 0
    assert preds.confidences.shape == (0,)


def test_beats_chance_on_held_out_rows(predictor, banking_slice):
    _, _, test_texts, test_labels = banking_slice
    preds = predictor.predict(test_texts)
    accuracy = np.mean([p == t for p, t in zip(preds.labels, test_labels, strict=True)])
    assert accuracy > 0.5  # chance is 0.25


# -- TextSpecialist ----------------------------------------------------------------------


def test_text_specialist_is_accurate_and_calibrated(fitted, banking_slice):
    _, _, test_texts, test_labels = banking_slice
    preds = fitted.predict(test_texts)
    accuracy = np.mean([p == t for p, t in zip(preds.labels, test_labels, strict=True)])
    assert accuracy >= 0.9
    assert 0.05 < fitted.temperature_ < 20
    # Calibrated: the mean confidence is close to the accuracy.
    assert abs(float(preds.confidences.mean()) - accuracy) < 0.15


def test_save_and_load_round_trip(fitted, encoder, banking_slice, tmp_path):
    path = fitted.save(tmp_path / "model")
    assert sorted(p.name for p in path.iterdir()) == ["config.json", "head.safetensors"]
    loaded = TextSpecialist.load(path, encoder)
    texts = banking_slice[2]
    assert loaded.predict(texts).labels == fitted.predict(texts).labels
    assert np.allclose(loaded.predict(texts).confidences, fitted.predict(texts).confidences)


def test_load_refuses_another_encoder_and_a_broken_artifact(fitted, encoder, tmp_path):
    path = fitted.save(tmp_path / "model")

    class OtherEncoder:
        id = "other/encoder"
        dim = encoder.dim

        def encode(self, texts, *, progress=None):
            raise AssertionError("not called")

    with pytest.raises(ArtifactError, match="trained with encoder"):
        TextSpecialist.load(path, OtherEncoder())
    config = json.loads((path / "config.json").read_text())
    config["kind"] = "pickle"
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ArtifactError, match="is not a text specialist"):
        TextSpecialist.load(path, encoder)
    (path / "head.safetensors").unlink()
    with pytest.raises(ArtifactError, match="missing"):
        TextSpecialist.load(path, encoder)


def test_unfitted_specialist_says_what_to_call(encoder):
    with pytest.raises(NotFittedError, match=r"call fit\(texts, labels\)"):
        TextSpecialist(encoder).predict(["hello"])


def test_two_label_task(encoder, datasets_dir):
    texts, labels = [], []
    with open(datasets_dir / "sms_spam" / "SMSSpamCollection.tsv", encoding="utf-8") as handle:
        for line in list(handle)[:300]:
            label, text = line.rstrip("\n").split("\t", 1)
            texts.append(text)
            labels.append(label)
    spec = TextSpecialist(encoder).fit(texts[:240], labels[:240])
    assert spec.coef_.shape == (2, encoder.dim)
    preds = spec.predict(texts[240:])
    accuracy = np.mean([p == t for p, t in zip(preds.labels, labels[240:], strict=True)])
    assert accuracy >= 0.9


# -- pure functions ----------------------------------------------------------------------


def test_softmax_rows_sum_to_one_and_survive_large_logits():
    probs = softmax(np.array([[1000.0, 1000.0], [0.0, np.log(3.0)]]))
    assert np.allclose(probs, [[0.5, 0.5], [0.25, 0.75]])


def test_fit_temperature_recovers_a_known_temperature():
    rng = np.random.default_rng(0)
    true_logits = rng.normal(size=(4000, 5)) * 2
    probs = softmax(true_logits)
    targets = np.array([rng.choice(5, p=p) for p in probs])
    # The model is over-confident by a factor of 3: the fitted temperature should undo it.
    assert fit_temperature(true_logits * 3, targets) == pytest.approx(3.0, rel=0.1)


def test_a_perfectly_classified_calibration_slice_does_not_make_every_answer_certain():
    # 45 rows, all classified right with a clear margin: hard targets drive the temperature to
    # its lower bound (0.01, every confidence 1.0, nothing would ever cascade); Platt's
    # smoothed targets keep the confidences near the (n + 1) / (n + 2) the slice supports.
    rng = np.random.default_rng(0)
    targets = rng.integers(0, 15, size=45)
    logits = rng.normal(size=(45, 15))
    logits[np.arange(45), targets] += 6.0
    assert (logits.argmax(axis=1) == targets).all()
    temperature = fit_temperature(logits, targets)
    assert 0.1 < temperature < 5
    mean_confidence = softmax(logits / temperature).max(axis=1).mean()
    assert 0.9 < mean_confidence < 0.995
    # A text the head is unsure of stays unsure.
    assert softmax(np.zeros((1, 15)) / temperature).max() == pytest.approx(1 / 15)
    unsure = np.zeros((1, 15))
    unsure[0, :2] = 1.0
    assert softmax(unsure / temperature).max() < 0.5


@pytest.mark.parametrize(
    ("label", "expected"),
    [
        ("card_arrival", "card arrival"),
        ("cardArrival", "card arrival"),
        ("Refund_not_showing_up", "refund not showing up"),
        ("spam", "spam"),
    ],
)
def test_humanise_label(label, expected):
    assert humanise_label(label) == expected


def test_load_predictor_by_kind_and_a_clear_error_for_an_unknown_kind(
    fitted, encoder, banking_slice, tmp_path
):
    from niche.errors import ArtifactError
    from niche.specialists import load_predictor

    fitted.save(tmp_path / "model")
    loaded = load_predictor("text", tmp_path / "model", encoder)
    assert isinstance(loaded, TextSpecialist) and loaded.label_set == fitted.label_set
    with pytest.raises(ArtifactError, match="no loader for model kind 'lora'"):
        load_predictor("lora", tmp_path / "model", encoder)


# -- inputs typed by the input kind, usage, the kinds' own fit and load --------------------


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        ("where is my card?", r"not a single str: pass \[text\]"),
        (["fine", 42], r"inputs\[1\] is int"),
        (None, "not NoneType"),
    ],
)
def test_predict_refuses_inputs_of_the_wrong_kind(predictor, inputs, message):
    with pytest.raises(ValidationError, match=message) as caught:
        predictor.predict(inputs)
    text = str(caught.value)
    assert f"kind {predictor.kind!r} takes text inputs (a sequence of str)" in text
    assert caught.value.param.startswith("inputs")


def test_predict_takes_any_sequence_of_str(predictor, banking_slice):
    texts = banking_slice[2][:5]
    assert predictor.predict(tuple(texts)).labels == predictor.predict(texts).labels


class SteppingClock:
    """Reads 10.0, 10.25, 10.5, … : each predict call measures exactly 0.25 s."""

    def __init__(self) -> None:
        self.now = 9.75

    def __call__(self) -> float:
        self.now += 0.25
        return self.now


def test_predictions_record_their_compute_time(predictor, banking_slice, tmp_path):
    texts = banking_slice[2][:4]
    usage = predictor.predict(texts).usage
    assert isinstance(usage, Usage)
    assert usage.compute_s > 0
    assert (usage.input_tokens, usage.output_tokens) == (None, None)
    # With an injected clock the recorded time is exact; load passes the context's clock on.
    predictor.save(tmp_path / "saved")
    loaded = get_kind(predictor.kind).load(
        tmp_path / "saved", LoadContext(encoder=predictor.encoder, clock=SteppingClock())
    )
    assert loaded.predict(texts).usage == Usage(compute_s=0.25)
    assert loaded.predict([]).usage == Usage(compute_s=0.25)


def test_usage_adds_up():
    total = Usage(compute_s=0.25) + Usage(compute_s=0.5, input_tokens=12)
    assert total == Usage(compute_s=0.75, input_tokens=12, output_tokens=None)
    assert (total + Usage(output_tokens=3)).to_dict() == {
        "compute_s": 0.75,
        "input_tokens": 12,
        "output_tokens": 3,
    }


def test_the_text_kind_fits_what_text_specialist_fits(fitted, encoder, banking_slice):
    train_texts, train_labels, test_texts, _ = banking_slice
    # TextSpecialist's default head is C=10; the kind's default chooses C by cross-validation.
    pinned = FitContext(encoder=encoder, seed=0, options={"c": 10.0})
    via_kind = get_kind("text").fit(train_texts, train_labels, pinned)
    assert isinstance(via_kind, TextSpecialist)
    assert via_kind.get_params() == fitted.get_params()
    assert np.array_equal(via_kind.coef_, fitted.coef_)
    assert via_kind.predict(test_texts).labels == fitted.predict(test_texts).labels
    other = get_kind("text").fit(
        train_texts, train_labels, FitContext(encoder=encoder, seed=1, options={"c": 1.0})
    )
    assert other.get_params() == {
        "c": 1.0,
        "class_weight": None,
        "metric": "accuracy",
        "max_iter": 2000,
        "calibration_size": 0.1,
        "seed": 1,
    }


def test_the_zero_shot_kind_fits_from_the_label_set(encoder, banking_slice, tmp_path):
    descriptions = {"top_up_failed": "my top-up did not work"}
    general = get_kind("zero-shot").fit(
        [], LABELS, FitContext(encoder=encoder, options={"descriptions": descriptions})
    )
    assert isinstance(general, ZeroShot)
    assert general.label_set == LABELS
    assert general.prompts()[3] == "my top-up did not work"
    # Training rows give the same model: the labels in first-seen order, the texts unused.
    from_rows = get_kind("zero-shot").fit(
        ["a", "b", "c"],
        ["exchange_rate", "card_arrival", "exchange_rate"],
        FitContext(encoder=encoder),
    )
    assert from_rows.label_set == ["exchange_rate", "card_arrival"]
    with pytest.raises(ValidationError, match="at least 2 labels"):
        get_kind("zero-shot").fit([], ["spam"], FitContext(encoder=encoder))

    path = general.save(tmp_path / "zero-shot")
    assert sorted(p.name for p in path.iterdir()) == ["config.json"]
    loaded = ZeroShot.load(path, encoder)
    texts = banking_slice[2]
    assert loaded.prompts() == general.prompts()
    assert loaded.predict(texts).labels == general.predict(texts).labels
    assert np.allclose(loaded.predict(texts).confidences, general.predict(texts).confidences)


def test_zero_shot_load_refuses_another_encoder_and_another_kind(encoder, fitted, tmp_path):
    class OtherEncoder:
        id = "other/encoder"
        dim = encoder.dim

        def encode(self, texts, *, progress=None):
            raise AssertionError("not called")

    path = ZeroShot(LABELS, encoder).save(tmp_path / "zero-shot")
    with pytest.raises(ArtifactError, match="saved with encoder"):
        ZeroShot.load(path, OtherEncoder())
    fitted.save(tmp_path / "text")
    with pytest.raises(ArtifactError, match="is not a zero-shot specialist v1"):
        ZeroShot.load(tmp_path / "text", encoder)
    with pytest.raises(ArtifactError, match="missing; not a saved zero-shot specialist"):
        ZeroShot.load(tmp_path / "nothing", encoder)
