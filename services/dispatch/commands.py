"""`nps survey list` (the register) and `nps survey campaign` (ask a set of contacts, with a dry
run that says how many would be asked and why the others would not), docs/dispatch.md. In
application mode both name their portal with `--portal` (`shared/chosen_portal.py`): a campaign
asks that portal's contacts with that portal's configuration."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import asyncpg
import typer

from services.dispatch import read, store
from services.dispatch.dispatcher import Dispatcher
from services.dispatch.mailer import Mailer
from services.dispatch.plan import SKIP_TEXTS, CampaignContact, Wanted, requests_for_campaign
from services.dispatch.settings import DispatchSettings
from shared.bitrix24 import Bitrix24Client, Bitrix24Error, Command
from shared.chosen_portal import (
    ChosenPortal,
    PortalChoiceError,
    calling_portal,
    portal_client,
    reading_portal,
)
from shared.db import Conn, create_pool
from shared.events import derived_id
from shared.outbox import Outbox
from shared.portal_config import ConfigError, PortalConfig, load_portal_config
from shared.settings import Settings, get_settings
from shared.unreachable import SERVER_ERRORS, server_problem

CHUNK = 100
"""Contacts asked per transaction of a real campaign (its progress bar's step)."""


class _DryRunDoneError(Exception):
    """Raised at the end of a dry run to roll its transaction back."""


class CampaignError(Exception):
    """A campaign that cannot run; the message says why."""


def _config(settings: Settings) -> PortalConfig:
    try:
        return load_portal_config(settings.portal_config_path())
    except ConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc


def _json_default(value: object) -> str:
    return value.isoformat() if isinstance(value, datetime) else str(value)


def list_requests(  # noqa: PLR0917 - one parameter per option, as typer reads them
    state: Annotated[str | None, typer.Option(help="only this state (sent, unanswered, …)")] = None,
    survey: Annotated[str | None, typer.Option(help="only this survey (its name)")] = None,
    contact: Annotated[int | None, typer.Option(help="only this contact id")] = None,
    since: Annotated[
        datetime | None, typer.Option(help="created at or after (YYYY-MM-DD)", formats=["%Y-%m-%d"])
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=100_000)] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines")] = False,
    portal: Annotated[
        str | None,
        typer.Option(
            "--portal",
            help="the portal (member id or domain): required in application mode; in webhook"
            " mode another portal's register, default: the portal this deployment serves",
            show_default=False,
        ),
    ] = None,
) -> None:
    """The register: survey requests b24-nps sent or skipped, newest first."""
    settings = get_settings()
    where = read.RegisterFilter(
        state=state,
        survey=survey,
        contact_id=contact,
        since=None if since is None else since.replace(tzinfo=UTC),
        limit=limit,
    )

    # The portal chosen, else the served portal's register (`portal.member_id`, else the
    # portal ingest learned).
    pinned = _config(settings).portal.member_id if settings.portal_config_path().exists() else None

    async def fetch() -> tuple[list[dict[str, Any]], dict[str, int]]:
        conn = await asyncpg.connect(settings.database_url.get_secret_value(), timeout=10)
        try:
            served = await reading_portal(conn, settings, portal, pinned)
            mine = replace(where, portal=served)
            return await read.requests(conn, mine), await read.state_counts(conn, served)
        finally:
            await conn.close()

    try:
        rows, counts = asyncio.run(fetch())
    except PortalChoiceError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    except SERVER_ERRORS as exc:
        typer.echo(f"error: {server_problem(exc)}", err=True)
        raise typer.Exit(1) from exc
    if as_json:
        for row in rows:
            typer.echo(json.dumps(row, default=_json_default, ensure_ascii=False))
        return
    if not rows:
        typer.echo("no survey requests match")
    else:
        typer.echo(
            f"{'created (UTC)':<17} {'survey':<18} {'contact':>8} {'channel':<7} {'state':<10}"
            f" {'sends':>5} {'deal':>7}  reason"
        )
        for row in rows:
            deal = row["nps_deal_id"] or row["sale_deal_id"] or ""
            typer.echo(
                f"{row['created_at']:%Y-%m-%d %H:%M} {row['survey'][:18]:<18}"
                f" {row['contact_id']:>8} {row['channel']:<7} {row['state']:<10}"
                f" {row['sends']:>5} {deal!s:>7}  {row['reason'] or ''}"
            )
    typer.echo(
        "all requests: " + (", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "none")
    )


def _csv_contacts(path: Path) -> list[int]:
    """Contact ids from a CSV: one per line, or a column named id, ID or contact_id."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise CampaignError(f"--csv {path}: cannot read it ({exc.strerror})") from exc
    rows = list(csv.reader(text.splitlines()))
    if not rows:
        raise CampaignError(f"--csv {path}: the file is empty; expected contact ids")
    header = [cell.strip().lower() for cell in rows[0]]
    column = next((header.index(name) for name in ("contact_id", "id") if name in header), None)
    body = rows[1:] if column is not None else rows
    column = column or 0
    ids = []
    for number, row in enumerate(body, start=2 if rows is not body else 1):
        if not row or not "".join(row).strip():
            continue
        cell = row[column].strip() if column < len(row) else ""
        if not cell.isdigit() or int(cell) == 0:
            raise CampaignError(
                f"--csv {path}, line {number}: {cell!r} is no contact id (a positive integer)"
            )
        ids.append(int(cell))
    return ids


def _parse_filter(items: Sequence[str]) -> dict[str, str]:
    parsed = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise CampaignError(f"--filter {item!r}: expected FIELD=VALUE, e.g. TYPE_ID=CLIENT")
        parsed[key.strip()] = value.strip()
    return parsed


async def _contacts_by_id(client: Bitrix24Client, ids: list[int]) -> list[CampaignContact]:
    """The contacts of `ids` the portal has (with their responsible and company), in order."""
    unique = list(dict.fromkeys(ids))
    commands = [Command(f"c{i}", "crm.contact.get", {"id": i}) for i in unique]
    response = await client.batch(commands)
    found = []
    for contact in unique:
        result = response.results.get(f"c{contact}")
        if isinstance(result, dict):
            found.append(_campaign_contact(result))
    return found


def _campaign_contact(record: dict[str, Any]) -> CampaignContact:
    def number(value: Any) -> int | None:
        return int(value) if str(value or "").isdigit() and int(value) > 0 else None

    return CampaignContact(
        contact_id=int(record["ID"]),
        company_id=number(record.get("COMPANY_ID")),
        responsible_id=number(record.get("ASSIGNED_BY_ID")),
    )


async def _resolve(
    client: Bitrix24Client,
    config: PortalConfig,
    *,
    csv_path: Path | None,
    filters: dict[str, str] | None,
    respondents: str | None,
) -> tuple[list[CampaignContact], int]:
    """The campaign's contacts and how many ids the portal does not have."""
    if csv_path is not None:
        ids = _csv_contacts(csv_path)
        contacts = await _contacts_by_id(client, ids)
        return contacts, len(set(ids)) - len(contacts)
    if filters is not None:
        contacts = [
            _campaign_contact(record)
            async for record in client.list_all(
                "crm.contact.list",
                {"filter": filters, "select": ["ID", "ASSIGNED_BY_ID", "COMPANY_ID"]},
                id_field="ID",
                items_key=None,
            )
        ]
        return contacts, 0
    assert respondents is not None
    segment = next(
        (
            s
            for s in config.survey.segments
            if s.name == respondents or str(s.category_id) == respondents
        ),
        None,
    )
    if segment is None:
        names = ", ".join(s.name or str(s.category_id) for s in config.survey.segments)
        raise CampaignError(f"--respondents {respondents!r}: no such segment (known: {names})")
    ids = [
        int(item["contactId"])
        async for item in client.list_all(
            "crm.item.list",
            {
                "entityTypeId": config.survey.entity_type_id,
                "filter": {"categoryId": segment.category_id, ">contactId": 0},
                "select": ["id", "contactId"],
            },
        )
        if item.get("contactId")
    ]
    contacts = await _contacts_by_id(client, ids)
    return contacts, len(set(ids)) - len(contacts)


async def run_campaign(
    pool: asyncpg.Pool,
    client: Bitrix24Client,
    config: PortalConfig,
    *,
    portal: str,
    survey: str,
    name: str,
    contacts: list[CampaignContact],
    dry_run: bool,
    progress: bool = True,
) -> tuple[Counter[str], int]:
    """Ask `contacts` for `survey` on `portal`: the counts (asked and each skip reason) and how
    many this campaign had asked already. A dry run takes exactly the same decisions, in a
    transaction that is rolled back."""
    campaign_id = derived_id("campaign", portal, survey, name)
    wanted = requests_for_campaign(str(campaign_id), survey, contacts, config)
    outbox = Outbox()
    dispatcher = Dispatcher(
        pool,
        outbox,
        config,
        portal=client,
        mailer=Mailer(DispatchSettings()),
        settings=DispatchSettings(),
    )
    counts: Counter[str] = Counter()
    repeated = 0
    chunks = [wanted[i : i + CHUNK] for i in range(0, len(wanted), CHUNK)]

    async def ask(conn: Conn, chunk: list[Wanted]) -> None:
        nonlocal repeated
        asked = await dispatcher.ask(conn, portal, chunk, None)
        counts["asked"] += len(asked.scheduled)
        counts.update(reason for _, reason in asked.skipped)
        repeated += asked.repeated

    label = "dry run" if dry_run else "asking"
    with typer.progressbar(length=len(wanted), label=label, hidden=not progress) as bar:
        async with pool.acquire() as conn:
            if dry_run:
                with contextlib.suppress(_DryRunDoneError):
                    async with outbox.transaction(conn) as tx:
                        for chunk in chunks:
                            await ask(tx, chunk)
                            bar.update(len(chunk))
                        raise _DryRunDoneError  # rolls every decision back
            else:
                for chunk in chunks:
                    async with outbox.transaction(conn) as tx:
                        await ask(tx, chunk)
                    bar.update(len(chunk))
                await store.add_campaign(
                    conn,
                    campaign_id=campaign_id,
                    portal=portal,
                    name=name,
                    survey=survey,
                    asked=counts["asked"],
                    skipped=sum(n for reason, n in counts.items() if reason != "asked"),
                )
    return counts, repeated


def campaign(  # noqa: PLR0917 - one parameter per option, as typer reads them
    survey: Annotated[str, typer.Argument(help="the survey: a deal survey's or a segment's name")],
    csv_path: Annotated[
        Path | None, typer.Option("--csv", help="contact ids: one per line or an id column")
    ] = None,
    filter_: Annotated[
        list[str] | None,
        typer.Option("--filter", help="crm.contact.list filter FIELD=VALUE (repeatable)"),
    ] = None,
    respondents: Annotated[
        str | None, typer.Option(help="the past respondents of a segment (name or category id)")
    ] = None,
    name: Annotated[
        str | None,
        typer.Option(help="the campaign's name; running the same name again asks nobody twice"),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="say how many would be asked or skipped, and why")
    ] = False,
    portal: Annotated[
        str | None,
        typer.Option(
            "--portal",
            help="the portal asked (member id or domain): required in application mode; in"
            " webhook mode the portal this deployment serves",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Ask a set of contacts for a survey: from a CSV, a contact filter, or a segment's past
    respondents. Throttled and opted-out contacts are skipped with the reason."""
    settings = get_settings()
    sources = [x for x in (csv_path, filter_, respondents) if x]
    if len(sources) != 1:
        typer.echo("error: give exactly one of --csv, --filter or --respondents", err=True)
        raise typer.Exit(2)
    dsn = settings.database_url.get_secret_value()
    chosen = _campaign_portal(dsn, settings, portal, survey)
    config = chosen.config
    name = name or f"{survey} {datetime.now(UTC):%Y-%m-%d}"

    async def go() -> tuple[Counter[str], int, int]:
        pool = await create_pool(dsn, min_size=1, max_size=2)
        try:
            async with portal_client(settings, pool, chosen) as client:
                return await _ask(pool, client)
        finally:
            await pool.close()

    async def _ask(pool: asyncpg.Pool, client: Bitrix24Client) -> tuple[Counter[str], int, int]:
        contacts, missing = await _resolve(
            client,
            config,
            csv_path=csv_path,
            filters=None if not filter_ else _parse_filter(filter_),
            respondents=respondents,
        )
        counts, repeated = await run_campaign(
            pool,
            client,
            config,
            portal=chosen.key or "default",
            survey=survey,
            name=name,
            contacts=contacts,
            dry_run=dry_run,
        )
        return counts, repeated, missing

    try:
        counts, repeated, missing = asyncio.run(go())
    except (CampaignError, ConfigError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    except Bitrix24Error as exc:
        typer.echo(f"error: the portal could not be read: {exc}", err=True)
        raise typer.Exit(1) from exc
    except SERVER_ERRORS as exc:
        typer.echo(f"error: {server_problem(exc)}", err=True)
        raise typer.Exit(1) from exc
    verb = "would be asked" if dry_run else "asked"
    typer.echo(f"campaign {name!r}, survey {survey!r}: {counts['asked']} {verb}")
    for reason, n in sorted(counts.items()):
        if reason != "asked":
            typer.echo(f"  skipped {n}: {SKIP_TEXTS.get(reason, reason)}")
    if repeated:
        typer.echo(f"  {repeated} already asked by this campaign (nothing new)")
    if missing:
        typer.echo(f"  {missing} contact id(s) the portal does not have (left out)")


def _campaign_portal(dsn: str, settings: Settings, portal: str | None, survey: str) -> ChosenPortal:
    """The portal a campaign asks (`shared/chosen_portal.py`), whose configuration has a
    dispatch section and the survey named; exit 2 naming what is wrong otherwise."""

    async def chosen() -> ChosenPortal:
        conn = await asyncpg.connect(dsn, timeout=10)
        try:
            return await calling_portal(conn, settings, portal, _config(settings))
        finally:
            await conn.close()

    try:
        found = asyncio.run(chosen())
    except (PortalChoiceError, ConfigError) as exc:
        # ConfigError: application mode, the portal's stored configuration no longer validates.
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    except SERVER_ERRORS as exc:
        typer.echo(f"error: {server_problem(exc)}", err=True)
        raise typer.Exit(1) from exc
    config = found.config
    if config.dispatch is None:
        typer.echo(
            "error: the portal YAML has no dispatch section; campaigns need its channel"
            " (docs/dispatch.md, Configuration)",
            err=True,
        )
        raise typer.Exit(2)
    names = config.survey_names()
    if survey not in names:
        typer.echo(
            f"error: {survey!r} names no survey (known: {', '.join(sorted(names))})", err=True
        )
        raise typer.Exit(2)
    return found


def register(survey_app: typer.Typer) -> None:
    """Add `list` and `campaign` to `nps survey` (the survey page's group of commands)."""
    survey_app.command("list")(list_requests)
    survey_app.command("campaign")(campaign)
