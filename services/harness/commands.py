"""`nps chaos`: a fault injected into a stack of its own, and the verdict."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

from services.harness.chaos import FAULTS
from services.harness.portals import MAX_PORTALS
from shared.logging import configure_logging
from shared.settings import get_settings

SALES = 100
CAMPAIGN = 100
WEBHOOK_ONLY = ("kill:survey", "kill:dispatch")
"""Faults of processes a run on several portals does not start."""
PORTALS_ONLY = ("kill:app",)
"""Faults of the application, which runs in application mode only."""


def _portals(count: int | None) -> int | None:
    if count is not None and not 2 <= count <= MAX_PORTALS:
        raise typer.BadParameter(
            f"expected 2 to {MAX_PORTALS} portals (application mode against several sandbox"
            f" portals; without --portals the run is on the one webhook portal), got {count}"
        )
    return count


def _check_mode(
    faults: list[str], portals: int | None, sales: int | None, campaign: int | None
) -> None:
    """What the chosen mode cannot do is refused, naming the option (exit code 2)."""
    if portals is None:
        wrong = [fault for fault in faults if fault in PORTALS_ONLY]
        if wrong:
            raise typer.BadParameter(
                f"{', '.join(wrong)}: the application runs in application mode only;"
                " add --portals 2",
                param_hint="--fault",
            )
        return
    wrong = [fault for fault in faults if fault in WEBHOOK_ONLY]
    if wrong:
        raise typer.BadParameter(
            f"{', '.join(wrong)}: a run on several portals starts no survey page or dispatch"
            " (answers only); not with --portals",
            param_hint="--fault",
        )
    given = [name for name, value in (("--sales", sales), ("--campaign", campaign)) if value]
    if given:
        raise typer.BadParameter(
            "a run on several portals creates answers only (no dispatch); not with --portals",
            param_hint=" and ".join(given),
        )


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
        int | None,
        typer.Option(
            min=0,
            max=1000,
            help=f"sales closed in the portal while the faults run [default: {SALES}; not with"
            " --portals]",
            show_default=False,
        ),
    ] = None,
    campaign: Annotated[
        int | None,
        typer.Option(
            min=0,
            max=200,
            help="contacts a campaign asks while the faults run (0: none)"
            f" [default: {CAMPAIGN}; not with --portals]",
            show_default=False,
        ),
    ] = None,
    portals: Annotated[
        int | None,
        typer.Option(
            help=f"run in application mode (NPS_MODE=app) against this many sandbox portals (2 to"
            f" {MAX_PORTALS}), each installing the application; answers (--answers in each"
            " portal) only, and the verdict per portal with `crossed`",
            callback=_portals,
            show_default=False,
        ),
    ] = None,
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

    With --portals N: N sandbox portals in application mode, each installing the application;
    the verdict per portal and `crossed` (work that landed on another portal), which must be 0.
    """
    from services.harness.chaos_run import SERVER_RESTARTS, ChaosPlan, passed, run_chaos, summary
    from services.sandbox.seed import DEMO_CONFIG

    _check_mode(faults, portals, sales, campaign)
    if portals is None:
        sales = SALES if sales is None else sales
        campaign = CAMPAIGN if campaign is None else campaign
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
        sales=sales or 0,
        campaign=campaign or 0,
        hold_s=hold_s,
        timeout_s=timeout_s,
        config=DEMO_CONFIG.resolve(),
        log_dir=log_dir.resolve(),
        portals=portals or 0,
    )
    settings = get_settings()
    configure_logging("warning", settings.log_format)
    load = (
        f"{answers} answers in each of {portals} portals (NPS_MODE=app)"
        if portals
        else f"{answers} answers · {sales} sales · campaign {campaign}"
    )
    typer.echo(
        f"nps chaos: {', '.join(faults)} · {load} · each fault held {hold_s:g} s"
        f" · logs in {log_dir}"
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
