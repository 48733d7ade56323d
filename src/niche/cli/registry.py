"""Registry commands: tasks, datasets, models, promote, aliases, gates, gc, db, keys, traffic.

Each command parses options, calls one library function and prints (rich or ``--json``).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated, Any

import typer

from niche.cli.app import (
    JsonOpt,
    RichProgress,
    SeedOpt,
    _pretty,
    _print_json,
    _run,
    _table,
    app,
)
from niche.settings import Settings

if TYPE_CHECKING:
    from niche.registry.store import Registry

tasks_app = typer.Typer(help="Create, list, show and edit tasks.", no_args_is_help=True)
datasets_app = typer.Typer(help="List and show registered dataset versions.", no_args_is_help=True)
models_app = typer.Typer(help="List, show and trace model versions.", no_args_is_help=True)
aliases_app = typer.Typer(
    help="Aliases (champion, challenger, …) and their history.", no_args_is_help=True
)
db_app = typer.Typer(help="The registry database.", no_args_is_help=True)
keys_app = typer.Typer(help="Create, list and revoke gateway API keys.", no_args_is_help=True)
app.add_typer(tasks_app, name="tasks")
app.add_typer(datasets_app, name="datasets")
app.add_typer(models_app, name="models")
app.add_typer(aliases_app, name="aliases")
app.add_typer(db_app, name="db")
app.add_typer(keys_app, name="keys")

PROMOTION_REFUSED = 3

TaskArg = Annotated[str, typer.Argument(help="Task name.")]
VersionArg = Annotated[str, typer.Argument(help="Model version number, or an alias (champion).")]


def _registry() -> Registry:
    from niche.registry.store import Registry

    return Registry(settings=Settings())


def _parse_value(raw: str) -> Any:
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw


def _changes(pairs: list[str]) -> dict[str, Any]:
    """``["sla.min_quality=0.9", "domain=finance"]`` → ``{"sla": {"min_quality": 0.9}, …}``."""
    from niche.errors import ConfigurationError

    changes: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise ConfigurationError(f"--set takes KEY=VALUE, got {pair!r}")
        head, dot, tail = key.partition(".")
        if dot:
            changes.setdefault(head, {})[tail] = _parse_value(raw)
        else:
            changes[key] = _parse_value(raw)
    return changes


# -- db ----------------------------------------------------------------------------------


@db_app.command("upgrade")
def db_upgrade(json_out: JsonOpt = False) -> None:
    """Apply database migrations (also done automatically on first use)."""
    revision = _run(lambda: _registry().upgrade())
    if json_out:
        _print_json({"revision": revision})
    else:
        typer.echo(f"database at revision {revision}")


# -- tasks -------------------------------------------------------------------------------


@tasks_app.command("create")
def tasks_create(
    name: TaskArg,
    labels: Annotated[str | None, typer.Option(help="Comma-separated label set.")] = None,
    domain: Annotated[str | None, typer.Option(help="Domain tag (finance, legal, …).")] = None,
    description: Annotated[str | None, typer.Option(help="What the task is.")] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            help="KEY=VALUE for any other field, e.g. sla.latency_p95_ms=50, "
            "sla.min_quality=0.9, cascade_threshold=0.7, general.kind=openai.",
        ),
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Create a task (its SLA and general model are data: see --set)."""
    from niche.registry.tasks import TaskSpec

    def create() -> Any:
        data: dict[str, Any] = {"name": name, **_changes(set_ or [])}
        if labels:
            data["labels"] = [label.strip() for label in labels.split(",") if label.strip()]
        if domain:
            data["domain"] = domain
        if description:
            data["description"] = description
        return _registry().create_task(TaskSpec.from_dict(data))

    record = _run(create)
    if json_out:
        _print_json(record.to_dict())
    else:
        typer.echo(f"task {record.name} created")


