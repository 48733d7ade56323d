"""``niche monitor [TASK] [--window 1h|N] [--json] [--no-store]``: each champion's signals;
``niche alerts [TASK] [--state open|resolved] [--json]``: the alerts they opened."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from niche.cli.app import JsonOpt, app
from niche.cli.output import RichProgress, make_console, print_json, table
from niche.settings import Settings

_MONITOR_COLUMNS = ["signal", "statistic", "p-value / interval", "threshold", "n", "verdict"]


@app.command("monitor")
def monitor_command(
    task: Annotated[
        str | None, typer.Argument(help="Only this task (default: every task).")
    ] = None,
    window: Annotated[
        str | None,
        typer.Option(
            help="The latest N records, or a duration back from now (30m, 1h, 2d); default: "
            "each task's monitoring.window."
        ),
    ] = None,
    no_store: Annotated[
        bool, typer.Option("--no-store", help="Check only: store no report, open no alert.")
    ] = False,
    json_out: JsonOpt = False,
) -> None:
    """Check each task's champion for drift, agreement, accuracy and SLA over its latest
    traffic; store the report and open or resolve alerts (sent to NICHE_ALERT_WEBHOOKS)."""
    from niche.workflows import flush_alert_webhooks, monitor

    settings = Settings()
    with RichProgress(enabled=not json_out) as progress:
        reports = monitor(task, settings, window=window, store=not no_store, progress=progress)
    # Webhook calls run in the background: give them a moment before the process ends.
    if not flush_alert_webhooks(float(settings.get("NICHE_ALERT_WEBHOOK_TIMEOUT_S"))):
        typer.echo("warning: some alerts were not delivered to the webhooks yet", err=True)
    payload = [report.to_dict() for report in reports]
    if json_out:
        print_json(payload)
        return
    console = make_console()
    for report in payload:
        _print_report(report, console)


def _number(value: Any, digits: int = 4) -> str:
    if value is None:
        return ""
    if isinstance(value, int | float):
        return f"{value:.{digits}g}"
    return str(value)


def _evidence(signal: dict[str, Any]) -> str:
    if signal.get("p_value") is not None:
        return f"p={_number(signal['p_value'], 3)}"
    interval = signal.get("interval")
    if interval:
        low, high = interval
        return f"[{_number(low, 3)}, {_number(high, 3)}]"
    return ""


def _print_report(report: dict[str, Any], console: Any) -> None:
    from niche.workflows.monitor import verdict

    window = report["window"]
    version = f"v{report['model_version']}" if report["model_version"] is not None else "none"
    title = (
        f"{report['task']} — champion {version}, {window['rows']} records "
        f"({window.get('champion_rows', 0)} its own), window {window['size']}"
    )
    table(
        title,
        _MONITOR_COLUMNS,
        [
            [
                signal["name"],
                _number(signal.get("statistic")),
                _evidence(signal),
                _number(signal.get("threshold"), 3),
                signal.get("n"),
                verdict(signal),
            ]
            for signal in report["signals"]
        ],
    )
    for note in report["notes"]:
        console.print(f"  note: {note}", markup=False)
    alerts = report["alerts"]
    for state, alerts_in in (("opened", alerts["opened"]), ("resolved", alerts["resolved"])):
        if alerts_in:
            names = ", ".join(alert["signal"] for alert in alerts_in)
            console.print(f"  alerts {state}: {names}", markup=False)


@app.command("alerts")
def alerts_command(
    task: Annotated[str | None, typer.Argument(help="Only this task's alerts.")] = None,
    state: Annotated[str | None, typer.Option(help="Only open or only resolved alerts.")] = None,
    since: Annotated[
        str | None,
        typer.Option(help="Opened at or after: ISO-8601, or a duration back (30m, 1h, 2d)."),
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Alerts the monitor opened, oldest first, with their state (open / resolved)."""
    from niche.workflows import list_alerts

    alerts = list_alerts(task, Settings(), state=state, since=since)
    payload = [alert.to_dict() for alert in alerts]
    if json_out:
        print_json(payload)
        return
    table(
        "alerts",
        [
            "id",
            "task",
            "signal",
            "version",
            "state",
            "opened",
            "resolved",
            "statistic",
            "p / interval",
        ],
        [
            [
                a["id"],
                a["task"],
                a["signal"],
                f"v{a['model_version']}" if a["model_version"] is not None else "",
                a["state"],
                a["opened_at"],
                a["resolved_at"],
                _number(a["detail"].get("statistic")),
                _evidence(a["detail"]),
            ]
            for a in payload
        ],
    )
