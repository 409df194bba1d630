"""The dashboard's views: read what a view needs, build its view model, render its page.

Report figures come from `run_report`, the same function behind `/api/report`, so every number
on a page equals the API's for the same filters.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, tzinfo
from typing import Any

from services.dispatch import read as dispatch_read
from services.dispatch.read import FollowupFilter
from services.ingest.read import unmapped_summary
from services.ops import dlq
from services.reports import pages, queries
from services.reports.asked import (
    AskedLine,
    AskedView,
    Bucket,
    asked_change,
    asked_lines,
    by_manager,
    by_period,
    by_survey,
    deal_survey_lines,
    register_summary,
    total,
)
from services.reports.filters import Filters
from services.reports.followup import (
    Escalations,
    FollowupTile,
    FollowupView,
    Loop,
    has_sla,
    loop_change,
    overdue_lines,
)
from services.reports.followup import by_action as loop_by_action
from services.reports.followup import by_manager as loop_by_manager
from services.reports.views import (
    NO_COUNTS,
    Change,
    Counts,
    Distribution,
    FilterOptions,
    ThemeCount,
    attention_lines,
    change,
    distribution,
    lane_lines,
    manager_lines,
    ops_view,
    pager,
    product_lines,
    rating_lines,
    trend_chart,
)
from services.scoring.read import (
    DEFAULT_MIN_ANSWERS,
    Granularity,
    ReportQuery,
    bucket_start,
    period_label,
    ratings_count,
    run_report,
    score_distribution,
    theme_counts,
)
from services.scoring.read import ratings as read_ratings
from shared.db import Conn
from shared.dispatch_config import Dispatch
from shared.events import utcnow
from shared.served_portal import reading_key


@dataclass(frozen=True)
class Sources:
    """What the views link to and read besides PostgreSQL."""

    portal_origin: str | None
    """`scheme://host` of the Bitrix24 portal, for links to items and contacts."""
    rabbitmq_url: str | None
    """The broker whose dead-letter queues the ops view counts."""
    min_answers: int = DEFAULT_MIN_ANSWERS
    """Below this many answers a number is marked as too few to rely on."""
    zone: tzinfo = UTC
    """The portal's time zone: the pages show times in it."""
    field_titles: Mapping[str, str] = field(default_factory=dict)
    """Contact field code -> title (from the portal YAML), for the conflicts on the ops view."""
    themes: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    """The comment themes of the portal YAML: name -> words."""
    dispatch: Dispatch = field(default_factory=Dispatch)
    """Dispatch's settings of the portal YAML (reminders, the unanswered call task, the
    follow-up's SLAs), for the "Asked" page's next reminders and call tasks and the follow-up
    page's SLAs and empty states."""
    clock: Callable[[], datetime] = utcnow
    """Now: today's date for the date presets, the moment a follow-up is overdue at."""
    pinned_portal: str | None = None
    """The portal YAML's `portal.member_id`: the portal served, when it pins one (otherwise the
    one ingest learned); the views read it unless `?portal=` chooses another."""

    async def served(self, conn: Conn, filters: Filters) -> Filters:
        """`filters` with the served portal's key, which the views read unless `?portal=`
        chose a portal."""
        if filters.portal is not None:
            return filters
        return replace(filters, served=await reading_key(conn, None, self.pinned_portal))

    @property
    def zone_name(self) -> str:
        """The IANA name of `zone`, for PostgreSQL."""
        return str(getattr(self.zone, "key", None) or self.zone)


RATINGS_PAGE_SIZE = 50
ASKED_LIMIT = 50
"""Requests per list of the "Asked" page (the CSV export holds them all)."""
OVERDUE_LIMIT = 50
"""Overdue leads and tasks the follow-up page lists (the CSV export holds them all)."""


View = Callable[[Conn, Sources, Filters, FilterOptions], Awaitable[str]]


async def _rows(conn: Conn, sources: Sources, query: ReportQuery) -> list[dict[str, Any]]:
    return [row.as_dict(sources.min_answers) for row in await run_report(conn, query)]


async def _summary(conn: Conn, sources: Sources, filters: Filters) -> Counts:
    """The figures of the whole selection (zeros when it holds no answers)."""
    rows = await _rows(conn, sources, filters.report("period", "range"))
    if not rows:
        return NO_COUNTS
    return Counts.of(rows[0])


async def _change(conn: Conn, sources: Sources, filters: Filters, now: Counts) -> Change | None:
    """The summary `now` against the previous period of the same length, when there is one."""
    before = filters.previous()
    if before is None or before.date_from is None or before.date_to is None:
        return None
    then = await _summary(conn, sources, before)
    return change(now, then, before.date_from, before.date_to)


async def _distribution(conn: Conn, query: ReportQuery) -> Distribution:
    """The score distribution of the answers behind `query`'s rows."""
    return distribution(await score_distribution(conn, query))


async def _followed_in_all(conn: Conn, portal: str | None) -> bool:
    """Whether dispatch follows (or followed) any lead or task of `portal`."""
    return bool(await dispatch_read.followups(conn, FollowupFilter(portal=portal), limit=1))


