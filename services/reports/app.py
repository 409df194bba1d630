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

Inside a Bitrix24 portal (application mode): `POST /frame` is the application's page as the
portal opens it; after its checks (`frame.py`) the portal's user gets a session (`?s=`,
`frame_session.py`) with which every page, CSV and API above reads that portal only, and
`/settings` edits the portal's configuration (`shared/portal_store.py`).
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import date, datetime
from typing import Annotated, Any
from urllib.parse import parse_qsl, urlencode
from zoneinfo import ZoneInfo

import httpx
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
from services.reports.frame import (
    FrameRefused,
    chosen_portal,
    enter,
    installed_endpoint,
    portal_sources,
)
from services.reports.frame_session import SESSION_PARAM, FrameSessions, FrameUser
from services.reports.queries import (
    call_task_outcomes,
    deal_selection,
    filter_options,
    sent_dates,
)
from services.reports.views import (
    CSV_HEADER,
    FilterOptions,
    csv_row,
    csv_text,
    portal_origin,
    rating_lines,
)
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
from shared import portal_store
from shared.bitrix24.tokens import AppCredentials, OAuthServer
from shared.db import Conn, create_pool
from shared.dispatch_config import Dispatch
from shared.events import utcnow
from shared.http import read_body
from shared.logging import get_logger
from shared.portal_config import ConfigError, parse_portal_yaml
from shared.served_portal import reading_key

log = get_logger(__name__)

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


SESSION_EXPIRED = FrameRefused(
    401, "s: this session has expired or is not valid; expected a session of the frame entry"
)
MAX_FORM_BYTES = 256 * 1024
"""The largest form body read (the settings page's YAML included)."""


def _frame_user(request: Request, session: str | None) -> FrameUser | None:
    """The user of the frame `session`; None without one; `FrameRefused` (401) for a session
    that is forged or expired."""
    if session is None:
        return None
    sessions: FrameSessions = request.app.state.frame_sessions
    user = sessions.read(session)
    if user is None:
        raise SESSION_EXPIRED
    return user


async def _scoped(conn: Conn, request: Request, user: FrameUser | None) -> Sources:
    """The sources a request reads: the app's, or those of the session's portal only."""
    sources: Sources = request.app.state.sources
    if user is None:
        return sources
    return await portal_sources(conn, sources, user, request.app.state.template)


def _own_portal(options: FilterOptions, user: FrameUser | None) -> FilterOptions:
    """A session's filter form offers its own portal only (other portals stay unnamed)."""
    return options if user is None else replace(options, portals=(user.member_id,))


def _frame_headers(sources: Sources) -> dict[str, str]:
    """A session's pages may be framed by its portal's pages (and nothing else)."""
    origin = sources.portal_origin or "'none'"
    return {"Content-Security-Policy": pages.frame_policy(origin)}


def _refused(exc: FrameRefused) -> Response:
    """A refused entry or session: what is wrong (it holds no data, so any page may frame it:
    the portal shows it in its frame)."""
    return _html(
        pages.frame_refused_page(exc.message),
        exc.status,
        {"Content-Security-Policy": pages.frame_policy("*")},
    )


async def api_guard(request: Request) -> None:
    """`/api/*` needs the token (bearer header, basic auth or the dashboard's cookie), or a
    frame session (`?s=`)."""
    session = request.query_params.get(SESSION_PARAM)
    if session is not None:
        try:
            _frame_user(request, session)
        except FrameRefused as exc:
            raise HTTPException(status_code=401, detail=exc.message) from None
        return
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
    """One dashboard view, after the token (or frame session) check and with the filters of the
    query string; a frame session reads its own portal only."""
    item, view = VIEWS[request.url.path]
    session = request.query_params.get(SESSION_PARAM)
    if session is None:
        access: Access = request.app.state.access
        given = request.query_params.get("token")
        if given is not None and access.token is not None:
            return _enter(request, access.token) if access.matches(given) else _sign_in(request)
        if not _presented(request):
            return _sign_in(request)
    async with request.app.state.pool.acquire() as conn:
        try:
            user = _frame_user(request, session)
            sources = await _scoped(conn, request, user)
        except FrameRefused as exc:
            return _refused(exc)
        headers = _frame_headers(sources) if user is not None else None
        today = sources.clock().astimezone(sources.zone).date()
        try:
            filters = parse_filters(request.query_params, today, sources.themes)
        except FilterError as exc:
            portal = None if user is None else user.member_id
            options = _own_portal(await filter_options(conn, portal), user)
            body = pages.problems_page(item, options, exc.problems, session=session)
            return _html(body, 422, headers)
        if user is not None:
            try:
                chosen_portal(user, filters.portal)
            except FrameRefused as exc:
                return _refused(exc)
            filters = replace(filters, portal=None, session=session)
        filters = await sources.served(conn, filters)
        options = await filter_options(conn, filters.key)
        options = replace(
            _own_portal(options, user),
            manager_names=await user_names(conn, filters.key),
            themes=tuple(sources.themes),
        )
        return _html(await view(conn, sources, filters, options), headers=headers)


