"""The ``nps sandbox`` command."""

from pathlib import Path
from typing import Annotated

import typer

from services.sandbox.app import SalesClosing
from services.sandbox.limits import Limits
from services.sandbox.main import run
from services.sandbox.seed import ConfigError
from services.sandbox.smtp import DEFAULT_SMTP_PORT


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
    smtp_port: Annotated[
        int,
        typer.Option(
            envvar="SANDBOX_SMTP_PORT",
            min=0,
            max=65535,
            help="Port of the local inbox's SMTP server, on --host (0: any free port).",
        ),
    ] = DEFAULT_SMTP_PORT,
    no_inbox: Annotated[
        bool, typer.Option("--no-inbox", help="No SMTP server (the /inbox pages stay empty).")
    ] = False,
    close_sales: Annotated[
        int,
        typer.Option(
            envvar="SANDBOX_CLOSE_SALES",
            min=0,
            max=1000,
            help="Close this many sales deals (won) every --every seconds; 0: none.",
        ),
    ] = 0,
    every: Annotated[
        float,
        typer.Option(
            envvar="SANDBOX_CLOSE_EVERY_S",
            min=0.1,
            help="Seconds between two --close-sales rounds.",
        ),
    ] = 60.0,
) -> None:
    """Run the sandbox Bitrix24 portal and its local inbox."""
    try:
        run(
            port=port,
            host=host,
            seed=seed,
            handler=handler,
            state_file=state_file,
            limits=Limits.off() if no_limits else None,
            secret=secret,
            app_token=app_token,
            smtp_port=None if no_inbox else smtp_port,
            closing=SalesClosing(close_sales, every) if close_sales else None,
        )
    except ConfigError as exc:
        typer.echo(f"nps sandbox: {exc}", err=True)
        raise typer.Exit(2) from None


def register(app: typer.Typer) -> None:
    app.command("sandbox")(sandbox)
