"""The application's tests share their set-up here: a sandbox with the application registered,
the network between the portals and the application (ASGI in process, both ways), the token
book against the sandbox's OAuth server, the per-portal clients in application mode, and the
install of the application on a portal."""

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import parse_qsl, urlsplit

import asyncpg
import httpx
from pydantic import SecretStr
from starlette.types import ASGIApp, Receive, Scope, Send

from services.app.main import serve_app
from services.app.settings import AppSettings
from services.sandbox.events import Delivery
from services.sandbox.limits import Limits
from services.sandbox.oauth_server import AppRegistration
from services.sandbox.portal import SandboxPortal
from services.sandbox.portals import Sandbox
from shared.bitrix24 import Bitrix24Client, MemoryRateBudget
from shared.bitrix24.tokens import AppCredentials, OAuthServer, TokenBook
from shared.settings import Settings
from tests.support.clock import FakeClock

ROOT = "http://sandbox"
"""Where the sandbox's portals are reached."""
APP = "http://nps.example.test"
"""Where the application is reached."""
INGEST = "http://ingest.example.test/webhooks/bitrix24"
"""Ingest's webhook: the portals' events the application binds for it."""


def app_registration(
    client_id: str, secret: str, handler_url: str | None = None, app: str = APP
) -> AppRegistration:
    """The application at `app` with its install page and its events' handler."""
    return AppRegistration(
        client_id=client_id,
        client_secret=secret,
        install_url=f"{app}/app/install",
        handler_url=handler_url,
        callback_url=f"{app}/app/events",
    )


def sandbox_for(app: AppRegistration, clock: FakeClock, **options: object) -> Sandbox:
    """A sandbox on `clock` without rate limits, the application registered on it."""
    return Sandbox(
        SandboxPortal(clock=clock, limits=Limits.off()),
        registration=app,
        clock=clock,
        base_url=ROOT,
        **options,  # type: ignore[arg-type]
    )


def two_names() -> tuple[str, str]:
    """Two portals' names of the test's own (a member_id derives from the name, and the
    database is the session's)."""
    suffix = uuid.uuid4().hex[:8]
    return f"alpha-{suffix}", f"beta-{suffix}"


class Forward:
    """An ASGI app that hands every request to `target`, set once both sides exist."""

    def __init__(self) -> None:
        self.target: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert self.target is not None
        await self.target(scope, receive, send)


class ToApp(httpx.AsyncBaseTransport):
    """The network between the portals and the outside: the application's host; anything else
    (ingest's webhook) answered 200 and recorded in `ingest`."""

    def __init__(self, app: httpx.AsyncBaseTransport) -> None:
        self.app = app
        self.ingest: list[httpx.Request] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.host == urlsplit(APP).hostname:
            return await self.app.handle_async_request(request)
        self.ingest.append(request)
        return httpx.Response(200, json={"status": "accepted"})


def token_book(
    pool: asyncpg.Pool,
    transport: httpx.AsyncBaseTransport,
    clock: FakeClock,
    client_id: str,
    secret: str,
) -> TokenBook:
    """The application's token book, its OAuth server the sandbox's (through `transport`)."""
    credentials = AppCredentials(ROOT, client_id, SecretStr(secret))
    return TokenBook(pool, OAuthServer(credentials, transport, clock=clock), clock=clock)


def book_client(
    book: TokenBook, member_id: str, transport: httpx.AsyncBaseTransport
) -> Bitrix24Client:
    """The portal's client in application mode (its tokens from `book`)."""
    return Bitrix24Client(None, MemoryRateBudget(None), transport, app=book.session(member_id))


async def settled(portal: SandboxPortal, event: str, count: int = 1) -> list[Delivery]:
    """The portal's deliveries of `event`, once at least `count` were sent and none is pending."""
    async with asyncio.timeout(5):
        while True:
            sent = [d for d in portal.deliveries if d.event == event]
            if len(sent) >= count and all(d.status != "pending" for d in sent):
                return sent
            await asyncio.sleep(0.01)


async def authorize(http: httpx.AsyncClient, name: str, client_id: str) -> str:
    """The installed application's code for the portal's administrator."""
    redirect = await http.get(
        f"/p/{name}/oauth/authorize/", params={"client_id": client_id, "state": "s"}
    )
    assert redirect.status_code == 302, redirect.text
    return dict(parse_qsl(urlsplit(redirect.headers["location"]).query))["code"]


async def install_pair(http: httpx.AsyncClient, book: TokenBook, name: str, client_id: str) -> str:
    """Install the application on the portal and put its first pair in the book (what the
    application's install page does); the portal's member_id."""
    answer = await http.post(f"/p/{name}/sandbox/install", json={})
    assert answer.status_code == 200, answer.text
    pair = await book.oauth.exchange_code(await authorize(http, name, client_id))
    await book.install(
        pair,
        domain=f"{name}.sandbox.local",
        application_token=answer.json()["application_token"],
    )
    return pair.member_id


async def until_row(
    pool: asyncpg.Pool, member_id: str, column: str, value: object, timeout_s: float = 10
) -> None:
    """Wait until the portal's `bitrix24_app_portals` row holds `value` in `column` (a column
    name of the test's)."""
    sql = f"SELECT {column} FROM bitrix24_app_portals WHERE member_id = $1"
    async with asyncio.timeout(timeout_s):
        while await pool.fetchval(sql, member_id) != value:
            await asyncio.sleep(0.05)


@asynccontextmanager
async def app_service(settings: Settings, port: int, portal_url: str) -> AsyncIterator[str]:
    """The application service as `nps run app` runs it (`serve_app`) on `port`, the portals
    at `portal_url`: its URL, once it answers; stopped on the way out."""
    app_settings = AppSettings(
        port=port,
        ingest_webhook_url="http://127.0.0.1:9/webhooks/bitrix24",
        bx24_js_url=f"{portal_url}/sandbox/bx24.js",
        _env_file=None,
    )
    url = f"http://127.0.0.1:{port}"
    stop = asyncio.Event()
    service = asyncio.create_task(serve_app(settings, stop, app_settings))
    try:
        async with httpx.AsyncClient() as http, asyncio.timeout(30):
            while True:
                try:
                    if (await http.get(f"{url}/healthz")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.1)
        yield url
    finally:
        stop.set()
        await service
