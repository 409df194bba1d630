"""`nps chaos`: a fault injected into a stack of its own, and the verdict."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

from services.harness.chaos import FAULTS
from shared.logging import configure_logging
from shared.settings import get_settings


def _known_faults(faults: list[str]) -> list[str]:
    unknown = [fault for fault in faults if fault not in FAULTS]
    if unknown:
        raise typer.BadParameter(
            f"unknown fault {', '.join(unknown)}; choose from {', '.join(FAULTS)}"
        )
    return faults


def chaos_command(
    *,
    faults: Annotated[
        list[str],
        typer.Option(
            "--fault",
            help=f"fault to inject (repeatable: injected one after the other): {', '.join(FAULTS)}",
            callback=_known_faults,
            show_default=False,
        ),
    ],
    answers: Annotated[
        int, typer.Option(min=1, help="survey answers created while the faults run")
    ] = 2000,
    sales: Annotated[
        int,
        typer.Option(min=0, max=1000, help="sales closed in the portal while the faults run"),
    ] = 100,
    campaign: Annotated[
        int,
        typer.Option(
            min=0, max=200, help="contacts a campaign asks while the faults run (0: none)"
        ),
    ] = 100,
    hold_s: Annotated[float, typer.Option("--hold", min=0, help="seconds each fault lasts")] = 5.0,
    timeout_s: Annotated[
        float, typer.Option("--timeout", min=1, help="seconds the pipeline gets to settle")
    ] = 600.0,
    logs: Annotated[
        Path | None,
        typer.Option(
            help="directory for each process's log and verdict.json"
            " [default: artifacts/chaos/<UTC time>]",
            show_default=False,
        ),
    ] = None,
    yes: Annotated[
        bool,
        typer.Option(
            "--yes",
            help="run broker-restart / db-restart, which restart the local RabbitMQ / PostgreSQL"
            " under every client of it",
        ),
    ] = False,
) -> None:
    """Inject faults into a pipeline of its own while answers flow, sales close and a campaign
    asks, and print the verdict.

    The stack runs on a scratch database and vhost of the DATABASE_URL / RABBITMQ_URL servers.

    Both are dropped at the end, Ctrl-C included.

    Exit code 0: nothing lost, duplicated or overwritten, no dead letters; 1 otherwise.

    An e-mail sent twice in the one case dispatch documents is counted apart (resent).
    """
    from services.harness.chaos_run import SERVER_RESTARTS, ChaosPlan, passed, run_chaos, summary
    from services.sandbox.seed import DEMO_CONFIG

    for fault in dict.fromkeys(faults):
        if fault in SERVER_RESTARTS:
            typer.echo(
                f"warning: {fault} {SERVER_RESTARTS[fault]}; every client of that server,"
                " a running `make run` included, loses its connections",
                err=True,
            )
            if not yes:
                typer.echo(f"pass --yes to run {fault}", err=True)
                raise typer.Exit(code=2)
    if not DEMO_CONFIG.is_file():
        typer.echo(f"{DEMO_CONFIG} not found: run nps chaos in the b24-nps directory", err=True)
        raise typer.Exit(code=1)
    log_dir = logs or Path("artifacts/chaos") / datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    plan = ChaosPlan(
        faults=tuple(faults),
        answers=answers,
        sales=sales,
        campaign=campaign,
        hold_s=hold_s,
        timeout_s=timeout_s,
        config=DEMO_CONFIG.resolve(),
        log_dir=log_dir.resolve(),
    )
    settings = get_settings()
    configure_logging("warning", settings.log_format)
    typer.echo(
        f"nps chaos: {', '.join(faults)} · {answers} answers · {sales} sales · campaign"
        f" {campaign} · each fault held {hold_s:g} s · logs in {log_dir}"
    )
    try:
        verdict = asyncio.run(
            run_chaos(
                plan,
                settings.database_url.get_secret_value(),
                settings.rabbitmq_url.get_secret_value(),
                typer.echo,
            )
        )
    except (KeyboardInterrupt, asyncio.CancelledError):
        typer.echo("interrupted: processes stopped, scratch database and vhost dropped", err=True)
        raise typer.Exit(code=130) from None
    except (RuntimeError, OSError) as exc:
        typer.echo(f"chaos run failed: {exc}\nlogs: {log_dir}", err=True)
        raise typer.Exit(code=1) from None
    for line in summary(verdict):
        typer.echo(line)
    typer.echo(f"logs: {log_dir}")
    if not passed(verdict):
        raise typer.Exit(code=1)


def register(app: typer.Typer) -> None:
    app.command("chaos")(chaos_command)
