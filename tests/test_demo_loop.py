"""``niche demo loop`` end to end, offline (the README's promise): a real ``niche serve`` in a
subprocess, the built-in zero-shot general model as the teacher, gold labels as feedback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from niche.cli import app

pytestmark = pytest.mark.slow


def test_the_demo_loop_promotes_a_specialist_flags_the_shift_and_retrains(
    cli_env: Path, tmp_path: Path
) -> None:
    home = tmp_path / "demo"
    result = CliRunner().invoke(app, ["demo", "loop", "--home", str(home), "--json"])
    assert result.exit_code == 0, result.output

    payload = json.loads(result.stdout)
    steps = {}
    for step in payload["steps"]:
        steps.setdefault(step["name"], []).append(step)
    first, retrain = steps["loop"]
    assert "champion v1" in first["title"] and "after first" in first["title"], first
    assert "v1 → v2" in retrain["title"] and "after drift" in retrain["title"], retrain
    quiet, shifted = steps["monitor"]
    assert "no alarm" in quiet["title"] and "ALARM" in shifted["title"]
    assert "input_drift" in shifted["title"] and "cascade_rate" in shifted["title"]
    assert [s["title"] for s in steps["served"]][-1].startswith("the gateway serves champion v2")
    assert (home / "niche.db").exists()  # --home keeps the demo's registry