@tasks_app.command("list")
def tasks_list(json_out: JsonOpt = False) -> None:
    """Every task with its champion."""
    registry = _registry()
    records = _run(registry.list_tasks)
    payload = [record.to_dict() for record in records]
    if json_out:
        _print_json(payload)
        return
    _table(
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
    registry = _registry()
    record = _run(lambda: registry.get_task(name))
    payload = record.to_dict() | {"aliases": _run(lambda: registry.list_aliases(name))}
    if json_out:
        _print_json(payload)
        return
    _pretty(payload)


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
    record = _run(lambda: _registry().update_task(name, **_changes(set_)))
    if json_out:
        _print_json(record.to_dict())
    else:
        typer.echo(f"task {record.name} updated")


# -- datasets ----------------------------------------------------------------------------


@datasets_app.command("list")
def datasets_list(json_out: JsonOpt = False) -> None:
    """Registered dataset versions."""
    payload = [record.to_dict() for record in _run(_registry().list_datasets)]
    if json_out:
        _print_json(payload)
        return
    _table(
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
    payload = _run(lambda: _registry().get_dataset(ref)).to_dict()
    if json_out:
        _print_json(payload)
        return
    _pretty(payload)


# -- models ------------------------------------------------------------------------------


@models_app.command("list")
def models_list(
    task: Annotated[str | None, typer.Argument(help="Only this task's versions.")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Model versions, newest last."""
    payload = [record.to_dict() for record in _run(lambda: _registry().list_models(task))]
    if json_out:
        _print_json(payload)
        return
    _table(
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
    registry = _registry()
    record = _run(lambda: registry.get_model(task, version))
    payload = record.to_dict() | {
        "evaluations": [
            e.to_dict() for e in _run(lambda: registry.list_evaluations(task, record.version))
        ]
    }
    if json_out:
        _print_json(payload)
        return
    _pretty(payload)


@models_app.command("lineage")
def models_lineage(task: TaskArg, version: VersionArg, json_out: JsonOpt = False) -> None:
    """Walk a model version back to the dataset version (fingerprint) it was trained on."""
    payload = _run(lambda: _registry().lineage(task, version))
    if json_out:
        _print_json(payload)
        return
    model, dataset = payload["model"], payload["dataset"]
    typer.echo(
        f"model {task} v{model['version']} ({model['kind']}, artifact {model['artifact_digest'][:16]})"
    )
    lineage = model["lineage"]
    typer.echo(
        f"  trained on {lineage.get('train_rows')} rows with encoder {lineage.get('encoder_id')}, "
        f"niche {lineage.get('niche_version')} @ {lineage.get('git_revision') or 'unknown revision'}"
    )
    if dataset is None:
        typer.echo(f"  dataset {model['dataset_fingerprint']} (not registered)")
    else:
        typer.echo(f"  dataset {dataset['fingerprint']} from {dataset['source']}")
        typer.echo(f"    splits {dataset['splits']}")
    for evaluation in payload.get("evaluations", []):
        metrics = evaluation["metrics"]
        typer.echo(
            f"  evaluated on {evaluation['split']}: accuracy {metrics['accuracy']:.4f} "
            f"({evaluation['created_at']})"
        )


# -- promotion ---------------------------------------------------------------------------


@app.command("promote")
def promote_command(
    task: TaskArg,
    version: VersionArg,
    alias: Annotated[str, typer.Option(help="The alias to move.")] = "champion",
    margin: Annotated[
        float, typer.Option(help="Accuracy the candidate may lose to the current holder.")
    ] = 0.01,
    force: Annotated[bool, typer.Option(help="Move the alias even if the gate fails.")] = False,
    why: Annotated[str | None, typer.Option(help="Why (required with --force).")] = None,
    seed: SeedOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Gate a model version for an alias: exit 0 when promoted, 3 when refused."""
    from niche.lifecycle import promote

    settings = Settings()
    with RichProgress(enabled=not json_out) as progress:
        outcome = _run(
            lambda: promote(
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
        )
    if json_out:
        _print_json(outcome.to_dict())
    else:
        _table(
            f"gate: {task} v{outcome.candidate.version} → {alias}",
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
            typer.echo(f"v{outcome.candidate.version} already holds {alias}")
        elif outcome.moved:
            typer.echo(
                f"{alias} → v{outcome.candidate.version}" + (" (forced)" if outcome.forced else "")
            )
        else:
            failed = ", ".join(c.name for c in outcome.decision.failed)
            typer.echo(f"refused: {failed}", err=True)
    if not (outcome.moved or outcome.already):
        raise typer.Exit(PROMOTION_REFUSED)


@aliases_app.command("history")
def aliases_history(
    task: TaskArg,
    alias: Annotated[str | None, typer.Option(help="Only this alias.")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Every move of a task's aliases: from, to, when, who and why."""
    payload = [e.to_dict() for e in _run(lambda: _registry().alias_history(task, alias))]
    if json_out:
        _print_json(payload)
        return
    _table(
        f"alias history: {task}",
        ["at", "alias", "from", "to", "actor", "reason"],
        [
            [e["at"], e["alias"], e["from_version"], e["to_version"], e["actor"], e["reason"]]
            for e in payload
        ],
    )


@app.command("gates")
def gates_command(task: TaskArg, json_out: JsonOpt = False) -> None:
    """Every promotion attempt for a task, passed or refused, with its checks."""
    payload = [g.to_dict() for g in _run(lambda: _registry().gate_decisions(task))]
    if json_out:
        _print_json(payload)
        return
    _table(
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
    """Remove artifacts that no model version references."""
    from niche.registry.artifacts import ArtifactStore

    settings = Settings()

    def collect() -> list[str]:
        referenced = _registry().referenced_digests()
        return ArtifactStore.from_settings(settings).gc(referenced, dry_run=dry_run)

    removed = _run(collect)
    if json_out:
        _print_json({"removed": removed, "dry_run": dry_run})
        return
    verb = "would remove" if dry_run else "removed"
    typer.echo(f"{verb} {len(removed)} unreferenced artifact(s)")
    for digest in removed:
        typer.echo(f"  {digest}")


# -- keys --------------------------------------------------------------------------------

SECRET_WARNING = "store this secret now: it is not kept and cannot be shown again"


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
    record, secret = _run(
        lambda: _registry().create_key(scope=scope, budget_usd=budget_usd, name=name)
    )
    if json_out:
        _print_json(record.to_dict() | {"secret": secret})
    else:
        typer.echo(f"key {record.id} ({record.prefix}…, {record.scope}) created")
        typer.echo(secret)
    typer.echo(f"warning: {SECRET_WARNING}", err=True)


@keys_app.command("list")
def keys_list(json_out: JsonOpt = False) -> None:
    """Every API key (prefix only, never the secret), with its budget and spend."""
    payload = [record.to_dict() for record in _run(_registry().list_keys)]
    if json_out:
        _print_json(payload)
        return
    _table(
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
    record = _run(lambda: _registry().revoke_key(ref))
    if json_out:
        _print_json(record.to_dict())
    else:
        typer.echo(
            f"key {record.id} ({record.prefix}…) revoked at {record.to_dict()['revoked_at']}"
        )


# -- traffic -----------------------------------------------------------------------------


def _answered(record: dict[str, Any]) -> str | None:
    """The answer the client got: the general model's on general routes, else the specialist's."""
    if record["route"] in ("general", "general-fallback", "passthrough"):
        return record["general_label"] or record["general_answer"]
    return record["specialist_label"]


@app.command("traffic")
def traffic_command(
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
    """Requests the gateway captured, oldest first."""
    from datetime import UTC, datetime

    from niche.registry.store import parse_since

    start = _run(lambda: parse_since(since, datetime.now(UTC))) if since is not None else None
    if count:
        total = _run(lambda: _registry().count_traffic(task, since=start))
        if json_out:
            _print_json({"count": total})
        else:
            typer.echo(str(total))
        return
    payload = [
        r.to_dict() for r in _run(lambda: _registry().list_traffic(task, since=start, limit=limit))
    ]
    if json_out:
        _print_json(payload)
        return
    _table(
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
        ],
        [
            [
                r["at"],
                r["task"],
                r["model"],
                f"v{r['model_version']} {r['alias'] or ''}".strip() if r["model_version"] else "",
                r["route"] + (" +shadow" if r["shadow"] else ""),
                _answered(r),
                (
                    f"{r['specialist_confidence']:.3f}"
                    if r["specialist_confidence"] is not None
                    else None
                ),
                f"{r['latency_ms']:.1f}",
                f"{r['cost_usd']:.6f}",
                r["status"],
            ]
            for r in payload
        ],
    )
