"""The application's install and lifecycle against two sandbox portals (ASGI in process, both ways:
the portals POST the install form and events to the application, the application calls the
OAuth server and the portals) and the real PostgreSQL: both installs stored with their events
bound, an uninstall of one leaving the other alone, a reinstall, and forged requests refused."""

import asyncio
import dataclasses
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg
import httpx
import pytest

from services.app.installer import Installer
from services.app.lifecycle import INGEST_EVENTS, wanted_bindings, wanted_placements
from services.app.rebind import rebind_all, run_rebind
from services.app.web import create_app
from services.sandbox.app import create_app as create_sandbox_app
from services.sandbox.limits import Limits
from services.sandbox.oauth_server import AppRegistration
from services.sandbox.portals import PortalSpec, Sandbox
from shared.bitrix24 import Bitrix24Client, MemoryRateBudget
from shared.bitrix24.oauth import TokenPair
from shared.bitrix24.tokens import TokenBook
from shared.logging import configure_logging
from tests.support import T0, FakeClock
from tests.support.app import (
    APP,
    INGEST,
    ROOT,
    Forward,
    ToApp,
    app_registration,
    book_client,
    sandbox_for,
    settled,
    token_book,
    two_names,
)

EVENTS = f"{APP}/app/events"
CLIENT_ID = "local.nps.1"
SECRET = "app-secret-9b1d"
REGISTRATION = app_registration(CLIENT_ID, SECRET)
CALLBACK_ONLY = AppRegistration(client_id=CLIENT_ID, client_secret=SECRET, callback_url=EVENTS)
"""An application without an install page: ONAPPINSTALL alone brings the portal's pair."""
WANTED = {(event, INGEST) for event in INGEST_EVENTS} | {
    ("ONAPPUPDATE", EVENTS),
    ("ONAPPUNINSTALL", EVENTS),
}
FRAME = f"{APP}/frame"
"""The reports app's frame, where the application's tabs open."""
TABS = {("CRM_CONTACT_DETAIL_TAB", FRAME), ("CRM_DEAL_DETAIL_TAB", FRAME)}


@dataclass
class World:
    sandbox: Sandbox
    book: TokenBook
    installer: Installer
    portals: httpx.AsyncClient
    """The sandbox, as a test or an administrator reaches it."""
    app: httpx.AsyncClient
    """The application, as anyone on the internet reaches it."""
    net: httpx.AsyncBaseTransport
    """The network to the sandbox, as the application reaches it."""
    alpha: str
    beta: str
    """The two portals' names: the test's own (a member_id derives from the name, and the
    database is the session's)."""

    def member_id(self, name: str) -> str:
        return self.sandbox.named[name].portal.member_id

    def application_token(self, name: str) -> str | None:
        return self.sandbox.named[name].portal.state.app.application_token

    async def install(self, name: str) -> dict[str, object]:
        answer = await self.portals.post(f"/p/{name}/sandbox/install", json={})
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["installed"] is True, body
        await self.delivered(name, "ONAPPINSTALL")
        return dict(body)

    async def uninstall(self, name: str) -> None:
        answer = await self.portals.post(f"/p/{name}/sandbox/uninstall")
        assert answer.status_code == 200, answer.text
        await self.delivered(name, "ONAPPUNINSTALL")

    async def delivered(self, name: str, event: str) -> None:
        """Wait until the portal's last `event` reached the application; it must have taken it."""
        sent = await settled(self.sandbox.named[name].portal, event)
        assert (sent[-1].status, sent[-1].http_status) == ("delivered", 200), sent[-1].error

    async def bindings(self, name: str) -> set[tuple[str, str]]:
        state = (await self.portals.get(f"/p/{name}/sandbox/app")).json()
        return {(b["event"], b["handler"]) for b in state["bindings"]}

    async def placements(self, name: str) -> set[tuple[str, str]]:
        state = (await self.portals.get(f"/p/{name}/sandbox/app")).json()
        return {(p["placement"], p["handler"]) for p in state["placements"]}

    async def update(self, name: str) -> None:
        answer = await self.portals.post(f"/p/{name}/sandbox/update")
        assert answer.status_code == 200, answer.text
        await self.delivered(name, "ONAPPUPDATE")