async def followup_tile(conn: Conn, sources: Sources, filters: Filters) -> FollowupTile | None:
    """The overview's tile: the open overdue follow-ups of the selection (the follow-up page's
    count for the same filters, which it links to); None when dispatch follows nothing."""
    if not await _followed_in_all(conn, filters.key):
        return None
    where = filters.followup(sources.zone)
    count = await dispatch_read.overdue_count(conn, sources.clock(), where)
    return FollowupTile(count, "/followup" + replace(filters, page=1).query_string())


async def trend(conn: Conn, sources: Sources, filters: Filters, options: FilterOptions) -> str:
    query = filters.report("period", filters.period)
    rows = await _rows(conn, sources, query)
    summary = await _summary(conn, sources, filters)
    api_url = filters.api_url("period", filters.period)
    return pages.trend_page(
        filters,
        options,
        trend_chart(rows),
        summary,
        filters.period,
        api_url=api_url,
        scores=await _distribution(conn, query),
        delta=await _change(conn, sources, filters, summary),
        followup=await followup_tile(conn, sources, filters),
    )


async def products(conn: Conn, sources: Sources, filters: Filters, options: FilterOptions) -> str:
    query = filters.report("product")
    rows = await _rows(conn, sources, query)
    trends = await _rows(conn, sources, filters.report("product", filters.period))
    lines = product_lines(rows, trends, options.catalogue)
    return pages.products_page(
        filters,
        options,
        lines,
        api_url=filters.api_url("product"),
        scores=await _distribution(conn, query),
    )


async def managers(conn: Conn, sources: Sources, filters: Filters, options: FilterOptions) -> str:
    query = filters.report("manager")
    lines = manager_lines(await _rows(conn, sources, query), options.manager_names)
    return pages.managers_page(
        filters,
        options,
        lines,
        api_url=filters.api_url("manager"),
        scores=await _distribution(conn, query),
    )


async def attention(conn: Conn, sources: Sources, filters: Filters, options: FilterOptions) -> str:
    records = await queries.attention(conn, filters)
    lines = attention_lines(records, sources.portal_origin, sources.zone, options.manager_names)
    summary = await _summary(conn, sources, filters)
    api_url = filters.api_url("period", "range")
    return pages.attention_page(
        filters,
        options,
        lines,
        summary,
        queries.ATTENTION_LIMIT,
        api_url=api_url,
        delta=await _change(conn, sources, filters, summary),
    )


def ratings_csv_url(filters: Filters) -> str:
    """The CSV export of every answer the all-ratings page selects with `filters`."""
    return "/ratings.csv" + replace(filters, page=1).query_string()


async def ratings(conn: Conn, sources: Sources, filters: Filters, options: FilterOptions) -> str:
    query = filters.ratings(sources.themes)
    surveys = None
    if filters.deal is not None:
        query, requests = await queries.deal_selection(conn, query, filters.key, filters.deal)
        surveys = deal_survey_lines(requests, filters.deal, sources.zone)
    size = RATINGS_PAGE_SIZE
    records = await read_ratings(conn, query, limit=size, offset=(filters.page - 1) * size)
    total = await ratings_count(conn, query)
    counts = await theme_counts(conn, query, sources.themes)
    themes = [
        ThemeCount(
            name=name,
            answers=answers,
            href="/ratings"
            + replace(
                filters, theme=None if name == filters.theme else name, page=1
            ).query_string(),
            on=name == filters.theme,
        )
        for name, answers in counts.items()
    ]
    sent = await queries.sent_dates(conn, records, filters.key)
    return pages.ratings_page(
        filters,
        options,
        rating_lines(records, sources.portal_origin, sources.zone, options.manager_names, sent),
        pager(
            filters.page,
            size,
            len(records),
            total,
            lambda n: "/ratings" + replace(filters, page=n).query_string(),
        ),
        themes,
        csv_url=ratings_csv_url(filters),
        deal_surveys=surveys,
    )


def period_bucket(granularity: Granularity) -> Bucket:
    """The period of `granularity` a day falls in, as the reports label it."""

    def bucket(day: date) -> tuple[date, str]:
        start = bucket_start(day, granularity)
        return start, period_label(start, granularity)

    return bucket


def asked_csv_url(filters: Filters) -> str:
    """The CSV export of every request the "Asked" page selects with `filters`."""
    return "/asked.csv" + replace(filters, page=1).query_string()


async def asked_options(conn: Conn, filters: Filters, options: FilterOptions) -> FilterOptions:
    """`options` with the surveys and managers of dispatch's register added (a survey sent but
    not answered yet has no answers to offer it)."""
    held = await dispatch_read.asked_choices(conn, filters.key)
    known = {category for category, _ in options.segments}
    segments = options.segments + tuple(s for s in held.surveys if s[0] not in known)
    managers = tuple(sorted(set(options.managers) | set(held.managers)))
    return replace(options, segments=segments, managers=managers)


