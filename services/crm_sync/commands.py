"""CLI of crm_sync: `nps conflicts`, `nps audit <contact>`, `nps undo <write-id>` (or
`--answer <answer-id>`).

All three keep to the portal the deployment serves (`portal.member_id`, else the portal ingest
learned from its first event) and name it; `--portal` shows another portal's records. In
application mode each names its portal with `--portal` (an installed portal's member id or
domain, `shared/chosen_portal.py`): `nps undo` restores on that portal only, writes made there."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

import asyncpg
import typer

from services.crm_sync.policy import is_empty
from services.crm_sync.read import conflict_count, contact_writes, list_conflicts
from services.crm_sync.undo import UndoResult, undo_answer, undo_write
from shared.bitrix24 import Bitrix24Error
from shared.chosen_portal import PortalChoiceError, calling_portal, portal_client, reading_portal
from shared.db import Conn, create_pool
from shared.logging import configure_logging
from shared.portal_config import ConfigError, PortalConfig, load_portal_config
from shared.settings import Settings, get_settings

T = TypeVar("T")

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
PortalOption = Annotated[
    str | None,
    typer.Option(
        "--portal",
        help="The portal (its member id or domain); required in application mode; in webhook"
        " mode another portal's records, default: the portal this deployment serves.",
        show_default=False,
    ),
]
UNKNOWN_PORTAL = (
    "the portal this deployment serves is not known yet: no event has arrived and"
    " portal.member_id is not set in the portal YAML (`nps config check --portal`)"
)


def _settings() -> Settings:
    settings = get_settings()
    configure_logging(settings.log_level, settings.log_format)
    return settings


def _config(settings: Settings) -> PortalConfig:
    try:
        return load_portal_config(settings.portal_config_path())
    except ConfigError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(code=1) from None


async def _portal_key(
    conn: Conn, settings: Settings, config: PortalConfig, chosen: str | None
) -> str:
    """The portal read (`shared/chosen_portal.py`): exit 1 while the served one is unknown."""
    key = await reading_portal(conn, settings, chosen, config.portal.member_id)
    if key is None:
        typer.echo(UNKNOWN_PORTAL, err=True)
        raise typer.Exit(code=1)
    return key


def _with_pool(settings: Settings, work: Callable[[asyncpg.Pool], Awaitable[T]]) -> T:
    async def main() -> T:
        pool = await create_pool(settings.database_url.get_secret_value(), max_size=2)
        try:
            return await work(pool)
        finally:
            await pool.close()

    try:
        return asyncio.run(main())
    except (PortalChoiceError, ConfigError) as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(code=2) from None
    except asyncpg.UndefinedTableError:
        typer.echo("the database has no crm_sync tables yet: run `nps migrate`", err=True)
        raise typer.Exit(code=1) from None
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        typer.echo(
            f"cannot use PostgreSQL ({type(exc).__name__}: {exc}); see DATABASE_URL", err=True
        )
        raise typer.Exit(code=1) from None


def _value(value: Any) -> str:
    if is_empty(value):
        return "(empty)"
    if isinstance(value, list):
        return " | ".join(str(item) for item in value)
    return str(value)


def _print_json(rows: list[dict[str, Any]]) -> None:
    typer.echo(json.dumps(rows, ensure_ascii=False, indent=2, default=str))


def conflicts(
    as_json: JsonOption = False,
    contact: Annotated[
        int | None, typer.Option("--contact", help="Only this contact.", show_default=False)
    ] = None,
    portal: PortalOption = None,
    limit: Annotated[int, typer.Option(help="At most this many, newest first.", min=1)] = 500,
) -> None:
    """Values b24-nps left alone: legacy or hand-edited contact fields it did not overwrite, and
    NPS deals a person had moved (field D_<deal>.STAGE_ID)."""
    settings = _settings()
    config = _config(settings)
    key, rows, total = _with_pool(
        settings,
        lambda pool: _fetch_conflicts(
            pool, settings, config, contact=contact, portal=portal, limit=limit
        ),
    )
    if as_json:
        _print_json([row.to_json() for row in rows])
        return
    if not rows:
        typer.echo(f"no conflicts on portal {key}: b24-nps has not had to leave any value alone")
        return
    typer.echo(f"portal {key}")
    for row in rows:
        typer.echo(
            f"#{row.id}  {row.created_at:%Y-%m-%d %H:%M}  contact {row.contact_id}  {row.field}  "
            f"[{row.reason}]  kept {_value(row.current)!r}, not written {_value(row.proposed)!r}"
            f"  (answer {row.answer_id})"
        )
    if len(rows) < total:
        typer.echo(f"showing {len(rows)} of {total} conflict(s), newest first (see --limit)")
    else:
        typer.echo(f"{total} conflict(s)")


async def _fetch_conflicts(
    pool: asyncpg.Pool,
    settings: Settings,
    config: PortalConfig,
    *,
    contact: int | None,
    portal: str | None,
    limit: int,
) -> tuple[str, list[Any], int]:
    async with pool.acquire() as conn:
        key = await _portal_key(conn, settings, config, portal)
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            rows = await list_conflicts(conn, portal=key, contact_id=contact, limit=limit)
            total = await conflict_count(conn, portal=key, contact_id=contact)
            return key, rows, len(rows) if total is None else total


def audit(
    contact: Annotated[int, typer.Argument(help="Contact id.")],
    as_json: JsonOption = False,
    portal: PortalOption = None,
) -> None:
    """Every value b24-nps wrote into a contact's fields, with what was there before."""
    settings = _settings()
    config = _config(settings)
    key, rows = _with_pool(
        settings, lambda pool: _fetch_writes(pool, settings, config, contact, portal)
    )
    if as_json:
        _print_json([row.to_json() for row in rows])
        return
    if not rows:
        typer.echo(f"b24-nps has written nothing into contact {contact} on portal {key}")
        return
    typer.echo(f"contact {contact} on portal {key}")
    for row in rows:
        note = f"  (undone by #{row.undone_by})" if row.undone_by is not None else ""
        if row.undo_of is not None:
            note = f"  (undoes #{row.undo_of})"
        typer.echo(
            f"#{row.id}  {row.written_at:%Y-%m-%d %H:%M:%S}  {row.field}  {row.kind}: "
            f"{_value(row.before)!r} → {_value(row.after)!r}{note}  (answer {row.answer_id})"
        )


