"""The client in application mode and the token book, against the sandbox as OAuth server and
application host (ASGI in process, its clock under the test's control) and the real PostgreSQL:
the install's pair stored, calls with it, a single refresh however many calls find the token
expired (in one process and across two), a spent refresh token marking the portal revoked, and no
token in any log line."""

import asyncio
import json
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg
import httpx
import pytest
from pydantic import SecretStr

from services.sandbox.app import create_app
from services.sandbox.limits import Limits
from services.sandbox.portal import SandboxPortal
from services.sandbox.portals import PortalSpec, Sandbox
from shared.bitrix24 import (
    Command,
    PermanentBitrix24Error,
    PortalNotInstalled,
    PortalRevoked,
    app_client,
)
from shared.bitrix24.tokens import AppCredentials, OAuthServer, TokenBook
from shared.db import create_pool
from shared.logging import configure_logging
from shared.portal_config import ConfigError, PortalConfig
from shared.settings import Settings
from tests.support import T0, FakeClock, serving
from tests.support.app import (
    APP,
    ROOT,
    app_registration,
    book_client,
    install_pair,
    sandbox_for,
    token_book,
    two_names,
)
from tests.support.paths import ROOT as REPOSITORY

CLIENT_ID = "local.nps.1"
SECRET = "app-secret-4f0c9e"
"""The test application's secret, looked for in the logs."""
REGISTRATION = app_registration(CLIENT_ID, SECRET, handler_url=f"{APP}/app/frame")
TTL_S = 60


