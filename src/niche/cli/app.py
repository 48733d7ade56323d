"""The ``niche`` command: parse options, call one library function, print the result.

Heavy modules (numpy, onnxruntime, torch) are imported inside commands so ``niche --help``
starts fast. Every error niche raises on purpose prints one line, ``error: …``, on stderr
and exits with its code: 2 for bad input (a bad argument, an unknown task, version or file),
3 when someone else moved an alias meanwhile, 4 when a gate refused a promotion, 1 otherwise.

The command tree is declared here, in the order ``niche --help`` lists it; the commands live
in ``cli/models.py``, ``cli/registry.py``, ``cli/data.py`` and ``cli/serve.py``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from typer.core import TyperGroup

from niche.cli.output import RichProgress, print_json, print_quickstart, table
from niche.errors import NicheError
from niche.settings import Settings

if TYPE_CHECKING:
    from niche.registry import Registry
    from niche.workflows import DataSpec


class NicheGroup(TyperGroup):
    """The root command group: a :class:`~niche.errors.NicheError` from any command becomes
    one line on stderr and the error's exit code, never a traceback."""

    def invoke(self, ctx: Any) -> Any:  # typer's vendored click.Context
        try:
            return super().invoke(ctx)
        except NicheError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(exc.exit_code) from None


app = typer.Typer(
    name="niche",
    help="Turn one general model into a portfolio of cheap, measured specialists.",
    cls=NicheGroup,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(help="Inspect and curate labelled data.", no_args_is_help=True)
tasks_app = typer.Typer(help="Create, list, show and edit tasks.", no_args_is_help=True)
datasets_app = typer.Typer(help="List and show registered dataset versions.", no_args_is_help=True)
models_app = typer.Typer(help="List, show and trace model versions.", no_args_is_help=True)
aliases_app = typer.Typer(
    help="Aliases (champion, challenger, …) and their history.", no_args_is_help=True
)
db_app = typer.Typer(help="The registry database.", no_args_is_help=True)
keys_app = typer.Typer(help="Create, list and revoke gateway API keys.", no_args_is_help=True)
app.add_typer(data_app, name="data")
app.add_typer(tasks_app, name="tasks")
app.add_typer(datasets_app, name="datasets")
app.add_typer(models_app, name="models")
app.add_typer(aliases_app, name="aliases")
app.add_typer(db_app, name="db")
app.add_typer(keys_app, name="keys")

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
KindOpt = Annotated[
    str,
    typer.Option(
        "--kind",
        help="Specialist kind: text (MiniLM + head), text-two-stage (a static first tier, "
        "MiniLM for the rest), text-finetuned, zero-shot, or one a plug-in adds.",
    ),
]
TaskArg = Annotated[str, typer.Argument(help="Task name.")]
VersionArg = Annotated[str, typer.Argument(help="Model version number, or an alias (champion).")]


def open_registry() -> Registry:
    """The registry the settings name (``NICHE_DATABASE_URL``); connected on first use."""
    from niche.registry import Registry

    return Registry(settings=Settings())


def data_spec(
    dataset: str | None, data: Path | None, text_col: str, label_col: str, no_header: bool
) -> DataSpec:
    """The :class:`~niche.workflows.DataSpec` the data options describe."""
    from niche.workflows import DataSpec

    return DataSpec(
        dataset=dataset, data=data, text_col=text_col, label_col=label_col, header=not no_header
    )


# -- commands ----------------------------------------------------------------------------


@app.command()
def quickstart(
    dataset: DatasetOpt = None,
    data: DataOpt = None,
    text_col: TextColOpt = "text",
    label_col: LabelColOpt = "label",
    no_header: NoHeaderOpt = False,
    kind: KindOpt = "text",
    seed: SeedOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Curate → train → evaluate a specialist against the general model, and compare them.

    Defaults to the banking77 catalog dataset. What `make demo` runs.
    """
    from niche.workflows import quickstart as run_quickstart

    spec = data_spec(dataset, data, text_col, label_col, no_header)
    with RichProgress(enabled=not json_out) as progress:
        result = run_quickstart(spec, Settings(), kind=kind, seed=seed, progress=progress)
    if json_out:
        print_json(result.to_dict())
    else:
        print_quickstart(result)


@app.command("settings")
def settings_command(json_out: JsonOpt = False) -> None:
    """Show every NICHE_* setting with its value and where it comes from."""
    rows = Settings().table()
    if json_out:
        print_json(rows)
        return
    table(
        "niche settings",
        ["name", "value", "source", "help"],
        [[row["name"], row["value"], row["source"], row["help"]] for row in rows],
    )


def main() -> None:
    """Console-script entry point."""
    app()
