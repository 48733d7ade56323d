"""Registry commands: ``db``, ``tasks …`` and ``keys …`` (``traffic …``: ``cli/traffic.py``).

Each command parses options, calls one library function (:mod:`niche.workflows` or the
registry) and prints (rich or ``--json``).
"""

from __future__ import annotations

from typing import Annotated

import typer

from niche.cli.app import JsonOpt, TaskArg, db_app, keys_app, open_registry, tasks_app
from niche.cli.output import pretty, print_json, table
from niche.settings import Settings

SECRET_WARNING = "store this secret now: it is not kept and cannot be shown again"

SetOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        help="KEY=VALUE for any other field, e.g. sla.latency_p95_ms=50, "
        "sla.min_quality=0.9, cascade_threshold=0.7, general.kind=openai.",
    ),
]

# -- db ----------------------------------------------------------------------------------


@db_app.command("upgrade")
def db_upgrade(json_out: JsonOpt = False) -> None:
    """Apply database migrations (also done automatically on first use)."""
    revision = open_registry().upgrade()
    if json_out:
        print_json({"revision": revision})
    else:
        typer.echo(f"database at revision {revision}")


# -- tasks -------------------------------------------------------------------------------


@tasks_app.command("create")
def tasks_create(
    name: TaskArg,
    labels: Annotated[str | None, typer.Option(help="Comma-separated label set.")] = None,
    domain: Annotated[str | None, typer.Option(help="Domain tag (finance, legal, …).")] = None,
    description: Annotated[str | None, typer.Option(help="What the task is.")] = None,
    set_: SetOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Create a task (its SLA and general model are data: see --set)."""
    from niche.workflows import create_task

    record = create_task(
        name,
        Settings(),
        labels=[label.strip() for label in (labels or "").split(",") if label.strip()],
        domain=domain,
        description=description,
        changes=set_ or [],
    )
    if json_out:
        print_json(record.to_dict())
    else:
        typer.echo(f"task {record.name} created")


@tasks_app.command("list")
def tasks_list(json_out: JsonOpt = False) -> None:
    """Every task with its champion."""
    payload = [record.to_dict() for record in open_registry().tasks.all()]
    if json_out:
        print_json(payload)
        return
    table(
        "tasks",
        ["name", "domain", "labels", "general", "cascade threshold"],
        [
            [
                t["name"],
                t["spec"]["domain"],
                len(t["spec"]["labels"]),
                t["spec"]["general"]["kind"],
                t["spec"]["cascade_threshold"],
            ]
            for t in payload
        ],
    )


@tasks_app.command("show")
def tasks_show(name: TaskArg, json_out: JsonOpt = False) -> None:
    """One task: its spec, SLA and aliases."""
    from niche.workflows import show_task

    payload = show_task(name, Settings())
    if json_out:
        print_json(payload)
        return
    pretty(payload)


@tasks_app.command("edit")
def tasks_edit(
    name: TaskArg,
    set_: Annotated[
        list[str],
        typer.Option("--set", help="KEY=VALUE, e.g. sla.min_quality=0.92 (repeatable)."),
    ],
    json_out: JsonOpt = False,
) -> None:
    """Change fields of a task's spec."""
    from niche.workflows import edit_task

    record = edit_task(name, set_, Settings())
    if json_out:
        print_json(record.to_dict())
    else:
        typer.echo(f"task {record.name} updated")


# -- keys --------------------------------------------------------------------------------


@keys_app.command("create")
def keys_create(
    scope: Annotated[str, typer.Option(help="inference (call models) or admin.")],
    budget_usd: Annotated[
        float | None, typer.Option("--budget-usd", help="Spend limit in US dollars.")
    ] = None,
    name: Annotated[str | None, typer.Option(help="A name to recognise the key by.")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Create an API key and print its secret, once."""
    record, secret = open_registry().keys.create(scope=scope, budget_usd=budget_usd, name=name)
    if json_out:
        print_json(record.to_dict() | {"secret": secret})
    else:
        typer.echo(f"key {record.id} ({record.prefix}…, {record.scope}) created")
        typer.echo(secret)
    typer.echo(f"warning: {SECRET_WARNING}", err=True)


@keys_app.command("list")
def keys_list(json_out: JsonOpt = False) -> None:
    """Every API key (prefix only, never the secret), with its budget and spend."""
    payload = [record.to_dict() for record in open_registry().keys.all()]
    if json_out:
        print_json(payload)
        return
    table(
        "API keys",
        ["id", "prefix", "name", "scope", "budget $", "spent $", "created", "revoked"],
        [
            [
                k["id"],
                k["prefix"],
                k["name"],
                k["scope"],
                k["budget_usd"],
                f"{k['spent_usd']:.4f}",
                k["created_at"],
                k["revoked_at"],
            ]
            for k in payload
        ],
    )


@keys_app.command("revoke")
def keys_revoke(
    ref: Annotated[str, typer.Argument(metavar="ID_OR_PREFIX", help="Key id or unique prefix.")],
    json_out: JsonOpt = False,
) -> None:
    """Revoke an API key: it stops verifying at once."""
    record = open_registry().keys.revoke(ref)
    if json_out:
        print_json(record.to_dict())
    else:
        typer.echo(
            f"key {record.id} ({record.prefix}…) revoked at {record.to_dict()['revoked_at']}"
        )
