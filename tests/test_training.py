import pytest

from niche.errors import ConfigurationError
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
