"""A task names its metric (issue 12): ``metric: macro_f1`` is gated, stored and ranked on
macro-F1; at the default (accuracy) nothing changes, stored gates included.

The real part: SMS spam (about 87 % ham) from the shared datasets, real specialists on the
real encoder, a real registry on SQLite and PostgreSQL. A specialist trained on a tenth of
the rows answers "ham" almost always: 0.86 accuracy, well above the zero-shot general model's
0.56, but 0.46 macro-F1, below its 0.52. The two metrics tell opposite stories about it.
"""

from __future__ import annotations

import csv
import hashlib
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from niche.cli.output import comparison_table
from niche.errors import GateRefusedError, ValidationError
from niche.evaluation import evaluate, macro_f1, paired_macro_f1_bootstrap
from niche.evaluation.teacher import TeacherAnswers
from niche.registry import Registry
from niche.registry.gates import decide
from niche.registry.tasks import METRICS, SLA, TaskSpec, gate_fingerprint
from niche.reports import leaderboard
from niche.settings import Settings
from niche.workflows import (
    DataSpec,
    create_task,
    curate_data,
    edit_task,
    promote,
    train_and_register,
)

TASK = "spam"


# -- the paired macro-F1 bootstrap -----------------------------------------------------------


def test_identical_predictions_differ_by_zero_with_a_point_interval() -> None:
    truth = ["ham"] * 8 + ["spam"] * 2
    preds = ["ham"] * 7 + ["spam"] * 3
    result = paired_macro_f1_bootstrap(truth, preds, preds, n_resamples=300, seed=4)
    assert (result.diff, result.ci_low, result.ci_high, result.p_value) == (0.0, 0.0, 0.0, 1.0)


def test_the_difference_is_the_hand_computed_macro_f1_difference() -> None:
    # A is perfect (macro-F1 1); B says "a" everywhere: F1(a) = 2*2/(4+2) = 2/3, F1(b) = 0,
    # so its macro-F1 is 1/3 and the difference 2/3.
    result = paired_macro_f1_bootstrap(list("aabb"), list("aabb"), list("aaaa"), seed=0)
    assert result.diff == pytest.approx(2 / 3)
    assert 0.0 <= result.ci_low <= result.diff <= result.ci_high <= 1.0
    # One row: every resample is that row, A right (1) and B wrong (0).
    one = paired_macro_f1_bootstrap(["a"], ["a"], ["b"], n_resamples=50)
    assert (one.diff, one.ci_low, one.ci_high) == (1.0, 1.0, 1.0)
    assert one.p_value == pytest.approx(1 / 51)


def test_the_paired_bootstrap_scores_both_sides_on_the_same_resamples() -> None:
    rng = np.random.default_rng(0)
    truth = rng.choice(["ham", "spam", "other"], 300, p=[0.8, 0.1, 0.1])
    mine = np.where(rng.random(300) < 0.8, truth, "ham")
    # A label only B predicts ("junk") lowers B's recall but is not averaged itself.
    theirs = np.where(rng.random(300) < 0.3, "junk", np.full(300, "ham"))
    result = paired_macro_f1_bootstrap(truth, mine, theirs, n_resamples=500, seed=1)
    assert result.diff == pytest.approx(macro_f1(truth, mine) - macro_f1(truth, theirs))
    assert result.ci_low < result.diff < result.ci_high
    assert result == paired_macro_f1_bootstrap(truth, mine, theirs, n_resamples=500, seed=1)
    assert result != paired_macro_f1_bootstrap(truth, mine, theirs, n_resamples=500, seed=2)
    # The same resamples with A and B swapped: the distribution is negated.
    swapped = paired_macro_f1_bootstrap(truth, theirs, mine, n_resamples=500, seed=1)
    assert (swapped.diff, swapped.ci_low, swapped.ci_high) == pytest.approx(
        (-result.diff, -result.ci_high, -result.ci_low)
    )
    assert swapped.p_value == result.p_value
    with pytest.raises(ValueError, match="y_true and pred_b differ in length"):
        paired_macro_f1_bootstrap(truth, mine, theirs[:10])


# -- the spec field and the gate fingerprint ------------------------------------------------


