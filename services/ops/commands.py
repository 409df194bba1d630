"""`nps dlq list|show|replay|discard`: what the pipeline gave up on, re-running it once fixed,
or dropping it for good with a recorded reason;
`nps demo`; `nps chaos`: a fault injected into a stack of its own, and the verdict."""

from __future__ import annotations

import asyncio
import getpass
import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, TypeVar

import aio_pika
import aiormq
import asyncpg
import typer
from aio_pika.abc import AbstractChannel

from services.ops import dlq
from services.ops.chaos import FAULTS
from shared.logging import configure_logging
from shared.settings import get_settings
from shared.topology import CORE_QUEUES

T = TypeVar("T")

dlq_app = typer.Typer(
    help="Inspect, replay and discard dead-lettered messages.", no_args_is_help=True
)

QueueOption = Annotated[
    list[str] | None,
    typer.Option("--queue", "-q", help="only this queue (repeatable), e.g. crm_sync.actions"),
]
JsonOption = Annotated[bool, typer.Option("--json", help="print JSON instead of a table")]


async def _with_channel_async(action: Callable[[AbstractChannel], Awaitable[T]]) -> T:
    url = get_settings().rabbitmq_url.get_secret_value()
    try:
        connection = await aio_pika.connect(url, timeout=10)
    except Exception as exc:
        raise typer.BadParameter(
            f"cannot reach RabbitMQ ({type(exc).__name__}); is it running? see RABBITMQ_URL"
        ) from None
    async with connection:
        try:
            return await action(await connection.channel())
        except aiormq.exceptions.ChannelNotFoundEntity as exc:
            known = ", ".join(spec.name for spec in CORE_QUEUES)
            raise typer.BadParameter(
                f"RabbitMQ has no such queue ({exc.args[0] if exc.args else exc});"
                f" the pipeline's queues: {known}, or an integration's queue",
                param_hint="--queue",
            ) from None


def _with_channel(action: Callable[[AbstractChannel], Awaitable[T]]) -> T:
    return asyncio.run(_with_channel_async(action))


def _with_database(action: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
    async def runner() -> T:
        try:
            conn = await asyncpg.connect(get_settings().database_url.get_secret_value(), timeout=10)
        except Exception as exc:
            raise typer.BadParameter(
                f"cannot reach PostgreSQL ({type(exc).__name__}); is it running? see DATABASE_URL"
            ) from None
        try:
            return await action(conn)
        except asyncpg.UndefinedTableError:
            raise typer.BadParameter(
                "the discard record's table is missing: run `nps migrate` first"
            ) from None
        finally:
            await conn.close()

    return asyncio.run(runner())


def _list_discarded(as_json: bool) -> None:
    records = _with_database(dlq.discarded)
    if as_json:
        typer.echo(json.dumps([record.summary() for record in records], indent=2))
        return
    if not records:
        typer.echo("no discarded dead letters")
        return
    for record in records:
        typer.echo(
            f"{record.discarded_at:%Y-%m-%d %H:%M:%S%z} {record.discarded_by:<12} "
            f"{record.queue:<20} {record.message_id:<36} {record.reason}"
        )
    typer.echo(f"{len(records)} discarded dead letter(s), newest first")


@dlq_app.command("list")
def list_command(
    queue: QueueOption = None,
    as_json: JsonOption = False,
    show_discarded: Annotated[
        bool,
        typer.Option("--discarded", help="the discarded ones instead: who, when and why"),
    ] = False,
) -> None:
    """Dead letters per queue with their reason (they stay where they are)."""
    if show_discarded:
        _list_discarded(as_json)
        return
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


@dlq_app.command("discard")
def discard_command(
    message_ids: Annotated[list[str] | None, typer.Argument(help="message ids to discard")] = None,
    discard_all: Annotated[bool, typer.Option("--all", help="discard every dead letter")] = False,
    reason: Annotated[
        str, typer.Option("--reason", help="why they are dropped (kept with the record)")
    ] = "",
    by: Annotated[
        str | None, typer.Option("--by", help="who discards (default: your OS user name)")
    ] = None,
    queue: QueueOption = None,
) -> None:
    """Drop dead letters for good; each is recorded first (who, when, why, and the message)."""
    if not message_ids and not discard_all:
        raise typer.BadParameter("name message ids to discard, or pass --all")
    if not reason.strip():
        raise typer.BadParameter("--reason is required: why these messages are dropped")
    who = by if by is not None else getpass.getuser()
    if not who.strip():
        raise typer.BadParameter("--by must name who discards")
    wanted = None if discard_all else set(message_ids or [])

    async def drop(conn: asyncpg.Connection) -> list[dlq.DeadLetter]:
        return await _with_channel_async(
            lambda ch: dlq.discard(
                ch, conn, reason=reason, by=who, message_ids=wanted, queues=queue
            )
        )

    dropped = _with_database(drop)
    for letter in dropped:
        typer.echo(f"discarded {letter.message_id} from {letter.queue}")
    missing = (wanted or set()) - {letter.message_id for letter in dropped}
    for message_id in sorted(missing):
        typer.echo(f"not found in any DLQ: {message_id}", err=True)
    typer.echo(
        f"{len(dropped)} message(s) discarded by {who}; `nps dlq list --discarded` shows them"
    )
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
