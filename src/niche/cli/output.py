"""How the CLI prints: JSON, rich tables, rich progress bars. No library logic here.

>>> print_json({"removed": []})
>>> table("tasks", ["name"], [["banking77"]])
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

if TYPE_CHECKING:
    from niche.progress import Advance
    from niche.settings import Settings
    from niche.workflows import PromotionOutcome, QuickstartResult

__all__ = [
    "PIPED_WIDTH",
    "RichProgress",
    "cascade_table",
    "comparison_table",
    "curation_table",
    "database_location",
    "make_console",
    "pretty",
    "print_json",
    "print_lineage",
    "print_promotion",
    "print_quickstart",
    "table",
]


PIPED_WIDTH = 4096
"""Columns rich lays out for when the stream is not a terminal (and ``COLUMNS`` is unset):
wide enough that a piped or redirected table never wraps inside a value."""


def make_console(*, stderr: bool = False) -> Any:
    """A rich ``Console`` on stdout (or stderr): the terminal's width on a terminal, else
    :data:`PIPED_WIDTH`, so ``niche datasets list | grep …`` sees whole values on one line.

        >>> make_console().print(table)  # doctest: +SKIP
    """
    import os

    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    piped = not stream.isatty() and not os.environ.get("COLUMNS")
    return Console(stderr=stderr, width=PIPED_WIDTH if piped else None)


def database_location(settings: Settings) -> str:
    """The registry database URL to show: a SQLite path made absolute, a password hidden.

    >>> database_location(Settings(environ={"NICHE_HOME": "/srv/niche"}))
    'sqlite:////srv/niche/niche.db'
    """
    from sqlalchemy.engine import make_url

    url = make_url(str(settings.get("NICHE_DATABASE_URL")))
    if url.drivername.startswith("sqlite") and url.database and url.database != ":memory:":
        url = url.set(database=str(Path(url.database).resolve()))
    return str(url.render_as_string(hide_password=True))


def print_json(payload: Any) -> None:
    """Print ``payload`` as indented JSON on stdout (numpy values included)."""
    import orjson

    sys.stdout.write(
        orjson.dumps(payload, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY).decode()
        + "\n"
    )


def table(title: str, columns: list[str], rows: list[list[Any]]) -> None:
    """Print ``rows`` under ``columns`` as one rich table (None prints empty)."""
    from rich.table import Table

    rich_table = Table(title=title)
    for column in columns:
        rich_table.add_column(column, overflow="fold")
    for row in rows:
        rich_table.add_row(*["" if value is None else str(value) for value in row])
    make_console().print(rich_table)


def pretty(payload: Any) -> None:
    """Print a nested record readably (the ``show`` commands without ``--json``)."""
    from rich.pretty import Pretty

    make_console().print(Pretty(payload))


class RichProgress:
    """A :class:`niche.progress.Progress` drawn with rich bars on stderr."""

    def __init__(self, enabled: bool = True) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            SpinnerColumn,
            TextColumn,
            TimeElapsedColumn,
        )

        self._progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=make_console(stderr=True),
            transient=False,
            disable=not enabled,
        )

        self._started = False

    def __enter__(self) -> RichProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._started:
            self._progress.stop()

    @contextmanager
    def task(self, description: str, total: int | None = None) -> Iterator[Advance]:
        # Started on the first task, so a command failing on bad input prints only its error.
        if not self._started:
            self._progress.start()
            self._started = True
        task_id = self._progress.add_task(description, total=total)

        def advance(k: int) -> None:
            self._progress.advance(task_id, k)

        try:
            yield advance
        finally:
            done = self._progress.tasks[task_id].completed
            self._progress.update(task_id, total=max(done, 1) if total is None else total)
            self._progress.update(task_id, completed=max(done, 1) if total is None else total)


def _ci(value: float, interval: list[float]) -> str:
    return f"{value:.3f} [{interval[0]:.3f}, {interval[1]:.3f}]"


def _latency(evaluation: dict[str, Any]) -> str:
    if evaluation["latency_p50_ms"] is None:
        return "not measured"
    return f"{evaluation['latency_p50_ms']:.2f} / {evaluation['latency_p95_ms']:.2f}"


def _cost(evaluation: dict[str, Any]) -> str:
    """Cost per 1M predictions and what it comes from: CPU seconds or tokens per prediction."""
    usage, n = evaluation.get("usage") or {}, evaluation["n"]
    tokens = [usage.get("input_tokens"), usage.get("output_tokens")]
    if any(t is not None for t in tokens) and n:
        source = f"{(tokens[0] or 0) / n:.1f} in + {(tokens[1] or 0) / n:.1f} out tokens each"
    else:
        source = f"{evaluation['cpu_s_per_1m']:,.0f} CPU s per 1M"
    return f"{evaluation['cost_per_1m_usd']:.4f} ({source})"


def _general_title(payload: dict[str, Any]) -> str:
    model = payload.get("general_model") or {"kind": payload["general"]["kind"]}
    if model.get("model"):
        return f"general ({model['model']} at {model['base_url']})"
    return f"general ({model['kind']})"


def _general_notes(payload: dict[str, Any]) -> list[str]:
    """What the general column rests on: a sample, unmapped answers, calls and cache hits."""
    general, model = payload["general"], payload.get("general_model") or {}
    notes = []
    sample = general.get("sample")
    if sample:
        notes.append(
            f"general model asked a seeded sample of {sample['rows']} of {sample['of']} rows "
            f"(seed {sample['seed']}): its interval is the sample's, and the paired test and "
            "the cascade are on those rows"
        )
    if general.get("unmapped"):
        notes.append(
            f"{general['unmapped']} of {general['n']} general answers named no label "
            "(counted wrong)"
        )
    if "calls" in model:
        notes.append(
            f"{model['calls']} calls to the general model, {model['cached']} answers from the cache"
        )
    return notes


def comparison_table(payload: dict[str, Any], title: str) -> Any:
    """The specialist and the general model side by side (an evaluation report's dict)."""
    from rich.table import Table

    spec, general, test = payload["specialist"], payload["general"], payload["paired_test"]
    rich_table = Table(title=title)
    rich_table.add_column("")
    rich_table.add_column("specialist", justify="right")
    rich_table.add_column(_general_title(payload), justify="right")
    rows = [
        (
            "accuracy (95% CI)",
            _ci(spec["accuracy"], spec["accuracy_ci"]),
            _ci(general["accuracy"], general["accuracy_ci"]),
        ),
        (
            "macro-F1 (95% CI)",
            _ci(spec["macro_f1"], spec["macro_f1_ci"]),
            _ci(general["macro_f1"], general["macro_f1_ci"]),
        ),
        ("calibration error (ECE)", f"{spec['ece']:.3f}", f"{general['ece']:.3f}"),
        ("latency p50 / p95 (ms)", _latency(spec), _latency(general)),
        ("throughput (items/s)", f"{spec['items_per_s']:,.0f}", f"{general['items_per_s']:,.0f}"),
        ("cost per 1M (USD)", _cost(spec), _cost(general)),
        ("energy per query (Wh)", f"{spec['wh_per_query']:.2e}", f"{general['wh_per_query']:.2e}"),
    ]
    for row in rows:
        rich_table.add_row(*row)
    boot = test.get("bootstrap", {})
    rich_table.caption = "\n".join(
        [
            f"paired test: McNemar p = {test['p_value']:.2e}; accuracy difference "
            f"{boot.get('diff', 0.0):+.3f} [{boot.get('ci_low', 0.0):+.3f}, "
            f"{boot.get('ci_high', 0.0):+.3f}] (paired bootstrap)",
            *_metric_note(payload),
            *_general_notes(payload),
        ]
    )
    return rich_table


def _metric_note(payload: dict[str, Any]) -> list[str]:
    """For a task gated on macro-F1, its paired difference (what the gate decides on)."""
    paired = payload.get("paired_metric")
    if payload.get("metric") != "macro_f1" or not paired:
        return []
    return [
        f"task metric macro-F1: difference {paired['diff']:+.3f} [{paired['ci_low']:+.3f}, "
        f"{paired['ci_high']:+.3f}] (paired bootstrap, p = {paired['p_value']:.2e})"
    ]


def cascade_table(points: list[dict[str, float]]) -> Any:
    """Coverage and accuracy of the cascade at each confidence threshold."""
    from rich.table import Table

    rich_table = Table(title="cascade: specialist answers when confidence ≥ threshold")
    for column in ("threshold", "answered by specialist", "accuracy"):
        rich_table.add_column(column, justify="right")
    for point in points:
        rich_table.add_row(
            f"{point['threshold']:.2f}", f"{point['coverage']:.1%}", f"{point['accuracy']:.3f}"
        )
    return rich_table


def curation_table(report: dict[str, Any]) -> Any:
    """What curation removed, step by step, and the rows left per split."""
    from rich.table import Table

    rich_table = Table(title="curation")
    rich_table.add_column("step")
    rich_table.add_column("rows", justify="right")
    for key in (
        "rows_in",
        "texts_normalised",
        "exact_duplicates",
        "conflicting_duplicates",
        "near_duplicates",
        "near_duplicate_conflicts",
        "leaks_removed",
        "test_labels_unseen",
    ):
        if key in report:
            rich_table.add_row(key.replace("_", " "), str(report[key]))
    for split, count in report.get("rows_out", {}).items():
        rich_table.add_row(f"rows out: {split}", str(count))
    return rich_table


def print_quickstart(result: QuickstartResult) -> None:
    """The data, the curation, the comparison, the cascade and the gate's verdict."""
    console = make_console()
    payload = result.to_dict()
    dataset = payload["dataset"]
    console.print(
        f"\n[bold]{dataset['name']}[/]: {dataset['rows']} rows after curation "
        f"({', '.join(f'{k} {v}' for k, v in dataset['splits'].items())}), "
        f"{dataset['labels']} labels, fingerprint {dataset['fingerprint'][:16]}"
    )
    console.print(curation_table(payload["curation"]))
    evaluated = payload["evaluated_on"]
    console.print(
        comparison_table(
            payload,
            title=f"specialist vs general on the {evaluated['split']} split "
            f"({evaluated['rows']} rows)",
        )
    )
    console.print(cascade_table(payload["cascade"]))
    gate = payload["gate"]
    failed = [c["name"] for c in gate["checks"] if not c["passed"]]
    if result.promotion.already:
        verdict = f"already {result.promotion.alias} (same model as before)"
    elif gate["moved"]:
        verdict = f"promoted to {result.promotion.alias}"
    else:
        verdict = f"not promoted (failed: {', '.join(failed)})"
    console.print(f"dataset version {result.version.fingerprint[:16]}: {result.dataset_uri}")
    named = "" if result.task == dataset["name"] else f" (named after {dataset['name']!r})"
    console.print(
        f"task {result.task}{named} v{result.model.version}: {verdict}; "
        f"artifact {result.model.artifact_uri}"
    )


def print_promotion(outcome: PromotionOutcome) -> None:
    """The gate's checks as a table, then what happened to the alias (a refusal prints none:
    the error line says it)."""
    table(
        f"gate: {outcome.task} v{outcome.candidate.version} → {outcome.alias}",
        ["check", "passed", "value", "threshold", "detail"],
        [
            [
                c.name,
                "yes" if c.passed else "NO",
                None if c.value is None else f"{c.value:.4g}",
                None if c.threshold is None else f"{c.threshold:.4g}",
                c.detail,
            ]
            for c in outcome.decision.checks
        ],
    )
    if outcome.already:
        typer.echo(f"v{outcome.candidate.version} already holds {outcome.alias}")
    elif outcome.moved:
        typer.echo(
            f"{outcome.alias} → v{outcome.candidate.version}"
            + (" (forced)" if outcome.forced else "")
        )


def print_lineage(payload: dict[str, Any]) -> None:
    """A model version's lineage, one fact per line."""
    model, dataset = payload["model"], payload["dataset"]
    typer.echo(
        f"model {payload['task']} v{model['version']} ({model['kind']}, "
        f"artifact {model['artifact_digest'][:16]})"
    )
    lineage = model["lineage"]
    typer.echo(
        f"  trained on {lineage.get('train_rows')} rows with encoder {lineage.get('encoder_id')}, "
        f"niche {lineage.get('niche_version')} @ {lineage.get('git_revision') or 'unknown revision'}"
    )
    if dataset.get("registered", True):
        typer.echo(f"  dataset {dataset['fingerprint']} from {dataset['source']}")
        typer.echo(f"    splits {dataset['splits']}")
        origin = (dataset.get("report") or {}).get("origin")
        if origin and origin.get("kind") == "traffic":
            typer.echo(f"    {_traffic_origin_line(origin)}")
    else:
        typer.echo(
            f"  dataset {dataset['fingerprint']}: not registered (the lineage stops at the model)"
        )
    for evaluation in payload.get("evaluations", []):
        metrics = evaluation["metrics"]
        on_macro_f1 = (evaluation.get("comparison") or {}).get("metric") == "macro_f1"
        macro = (
            f", macro-F1 {metrics['macro_f1']:.4f}"
            if on_macro_f1 and metrics.get("macro_f1") is not None
            else ""
        )
        typer.echo(
            f"  evaluated on {evaluation['split']}: accuracy {metrics['accuracy']:.4f}{macro} "
            f"({evaluation['created_at']})"
        )


def _traffic_origin_line(origin: dict[str, Any]) -> str:
    """One line for a dataset distilled from traffic: task, window, id range, row counts."""
    bounds = "".join(f", {name} {origin[name]}" for name in ("since", "until") if origin.get(name))
    rows = origin.get("rows") or {}
    return (
        f"distilled from {origin.get('task')}'s traffic: records {origin.get('first_id')}-"
        f"{origin.get('last_id')} ({origin.get('records_read')} read{bounds}), "
        f"{rows.get('teacher', 0)} teacher and {rows.get('gold', 0)} gold rows"
    )
