"""`nps report`: NPS by product, segment, responsible manager or period, as a table or JSON."""

from __future__ import annotations

import asyncio
import inspect
import json
from collections.abc import Awaitable, Callable
from datetime import date, datetime
from typing import Annotated, Any

import asyncpg
import typer
from pydantic import ValidationError

from services.scoring.periods import PERIODS
from services.scoring.report import (
    GROUPINGS,
    ReportQuery,
    ReportRow,
    named_managers,
    render_table,
    run_report,
)
from shared.chosen_portal import PortalChoiceError, reading_portal
from shared.db import Conn
from shared.portal_config import ConfigError
from shared.served_portal import pinned_member_id
from shared.settings import get_settings

_DATE_FORMATS = ["%Y-%m-%d"]

ManagerNames = Callable[[Conn, str | None], Awaitable[dict[int, str]]]
"""Reads who the managers are (user id -> name) of a portal (or of any, given None)."""


async def _no_names(_conn: Conn, _portal: str | None) -> dict[int, str]:
    return {}


async def _portal_key(conn: Conn, chosen: str | None) -> str | None:
    """The portal reported on (`shared/chosen_portal.py`): in application mode the installed
    portal `--portal` names; in webhook mode `--portal`, else the served portal's key (None
    while none is known)."""
    settings = get_settings()
    try:
        pinned = pinned_member_id(settings.portal_config_path())
    except ConfigError as exc:
        raise typer.BadParameter(f"the portal YAML: {exc}") from None
    return await reading_portal(conn, settings, chosen, pinned)


async def _fetch(
    query: ReportQuery, manager_names: ManagerNames
) -> tuple[list[ReportRow], dict[int, str]]:
    dsn = get_settings().database_url.get_secret_value()
    try:
        conn = await asyncpg.connect(dsn, timeout=10)
    except (OSError, asyncpg.PostgresError) as exc:
        raise typer.BadParameter(
            f"cannot reach PostgreSQL ({type(exc).__name__}: {exc}); see DATABASE_URL,"
            " and run `nps migrate` first"
        ) from None
    try:
        query = query.model_copy(update={"portal": await _portal_key(conn, query.portal)})
        if query.segment is not None:
            known = await conn.fetch(
                "SELECT DISTINCT category_id, name FROM scoring_segments"
                " WHERE $1::text IS NULL OR portal = $1 ORDER BY category_id, name",
                query.portal,
            )
            segments = [(row["category_id"], row["name"]) for row in known]
            if segments and not names_segment(query.segment, segments):
                listed = ", ".join(f"{name} ({category_id})" for category_id, name in segments)
                raise typer.BadParameter(
                    f"no segment {query.segment!r}; known: {listed}", param_hint="--segment"
                )
        rows = await run_report(conn, query)
        names = await manager_names(conn, query.portal) if query.by == "manager" else {}
        return rows, names
    finally:
        await conn.close()


def names_segment(given: str, segments: list[tuple[int, str]]) -> bool:
    """True when `given` is one of `segments` by category id (digits) or name (any case), the
    way the report's segment filter matches it."""
    if given.isascii() and given.isdigit():
        return any(category_id == int(given) for category_id, _ in segments)
    return any(name.lower() == given.lower() for _, name in segments)


def _day(value: datetime | None) -> date | None:
    return value.date() if value is not None else None


def report(
    *,
    by: Annotated[
        str, typer.Option("--by", help=f"group rows by: {', '.join(GROUPINGS)}")
    ] = "product",
    period: Annotated[
        str | None,
        typer.Option(
            "--period",
            help=f"split rows by period: {', '.join(PERIODS)} (range = one row for --from/--to);"
            " with --by period the default is month, or range when --from/--to is given",
        ),
    ] = None,
    date_from: Annotated[
        datetime | None,
        typer.Option("--from", formats=_DATE_FORMATS, help="first day included (YYYY-MM-DD)"),
    ] = None,
    date_to: Annotated[
        datetime | None,
        typer.Option("--to", formats=_DATE_FORMATS, help="last day included (YYYY-MM-DD)"),
    ] = None,
    segment: Annotated[
        str | None, typer.Option("--segment", help="segment: category id or name")
    ] = None,
    product: Annotated[str | None, typer.Option("--product", help="product sku")] = None,
    manager: Annotated[
        int | None, typer.Option("--manager", help="responsible manager's user id")
    ] = None,
    portal: Annotated[
        str | None,
        typer.Option(
            "--portal",
            help="the portal (member_id or domain): required in application mode; in webhook"
            " mode default: the portal this deployment serves",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print a JSON list of rows")] = False,
    manager_names: ManagerNames = _no_names,
) -> None:
    """NPS with its 95 % margin of error, promoters/passives/detractors, answers and average
    score, grouped and filtered; an NPS from fewer than NPS_MIN_ANSWERS (30) answers is marked.

    Cosmetics NPS is per product only (by period/manager: equipment only, with a note).
    """
    try:
        query = ReportQuery.model_validate(
            {
                "by": by,
                "period": period,
                "date_from": _day(date_from),
                "date_to": _day(date_to),
                "segment": segment,
                "product": product,
                "manager": manager,
                "portal": portal,
            }
        )
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'options'}: {err['msg']}"
            for err in exc.errors(include_url=False)
        )
        raise typer.BadParameter(problems.replace("date_", "--")) from None
    min_answers = get_settings().nps_min_answers
    try:
        fetched, names = asyncio.run(_fetch(query, manager_names))
    except PortalChoiceError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(code=2) from None
    rows = [row.as_dict(min_answers) for row in fetched]
    if query.by == "manager":
        rows = named_managers(rows, names)
    if as_json:
        typer.echo(json.dumps(rows, indent=2, ensure_ascii=False))
    else:
        typer.echo(render_table(rows, query.by, min_answers))


def register(app: typer.Typer, manager_names: ManagerNames = _no_names) -> None:
    """Add `nps report`; `manager_names` tells who the managers of a report by manager are."""

    def named_report(**options: Any) -> None:
        report(**options, manager_names=manager_names)

    # The command's options are `report`'s, but for the reader given here.
    signature = inspect.signature(report, eval_str=True)
    named_report.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=[p for p in signature.parameters.values() if p.name != "manager_names"]
    )
    named_report.__doc__ = report.__doc__
    app.command("report")(named_report)
