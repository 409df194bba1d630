"""HTTP of the application's side of the sandbox: the OAuth server at the root
(``/oauth/token/``, ``/rest/app.info``, ``/sandbox/oauth``, ``/sandbox/bx24.js``), the portals
(``/sandbox/portals``), and on each named portal the REST calls with an access token
(``/p/<name>/rest/<method>``), ``/oauth/authorize/``, the install, application and widget
pages, and the lifecycle and robot controls under ``/p/<name>/sandbox/``."""

import asyncio
import json
import secrets
from typing import Annotated, Any
from urllib.parse import urlencode, urlsplit

import httpx
from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from services.sandbox.app_pages import (
    BX24_JS,
    SCRIPT_HEADERS,
    error_page,
    frame_headers,
    frame_page,
)
from services.sandbox.app_state import AppSettings
from services.sandbox.application import AppSide, FrameForm, LifecycleError
from services.sandbox.errors import RestError
from services.sandbox.http_params import read_params
from services.sandbox.oauth import OAuthSettings
from services.sandbox.oauth_server import AppRegistration
from services.sandbox.portals import Host, PortalError, PortalSpec, Sandbox
from services.sandbox.robots import RobotError, document_entity
from services.sandbox.seed import ConfigError

NO_STORE = {"Cache-Control": "no-store"}
PAGE_ERROR_HEADERS = {"Content-Security-Policy": "default-src 'none'", "Cache-Control": "no-store"}


class InstallIn(BaseModel):
    """A headless install: ``user_id`` (an administrator; default the webhook's user) opens the
    install page, and with ``finish`` its ``BX24.installFinish()`` runs when the page answers
    2xx."""

    model_config = ConfigDict(extra="forbid")

    user_id: int | None = None
    finish: bool = True


class RunIn(BaseModel):
    """A robot reached on a document: ``deal_id``, or ``entity_type_id`` and ``entity_id``, or
    a ``document_id`` (``["crm","CCrmDocumentDeal","DEAL_7"]``); its ``properties``."""

    model_config = ConfigDict(extra="forbid")

    deal_id: int | None = None
    entity_type_id: int | None = None
    entity_id: int | None = None
    document_id: list[str] | None = None
    properties: dict[str, Any] = Field(default_factory=dict)
    user_id: int | None = None
    timeout_s: float | None = Field(default=None, gt=0)


def _refuse(exc: LifecycleError) -> HTTPException:
    return HTTPException(exc.status, exc.message)


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip() or None
    return None


def _pop_text(params: dict[str, Any], name: str) -> str | None:
    value = params.pop(name, None)
    return value if isinstance(value, str) else None


def _merged(model: type[BaseModel], current: BaseModel, changes: Any) -> Any:
    """``current`` with ``changes`` applied, validated (422 naming the fields)."""
    if not isinstance(changes, dict):
        raise HTTPException(422, "expected a JSON object")
    try:
        return model.model_validate({**current.model_dump(), **changes})
    except ValidationError as exc:
        raise HTTPException(422, json.loads(exc.json())) from exc


# --- the OAuth server and the portals ------------------------------------------------------------


def oauth_router(sandbox: Sandbox) -> APIRouter:
    """oauth.bitrix.info's part, at the sandbox's root."""
    router = APIRouter()
    server = sandbox.server

    async def token(request: Request) -> JSONResponse:
        try:
            params = await read_params(request)
        except ValueError as exc:
            return JSONResponse(
                {"error": "invalid_request", "error_description": str(exc)}, 400, NO_STORE
            )
        status, body = server.token(params)
        return JSONResponse(body, status, NO_STORE)

    async def app_info(request: Request) -> JSONResponse:
        try:
            params = await read_params(request)
        except ValueError:
            params = {}
        given = _bearer(request) or params.get("auth") or params.get("access_token")
        status, body = server.app_info(given if isinstance(given, str) else None)
        return JSONResponse(body, status, NO_STORE)

    for path in ("/oauth/token/", "/oauth/token"):
        router.add_api_route(path, token, methods=["GET", "POST"], include_in_schema=False)
    for path in ("/rest/app.info", "/rest/app.info/", "/rest/app.info.json"):
        router.add_api_route(path, app_info, methods=["GET", "POST"], include_in_schema=False)

    @router.get("/sandbox/oauth")
    async def describe() -> dict[str, Any]:
        return server.describe()

    @router.put("/sandbox/oauth")
    async def settings(body: dict[str, Any]) -> dict[str, Any]:
        if body.pop("reset_counters", False):
            server.reset_counters()
        server.settings = _merged(OAuthSettings, server.settings, body)
        return server.describe()

    @router.put("/sandbox/oauth/app")
    async def register(body: AppRegistration) -> dict[str, Any]:
        server.registration = body
        return server.describe()

    @router.get("/sandbox/bx24.js")
    async def bx24() -> Response:
        return Response(BX24_JS, media_type="application/javascript", headers=SCRIPT_HEADERS)

    return router


