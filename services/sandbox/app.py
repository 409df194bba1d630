"""The HTTP face of the sandbox: for each portal Bitrix24's inbound-webhook URLs, JSON
inspection and control endpoints under ``/sandbox``, and the item and contact pages Bitrix24
links to — the default portal at the root, named portals under ``/p/<name>/`` — plus the OAuth
server and the application's side (``app_routes``)."""

import asyncio
import contextlib
import json
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import httpx
from fastapi import APIRouter, FastAPI, HTTPException, Query, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel, Field, ValidationError
from starlette.routing import Mount
from starlette.types import ASGIApp, Receive, Scope, Send

from services.sandbox.app_routes import application_router, oauth_router, portals_router
from services.sandbox.delivery import EventSender
from services.sandbox.errors import RestError
from services.sandbox.faults import Faults
from services.sandbox.http_params import read_params
from services.sandbox.inbox import Inbox
from services.sandbox.inbox_pages import (
    HTML_PART_HEADERS,
    LIST_HEADERS,
    MESSAGE_HEADERS,
    html_part,
    inbox_page,
    message_page,
    missing_page,
)
from services.sandbox.limits import Limits
from services.sandbox.methods import CONTACT, DEAL, LEAD
from services.sandbox.pages import PAGE_HEADERS, record_page
from services.sandbox.persistence import save_portal
from services.sandbox.portal import ITEM_EVENTS, SandboxPortal
from services.sandbox.portals import Host, Sandbox
from services.sandbox.sales import SalesError, close_sales
from services.sandbox.seed import (
    ConfigError,
    add_answer_items,
    answer_nps_deals,
    make_answers,
    open_nps_deals,
)
from services.sandbox.smtp import DEFAULT_SMTP_PORT, start_smtp
from services.sandbox.values import FieldValueError
from services.sandbox.views import render_item, render_legacy
from services.sandbox.work import Step, WorkError, handle


class HandlerIn(BaseModel):
    url: str
    events: list[str] = Field(default_factory=lambda: list(ITEM_EVENTS))


class AnswersIn(BaseModel):
    """Either ``count`` random answers (``seed`` for repeatability, ``spread_days`` to
    back-date them) or explicit ``items`` (item fields, UPPER or camelCase names); ``deals``
    NPS deals opened for closed sales, answered unless ``answer_deals`` is false."""

    count: int = Field(default=0, ge=0, le=100_000)
    seed: int | None = None
    spread_days: float = Field(default=0.0, ge=0)
    items: list[dict[str, Any]] = Field(default_factory=list)
    deals: int = Field(default=0, ge=0, le=100_000)
    answer_deals: bool = True


@dataclass
class LocalInbox:
    """The inbox and its SMTP server: where it was asked to listen (``port`` 0: any free port;
    no ``host``: no server), where it listens once started, or why it could not."""

    inbox: Inbox = field(default_factory=Inbox)
    host: str | None = None
    port: int = DEFAULT_SMTP_PORT
    listening: bool = False
    error: str | None = None

    def describe(self) -> dict[str, Any]:
        return {
            "smtp_host": self.host,
            "smtp_port": self.port if self.listening else None,
            "listening": self.listening,
            "error": self.error,
            "received": self.inbox.received,
        }

    def summary(self) -> str:
        if self.listening:
            return f"SMTP on {self.host}:{self.port}"
        return f"no SMTP server ({self.error})" if self.error else "no SMTP server"


@dataclass(frozen=True)
class SalesClosing:
    """Close ``count`` sales every ``every_s`` seconds while the sandbox runs (the demo's
    customers buying)."""

    count: int
    every_s: float


