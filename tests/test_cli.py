"""The CLI end to end: real files, the real encoder, a real NICHE_HOME in a temp dir."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from niche.cli import app

runner = CliRunner()


@pytest.fixture
def tickets_csv(tmp_path: Path, datasets_dir: Path) -> Path:
    """A labelled CSV with other column names: 6 BANKING77 intents, 50 rows each."""
    wanted = {
        "card_arrival": 0,
        "lost_or_stolen_card": 0,
        "exchange_rate": 0,
        "top_up_failed": 0,
        "balance_not_updated_after_bank_transfer": 0,
        "pin_blocked": 0,
    }
    path = tmp_path / "tickets.csv"
    with (
        open(datasets_dir / "banking77" / "train.csv", newline="", encoding="utf-8") as src,
        open(path, "w", newline="", encoding="utf-8") as dst,
    ):
        writer = csv.writer(dst)
        writer.writerow(["id", "body", "queue"])
        for i, row in enumerate(csv.DictReader(src)):
            if row["category"] in wanted and wanted[row["category"]] < 50:
                wanted[row["category"]] += 1
                writer.writerow([i, row["text"], row["category"]])
    return path


def _json(result) -> dict:
    assert result.exit_code == 0, result.output + (result.stderr or "")
    return json.loads(result.stdout)


def test_help_starts_without_importing_heavy_libraries():
    code = (
        "import sys\n"
        "from niche.cli import app\n"
        "heavy = {'torch', 'transformers', 'sentence_transformers', 'onnxruntime', 'sklearn', 'sqlalchemy', 'numpy'}\n"
        "print(sorted(heavy & set(sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    help_run = subprocess.run(
        [sys.executable, "-m", "niche", "--help"], capture_output=True, text=True, check=True
    )
    assert "quickstart" in help_run.stdout


def _command_paths() -> list[list[str]]:
    import typer

    paths: list[list[str]] = []

    def walk(command: object, path: list[str]) -> None:
        paths.append(path)
        if hasattr(command, "commands"):
            for name, sub in command.commands.items():
                walk(sub, [*path, name])

    walk(typer.main.get_command(app), [])
    return paths


def test_every_commands_help_renders():
    paths = _command_paths()
    assert ["serve"] in paths and ["keys", "create"] in paths
    for path in paths:
        result = runner.invoke(app, [*path, "--help"])
        assert result.exit_code == 0, (path, result.output, result.exception)


def test_settings_json_lists_values_and_sources(cli_env):
    table = _json(runner.invoke(app, ["settings", "--json"]))
    by_name = {row["name"]: row for row in table}
    assert by_name["NICHE_HOME"]["value"] == str(cli_env)
    assert by_name["NICHE_HOME"]["source"] == "env"
    assert by_name["NICHE_CPU_HOUR_USD"]["source"] == "default"


@pytest.mark.slow
def test_quickstart_on_any_labelled_csv(cli_env, tickets_csv):
    result = runner.invoke(
        app,
        [
            "quickstart",
            "--data",
            str(tickets_csv),
            "--text-col",
            "body",
            "--label-col",
            "queue",
            "--json",
        ],
    )
    out = _json(result)
    assert (
        out["dataset"]["rows"]
        == 300
        - out["curation"]["exact_duplicates"]
        - out["curation"]["near_duplicates"]
        - out["curation"]["conflicting_duplicates"]
        - out["curation"]["near_duplicate_conflicts"]
    )
    assert len(out["dataset"]["fingerprint"]) == 64
    assert out["dataset"]["labels"] == 6
    spec, general = out["specialist"], out["general"]
    assert spec["accuracy"] >= 0.85
    low, high = spec["accuracy_ci"]
    assert low <= spec["accuracy"] <= high
    assert general["kind"] == "zero-shot"
    assert 0.0 <= general["accuracy"] <= 1.0
    for key in ("macro_f1", "latency_p50_ms", "cost_per_1m_usd", "wh_per_query"):
        assert spec[key] > 0
    assert 0.0 <= out["paired_test"]["p_value"] <= 1.0
    thresholds = [point["threshold"] for point in out["cascade"]]
    assert thresholds == sorted(thresholds)
    assert out["cascade"][0]["coverage"] == 1.0
    assert out["registry"] == {"task": "tickets", "model_version": 1, "alias": "champion"}
    assert out["gate"]["passed"] is True
    assert {c["name"] for c in out["gate"]["checks"]} >= {"held_out", "quality_vs_general"}
    assert spec["artifact_digest"] in spec["artifact_uri"]


@pytest.mark.slow
def test_quickstart_prints_the_comparison(cli_env, tickets_csv):
    result = runner.invoke(
        app,
        ["quickstart", "--data", str(tickets_csv), "--text-col", "body", "--label-col", "queue"],
    )
    assert result.exit_code == 0, result.output
    for expected in (
        "accuracy (95% CI)",
        "McNemar",
        "cascade",
        "cost per 1M",
        "promoted to champion",
    ):
        assert expected in result.stdout


@pytest.mark.slow
def test_curate_train_evaluate_as_separate_steps(cli_env, tickets_csv):
    columns = ["--data", str(tickets_csv), "--text-col", "body", "--label-col", "queue"]
    inspected = _json(runner.invoke(app, ["data", "inspect", *columns, "--json"]))
    assert inspected["splits"]["train"]["rows"] == 300
    assert not (cli_env / "datasets").exists()

    curated = _json(runner.invoke(app, ["data", "curate", *columns, "--seed", "3", "--json"]))
    fingerprint = curated["fingerprint"]
    assert curated["curation"]["rows_out"]["test"] > 0
    # Curating registers the version: the registry lists it before anything is trained.
    listed = _json(runner.invoke(app, ["datasets", "list", "--json"]))
    assert [d["fingerprint"] for d in listed] == [fingerprint]

    trained = _json(runner.invoke(app, ["train", fingerprint[:10], "--task", "queues", "--json"]))
    assert (trained["task"], trained["version"]) == ("queues", 1)
    assert trained["dataset_fingerprint"] == fingerprint
    assert trained["lineage"]["encoder_id"]

    report = _json(runner.invoke(app, ["evaluate", "queues", "1", "--json"]))
    assert report["rows"] == curated["curation"]["rows_out"]["test"]
    assert report["specialist"]["accuracy"] >= report["general"]["accuracy"] - 0.05
    shown = _json(runner.invoke(app, ["models", "show", "queues", "1", "--json"]))
    assert len(shown["evaluations"]) == 1


@pytest.mark.slow
def test_train_another_kind_and_evaluate_it_through_its_kind(cli_env, tickets_csv):
    columns = ["--data", str(tickets_csv), "--text-col", "body", "--label-col", "queue"]
    fingerprint = _json(runner.invoke(app, ["data", "curate", *columns, "--json"]))["fingerprint"]
    args = ["train", fingerprint, "--task", "queues", "--kind", "zero-shot", "--json"]
    trained = _json(runner.invoke(app, args))
    assert (trained["kind"], trained["lineage"]["kind"]) == ("zero-shot", "zero-shot")
    report = _json(runner.invoke(app, ["evaluate", "queues", "1", "--json"]))
    assert (report["specialist"]["kind"], report["general"]["kind"]) == ("zero-shot", "zero-shot")
    # Stored and loaded through its kind, it is the baseline itself: the same answers.
    assert report["specialist"]["accuracy"] == report["general"]["accuracy"]
    assert report["specialist"]["per_class"] == report["general"]["per_class"]


@pytest.mark.slow
def test_registry_round_trip_promotion_history_lineage_refusal_and_gc(cli_env, tickets_csv):
    columns = ["--data", str(tickets_csv), "--text-col", "body", "--label-col", "queue"]
    out = _json(runner.invoke(app, ["quickstart", *columns, "--json"]))
    task, fingerprint = out["registry"]["task"], out["dataset"]["fingerprint"]

    history = _json(runner.invoke(app, ["aliases", "history", task, "--json"]))
    assert [(e["alias"], e["from_version"], e["to_version"]) for e in history] == [
        ("champion", None, 1)
    ]
    assert history[0]["actor"].startswith("cli:")
    assert history[0]["reason"]

    lineage = _json(runner.invoke(app, ["models", "lineage", task, "1", "--json"]))
    assert lineage["dataset"]["fingerprint"] == fingerprint
    text = runner.invoke(app, ["models", "lineage", task, "champion"]).stdout
    assert fingerprint in text

    # A deliberately worse model: 5 % of the rows (2 per label).
    worse = _json(
        runner.invoke(app, ["train", fingerprint, "--task", task, "--fraction", "0.05", "--json"])
    )
    assert worse["version"] == 2
    refused = runner.invoke(app, ["promote", task, "2", "--json"])
    # 4: the gate refused (3 would say someone else moved the alias meanwhile).
    assert refused.exit_code == 4, refused.output
    verdict = json.loads(refused.stdout)
    failed = [c["name"] for c in verdict["checks"] if not c["passed"]]
    assert refused.stderr.strip() == (
        f"error: gate refused {task} v2 for champion: failed {', '.join(failed)}"
    )
    assert "non_inferior_to_champion" in failed
    assert verdict["moved"] is False
    gates = _json(runner.invoke(app, ["gates", task, "--json"]))
    assert [(g["version"], g["passed"]) for g in gates] == [(1, True), (2, False)]
    assert _json(runner.invoke(app, ["tasks", "show", task, "--json"]))["aliases"] == {
        "champion": 1
    }

    # Forced, with a reason: recorded as such.
    forced = runner.invoke(app, ["promote", task, "2", "--force", "--why", "demo", "--json"])
    assert forced.exit_code == 0, forced.output
    history = _json(runner.invoke(app, ["aliases", "history", task, "--json"]))
    assert (history[-1]["from_version"], history[-1]["to_version"]) == (1, 2)
    assert "demo" in history[-1]["reason"]

    # gc keeps referenced artifacts, removes an orphan.
    orphan = cli_env / "orphan"
    orphan.mkdir()
    (orphan / "config.json").write_text("{}")
    from niche.registry.artifacts import ArtifactStore
    from niche.settings import Settings

    store = ArtifactStore.from_settings(Settings())
    digest = store.put_dir(orphan).digest
    removed = _json(runner.invoke(app, ["gc", "--json"]))["removed"]
    assert removed == [digest]
    assert _json(runner.invoke(app, ["evaluate", task, "champion", "--json"]))["rows"] > 0


@pytest.mark.slow
def test_a_tampered_artifact_is_refused_naming_the_digest(cli_env, tickets_csv):
    columns = ["--data", str(tickets_csv), "--text-col", "body", "--label-col", "queue"]
    out = _json(runner.invoke(app, ["quickstart", *columns, "--json"]))
    digest = out["specialist"]["artifact_digest"]
    head = next(Path(cli_env, "artifacts").rglob("head.safetensors"))
    data = bytearray(head.read_bytes())
    data[-1] ^= 0xFF
    head.write_bytes(bytes(data))
    result = runner.invoke(app, ["evaluate", out["registry"]["task"], "1"])
    assert result.exit_code == 1, result.output
    assert result.stderr.strip().count("\n") == 0
    assert "mismatch" in result.stderr and digest in result.stderr


def test_unknown_references_exit_2_with_one_line(cli_env):
    result = runner.invoke(app, ["train", "deadbeef"])
    assert result.exit_code == 2
    assert result.stderr.strip().count("\n") == 0
    assert "no dataset version 'deadbeef'" in result.stderr


@pytest.mark.parametrize(
    ("content", "line", "column"),
    [
        ("id,body\n1,hello\n", "line 1", "'queue'"),
        ("id,body,queue\n1,hello,a\n2,world,\n3,again,b\n", "line 3", "'queue'"),
        ('id,body,queue\n1,hello,a\n2,"broken,b\n3,again,b\n', "line 3", "'body'"),
    ],
    ids=["missing column", "empty label", "broken quote"],
)
def test_bad_files_exit_2_naming_file_line_and_column_and_write_nothing(
    cli_env, tmp_path, content, line, column
):
    bad = tmp_path / "bad.csv"
    bad.write_text(content, encoding="utf-8")
    for command in (["quickstart"], ["data", "curate"], ["data", "inspect"]):
        result = runner.invoke(
            app, [*command, "--data", str(bad), "--text-col", "body", "--label-col", "queue"]
        )
        assert result.exit_code == 2, result.output
        message = result.stderr.strip()
        assert message.count("\n") == 0, message
        assert str(bad) in message and line in message
        if column:
            assert column in message
    assert os.listdir(cli_env) == []


@pytest.mark.slow
def test_a_second_quickstart_on_the_same_data_keeps_one_version_and_one_alias_move(
    cli_env, tickets_csv
):
    columns = ["--data", str(tickets_csv), "--text-col", "body", "--label-col", "queue"]
    first = _json(runner.invoke(app, ["quickstart", *columns, "--json"]))
    second = _json(runner.invoke(app, ["quickstart", *columns, "--json"]))
    assert first["specialist"]["artifact_digest"] == second["specialist"]["artifact_digest"]
    assert second["registry"]["model_version"] == 1
    assert (second["gate"]["passed"], second["gate"]["moved"], second["gate"]["already"]) == (
        True,
        False,
        True,
    )
    history = _json(runner.invoke(app, ["aliases", "history", "tickets", "--json"]))
    assert len(history) == 1
    assert runner.invoke(app, ["promote", "tickets", "1"]).exit_code == 0
