"""`nps dlq list|show|replay`: what the pipeline gave up on, and re-running it once fixed;
`nps demo`; `nps chaos`: a fault injected into a stack of its own, and the verdict."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, TypeVar

import aio_pika
import typer
from aio_pika.abc import AbstractChannel

from services.ops import dlq
from services.ops.chaos import FAULTS
from shared.logging import configure_logging
from shared.settings import get_settings

T = TypeVar("T")

dlq_app = typer.Typer(help="Inspect and replay dead-lettered messages.", no_args_is_help=True)

QueueOption = Annotated[
    list[str] | None,
    typer.Option("--queue", "-q", help="only this queue (repeatable), e.g. crm_sync.actions"),
]
JsonOption = Annotated[bool, typer.Option("--json", help="print JSON instead of a table")]


def _with_channel(action: Callable[[AbstractChannel], Awaitable[T]]) -> T:
    async def runner() -> T:
        url = get_settings().rabbitmq_url.get_secret_value()
        try:
            connection = await aio_pika.connect(url, timeout=10)
        except Exception as exc:
            raise typer.BadParameter(
                f"cannot reach RabbitMQ ({type(exc).__name__}); is it running? see RABBITMQ_URL"
            ) from None
        async with connection:
            return await action(await connection.channel())

    return asyncio.run(runner())


@dlq_app.command("list")
def list_command(queue: QueueOption = None, as_json: JsonOption = False) -> None:
    """Dead letters per queue with their reason (they stay where they are)."""
    letters = _with_channel(lambda ch: dlq.list_dead_letters(ch, queue))
    if as_json:
        typer.echo(json.dumps([letter.summary() for letter in letters], indent=2))
        return
    if not letters:
        typer.echo("no dead letters")
        return
    for letter in letters:
        typer.echo(
            f"{letter.queue:<20} {letter.message_id:<36} attempts={letter.attempts:<2} "
            f"{letter.failed_at:<32} {letter.reason}"
        )
    typer.echo(
        f"{len(letters)} dead letter(s); `nps dlq show <id>` for one, `nps dlq replay` to re-run"
    )


@dlq_app.command("show")
def show_command(message_id: str, queue: QueueOption = None) -> None:
    """One dead letter: why it failed, its headers and its body."""
    letters = _with_channel(lambda ch: dlq.list_dead_letters(ch, queue, limit=10_000))
    match = [letter for letter in letters if letter.message_id == message_id]
    if not match:
        typer.echo(f"no dead letter with message id {message_id}", err=True)
        raise typer.Exit(code=1)
    letter = match[0]
    typer.echo(json.dumps({**letter.summary(), "body": letter.body}, indent=2, default=str))


@dlq_app.command("replay")
def replay_command(
    message_ids: Annotated[list[str] | None, typer.Argument(help="message ids to replay")] = None,
    replay_all: Annotated[bool, typer.Option("--all", help="replay every dead letter")] = False,
    queue: QueueOption = None,
) -> None:
    """Send dead letters back to the queue they failed in (after you fixed the cause)."""
    if not message_ids and not replay_all:
        raise typer.BadParameter("name message ids to replay, or pass --all")
    wanted = None if replay_all else set(message_ids or [])
    replayed = _with_channel(lambda ch: dlq.replay(ch, wanted, queue))
    for letter in replayed:
        typer.echo(f"replayed {letter.message_id} → {letter.queue}")
    missing = (wanted or set()) - {letter.message_id for letter in replayed}
    for message_id in sorted(missing):
        typer.echo(f"not found in any DLQ: {message_id}", err=True)
    typer.echo(f"{len(replayed)} message(s) replayed")
    if missing:
        raise typer.Exit(code=1)


def demo_command(
    count: Annotated[int, typer.Option(min=1, max=10_000, help="survey answers to create")] = 200,
    timeout_s: Annotated[float, typer.Option("--timeout", help="seconds to wait")] = 300.0,
    deals: Annotated[
        int,
        typer.Option(
            min=0, max=10_000, help="NPS deals to open for won sales and answer (deal_surveys)"
        ),
    ] = 60,
) -> None:
    """Create survey answers and answered NPS deals in the sandbox portal and follow them through
    the running pipeline."""
    from services.ops.demo import DemoError, run_demo

    try:
        asyncio.run(run_demo(get_settings(), count, timeout_s, echo=typer.echo, deals=deals))
    except DemoError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(code=1) from None


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
    """Inject faults into a pipeline of its own while answers flow, and print the verdict.

    The stack runs on a scratch database and vhost of the DATABASE_URL / RABBITMQ_URL servers.

    Both are dropped at the end, Ctrl-C included.

    Exit code 0: nothing lost, duplicated or overwritten, no dead letters; 1 otherwise.
    """
    from services.ops.chaos_run import SERVER_RESTARTS, ChaosPlan, passed, run_chaos, summary
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
        hold_s=hold_s,
        timeout_s=timeout_s,
        config=DEMO_CONFIG.resolve(),
        log_dir=log_dir.resolve(),
    )
    settings = get_settings()
    configure_logging("warning", settings.log_format)
    typer.echo(
        f"nps chaos: {', '.join(faults)} · {answers} answers · each fault held {hold_s:g} s · "
        f"logs in {log_dir}"
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
    app.add_typer(dlq_app, name="dlq")
    app.command("demo")(demo_command)
    app.command("chaos")(chaos_command)
