"""Traffic commands: ``niche traffic [TASK]`` lists captured requests; ``niche traffic prune``
deletes old ones; ``niche traffic dead-letters`` shows what capture could not store.

Each command parses options, calls one :mod:`niche.workflows` function and prints (rich or
``--json``).
"""

from __future__ import annotations

from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from niche.cli.app import JsonOpt, app
from niche.cli.output import print_json, table
from niche.settings import Settings

LIST = "list"


class TrafficGroup(TyperGroup):
    """``niche traffic`` whose first word is not a subcommand is ``niche traffic list …``, so
    ``niche traffic banking77 --since 1h`` keeps working beside ``niche traffic prune``."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if not args or (args[0] not in self.commands and args[0] not in ("--help", "-h")):
            args = [LIST, *args]
        return super().parse_args(ctx, args)


traffic_app = typer.Typer(
    cls=TrafficGroup,
    help="Requests the gateway captured: list them (the default), prune old ones, and show "
    "what capture could not store.",
)
app.add_typer(traffic_app, name="traffic")


@traffic_app.command(LIST)
def traffic_list(
    task: Annotated[str | None, typer.Argument(help="Only this task's requests.")] = None,
    since: Annotated[
        str | None, typer.Option(help="ISO-8601 time, or a duration back from now: 30m, 1h, 2d.")
    ] = None,
    limit: Annotated[
        int | None, typer.Option(min=0, help="Only the most recent N requests.")
    ] = None,
    count: Annotated[bool, typer.Option("--count", help="Print only how many.")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Requests the gateway captured, oldest first (what `niche traffic` alone runs)."""
    from niche.workflows import answered, count_traffic, list_traffic

    if count:
        total = count_traffic(task, Settings(), since=since)
        if json_out:
            print_json({"count": total})
        else:
            typer.echo(str(total))
        return
    records = list_traffic(task, Settings(), since=since, limit=limit)
    if json_out:
        print_json([r.to_dict() for r in records])
        return
    table(
        "traffic",
        [
            "at",
            "task",
            "model",
            "version",
            "route",
            "answer",
            "confidence",
            "ms",
            "cost $",
            "status",
            "request id",
            "gold",
        ],
        [
            [
                r["at"],
                r["task"],
                r["model"],
                f"v{r['model_version']} {r['alias'] or ''}".strip() if r["model_version"] else "",
                r["route"]
                + (" +shadow" if r["shadow"] else "")
                + (" sampled" if r["sampled"] else ""),
                answered(record),
                (
                    f"{r['specialist_confidence']:.3f}"
                    if r["specialist_confidence"] is not None
                    else None
                ),
                f"{r['latency_ms']:.1f}",
                f"{r['cost_usd']:.6f}",
                r["status"],
                r["request_id"],
                r["gold_label"],
            ]
            for record in records
            for r in [record.to_dict()]
        ],
    )


@traffic_app.command("prune")
def traffic_prune(
    older_than: Annotated[
        str | None,
        typer.Option(
            help="Delete records older than this: a duration (30d, 12h, 1w) or an ISO-8601 "
            "time. Default: NICHE_TRAFFIC_RETENTION_DAYS."
        ),
    ] = None,
    batch_size: Annotated[
        int, typer.Option(min=1, help="Records deleted per transaction.")
    ] = 10_000,
    json_out: JsonOpt = False,
) -> None:
    """Delete old traffic records, in batches (capture keeps writing meanwhile)."""
    from niche.workflows import prune_traffic

    pruned = prune_traffic(Settings(), older_than=older_than, batch_size=batch_size)
    if json_out:
        print_json(pruned.to_dict())
    else:
        typer.echo(
            f"deleted {pruned.deleted} traffic record(s) from before {pruned.before.isoformat()}"
        )


@traffic_app.command("dead-letters")
def traffic_dead_letters(
    limit: Annotated[
        int | None, typer.Option(min=0, help="Only the most recent N dead letters.")
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """What capture could not store (NICHE_TRAFFIC_DEAD_LETTER_DIR), oldest first."""
    from niche.workflows import dead_letters

    letters = dead_letters(Settings(), limit=limit)
    if json_out:
        print_json([letter.to_dict() for letter in letters])
        return
    table(
        "dead letters",
        ["at", "kind", "reason", "error", "model", "route", "message"],
        [
            [
                letter.at.isoformat(),
                letter.kind,
                letter.reason,
                letter.error,
                (letter.record or {}).get("model"),
                (letter.record or {}).get("route"),
                letter.message,
            ]
            for letter in letters
        ],
    )
