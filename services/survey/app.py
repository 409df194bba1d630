"""The public survey page (docs/survey.md).

`GET /s/<token>` shows the form of the link's request (with `?score=<n>` preselected, or the
answer already given, which may be changed until the link expires); the first time, it records
that the link was opened (`survey.opened`, once per request). `POST /s/<token>` stores the
answer, then redirects to `GET /s/<token>/thanks`, the thank-you page of its NPS category.
`GET /s/<token>/optout` asks whether the customer wants no more surveys (a GET never opts out:
mail scanners fetch links); `POST /s/<token>/optout` records it (`survey.opted_out`, once per
request) and redirects to the same page, which then says it is done. A link that is expired
answers 410, one that is tampered or unknown 404: a friendly page, nothing stored.

It faces the internet: every response carries a strict Content-Security-Policy and the other
security headers; each client address and each link has a request limit per minute; a body is
read up to 16 KB; a form is accepted only with its signed CSRF field matching the browser's
cookie (double submit); link signatures are checked in constant time; no token, answer or
contact reaches a log line.

Each portal's customers see its own page (`page_for`: its configuration's `survey_page` over the
page YAML): its company's name, logo, texts and review links. A logo is served at
`/logo/<sha256 of its bytes>` (`GET /logo/<hash>`, cacheable for a year: the same URL is always
the same image), never per link.
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib.resources import files
from typing import Any

import asyncpg
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from jinja2 import ChoiceLoader, Environment, FileSystemLoader, PackageLoader, StrictUndefined
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.survey.form import (
    MAX_BODY_BYTES,
    Answer,
    FormError,
    answer_category,
    answered_event,
    draft_answer,
    parse_body,
    read_answer,
    read_score,
)
from services.survey.limits import WindowLimiter
from services.survey.links import link_path, opened_event, opted_out_event, optout_path
from services.survey.page_config import PageConfig, SurveyPage, page_for
from services.survey.requests import Asked, RequestError, SurveyRequest, asked
from services.survey.store import (
    StoredRequest,
    find_request,
    kept_logo,
    mark_opened,
    mark_opted_out,
    save_answer,
)
from services.survey.tokens import LinkSigner
from services.survey.views import (
    FORM_ERRORS,
    page_questions,
    pick_language,
    show_reviews,
    texts,
    thanks_text,
)
from shared.events import utcnow
from shared.logging import get_logger
from shared.outbox import Outbox
from shared.portal_config import PortalConfig
from shared.portals import PortalConfigs, PortalGoneError, UnknownPortalError
from shared.survey_page import LOGO_PATH, Logo

log = get_logger(__name__)

CONTENT_SECURITY_POLICY = (
    "default-src 'none'; style-src 'self'; img-src 'self';"
    " form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), interest-cohort=()",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}
LOGO_HASH = re.compile(r"[0-9a-f]{64}")
"""What `/logo/<sha256>` takes: anything else is not found, without asking the database."""
LOGO_HEADERS = {
    "Cache-Control": "public, max-age=31536000, immutable",
    "Cross-Origin-Resource-Policy": "cross-origin",
}
"""A logo's URL names its content: cached for a year, and shown by the e-mails' readers too."""
HSTS = "max-age=31536000"
CSRF_COOKIE = "nps_survey"


@dataclass(frozen=True)
class PageSetup:
    """Everything the page needs besides the database."""

    portal: PortalConfig | PortalConfigs
    """The portal YAML, or the configurations of the portals served (application mode): a
    link's page asks what its request's portal's configuration says."""
    page: PageConfig
    signer: LinkSigner
    secure: bool
    """Served over HTTPS (the public URL): cookies are `Secure` and HSTS is sent."""
    rate_per_minute: int = 30
    clock: Callable[[], float] = time.monotonic

    def config_of(self, request: SurveyRequest) -> PortalConfig:
        """The configuration of `request`'s portal (`RequestError` when it is no longer
        served: the application uninstalled there)."""
        if isinstance(self.portal, PortalConfig):
            return self.portal
        try:
            return self.portal.get(request.portal)
        except (UnknownPortalError, PortalGoneError) as exc:
            raise RequestError(str(exc)) from exc

    def logos(self) -> list[Logo]:
        """Every logo a page may show: the page YAML's and each served portal's own."""
        configs = [self.portal] if isinstance(self.portal, PortalConfig) else self.portal.values()
        found = [page_for(self.page, None).logo]
        found += [c.survey_page.company.logo for c in configs if c.survey_page is not None]
        return [logo for logo in found if logo is not None]