class Recording(httpx.AsyncBaseTransport):
    """The network to the sandbox, keeping every request b24-nps sent (URL and body)."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.sent: list[tuple[str, bytes]] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.sent.append((str(request.url), await request.aread()))
        return await self.inner.handle_async_request(request)


@dataclass
class World:
    sandbox: Sandbox
    clock: FakeClock
    transport: Recording
    http: httpx.AsyncClient
    alpha: str
    beta: str
    """The two portals' names: the test's own (a member_id derives from the name, and the
    database is the session's)."""

    def member_id(self, name: str) -> str:
        return self.sandbox.named[name].portal.member_id

    async def counters(self, name: str) -> dict[str, int]:
        answer = (await self.http.get("/sandbox/oauth")).json()
        return dict(answer["counters"].get(self.member_id(name), {}))

    def book(self, pool: asyncpg.Pool, clock: FakeClock | None = None) -> TokenBook:
        return token_book(pool, self.transport, clock or self.clock, CLIENT_ID, SECRET)

    async def install(self, book: TokenBook, name: str | None = None) -> str:
        """Install the application on the portal (alpha by default) and put its first pair in
        the book."""
        return await install_pair(self.http, book, name or self.alpha, CLIENT_ID)


@pytest.fixture
async def world() -> AsyncIterator[World]:
    clock = FakeClock(T0)
    sandbox = sandbox_for(REGISTRATION, clock)
    names = two_names()
    for name in names:
        sandbox.add(PortalSpec(name=name, limits=Limits.off()))
    stub = httpx.MockTransport(lambda _request: httpx.Response(200, text="ok"))
    inner = httpx.ASGITransport(app=create_app(sandbox, event_transport=stub))
    async with httpx.AsyncClient(transport=inner, base_url=ROOT) as http:
        assert (await http.put("/sandbox/oauth", json={"access_ttl_s": TTL_S})).status_code == 200
        yield World(sandbox, clock, Recording(inner), http, *names)


async def test_calls_go_to_the_portal_with_the_installed_pair(
    world: World, pool: asyncpg.Pool, portal_config: PortalConfig
) -> None:
    book = world.book(pool)
    member_id = await world.install(book)
    row = await book.portal(member_id)
    assert row is not None
    assert (row.status, row.domain, row.client_endpoint) == (
        "installed",
        f"{world.alpha}.sandbox.local",
        f"{ROOT}/p/{world.alpha}/rest/",
    )
    assert row.expires_at == pytest.approx(T0 + TTL_S)
    assert (
        row.application_token == world.sandbox.named[world.alpha].portal.state.app.application_token
    )
    assert row.access_token is not None
    assert row.access_token not in repr(row)

    async with app_client(pool, book, member_id, portal_config, world.transport) as api:
        assert repr(api) == f"Bitrix24Client(portal={member_id!r})"
        assert (await api.call("profile")).result["ID"] == "1"
        deal = (await api.call("crm.deal.add", {"fields": {"TITLE": "Laser"}})).result
        assert (await api.call("crm.deal.get", {"id": deal})).result["TITLE"] == "Laser"
    counted = await pool.fetchval("SELECT count(*) FROM rate_buckets WHERE portal = $1", member_id)
    assert counted == 1
    assert await world.counters(world.alpha) == {"exchanges": 1}


async def test_a_batch_goes_with_the_token_too(world: World, pool: asyncpg.Pool) -> None:
    book = world.book(pool)
    member_id = await world.install(book)
    async with book_client(book, member_id, world.transport) as api:
        deal = (await api.call("crm.deal.add", {"fields": {"TITLE": "Cryo"}})).result
        out = await api.batch(
            [Command("d", "crm.deal.get", {"id": deal}), Command("me", "profile")]
        )
    assert out.results["d"]["TITLE"] == "Cryo"
    assert out.results["me"]["ID"] == "1"


@pytest.mark.parametrize(
    "who_sees_it",
    [
        "the book",  # its clock says the token is due: refreshed before the calls
        "the portal",  # the book's clock lags: every call comes back expired_token
    ],
)
async def test_fifty_calls_after_expiry_refresh_the_token_once(
    world: World, pool: asyncpg.Pool, who_sees_it: str
) -> None:
    book_clock = world.clock if who_sees_it == "the book" else FakeClock(T0)
    book = world.book(pool, book_clock)
    member_id = await world.install(book)
    async with book_client(book, member_id, world.transport) as api:
        assert (await api.call("profile")).result["ID"] == "1"
        before = (await book.portal(member_id)).refresh_token  # type: ignore[union-attr]
        world.clock.now += TTL_S + 1
        answers = await asyncio.gather(*(api.call("profile") for _ in range(50)))
    assert [answer.result["ID"] for answer in answers] == ["1"] * 50
    assert (await world.counters(world.alpha))["refreshes"] == 1
    row = await book.portal(member_id)
    assert row is not None
    assert row.refresh_token not in (None, before)
    assert row.expires_at == pytest.approx(world.clock.now + TTL_S)
    expired = world.sandbox.named[world.alpha].portal.calls_report(method="profile")
    statuses = [call["status"] for call in expired["calls"]]
    if who_sees_it == "the book":
        assert 401 not in statuses
    else:
        # Only the calls in flight when it expired (8 slots) were refused; the later ones went
        # with the refreshed token.
        assert 1 <= statuses.count(401) <= 8


@pytest.fixture
async def second_pool(pg_dsn: str) -> AsyncIterator[asyncpg.Pool]:
    """Another process's connections to the same database."""
    other = await create_pool(pg_dsn, max_size=4)
    yield other
    await other.close()


async def test_two_books_on_one_database_refresh_once(
    world: World, pool: asyncpg.Pool, second_pool: asyncpg.Pool
) -> None:
    """Two books with pools, caches and locks of their own, as two processes have (in one event
    loop, so not truly at once: `test_two_real_processes_refresh_once` is that)."""
    first, second = world.book(pool), world.book(second_pool)
    member_id = await world.install(first)
    async with (
        book_client(first, member_id, world.transport) as one,
        book_client(second, member_id, world.transport) as two,
    ):
        await asyncio.gather(one.call("profile"), two.call("profile"))
        world.clock.now += TTL_S + 1
        calls = [api.call("profile") for api in (one, two) for _ in range(10)]
        answers = await asyncio.gather(*calls)
    assert {answer.result["ID"] for answer in answers} == {"1"}
    assert (await world.counters(world.alpha))["refreshes"] == 1


async def test_a_refused_refresh_token_marks_the_portal_revoked(
    world: World, pool: asyncpg.Pool
) -> None:
    book = world.book(pool)
    member_id = await world.install(book)
    other = await world.install(book, world.beta)
    stored = await book.portal(member_id)
    assert stored is not None
    assert stored.refresh_token is not None
    # Someone else spends the refresh token (a copy of the database, a leaked pair): the OAuth
    # server rotates it, so the book's copy is used up.
    spent = await world.http.get(
        "/oauth/token/",
        params={
            "grant_type": "refresh_token",
            "client_id": CLIENT_ID,
            "client_secret": SECRET,
            "refresh_token": stored.refresh_token,
        },
    )
    assert spent.status_code == 200
    world.clock.now += TTL_S + 1
    async with book_client(book, member_id, world.transport) as api:
        with pytest.raises(PortalRevoked) as caught:
            await api.call("profile")
        assert "installed on it again" in str(caught.value)
        with pytest.raises(PortalRevoked):
            await api.call("profile")
    row = await book.portal(member_id)
    assert row is not None
    assert (row.status, row.access_token, row.refresh_token) == ("revoked", None, None)
    assert (await world.counters(world.alpha))["invalid_grant"] == 1
    async with book_client(book, other, world.transport) as beta:
        assert (await beta.call("profile")).result["ID"] == "1"
    assert (await book.portal(other)).status == "installed"  # type: ignore[union-attr]

    await world.install(book)
    async with book_client(book, member_id, world.transport) as api:
        assert (await api.call("profile")).result["ID"] == "1"


async def test_an_uninstalled_portal_refuses_its_token_for_good(
    world: World, pool: asyncpg.Pool
) -> None:
    book = world.book(pool)
    member_id = await world.install(book)
    async with book_client(book, member_id, world.transport) as api:
        await api.call("profile")
        assert (await world.http.post(f"/p/{world.alpha}/sandbox/uninstall")).status_code == 200
        with pytest.raises(PermanentBitrix24Error) as caught:
            await api.call("profile")
        assert caught.value.code == "invalid_token"
        assert await book.uninstall(member_id) is True
        with pytest.raises(PortalNotInstalled) as refused:
            await api.call("profile")
        assert refused.value.portal_status == "uninstalled"
    assert await book.uninstall(member_id) is False
    async with book_client(book, "never-installed", world.transport) as nobody:
        with pytest.raises(PortalNotInstalled, match="never installed"):
            await nobody.call("profile")


async def test_a_portal_installed_again_is_called_with_its_new_pair_at_once(
    world: World, pool: asyncpg.Pool
) -> None:
    """A process holding the old access token of a portal that was uninstalled and installed
    again (its new pair stored by the install page): the portal refuses the old token, the
    row is read again and the call goes once more with the new pair, never failing."""
    book = world.book(pool)
    member_id = await world.install(book)
    async with book_client(book, member_id, world.transport) as api:
        await api.call("profile")  # the old token, held by this process's book
        assert (await world.http.post(f"/p/{world.alpha}/sandbox/uninstall")).status_code == 200
        await world.install(world.book(pool))  # the application's process stores the new pair
        assert (await api.call("profile")).result["ID"] == "1"


async def test_no_token_or_secret_reaches_a_log_line(
    world: World, pool: asyncpg.Pool, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging("debug", "json")
    book = world.book(pool)
    member_id = await world.install(book)
    first = await book.portal(member_id)
    async with book_client(book, member_id, world.transport) as api:
        await api.call("profile")
        world.clock.now += TTL_S + 1
        await api.call("profile")
    second = await book.portal(member_id)
    assert first is not None
    assert second is not None
    world.clock.now += TTL_S + 1
    assert (await world.http.post(f"/p/{world.alpha}/sandbox/uninstall")).status_code == 200
    async with book_client(book, member_id, world.transport) as api:
        with pytest.raises(PortalRevoked) as caught:
            await api.call("profile")
    lines = capsys.readouterr()
    logged = lines.out + lines.err
    assert "bitrix24_token_refreshed" in logged
    assert "bitrix24_portal_revoked" in logged
    secrets = [SECRET, first.access_token, first.refresh_token, second.access_token]
    secrets.append(second.refresh_token)
    for secret in secrets:
        assert secret is not None
        assert secret not in logged
        assert secret not in str(caught.value)
        assert secret not in repr(book)
    for line in logged.splitlines():
        json.loads(line)
    # The secret went to the OAuth server's token endpoint, and nowhere else.
    with_secret = {url.split("?")[0] for url, body in world.transport.sent if SECRET in url}
    assert with_secret == {f"{ROOT}/oauth/token/"}
    assert not any(SECRET.encode() in body for _url, body in world.transport.sent)
    portal_calls = [url for url, _body in world.transport.sent if "/p/" in url]
    assert portal_calls


def test_the_credentials_come_from_the_settings(settings: Settings) -> None:
    with pytest.raises(ConfigError) as missing:
        AppCredentials.from_settings(settings)
    assert "BITRIX24_CLIENT_ID and BITRIX24_CLIENT_SECRET not set" in str(missing.value)
    configured = settings.model_copy(
        update={
            "bitrix24_client_id": CLIENT_ID,
            "bitrix24_client_secret": SecretStr(SECRET),
            "bitrix24_oauth_url": "http://127.0.0.1:8090/",
        }
    )
    credentials = AppCredentials.from_settings(configured)
    assert (credentials.oauth_url, credentials.client_id) == ("http://127.0.0.1:8090", CLIENT_ID)
    assert SECRET not in repr(credentials)
    assert SECRET not in repr(configured)


CALLER = f"""
import asyncio, sys, time
from pydantic import SecretStr
from shared.bitrix24 import Bitrix24Client, MemoryRateBudget
from shared.bitrix24.tokens import AppCredentials, OAuthServer, TokenBook
from shared.db import create_pool

async def main(dsn, url, member_id, start_at):
    pool = await create_pool(dsn, max_size=2)
    book = TokenBook(pool, OAuthServer(AppCredentials(url, {CLIENT_ID!r}, SecretStr({SECRET!r}))))
    await asyncio.sleep(max(0.0, float(start_at) - time.time()))
    async with Bitrix24Client(None, MemoryRateBudget(None), app=book.session(member_id)) as api:
        answers = await asyncio.gather(*(api.call("profile") for _ in range(10)))
    await pool.close()
    print(sorted({{answer.result["ID"] for answer in answers}}))

asyncio.run(main(*sys.argv[1:]))
"""


async def test_two_real_processes_refresh_once(pg_dsn: str, pool: asyncpg.Pool) -> None:
    """The same as above with two OS processes calling at the same moment, against a sandbox
    served over HTTP on the real clock (access tokens of one second)."""
    name = f"delta-{uuid.uuid4().hex[:8]}"
    sandbox = Sandbox(SandboxPortal(limits=Limits.off()), registration=REGISTRATION)
    sandbox.add(PortalSpec(name=name, limits=Limits.off()))
    stub = httpx.MockTransport(lambda _request: httpx.Response(200, text="ok"))
    async with serving(create_app(sandbox, event_transport=stub)) as url:
        assert sandbox.server is not None
        sandbox.server.base_url = url
        async with httpx.AsyncClient(base_url=url) as http:
            await http.put("/sandbox/oauth", json={"access_ttl_s": 1})
            world = World(
                sandbox, FakeClock(), Recording(httpx.AsyncHTTPTransport()), http, name, name
            )
            credentials = AppCredentials(url, CLIENT_ID, SecretStr(SECRET))
            book = TokenBook(pool, OAuthServer(credentials))
            member_id = await world.install(book)
            await asyncio.sleep(1.1)
            start_at = str(time.time() + 4)
            callers = [
                await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-c",
                    CALLER,
                    pg_dsn,
                    url,
                    member_id,
                    start_at,
                    cwd=REPOSITORY,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.PIPE,
                )
                for _ in range(2)
            ]
            outputs = [await caller.communicate() for caller in callers]
            for caller, (out, err) in zip(callers, outputs, strict=True):
                assert caller.returncode == 0, err.decode()[-2000:]
                assert out.decode().splitlines()[-1] == "['1']"
            assert (await world.counters(name))["refreshes"] == 1
            logged = b"".join(out + err for out, err in outputs).decode()
            assert logged.count("bitrix24_token_refreshed") == 1


class Held(httpx.AsyncBaseTransport):
    """The network to the sandbox with the refreshes held at the door until `release` is set
    (`arrived` tells one is waiting)."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.arrived = asyncio.Event()
        self.release = asyncio.Event()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.params.get("grant_type") == "refresh_token":
            self.arrived.set()
            await self.release.wait()
        return await self.inner.handle_async_request(request)


@pytest.fixture
async def held(world: World) -> AsyncIterator[Held]:
    gate = Held(world.transport)
    yield gate
    gate.release.set()  # a failed test leaves no refresh waiting


def held_book(world: World, pool: asyncpg.Pool, held: Held) -> TokenBook:
    return token_book(pool, held, world.clock, CLIENT_ID, SECRET)


async def test_an_uninstall_during_a_refresh_leaves_no_pair_behind(
    world: World, pool: asyncpg.Pool, held: Held
) -> None:
    book = held_book(world, pool, held)
    member_id = await world.install(book)
    stale = (await book.access(member_id)).access_token
    refresh = asyncio.create_task(book.refresh(member_id, stale))
    await held.arrived.wait()
    uninstall = asyncio.create_task(book.uninstall(member_id))
    await asyncio.sleep(0.2)
    assert not uninstall.done()  # it waits for the refresh's lock
    held.release.set()
    await refresh
    assert await uninstall is True
    row = await book.portal(member_id)
    assert row is not None
    assert (row.status, row.access_token, row.refresh_token) == ("uninstalled", None, None)
    with pytest.raises(PortalNotInstalled):
        await book.access(member_id)


async def test_a_reinstall_during_a_refresh_of_the_old_grant_stays_installed(
    world: World, pool: asyncpg.Pool, held: Held
) -> None:
    book = held_book(world, pool, held)
    member_id = await world.install(book)
    stale = (await book.access(member_id)).access_token
    refresh = asyncio.create_task(book.refresh(member_id, stale))
    await held.arrived.wait()
    # The administrator uninstalls (the old grant dies at the OAuth server) and installs again.
    assert (await world.http.post(f"/p/{world.alpha}/sandbox/uninstall")).status_code == 200

    async def uninstall_and_install() -> None:
        await book.uninstall(member_id)
        await world.install(book)

    again = asyncio.create_task(uninstall_and_install())
    await asyncio.sleep(0.2)
    held.release.set()
    with pytest.raises(PortalRevoked):
        await refresh  # the old grant's refresh, refused, ran first
    await again
    row = await book.portal(member_id)
    assert row is not None
    assert row.status == "installed"
    async with book_client(book, member_id, world.transport) as api:
        assert (await api.call("profile")).result["ID"] == "1"


async def test_a_refresh_writes_only_over_the_pair_it_started_from(
    world: World, pool: asyncpg.Pool, held: Held
) -> None:
    """Compare-and-set: a row changed by a writer outside the lock (an older process) is not
    overwritten, and the refresh's pair is not used."""
    book = held_book(world, pool, held)
    member_id = await world.install(book)
    stale = (await book.access(member_id)).access_token
    refresh = asyncio.create_task(book.refresh(member_id, stale))
    await held.arrived.wait()
    await pool.execute(
        "UPDATE bitrix24_app_portals SET refresh_token = 'elsewhere' WHERE member_id = $1",
        member_id,
    )
    held.release.set()
    with pytest.raises(PortalNotInstalled) as caught:
        await refresh
    assert caught.value.portal_status == "replaced"
    assert (await book.portal(member_id)).refresh_token == "elsewhere"  # type: ignore[union-attr]
    assert book._cache.get(member_id) is None


async def test_an_app_info_without_a_client_endpoint_is_refused(
    world: World, pool: asyncpg.Pool
) -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        install = {"member_id": "m1", "domain": "x.bitrix24.com", "scope": "crm"}
        if request.url.params.get("auth") == "relative":
            install["client_endpoint"] = "/rest/"
        return httpx.Response(200, json={"result": {"client_id": CLIENT_ID, "install": install}})

    credentials = AppCredentials(ROOT, CLIENT_ID, SecretStr(SECRET))
    oauth = OAuthServer(credentials, httpx.MockTransport(answer))
    for token in ("missing", "relative"):
        with pytest.raises(PermanentBitrix24Error) as caught:
            await oauth.token_owner(token)
        assert "client_endpoint: expected the portal's REST root, an http(s) URL" in str(
            caught.value
        )
    await oauth.aclose()


async def test_a_token_another_process_replaced_is_taken_from_the_row(
    world: World, pool: asyncpg.Pool, second_pool: asyncpg.Pool
) -> None:
    """The portal refuses this process's copy as `invalid_token` (another process refreshed and
    the old token is gone): the row's newer pair is used, without asking the OAuth server."""
    lagging = world.book(pool, FakeClock(T0))  # its clock does not see the token expire
    other = world.book(second_pool)
    member_id = await world.install(lagging)
    async with book_client(lagging, member_id, world.transport) as api:
        assert (await api.call("profile")).result["ID"] == "1"
        old = (await lagging.access(member_id)).access_token
        world.clock.now += TTL_S + 1
        await other.refresh(member_id, old)
        del world.sandbox.named[world.alpha].portal.state.app.tokens.access[old]
        assert (await api.call("profile")).result["ID"] == "1"
    assert (await world.counters(world.alpha))["refreshes"] == 1


async def test_an_invalid_token_the_row_still_holds_is_refused_for_good(
    world: World, pool: asyncpg.Pool
) -> None:
    book = world.book(pool)
    member_id = await world.install(book)
    async with book_client(book, member_id, world.transport) as api:
        old = (await book.access(member_id)).access_token
        del world.sandbox.named[world.alpha].portal.state.app.tokens.access[old]
        with pytest.raises(PermanentBitrix24Error) as caught:
            await api.call("profile")
        assert caught.value.code == "invalid_token"
    assert "refreshes" not in await world.counters(world.alpha)
    assert (await book.portal(member_id)).status == "installed"  # type: ignore[union-attr]