CSV_BATCH = 500
"""Answers per chunk of the CSV export."""


Records = Callable[[Conn, Sources, Filters], AsyncIterator[dict[str, Any]]]
"""The records a CSV export selects with the filters (read with the request's sources)."""
Chunk = Callable[[Conn, Sources, Sequence[dict[str, Any]], Mapping[int, str]], Awaitable[str]]
"""CSV lines of a batch of records (with the user names), reading what else they need."""


async def _csv(
    request: Request, name: str, header: Sequence[str], records: Records, chunk: Chunk
) -> Response:
    """The CSV export `name` of what `records` selects with the filters of the query string,
    streamed in batches of `CSV_BATCH` through `chunk` (a frame session's: its portal only)."""
    session = request.query_params.get(SESSION_PARAM)
    if session is None and not _presented(request):
        return _sign_in(request)
    pool = request.app.state.pool
    async with pool.acquire() as conn:
        try:
            user = _frame_user(request, session)
            sources = await _scoped(conn, request, user)
        except FrameRefused as exc:
            return _refused(exc)
    today = sources.clock().astimezone(sources.zone).date()
    try:
        filters = parse_filters(request.query_params, today, sources.themes)
        if user is not None:
            chosen_portal(user, filters.portal)
    except FilterError as exc:
        return PlainTextResponse("\n".join(exc.problems) + "\n", 422, headers=PAGE_HEADERS)
    except FrameRefused as exc:
        return _refused(exc)

    async def body() -> AsyncIterator[str]:
        yield "\ufeff" + csv_text([header])
        async with pool.acquire() as conn:
            served = await sources.served(conn, filters)
            names = await user_names(conn, served.key)
            batch: list[dict[str, Any]] = []
            async for record in records(conn, sources, served):
                batch.append(record)
                if len(batch) == CSV_BATCH:
                    yield await chunk(conn, sources, batch, names)
                    batch = []
            if batch:
                yield await chunk(conn, sources, batch, names)

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

    async def records(
        conn: Conn, sources: Sources, filters: Filters
    ) -> AsyncIterator[dict[str, Any]]:
        query = filters.ratings(sources.themes)
        if filters.deal is not None:
            query, _requests = await deal_selection(conn, query, filters.key, filters.deal)
        async for record in all_ratings(conn, query, batch=CSV_BATCH):
            yield record

    async def chunk(
        conn: Conn, sources: Sources, batch: Sequence[dict[str, Any]], names: Mapping[int, str]
    ) -> str:
        sent = await sent_dates(conn, batch, None)
        lines = rating_lines(batch, sources.portal_origin, sources.zone, names, sent)
        return csv_text([csv_row(line) for line in lines])

    return await _csv(request, "ratings", CSV_HEADER, records, chunk)


async def asked_csv(request: Request) -> Response:
    """Every request the "Asked" page selects with the same query string, as CSV."""

    def records(conn: Conn, sources: Sources, filters: Filters) -> AsyncIterator[dict[str, Any]]:
        return asked_requests(conn, filters.asked(sources.zone_name), batch=CSV_BATCH)

    async def chunk(
        conn: Conn, sources: Sources, batch: Sequence[dict[str, Any]], names: Mapping[int, str]
    ) -> str:
        lines = asked_lines(
            batch,
            sources.portal_origin,
            sources.dispatch,
            zone=sources.zone,
            names=names,
            outcomes=await call_task_outcomes(conn, batch),
        )
        return csv_text([asked_csv_row(line) for line in lines])

    return await _csv(request, "asked", ASKED_CSV_HEADER, records, chunk)


async def followup_csv(request: Request) -> Response:
    """Every open overdue lead and task the follow-up page selects with the same query string
    (overdue at the moment of the request), as CSV."""
    now = request.app.state.sources.clock()

    def records(conn: Conn, sources: Sources, filters: Filters) -> AsyncIterator[dict[str, Any]]:
        return all_overdue(conn, now, filters.followup(sources.zone), batch=CSV_BATCH)

    async def chunk(
        conn: Conn, sources: Sources, batch: Sequence[dict[str, Any]], names: Mapping[int, str]
    ) -> str:
        lines = overdue_lines(batch, sources.portal_origin, zone=sources.zone, names=names)
        return csv_text([followup_csv_row(line) for line in lines])

    return await _csv(request, "followup", FOLLOWUP_CSV_HEADER, records, chunk)


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
    """`query` of the portal `portal=` chose, else of the served one; a frame session's of its
    own portal only (another one refused with 403)."""
    try:
        user = _frame_user(request, request.query_params.get(SESSION_PARAM))
        if user is not None:
            chosen_portal(user, query.portal)
            await installed_endpoint(conn, user.member_id)
    except FrameRefused as exc:
        raise HTTPException(status_code=exc.status, detail=exc.message) from None
    if user is not None:
        return query.model_copy(update={"portal": user.member_id})
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


