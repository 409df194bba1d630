"""The read-only reports app: the NPS dashboard's pages and the reports as JSON.

Pages (server-rendered from the Jinja2 templates of `templates/` by `pages.py`: HTML with
inline SVG charts, no JavaScript, the style sheet from `/static/`), each with its filters in the
query string: `/` (NPS trend), `/products`, `/managers`, `/attention` (latest detractors and
service requests), `/ratings` (every current answer, filtered, a page at a time), `/asked` (the
surveys dispatch sent: response rates, who has not answered), `/followup` (did anyone act on
the leads and tasks b24-nps created: loop closed %, the overdue ones), `/ops` (conflicts and dead
letters). `/ratings.csv` takes the all-ratings page's query string and streams every answer it
selects (all pages) as CSV, `/asked.csv` the "Asked" page's and every request it selects,
`/followup.csv` the follow-up page's and every open overdue lead and task it selects: UTF-8
with a BOM (Excel reads it as such), a header row, and every cell a spreadsheet could take for a
formula prefixed with `'`.

`GET /api/report` takes the same parameters as `nps report` (`by`, `period`, `from`, `to`,
`segment`, `product`, `manager`, `portal`) and answers the same rows as `nps report --json`;
`GET /api/scores` takes the same parameters and answers how many of those answers gave each
score.

`GET /openapi.json` describes the API (there is no `/docs` page: Swagger UI would load its
scripts from a CDN). Everything but `GET /healthz` and the style sheet under `/static/` needs the
reports token (see `auth.py`): a page opened without it answers 401 with a sign-in prompt and how
to get in; `?token=<token>` on any page sets a cookie and redirects to the same page without the
token in its address.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import date, datetime
from typing import Annotated, Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import (
    HTMLResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from fastapi.staticfiles import StaticFiles
from pydantic import ValidationError

from services.dispatch.read import all_overdue
from services.dispatch.read import asked as asked_requests
from services.ingest.read import user_names
from services.reports import pages
from services.reports.asked import ASKED_CSV_HEADER, asked_csv_row, asked_lines
from services.reports.auth import COOKIE, COOKIE_MAX_AGE_S, Access, cookie_value
from services.reports.dashboard import VIEWS, Sources
from services.reports.filters import FilterError, Filters, parse_filters
from services.reports.followup import FOLLOWUP_CSV_HEADER, followup_csv_row, overdue_lines
from services.reports.queries import call_task_outcomes, filter_options, sent_dates
from services.reports.views import CSV_HEADER, csv_row, csv_text, portal_origin, rating_lines
from services.scoring.read import (
    DEFAULT_MIN_ANSWERS,
    GroupBy,
    Period,
    ReportQuery,
    all_ratings,
    named_managers,
    run_report,
    score_distribution,
)
from shared.db import Conn, create_pool
from shared.dispatch_config import Dispatch
from shared.events import utcnow
from shared.served_portal import reading_key

PAGE_HEADERS = {
    "Content-Security-Policy": pages.CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
BASIC_CHALLENGE = 'Basic realm="b24-nps reports", charset="UTF-8"'


def _presented(request: Request) -> bool:
    access: Access = request.app.state.access
    return access.allows(request.headers.get("authorization"), request.cookies.get(COOKIE))


async def api_guard(request: Request) -> None:
    """`/api/*` needs the token (bearer header, basic auth or the dashboard's cookie)."""
    if not _presented(request):
        raise HTTPException(
            status_code=401,
            detail="missing or wrong bearer token (Authorization: Bearer <REPORTS_TOKEN>)",
            headers={"WWW-Authenticate": "Bearer"},
        )


def _html(body: str, status_code: int = 200, headers: dict[str, str] | None = None) -> Response:
    return HTMLResponse(body, status_code=status_code, headers={**PAGE_HEADERS, **(headers or {})})


def _sign_in(request: Request) -> Response:
    return _html(pages.login_page(request.url.path), 401, {"WWW-Authenticate": BASIC_CHALLENGE})


def _enter(request: Request, token: str) -> Response:
    """Set the cookie and send the browser to the same page without the token in the URL."""
    rest = [(k, v) for k, v in request.query_params.multi_items() if k != "token"]
    target = request.url.path + (f"?{urlencode(rest)}" if rest else "")
    response = RedirectResponse(target, status_code=303, headers=PAGE_HEADERS)
    response.set_cookie(
        COOKIE,
        cookie_value(token),
        max_age=COOKIE_MAX_AGE_S,
        path="/",
        httponly=True,
        samesite="lax",
        secure=request.url.scheme == "https",
    )
    return response


async def page(request: Request) -> Response:
    """One dashboard view, after the token check and with the filters of the query string."""
    item, view = VIEWS[request.url.path]
    access: Access = request.app.state.access
    given = request.query_params.get("token")
    if given is not None and access.token is not None:
        return _enter(request, access.token) if access.matches(given) else _sign_in(request)
    if not _presented(request):
        return _sign_in(request)
    sources: Sources = request.app.state.sources
    today = sources.clock().astimezone(sources.zone).date()
    async with request.app.state.pool.acquire() as conn:
        try:
            filters = parse_filters(request.query_params, today, sources.themes)
        except FilterError as exc:
            options = await filter_options(conn, None)
            return _html(pages.problems_page(item, options, exc.problems), 422)
        filters = await sources.served(conn, filters)
        options = await filter_options(conn, filters.key)
        options = replace(
            options,
            manager_names=await user_names(conn, filters.key),
            themes=tuple(sources.themes),
        )
        return _html(await view(conn, sources, filters, options))


CSV_BATCH = 500
"""Answers per chunk of the CSV export."""


Chunk = Callable[[Conn, Sequence[dict[str, Any]], Mapping[int, str]], Awaitable[str]]
"""CSV lines of a batch of records (with the user names), reading what else they need."""


def _csv(
    request: Request,
    name: str,
    header: Sequence[str],
    records: Callable[[Conn, Filters], AsyncIterator[dict[str, Any]]],
    chunk: Chunk,
) -> Response:
    """The CSV export `name` of what `records` selects with the filters of the query string,
    streamed in batches of `CSV_BATCH` through `chunk`."""
    if not _presented(request):
        return _sign_in(request)
    sources: Sources = request.app.state.sources
    today = sources.clock().astimezone(sources.zone).date()
    try:
        filters = parse_filters(request.query_params, today, sources.themes)
    except FilterError as exc:
        return PlainTextResponse("\n".join(exc.problems) + "\n", 422, headers=PAGE_HEADERS)
    pool = request.app.state.pool

    async def body() -> AsyncIterator[str]:
        yield "\ufeff" + csv_text([header])
        async with pool.acquire() as conn:
            served = await sources.served(conn, filters)
            names = await user_names(conn, served.key)
            batch: list[dict[str, Any]] = []
            async for record in records(conn, served):
                batch.append(record)
                if len(batch) == CSV_BATCH:
                    yield await chunk(conn, batch, names)
                    batch = []
            if batch:
                yield await chunk(conn, batch, names)

    return StreamingResponse(
        body(),
        media_type="text/csv; charset=utf-8",
        headers={
            **PAGE_HEADERS,
            "Content-Disposition": f'attachment; filename="{name}-{today.isoformat()}.csv"',
        },
    )


async def ratings_csv(request: Request) -> Response:
    """Every answer the all-ratings page selects with the same query string, as CSV."""
    sources: Sources = request.app.state.sources

    def records(conn: Conn, filters: Filters) -> AsyncIterator[dict[str, Any]]:
        return all_ratings(conn, filters.ratings(sources.themes), batch=CSV_BATCH)

    async def chunk(conn: Conn, batch: Sequence[dict[str, Any]], names: Mapping[int, str]) -> str:
        sent = await sent_dates(conn, batch, None)
        lines = rating_lines(batch, sources.portal_origin, sources.zone, names, sent)
        return csv_text([csv_row(line) for line in lines])

    return _csv(request, "ratings", CSV_HEADER, records, chunk)


async def asked_csv(request: Request) -> Response:
    """Every request the "Asked" page selects with the same query string, as CSV."""
    sources: Sources = request.app.state.sources

    def records(conn: Conn, filters: Filters) -> AsyncIterator[dict[str, Any]]:
        return asked_requests(conn, filters.asked(sources.zone_name), batch=CSV_BATCH)

    async def chunk(conn: Conn, batch: Sequence[dict[str, Any]], names: Mapping[int, str]) -> str:
        lines = asked_lines(
            batch,
            sources.portal_origin,
            sources.dispatch,
            zone=sources.zone,
            names=names,
            outcomes=await call_task_outcomes(conn, batch),
        )
        return csv_text([asked_csv_row(line) for line in lines])

    return _csv(request, "asked", ASKED_CSV_HEADER, records, chunk)


async def followup_csv(request: Request) -> Response:
    """Every open overdue lead and task the follow-up page selects with the same query string
    (overdue at the moment of the request), as CSV."""
    sources: Sources = request.app.state.sources
    now = sources.clock()

    def records(conn: Conn, filters: Filters) -> AsyncIterator[dict[str, Any]]:
        return all_overdue(conn, now, filters.followup(sources.zone), batch=CSV_BATCH)

    async def chunk(conn: Conn, batch: Sequence[dict[str, Any]], names: Mapping[int, str]) -> str:
        lines = overdue_lines(batch, sources.portal_origin, zone=sources.zone, names=names)
        return csv_text([followup_csv_row(line) for line in lines])

    return _csv(request, "followup", FOLLOWUP_CSV_HEADER, records, chunk)


def report_query(
    *,
    by: GroupBy = "product",
    period: Period | None = None,
    date_from: Annotated[date | None, Query(alias="from")] = None,
    date_to: Annotated[date | None, Query(alias="to")] = None,
    segment: str | None = None,
    product: str | None = None,
    manager: int | None = None,
    portal: str | None = None,
) -> ReportQuery:
    """The report query of the request's parameters; 422 naming each one that is wrong."""
    try:
        return ReportQuery(
            by=by,
            period=period,
            date_from=date_from,
            date_to=date_to,
            segment=segment,
            product=product,
            manager=manager,
            portal=portal,
        )
    except ValidationError as exc:
        detail = [
            {
                "field": ".".join(str(p) for p in err["loc"]).replace("date_", "") or "query",
                "problem": err["msg"],
            }
            for err in exc.errors(include_url=False)
        ]
        raise HTTPException(status_code=422, detail=detail) from None


async def _served_query(conn: Conn, request: Request, query: ReportQuery) -> ReportQuery:
    """`query` of the portal `portal=` chose, else of the served one."""
    if query.portal is not None:
        return query
    sources: Sources = request.app.state.sources
    served = await reading_key(conn, None, sources.pinned_portal)
    return query.model_copy(update={"portal": served})


async def report_endpoint(
    request: Request, query: Annotated[ReportQuery, Depends(report_query)]
) -> list[dict[str, Any]]:
    """NPS report rows (see `nps report`) of the portal chosen, else of the served one."""
    async with request.app.state.pool.acquire() as conn:
        query = await _served_query(conn, request, query)
        rows = [
            row.as_dict(request.app.state.sources.min_answers)
            for row in await run_report(conn, query)
        ]
        if query.by == "manager":
            return named_managers(rows, await user_names(conn, query.portal))
    return rows


async def scores_endpoint(
    request: Request, query: Annotated[ReportQuery, Depends(report_query)]
) -> list[dict[str, int]]:
    """How many answers gave each score, over the answers behind the same report's rows (its
    grouping decides only whether cosmetics answers are left out; the period split is ignored)."""
    async with request.app.state.pool.acquire() as conn:
        counts = await score_distribution(conn, await _served_query(conn, request, query))
    return [{"score": score, "answers": counts[score]} for score in sorted(counts)]


def create_app(
    database_url: str,
    token: str,
    *,
    portal_url: str | None = None,
    rabbitmq_url: str | None = None,
    min_answers: int = DEFAULT_MIN_ANSWERS,
    timezone: str = "UTC",
    field_titles: Mapping[str, str] | None = None,
    themes: Mapping[str, tuple[str, ...]] | None = None,
    dispatch: Dispatch | None = None,
    clock: Callable[[], datetime] = utcnow,
    pinned_portal: str | None = None,
) -> FastAPI:
    """The reports app on the database at `database_url`, protected by `token`.

    Every page and API needs the token (see `services/reports/auth.py`). `portal_url` (the
    webhook URL; only its origin is kept) makes links to Bitrix24 items and contacts;
    `rabbitmq_url` lets the ops view count dead letters; below `min_answers` answers a number
    is marked as too few to rely on. Times are shown in `timezone` (the portal's, an IANA name)
    and the contact fields of conflicts by their `field_titles` (code -> title); the
    all-ratings page filters and counts answers by the comment `themes` (name -> words); the
    "Asked" page tells next reminders and call tasks by `dispatch` (the portal YAML's settings),
    the follow-up page its SLAs. `clock` tells now (today's date for the date presets, the moment
    a follow-up is overdue at). Every view reads one portal: the one `?portal=` chooses, else
    the served one (`pinned_portal`, the portal YAML's `portal.member_id`, else the portal ingest
    learned).
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.pool = await create_pool(database_url, max_size=5)
        try:
            yield
        finally:
            await app.state.pool.close()

    # No Swagger UI or ReDoc page: they load their scripts from a CDN, which the pages' CSP and
    # an offline machine refuse. The OpenAPI document is served like the API, behind the token.
    app = FastAPI(
        title="b24-nps reports", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None
    )
    app.state.access = Access(token)
    app.state.sources = Sources(
        portal_origin=portal_origin(portal_url) if portal_url else None,
        rabbitmq_url=rabbitmq_url,
        min_answers=min_answers,
        zone=ZoneInfo(timezone),
        field_titles=dict(field_titles or {}),
        themes=dict(themes or {}),
        dispatch=dispatch or Dispatch(),
        clock=clock,
        pinned_portal=pinned_portal,
    )
    api = APIRouter(prefix="/api", dependencies=[Depends(api_guard)])
    api.add_api_route("/report", report_endpoint, methods=["GET"])
    api.add_api_route("/scores", scores_endpoint, methods=["GET"])
    app.include_router(api)
    app.mount("/static", StaticFiles(packages=[pages.STATIC_PACKAGE]), name="static")

    @app.get("/openapi.json", include_in_schema=False, dependencies=[Depends(api_guard)])
    async def openapi() -> dict[str, Any]:
        return app.openapi()

    for path in VIEWS:
        app.add_api_route(path, page, methods=["GET"], include_in_schema=False)
    app.add_api_route("/ratings.csv", ratings_csv, methods=["GET"], include_in_schema=False)
    app.add_api_route("/asked.csv", asked_csv, methods=["GET"], include_in_schema=False)
    app.add_api_route("/followup.csv", followup_csv, methods=["GET"], include_in_schema=False)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app