async def _fetch_writes(
    pool: asyncpg.Pool, settings: Settings, config: PortalConfig, contact: int, portal: str | None
) -> tuple[str, list[Any]]:
    async with pool.acquire() as conn:
        key = await _portal_key(conn, settings, config, portal)
        return key, await contact_writes(conn, contact, portal=key)


def undo(
    write_id: Annotated[
        int | None,
        typer.Argument(help="The write's id (see `nps audit`).", show_default=False),
    ] = None,
    answer: Annotated[
        str | None,
        typer.Option(
            "--answer",
            help="Undo every field this answer wrote (its id: see `nps audit`, `nps conflicts`).",
            show_default=False,
        ),
    ] = None,
    portal: Annotated[
        str | None,
        typer.Option(
            "--portal",
            help="The portal restored (its member id or domain): required in application mode;"
            " in webhook mode the portal this deployment serves.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Restore a contact field to its value before write WRITE_ID, if it still holds ours; or
    with --answer, every field one answer wrote, each with the same check (writes made on the
    portal this deployment serves only; in application mode, on the --portal named)."""
    if (write_id is None) == (answer is None):
        raise typer.BadParameter("name a write id or pass --answer <answer-id>, not both")
    settings = _settings()
    config = _config(settings)

    async def work(pool: asyncpg.Pool) -> list[UndoResult]:
        async with pool.acquire() as conn:
            chosen = await calling_portal(conn, settings, portal, config)
        if chosen.key is None:
            typer.echo(UNKNOWN_PORTAL, err=True)
            raise typer.Exit(code=1)
        key = chosen.key
        async with portal_client(settings, pool, chosen) as client:
            if answer is not None:
                return await undo_answer(pool, client, answer, key)
            assert write_id is not None
            return [await undo_write(pool, client, write_id, key)]

    try:
        results = _with_pool(settings, work)
    except Bitrix24Error as exc:
        typer.echo(f"the portal refused: {exc}", err=True)
        raise typer.Exit(code=1) from None
    for result in results:
        typer.echo(result.message, err=not result.restored)
    if not all(result.restored for result in results):
        raise typer.Exit(code=1)


def register(app: typer.Typer) -> None:
    app.command("conflicts")(conflicts)
    app.command("audit")(audit)
    app.command("undo")(undo)