def portals_router(sandbox: Sandbox) -> APIRouter:
    """The portals of the sandbox; a test adds one with ``POST /sandbox/portals``."""
    router = APIRouter(prefix="/sandbox")

    @router.get("/portals")
    async def portals() -> dict[str, Any]:
        root = sandbox.server.root
        return {"portals": [host.describe(root) for host in sandbox.hosts()]}

    @router.post("/portals", status_code=201)
    async def add(spec: PortalSpec) -> dict[str, Any]:
        try:
            host = sandbox.add(spec)
        except PortalError as exc:
            raise HTTPException(409, str(exc)) from exc
        except (ConfigError, OSError) as exc:
            raise HTTPException(422, f"seed: {exc}") from exc
        return host.describe(sandbox.server.root)

    return router


# --- one named portal ----------------------------------------------------------------------


def application_router(
    host: Host,
    sandbox: Sandbox,
    transport: httpx.AsyncBaseTransport | None,
    timeout_s: float,
) -> APIRouter:
    """The application's side of one named portal."""
    router = APIRouter()
    router.include_router(_app_rest_router(host))
    router.include_router(_authorize_router(host, sandbox))
    router.include_router(_pages_router(host))
    router.include_router(_lifecycle_router(host, sandbox, transport, timeout_s))
    router.include_router(_robots_router(host, sandbox))
    return router


def _app_rest_router(host: Host) -> APIRouter:
    router = APIRouter()
    portal = host.portal

    @router.api_route("/rest/{method}", methods=["GET", "POST"])
    async def rest(method: str, request: Request) -> JSONResponse:
        """A REST call with an access token: ``auth`` (or ``access_token``) in the query or
        body, or ``Authorization: Bearer``; ``auth_connector`` marks the caller's writes."""
        try:
            params = await read_params(request)
        except ValueError as exc:
            status, body = portal.reject(method, RestError(400, "INVALID_REQUEST", str(exc)))
            return JSONResponse(body, status_code=status)
        token = _bearer(request)
        for name in ("auth", "access_token"):
            given = _pop_text(params, name)
            token = token or given
        app_auth = (token, _pop_text(params, "auth_connector"))
        refused = portal.arrive(method, app_auth=app_auth)
        if refused is not None:
            status, body = refused
            return JSONResponse(body, status_code=status)
        delay = portal.delay(method)
        if delay:
            await asyncio.sleep(delay)
        status, body = portal.call(method, params, app_auth=app_auth, arrived=True)
        return JSONResponse(body, status_code=status)

    return router


def _authorize_router(host: Host, sandbox: Sandbox) -> APIRouter:
    router = APIRouter()
    portal = host.portal
    side = portal.app

    async def authorize(
        request: Request,
        client_id: str = "",
        state: str = "",
        redirect_uri: str | None = None,
        user_id: int | None = None,
    ) -> Response:
        """The browser of ``user_id`` (default: the webhook's user) authorizes the application:
        back to ``redirect_uri`` (default: its handler URL) with ``code``, ``state``,
        ``domain``, ``member_id``, ``scope`` and ``server_domain``."""
        registration = sandbox.server.registration
        if registration is None or client_id != registration.client_id:
            return _error_page(
                400, "Wrong application", "client_id: not an application of this portal"
            )
        if not side.state.added:
            return _error_page(
                400, "Application not installed", "The application is not installed on this portal."
            )
        user = user_id if user_id is not None else portal.user_id
        if user not in portal.state.users:
            return _error_page(404, "No such user", f"user_id: no user {user} on this portal")
        target = redirect_uri or registration.handler_url
        if target is None:
            return _error_page(
                400, "No redirect_uri", "redirect_uri: missing (the application has no handler URL)"
            )
        if (urlsplit(target).hostname or "") not in registration.hosts():
            return _error_page(
                400, "Wrong redirect_uri", "redirect_uri: expected a URL on the application's host"
            )
        server = sandbox.server
        code = side.state.tokens.authorize(user, server.clock(), server.settings, server.new_token)
        side.touch()
        query = urlencode(
            {
                "code": code,
                "state": state,
                "domain": portal.domain,
                "member_id": portal.member_id,
                "scope": registration.scope_text(),
                "server_domain": server.domain,
            }
        )
        joiner = "&" if "?" in target else "?"
        return RedirectResponse(f"{target}{joiner}{query}", status_code=302, headers=NO_STORE)

    for path in ("/oauth/authorize/", "/oauth/authorize"):
        router.add_api_route(path, authorize, methods=["GET"], include_in_schema=False)
    return router


