"""``niche serve``: the gateway on uvicorn (a thin shell over :func:`niche.gateway.serve`)."""

from __future__ import annotations

from typing import Annotated

import typer

from niche.cli.app import app
from niche.settings import Settings


@app.command("serve")
def serve_command(
    host: Annotated[
        str, typer.Option(help="Address to listen on (127.0.0.1 only until a key exists).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    workers: Annotated[int, typer.Option(help="Worker processes (each loads the portfolio).")] = 1,
) -> None:
    """Serve every task's champion behind one OpenAI-compatible endpoint.

    Requests whose model names a task are answered by its specialist, cascading to the
    general model below the task's confidence threshold; other models pass through to
    NICHE_GENERAL_BASE_URL. SIGTERM finishes in-flight requests and flushes traffic records.
    """
    from niche.gateway.server import serve

    serve(
        Settings(),
        host=host,
        port=port,
        workers=workers,
        echo=lambda m: typer.echo(m, err=True),
    )
