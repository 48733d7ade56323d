"""One conformance suite for every Predictor kind, run on the real encoder and real data."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from niche.errors import ArtifactError, NotFittedError
from niche.specialists import Predictions, Predictor, TextSpecialist, ZeroShot, humanise_label
from niche.specialists.text import fit_temperature, softmax

LABELS = ["card_arrival", "lost_or_stolen_card", "exchange_rate", "top_up_failed"]


@pytest.fixture(scope="module")
def banking_slice(datasets_dir: Path) -> tuple[list[str], list[str], list[str], list[str]]:
    """60 training and 20 test rows per label for four BANKING77 intents."""

    def rows(name: str, per_label: int) -> tuple[list[str], list[str]]:
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

    train_texts, train_labels = rows("train.csv", 60)
    test_texts, test_labels = rows("test.csv", 20)
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
        # int8 dynamic quantisation scales activations per batch: tiny differences only.
        assert single.confidences[0] == pytest.approx(batch.confidences[i], abs=0.05)


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
