"""The newcomer's path: the CLI finds data as make does (or says the line to paste), says the
task name a dataset gets, says when data is already registered or trained on, prints tables
unwrapped into pipes, and `make demo` announces its installs."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from niche.cli import app
from niche.data import Rows, curate
from niche.registry import Registry
from niche.settings import Settings
from niche.workflows import DataSpec, curate_data, train_and_register
from tests.conftest import ROOT

runner = CliRunner()


class RecordingProgress:
    """A Progress that keeps each step's description."""

    def __init__(self) -> None:
        self.steps: list[str] = []

    def task(self, description: str, total: int | None = None):
        import contextlib

        self.steps.append(description)
        return contextlib.nullcontext(lambda _: None)


def test_data_curate_says_the_task_name_and_then_that_it_already_exists(
    cli_env: Path, database_url: str
) -> None:
    env = {"NICHE_DATABASE_URL": database_url}
    first = runner.invoke(app, ["data", "curate", "--dataset", "clinc150/banking"], env=env)
    assert first.exit_code == 0, first.output
    assert "task 'clinc150.banking'" in first.stdout
    assert "already exists" not in first.stdout
    again = runner.invoke(app, ["data", "curate", "--dataset", "clinc150/banking"], env=env)
    assert again.exit_code == 0, again.output
    assert "already exists (same content)" in again.stdout
    assert "nothing new written" in again.stdout
    with Registry(database_url) as registry:
        assert len(registry.datasets.all()) == 1
    helped = runner.invoke(app, ["data", "curate", "--help"], env={"COLUMNS": "200"})
    assert "clinc150.banking" in helped.stdout


def test_curate_data_reports_an_existing_version(registry: Registry, datasets_dir: Path) -> None:
    spec = DataSpec(dataset="clinc150/travel")
    first = curate_data(spec, Settings(), registry=registry)
    progress = RecordingProgress()
    second = curate_data(spec, Settings(), registry=registry, progress=progress)
    assert (first.already, second.already) == (False, True)
    assert second.to_dict()["already_registered"] is True
    assert first.task == "clinc150.travel" == first.to_dict()["task"]
    assert any("already exists (same content)" in step for step in progress.steps)


def test_training_again_on_the_same_data_says_a_model_was_already_trained(
    registry: Registry, encoder
) -> None:
    texts = [f"{w} request number {i}" for w in ("refund", "card", "transfer") for i in range(8)]
    version = curate(Rows(texts, [t.split()[0] for t in texts], "tickets.csv"), seed=0)
    first = RecordingProgress()
    v1 = train_and_register(
        version, Settings(), kind="zero-shot", encoder=encoder, registry=registry, progress=first
    )
    assert not any("already" in step for step in first.steps)
    second = RecordingProgress()
    v2 = train_and_register(
        version, Settings(), kind="zero-shot", encoder=encoder, registry=registry, progress=second
    )
    # The same data and code give the same bytes: v1 again, and the user is told both things.
    assert (v1.task, v1.version, v2.version) == ("tickets", 1, 1)
    assert [step for step in second.steps if "already" in step] == [
        f"tickets v1 already trained (zero-shot) from dataset version "
        f"{version.fingerprint[:16]}; training again",
        "tickets v1 already exists: this data gives the same model, byte for byte; "
        "nothing new registered",
    ]


def test_tables_do_not_wrap_mid_value_when_piped(registry: Registry, database_url: str) -> None:
    source = "/a/rather/long/path/to/where/the/labelled/tickets/of/the/team/live/tickets.csv"
    texts = [f"{w} ticket {i}" for w in ("alpha", "beta") for i in range(4)]
    version = curate(Rows(texts, [t.split()[0] for t in texts], source), source=source)
    registry.datasets.register(version)
    result = runner.invoke(app, ["datasets", "list"], env={"NICHE_DATABASE_URL": database_url})
    assert result.exit_code == 0, result.output
    (line,) = [line for line in result.stdout.splitlines() if version.fingerprint[:16] in line]
    assert source in line


def test_a_failed_download_gives_the_line_to_paste(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, datasets_dir: Path
) -> None:
    # A checkout beside shared/datasets, as make sees it; nothing set in the environment.
    checkout = tmp_path / "niche"
    checkout.mkdir()
    (tmp_path / "shared" / "datasets").mkdir(parents=True)
    (tmp_path / "shared" / "datasets" / "sms_spam").symlink_to(datasets_dir / "sms_spam")
    monkeypatch.chdir(checkout)
    monkeypatch.delenv("NICHE_DATASETS", raising=False)
    env = {"NICHE_DATASET_MIRROR": "http://127.0.0.1:9", "NICHE_DATASETS": ""}
    result = runner.invoke(app, ["data", "inspect", "--dataset", "sms_spam"], env=env)
    assert result.exit_code != 0
    folder = (tmp_path / "shared" / "datasets").resolve()
    assert f"export NICHE_DATASETS={folder}" in result.stderr, result.stderr
    # Pasted, the line makes the command work.
    pasted = runner.invoke(
        app, ["data", "inspect", "--dataset", "sms_spam"], env={"NICHE_DATASETS": str(folder)}
    )
    assert pasted.exit_code == 0, pasted.output


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_demo_announces_each_install_and_shows_pip_progress(tmp_path: Path) -> None:
    done = subprocess.run(
        ["make", "-n", "-B", "demo", f"VENV={tmp_path / 'venv'}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    lines = done.stdout.splitlines()
    installs = [line for line in lines if "pip install" in line and "--upgrade pip" not in line]
    assert len(installs) == 2 and not any("--quiet" in line for line in installs), lines
    for install in installs:
        before = lines[lines.index(install) - 1]
        assert before.startswith("echo ") and "==>" in before, before
    assert any("export NICHE_DATASETS=" in line for line in lines)
