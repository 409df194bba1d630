"""The ``nps sandbox`` command."""

from pathlib import Path
from typing import Annotated

import typer

from services.sandbox.limits import Limits
from services.sandbox.main import run


def sandbox(
    *,
    seed: Annotated[
        str | None,
        typer.Option(
            help="Seed demo data from a portal YAML path, or 'demo': $NPS_CONFIG, else "
            "config/portal.yaml, else config/portal.example.yaml."
        ),
    ] = None,
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8090,
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    handler: Annotated[
        list[str] | None,
        typer.Option(help="Event handler URL for ONCRMDYNAMICITEMADD/UPDATE (repeatable)."),
    ] = None,
    state_file: Annotated[
        Path | None, typer.Option(help="JSON file that keeps the portal across restarts.")
    ] = None,
    secret: Annotated[
        str | None, typer.Option(help="Webhook secret (default: $SANDBOX_SECRET, else random).")
    ] = None,
    app_token: Annotated[
        str | None,
        typer.Option(help="Event application_token (default: $SANDBOX_APP_TOKEN, else random)."),
    ] = None,
    no_limits: Annotated[
        bool, typer.Option("--no-limits", help="No leaky bucket and no operating-time limit.")
    ] = False,
) -> None:
    """Run the sandbox Bitrix24 portal."""
    run(
        port=port,
        host=host,
        seed=seed,
        handler=handler,
        state_file=state_file,
        limits=Limits.off() if no_limits else None,
        secret=secret,
        app_token=app_token,
    )


def register(app: typer.Typer) -> None:
    app.command("sandbox")(sandbox)
