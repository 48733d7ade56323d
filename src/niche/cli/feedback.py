"""``niche feedback --file labels.csv [--json]``: attach gold labels that arrived late to the
requests the gateway captured, by the request id each client got."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from niche.cli.app import JsonOpt, app
from niche.cli.output import print_json
from niche.settings import Settings


@app.command("feedback")
def feedback_command(
    file: Annotated[
        Path,
        typer.Option(
            "--file",
            "-f",
            help="Labels to attach: a CSV with a request_id,label header (or TSV, JSONL, Parquet).",
        ),
    ],
    json_out: JsonOpt = False,
) -> None:
    """Attach true labels to captured requests, all or none: an unknown request id or a label
    outside its task's label set is named (with its line) and nothing is changed."""
    from niche.workflows import send_feedback_file

    result = send_feedback_file(file, Settings())
    if json_out:
        print_json(result.to_dict())
        return
    repeated = (
        f" ({result.repeated} repeated id(s): the last label kept)" if result.repeated else ""
    )
    typer.echo(f"attached {result.attached} gold label(s) from {file}{repeated}")