def test_a_metric_outside_the_choices_is_refused_naming_the_task_and_the_choices() -> None:
    assert METRICS == ("accuracy", "macro_f1")
    with pytest.raises(ValidationError) as caught:
        TaskSpec(name="tickets", metric="f1")
    assert str(caught.value) == "task tickets: metric must be one of accuracy, macro_f1, got 'f1'"
    spec = TaskSpec.from_dict({"name": "tickets", "labels": ["a", "b"], "metric": "macro_f1"})
    assert spec.metric == "macro_f1" and TaskSpec.from_dict(spec.to_dict()) == spec
    assert TaskSpec(name="tickets").metric == "accuracy"


def test_tasks_edit_sets_the_metric_and_refuses_an_unknown_one(registry: Registry) -> None:
    create_task("tickets", labels=["a", "b"], registry=registry)
    assert edit_task("tickets", ["metric=macro_f1"], registry=registry).spec.metric == "macro_f1"
    for bad, message in (
        ("metric=f1", "metric must be one of accuracy, macro_f1, got 'f1'"),
        ("metric=[1]", "metric takes one value"),
        ("metrics=accuracy", "metrics"),
    ):
        with pytest.raises(ValidationError, match=message):
            edit_task("tickets", [bad], registry=registry)
    assert registry.tasks.get("tickets").spec.metric == "macro_f1"


