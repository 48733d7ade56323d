"""Data commands: ``data inspect``, ``data curate`` and ``datasets list|show``.

Each command parses options, calls one library function (:mod:`niche.workflows` or the
registry) and prints (rich or ``--json``).
"""

from __future__ import annotations

from typing import Annotated

import typer

from niche.cli.app import (
    DataOpt,
    DatasetOpt,
    JsonOpt,
    LabelColOpt,
    NoHeaderOpt,
    SeedOpt,
    TextColOpt,
    data_app,
    data_spec,
    datasets_app,
    open_registry,
)
from niche.cli.output import (
    RichProgress,
    curation_table,
    database_location,
    make_console,
    pretty,
    print_json,
    table,
)
from niche.settings import Settings


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
    from niche.workflows import inspect_data

    summary = inspect_data(data_spec(dataset, data, text_col, label_col, no_header), Settings())
    if json_out:
        print_json(summary)
        return
    from rich.table import Table

    console = make_console()
    console.print(f"[bold]{summary['name']}[/] ({summary['source']})")
    for split, info in summary["splits"].items():
        rich_table = Table(
            title=f"{split}: {info['rows']} rows, {info['labels']} labels, "
            f"median {info['words_median']} words (max {info['words_max']})"
        )
        rich_table.add_column("label")
        rich_table.add_column("rows", justify="right")
        counts = list(info["label_counts"].items())
        for label, count in counts[:15]:
            rich_table.add_row(label, str(count))
        if len(counts) > 15:
            rich_table.add_row(f"… {len(counts) - 15} more", "")
        console.print(rich_table)


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
    """Normalise, deduplicate, remove leaks, split; save and register a dataset version.

    Refused data (one label, no test rows left, a bad file) writes nothing. `niche train`
    then registers its model under a task named after the dataset: `--dataset
    clinc150/banking` gives task `clinc150.banking`, `--data tickets.csv` gives `tickets`
    (`niche train --task NAME` chooses another).
    """
    from niche.workflows import curate_data

    spec = data_spec(dataset, data, text_col, label_col, no_header)
    with RichProgress(enabled=not json_out) as progress:
        curated = curate_data(
            spec,
            Settings(),
            test_size=test_size,
            seed=seed,
            near_duplicate_threshold=near_duplicate_threshold,
            progress=progress,
        )
    payload = curated.to_dict()
    if json_out:
        print_json(payload)
        return
    console = make_console()
    fingerprint = curated.version.fingerprint
    console.print(curation_table(payload["curation"]))
    if curated.already:
        console.print(
            f"dataset version [bold]{fingerprint[:16]}[/] already exists (same content), "
            f"files at {curated.uri}; nothing new written"
        )
    else:
        console.print(f"dataset version [bold]{fingerprint[:16]}[/] saved to {curated.uri}")
    console.print(f"registry: {database_location(Settings())}")
    console.print(
        f"next: niche train {fingerprint[:16]}   "
        f"(its model registers under task {payload['task']!r}; --task NAME for another)"
    )


@datasets_app.command("list")
def datasets_list(json_out: JsonOpt = False) -> None:
    """Registered dataset versions."""
    payload = [record.to_dict() for record in open_registry().datasets.all()]
    if json_out:
        print_json(payload)
        return
    table(
        "dataset versions",
        ["fingerprint", "source", "splits", "created"],
        [[d["fingerprint"][:16], d["source"], d["splits"], d["created_at"]] for d in payload],
    )


@datasets_app.command("show")
def datasets_show(
    ref: Annotated[str, typer.Argument(help="Fingerprint or a unique prefix of one.")],
    json_out: JsonOpt = False,
) -> None:
    """One dataset version with its curation report."""
    payload = open_registry().datasets.get(ref).to_dict()
    if json_out:
        print_json(payload)
        return
    pretty(payload)