@pytest.fixture
def registration() -> AppRegistration:
    return REGISTRATION


@pytest.fixture
def offline() -> bool:
    """Whether the application is configured for offline intake (`INGEST_OFFLINE`)."""
    return False


@pytest.fixture
async def world(
    pool: asyncpg.Pool, registration: AppRegistration, offline: bool
) -> AsyncIterator[World]:
    clock = FakeClock(T0)
    sandbox = sandbox_for(registration, clock)
    names = two_names()
    for name in names:
        sandbox.add(PortalSpec(name=name, limits=Limits.off()))
    to_sandbox = Forward()
    sandbox_net = httpx.ASGITransport(app=to_sandbox)
    book = token_book(pool, sandbox_net, clock, CLIENT_ID, SECRET)

    def client_for(member_id: str) -> Bitrix24Client:
        return book_client(book, member_id, sandbox_net)

    wanted = wanted_bindings(INGEST, EVENTS, offline=offline)
    installer = Installer(
        book, CLIENT_ID, client_for, wanted, clock=clock, placements=wanted_placements(FRAME)
    )
    app_net = httpx.ASGITransport(app=create_app(installer, f"{ROOT}/sandbox/bx24.js"))
    to_sandbox.target = create_sandbox_app(sandbox, event_transport=ToApp(app_net))
    async with (
        httpx.AsyncClient(transport=sandbox_net, base_url=ROOT) as portals,
        httpx.AsyncClient(transport=app_net, base_url=APP) as app,
    ):
        yield World(sandbox, book, installer, portals, app, sandbox_net, *names)
    await book.oauth.aclose()


async def test_two_portals_installed_each_stored_with_its_events_bound(world: World) -> None:
    for name in (world.alpha, world.beta):
        answer = await world.install(name)
        page = answer["install_page"]
        assert isinstance(page, dict)
        assert (page["status_code"], page["calls_install_finish"]) == (200, True)
    for name in (world.alpha, world.beta):
        row = await world.book.portal(world.member_id(name))
        assert row is not None
        assert (row.status, row.domain, row.client_endpoint) == (
            "installed",
            f"{name}.sandbox.local",
            f"{ROOT}/p/{name}/rest/",
        )
        assert row.application_token == world.application_token(name)
        assert row.access_token is not None
        assert await world.bindings(name) == WANTED
        assert await world.placements(name) == TABS
    assert world.application_token(world.alpha) != world.application_token(world.beta)

    # Bound once: the install page and ONAPPINSTALL both bind, a third time binds nothing.
    member_id = world.member_id(world.alpha)
    assert await world.installer.bind(member_id) == []
    state = (await world.portals.get(f"/p/{world.alpha}/sandbox/app")).json()
    assert len(state["bindings"]) == len(WANTED)

    # Two binds at once, both finding a binding missing: the portal refuses the second
    # ("Handler already binded"), which is no failure.
    async with world.installer.client_for(member_id) as api:
        await api.call("event.unbind", {"event": "ONCRMDEALADD", "handler": INGEST})
    both = await asyncio.gather(world.installer.bind(member_id), world.installer.bind(member_id))
    assert [[b.event for b in made] for made in both] == [["ONCRMDEALADD"]] * 2
    state = (await world.portals.get(f"/p/{world.alpha}/sandbox/app")).json()
    assert len(state["bindings"]) == len(WANTED)
    assert await world.bindings(world.alpha) == WANTED


