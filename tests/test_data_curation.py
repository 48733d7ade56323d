"""niche.data curation: exact counts on hand-made rows, splits, fingerprints, save and load."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from niche.data import CurationReport, DatasetVersion, Rows, curate, normalise_text, resolve_dataset
from niche.errors import (
    ArtifactError,
    ChecksumMismatchError,
    ConfigurationError,
    DataValidationError,
)
from niche.settings import Settings

BASE = "please tell me why my new card has still not arrived after two weeks"


def _filler(label: str, i: int) -> str:
    """A text sharing no 5-gram with any other filler."""
    return f"{label} " + hashlib.sha256(f"{label}-{i}".encode()).hexdigest()[:24]


def _rows(sizes: dict[str, int], source: str = "hand") -> Rows:
    texts = [_filler(label, i) for label, n in sizes.items() for i in range(n)]
    labels = [label for label, n in sizes.items() for _ in range(n)]
    return Rows(tuple(texts), tuple(labels), source)


def _messy_rows() -> Rows:
    texts = [
        BASE,
        f"  {BASE}\u200b",  # equal to BASE once normalised: exact duplicate
        "how do I reset the pin on my debit card",  # three copies, two labels: conflict
        "how do I reset the pin on my debit card",
        "how do I reset the pin on my debit card",
        BASE + "!",  # near-duplicate of BASE (Jaccard 0.98), same label
        BASE.upper() + "??",  # near-duplicate of BASE (Jaccard 0.97), another label
        "\uff54\uff4f\uff50 \uff55\uff50 my account with cash",  # full-width: normalised
    ]
    labels = ["a", "a", "b", "c", "b", "a", "b", "c"]
    extra = _rows({"a": 6, "b": 6, "c": 6})
    return Rows((*texts, *extra.texts), (*labels, *extra.labels), "hand")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("  Hello\t\n  world  ", "Hello world"),
        ("\uff28\uff45llo", "Hello"),  # NFKC folds full-width letters
        ("\ufb01ne", "fine"),  # and ligatures
        ("zero\u200bwidth\u200d joiner\ufeff", "zerowidth joiner"),
        ("bell\x07 and\x00nul", "bell andnul"),
        ("non\u00a0breaking\u2003space", "non breaking space"),
        ("Case Is Kept", "Case Is Kept"),
    ],
)
def test_normalise_text(raw: str, expected: str) -> None:
    assert normalise_text(raw) == expected
    assert normalise_text(expected) == expected


def test_each_removal_kind_is_counted_exactly() -> None:
    version = curate(_messy_rows(), test_size=0.25, seed=0)
    report = version.report
    assert report.rows_in == 26
    assert report.texts_normalised == 2
    assert report.exact_duplicates == 1
    assert report.conflicting_duplicates == 3
    assert report.conflict_examples == [
        {"text": "how do I reset the pin on my debit card", "labels": ["b", "c"]}
    ]
    assert report.near_duplicates == 1
    assert report.near_duplicate_conflicts == 1
    assert report.leaks_removed == 0
    assert report.test_labels_unseen == 0
    # a: BASE + 6, b: 6, c: "top up" + 6; round(n * 0.25) of each label goes to test.
    assert report.rows_out == {"train": 14, "test": 6}
    assert report.labels == 3
    assert (report.seed, report.test_size, report.near_duplicate_threshold) == (0, 0.25, 0.9)
    train = version.splits["train"]
    every_text = set(train.texts) | set(version.splits["test"].texts)
    assert "top up my account with cash" in every_text
    assert BASE in every_text
    assert not any("reset the pin" in t or t.startswith(BASE + "!") for t in every_text)
    assert version.label_set == ["a", "b", "c"]


def test_conflict_examples_are_capped_at_twenty() -> None:
    texts = [f"conflicting text number {i:03d}" for i in range(25) for _ in range(2)]
    labels = ["x", "y"] * 25
    extra = _rows({"x": 2, "y": 2})
    version = curate(Rows((*texts, *extra.texts), (*labels, *extra.labels), "hand"))
    assert version.report.conflicting_duplicates == 50
    assert len(version.report.conflict_examples) == 20


def test_near_duplicates_are_confirmed_by_exact_jaccard_at_the_threshold() -> None:
    first = "the quick brown fox jumps over the lazy dog near the river bank"
    second = "the quick brown fox jumps over the lazy cat near the river bank"
    extra = _rows({"a": 3})
    rows = Rows((first, second, *extra.texts), ("a", "a", *extra.labels), "hand")
    # 5-gram Jaccard of the two is 47 / 63 = 0.746.
    assert curate(rows, near_duplicate_threshold=0.9).report.near_duplicates == 0
    assert curate(rows, near_duplicate_threshold=0.7).report.near_duplicates == 1
    # Casefolding makes texts differing only in case near-duplicates (Jaccard 1).
    shouting = Rows((first, first.upper(), *extra.texts), ("a", "a", *extra.labels), "hand")
    report = curate(shouting).report
    assert (report.exact_duplicates, report.near_duplicates) == (0, 1)


def test_short_texts_are_one_shingle() -> None:
    rows = Rows(("hi", "Hi", "yo", "ok", "no"), ("a", "a", "b", "a", "b"), "hand")
    report = curate(rows).report
    assert report.near_duplicates == 1
    assert report.rows_out == {"train": 2, "test": 2}


def test_stratified_split_sizes_per_label() -> None:
    rows = _rows({"ten": 10, "eight": 8, "five": 5, "two": 2, "one": 1})
    version = curate(rows, test_size=0.2, seed=3)
    test, train = version.splits["test"], version.splits["train"]
    assert {label: test.labels.count(label) for label in test.label_set()} == {
        "ten": 2,
        "eight": 2,  # round(1.6)
        "five": 1,
        "two": 1,  # round(0.4) = 0, but a label with two rows gives one to test
    }
    assert train.labels.count("one") == 1
    assert version.report.rows_out == {"train": 20, "test": 6}
    half = curate(_rows({"three": 3, "five": 5, "two": 2}), test_size=0.5).splits["test"]
    # round() rounds half to even: 1.5 -> 2, 2.5 -> 2, 1.0 -> 1.
    assert (half.labels.count("three"), half.labels.count("five"), half.labels.count("two")) == (
        2,
        2,
        1,
    )
    most = curate(_rows({"three": 3}), test_size=0.9).splits
    assert (len(most["train"]), len(most["test"])) == (1, 2)  # train keeps one row


def test_the_split_is_deterministic_for_a_seed() -> None:
    rows = _rows({"a": 20, "b": 20, "c": 20})
    first = curate(rows, seed=7)
    again = curate(rows, seed=7)
    other = curate(rows, seed=8)
    assert first.splits == again.splits
    assert first.fingerprint == again.fingerprint
    assert set(first.splits["test"].texts) != set(other.splits["test"].texts)
    # Rows keep their input order within each split.
    order = {text: i for i, text in enumerate(rows.texts)}
    positions = [order[t] for t in first.splits["train"].texts]
    assert positions == sorted(positions)


def test_a_canonical_test_split_is_kept_and_leaks_leave_train() -> None:
    train = Rows(
        (
            BASE,
            "What is the exchange rate for euros today?",  # near-duplicate of a test text
            _filler("a", 1),
            _filler("b", 1),
            _filler("b", 2),
        ),
        ("a", "b", "a", "b", "b"),
        "train.csv",
    )
    test = Rows(
        (
            f"{BASE} ",  # exactly BASE once normalised
            "what is the exchange rate for euros today ?",
            _filler("c", 1),  # label c is absent from train
            _filler("a", 2),
            _filler("a", 2),  # exact duplicate within test
        ),
        ("a", "b", "c", "a", "a"),
        "test.csv",
    )
    version = curate(train, test_rows=test)
    report = version.report
    assert report.rows_in == 10
    assert report.exact_duplicates == 1
    assert report.leaks_removed == 2
    assert report.test_labels_unseen == 1
    assert report.rows_out == {"train": 3, "test": 3}
    assert version.splits["train"].texts == (_filler("a", 1), _filler("b", 1), _filler("b", 2))
    assert version.splits["test"].texts == (
        BASE,
        "what is the exchange rate for euros today ?",
        _filler("a", 2),
    )
    assert version.splits["test"].source == "test.csv"
    assert version.splits["test"].lines == (1, 2, 4)
    assert version.source == "train.csv"
    assert curate(train, test_rows=test, source="mine").source == "mine"


def test_fingerprint_is_stable_and_covers_every_label() -> None:
    version = curate(_messy_rows(), test_size=0.25, seed=0)
    assert version.fingerprint == (
        "d8c5b2d0700bde3a14f66842c3c53ac9b463e12dad3a0d8938c7429230bdb85d"
    )
    digest = hashlib.sha256()
    for split in ("train", "test"):
        rows = version.splits[split]
        for text, label in zip(rows.texts, rows.labels, strict=True):
            digest.update(orjson.dumps([split, text, label]) + b"\n")
    assert version.fingerprint == digest.hexdigest()
    rows = _messy_rows()
    changed = Rows(rows.texts, (*rows.labels[:-1], "d"), rows.source)
    assert curate(changed, test_size=0.25, seed=0).fingerprint != version.fingerprint


def test_report_round_trips_through_json() -> None:
    report = curate(_messy_rows(), test_size=0.25).report
    data = orjson.loads(orjson.dumps(report.to_dict()))
    assert CurationReport.from_dict(data) == report
    with pytest.raises(DataValidationError, match="lacks field"):
        CurationReport.from_dict({k: v for k, v in data.items() if k != "seed"})
    with pytest.raises(DataValidationError, match="unknown field"):
        CurationReport.from_dict({**data, "surprise": 1})


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    version = curate(_messy_rows(), test_size=0.25, seed=0)
    stamp = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    target = version.save(tmp_path / "versions" / "messy", created_at=stamp)
    assert target == tmp_path / "versions" / "messy"
    assert sorted(p.name for p in target.iterdir()) == ["test.jsonl", "train.jsonl", "version.json"]
    assert [p.name for p in target.parent.iterdir()] == ["messy"]  # no temp dir left
    meta = orjson.loads((target / "version.json").read_bytes())
    assert meta["fingerprint"] == version.fingerprint
    assert meta["created_at"] == "2026-01-02T03:04:05+00:00"
    assert meta["report"] == version.report.to_dict()
    loaded = DatasetVersion.load(target)
    assert loaded.fingerprint == version.fingerprint
    assert loaded.report == version.report
    assert loaded.source == version.source
    for split in ("train", "test"):
        assert loaded.splits[split].texts == version.splits[split].texts
        assert loaded.splits[split].labels == version.splits[split].labels

    mtime = (target / "version.json").stat().st_mtime_ns
    assert version.save(target) == target  # the same version: left as it is
    assert (target / "version.json").stat().st_mtime_ns == mtime
    other = curate(_rows({"a": 3, "b": 3}))
    with pytest.raises(ArtifactError, match="already holds dataset version"):
        other.save(target)


def test_an_empty_test_split_saves_and_loads(tmp_path: Path) -> None:
    version = curate(_rows({"a": 1, "b": 1}))
    assert version.report.rows_out == {"train": 2, "test": 0}
    loaded = DatasetVersion.load(version.save(tmp_path / "v"))
    assert len(loaded.splits["test"]) == 0
    assert loaded.fingerprint == version.fingerprint


def test_a_tampered_saved_version_is_refused(tmp_path: Path) -> None:
    version = curate(_messy_rows(), test_size=0.25, seed=0)
    target = version.save(tmp_path / "v")
    train = target / "train.jsonl"
    lines = train.read_bytes().splitlines(keepends=True)
    record = orjson.loads(lines[0])
    record["label"] = "b" if record["label"] != "b" else "a"
    train.write_bytes(orjson.dumps(record) + b"\n" + b"".join(lines[1:]))
    with pytest.raises(ChecksumMismatchError, match=version.fingerprint):
        DatasetVersion.load(target)


def test_bad_input_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="test_size"):
        curate(_rows({"a": 3}), test_size=1.0)
    with pytest.raises(ConfigurationError, match="near_duplicate_threshold"):
        curate(_rows({"a": 3}), near_duplicate_threshold=0)
    with pytest.raises(DataValidationError, match="no rows to curate"):
        curate(Rows((), (), "empty"))
    invisible = Rows(("fine text", "\u200b\u200d"), ("a", "a"), "mem", lines=(4, 9))
    with pytest.raises(DataValidationError) as caught:
        curate(invisible)
    assert str(caught.value) == "mem, line 9, column 'text': text is empty after normalisation"
    unlabelled = Rows(("fine text", "other text"), ("a", " "), "mem")
    with pytest.raises(DataValidationError) as caught:
        curate(unlabelled)
    assert str(caught.value) == "mem, line 2, column 'label': empty label"


def test_curating_real_banking77(datasets_dir: Path, tmp_path: Path) -> None:
    dataset = resolve_dataset("banking77", Settings(environ={"NICHE_DATASETS": str(datasets_dir)}))
    assert dataset.test is not None
    version = curate(dataset.train, test_rows=dataset.test)
    report = version.report
    assert report.rows_in == 13083
    assert report.exact_duplicates == 5
    assert report.conflicting_duplicates == 0
    train, test = version.splits["train"], version.splits["test"]
    assert report.rows_out == {"train": len(train), "test": len(test)}
    assert 3070 <= len(test) <= 3080
    removed = report.exact_duplicates + report.near_duplicates + report.leaks_removed
    assert len(train) + len(test) == 13083 - removed - report.near_duplicate_conflicts
    assert not set(train.texts) & set(test.texts)
    assert report.labels == 77
