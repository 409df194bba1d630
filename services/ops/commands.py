"""`nps dlq list|show|replay|discard`: what the pipeline gave up on, re-running it once fixed,
or dropping it for good with a recorded reason; `nps demo`."""

from __future__ import annotations

import asyncio
import getpass
import json
from collections.abc import Awaitable, Callable
from typing import Annotated, TypeVar

import aio_pika
import aiormq
import asyncpg
import typer
from aio_pika.abc import AbstractChannel

from services.ops import dlq
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
PortalOption = Annotated[
    str | None,
    typer.Option(
        "--portal",
        help="only the messages of this portal: its member id (in application mode, or the"
        " domain of an installed portal): with many portals served, one client's dead letters",
        show_default=False,
    ),
]
LIST_LIMIT = 100
"""Dead letters `nps dlq list` shows per queue."""
SCAN_LIMIT = 10_000
"""Dead letters looked at per queue for one portal's, and by replay and discard."""


def _portal_key(portal: str | None) -> str | None:
    """The key of the portal `--portal` names: in application mode the installed portal it
    names by member id or domain (one line naming the installed ones otherwise), else as
    given."""
    settings = get_settings()
    if portal is None or settings.nps_mode != "app":
        return portal

    async def resolve(conn: asyncpg.Connection) -> str | None:
        from shared.chosen_portal import PortalChoiceError, reading_portal

        try:
            return await reading_portal(conn, settings, portal, None)
        except PortalChoiceError as exc:
            raise typer.BadParameter(str(exc), param_hint="--portal") from None

    return _with_database(resolve)


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


def _of(portal: str | None) -> str:
    return "" if portal is None else f" among portal {portal}'s messages"


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
    portal: PortalOption = None,
) -> None:
    """Dead letters per queue with their reason (they stay where they are)."""
    if show_discarded:
        _list_discarded(as_json)
        return
    key = _portal_key(portal)
    limit = LIST_LIMIT if key is None else SCAN_LIMIT
    found = _with_channel(lambda ch: dlq.list_dead_letters(ch, queue, limit, portal=key))
    letters = found[:LIST_LIMIT] if key is not None else found
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
    portal: PortalOption = None,
) -> None:
    """Send dead letters back to the queue they failed in (after you fixed the cause)."""
    if not message_ids and not replay_all:
        raise typer.BadParameter("name message ids to replay, or pass --all")
    wanted = None if replay_all else set(message_ids or [])
    key = _portal_key(portal)
    replayed = _with_channel(lambda ch: dlq.replay(ch, wanted, queue, portal=key))
    for letter in replayed:
        typer.echo(f"replayed {letter.message_id} → {letter.queue}")
    missing = (wanted or set()) - {letter.message_id for letter in replayed}
    for message_id in sorted(missing):
        typer.echo(f"not found in any DLQ{_of(portal)}: {message_id}", err=True)
    typer.echo(f"{len(replayed)} message(s) replayed")
    if missing:
        raise typer.Exit(code=1)


@dlq_app.command("discard")
def discard_command(
    *,
    message_ids: Annotated[list[str] | None, typer.Argument(help="message ids to discard")] = None,
    discard_all: Annotated[bool, typer.Option("--all", help="discard every dead letter")] = False,
    reason: Annotated[
        str, typer.Option("--reason", help="why they are dropped (kept with the record)")
    ] = "",
    by: Annotated[
        str | None, typer.Option("--by", help="who discards (default: your OS user name)")
    ] = None,
    queue: QueueOption = None,
    portal: PortalOption = None,
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
    key = _portal_key(portal)

    async def drop(conn: asyncpg.Connection) -> list[dlq.DeadLetter]:
        return await _with_channel_async(
            lambda ch: dlq.discard(
                ch, conn, reason=reason, by=who, message_ids=wanted, queues=queue, portal=key
            )
        )

    dropped = _with_database(drop)
    for letter in dropped:
        typer.echo(f"discarded {letter.message_id} from {letter.queue}")
    missing = (wanted or set()) - {letter.message_id for letter in dropped}
    for message_id in sorted(missing):
        typer.echo(f"not found in any DLQ{_of(portal)}: {message_id}", err=True)
    typer.echo(
        f"{len(dropped)} message(s) discarded by {who}; `nps dlq list --discarded` shows them"
    )
    if missing:
        raise typer.Exit(code=1)


def demo_command(
    count: Annotated[int, typer.Option(min=1, max=10_000, help="survey answers to create")] = 200,
    timeout_s: Annotated[float, typer.Option("--timeout", help="seconds to wait")] = 300.0,
    deals: Annotated[
        int | None,
        typer.Option(
            min=0,
            max=10_000,
            help="NPS deals to open for won sales and answer by hand (deal_surveys); default: 60,"
            " none when dispatch asks the sandbox's won sales (it opens the NPS deals then)",
            show_default=False,
        ),
    ] = None,
    sales: Annotated[
        int,
        typer.Option(
            min=0,
            max=50,
            help="with dispatch.sales: sales to close, followed through dispatch, the inbox and"
            " the survey page; 0: leave dispatch out",
        ),
    ] = 5,
) -> None:
    """Create survey answers and answered NPS deals in the sandbox portal and follow them through
    the running pipeline; with dispatch configured, close sales and follow their surveys from the
    e-mail to the answer in the portal."""
    from services.ops.demo import DemoError, run_demo

    try:
        asyncio.run(
            run_demo(get_settings(), count, timeout_s, echo=typer.echo, deals=deals, sales=sales)
        )
    except DemoError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(code=1) from None


def register(app: typer.Typer) -> None:
    app.add_typer(dlq_app, name="dlq")
    app.command("demo")(demo_command)