@pytest.mark.parametrize("offline", [True])
async def test_offline_intake_binds_ingests_events_to_the_portals_queue(world: World) -> None:
    await world.install(world.alpha)
    offline = {(event, "") for event in INGEST_EVENTS} | {
        ("ONAPPUPDATE", EVENTS),
        ("ONAPPUNINSTALL", EVENTS),
    }
    assert await world.bindings(world.alpha) == offline
    member_id = world.member_id(world.alpha)
    assert await world.installer.bind(member_id) == []
    async with world.installer.client_for(member_id) as api:
        await api.call("event.unbind", {"event": "ONCRMDEALADD", "event_type": "offline"})
    assert [b.event for b in await world.installer.bind(member_id)] == ["ONCRMDEALADD"]
    assert await world.bindings(world.alpha) == offline
    # A deal changed now waits in the portal's offline queue.
    async with world.installer.client_for(member_id) as api:
        await api.call("crm.deal.add", {"fields": {"TITLE": "queued"}})
        queued = (await api.call("event.offline.list")).result
    assert [row["EVENT_NAME"] for row in queued] == ["ONCRMDEALADD"]


@pytest.mark.parametrize("registration", [CALLBACK_ONLY])
async def test_an_application_without_install_page_is_installed_by_onappinstall(
    world: World,
) -> None:
    answer = await world.install(world.alpha)
    assert answer["install_page"] is None
    row = await world.book.portal(world.member_id(world.alpha))
    assert row is not None
    assert (row.status, row.application_token) == (
        "installed",
        world.application_token(world.alpha),
    )
    assert await world.bindings(world.alpha) == WANTED
    async with world.installer.client_for(world.member_id(world.alpha)) as api:
        assert (await api.call("profile")).result["ID"] == "1"