def create_app(
    portal: "SandboxPortal | Sandbox",
    *,
    event_transport: httpx.AsyncBaseTransport | None = None,
    event_timeout_s: float = 5.0,
    state_file: Path | None = None,
    save_interval_s: float = 2.0,
    mail: LocalInbox | None = None,
    closing: SalesClosing | None = None,
) -> FastAPI:
    """An ASGI app serving ``portal`` at the root paths, or a whole :class:`Sandbox`: its
    default portal at the root, each named portal under ``/p/<name>/`` (also those added
    later, ``POST /sandbox/portals``), and the OAuth server. Events go out through
    ``event_transport`` (tests pass an ``httpx.MockTransport``); with ``state_file`` (or a
    host's own) the data is saved every ``save_interval_s`` while it changes and at shutdown.
    ``mail`` is the local inbox (its SMTP server starts with the app when it has a host); with
    ``closing``, sales close on a timer."""
    sandbox = portal if isinstance(portal, Sandbox) else Sandbox(portal)
    if state_file is not None:
        sandbox.default.state_file = state_file
    default = sandbox.default.portal
    senders = Senders(transport=event_transport, timeout_s=event_timeout_s)
    mail = mail or LocalInbox()

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        tasks = [asyncio.create_task(_autosave(sandbox, save_interval_s))]
        if closing is not None:
            tasks.append(asyncio.create_task(_close_sales(sandbox, senders, closing)))
        smtp = await _start_smtp(mail, default)
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            if smtp is not None:
                smtp.close()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(smtp.wait_closed(), 2)
            await senders.drain()
            for host in sandbox.hosts():
                if host.state_file is not None:
                    save_portal(host.portal, host.state_file)

    app = FastAPI(title="Bitrix24 sandbox portal", lifespan=lifespan)
    app.state.sandbox = sandbox

    @app.middleware("http")
    async def send_events(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        if sandbox.server.base_url is None:
            sandbox.learn_base_url(str(request.base_url))
        response = await call_next(request)
        senders.dispatch(sandbox)
        return response

    app.include_router(_rest_router(default))
    app.include_router(_sandbox_router(default, mail, _root_base))
    app.include_router(_sales_router(default))
    app.include_router(_record_pages_router(default))
    app.include_router(_inbox_router(mail))
    app.include_router(oauth_router(sandbox))
    app.include_router(portals_router(sandbox))

    def build(host: Host) -> ASGIApp:
        return _portal_app(host, sandbox, mail, senders)

    app.router.routes.append(Mount("/p/{name}", app=_named_portals(sandbox, build)))
    return app


class Senders:
    """One event sender per portal: each portal's events go out on their own."""

    def __init__(self, *, transport: httpx.AsyncBaseTransport | None, timeout_s: float) -> None:
        self.transport = transport
        self.timeout_s = timeout_s
        self._senders: dict[int, EventSender] = {}

    def of(self, portal: SandboxPortal) -> EventSender:
        sender = self._senders.get(id(portal))
        if sender is None:
            sender = EventSender(portal, transport=self.transport, timeout_s=self.timeout_s)
            self._senders[id(portal)] = sender
        return sender

    def dispatch(self, sandbox: "Sandbox") -> None:
        for host in sandbox.hosts():
            self.of(host.portal).dispatch()

    async def drain(self) -> None:
        for sender in list(self._senders.values()):
            await sender.drain()


def _root_base(request: Request) -> str:
    return str(request.base_url)


def _named_portals(sandbox: "Sandbox", build: Callable[[Host], ASGIApp]) -> ASGIApp:
    """``/p/<name>/…``: the named portal's own app (404 naming the portal when none)."""
    apps: dict[str, ASGIApp] = {}

    async def dispatch(scope: Scope, receive: Receive, send: Send) -> None:
        name = str(scope.get("path_params", {}).get("name", ""))
        host = sandbox.get(name)
        if host is None:
            known = ", ".join(sorted(sandbox.named)) or "none"
            response = JSONResponse(
                {"detail": f"no portal named {name!r} (named portals: {known})"}, 404
            )
            await response(scope, receive, send)
            return
        app = apps.get(name)
        if app is None:
            app = apps[name] = build(host)
        await app(scope, receive, send)

    return dispatch


def _portal_app(host: Host, sandbox: "Sandbox", mail: LocalInbox, senders: Senders) -> FastAPI:
    """A named portal's own paths, under ``/p/<name>/``: the same webhook REST, inspection,
    control and record pages as the default portal, plus the application's side."""
    portal = host.portal
    name = host.name

    def base(request: Request) -> str:
        return f"{str(request.base_url).rstrip('/')}/p/{name}/"

    app = FastAPI(title=f"Bitrix24 sandbox portal {name}")
    app.include_router(_rest_router(portal))
    app.include_router(_sandbox_router(portal, mail, base))
    app.include_router(_sales_router(portal))
    app.include_router(_record_pages_router(portal))
    app.include_router(application_router(host, sandbox, senders.transport, senders.timeout_s))
    return app


async def _start_smtp(mail: LocalInbox, portal: SandboxPortal) -> asyncio.Server | None:
    """The inbox's SMTP server, when asked for. A port already taken leaves the portal
    running without it, said on stderr and in ``/sandbox/info`` (several sandboxes may run at
    once, e.g. under the test harness; only one can have the default port)."""
    if mail.host is None:
        return None
    try:
        server = await start_smtp(mail.inbox, mail.host, mail.port, portal.clock)
    except OSError as exc:
        mail.error = f"cannot listen on {mail.host}:{mail.port}: {exc.strerror or exc}"
        sys.stderr.write(
            f"Sandbox inbox: {mail.error}; the portal runs without it"
            " (SANDBOX_SMTP_PORT / --smtp-port move it)\n"
        )
        return None
    mail.port = int(server.sockets[0].getsockname()[1])
    mail.listening = True
    return server


def _inbox_router(mail: LocalInbox) -> APIRouter:
    """The local inbox: ``/inbox`` (the list), ``/inbox/<n>`` (a message), ``/inbox.json``."""
    router = APIRouter(include_in_schema=False)

    @router.get("/inbox")
    async def inbox() -> HTMLResponse:
        page = inbox_page(mail.inbox.messages(), received=mail.inbox.received, smtp=mail.summary())
        return HTMLResponse(page, headers=LIST_HEADERS)

    @router.get("/inbox.json")
    async def inbox_json(to: str | None = None) -> dict[str, Any]:
        wanted = to.lower() if to else None
        messages = [
            message.to_json()
            for message in mail.inbox.messages()
            if wanted is None
            or any(wanted in address.lower() for address in (message.to, *message.envelope_to))
        ]
        return {**mail.describe(), "messages": messages}

    @router.get("/inbox/{number}")
    async def message(number: int) -> HTMLResponse:
        found = mail.inbox.get(number)
        if found is None:
            return HTMLResponse(missing_page(number), status_code=404, headers=LIST_HEADERS)
        return HTMLResponse(message_page(found), headers=MESSAGE_HEADERS)

    @router.get("/inbox/{number}/html")
    async def message_html(number: int) -> HTMLResponse:
        found = mail.inbox.get(number)
        if found is None or found.html is None:
            return HTMLResponse(missing_page(number), status_code=404, headers=LIST_HEADERS)
        return HTMLResponse(html_part(found), headers=HTML_PART_HEADERS)

    return router


async def _close_sales(sandbox: "Sandbox", senders: Senders, closing: SalesClosing) -> None:
    """Sales close on the default portal and on every seeded named portal."""
    while True:
        await asyncio.sleep(closing.every_s)
        for host in sandbox.hosts():
            if host.name is not None and not host.seeded:
                continue
            try:
                close_sales(host.portal, closing.count)
            except SalesError as exc:
                where = f" on portal {host.name}" if host.name else ""
                sys.stderr.write(f"Sandbox: closing sales{where} failed: {exc}\n")
        senders.dispatch(sandbox)


def _record_pages_router(portal: SandboxPortal) -> APIRouter:
    """Bitrix24's pages of an item and of a contact, where the dashboard's links lead."""
    router = APIRouter(include_in_schema=False)

    def _page(body: str, status_code: int = 200) -> HTMLResponse:
        return HTMLResponse(body, status_code=status_code, headers=PAGE_HEADERS)

    @router.get("/crm/type/{entity_type_id}/details/{item_id}/")
    async def item_page(entity_type_id: int, item_id: int) -> HTMLResponse:
        etype = portal.crm.entity_type(entity_type_id)
        record = portal.crm.get(entity_type_id, item_id) if etype is not None else None
        if etype is None or record is None:
            title = f"No item {item_id} of smart process {entity_type_id}"
            return _page(record_page(title, {}), 404)
        fields = render_item(etype, record, original_uf=True)
        return _page(record_page(f"{etype.title} #{item_id}", fields))

    @router.get("/crm/deal/details/{deal_id}/")
    async def deal_page(deal_id: int) -> HTMLResponse:
        etype = portal.crm.entity_type(DEAL)
        record = portal.crm.get(DEAL, deal_id)
        if etype is None or record is None:
            return _page(record_page(f"No deal {deal_id}", {}), 404)
        details = deal_details(portal, deal_id)
        sections = [
            ("Product rows", [_row_summary(row) for row in details["product_rows"]]),
            ("Stage history", details["stage_history"]),
            ("Automation triggers fired", details["triggers"]),
            ("Timeline log entries", details["log_messages"]),
            ("Timeline comments", details["comments"]),
            ("Tasks", details["tasks"]),
        ]
        note = f"As JSON: /sandbox/deals/{deal_id}"
        fields = render_legacy(etype, record)
        return _page(record_page(f"Deal #{deal_id}", fields, note=note, sections=sections))

    @router.get("/crm/contact/details/{contact_id}/")
    async def contact_page(contact_id: int) -> HTMLResponse:
        etype = portal.crm.entity_type(CONTACT)
        record = portal.crm.get(CONTACT, contact_id)
        if etype is None or record is None:
            return _page(record_page(f"No contact {contact_id}", {}), 404)
        note = f"Every change of every field: /sandbox/contacts/{contact_id}/history"
        return _page(record_page(f"Contact #{contact_id}", render_legacy(etype, record), note=note))

    return router


def _rest_router(portal: SandboxPortal) -> APIRouter:
    """``/rest/<user>/<secret>/<method>[.json]``: GET query, POST JSON or form body."""
    router = APIRouter()

    @router.api_route("/rest/{user}/{secret}/{method}", methods=["GET", "POST"])
    async def rest(user: str, secret: str, method: str, request: Request) -> JSONResponse:
        try:
            params = await read_params(request)
        except ValueError as exc:
            status, body = portal.reject(method, RestError(400, "INVALID_REQUEST", str(exc)))
            return JSONResponse(body, status_code=status)
        refused = portal.arrive(method, auth=(user, secret))
        if refused is not None:
            status, body = refused
            return JSONResponse(body, status_code=status)
        delay = portal.delay(method)
        if delay:
            await asyncio.sleep(delay)
        status, body = portal.call(method, params, arrived=True)
        return JSONResponse(body, status_code=status)

    return router


def _sandbox_router(
    portal: SandboxPortal, mail: LocalInbox, base: Callable[[Request], str]
) -> APIRouter:
    """JSON inspection and control of the portal, for tests and demos (``base``: where the
    portal's paths start)."""
    router = APIRouter(prefix="/sandbox")

    @router.get("/info")
    async def info(request: Request) -> dict[str, Any]:
        return {**portal.info(base(request)), "inbox": mail.describe()}

    @router.get("/calls")
    async def calls(method: str | None = None, limit: int | None = None) -> dict[str, Any]:
        return portal.calls_report(method=method, limit=limit)

    @router.get("/contacts/{contact_id}/history")
    async def contact_history(contact_id: int) -> dict[str, Any]:
        if portal.crm.get(CONTACT, contact_id) is None:
            raise HTTPException(404, f"contact {contact_id} not found")
        changes = portal.crm.history(CONTACT, contact_id)
        return {"id": contact_id, "changes": [change.model_dump() for change in changes]}

    @router.get("/deals")
    async def deals(category_id: int | None = None) -> dict[str, Any]:
        return {"deals": _deals(portal, category_id)}

    @router.get("/leads")
    async def leads() -> dict[str, Any]:
        return {"leads": list(portal.crm.records(LEAD).values())}

    @router.get("/tasks")
    async def tasks() -> dict[str, Any]:
        return {"tasks": list(portal.state.tasks.values())}

    @router.get("/comments")
    async def comments() -> dict[str, Any]:
        return {"comments": portal.state.comments}

    @router.get("/items")
    async def items(entity_type_id: int | None = None) -> dict[str, Any]:
        types = [t for t in portal.state.entity_types.values() if t.dynamic]
        if entity_type_id is not None:
            types = [t for t in types if t.entity_type_id == entity_type_id]
            if not types:
                raise HTTPException(404, f"no smart process {entity_type_id}")
        return {
            "items": [
                render_item(etype, record, original_uf=True)
                for etype in types
                for record in portal.crm.records(etype.entity_type_id).values()
            ]
        }

    @router.get("/events")
    async def events(status: str | None = None) -> dict[str, Any]:
        deliveries = [d for d in portal.deliveries if status is None or d.status == status]
        return {"deliveries": [delivery.to_json() for delivery in deliveries]}

    @router.get("/handlers")
    async def handlers() -> dict[str, Any]:
        return {"handlers": [handler.model_dump() for handler in portal.state.handlers]}

    @router.post("/handlers")
    async def add_handler(body: HandlerIn) -> dict[str, Any]:
        bound = portal.register_handler(body.url, body.events)
        return {"handlers": [handler.model_dump() for handler in bound]}

    @router.get("/limits")
    async def limits() -> dict[str, Any]:
        return portal.limits.model_dump()

    @router.put("/limits")
    async def set_limits(body: dict[str, Any]) -> dict[str, Any]:
        try:
            portal.set_limits(Limits.model_validate({**portal.limits.model_dump(), **body}))
        except ValidationError as exc:
            raise HTTPException(422, json.loads(exc.json())) from exc
        return portal.limits.model_dump()

    @router.get("/faults")
    async def faults() -> dict[str, Any]:
        return portal.faults.describe()

    @router.put("/faults")
    async def set_faults(body: Faults) -> dict[str, Any]:
        portal.faults.configure(body)
        return portal.faults.describe()

    @router.post("/answers")
    async def answers(body: AnswersIn) -> dict[str, Any]:
        try:
            created = add_answer_items(portal, body.items)
            created += make_answers(portal, body.count, body.seed, spread_days=body.spread_days)
            deals = open_nps_deals(portal, body.deals, body.seed)
            if body.answer_deals:
                answer_nps_deals(portal, deals, body.seed)
        except ConfigError as exc:
            raise HTTPException(409, str(exc)) from exc
        except FieldValueError as exc:
            raise HTTPException(422, exc.description) from exc
        return {"created": created, "deals": deals}

    @router.post("/reset")
    async def reset() -> dict[str, Any]:
        portal.reset()
        return {"reset": True}

    return router


def _sales_router(portal: SandboxPortal) -> APIRouter:
    """Inspection of sales deals and what the portal keeps about them, and closing sales."""
    router = APIRouter(prefix="/sandbox")

    @router.get("/deals/{deal_id}")
    async def deal(deal_id: int) -> dict[str, Any]:
        if portal.crm.get(DEAL, deal_id) is None:
            raise HTTPException(404, f"deal {deal_id} not found")
        return deal_details(portal, deal_id)

    @router.get("/products")
    async def products() -> dict[str, Any]:
        return {"products": [p.model_dump() for p in portal.state.products.values()]}

    @router.get("/triggers")
    async def triggers() -> dict[str, Any]:
        return {"triggers": portal.state.automation}

    @router.get("/timeline")
    async def timeline() -> dict[str, Any]:
        return {"log_messages": portal.state.log_messages}

    @router.post("/handle")
    async def handle_work(
        leads: Annotated[int, Query(ge=0, le=1000)] = 0,
        tasks: Annotated[int, Query(ge=0, le=1000)] = 0,
        lead: Annotated[list[int] | None, Query()] = None,
        task: Annotated[list[int] | None, Query()] = None,
        to: Step = "closed",
    ) -> dict[str, Any]:
        try:
            handled = handle(
                portal.crm,
                leads=leads,
                tasks=tasks,
                lead_ids=lead or (),
                task_ids=task or (),
                to=to,
            )
        except WorkError as exc:
            raise HTTPException(404, str(exc)) from exc
        return {"leads": handled.leads, "tasks": handled.tasks}

    @router.post("/close-sales")
    async def close(
        count: Annotated[int, Query(ge=1, le=1000)] = 1, seed: int | None = None
    ) -> dict[str, Any]:
        try:
            closed = close_sales(portal, count, seed)
        except SalesError as exc:
            raise HTTPException(409, str(exc)) from exc
        return {"closed": closed.closed, "created": closed.created}

    return router


def _deals(portal: SandboxPortal, category_id: int | None) -> list[dict[str, Any]]:
    """Deals (UPPER names), each with the stages it was moved to (``stage_moves``: every stage
    change after it was opened, with the method that made it)."""
    listed = []
    for record in portal.crm.records(DEAL).values():
        if category_id is not None and record.get("CATEGORY_ID") != category_id:
            continue
        moves = [
            {"stage": change.after, "method": change.method}
            for change in portal.crm.history(DEAL, record["ID"])
            if change.field == "STAGE_ID" and change.before is not None
        ]
        listed.append({**record, "stage_moves": moves})
    return listed


_ROW_COLUMNS = ("id", "productId", "productName", "price", "quantity", "discountRate", "sort")


def _row_summary(row: dict[str, Any]) -> dict[str, Any]:
    """The columns of a product row a person reads on the deal's page (JSON has them all)."""
    return {name: row[name] for name in _ROW_COLUMNS}


def deal_details(portal: SandboxPortal, deal_id: int) -> dict[str, Any]:
    """One deal (UPPER names) with everything the portal keeps about it: product rows, stage
    history, automation triggers fired on it, timeline log entries and comments, bound tasks."""
    crm = portal.crm
    binding = f"D_{deal_id}"
    return {
        "deal": crm.get(DEAL, deal_id),
        "product_rows": crm.product_rows("D", deal_id),
        "stage_history": [e for e in portal.state.stage_history if e["OWNER_ID"] == deal_id],
        "triggers": [
            run
            for run in portal.state.automation
            if (run["entity_type_id"], run["entity_id"]) == (DEAL, deal_id)
        ],
        "log_messages": [
            message
            for message in portal.state.log_messages
            if (message["entityTypeId"], message["entityId"]) == (DEAL, deal_id)
        ],
        "comments": [
            comment
            for comment in portal.state.comments
            if (comment["ENTITY_TYPE"], comment["ENTITY_ID"]) == ("deal", deal_id)
        ],
        "tasks": [task for task in portal.state.tasks.values() if binding in task["UF_CRM_TASK"]],
    }


async def _autosave(sandbox: "Sandbox", interval_s: float) -> None:
    """Save each portal with a state file while its data changes."""
    for host in sandbox.hosts():
        host.saved_revision = host.portal.crm.revision
    while True:
        await asyncio.sleep(interval_s)
        for host in list(sandbox.hosts()):
            revision = host.portal.crm.revision
            if host.state_file is not None and revision != host.saved_revision:
                host.saved_revision = revision
                save_portal(host.portal, host.state_file)