def _pages_router(host: Host) -> APIRouter:
    """The pages a person opens: install, the application's page, its widgets."""
    router = APIRouter()
    portal = host.portal
    side = portal.app

    def page(form: FrameForm, title: str, note: str, request: Request) -> HTMLResponse:
        nonce = secrets.token_urlsafe(12)
        finish_url = f"{str(request.base_url).rstrip('/')}{host.prefix}/sandbox/install-finish"
        body = frame_page(
            title=title,
            note=note,
            action=form.action,
            body=form.body,
            finish_url=finish_url,
            app_sid=form.query["APP_SID"],
            nonce=nonce,
        )
        return HTMLResponse(body, headers=frame_headers(nonce))

    @router.get("/install", include_in_schema=False)
    async def install_page(request: Request, user_id: int | None = None) -> HTMLResponse:
        """The administrator installs the application: its install page in a frame."""
        user = user_id if user_id is not None else portal.user_id
        try:
            form = side.begin_install(user)
            if form is None:
                side.finish_install()
        except LifecycleError as exc:
            return _error_page(exc.status, "Cannot install", exc.message)
        if form is None:
            return HTMLResponse(
                error_page("Installed", "The application has no install page: it is installed."),
                headers=PAGE_ERROR_HEADERS,
            )
        title = f"Installing {side.registration().name} on {host.name}"
        note = "The application's install page is below; it calls BX24.installFinish() when done."
        return page(form, title, note, request)

    @router.get("/app", include_in_schema=False)
    async def app_page(request: Request, user_id: int | None = None) -> HTMLResponse:
        """The application's page (its left-menu item), opened by ``user_id``."""
        return frame(request, "DEFAULT", user_id, {})

    @router.get("/placement/{code}", include_in_schema=False)
    async def placement_page(
        request: Request, code: str, user_id: int | None = None
    ) -> HTMLResponse:
        """A widget of the application, e.g. ``/placement/CRM_DEAL_DETAIL_TAB?ID=7``: the other
        query parameters are its ``PLACEMENT_OPTIONS``."""
        options = {k: v for k, v in request.query_params.items() if k != "user_id"}
        return frame(request, code, user_id, options)

    def frame(
        request: Request, code: str, user_id: int | None, options: dict[str, Any]
    ) -> HTMLResponse:
        user = user_id if user_id is not None else portal.user_id
        try:
            form = side.open_frame(code, user, options)
        except LifecycleError as exc:
            return _error_page(exc.status, "Cannot open the application", exc.message)
        name = side.registration().name
        return page(form, f"{name} on {host.name}", f"{code} opened by user {user}.", request)

    @router.get("/sandbox/frame")
    async def frame_form(
        request: Request, placement: str = "DEFAULT", user_id: int | None = None
    ) -> dict[str, Any]:
        """What the portal would POST into the frame of ``placement`` opened by ``user_id``
        (other query parameters are ``PLACEMENT_OPTIONS``): a test posts it itself."""
        options = {
            k: v for k, v in request.query_params.items() if k not in ("placement", "user_id")
        }
        try:
            form = side.open_frame(placement, user_id or portal.user_id, options)
        except LifecycleError as exc:
            raise _refuse(exc) from exc
        return form.to_json()

    return router


