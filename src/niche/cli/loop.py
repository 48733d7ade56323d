"""``niche loop [--once] [--interval 10m] [--json] [TASK…]``: monitor, retrain and re-promote
specialists on their own, every decision audited (``niche audit``)."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import TYPE_CHECKING, Annotated, Any

import typer

from niche.cli.app import app
from niche.cli.output import RichProgress, print_json, table
from niche.settings import Settings

if TYPE_CHECKING:
    from niche.workflows.loop import LoopDecision


@app.command("loop")
def loop_command(
    tasks: Annotated[
        list[str] | None, typer.Argument(help="Tasks to look after (default: every task).")
    ] = None,
    once: Annotated[bool, typer.Option("--once", help="One pass over the tasks, then exit.")] = (
        False
    ),
    interval: Annotated[
        str | None,
        typer.Option(help="Time between passes: 30s, 10m, 1h (default NICHE_LOOP_INTERVAL_S)."),
    ] = None,
    json_out: Annotated[
        bool,
        typer.Option(
            "--json",
            help="Print JSON: with --once one list of decisions, else one decision per line.",
        ),
    ] = False,
) -> None:
    """Per task: monitor the champion, decide by its loop.* policy, and when it says so
    distil the traffic, train, evaluate, gate and move champion.

    Runs until Ctrl-C (or SIGTERM), which stops between steps and releases the task's lease;
    with --once, one pass. Exits 1 when a step failed (the champion kept serving).
    """
    from niche.workflows import flush_alert_webhooks
    from niche.workflows.loop import loop_once, parse_interval, run_loop

    settings = Settings()
    names = list(tasks) if tasks else None
    failed = False
    if once:
        with RichProgress(enabled=not json_out) as progress:
            decisions = loop_once(names, settings, progress=progress)
        failed = _print(decisions, json_out, listed=True)
    else:
        seconds = parse_interval(interval or settings.get("NICHE_LOOP_INTERVAL_S"))
        stop = threading.Event()

        def printed(decisions: list[LoopDecision]) -> None:
            nonlocal failed
            failed = _print(decisions, json_out, listed=False) or failed

        with _stopping_on_signals(stop), RichProgress(enabled=not json_out) as progress:
            run_loop(
                names, settings, interval_s=seconds, stop=stop, on_pass=printed, progress=progress
            )
    # The monitor's alerts go to the webhooks in the background: let them out before exiting.
    if not flush_alert_webhooks(float(settings.get("NICHE_ALERT_WEBHOOK_TIMEOUT_S"))):
        typer.echo("warning: some alerts were not delivered to the webhooks yet", err=True)
    if failed:
        raise typer.Exit(1)


def _print(decisions: list[LoopDecision], json_out: bool, *, listed: bool) -> bool:
    """Print one pass's decisions; True when one of them failed."""
    payload = [decision.to_dict() for decision in decisions]
    if json_out and listed:
        print_json(payload)
    elif json_out:
        import orjson

        for item in payload:
            typer.echo(orjson.dumps(item, option=orjson.OPT_SERIALIZE_NUMPY).decode())
    else:
        table(
            "loop",
            ["task", "action", "trigger", "reason", "champion", "seconds"],
            [
                [
                    d["task"],
                    d["action"],
                    d["trigger"],
                    d["reason"],
                    _versions(d["detail"]),
                    d["detail"].get("seconds", {}).get("total"),
                ]
                for d in payload
            ],
        )
    return any(decision.action == "failed" for decision in decisions)


def _versions(detail: dict[str, Any]) -> str | None:
    before, after = detail.get("champion"), detail.get("champion_after", detail.get("champion"))
    if before is None and after is None:
        return None
    if before == after:
        return f"v{before}"
    return f"{f'v{before}' if before is not None else 'none'} → v{after}"


@contextmanager
def _stopping_on_signals(stop: threading.Event) -> Iterator[None]:
    """SIGINT and SIGTERM set ``stop`` (the loop ends between steps, leases released); a
    second one interrupts at once."""

    def handler(signum: int, frame: FrameType | None) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        typer.echo("stopping after the current step (again to interrupt now)", err=True)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