def _environment(page: PageConfig) -> Environment:
    loaders: list[Any] = [PackageLoader("services.survey", "templates")]
    if page.templates is not None:
        loaders.insert(0, FileSystemLoader(page.templates))
    return Environment(
        loader=ChoiceLoader(loaders),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


@dataclass(frozen=True)
class Opened:
    """A link that checked out: its token, request, what its page asks, the answer it has
    received so far and whether its form has been shown before."""

    token: str
    request: SurveyRequest
    asked: Asked
    answer: Answer | None
    page: SurveyPage
    """Its portal's page (texts, company, logo)."""
    seen: bool = False

    def texts(self) -> dict[str, str]:
        deal = self.asked.deal_survey
        return texts(self.page.config, self.request.lang, None if deal is None else deal.name)


class Survey:
    """The handlers, with the setup they share."""

    def __init__(self, pool: asyncpg.Pool, outbox: Outbox, setup: PageSetup) -> None:
        self.pool = pool
        self.outbox = outbox
        self.setup = setup
        self.env = _environment(setup.page)
        self.deployment = page_for(setup.page, None)
        """The page of what has no portal (a broken link)."""
        self.by_address = WindowLimiter(setup.rate_per_minute, setup.clock)
        self.by_link = WindowLimiter(max(1, setup.rate_per_minute // 2), setup.clock)

    def render(
        self, name: str, lang: str, page: SurveyPage, status: int = 200, **context: Any
    ) -> HTMLResponse:
        html = self.env.get_template(name).render(
            lang=lang,
            company=page.config.company.name,
            logo=None if page.logo is None else page.logo.path,
            **context,
        )
        return HTMLResponse(html, status_code=status)

    def refuse(self, request: Request, kind: str, status: int) -> HTMLResponse:
        lang = pick_language(request.headers.get("accept-language"))
        text = texts(self.deployment.config, lang)
        return self.render(
            "error.html",
            lang,
            self.deployment,
            status,
            t=text,
            title=text[f"{kind}_title"],
            text=text[f"{kind}_text"],
        )

    async def find(self, request: Request, token: str) -> StoredRequest | HTMLResponse:
        """The link's stored request, or the page that says why the link cannot be used."""
        check = self.setup.signer.check(token)
        if check.status == "expired":
            return self.refuse(request, "gone", 410)
        if check.request_id is None:
            return self.refuse(request, "unknown", 404)
        async with self.pool.acquire() as conn:
            found = await find_request(conn, check.request_id)
        if found is None:
            return self.refuse(request, "unknown", 404)
        return found

    async def open(self, request: Request, token: str) -> Opened | HTMLResponse:
        """The link's request and what its page asks, or the page that says why it cannot be
        used."""
        found = await self.find(request, token)
        if isinstance(found, HTMLResponse):
            return found
        survey = found.request
        try:
            config = self.setup.config_of(survey)
            what = asked(config, survey)
        except RequestError as exc:
            log.warning(
                "survey_request_unservable", request_id=str(survey.request_id), error=str(exc)
            )
            return self.refuse(request, "gone", 410)
        page = page_for(self.setup.page, config.survey_page)
        return Opened(token, survey, what, found.answer, page, seen=found.opened)

    def form(
        self,
        opened: Opened,
        nonce: str,
        *,
        previous: Answer | None,
        preselect: int | None = None,
        error: str | None = None,
        status: int = 200,
        draft: Answer | None = None,
    ) -> HTMLResponse:
        """The form, filled with `draft` (a refused form's input) or else the answer given."""
        survey, what = opened.request, opened.asked
        text = opened.texts()
        company = opened.page.config.company.name
        questions = page_questions(
            what.products,
            what.scale,
            text,
            cosmetics=what.cosmetics,
            company=company,
            previous=draft or previous,
            preselect=preselect,
        )
        shown = draft or previous
        heading = text["question"].format(company=company, product="") if what.cosmetics else ""
        return self.render(
            "page.html",
            survey.lang,
            opened.page,
            status,
            t=text,
            heading=heading,
            questions=questions,
            binary=what.scale == "binary",
            service_box=what.service_box,
            service_checked=shown is not None and shown.service_request,
            comment=(shown.comment or "") if shown is not None else "",
            answered=previous is not None,
            error=None if error is None else text[FORM_ERRORS[error]],
            action=link_path(opened.token),
            optout_url=optout_path(opened.token),
            csrf=self.setup.signer.form_token(survey.request_id, nonce),
        )

    def with_cookie(self, response: Response, nonce: str) -> Response:
        response.set_cookie(
            CSRF_COOKIE,
            nonce,
            path="/s/",
            httponly=True,
            samesite="strict",
            secure=self.setup.secure,
        )
        return response

    async def record_opened(self, opened: Opened) -> None:
        """The first view of a link's form: `opened_at` and `survey.opened`, in one transaction
        (a later or concurrent view finds it recorded and queues nothing)."""
        if opened.seen:
            return
        survey = opened.request
        async with self.outbox.transaction(self.pool) as conn:
            opened_at = await mark_opened(conn, survey.request_id)
            if opened_at is not None:
                await self.outbox.enqueue(conn, [opened_event(survey, opened_at)])
        if opened_at is not None:
            log.info("survey_opened", request_id=str(survey.request_id))

    async def show(self, request: Request, token: str) -> Response:
        opened = await self.open(request, token)
        if isinstance(opened, HTMLResponse):
            return opened
        await self.record_opened(opened)
        previous = opened.answer
        try:
            preselect = read_score(request.query_params.get("score"), opened.asked.scale)
        except FormError:
            preselect = None
        nonce = request.cookies.get(CSRF_COOKIE) or secrets.token_urlsafe(16)
        page = self.form(opened, nonce, previous=previous, preselect=preselect)
        return self.with_cookie(page, nonce)

    async def submit(self, request: Request, token: str, body: bytes) -> Response:
        opened = await self.open(request, token)
        if isinstance(opened, HTMLResponse):
            return opened
        request_id, what = opened.request.request_id, opened.asked
        nonce = request.cookies.get(CSRF_COOKIE) or ""
        fields: dict[str, str] = {}
        try:
            fields = parse_body(body)
            if not self.setup.signer.form_token_valid(fields.get("csrf", ""), request_id, nonce):
                raise FormError("csrf")  # noqa: TRY301 - one way out for every form problem
            answer = read_answer(
                fields,
                what.products,
                what.scale,
                cosmetics=what.cosmetics,
                service_box=what.service_box,
            )
        except FormError as exc:
            previous = opened.answer
            fresh = nonce or secrets.token_urlsafe(16)
            status = 403 if exc.code == "csrf" else 422
            draft = draft_answer(
                fields,
                what.products,
                what.scale,
                cosmetics=what.cosmetics,
                service_box=what.service_box,
            )
            page = self.form(
                opened, fresh, previous=previous, error=exc.code, status=status, draft=draft
            )
            return self.with_cookie(page, fresh)
        async with self.outbox.transaction(self.pool) as conn:
            version = await save_answer(conn, request_id, answer)
            if version is not None:
                event = answered_event(
                    opened.request,
                    what.products,
                    answer,
                    version=version,
                    scale=what.scale,
                    answered_at=utcnow(),
                )
                await self.outbox.enqueue(conn, [event])
        log.info(
            "survey_answered",
            request_id=str(request_id),
            version=version,
            repeated=version is None,
        )
        return RedirectResponse(f"/s/{token}/thanks", status_code=303)

    async def thanks(self, request: Request, token: str) -> Response:
        opened = await self.open(request, token)
        if isinstance(opened, HTMLResponse):
            return opened
        answer = opened.answer
        if answer is None:
            return RedirectResponse(f"/s/{token}", status_code=303)
        category = answer_category(answer, opened.asked.scale)
        text = opened.texts()
        page = opened.page.config
        reviews = page.reviews.links if show_reviews(page, category) else []
        return self.render(
            "thanks.html",
            opened.request.lang,
            opened.page,
            t=text,
            category=category,
            message=thanks_text(text, category),
            reviews=reviews,
            change_url=f"/s/{token}",
        )

    def optout_page(
        self,
        found: StoredRequest,
        token: str,
        nonce: str,
        *,
        done: bool,
        error: str | None = None,
        status: int = 200,
    ) -> HTMLResponse:
        """The opt-out question (a button), or with `done` the page that says it was done."""
        survey = found.request
        try:
            config = self.setup.config_of(survey)
            deal = asked(config, survey).deal_survey
            page = page_for(self.setup.page, config.survey_page)
        except RequestError:
            # Opting out works for a request the portal YAML no longer serves.
            deal, page = None, self.deployment
        text = texts(page.config, survey.lang, None if deal is None else deal.name)
        company = page.config.company.name
        return self.render(
            "optout.html",
            survey.lang,
            page,
            status,
            t=text,
            title=text["optout_title"].format(company=company, product=""),
            message=text["optout_done" if done else "optout_text"].format(
                company=company, product=""
            ),
            done=done,
            error=None if error is None else text[FORM_ERRORS[error]],
            action=optout_path(token),
            csrf=self.setup.signer.form_token(survey.request_id, nonce),
        )

    async def optout_question(self, request: Request, token: str) -> Response:
        """`GET /s/<token>/optout`: asks, never records (mail scanners fetch links)."""
        found = await self.find(request, token)
        if isinstance(found, HTMLResponse):
            return found
        nonce = request.cookies.get(CSRF_COOKIE) or secrets.token_urlsafe(16)
        page = self.optout_page(found, token, nonce, done=found.opted_out)
        return self.with_cookie(page, nonce)

    async def opt_out(self, request: Request, token: str, body: bytes) -> Response:
        """`POST /s/<token>/optout`: with its CSRF field, the opt-out and its
        `survey.opted_out` in one transaction (once per request), then the done page."""
        found = await self.find(request, token)
        if isinstance(found, HTMLResponse):
            return found
        survey = found.request
        nonce = request.cookies.get(CSRF_COOKIE) or ""
        try:
            fields = parse_body(body)
        except FormError as exc:
            error: str | None = exc.code
        else:
            valid = self.setup.signer.form_token_valid(
                fields.get("csrf", ""), survey.request_id, nonce
            )
            error = None if valid else "csrf"
        if error is not None:
            fresh = nonce or secrets.token_urlsafe(16)
            status = 403 if error == "csrf" else 422
            page = self.optout_page(found, token, fresh, done=False, error=error, status=status)
            return self.with_cookie(page, fresh)
        async with self.outbox.transaction(self.pool) as conn:
            opted_out_at = await mark_opted_out(conn, survey.request_id)
            if opted_out_at is not None:
                await self.outbox.enqueue(conn, [opted_out_event(survey, opted_out_at)])
        log.info(
            "survey_opted_out",
            request_id=str(survey.request_id),
            repeated=opted_out_at is None,
        )
        return RedirectResponse(optout_path(token), status_code=303)

    def limited(self, request: Request) -> bool:
        """Whether the client address or the link is over its limit for this minute."""
        address = request.client.host if request.client is not None else "unknown"
        parts = request.url.path.split("/")
        link = parts[2] if len(parts) > 2 else ""
        return not (self.by_address.allow(address) and self.by_link.allow(link))


class Guard:
    """Every response gets the security headers; a client address or link over its limit gets
    the 429 page. Plain ASGI: no task per request, as a `BaseHTTPMiddleware` would cost."""

    def __init__(self, app: ASGIApp, survey: Survey, secure: bool) -> None:
        self._app = app
        self._survey = survey
        headers = {**SECURITY_HEADERS, **({"Strict-Transport-Security": HSTS} if secure else {})}
        self._headers = _encoded(headers)
        self._logo_headers = _encoded({**headers, **LOGO_HEADERS})
        self._names = {name for name, _ in self._headers}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return

        logo = str(scope["path"]).startswith(LOGO_PATH + "/")
        added = self._logo_headers if logo else self._headers

        async def secured(message: Message) -> None:
            if message["type"] == "http.response.start":
                kept = [h for h in message.get("headers", []) if h[0].lower() not in self._names]
                message["headers"] = [*kept, *added]
            await send(message)

        if str(scope["path"]).startswith("/s/"):
            request = Request(scope)
            if self._survey.limited(request):
                busy = self._survey.refuse(request, "busy", 429)
                busy.headers["Retry-After"] = "60"
                await busy(scope, receive, secured)
                return
        await self._app(scope, receive, secured)


def _encoded(headers: dict[str, str]) -> list[tuple[bytes, bytes]]:
    return [(k.lower().encode(), v.encode()) for k, v in headers.items()]


async def _bounded_body(request: Request) -> bytes | None:
    """The request body, or None when it is over `MAX_BODY_BYTES`."""
    length = request.headers.get("content-length")
    if length is not None and (not length.isdigit() or int(length) > MAX_BODY_BYTES):
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def create_app(pool: asyncpg.Pool, outbox: Outbox, setup: PageSetup) -> FastAPI:
    app = FastAPI(title="b24-nps survey", docs_url=None, redoc_url=None, openapi_url=None)
    survey = Survey(pool, outbox, setup)
    app.mount(
        "/static",
        StaticFiles(directory=str(files("services.survey").joinpath("static"))),
        name="static",
    )

    app.add_middleware(Guard, survey=survey, secure=setup.secure)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get(LOGO_PATH)
    async def deployment_logo() -> Response:
        """The page YAML's logo at its old address (e-mails sent before `/logo/<hash>`, and a
        template of the page YAML's that still points here)."""
        logo = survey.deployment.logo
        if logo is None:
            return Response(status_code=404)
        return RedirectResponse(logo.path, status_code=308)

    @app.get(LOGO_PATH + "/{sha256}")
    async def logo(sha256: str) -> Response:
        if not LOGO_HASH.fullmatch(sha256):
            return Response(status_code=404)
        found = next((logo for logo in setup.logos() if logo.sha256 == sha256), None)
        if found is None:  # one an e-mail linked to before its page changed it
            async with pool.acquire() as conn:
                found = await kept_logo(conn, sha256)
        if found is None:
            return Response(status_code=404)
        return Response(found.content, media_type=found.media_type)

    @app.get("/s/{token}")
    async def show(request: Request, token: str) -> Response:
        return await survey.show(request, token)

    def too_large(request: Request) -> Response:
        lang = pick_language(request.headers.get("accept-language"))
        text = texts(setup.page, lang)
        return survey.render(
            "error.html",
            lang,
            survey.deployment,
            413,
            t=text,
            title=text["unknown_title"],
            text=text["error_malformed"],
        )

    @app.post("/s/{token}")
    async def submit(request: Request, token: str) -> Response:
        body = await _bounded_body(request)
        if body is None:
            return too_large(request)
        return await survey.submit(request, token, body)

    @app.get("/s/{token}/thanks")
    async def thanks(request: Request, token: str) -> Response:
        return await survey.thanks(request, token)

    @app.get("/s/{token}/optout")
    async def optout_question(request: Request, token: str) -> Response:
        return await survey.optout_question(request, token)

    @app.post("/s/{token}/optout")
    async def opt_out(request: Request, token: str) -> Response:
        body = await _bounded_body(request)
        if body is None:
            return too_large(request)
        return await survey.opt_out(request, token, body)

    return app
