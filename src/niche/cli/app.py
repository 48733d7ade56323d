"""The ``niche`` command: parse options, call one library function, print the result.

Heavy modules (numpy, onnxruntime, torch) are imported inside commands so ``niche --help``
starts fast. Every error niche raises on purpose prints one line and exits with its code
(2 for bad input).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from niche.errors import NicheError
from niche.settings import Settings

if TYPE_CHECKING:
    from niche.pipeline import DataSpec
    from niche.progress import Advance
    from niche.quickstart import QuickstartResult

app = typer.Typer(
    name="niche",
    help="Turn one general model into a portfolio of cheap, measured specialists.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(help="Inspect and curate labelled data.", no_args_is_help=True)
app.add_typer(data_app, name="data")

T = TypeVar("T")

# -- shared options ----------------------------------------------------------------------

DatasetOpt = Annotated[
    str | None,
    typer.Option(
        "--dataset", "-d", help="Catalog dataset: banking77, clinc150 or clinc150/DOMAIN, sms_spam."
    ),
]
DataOpt = Annotated[
    Path | None,
    typer.Option("--data", help="A labelled CSV, TSV, JSONL or Parquet file."),
]
TextColOpt = Annotated[str, typer.Option("--text-col", help="Column holding the text.")]
LabelColOpt = Annotated[str, typer.Option("--label-col", help="Column holding the label.")]
NoHeaderOpt = Annotated[
    bool,
    typer.Option("--no-header", help="The file has no header row; name columns by index (0, 1…)."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object instead of tables.")]
SeedOpt = Annotated[
    int | None, typer.Option("--seed", help="Seed for splits and resampling (NICHE_SEED).")
]


def _spec(
    dataset: str | None, data: Path | None, text_col: str, label_col: str, no_header: bool
) -> DataSpec:
    from niche.pipeline import DataSpec

    return DataSpec(
        dataset=dataset, data=data, text_col=text_col, label_col=label_col, header=not no_header
    )


def _run(call: Callable[[], T]) -> T:
    """Run a library call; a NicheError becomes one line on stderr and its exit code."""
    try:
        return call()
    except NicheError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(exc.exit_code) from None


def _print_json(payload: Any) -> None:
    import orjson

    sys.stdout.write(
        orjson.dumps(payload, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY).decode()
        + "\n"
    )


class RichProgress:
    """A :class:`niche.progress.Progress` drawn with rich bars on stderr."""

    def __init__(self, enabled: bool = True) -> None:
        from rich.console import Console
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
            console=Console(stderr=True),
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


# -- commands ----------------------------------------------------------------------------


@app.command()
def quickstart(
    dataset: DatasetOpt = None,
    data: DataOpt = None,
    text_col: TextColOpt = "text",
    label_col: LabelColOpt = "label",
    no_header: NoHeaderOpt = False,
    seed: SeedOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Curate → train → evaluate a specialist against the general model, and compare them.

    Defaults to the banking77 catalog dataset. What `make demo` runs.
    """
    from niche.quickstart import quickstart as run_quickstart

    spec = _spec(dataset, data, text_col, label_col, no_header)
    settings = Settings()
    with RichProgress(enabled=not json_out) as progress:
        result = _run(lambda: run_quickstart(spec, settings, seed=seed, progress=progress))
    if json_out:
        _print_json(result.to_dict())
    else:
        _print_quickstart(result)


@app.command("settings")
def settings_command(json_out: JsonOpt = False) -> None:
    """Show every NICHE_* setting with its value and where it comes from."""
    table = Settings().table()
    if json_out:
        _print_json(table)
        return
    _table(
        "niche settings",
        ["name", "value", "source", "help"],
        [[row["name"], row["value"], row["source"], row["help"]] for row in table],
    )


