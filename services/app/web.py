"""The application's HTTP side (docs/app.md): what portals call.

- `POST /app/install`: the install URL. The portal opens it in a frame with the install form; the
  answer is the page that calls `BX24.installFinish()` once the portal is stored and its events
  bound, or an error page naming what was wrong (the install then does not finish).
- `POST /app/events`: the event URL, for `ONAPPINSTALL`, `ONAPPUPDATE` and `ONAPPUNINSTALL`
  (form-encoded). A refusal is a 4xx with `{error, field, expected}`.
- `POST /app/robot`: the "Send NPS survey" robot's handler (services/app/robot.py): 200 once the
  call is queued for dispatch; a forged call (no such portal, another `application_token`) 403
  with `{error, field, expected}`.
- `GET /healthz`.

No token reaches a log line or an answer.
"""

from __future__ import annotations

import html
import secrets
from urllib.parse import parse_qsl, urlsplit

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse

from services.app.installer import Installer
from services.app.lifecycle import (
    INSTALL_EVENT,
    UPDATE_EVENT,
    LifecycleError,
    read_event,
    read_install_form,
)
from services.app.robot import RobotDoor
from shared.bitrix24 import Bitrix24Error, TransientBitrix24Error
from shared.http import read_body
from shared.logging import get_logger

MAX_BODY_BYTES = 64 * 1024

log = get_logger(__name__)


def _too_large() -> LifecycleError:
    return LifecycleError("body too large", "body", f"at most {MAX_BODY_BYTES} bytes", 413)


async def _form(request: Request) -> dict[str, str]:
    body = await read_body(request, MAX_BODY_BYTES, _too_large)
    try:
        text = body.decode()
    except UnicodeDecodeError:
        raise LifecycleError("body not UTF-8", "body", "a UTF-8 form", 400) from None
    return dict(parse_qsl(text, keep_blank_values=True))


def _status(exc: Bitrix24Error) -> int:
    """503 for a failure worth retrying (the portal will not: the administrator installs again),
    502 for a refusal."""
    return 503 if isinstance(exc, TransientBitrix24Error) else 502


def _page(title: str, text: str, *, status: int = 200, script: str = "") -> HTMLResponse:
    page = (
        "<!doctype html><html lang=en><meta charset=utf-8>"
        f"<title>{html.escape(title)} · b24-nps</title>{script}"
        f"<h1>{html.escape(title)}</h1><p>{html.escape(text)}</p></html>"
    )
    return HTMLResponse(page, status_code=status, headers={"Cache-Control": "no-store"})


def _finish_page(bx24_js_url: str, domain: str) -> HTMLResponse:
    """The page that tells the portal the install is done (`BX24.installFinish()`)."""
    nonce = secrets.token_urlsafe(16)
    parts = urlsplit(bx24_js_url)
    origin = f"{parts.scheme}://{parts.netloc}"
    script = (
        f'<script src="{html.escape(bx24_js_url)}"></script>'
        f'<script nonce="{nonce}">BX24.init(function () {{ BX24.installFinish(); }});</script>'
    )
    page = _page("b24-nps installed", f"b24-nps is installed on {domain}.", script=script)
    page.headers["Content-Security-Policy"] = (
        f"default-src 'none'; script-src {origin} 'nonce-{nonce}'; base-uri 'none'"
    )
    return page


def create_app(installer: Installer, bx24_js_url: str, robots: RobotDoor | None = None) -> FastAPI:
    """The application's endpoints over `installer` (and the robot's handler over `robots`)."""
    app = FastAPI(title="b24-nps application", docs_url=None, redoc_url=None, openapi_url=None)

    @app.post("/app/install")
    async def install(request: Request) -> HTMLResponse:
        try:
            form = read_install_form(dict(request.query_params), await _form(request))
            domain = await installer.install(form)
        except LifecycleError as exc:
            log.warning("app_install_refused", reason=exc.message, field=exc.field)
            return _page("Not installed", str(exc), status=exc.status)
        except Bitrix24Error as exc:
            log.warning("app_install_failed", code=exc.code, method=exc.method)
            return _page(
                "Not installed", f"the portal or the OAuth server: {exc}", status=_status(exc)
            )
        return _finish_page(bx24_js_url, domain)

    @app.post("/app/events")
    async def events(request: Request) -> JSONResponse:
        try:
            event = read_event(await _form(request))
            if event.event == INSTALL_EVENT:
                await installer.installed(event)
                status = "installed"
            elif event.event == UPDATE_EVENT:
                await installer.updated(event)
                status = "updated"
            else:
                await installer.uninstalled(event)
                status = "uninstalled"
        except LifecycleError as exc:
            log.warning("app_event_refused", reason=exc.message, field=exc.field)
            return JSONResponse(exc.body(), status_code=exc.status)
        except Bitrix24Error as exc:
            log.warning("app_event_failed", code=exc.code, method=exc.method)
            body = {"error": "the portal or the OAuth server failed", "detail": str(exc)}
            return JSONResponse(body, status_code=_status(exc))
        return JSONResponse({"status": status, "member_id": event.member_id})

    if robots is not None:
        door = robots

        @app.post("/app/robot")
        async def robot(request: Request) -> JSONResponse:
            try:
                called = await door.take(await _form(request))
            except LifecycleError as exc:
                log.warning("app_robot_refused", reason=exc.message, field=exc.field)
                return JSONResponse(exc.body(), status_code=exc.status)
            return JSONResponse({"status": "accepted", "event_id": str(called.event_id)})

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app
