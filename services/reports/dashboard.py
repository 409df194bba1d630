"""The dashboard's views: read what a view needs, build its view model, render its page.

Report figures come from `run_report`, the same function behind `/api/report`, so every number
on a page equals the API's for the same filters.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from services.ingest.unmapped import unmapped_summary
from services.reports import pages, queries
from services.reports.filters import Filters
from services.reports.markup import Html
from services.reports.views import (
    Counts,
    FilterOptions,
    attention_lines,
    manager_lines,
    ops_view,
    product_lines,
    trend_chart,
)
from services.scoring.report import Conn, ReportQuery, run_report


@dataclass(frozen=True)
class Sources:
    """What the views link to and read besides PostgreSQL."""

    portal_origin: str | None
    """`scheme://host` of the Bitrix24 portal, for links to items and contacts."""
    rabbitmq_url: str | None
    """The broker whose dead-letter queues the ops view counts."""


View = Callable[[Conn, Sources, Filters, FilterOptions], Awaitable[Html]]


async def _rows(conn: Conn, query: ReportQuery) -> list[dict[str, Any]]:
    return [row.as_dict() for row in await run_report(conn, query)]


async def _summary(conn: Conn, filters: Filters) -> Counts:
    """The figures of the whole selection (zeros when it holds no answers)."""
    rows = await _rows(conn, filters.report("period", "range"))
    if not rows:
        return Counts(None, 0, 0, 0, 0, None)
    return Counts.of(rows[0])


async def trend(conn: Conn, _sources: Sources, filters: Filters, options: FilterOptions) -> Html:
    rows = await _rows(conn, filters.report("period", filters.period))
    body = pages.trend_body(trend_chart(rows), await _summary(conn, filters), filters.period)
    api_url = filters.api_url("period", filters.period)
    return pages.layout(pages.TREND, filters, options, body, api_url=api_url)


async def products(conn: Conn, _sources: Sources, filters: Filters, options: FilterOptions) -> Html:
    rows = await _rows(conn, filters.report("product"))
    trends = await _rows(conn, filters.report("product", filters.period))
    body = pages.products_body(product_lines(rows, trends, options.catalogue), filters)
    return pages.layout(pages.PRODUCTS, filters, options, body, api_url=filters.api_url("product"))


async def managers(conn: Conn, _sources: Sources, filters: Filters, options: FilterOptions) -> Html:
    rows = await _rows(conn, filters.report("manager"))
    body = pages.managers_body(manager_lines(rows), filters)
    return pages.layout(pages.MANAGERS, filters, options, body, api_url=filters.api_url("manager"))


async def attention(conn: Conn, sources: Sources, filters: Filters, options: FilterOptions) -> Html:
    records = await queries.attention(conn, filters)
    lines = attention_lines(records, sources.portal_origin)
    body = pages.attention_body(lines, await _summary(conn, filters), queries.ATTENTION_LIMIT)
    api_url = filters.api_url("period", "range")
    return pages.layout(pages.ATTENTION, filters, options, body, api_url=api_url)


async def ops(conn: Conn, sources: Sources, filters: Filters, options: FilterOptions) -> Html:
    total, records = await queries.conflicts(conn, filters.portal)
    dead_letters = await queries.dead_letter_sizes(sources.rabbitmq_url)
    held = await unmapped_summary(conn, filters.portal)
    view = ops_view(
        total, records, dead_letters, queries.queue_names(), sources.portal_origin, unmapped=held
    )
    return pages.layout(pages.OPS, filters, options, pages.ops_body(view))


VIEWS: dict[str, tuple[pages.NavItem, View]] = {
    pages.TREND.path: (pages.TREND, trend),
    pages.PRODUCTS.path: (pages.PRODUCTS, products),
    pages.MANAGERS.path: (pages.MANAGERS, managers),
    pages.ATTENTION.path: (pages.ATTENTION, attention),
    pages.OPS.path: (pages.OPS, ops),
}