async def test_an_uninstall_stops_that_portal_only_and_a_reinstall_brings_it_back(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging("info", "json")
    await world.install(world.alpha)
    await world.install(world.beta)
    old_token = world.application_token(world.alpha)
    await world.uninstall(world.alpha)

    alpha = await world.book.portal(world.member_id(world.alpha))
    assert alpha is not None
    assert (alpha.status, alpha.access_token, alpha.refresh_token, alpha.application_token) == (
        "uninstalled",
        None,
        None,
        None,
    )
    beta = await world.book.portal(world.member_id(world.beta))
    assert beta is not None
    assert (beta.status, beta.application_token) == (
        "installed",
        world.application_token(world.beta),
    )
    async with world.installer.client_for(world.member_id(world.beta)) as api:
        assert (await api.call("profile")).result["ID"] == "1"
    assert await world.bindings(world.beta) == WANTED
    logged = capsys.readouterr()
    lines = [json.loads(line) for line in (logged.out + logged.err).splitlines()]
    uninstalls = [line for line in lines if line["event"] == "app_uninstalled"]
    assert uninstalls == [
        {
            **uninstalls[0],
            "member_id": world.member_id(world.alpha),
            "domain": f"{world.alpha}.sandbox.local",
            "clean": False,
        }
    ]
    text = logged.out + logged.err
    assert str(old_token) not in text
    assert SECRET not in text

    await world.install(world.alpha)
    again = await world.book.portal(world.member_id(world.alpha))
    assert again is not None
    assert again.status == "installed"
    assert again.application_token == world.application_token(world.alpha)
    assert again.application_token not in (None, old_token)
    assert await world.bindings(world.alpha) == WANTED


async def test_a_forged_uninstall_is_refused(world: World) -> None:
    await world.install(world.alpha)
    member_id = world.member_id(world.alpha)
    forged = {
        "event": "ONAPPUNINSTALL",
        "data[CLEAN]": "1",
        "auth[member_id]": member_id,
        "auth[domain]": f"{world.alpha}.sandbox.local",
        "auth[application_token]": "not-the-token",
    }
    refused = await world.app.post("/app/events", data=forged)
    assert refused.status_code == 403
    assert refused.json() == {
        "error": "application token not accepted",
        "field": "auth[application_token]",
        "expected": "the portal's token",
    }
    elsewhere = {**forged, "auth[member_id]": "someone-else"}
    assert (await world.app.post("/app/events", data=elsewhere)).status_code == 403
    other = {**forged, "auth[application_token]": str(world.application_token(world.alpha))}
    other["auth[member_id]"] = world.member_id(world.beta)
    assert (await world.app.post("/app/events", data=other)).status_code == 403
    missing = await world.app.post(
        "/app/events", data={k: v for k, v in forged.items() if k != "auth[application_token]"}
    )
    assert (missing.status_code, missing.json()["field"]) == (400, "auth[application_token]")
    assert (await world.book.portal(member_id)).status == "installed"  # type: ignore[union-attr]


async def test_forged_installs_are_refused(world: World) -> None:
    await world.install(world.beta)
    beta = await world.book.portal(world.member_id(world.beta))
    assert beta is not None
    assert beta.access_token is not None
    form = {
        "AUTH_ID": "garbage",
        "AUTH_EXPIRES": "3600",
        "REFRESH_ID": "whatever",
        "member_id": world.member_id(world.alpha),
        "APPLICATION_TOKEN": "chosen-by-the-forger",
    }
    query = {"DOMAIN": f"{world.alpha}.sandbox.local", "PROTOCOL": "0"}
    unknown = await world.app.post("/app/install", params=query, data=form)
    assert unknown.status_code == 401
    assert "AUTH_ID" in unknown.text
    assert "installFinish" not in unknown.text
    borrowed = await world.app.post(
        "/app/install", params=query, data={**form, "AUTH_ID": beta.access_token}
    )
    assert borrowed.status_code == 403
    assert "token of another portal" in borrowed.text
    assert await world.book.portal(world.member_id(world.alpha)) is None
    no_member = await world.app.post(
        "/app/install", params=query, data={k: v for k, v in form.items() if k != "member_id"}
    )
    assert (no_member.status_code, "member_id" in no_member.text) == (400, True)

    event = {
        "event": "ONAPPINSTALL",
        "auth[member_id]": world.member_id(world.alpha),
        "auth[application_token]": "chosen-by-the-forger",
    }
    unverifiable = await world.app.post("/app/events", data=event)
    assert unverifiable.status_code == 401
    assert unverifiable.json()["field"] == "auth[access_token]"
    borrowed_event = await world.app.post(
        "/app/events", data={**event, "auth[access_token]": beta.access_token}
    )
    assert borrowed_event.status_code == 403
    assert await world.book.portal(world.member_id(world.alpha)) is None
    other = await world.app.post("/app/events", data={"event": "ONCRMDEALADD"})
    assert (other.status_code, other.json()["field"]) == (400, "event")


async def test_only_an_administrator_installs_or_replaces_the_portals_token(
    world: World,
) -> None:
    """Any user who opens the application has a token of the portal (BX24.getAuth()): with it
    alone nobody replaces the portal's pair or chooses its application_token; the install
    form keeps the stored token, the administrator's ONAPPINSTALL replaces it."""
    await world.install(world.alpha)
    member_id = world.member_id(world.alpha)
    portal = world.sandbox.named[world.alpha].portal
    portal.crm.add_user(2, "Ivan", "Sidorov")
    user = portal.app.issue(2)
    before = await world.book.portal(member_id)
    assert before is not None
    form = {
        "AUTH_ID": user.access_token,
        "AUTH_EXPIRES": "3600",
        "REFRESH_ID": "junk-refresh-token",
        "member_id": member_id,
        "APPLICATION_TOKEN": "chosen-by-the-user",
    }
    query = {"DOMAIN": f"{world.alpha}.sandbox.local", "PROTOCOL": "0"}
    refused = await world.app.post("/app/install", params=query, data=form)
    assert refused.status_code == 403
    assert "not a portal administrator" in refused.text
    assert "installFinish" not in refused.text
    event = {
        "event": "ONAPPINSTALL",
        "auth[member_id]": member_id,
        "auth[access_token]": user.access_token,
        "auth[application_token]": "chosen-by-the-user",
    }
    with_pair = {**event, "auth[refresh_token]": "junk-refresh-token", "auth[expires_in]": "3600"}
    for body in (event, with_pair):
        answer = await world.app.post("/app/events", data=body)
        assert answer.status_code == 403
        assert answer.json() == {
            "error": "not a portal administrator",
            "field": "auth[access_token]",
            "expected": "the token of an administrator of the portal "
            "(only one installs the application)",
        }
    assert await world.book.portal(member_id) == before

    # The administrator's reinstall of the installed portal takes the new pair; the
    # application_token stays the one the portal's events carry.
    admin = portal.app.issue(1)
    again = await world.app.post(
        "/app/install",
        params=query,
        data={**form, "AUTH_ID": admin.access_token, "REFRESH_ID": admin.refresh_token},
    )
    assert again.status_code == 200, again.text
    row = await world.book.portal(member_id)
    assert row is not None
    assert (row.status, row.access_token, row.refresh_token) == (
        "installed",
        admin.access_token,
        admin.refresh_token,
    )
    assert row.application_token == before.application_token == world.application_token(world.alpha)
    # The administrator's ONAPPINSTALL (an updated application's portal sends its new token)
    # replaces it: the portal's ONAPPUNINSTALL carries the new one, and only it is taken.
    admin_event = {**event, "auth[access_token]": admin.access_token}
    assert (await world.app.post("/app/events", data=admin_event)).status_code == 200
    replaced = await world.book.portal(member_id)
    assert replaced is not None
    assert replaced.application_token == "chosen-by-the-user"
    uninstall = {"event": "ONAPPUNINSTALL", "auth[member_id]": member_id}
    old_token = {**uninstall, "auth[application_token]": before.application_token}
    assert (await world.app.post("/app/events", data=old_token)).status_code == 403
    new_token = {**uninstall, "auth[application_token]": "chosen-by-the-user"}
    assert (await world.app.post("/app/events", data=new_token)).status_code == 200
    assert (await world.book.portal(member_id)).status == "uninstalled"  # type: ignore[union-attr]


async def test_an_update_takes_the_new_token_and_binds_everything_again(world: World) -> None:
    """The portal's update drops every binding and widget and sends ONAPPUPDATE (to the
    handler bound for it) with a new application_token: stored, with the version, everything
    bound again (ONAPPUPDATE too, for the next update); the old token proves nothing any more.
    The other portal is untouched."""
    await world.install(world.alpha)
    await world.install(world.beta)
    member_id = world.member_id(world.alpha)
    before = await world.book.portal(member_id)
    beta_before = await world.book.portal(world.member_id(world.beta))
    assert before is not None
    assert before.version == 1  # ONAPPINSTALL's data[VERSION]

    await world.update(world.alpha)
    after = await world.book.portal(member_id)
    assert after is not None
    assert after.application_token == world.application_token(world.alpha)
    assert after.application_token not in (None, before.application_token)
    assert (after.status, after.version) == ("installed", 2)
    assert await world.bindings(world.alpha) == WANTED
    assert await world.placements(world.alpha) == TABS
    assert await world.book.portal(world.member_id(world.beta)) == beta_before

    await world.update(world.alpha)  # bound again, so the next update reaches us too
    again = await world.book.portal(member_id)
    assert again is not None
    assert (again.version, again.application_token) == (3, world.application_token(world.alpha))
    assert again.application_token != after.application_token

    uninstall = {"event": "ONAPPUNINSTALL", "auth[member_id]": member_id}
    old = {**uninstall, "auth[application_token]": str(before.application_token)}
    assert (await world.app.post("/app/events", data=old)).status_code == 403
    new = {**uninstall, "auth[application_token]": str(again.application_token)}
    assert (await world.app.post("/app/events", data=new)).status_code == 200


async def test_forged_updates_are_refused(world: World) -> None:
    await world.install(world.alpha)
    member_id = world.member_id(world.alpha)
    portal = world.sandbox.named[world.alpha].portal
    portal.crm.add_user(2, "Ivan", "Sidorov")
    user = portal.app.issue(2)
    admin = portal.app.issue(1)
    before = await world.book.portal(member_id)
    event = {
        "event": "ONAPPUPDATE",
        "data[VERSION]": "9",
        "auth[member_id]": member_id,
        "auth[application_token]": "chosen-by-the-forger",
    }
    unverifiable = await world.app.post("/app/events", data=event)
    assert (unverifiable.status_code, unverifiable.json()["field"]) == (401, "auth[access_token]")
    not_admin = await world.app.post(
        "/app/events", data={**event, "auth[access_token]": user.access_token}
    )
    assert (not_admin.status_code, not_admin.json()["error"]) == (
        403,
        "not a portal administrator",
    )
    garbage = await world.app.post("/app/events", data={**event, "auth[access_token]": "junk"})
    assert garbage.status_code == 401
    elsewhere = {**event, "auth[member_id]": world.member_id(world.beta)}
    not_installed = await world.app.post(
        "/app/events", data={**elsewhere, "auth[access_token]": admin.access_token}
    )
    assert not_installed.status_code == 403
    assert not_installed.json() == {
        "error": "portal not installed",
        "field": "auth[member_id]",
        "expected": "a portal the application is installed on",
    }
    bad_version = await world.app.post(
        "/app/events",
        data={**event, "data[VERSION]": "new", "auth[access_token]": admin.access_token},
    )
    assert (bad_version.status_code, bad_version.json()["field"]) == (400, "data[VERSION]")
    assert await world.book.portal(member_id) == before
    assert await world.book.portal(world.member_id(world.beta)) is None


class Counting(httpx.AsyncBaseTransport):
    """The network to the portals, counting the requests in flight at once; the host
    `unreachable.example.test` does not answer."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.now = 0
        self.peak = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.now += 1
        self.peak = max(self.peak, self.now)
        try:
            await asyncio.sleep(0.01)  # a portal takes its time: the rounds overlap
            if request.url.host == "unreachable.example.test":
                raise httpx.ConnectError("no route to host", request=request)
            return await self.inner.handle_async_request(request)
        finally:
            self.now -= 1


async def test_the_periodic_rebind_brings_back_what_each_portal_lost(
    world: World, pool: asyncpg.Pool, capsys: pytest.CaptureFixture[str]
) -> None:
    """A round binds again what a portal lost on its side (an event, the update's binding, the
    contact card's tab), binds nothing where nothing was lost, takes a few portals at a time,
    and logs and skips a portal whose tokens are gone and one that cannot be reached."""
    configure_logging("info", "json")
    await world.install(world.alpha)
    await world.install(world.beta)
    alpha, beta = world.member_id(world.alpha), world.member_id(world.beta)
    async with world.installer.client_for(alpha) as api:
        await api.call("event.unbind", {"event": "ONCRMDEALADD", "handler": INGEST})
        await api.call("event.unbind", {"event": "ONAPPUPDATE", "handler": EVENTS})
        await api.call(
            "placement.unbind", {"PLACEMENT": "CRM_CONTACT_DETAIL_TAB", "HANDLER": FRAME}
        )
    # beta deletes the application without telling it (its ONAPPUNINSTALL unbound first): the
    # row still says installed, the portal revoked every token; its access token has expired,
    # so the refresh finds the grant revoked.
    async with world.installer.client_for(beta) as api:
        await api.call("event.unbind", {"event": "ONAPPUNINSTALL", "handler": EVENTS})
    assert (await world.portals.post(f"/p/{world.beta}/sandbox/uninstall")).status_code == 200
    await pool.execute(
        "UPDATE bitrix24_app_portals SET expires_at = to_timestamp($2) WHERE member_id = $1",
        beta,
        T0 - 60,
    )
    world.book.forget(beta)
    ghost = f"ghost-{world.alpha}"
    endpoint = "http://unreachable.example.test/rest/"
    await world.book.install(
        TokenPair("ghost-access", "ghost-refresh", T0 + 3600, ghost, endpoint, "crm"),
        domain="ghost.example.test",
        application_token="ghost-app-token",
    )
    net = Counting(world.net)

    def client_for(member_id: str) -> Bitrix24Client:
        return Bitrix24Client(
            None, MemoryRateBudget(None), net, app=world.book.session(member_id), max_attempts=1
        )

    ours = {alpha, beta, ghost}
    installer = dataclasses.replace(world.installer, client_for=client_for)
    done = await rebind_all(installer, concurrency=2)
    assert done.bound[alpha] == ["ONCRMDEALADD", "ONAPPUPDATE"]
    assert {key: done.skipped[key] for key in (beta, ghost)} == {
        beta: "revoked",
        ghost: "NETWORK_ERROR",
    }
    assert net.peak <= 2
    assert await world.bindings(world.alpha) == WANTED
    assert await world.placements(world.alpha) == TABS
    revoked = await world.book.portal(beta)
    assert revoked is not None
    assert revoked.status == "revoked"

    again = await rebind_all(installer, concurrency=2)
    assert alpha not in again.bound  # nothing lost, nothing bound
    assert beta not in again.skipped  # revoked: no longer installed, not tried
    assert again.skipped[ghost] == "NETWORK_ERROR"
    logged = capsys.readouterr()
    text = logged.out + logged.err
    lines = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    skipped = {line["member_id"] for line in lines if line["event"] == "app_rebind_skipped"} & ours
    assert skipped == {beta, ghost}
    for secret in ("ghost-access", "ghost-refresh", "ghost-app-token", SECRET):
        assert secret not in text
    await world.book.uninstall(ghost)


async def test_the_rebind_runs_at_start_and_every_interval(world: World) -> None:
    await world.install(world.alpha)
    member_id = world.member_id(world.alpha)
    stop = asyncio.Event()
    job = asyncio.create_task(run_rebind(world.installer, 0.05, stop))
    try:
        for event in ("ONCRMDEALADD", "ONCRMLEADUPDATE"):
            async with world.installer.client_for(member_id) as api:
                await api.call("event.unbind", {"event": event, "handler": INGEST})

            async with asyncio.timeout(5):
                while await world.bindings(world.alpha) != WANTED:
                    await asyncio.sleep(0.02)
    finally:
        stop.set()
        await asyncio.wait_for(job, 5)


class Silent(httpx.AsyncBaseTransport):
    """A portal that never answers."""

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        await asyncio.Event().wait()
        raise AssertionError("never answered")


async def test_a_stop_ends_the_round_under_way(world: World) -> None:
    await world.install(world.alpha)

    def client_for(member_id: str) -> Bitrix24Client:
        return Bitrix24Client(
            None, MemoryRateBudget(None), Silent(), app=world.book.session(member_id)
        )

    stop = asyncio.Event()
    installer = dataclasses.replace(world.installer, client_for=client_for)
    job = asyncio.create_task(run_rebind(installer, 3600, stop))
    await asyncio.sleep(0.2)
    assert not job.done()  # the round waits for the portal
    stop.set()
    await asyncio.wait_for(job, 2)


async def test_a_body_too_large_is_refused_before_it_is_read_whole(world: World) -> None:
    pulled = 0

    async def body() -> AsyncIterator[bytes]:
        nonlocal pulled
        for _ in range(64):
            pulled += 1
            yield b"x" * 16 * 1024  # 1 MiB in all, no Content-Length

    for path in ("/app/install", "/app/events"):
        pulled = 0
        answer = await world.app.post(
            path,
            content=body(),
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert answer.status_code == 413, answer.text
        assert "body too large" in answer.text
        assert pulled <= 6  # 64 KiB and one chunk more, not the whole megabyte
