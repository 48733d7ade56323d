"""Model commands: train, evaluate, promote, gates, gc, ``models …`` and ``aliases history``.

Each command parses options, calls one library function (:mod:`niche.workflows` or the
registry) and prints (rich or ``--json``).
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from niche.cli.app import (
    JsonOpt,
    KindOpt,
    SeedOpt,
    TaskArg,
    VersionArg,
    aliases_app,
    app,
    models_app,
    open_registry,
)
from niche.cli.output import (
    RichProgress,
    cascade_table,
    comparison_table,
    make_console,
    pretty,
    print_json,
    print_lineage,
    print_promotion,
    table,
)
from niche.settings import Settings

GeneralRowsOpt = Annotated[
    int | None,
    typer.Option(
        "--general-rows",
        min=1,
        help="Ask an endpoint general model at most this many rows (a seeded sample; "
        "default NICHE_EVALUATION_GENERAL_ROWS, unset: all). Its answers are cached.",
    ),
]


@app.command()
def train(
    dataset_version: Annotated[
        str, typer.Argument(help="Dataset version fingerprint (or a unique prefix).")
    ],
    task: Annotated[
        str | None,
        typer.Option(help="Register under this task (default: named after the dataset)."),
    ] = None,
    kind: KindOpt = "text",
    seed: SeedOpt = None,
    fraction: Annotated[
        float,
        typer.Option(help="Train on this share of each label's rows (e.g. 0.05 for a baseline)."),
    ] = 1.0,
    epochs: Annotated[
        int | None,
        typer.Option(
            help="Training epochs, for a kind that has them (text-finetuned: at most this "
            "many, with early stopping).",
        ),
    ] = None,
    option: Annotated[
        list[str] | None,
        typer.Option(
            "--option",
            "-o",
            metavar="KEY=VALUE",
            help="A fit option of the kind (repeatable), e.g. -o learning_rate=3e-5; "
            "numbers and true/false are parsed.",
        ),
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Train a specialist (default: text) on a curated dataset version and register it."""
    from niche.workflows import train_and_register

    options = _fit_options(option or [])
    if epochs is not None:
        options["epochs"] = epochs
    with RichProgress(enabled=not json_out) as progress:
        record = train_and_register(
            dataset_version,
            Settings(),
            task=task,
            kind=kind,
            seed=seed,
            fraction=fraction,
            options=options,
            progress=progress,
        )
    if json_out:
        print_json(record.to_dict())
        return
    typer.echo(
        f"{record.task} v{record.version} registered (artifact {record.artifact_digest[:16]})"
    )
    typer.echo(f"next: niche evaluate {record.task} {record.version}")


def _fit_options(pairs: list[str]) -> dict[str, Any]:
    """``--option KEY=VALUE`` pairs as a dict: ints, floats and true/false parsed."""
    from niche.errors import ValidationError

    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise ValidationError(f"--option {pair!r}: expected KEY=VALUE", param="option")
        value: Any = raw
        if raw.lower() in ("true", "false"):
            value = raw.lower() == "true"
        else:
            for parse in (int, float):
                try:
                    value = parse(raw)
                    break
                except ValueError:
                    continue
        options[key.strip()] = value
    return options


