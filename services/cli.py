"""`nps`: the one command-line entry point (DESIGN §8).

Service packages add their own commands through a `commands.py` module exposing
`register(app: typer.Typer) -> None`; this file only wires the common ones.
"""

from __future__ import annotations

import asyncio
import importlib
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from shared.logging import configure_logging
from shared.settings import Settings, get_settings

SERVICES: tuple[str, ...] = ("ingest", "scoring", "router", "crm_sync")
COMMAND_MODULES: tuple[str, ...] = (
    "services.sandbox.commands",
    "services.ingest.commands",
    "services.scoring.commands",
    "services.router.commands",
    "services.crm_sync.commands",
    "services.ops.commands",
)

app = typer.Typer(
    help="b24-nps: close the NPS feedback loop on a Bitrix24 portal.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
config_app = typer.Typer(help="Inspect and validate the portal YAML.", no_args_is_help=True)
app.add_typer(config_app, name="config")


def _settings() -> Settings:
    settings = get_settings()
    configure_logging(settings.log_level, settings.log_format)
    return settings


def _runner(target: str) -> Callable[[Settings], None]:
    """`run(settings)` of a core service, or of an integrator's module given by dotted path."""
    module_name = f"services.{target}.main" if target in SERVICES else target
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        known = ", ".join((*SERVICES, "all"))
        raise typer.BadParameter(
            f"no service or module {target!r} ({exc}); services: {known}, or a module path"
        ) from None
    run: Any = getattr(module, "run", None)
    if not callable(run):
        raise typer.BadParameter(f"module {module_name} has no run(settings) function")
    return run  # type: ignore[no-any-return]


def _run_all(services: tuple[str, ...]) -> None:
    """Every service in its own process; Ctrl-C or SIGTERM stops them all together."""
    procs = {
        name: subprocess.Popen([sys.executable, "-m", "services.cli", "run", name])  # noqa: S603
        for name in services
    }
    stopping = False

    def stop(*_args: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    typer.echo(f"started {', '.join(f'{n} (pid {p.pid})' for n, p in procs.items())}; Ctrl-C stops")
    try:
        while not stopping:
            for name, proc in procs.items():
                if proc.poll() is not None:
                    typer.echo(
                        f"{name} exited with {proc.returncode}; stopping the others", err=True
                    )
                    stopping = True
            time.sleep(0.3)
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 30
        for proc in procs.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()


@app.command()
def run(
    service: Annotated[
        str, typer.Argument(help="ingest, scoring, router, crm_sync, all, or a module")
    ],
) -> None:
    """Run one service (or `all`, each as its own process)."""
    if service == "all":
        _run_all(SERVICES)
        return
    runner = _runner(service)
    settings = _settings()
    runner(settings)


@app.command(name="migrate")
def migrate_command() -> None:
    """Create the database if missing, apply migrations and declare the RabbitMQ topology."""
    from shared.db import migrate
    from shared.topology import declare

    settings = _settings()
    applied = asyncio.run(migrate(settings.database_url.get_secret_value()))
    typer.echo(
        f"database: {len(applied)} migration(s) applied"
        + (f" ({', '.join(applied)})" if applied else "")
    )
    asyncio.run(declare(settings.rabbitmq_url.get_secret_value()))
    typer.echo("rabbitmq: topology declared")


@config_app.command("check")
def config_check(
    path: Annotated[
        Path | None, typer.Argument(help="portal YAML (default: NPS_CONFIG)", show_default=False)
    ] = None,
) -> None:
    """Validate the portal YAML; names every bad key and what was expected."""
    from shared.portal_config import ConfigError, load_portal_config

    target = path or get_settings().nps_config
    try:
        config = load_portal_config(target)
    except ConfigError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(code=1) from None
    segments = ", ".join(f"{s.category_id} ({s.kind})" for s in config.survey.segments)
    typer.echo(f"{target}: OK — smart process {config.survey.entity_type_id}, segments {segments}")


def _register_service_commands() -> None:
    for module_name in COMMAND_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if not exc.name or not module_name.startswith(exc.name):
                raise
            continue
        module.register(app)


_register_service_commands()

if __name__ == "__main__":
    app()