@data_app.command("inspect")
def data_inspect(
    dataset: DatasetOpt = None,
    data: DataOpt = None,
    text_col: TextColOpt = "text",
    label_col: LabelColOpt = "label",
    no_header: NoHeaderOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Validate a source and show its rows, labels and text lengths. Writes nothing."""
    from niche.pipeline import inspect_data

    spec = _spec(dataset, data, text_col, label_col, no_header)
    summary = _run(lambda: inspect_data(spec))
    if json_out:
        _print_json(summary)
        return
    from rich.console import Console
    from rich.table import Table

    console = Console()
    console.print(f"[bold]{summary['name']}[/] ({summary['source']})")
    for split, info in summary["splits"].items():
        table = Table(
            title=f"{split}: {info['rows']} rows, {info['labels']} labels, "
            f"median {info['words_median']} words (max {info['words_max']})"
        )
        table.add_column("label")
        table.add_column("rows", justify="right")
        counts = list(info["label_counts"].items())
        for label, count in counts[:15]:
            table.add_row(label, str(count))
        if len(counts) > 15:
            table.add_row(f"… {len(counts) - 15} more", "")
        console.print(table)


@data_app.command("curate")
def data_curate(
    dataset: DatasetOpt = None,
    data: DataOpt = None,
    text_col: TextColOpt = "text",
    label_col: LabelColOpt = "label",
    no_header: NoHeaderOpt = False,
    test_size: Annotated[
        float, typer.Option(help="Share of each label held out for test (no canonical split).")
    ] = 0.2,
    near_duplicate_threshold: Annotated[
        float, typer.Option(help="Jaccard similarity above which two texts are near-duplicates.")
    ] = 0.9,
    seed: SeedOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Normalise, deduplicate, remove leaks, split; save a dataset version."""
    from niche.pipeline import curate_data

    spec = _spec(dataset, data, text_col, label_col, no_header)
    settings = Settings()
    with RichProgress(enabled=not json_out) as progress:
        version, path, _ = _run(
            lambda: curate_data(
                spec,
                settings,
                test_size=test_size,
                seed=seed,
                near_duplicate_threshold=near_duplicate_threshold,
                progress=progress,
            )
        )
    payload: dict[str, Any] = {
        "fingerprint": version.fingerprint,
        "source": version.source,
        "path": str(path),
        "curation": version.report.to_dict(),
    }
    if json_out:
        _print_json(payload)
        return
    from rich.console import Console

    console = Console()
    console.print(_curation_table(payload["curation"]))
    console.print(f"dataset version [bold]{version.fingerprint[:16]}[/] saved to {path}")
    console.print(f"next: niche train {version.fingerprint[:16]}")


@app.command()
def train(
    dataset_version: Annotated[
        str, typer.Argument(help="Dataset version fingerprint (or a unique prefix).")
    ],
    task: Annotated[
        str | None,
        typer.Option(help="Register under this task (default: named after the dataset)."),
    ] = None,
    seed: SeedOpt = None,
    fraction: Annotated[
        float,
        typer.Option(help="Train on this share of each label's rows (e.g. 0.05 for a baseline)."),
    ] = 1.0,
    json_out: JsonOpt = False,
) -> None:
    """Train a text specialist on a curated dataset version and register it."""
    from niche.lifecycle import train_and_register
    from niche.registry import LocalStore

    settings = Settings()
    version = _run(lambda: LocalStore(settings).load_dataset(dataset_version))
    with RichProgress(enabled=not json_out) as progress:
        record = _run(
            lambda: train_and_register(
                version, settings, task=task, seed=seed, fraction=fraction, progress=progress
            )
        )
    if json_out:
        _print_json(record.to_dict())
        return
    typer.echo(
        f"{record.task} v{record.version} registered (artifact {record.artifact_digest[:16]})"
    )
    typer.echo(f"next: niche evaluate {record.task} {record.version}")


@app.command("evaluate")
def evaluate_command(
    task: Annotated[str, typer.Argument(help="Task name.")],
    version: Annotated[str, typer.Argument(help="Model version number, or an alias.")],
    dataset_version: Annotated[
        str | None,
        typer.Option("--dataset-version", help="Defaults to the one the model was trained on."),
    ] = None,
    split: Annotated[str, typer.Option(help="Split to evaluate on.")] = "test",
    seed: SeedOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Evaluate a model version and the general model on the same rows, and record it."""
    from niche.lifecycle import evaluate_registered

    settings = Settings()
    with RichProgress(enabled=not json_out) as progress:
        report = _run(
            lambda: evaluate_registered(
                task,
                version,
                settings,
                dataset=dataset_version,
                split=split,
                seed=seed,
                progress=progress,
            )
        )
    if json_out:
        _print_json(report.to_dict())
        return
    from rich.console import Console

    console = Console()
    payload = report.to_dict()
    console.print(_comparison_table(payload, title=f"{report.split} split, {report.rows} rows"))
    console.print(_cascade_table(payload["cascade"]))


# -- formatting --------------------------------------------------------------------------


def _table(title: str, columns: list[str], rows: list[list[Any]]) -> None:
    """Print ``rows`` under ``columns`` as one rich table (None prints empty)."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*["" if value is None else str(value) for value in row])
    Console().print(table)


def _pretty(payload: Any) -> None:
    """Print a nested record readably (the ``show`` commands without ``--json``)."""
    from rich.console import Console
    from rich.pretty import Pretty

    Console().print(Pretty(payload))


def _ci(value: float, interval: list[float]) -> str:
    return f"{value:.3f} [{interval[0]:.3f}, {interval[1]:.3f}]"


def _comparison_table(payload: dict[str, Any], title: str) -> Any:
    from rich.table import Table

    spec, general, test = payload["specialist"], payload["general"], payload["paired_test"]
    table = Table(title=title)
    table.add_column("")
    table.add_column("specialist", justify="right")
    table.add_column(f"general ({general['kind']})", justify="right")
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
        (
            "latency p50 / p95 (ms)",
            f"{spec['latency_p50_ms']:.2f} / {spec['latency_p95_ms']:.2f}",
            f"{general['latency_p50_ms']:.2f} / {general['latency_p95_ms']:.2f}",
        ),
        ("throughput (items/s)", f"{spec['items_per_s']:,.0f}", f"{general['items_per_s']:,.0f}"),
        (
            "cost per 1M (USD)",
            f"{spec['cost_per_1m_usd']:.4f}",
            f"{general['cost_per_1m_usd']:.4f}",
        ),
        ("energy per query (Wh)", f"{spec['wh_per_query']:.2e}", f"{general['wh_per_query']:.2e}"),
    ]
    for row in rows:
        table.add_row(*row)
    boot = test.get("bootstrap", {})
    table.caption = (
        f"paired test: McNemar p = {test['p_value']:.2e}; accuracy difference "
        f"{boot.get('diff', 0.0):+.3f} [{boot.get('ci_low', 0.0):+.3f}, "
        f"{boot.get('ci_high', 0.0):+.3f}] (paired bootstrap)"
    )
    return table


def _cascade_table(points: list[dict[str, float]]) -> Any:
    from rich.table import Table

    table = Table(title="cascade: specialist answers when confidence ≥ threshold")
    for column in ("threshold", "answered by specialist", "accuracy"):
        table.add_column(column, justify="right")
    for point in points:
        table.add_row(
            f"{point['threshold']:.2f}", f"{point['coverage']:.1%}", f"{point['accuracy']:.3f}"
        )
    return table


def _curation_table(report: dict[str, Any]) -> Any:
    from rich.table import Table

    table = Table(title="curation")
    table.add_column("step")
    table.add_column("rows", justify="right")
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
            table.add_row(key.replace("_", " "), str(report[key]))
    for split, count in report.get("rows_out", {}).items():
        table.add_row(f"rows out: {split}", str(count))
    return table


def _print_quickstart(result: QuickstartResult) -> None:
    from rich.console import Console

    console = Console()
    payload = result.to_dict()
    dataset = payload["dataset"]
    console.print(
        f"\n[bold]{dataset['name']}[/]: {dataset['rows']} rows after curation "
        f"({', '.join(f'{k} {v}' for k, v in dataset['splits'].items())}), "
        f"{dataset['labels']} labels, fingerprint {dataset['fingerprint'][:16]}"
    )
    console.print(_curation_table(payload["curation"]))
    evaluated = payload["evaluated_on"]
    console.print(
        _comparison_table(
            payload,
            title=f"specialist vs general on the {evaluated['split']} split "
            f"({evaluated['rows']} rows)",
        )
    )
    console.print(_cascade_table(payload["cascade"]))
    gate = payload["gate"]
    failed = [c["name"] for c in gate["checks"] if not c["passed"]]
    if result.promotion.already:
        verdict = f"already {result.promotion.alias} (same model as before)"
    elif gate["moved"]:
        verdict = f"promoted to {result.promotion.alias}"
    else:
        verdict = f"not promoted (failed: {', '.join(failed)})"
    console.print(f"dataset version {result.version.fingerprint[:16]}: {result.dataset_path}")
    console.print(
        f"task {result.task} v{result.model.version}: {verdict}; "
        f"artifact {result.model.artifact_uri}"
    )


def main() -> None:
    """Console-script entry point."""
    app()