def _fingerprint_before_metrics(spec: TaskSpec) -> str:
    """gate_fingerprint as it was computed before tasks named a metric."""
    data = spec.to_dict()
    view = {
        name: data[name]
        for name in ("labels", "label_descriptions", "input_kind", "output_kind", "general", "sla")
    }
    del view["general"]["api_key_env"], view["sla"]["min_agreement_with_general"]
    text = json.dumps(view, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def test_the_default_metric_leaves_the_fingerprint_of_stored_gates_alone() -> None:
    spec = TaskSpec(name="tickets", labels=["ham", "spam"], sla=SLA(min_quality=0.9))
    assert gate_fingerprint(spec) == _fingerprint_before_metrics(spec)
    macro = spec.with_changes(metric="macro_f1")
    assert gate_fingerprint(macro) != gate_fingerprint(spec)
    assert gate_fingerprint(macro.with_changes(metric="accuracy")) == gate_fingerprint(spec)


# -- the gate on hand-checkable evaluations -------------------------------------------------


def _replayed(answers: list[str], truth: list[str], kind: str) -> object:
    """An evaluation of fixed answers (the project's own replaying predictor), as ``kind``."""
    texts = [f"message {i}" for i in range(len(truth))]
    result = evaluate(
        TeacherAnswers(dict(zip(texts, answers, strict=True)), ["ham", "spam"]),
        texts,
        truth,
        n_resamples=200,
        latency_samples=0,
        cpu_hour_usd=0.045,
        watts_per_core=10.0,
    )
    return replace(result, kind=kind)


def test_min_quality_is_checked_against_the_tasks_metric() -> None:
    truth = ["ham"] * 90 + ["spam"] * 10
    always_ham = _replayed(["ham"] * 100, truth, "text")  # accuracy 0.9, macro-F1 0.9/1.9
    general = _replayed(["ham"] * 100, truth, "zero-shot")
    sla = SLA(min_quality=0.8, min_quality_vs_general=None)
    on_accuracy = decide(TaskSpec(name=TASK, sla=sla), always_ham, general)
    on_macro = decide(TaskSpec(name=TASK, sla=sla, metric="macro_f1"), always_ham, general)
    accuracy_check = {c.name: c for c in on_accuracy.checks}["sla.min_quality"]
    macro_check = {c.name: c for c in on_macro.checks}["sla.min_quality"]
    assert (accuracy_check.passed, accuracy_check.value) == (True, 0.9)
    assert macro_check.passed is False
    assert macro_check.value == pytest.approx(0.9 / 1.9)
    assert macro_check.detail.startswith(f"macro-F1 {0.9 / 1.9:.4f} (95% CI ")
    assert accuracy_check.detail.startswith("accuracy 0.9000")


def test_on_distilled_data_the_gold_rows_are_compared_on_macro_f1() -> None:
    # 60 gold rows (40 ham, 20 spam): the candidate finds every spam, the general model's
    # recorded answers are all "ham" (accuracy 40/60, macro-F1 0.4).
    truth = ["ham"] * 40 + ["spam"] * 20
    candidate = _replayed(truth, truth, "text")
    teacher = _replayed(["ham"] * 60, truth, "teacher")
    spec = TaskSpec(name=TASK, sla=SLA(min_quality_vs_general=0.0), metric="macro_f1")
    result = decide(spec, candidate, teacher, gold_rows=range(60), n_resamples=200)
    check = {c.name: c for c in result.checks}["quality_vs_general"]
    expected = paired_macro_f1_bootstrap(
        truth, truth, ["ham"] * 60, n_resamples=200, confidence=0.9, seed=0
    )
    assert check.passed and check.value == expected.ci_low
    assert check.detail.startswith(
        f"macro-F1 on gold labels minus the general model's recorded answers': "
        f"{1 - 0.4:+.4f}, one-sided 95% lower bound {expected.ci_low:+.4f}"
    )
    assert check.detail.endswith("60 gold rows)")


# -- the leaderboard on stored evaluations, worked out by hand ------------------------------


def _stored(registry: Registry, task: str, *, accuracy: float, f1: float, paired: bool) -> None:
    """A champion whose test evaluation has ``accuracy`` and ``f1``; the general model's are
    0.80 and 0.60. ``paired``: stored since comparisons carry their metric (an older record
    has only the accuracy bootstrap)."""
    version = registry.models.register(
        task,
        kind="text",
        artifact_digest="a" * 64,
        artifact_uri="file:///a",
        dataset_fingerprint="f" * 64,
        lineage={},
    ).version
    accuracy_test = {
        "diff": round(accuracy - 0.80, 9),
        "ci_low": 0.01,
        "ci_high": 0.09,
        "p_value": 0.01,
    }
    comparison: dict[str, object] = {
        "paired_test": {"p_value": 0.02, "mcnemar": {}, "bootstrap": accuracy_test},
        "cascade": [],
    }
    if paired:
        macro_test = {
            "diff": round(f1 - 0.60, 9),
            "ci_low": 0.05,
            "ci_high": 0.15,
            "p_value": 0.003,
        }
        comparison |= {"metric": "macro_f1", "paired_metric": macro_test}
    registry.models.record_evaluation(
        task,
        version,
        dataset_fingerprint="f" * 64,
        split="test",
        metrics={
            "n": 100,
            "accuracy": accuracy,
            "accuracy_ci": [accuracy - 0.05, accuracy + 0.05],
            "macro_f1": f1,
            "macro_f1_ci": [f1 - 0.1, f1 + 0.1],
        },
        general={
            "accuracy": 0.80,
            "accuracy_ci": [0.75, 0.85],
            "macro_f1": 0.60,
            "macro_f1_ci": [0.5, 0.7],
        },
        comparison=comparison,
    )
    registry.promotions.move(task, "champion", version, actor="test", reason="fixture")


def test_each_task_is_scored_on_its_own_metric(
    registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from niche.cli import app

    registry.tasks.create(TaskSpec(name="intents", labels=["a", "b"], domain="d"))
    skewed = SLA(min_quality=0.75, min_quality_vs_general=0.0)
    for name in ("spam", "fraud"):
        registry.tasks.create(
            TaskSpec(name=name, labels=["ok", "bad"], domain="d", sla=skewed, metric="macro_f1")
        )
    _stored(registry, "intents", accuracy=0.90, f1=0.85, paired=False)
    _stored(registry, "spam", accuracy=0.95, f1=0.70, paired=True)
    _stored(registry, "fraud", accuracy=0.97, f1=0.80, paired=False)  # before metrics
    board = leaderboard(registry=registry).to_dict()
    rows = {row["task"]: row for row in board["domains"][0]["tasks"]}
    intents, spam, fraud = rows["intents"], rows["spam"], rows["fraud"]
    # An accuracy task: as before, and quality is accuracy's.
    assert (intents["metric"], intents["score"], intents["difference"]) == ("accuracy", 0.9, 0.1)
    assert intents["specialist"]["quality_ci"] == intents["specialist"]["accuracy_ci"]
    assert (intents["difference_ci"], intents["p_value"]) == ([0.01, 0.09], 0.02)
    # A macro-F1 task: score, quality, difference and p from macro-F1; accuracy stays.
    assert (spam["metric"], spam["score"], spam["specialist"]["accuracy"]) == (
        "macro_f1",
        0.7,
        0.95,
    )
    assert spam["specialist"]["quality_ci"] == [0.6, 0.7 + 0.1]
    assert spam["general"]["quality"] == 0.6
    assert (spam["difference"], spam["difference_ci"], spam["p_value"]) == (
        0.1,
        [0.05, 0.15],
        0.003,
    )
    assert spam["sla"]["min_quality"] == "not met"  # 0.70 macro-F1 < 0.75; accuracy 0.95
    assert spam["sla"]["min_quality_vs_general"] == "met"
    # Stored before tasks named a metric: the macro-F1 difference of the two stored
    # figures, but no interval or p-value (the stored bootstrap is accuracy's).
    assert fraud["score"] == 0.8
    assert fraud["difference"] == pytest.approx(0.2)
    assert (fraud["difference_ci"], fraud["p_value"]) == (None, None)
    assert fraud["sla"]["min_quality_vs_general"] == "unchecked"
    # The domain averages each task's own metric (no traffic: the weights alone).
    assert board["domains"][0]["score"] == pytest.approx((0.9 + 0.7 + 0.8) / 3)
    assert board["portfolio"]["quality_vs_general"] == pytest.approx((0.1 + 0.1 + 0.2) / 3)
    assert "macro-F1" in board["formula"]

    monkeypatch.setenv("NICHE_DATABASE_URL", registry.database_url)
    result = CliRunner().invoke(app, ["leaderboard"])
    assert result.exit_code == 0, result.output
    for text in ("quality (95% CI)", "0.700 [0.600, 0.800] macro-F1", "0.900 [0.850, 0.950]"):
        assert text in result.stdout, text


# -- the real thing: SMS spam, the real encoder, both registry backends ----------------------


@pytest.fixture
def sms_csv(tmp_path: Path, datasets_dir: Path) -> Path:
    """The first 400 rows of SMS spam (about 87 % ham) as a CSV with the default columns."""
    path = tmp_path / "sms.csv"
    with (
        open(datasets_dir / "sms_spam" / "SMSSpamCollection.tsv", encoding="utf-8") as src,
        open(path, "w", newline="", encoding="utf-8") as dst,
    ):
        writer = csv.writer(dst)
        writer.writerow(["text", "label"])
        for line in list(src)[:400]:
            label, text = line.rstrip("\n").split("\t", 1)
            writer.writerow([text, label])
    return path


@pytest.mark.slow
def test_a_macro_f1_task_is_gated_stored_and_ranked_on_macro_f1(
    registry: Registry, encoder, sms_csv: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NICHE_BOOTSTRAP_RESAMPLES", "200")
    settings = Settings()
    create_task(TASK, labels=["ham", "spam"], registry=registry)
    version = curate_data(DataSpec(data=sms_csv), settings, seed=0, registry=registry).version
    # The story below is the fixed head's (C=10, no class weights): the cross-validated head
    # finds the rare label even on a tenth of the rows.
    common = {"task": TASK, "encoder": encoder, "registry": registry, "options": {"c": 10.0}}
    strong = train_and_register(version, settings, **common)
    weak = train_and_register(version, settings, fraction=0.1, **common)

    # Under accuracy the weak specialist clears the general model: its gate passes.
    on_accuracy = promote(
        TASK, weak.version, settings, alias="challenger", encoder=encoder, registry=registry
    )
    assert on_accuracy.moved, on_accuracy.decision.failed
    weak_report = on_accuracy.evaluation
    mine, theirs = weak_report.specialist, weak_report.general
    assert mine.accuracy > theirs.accuracy and mine.macro_f1 < theirs.macro_f1
    check = {c.name: c for c in on_accuracy.decision.checks}["quality_vs_general"]
    assert check.detail.startswith("accuracy minus the general model's (zero-shot)")
    stored = registry.models.evaluations(TASK, weak.version)[-1].comparison or {}
    assert stored["metric"] == "accuracy"
    assert stored["paired_metric"] == stored["paired_test"]["bootstrap"]

    # A passed gate holds for a by-hand move while the spec keeps its fingerprint: the
    # metric changed, it no longer counts; changed back to the default, it does again.
    registry.promotions.move(TASK, "challenger", strong.version, actor="ana")
    edit_task(TASK, ["metric=macro_f1"], registry=registry)
    with pytest.raises(GateRefusedError, match=f"changed since v{weak.version} passed its gate"):
        registry.promotions.promote(TASK, "challenger", weak.version, why="back to the canary")
    edit_task(TASK, ["metric=accuracy"], registry=registry)
    back = registry.promotions.promote(TASK, "challenger", weak.version, why="back to the canary")
    assert back.moved and not back.forced
    registry.promotions.move(TASK, "challenger", strong.version, actor="ana")

    # Under macro-F1 the same specialist is refused: every figure is macro-F1's.
    spec = edit_task(TASK, ["metric=macro_f1"], registry=registry).spec
    on_macro = promote(
        TASK, weak.version, settings, alias="challenger", encoder=encoder, registry=registry
    )
    assert on_macro.refused
    assert [c.name for c in on_macro.decision.failed] == ["quality_vs_general"]
    failed = on_macro.decision.failed[0]
    truth, mine_labels, their_labels = on_macro.evaluation.specialist.paired_predictions(
        on_macro.evaluation.general
    )
    expected = paired_macro_f1_bootstrap(
        truth, mine_labels, their_labels, n_resamples=200, confidence=0.9, seed=0
    )
    assert failed.value == expected.ci_low
    assert expected.diff == pytest.approx(mine.macro_f1 - theirs.macro_f1)
    assert failed.detail.startswith(
        f"macro-F1 minus the general model's (zero-shot): {expected.diff:+.4f}"
    )
    stored = registry.models.evaluations(TASK, weak.version)[-1].comparison or {}
    assert stored["metric"] == "macro_f1"
    assert stored["paired_metric"]["diff"] == pytest.approx(expected.diff)
    assert stored["paired_metric"]["p_value"] == expected.p_value
    printed = on_macro.evaluation.to_dict()  # what `niche evaluate --json` prints
    assert (printed["metric"], printed["paired_metric"]) == ("macro_f1", stored["paired_metric"])
    caption = comparison_table(printed, "spam").caption
    assert f"task metric macro-F1: difference {expected.diff:+.3f} [" in caption
    # sla.min_quality between its macro-F1 and its accuracy: met on one, not on the other.
    floor = (mine.macro_f1 + mine.accuracy) / 2
    for metric, passes in (("accuracy", True), ("macro_f1", False)):
        gated = spec.with_changes(metric=metric, sla={"min_quality": floor})
        minimum = {c.name: c for c in decide(gated, mine, theirs).checks}["sla.min_quality"]
        assert minimum.passed is passes, metric
        assert minimum.value == (mine.accuracy if metric == "accuracy" else mine.macro_f1)

    # The strong specialist becomes champion on macro-F1; against it the weak one is
    # inferior on macro-F1, and says so.
    crowned = promote(TASK, strong.version, settings, encoder=encoder, registry=registry)
    assert crowned.moved, crowned.decision.failed
    champion_eval = crowned.evaluation.specialist
    versus = decide(spec, mine, theirs, champion=champion_eval, n_resamples=200)
    inferior = {c.name: c for c in versus.checks}["non_inferior_to_champion"]
    assert not inferior.passed
    assert inferior.detail.startswith("macro-F1 minus the champion's: ")

    # The leaderboard ranks the task on macro-F1: its quality, interval, difference and p.
    row = leaderboard(settings, registry=registry).to_dict()["domains"][0]["tasks"][0]
    figures = registry.models.evaluations(TASK, strong.version)[-1]
    paired = (figures.comparison or {})["paired_metric"]
    assert row["metric"] == "macro_f1"
    assert row["score"] == figures.metrics["macro_f1"] == champion_eval.macro_f1
    assert row["specialist"]["quality"] == champion_eval.macro_f1
    assert row["specialist"]["quality_ci"] == list(champion_eval.macro_f1_ci)
    assert row["specialist"]["accuracy"] == champion_eval.accuracy != row["score"]
    assert row["general"]["quality"] == crowned.evaluation.general.macro_f1
    assert (row["difference"], row["difference_ci"], row["p_value"]) == (
        paired["diff"],
        [paired["ci_low"], paired["ci_high"]],
        paired["p_value"],
    )
    assert row["difference"] == pytest.approx(
        champion_eval.macro_f1 - crowned.evaluation.general.macro_f1
    )
