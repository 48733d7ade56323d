"""``niche general check``: one probe of a general model (a thin shell over
:func:`niche.workflows.general.check_general`)."""

from __future__ import annotations

from typing import Annotated

import typer

from niche.cli.app import JsonOpt, app
from niche.cli.output import print_json, table
from niche.settings import Settings

general_app = typer.Typer(help="The general model behind the tasks.", no_args_is_help=True)
app.add_typer(general_app, name="general")


@general_app.command("check")
def check_command(
    task: Annotated[
        str | None, typer.Argument(help="Task whose general model to probe (default: the global).")
    ] = None,
    text: Annotated[str | None, typer.Option(help="The text to ask about.")] = None,
    timeout_s: Annotated[
        float | None, typer.Option("--timeout-s", min=0.1, help="Seconds to wait for the answer.")
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Send one probe to TASK's general model (or NICHE_GENERAL_*'s) and report its latency,
    its answer, whether that maps to a label, and whether the constrained format was taken.

    Exits 2 when no general model is configured or its key variable is unset, 1 when the
    endpoint is down, too slow or refuses the probe.
    """
    from niche.workflows.general import check_general

    check = check_general(task, Settings(), text=text, timeout_s=timeout_s)
    if json_out:
        print_json(check.to_dict())
        return
    accepted = {True: "yes", False: "no (stepped down)", None: "not asked (text)"}
    table(
        f"general model {check.model}" + (f" of task {check.task}" if check.task else ""),
        ["field", "value"],
        [
            ["endpoint", check.base_url],
            ["latency", f"{check.latency_ms:.0f} ms"],
            ["answer", check.answer],
            ["label", check.label or "(none: the answer names no label)"],
            ["response format", check.response_format],
            ["constrained format accepted", accepted[check.format_accepted]],
            ["tokens in / out", f"{check.input_tokens} / {check.output_tokens}"],
        ],
    )
