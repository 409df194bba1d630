"""The ``nps sandbox`` command."""

import json
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError

from services.sandbox.app import SalesClosing
from services.sandbox.limits import Limits
from services.sandbox.main import run
from services.sandbox.oauth import OAuthSettings
from services.sandbox.oauth_server import DEFAULT_SCOPES, AppRegistration
from services.sandbox.portals import NAME, NAME_RULE, PortalError
from services.sandbox.seed import ConfigError
from services.sandbox.smtp import DEFAULT_SMTP_PORT

APP_URL_OPTIONS = {
    "install_url": "--app-install-url",
    "handler_url": "--app-handler-url",
    "callback_url": "--app-callback-url",
    "scope": "--app-scope",
}


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
    portal: Annotated[
        list[str] | None,
        typer.Option(
            "--portal",
            envvar="SANDBOX_PORTALS",
            help="A named portal under /p/NAME/, seeded like the default one (repeatable).",
        ),
    ] = None,
    app: Annotated[
        str | None,
        typer.Option(
            envvar="SANDBOX_APP",
            help="The registered application of the OAuth server, as CLIENT_ID:CLIENT_SECRET.",
        ),
    ] = None,
    app_install_url: Annotated[
        str | None,
        typer.Option(envvar="SANDBOX_APP_INSTALL_URL", help="The application's install page."),
    ] = None,
    app_handler_url: Annotated[
        str | None,
        typer.Option(
            envvar="SANDBOX_APP_HANDLER_URL", help="The application's page (and redirect_uri)."
        ),
    ] = None,
    app_callback_url: Annotated[
        str | None,
        typer.Option(envvar="SANDBOX_APP_CALLBACK_URL", help="Where ONAPPINSTALL is POSTed."),
    ] = None,
    app_scope: Annotated[
        str,
        typer.Option(envvar="SANDBOX_APP_SCOPE", help="The application's scopes, comma-separated."),
    ] = ",".join(DEFAULT_SCOPES),
    access_ttl: Annotated[
        float,
        typer.Option(
            envvar="SANDBOX_ACCESS_TTL_S", min=0.001, help="Seconds an access token lives."
        ),
    ] = 3600.0,
    public_url: Annotated[
        str | None,
        typer.Option(
            envvar="SANDBOX_PUBLIC_URL",
            help="Where the sandbox is reached (default http://HOST:PORT): its endpoints in "
            "tokens and events.",
        ),
    ] = None,
) -> None:
    """Run the sandbox Bitrix24 portal and its local inbox."""
    portals = _portal_names(portal or [])
    registration = _registration(
        app,
        install_url=app_install_url,
        handler_url=app_handler_url,
        callback_url=app_callback_url,
        scope=app_scope,
    )
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
            portals=portals,
            app=registration,
            oauth=OAuthSettings(access_ttl_s=access_ttl),
            public_url=public_url,
        )
    except (ConfigError, PortalError) as exc:
        typer.echo(f"nps sandbox: {exc}", err=True)
        raise typer.Exit(2) from None


def _portal_names(names: list[str]) -> list[str]:
    """``--portal`` values (also comma-separated), each a valid name, each once."""
    chosen: list[str] = []
    for name in (part.strip() for value in names for part in value.split(",")):
        if not name:
            continue
        if not NAME.match(name):
            raise typer.BadParameter(f"{name!r}: expected {NAME_RULE}", param_hint="--portal")
        if name in chosen:
            raise typer.BadParameter(f"{name!r} given twice", param_hint="--portal")
        chosen.append(name)
    return chosen


def _registration(
    app: str | None,
    *,
    install_url: str | None,
    handler_url: str | None,
    callback_url: str | None,
    scope: str,
) -> AppRegistration | None:
    """The application from ``--app CLIENT_ID:SECRET`` and its URLs."""
    urls = {"install_url": install_url, "handler_url": handler_url, "callback_url": callback_url}
    if app is None:
        given = [APP_URL_OPTIONS[key] for key, value in urls.items() if value]
        if given:
            raise typer.BadParameter(f"{', '.join(given)} need --app", param_hint="--app")
        return None
    client_id, colon, secret = app.partition(":")
    if not colon or not client_id.strip() or not secret.strip():
        raise typer.BadParameter("expected CLIENT_ID:CLIENT_SECRET", param_hint="--app")
    try:
        return AppRegistration(
            client_id=client_id.strip(),
            client_secret=secret.strip(),
            scope=[part.strip() for part in scope.split(",") if part.strip()],
            **urls,
        )
    except ValidationError as exc:
        problem = json.loads(exc.json())[0]
        field = str(problem["loc"][0]) if problem["loc"] else "app"
        hint = APP_URL_OPTIONS.get(field, "--app")
        raise typer.BadParameter(problem["msg"], param_hint=hint) from None


def register(app: typer.Typer) -> None:
    app.command("sandbox")(sandbox)