@app.command("evaluate")
def evaluate_command(
    task: Annotated[str, typer.Argument(help="Task name.")],
    version: Annotated[str, typer.Argument(help="Model version number, or an alias.")],
    dataset_version: Annotated[
        str | None,
        typer.Option("--dataset-version", help="Defaults to the one the model was trained on."),
    ] = None,
    split: Annotated[str, typer.Option(help="Split to evaluate on.")] = "test",
    general_rows: GeneralRowsOpt = None,
    seed: SeedOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Evaluate a model version and the task's general model on the same rows, and record it.

    A task whose general model is an OpenAI-compatible endpoint is compared with that
    endpoint's answers (cost from its tokens at the task's prices); otherwise with zero-shot.
    """

    from niche.workflows import evaluate_registered

    with RichProgress(enabled=not json_out) as progress:
        report = evaluate_registered(
            task,
            version,
            Settings(),
            dataset=dataset_version,
            split=split,
            seed=seed,
            general_rows=general_rows,
            progress=progress,
        )
    payload = report.to_dict()
    if json_out:
        print_json(payload)
        return
    console = make_console()
    console.print(comparison_table(payload, title=f"{report.split} split, {report.rows} rows"))
    console.print(cascade_table(payload["cascade"]))


@app.command("promote")
def promote_command(
    task: TaskArg,
    version: VersionArg,
    alias: Annotated[str, typer.Option(help="The alias to move.")] = "champion",
    margin: Annotated[
        float, typer.Option(help="Accuracy the candidate may lose to the current champion.")
    ] = 0.01,
    force: Annotated[bool, typer.Option(help="Move the alias even if the gate fails.")] = False,
    why: Annotated[str | None, typer.Option(help="Why (required with --force).")] = None,
    general_rows: GeneralRowsOpt = None,
    seed: SeedOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Gate a model version for an alias: exit 0 when promoted, 4 when refused.

    The candidate must beat the task's general model: its endpoint when it has one.
    Exit 3 when someone else moved the alias, or edited the task, meanwhile (nothing changed;
    decide again). A challenger's gate skips the comparison with the champion.
    """
    from niche.workflows import promote

    settings = (
        Settings() if general_rows is None else Settings(evaluation_general_rows=general_rows)
    )
    with RichProgress(enabled=not json_out) as progress:
        outcome = promote(
            task,
            version,
            settings,
            alias=alias,
            margin=margin,
            force=force,
            why=why,
            seed=seed,
            progress=progress,
        )
    if json_out:
        print_json(outcome.to_dict())
    else:
        print_promotion(outcome)
    outcome.raise_for_refusal()


@app.command("gates")
def gates_command(task: TaskArg, json_out: JsonOpt = False) -> None:
    """Every promotion attempt for a task, passed or refused, with its checks."""
    payload = [g.to_dict() for g in open_registry().promotions.gates(task)]
    if json_out:
        print_json(payload)
        return
    table(
        f"gate decisions: {task}",
        ["at", "version", "alias", "passed", "forced", "failed checks", "actor"],
        [
            [
                g["at"],
                g["version"],
                g["alias"],
                g["passed"],
                g["forced"],
                ", ".join(c["name"] for c in g["checks"] if not c["passed"]),
                g["actor"],
            ]
            for g in payload
        ],
    )


@app.command("gc")
def gc_command(
    dry_run: Annotated[bool, typer.Option(help="Only list what would be removed.")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Remove stored artifacts that no model or dataset version references."""
    from niche.workflows import collect_garbage

    result = collect_garbage(Settings(), dry_run=dry_run)
    if json_out:
        print_json(result.to_dict())
        return
    verb = "would remove" if dry_run else "removed"
    typer.echo(f"{verb} {len(result.removed)} unreferenced artifact(s)")
    for digest in result.removed:
        typer.echo(f"  {digest}")


# -- models ------------------------------------------------------------------------------


@models_app.command("list")
def models_list(
    task: Annotated[str | None, typer.Argument(help="Only this task's versions.")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Model versions, newest last."""
    payload = [record.to_dict() for record in open_registry().models.all(task)]
    if json_out:
        print_json(payload)
        return
    table(
        "model versions",
        ["task", "version", "kind", "dataset", "artifact", "created"],
        [
            [
                m["task"],
                m["version"],
                m["kind"],
                m["dataset_fingerprint"][:16],
                m["artifact_digest"][:16],
                m["created_at"],
            ]
            for m in payload
        ],
    )


@models_app.command("show")
def models_show(task: TaskArg, version: VersionArg, json_out: JsonOpt = False) -> None:
    """One model version with its lineage and evaluations."""
    from niche.workflows import show_model

    payload = show_model(task, version, Settings())
    if json_out:
        print_json(payload)
        return
    pretty(payload)


@models_app.command("lineage")
def models_lineage(task: TaskArg, version: VersionArg, json_out: JsonOpt = False) -> None:
    """Walk a model version back to the dataset version (fingerprint) it was trained on."""
    from niche.workflows import lineage

    payload = lineage(task, version, Settings())
    if json_out:
        print_json(payload)
        return
    print_lineage(payload)


@aliases_app.command("history")
def aliases_history(
    task: TaskArg,
    alias: Annotated[str | None, typer.Option(help="Only this alias.")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Every move of a task's aliases: from, to, when, who and why."""
    payload = [e.to_dict() for e in open_registry().promotions.history(task, alias)]
    if json_out:
        print_json(payload)
        return
    table(
        f"alias history: {task}",
        ["at", "alias", "from", "to", "actor", "reason"],
        [
            [e["at"], e["alias"], e["from_version"], e["to_version"], e["actor"], e["reason"]]
            for e in payload
        ],
    )
