"""`nps dlq list|show|replay`: what the pipeline gave up on, and re-running it once fixed;
`nps demo`."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Annotated, TypeVar

import aio_pika
import aiormq
import typer
from aio_pika.abc import AbstractChannel

from services.ops import dlq
from shared.settings import get_settings
from shared.topology import CORE_QUEUES

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
            try:
                return await action(await connection.channel())
            except aiormq.exceptions.ChannelNotFoundEntity as exc:
                known = ", ".join(spec.name for spec in CORE_QUEUES)
                raise typer.BadParameter(
                    f"RabbitMQ has no such queue ({exc.args[0] if exc.args else exc});"
                    f" the pipeline's queues: {known}, or an integration's queue",
                    param_hint="--queue",
                ) from None

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
) -> None:
    """Create survey answers in the sandbox portal and follow them through the running pipeline."""
    from services.ops.demo import DemoError, run_demo

    try:
        asyncio.run(run_demo(get_settings(), count, timeout_s, echo=typer.echo))
    except DemoError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(code=1) from None


def register(app: typer.Typer) -> None:
    app.add_typer(dlq_app, name="dlq")
    app.command("demo")(demo_command)
