"""The dashboard's views: read what a view needs, build its view model, render its page.

Report figures come from `run_report`, the same function behind `/api/report`, so every number
on a page equals the API's for the same filters.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from services.ingest.read import unmapped_summary
from services.ops import dlq
from services.reports import pages, queries
from services.reports.filters import Filters
from services.reports.views import (
    Counts,
    FilterOptions,
    attention_lines,
    lane_lines,
    manager_lines,
    ops_view,
    product_lines,
    trend_chart,
)
from services.scoring.read import ReportQuery, run_report
from shared.db import Conn


@dataclass(frozen=True)
class Sources:
    """What the views link to and read besides PostgreSQL."""

    portal_origin: str | None
    """`scheme://host` of the Bitrix24 portal, for links to items and contacts."""
    rabbitmq_url: str | None
    """The broker whose dead-letter queues the ops view counts."""


View = Callable[[Conn, Sources, Filters, FilterOptions], Awaitable[str]]


async def _rows(conn: Conn, query: ReportQuery) -> list[dict[str, Any]]:
    return [row.as_dict() for row in await run_report(conn, query)]


async def _summary(conn: Conn, filters: Filters) -> Counts:
    """The figures of the whole selection (zeros when it holds no answers)."""
    rows = await _rows(conn, filters.report("period", "range"))
    if not rows:
        return Counts(None, 0, 0, 0, 0, None)
    return Counts.of(rows[0])


async def trend(conn: Conn, _sources: Sources, filters: Filters, options: FilterOptions) -> str:
    rows = await _rows(conn, filters.report("period", filters.period))
    summary = await _summary(conn, filters)
    api_url = filters.api_url("period", filters.period)
    return pages.trend_page(
        filters, options, trend_chart(rows), summary, filters.period, api_url=api_url
    )


async def products(conn: Conn, _sources: Sources, filters: Filters, options: FilterOptions) -> str:
    rows = await _rows(conn, filters.report("product"))
    trends = await _rows(conn, filters.report("product", filters.period))
    lines = product_lines(rows, trends, options.catalogue)
    return pages.products_page(filters, options, lines, api_url=filters.api_url("product"))


async def managers(conn: Conn, _sources: Sources, filters: Filters, options: FilterOptions) -> str:
    rows = await _rows(conn, filters.report("manager"))
    lines = manager_lines(rows)
    return pages.managers_page(filters, options, lines, api_url=filters.api_url("manager"))


async def attention(conn: Conn, sources: Sources, filters: Filters, options: FilterOptions) -> str:
    records = await queries.attention(conn, filters)
    lines = attention_lines(records, sources.portal_origin)
    summary = await _summary(conn, filters)
    api_url = filters.api_url("period", "range")
    return pages.attention_page(
        filters, options, lines, summary, queries.ATTENTION_LIMIT, api_url=api_url
    )


async def ops(conn: Conn, sources: Sources, filters: Filters, options: FilterOptions) -> str:
    total, records = await queries.conflicts(conn, filters.portal)
    dead_letters = await dlq.dead_letter_sizes(sources.rabbitmq_url)
    held = await unmapped_summary(conn, filters.portal)
    depths = await queries.lane_depths(sources.rabbitmq_url)
    lanes = lane_lines(queries.LANE_QUEUES, depths, await queries.lanes(conn))
    view = ops_view(
        total,
        records,
        dead_letters,
        dlq.core_queues(),
        sources.portal_origin,
        unmapped=held,
        lanes=lanes,
    )
    return pages.ops_page(filters, options, view)


VIEWS: dict[str, tuple[pages.NavItem, View]] = {
    pages.TREND.path: (pages.TREND, trend),
    pages.PRODUCTS.path: (pages.PRODUCTS, products),
    pages.MANAGERS.path: (pages.MANAGERS, managers),
    pages.ATTENTION.path: (pages.ATTENTION, attention),
    pages.OPS.path: (pages.OPS, ops),
}
