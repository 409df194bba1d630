"""`nps sweep`: run the catch-up sweep once (see `services/ingest/sweep.py`); `nps unmapped`: the
answers held because no segment maps their category (see `services/ingest/read.py`). In
application mode both name their portal with `--portal` (`shared/chosen_portal.py`)."""

from __future__ import annotations

import asyncio
import json
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Annotated

import asyncpg
import typer

from services.ingest.read import UnmappedCategory, unmapped_summary
from services.ingest.sweep import Sweeper, SweepResult
from shared.chosen_portal import PortalChoiceError, calling_portal, portal_client, reading_portal
from shared.db import create_pool, migrate
from shared.logging import configure_logging
from shared.messaging import make_broker
from shared.outbox import Outbox, OutboxRelay
from shared.portal_config import ConfigError, load_portal_config
from shared.served_portal import pinned_member_id
from shared.settings import Settings, get_settings
from shared.unreachable import SERVER_ERRORS, server_problem


def register(app: typer.Typer) -> None:
    app.command("sweep")(sweep_command)
    app.command("unmapped")(unmapped_command)


def unmapped_command(
    as_json: Annotated[bool, typer.Option("--json", help="print JSON instead of lines")] = False,
    portal: Annotated[
        str | None,
        typer.Option(
            help="the portal (member id or domain): required in application mode; in webhook"
            " mode another portal's key, default: the portal this deployment serves",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Answers held because no segment maps their category, per category."""
    settings = get_settings()
    configure_logging(settings.log_level, settings.log_format, service="ingest")
    try:
        held = asyncio.run(_unmapped(settings, portal))
    except (OSError, asyncpg.PostgresError) as exc:
        typer.echo(f"PostgreSQL (DATABASE_URL) did not answer: {exc}", err=True)
        raise typer.Exit(code=1) from None
    except ConfigError as exc:
        typer.echo(f"error: the portal YAML: {exc}", err=True)
        raise typer.Exit(code=2) from None
    except PortalChoiceError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=2) from None
    if held is None:
        typer.echo("the database has no ingest tables yet: run `nps migrate`", err=True)
        raise typer.Exit(code=1)
    if as_json:
        rows = [asdict(category) for category in held]
        typer.echo(json.dumps(rows, ensure_ascii=False, indent=2, default=str))
        return
    if not held:
        typer.echo("no answers held: every category that sent answers is mapped by a segment")
        return
    for category in held:
        typer.echo(
            f"category {category.category_id}: {category.items} answer(s) held, updated"
            f" {category.oldest:%Y-%m-%d %H:%M} .. {category.newest:%Y-%m-%d %H:%M} UTC"
        )
    total = sum(category.items for category in held)
    typer.echo(
        f"{total} answer(s) in {len(held)} category(ies) wait for a segment: add one per category"
        " to the portal YAML; ingest picks the change up and scores them once"
    )


async def _unmapped(settings: Settings, portal: str | None) -> list[UnmappedCategory] | None:
    pool = await create_pool(settings.database_url.get_secret_value(), max_size=1)
    try:
        async with pool.acquire() as conn:
            if await conn.fetchval("SELECT to_regclass('ingest_portal')") is None:
                return None  # not migrated yet
            pinned = pinned_member_id(settings.portal_config_path())
            key = await reading_portal(conn, settings, portal, pinned)
            return await unmapped_summary(conn, key)
    finally:
        await pool.close()


def sweep_command(
    since: Annotated[
        str | None,
        typer.Option(
            help="list items updated since this ISO 8601 time (e.g. 2024-07-01T00:00:00Z)"
            " instead of the stored watermark; a time without offset is UTC",
            show_default=False,
        ),
    ] = None,
    portal: Annotated[
        str | None,
        typer.Option(
            help="the portal swept (member id or domain): required in application mode; in"
            " webhook mode the portal this deployment serves",
            show_default=False,
        ),
    ] = None,
) -> None:
    """List NPS items updated since the watermark and submit those ingest never saw, once."""
    start = _parse_since(since)
    settings = get_settings()
    configure_logging(settings.log_level, settings.log_format, service="ingest-sweep")
    try:
        result, published = asyncio.run(sweep_once(settings, start, portal))
    except ConfigError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(code=1) from None
    except PortalChoiceError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(code=2) from None
    except SERVER_ERRORS as exc:
        typer.echo(f"sweep not done: {server_problem(exc)}", err=True)
        raise typer.Exit(code=1) from None
    if not result.ran:
        typer.echo("another process is sweeping right now; nothing done")
        return
    mark = result.watermark.isoformat() if result.watermark else "-"
    if result.initialised:
        typer.echo(f"first sweep: watermark set to {mark}; use --since to backfill")
        return
    typer.echo(f"listed {result.listed} item(s), submitted {result.submitted}; watermark {mark}")
    if published is None:
        typer.echo("broker unreachable: submissions wait in the outbox for a running relay")
    else:
        typer.echo(f"published {published} outbox message(s)")


def _parse_since(since: str | None) -> datetime | None:
    if since is None:
        return None
    try:
        value = datetime.fromisoformat(since)
    except ValueError:
        raise typer.BadParameter(
            f"{since!r} is not an ISO 8601 time (e.g. 2024-07-01T00:00:00Z)", param_hint="--since"
        ) from None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


async def sweep_once(
    settings: Settings, since: datetime | None, portal: str | None
) -> tuple[SweepResult, int | None]:
    """One sweep of the portal chosen (`--portal`; webhook mode: the served one), then publish
    what waits in the outbox (None when the broker is unreachable)."""
    template = load_portal_config(settings.portal_config_path())
    dsn = settings.database_url.get_secret_value()
    await migrate(dsn)
    pool = await create_pool(dsn, max_size=3)
    try:
        async with pool.acquire() as conn:
            chosen = await calling_portal(conn, settings, portal, template)
        # Application mode: that portal's items, in its rows (webhook: the served portal's).
        ref = chosen.ref if chosen.installed else None
        async with portal_client(settings, pool, chosen) as client:
            # No relay runs here: what the sweep queued is published below.
            sweeper = Sweeper(pool, Outbox(), client, chosen.config, portal=ref)
            result = await sweeper.sweep_once(since)
        return result, await _publish_outbox(settings, pool)
    finally:
        await pool.close()


async def _publish_outbox(settings: Settings, pool: asyncpg.Pool) -> int | None:
    broker = make_broker(settings.rabbitmq_url.get_secret_value())
    try:
        await broker.connect()
    except Exception:
        return None
    try:
        relay = OutboxRelay(pool, broker)
        total = 0
        while True:
            count, failed = await relay.publish_pending()
            total += count
            if failed:
                return None
            if count == 0:
                return total
    finally:
        await broker.stop()