def _lifecycle_router(
    host: Host,
    sandbox: Sandbox,
    transport: httpx.AsyncBaseTransport | None,
    timeout_s: float,
) -> APIRouter:
    """Steering the application's side: its state and settings, install, update, uninstall."""
    router = APIRouter(prefix="/sandbox")
    portal = host.portal
    side = portal.app

    @router.get("/app")
    async def describe() -> dict[str, Any]:
        return side.describe()

    @router.put("/app")
    async def settings(body: dict[str, Any]) -> dict[str, Any]:
        side.state.settings = _merged(AppSettings, side.settings, body)
        side.touch()
        return side.describe()

    @router.post("/install")
    async def install(body: InstallIn | None = None) -> dict[str, Any]:
        """The install flow without a browser: the install page's POST (as the frame would
        send it), then ``installFinish`` when it answered 2xx and ``finish`` is on."""
        wanted = body or InstallIn()
        try:
            form = side.begin_install(wanted.user_id or portal.user_id)
        except LifecycleError as exc:
            raise _refuse(exc) from exc
        answer: dict[str, Any] | None = None
        ok = True
        if form is not None:
            answer = await _post_form(form, transport, timeout_s)
            ok = answer["status_code"] is not None and 200 <= answer["status_code"] < 300
        if wanted.finish and ok:
            side.finish_install(form.query["APP_SID"] if form is not None else None)
        return {
            "installed": side.state.installed,
            "install_page": answer,
            "form": form.to_json() if form is not None else None,
            "application_token": side.state.application_token,
            "member_id": portal.member_id,
        }

    @router.post("/install-finish")
    async def install_finish(request: Request) -> dict[str, Any]:
        """``BX24.installFinish()`` of the frame that ``APP_SID`` names (the install page's
        script posts here)."""
        try:
            params = await read_params(request)
        except ValueError as exc:
            raise HTTPException(400, str(exc)) from exc
        app_sid = params.get("APP_SID")
        try:
            new = side.finish_install(app_sid if isinstance(app_sid, str) else None)
        except LifecycleError as exc:
            raise _refuse(exc) from exc
        return {"installed": True, "new": new}

    @router.post("/update")
    async def update(version: Annotated[int | None, Query(ge=1)] = None) -> dict[str, Any]:
        try:
            side.update(version)
        except LifecycleError as exc:
            raise _refuse(exc) from exc
        return {"version": side.state.version}

    @router.post("/uninstall")
    async def uninstall(clean: bool = False) -> dict[str, Any]:
        """The administrator deletes the application (``clean``: "clear application data")."""
        try:
            told = side.uninstall(clean=clean)
        except LifecycleError as exc:
            raise _refuse(exc) from exc
        return {"uninstalled": True, "handlers_told": told}

    return router


def _robots_router(host: Host, sandbox: Sandbox) -> APIRouter:
    """Running the application's robots and reading their launches."""
    router = APIRouter(prefix="/sandbox")
    side = host.portal.app

    @router.post("/robots/{code}/run")
    async def run_robot(code: str, body: RunIn) -> dict[str, Any]:
        """An automation rule reaches robot ``code`` on a document: its call is POSTed to the
        robot's handler."""
        entity_type_id, entity_id = _document(body)
        try:
            launch = side.run_robot(
                code,
                entity_type_id=entity_type_id,
                entity_id=entity_id,
                properties=body.properties,
                user_id=body.user_id,
                timeout_s=body.timeout_s,
            )
        except LifecycleError as exc:
            raise _refuse(exc) from exc
        return AppSide.launch_json(launch, sandbox.server.clock())

    @router.get("/robot-launches")
    async def launches() -> dict[str, Any]:
        now = sandbox.server.clock()
        return {"launches": [AppSide.launch_json(x, now) for x in side.state.launches]}

    @router.get("/robot-launches/{launch_id}")
    async def launch(launch_id: int) -> dict[str, Any]:
        found = side.launch(launch_id)
        if found is None:
            raise HTTPException(404, f"no robot launch {launch_id}")
        return AppSide.launch_json(found, sandbox.server.clock())

    @router.post("/robot-launches/{launch_id}/repeat")
    async def repeat(launch_id: int) -> dict[str, Any]:
        """The same call POSTed again (same ``event_token``), as a retried delivery."""
        found = side.launch(launch_id)
        if found is None:
            raise HTTPException(404, f"no robot launch {launch_id}")
        try:
            side.send_launch(found)
        except LifecycleError as exc:
            raise _refuse(exc) from exc
        return AppSide.launch_json(found, sandbox.server.clock())

    return router


def _document(body: RunIn) -> tuple[int, int]:
    if body.deal_id is not None:
        return 2, body.deal_id
    if body.entity_type_id is not None and body.entity_id is not None:
        return body.entity_type_id, body.entity_id
    if body.document_id is not None:
        try:
            return document_entity(body.document_id)
        except RobotError as exc:
            raise HTTPException(422, exc.message) from exc
    raise HTTPException(422, "expected deal_id, entity_type_id with entity_id, or document_id")


async def _post_form(
    form: FrameForm, transport: httpx.AsyncBaseTransport | None, timeout_s: float
) -> dict[str, Any]:
    """POST the frame's form as the browser would; what the application answered."""
    try:
        async with httpx.AsyncClient(transport=transport, timeout=timeout_s) as client:
            response = await client.post(form.action, data=form.body)
    except httpx.HTTPError as exc:
        return {"url": form.url, "status_code": None, "error": f"{type(exc).__name__}: {exc}"}
    return {
        "url": form.url,
        "status_code": response.status_code,
        "error": None if response.is_success else f"HTTP {response.status_code}",
        "calls_install_finish": "installFinish" in response.text,
    }


def _error_page(status: int, title: str, message: str) -> HTMLResponse:
    return HTMLResponse(error_page(title, message), status_code=status, headers=PAGE_ERROR_HEADERS)