async def _form(request: Request) -> dict[str, str]:
    """The request's form-encoded body; `FrameRefused` (400/413) when it cannot be read (a
    larger one refused as soon as it passes `MAX_FORM_BYTES`, never read whole)."""

    def too_large() -> FrameRefused:
        return FrameRefused(413, f"the form is larger than {MAX_FORM_BYTES // 1024} KB")

    body = await read_body(request, MAX_FORM_BYTES, too_large)
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise FrameRefused(400, "the form is not UTF-8") from None
    return dict(parse_qsl(text, keep_blank_values=True))


async def frame_entry(request: Request) -> Response:
    """`POST /frame`: the application's page (its handler URL) and widgets as the portal opens
    them, with the opening user's form. Checked (`frame.enter`), then on to the dashboard with
    a session of that user on that portal: the trend, or from a contact card's tab that
    contact's ratings, from a deal card's tab that deal's surveys and answers."""
    try:
        form = await _form(request)
        async with request.app.state.pool.acquire() as conn:
            handler = f"{request.app.state.public_url}/frame"
            entrant = await enter(
                conn,
                request.app.state.frame_http,
                form,
                handler=handler,
                oauth=request.app.state.frame_oauth,
            )
    except FrameRefused as exc:
        return _refused(exc)
    sessions: FrameSessions = request.app.state.frame_sessions
    session = sessions.issue(entrant.member_id, entrant.user_id, admin=entrant.admin)
    log.info(
        "frame_opened",
        member_id=entrant.member_id,
        placement=entrant.placement,
        admin=entrant.admin,
    )
    if entrant.contact is not None:
        target = "/ratings" + Filters(contact=entrant.contact, session=session).query_string()
    elif entrant.deal is not None:
        target = "/ratings" + Filters(deal=entrant.deal, session=session).query_string()
    else:
        target = "/" + Filters(session=session).query_string()
    return RedirectResponse(target, status_code=303, headers=PAGE_HEADERS)


def _problems(message: str) -> tuple[str, ...]:
    """The problems of a `ConfigError` message, one per field (`nps config check`'s lines)."""
    listed = tuple(
        line.strip()[2:] for line in message.splitlines() if line.strip().startswith("- ")
    )
    return listed or (message,)


async def _settings_form(
    conn: Conn, request: Request, user: FrameUser, session: str
) -> pages.SettingsForm:
    """The settings page of `user`'s portal as stored (else the deployment's template); a
    stored one that no longer validates is shown with its problems, to be fixed."""
    sessions: FrameSessions = request.app.state.frame_sessions
    stored = await portal_store.load_text(conn, user.member_id)
    csrf = sessions.csrf(user)
    if stored is not None:
        by = f" by {stored.updated_by}" if stored.updated_by else ""
        source = f"stored version {stored.version}, saved {stored.updated_at:%Y-%m-%d %H:%M %Z}{by}"
        try:
            parse_portal_yaml(stored.text, source=f"portal {user.member_id}'s configuration")
        except ConfigError as exc:
            source += (
                "; it no longer validates: a service started since serves this portal on the"
                " deployment's portal YAML until it is fixed"
            )
            return pages.SettingsForm(
                session,
                csrf,
                stored.text,
                stored.version,
                source,
                may_save=user.admin,
                problems=_problems(str(exc)),
            )
        return pages.SettingsForm(
            session, csrf, stored.text, stored.version, source, may_save=user.admin
        )
    template: str | None = request.app.state.template_text
    source = (
        "nothing stored for this portal yet: the deployment's portal YAML (its template) is shown"
        if template is not None
        else "nothing stored for this portal yet, and the deployment has no portal YAML"
    )
    return pages.SettingsForm(session, csrf, template or "", None, source, may_save=user.admin)


async def settings_page(request: Request) -> Response:
    """`GET /settings?s=…`: the session's portal's configuration in an editor."""
    session = request.query_params.get(SESSION_PARAM)
    async with request.app.state.pool.acquire() as conn:
        try:
            user = _session_user(request, session)
            sources = await _scoped(conn, request, user)
        except FrameRefused as exc:
            return _refused(exc)
        form = await _settings_form(conn, request, user, session or "")
    return _html(pages.settings_page(form), headers=_frame_headers(sources))


def _session_user(request: Request, session: str | None) -> FrameUser:
    """The user of the frame `session`, which a request must have; `FrameRefused` (401)."""
    user = _frame_user(request, session or "")
    if user is None:
        raise SESSION_EXPIRED
    return user


