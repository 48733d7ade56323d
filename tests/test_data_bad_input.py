"""Bad datasets write nothing: every refusal comes before the first write, and an interrupted
curation leaves nothing registered (no dataset row, no task, no files), on SQLite and
PostgreSQL."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from typer.testing import CliRunner

from niche.cli import app
from niche.data import Rows, curate, load_file
from niche.data.near_duplicates import NearDuplicates
from niche.errors import ConfigurationError, DataValidationError
from niche.registry import Registry
from niche.registry.artifacts import ArtifactStore
from niche.settings import Settings
from niche.workflows import DataSpec, curate_data, train_and_register

runner = CliRunner()


def _csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as stream:
        writer = csv.writer(stream)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def _texts(n: int, word: str = "ticket") -> list[str]:
    return [f"{word} about issue number {i} and its {i * 7} details" for i in range(n)]


# Each bad file: (header, rows, words the one error line must hold besides the file name).
BAD_FILES = {
    "one-label": (
        ["text", "label"],
        [[t, "billing"] for t in _texts(30)],
        ("column 'label'", "'billing'", "at least 2 labels"),
    ),
    "duplicated-header": (
        ["text", "label", "label"],
        [[t, "a" if i % 2 else "b", "c"] for i, t in enumerate(_texts(30))],
        ("line 1", "column 'label'", "2 times"),
    ),
    "every-label-one-row": (
        ["text", "label"],
        [[t, f"label{i}"] for i, t in enumerate(_texts(5))],
        ("no test rows",),
    ),
    "all-rows-one-text": (
        ["text", "label"],
        [["the very same text every time", "a"] for _ in range(20)],
        ("at least 2 labels",),
    ),
}


def _nothing_written(home: Path, database_url: str) -> None:
    assert [p for p in home.rglob("*") if p.is_file()] == []
    with Registry(database_url) as registry:
        assert registry.datasets.all() == []
        assert registry.tasks.all() == []
        assert registry.audit.events() == []


@pytest.mark.parametrize("command", ["data curate", "quickstart"])
@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_a_bad_file_is_refused_naming_it_and_writes_nothing(
    case: str, command: str, tmp_path: Path, niche_home: Path, database_url: str
) -> None:
    header, rows, names = BAD_FILES[case]
    path = _csv(tmp_path / f"{case}.csv", header, rows)
    result = runner.invoke(
        app, [*command.split(), "--data", str(path)], env={"NICHE_DATABASE_URL": database_url}
    )
    assert result.exit_code == 2, result.output
    # Progress bars share stderr; the error is one line of its own.
    errors = [line for line in result.stderr.splitlines() if "error" in line]
    assert len(errors) == 1 and "Traceback" not in result.stderr, result.stderr
    message = errors[0]
    assert message.startswith(f"error: {path}"), message
    for name in names:
        assert name in message, message
    _nothing_written(niche_home, database_url)


def test_a_duplicated_header_names_the_column_the_file_and_the_line(tmp_path: Path) -> None:
    path = _csv(tmp_path / "t.tsv", ["label", "text", "text"], [["a", "x", "y"]])
    path.write_text(path.read_text().replace(",", "\t"))
    with pytest.raises(DataValidationError) as caught:
        load_file(path)
    assert str(caught.value) == (
        f"{path}, line 1, column 'text': the header names this column 2 times (fields 2, 3); "
        "rename or drop the extra ones"
    )
    # A repeated column that is neither the text nor the label is no ambiguity.
    fine = _csv(tmp_path / "f.csv", ["text", "label", "", ""], [["x", "a", "", ""]])
    assert load_file(fine).labels == ("a",)


def test_one_column_as_both_text_and_label_is_refused(tmp_path: Path) -> None:
    path = _csv(tmp_path / "t.csv", ["text", "label"], [["x", "a"]])
    with pytest.raises(ConfigurationError, match="both 'label'"):
        load_file(path, text_col="label", label_col="label")


def test_training_data_the_specialist_refuses_leaves_no_dataset_or_task(
    registry: Registry, encoder
) -> None:
    # The library curates one label (it cannot know the use); the text kind refuses it.
    version = curate(Rows(tuple(_texts(12)), ("a",) * 12, "one.csv"), source="one.csv")
    with pytest.raises(ConfigurationError, match="at least 2 labels"):
        train_and_register(version, Settings(), encoder=encoder, registry=registry)
    assert registry.datasets.all() == []
    assert registry.tasks.all() == []


# -- interrupted curation ----------------------------------------------------------------------


def _good_file(tmp_path: Path) -> Path:
    rows = [[t, "refund"] for t in _texts(12, "refund")] + [[t, "card"] for t in _texts(12, "card")]
    return _csv(tmp_path / "tickets.csv", ["text", "label"], rows)


def _interrupt(*_: object, **__: object) -> None:
    raise KeyboardInterrupt


def test_a_curation_interrupted_midway_registers_nothing(
    registry: Registry, tmp_path: Path, niche_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(NearDuplicates, "leaks", _interrupt)
    with pytest.raises(KeyboardInterrupt):
        curate_data(DataSpec(data=_good_file(tmp_path)), Settings(), registry=registry)
    assert registry.datasets.all() == []
    assert [p for p in niche_home.rglob("*") if p.is_file()] == []


def test_an_interrupted_registration_leaves_no_row_and_no_files(
    registry: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import niche.registry.stores.datasets as store

    # The files are stored, then the transaction that inserts the row fails at its event.
    monkeypatch.setattr(store, "write_event", _interrupt)
    spec = DataSpec(data=_good_file(tmp_path))
    with pytest.raises(KeyboardInterrupt):
        curate_data(spec, Settings(), registry=registry)
    assert registry.datasets.all() == []
    assert registry.audit.events() == []
    artifacts = ArtifactStore.from_settings(Settings())
    assert artifacts.digests() == set()
    assert not (Path(artifacts.root) / "tmp").exists() or not any(
        (Path(artifacts.root) / "tmp").iterdir()
    )
    monkeypatch.undo()
    curated = curate_data(spec, Settings(), registry=registry)  # and a retry then succeeds
    assert [d.fingerprint for d in registry.datasets.all()] == [curated.version.fingerprint]
    assert artifacts.digests() == registry.datasets.artifact_digests()