async def asked(conn: Conn, sources: Sources, filters: Filters, options: FilterOptions) -> str:
    where = filters.asked(sources.zone_name)
    rows = await dispatch_read.funnel(conn, where)
    now = total(rows)
    delta = None
    before = filters.previous()
    if before is not None and before.date_from is not None and before.date_to is not None:
        then = total(await dispatch_read.funnel(conn, before.asked(sources.zone_name)))
        delta = asked_change(now, then, before.date_from, before.date_to)
    waiting_total, waiting = await dispatch_read.awaiting(conn, where, ASKED_LIMIT)
    closed_total, closed = await dispatch_read.unanswered(conn, where, ASKED_LIMIT)
    outcomes = await queries.call_task_outcomes(conn, closed)

    def lines(records: list[dict[str, Any]]) -> tuple[AskedLine, ...]:
        return tuple(
            asked_lines(
                records,
                sources.portal_origin,
                sources.dispatch,
                zone=sources.zone,
                names=options.manager_names,
                outcomes=outcomes,
            )
        )

    view = AskedView(
        funnel=now,
        change=delta,
        surveys=tuple(by_survey(rows)),
        managers=tuple(by_manager(rows, options.manager_names)),
        periods=tuple(by_period(rows, period_bucket(filters.period))),
        awaiting=lines(waiting),
        awaiting_total=waiting_total,
        unanswered=lines(closed),
        unanswered_total=closed_total,
        register=register_summary(await dispatch_read.state_counts(conn, filters.key)),
    )
    return pages.asked_page(
        filters,
        await asked_options(conn, filters, options),
        view,
        csv_url=asked_csv_url(filters),
    )


def followup_csv_url(filters: Filters) -> str:
    """The CSV export of every overdue lead and task the follow-up page selects with `filters`."""
    return "/followup.csv" + replace(filters, page=1).query_string()


async def followup(conn: Conn, sources: Sources, filters: Filters, options: FilterOptions) -> str:
    now = sources.clock()
    where = filters.followup(sources.zone)
    async with conn.transaction(readonly=True):  # one snapshot: the tiles, tables and list agree
        total = await dispatch_read.loop_closed_total(conn, now, where)
        loop = Loop.of(total)
        delta = None
        before = filters.previous()
        if before is not None and before.date_from is not None and before.date_to is not None:
            then = await dispatch_read.loop_closed_total(conn, now, before.followup(sources.zone))
            delta = loop_change(loop, Loop.of(then), before.date_from, before.date_to)
        actions = await dispatch_read.loop_closed(conn, now, where, "action")
        managers = await dispatch_read.loop_closed(conn, now, where, "manager")
        overdue_total = await dispatch_read.overdue_count(conn, now, where)
        overdue = await dispatch_read.overdue(conn, now, where, limit=OVERDUE_LIMIT)
        in_all = loop.followed
        if not in_all:
            everything = FollowupFilter(portal=filters.key)
            in_all = (await dispatch_read.loop_closed_total(conn, now, everything))["followed"]
    escalations = Escalations.of(total)
    followup_settings = sources.dispatch.followup
    view = FollowupView(
        loop=loop,
        change=delta,
        actions=tuple(loop_by_action(actions, followup_settings)),
        managers=tuple(loop_by_manager(managers, options.manager_names)),
        escalations=escalations,
        overdue=tuple(
            overdue_lines(
                overdue, sources.portal_origin, zone=sources.zone, names=options.manager_names
            )
        ),
        overdue_total=overdue_total,
        followed_in_all=in_all,
        enabled=followup_settings.enabled,
        slas=has_sla(followup_settings),
    )
    return pages.followup_page(filters, options, view, csv_url=followup_csv_url(filters))


async def ops(conn: Conn, sources: Sources, filters: Filters, options: FilterOptions) -> str:
    total, records = await queries.conflicts(conn, filters.key)
    held = await unmapped_summary(conn, filters.key)
    # The dead letters and crm_sync's lanes are the whole deployment's, not one portal's: a
    # session inside a portal (`filters.session`) does not read them.
    deployment = filters.session is None
    dead_letters = await dlq.dead_letter_sizes(sources.rabbitmq_url) if deployment else None
    depths = await queries.lane_depths(sources.rabbitmq_url) if deployment else None
    lanes = lane_lines(queries.LANE_QUEUES, depths, await queries.lanes(conn) if deployment else {})
    view = ops_view(
        total,
        records,
        dead_letters,
        dlq.core_queues(),
        sources.portal_origin,
        unmapped=held,
        field_titles=sources.field_titles,
        zone=sources.zone,
        lanes=lanes,
    )
    return pages.ops_page(filters, options, view)


VIEWS: dict[str, tuple[pages.NavItem, View]] = {
    pages.TREND.path: (pages.TREND, trend),
    pages.PRODUCTS.path: (pages.PRODUCTS, products),
    pages.MANAGERS.path: (pages.MANAGERS, managers),
    pages.ATTENTION.path: (pages.ATTENTION, attention),
    pages.RATINGS.path: (pages.RATINGS, ratings),
    pages.ASKED.path: (pages.ASKED, asked),
    pages.FOLLOWUP.path: (pages.FOLLOWUP, followup),
    pages.OPS.path: (pages.OPS, ops),
}
