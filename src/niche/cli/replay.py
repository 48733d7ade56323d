"""``niche replay``: send a labelled dataset through a running gateway, as an application would
(a thin shell over :func:`niche.workflows.replay.replay`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from niche.cli.app import (
    DataOpt,
    DatasetOpt,
    JsonOpt,
    LabelColOpt,
    NoHeaderOpt,
    SeedOpt,
    TextColOpt,
    app,
    data_spec,
)
from niche.cli.output import RichProgress, make_console, print_json, table
from niche.settings import Settings

if TYPE_CHECKING:
    from niche.workflows.replay import ReplayResult


@app.command("replay")
def replay_command(
    task: Annotated[
        str, typer.Option("--task", help="The task to send the texts to (model=TASK).")
    ],
    url: Annotated[
        str, typer.Option("--url", help="The gateway's URL, e.g. http://127.0.0.1:8000.")
    ],
    dataset: DatasetOpt = None,
    data: DataOpt = None,
    text_col: TextColOpt = "text",
    label_col: LabelColOpt = "label",
    no_header: NoHeaderOpt = False,
    api_key: Annotated[
        str | None,
        typer.Option(
            "--api-key",
            help="API key for the gateway (default NICHE_REPLAY_API_KEY; none: local mode).",
            show_default=False,
        ),
    ] = None,
    rate: Annotated[
        float | None,
        typer.Option(
            "--rate", min=0.001, help="Requests per second (default: as fast as it goes)."
        ),
    ] = None,
    limit: Annotated[int | None, typer.Option("--limit", min=0, help="Send at most N.")] = None,
    skip: Annotated[
        int,
        typer.Option(
            "--skip", min=0, help="Leave out the stream's first N (go on from a last replay)."
        ),
    ] = 0,
    shift: Annotated[
        str | None,
        typer.Option(
            "--shift",
            help="Scheduled shift: after=K,labels=A|B | after=K,domain=D | "
            "after=K,mix=A:0.5,B:0.5, each with an optional share=F; phases joined by ';'.",
        ),
    ] = None,
    feedback_share: Annotated[
        float,
        typer.Option(
            "--feedback-share",
            min=0.0,
            max=1.0,
            help="Share of requests whose gold label is posted to /v1/feedback.",
        ),
    ] = 0.0,
    split: Annotated[
        str, typer.Option("--split", help="Rows to draw from: all, train or test.")
    ] = "all",
    client: Annotated[
        str, typer.Option("--client", help="http (aiohttp) or openai (the OpenAI SDK).")
    ] = "http",
    concurrency: Annotated[
        int, typer.Option("--concurrency", min=1, help="Requests in flight at once.")
    ] = 4,
    seed: SeedOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Send a labelled dataset through a running gateway, as an application would.

    Counts what comes back: routes, errors, and agreement with the gold labels per phase of
    the shift; posts gold labels as feedback for --feedback-share of the requests.
    """
    from niche.workflows.replay import replay

    spec = data_spec(dataset, data, text_col, label_col, no_header)
    with RichProgress(enabled=not json_out) as progress:
        result = replay(
            spec,
            task=task,
            url=url,
            settings=Settings(),
            api_key=api_key,
            rate=rate,
            limit=limit,
            skip=skip,
            shift=shift,
            feedback_share=feedback_share,
            seed=seed,
            split=split,
            client=client,
            concurrency=concurrency,
            progress=progress,
        )
    if json_out:
        print_json(result.to_dict())
    else:
        print_replay(result)


def _percent(value: float | None) -> str:
    return "" if value is None else f"{value:.1%}"


def print_replay(result: ReplayResult) -> None:
    """One row per phase of the shift, then the totals, errors and feedback."""
    rows = [
        [
            phase.phase,
            phase.shift or "(start)",
            phase.sent,
            phase.answered,
            _percent(phase.agreement),
            ", ".join(f"{route} {count}" for route, count in phase.routes.items()),
        ]
        for phase in result.phases
    ]
    table(
        f"replay to {result.task} at {result.url}",
        ["phase", "shift", "sent", "answered", "agreement", "routes"],
        rows,
    )
    console = make_console()
    errors = ", ".join(f"{status} {n}" for status, n in result.errors.items()) or "none"
    console.print(
        f"{result.sent} sent in {result.seconds:.1f} s ({result.rate:.1f}/s), {result.answered} "
        f"answered, agreement {_percent(result.agreement) or 'n/a'}; errors: {errors}"
    )
    if result.feedback_sent:
        refused = ", ".join(f"{s} {n}" for s, n in result.feedback_refused.items()) or "none"
        console.print(
            f"feedback: {result.feedback_sent} posted, {result.feedback_attached} attached, "
            f"refused: {refused}"
        )