def _editor(request: Request, session: str, csrf: str | None) -> FrameUser:
    """The user of `session` when the form's `csrf` is its token and they administer the
    portal; `FrameRefused` (401/403) otherwise."""
    user = _session_user(request, session)
    sessions: FrameSessions = request.app.state.frame_sessions
    if not sessions.csrf_matches(user, csrf):
        raise FrameRefused(403, "csrf: missing or wrong; reload the settings page")
    if not user.admin:
        raise FrameRefused(403, "only the portal's administrators may change its configuration")
    return user


def _version(raw: str) -> int | None:
    if raw == "":
        return None
    if raw.isascii() and raw.isdigit():
        return int(raw)
    raise FrameRefused(400, f"version: expected the stored version's number, got {raw[:20]!r}")


async def settings_save(request: Request) -> Response:
    """`POST /settings`: save the portal's configuration, validated like `nps config check`
    (nothing stored when it is invalid: 422 naming each field), against the version the editor
    started from (a concurrent edit: 409), CSRF-checked, by a portal administrator only."""
    try:
        fields = await _form(request)
        session = fields.get(SESSION_PARAM, "")
        user = _editor(request, session, fields.get("csrf"))
        version = _version(fields.get("version", ""))
        text = fields.get("yaml", "")
    except FrameRefused as exc:
        return _refused(exc)
    async with request.app.state.pool.acquire() as conn:
        try:
            sources = await _scoped(conn, request, user)
        except FrameRefused as exc:
            return _refused(exc)
        headers = _frame_headers(sources)
        form = await _settings_form(conn, request, user, session)
        edited = replace(form, text=text, version=version)
        try:
            await portal_store.save(
                conn, user.member_id, text, by=f"user {user.user_id}", expected_version=version
            )
        except ConfigError as exc:
            body = pages.settings_page(replace(edited, problems=_problems(str(exc))))
            return _html(body, 422, headers)
        except portal_store.StaleConfigError as exc:
            return _html(pages.settings_page(replace(edited, conflict=str(exc))), 409, headers)
        log.info("portal_config_saved", member_id=user.member_id)
        saved = await _settings_form(conn, request, user, session)
    return _html(pages.settings_page(replace(saved, saved=True)), headers=headers)


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
    frame_secret: str | None = None,
    template_yaml: str | None = None,
    portal_transport: httpx.AsyncBaseTransport | None = None,
    public_url: str = "http://127.0.0.1:8001",
    app_credentials: AppCredentials | None = None,
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

    Inside a Bitrix24 portal (application mode) `POST /frame` opens the dashboard for the
    portal's user, on a session signed with `frame_secret` (random per process when None) that
    reads that portal only; `/settings` edits the portal's configuration (`template_yaml`, the
    deployment's portal YAML, is shown while none is stored). `portal_transport` carries the
    calls to the portals (tests). `public_url` is where the portals reach the app
    (`REPORTS_PUBLIC_URL`): the contact and deal cards' tabs are bound to its `/frame`.
    `app_credentials` (the application's, `BITRIX24_OAUTH_URL`/`CLIENT_ID`/`CLIENT_SECRET`)
    verify a frame's user token with the OAuth server; without them `POST /frame` is refused.
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.pool = await create_pool(database_url, max_size=5)
        app.state.frame_http = httpx.AsyncClient(
            transport=portal_transport,
            timeout=httpx.Timeout(15.0, connect=5.0),
            headers={"Accept": "application/json"},
            follow_redirects=False,
        )
        app.state.frame_oauth = (
            OAuthServer(app_credentials, portal_transport) if app_credentials else None
        )
        try:
            yield
        finally:
            await app.state.frame_http.aclose()
            if app.state.frame_oauth is not None:
                await app.state.frame_oauth.aclose()
            await app.state.pool.close()

    # No Swagger UI or ReDoc page: they load their scripts from a CDN, which the pages' CSP and
    # an offline machine refuse. The OpenAPI document is served like the API, behind the token.
    app = FastAPI(
        title="b24-nps reports", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None
    )
    app.state.access = Access(token)
    app.state.frame_sessions = FrameSessions(frame_secret or secrets.token_urlsafe(32))
    app.state.public_url = public_url.rstrip("/")
    app.state.template_text = template_yaml
    app.state.template = (
        None
        if template_yaml is None
        else parse_portal_yaml(template_yaml, source="the deployment's portal YAML")
    )
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
    app.add_api_route("/frame", frame_entry, methods=["POST"], include_in_schema=False)
    app.add_api_route(pages.SETTINGS_PATH, settings_page, methods=["GET"], include_in_schema=False)
    app.add_api_route(pages.SETTINGS_PATH, settings_save, methods=["POST"], include_in_schema=False)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app
