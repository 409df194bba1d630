"""Several portals in one sandbox process, over HTTP: each named portal under ``/p/<name>/``
with its own data, ids, credentials, limits, handlers, call log and state file; the default
portal as always at the root; the install flow against a real application server."""

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse
from starlette.routing import Route

from services.sandbox.app import create_app
from services.sandbox.limits import Limits
from services.sandbox.oauth_server import AppRegistration
from services.sandbox.portal import SandboxPortal
from services.sandbox.portals import PortalSpec, Sandbox, named_member_id, portal_factory
from tests.support import T0, FakeClock, serving

CONFIG = Path(__file__).parents[2] / "config" / "portal.example.yaml"
ROOT = "http://sandbox"
NPS = 1038


def make_sandbox(clock: FakeClock, **options: Any) -> Sandbox:
    return Sandbox(
        SandboxPortal(secret="r00tsecret", clock=clock, limits=Limits.off()),
        clock=clock,
        factory=portal_factory(seed=str(CONFIG), clock=clock, seed_path=Path),
        **options,
    )


def spec(name: str) -> PortalSpec:
    return PortalSpec(name=name, contacts=15, sales=3, limits=Limits.off())


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)


@pytest.fixture
def sandbox(clock: FakeClock) -> Sandbox:
    sandbox = make_sandbox(clock, base_url=ROOT)
    for name in ("alpha", "beta"):
        sandbox.add(spec(name))
    return sandbox


class Hook:
    """An event handler: records the forms POSTed to it."""

    def __init__(self) -> None:
        self.forms: list[dict[str, str]] = []
        self._arrived = asyncio.Event()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.forms.append(dict(parse_qsl(request.content.decode())))
        self._arrived.set()
        return httpx.Response(200)

    async def wait(self, count: int) -> list[dict[str, str]]:
        async with asyncio.timeout(5):
            while len(self.forms) < count:
                self._arrived.clear()
                await self._arrived.wait()
        return self.forms


@pytest.fixture
def hook() -> Hook:
    return Hook()


@pytest.fixture
async def client(sandbox: Sandbox, hook: Hook) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(sandbox, event_transport=httpx.MockTransport(hook))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=ROOT) as client:
        yield client


def webhook(sandbox: Sandbox, name: str | None, method: str) -> str:
    host = sandbox.named[name] if name else sandbox.default
    return f"{host.prefix}/rest/1/{host.portal.secret}/{method}"


async def contact_ids(client: httpx.AsyncClient, sandbox: Sandbox, name: str) -> set[int]:
    ids: set[int] = set()
    start = 0
    while True:
        response = await client.post(
            webhook(sandbox, name, "crm.contact.list"), json={"select": ["ID"], "start": start}
        )
        ids |= {int(row["ID"]) for row in response.json()["result"]}
        if "next" not in response.json():
            return ids
        start = response.json()["next"]


async def test_each_named_portal_is_a_portal_of_its_own(
    client: httpx.AsyncClient, sandbox: Sandbox
) -> None:
    listed = (await client.get("/sandbox/portals")).json()["portals"]
    assert [(p["name"], p["member_id"], p["domain"]) for p in listed] == [
        (None, sandbox.default.portal.member_id, "sandbox.bitrix24.local"),
        ("alpha", named_member_id("alpha"), "alpha.sandbox.local"),
        ("beta", named_member_id("beta"), "beta.sandbox.local"),
    ]
    alpha = sandbox.named["alpha"].portal
    info = (await client.get("/p/alpha/sandbox/info")).json()
    assert info["webhook_url"] == f"{ROOT}/p/alpha/rest/1/{alpha.secret}/"
    assert info["member_id"] == alpha.member_id
    assert info["smart_processes"] == [NPS]
    root = (await client.get("/sandbox/info")).json()
    assert root["webhook_url"] == f"{ROOT}/rest/1/r00tsecret/"
    assert root["member_id"] == sandbox.default.portal.member_id

    in_alpha = await contact_ids(client, sandbox, "alpha")
    in_beta = await contact_ids(client, sandbox, "beta")
    assert len(in_alpha) == len(in_beta) == 15
    assert in_alpha.isdisjoint(in_beta)
    assert min(in_alpha) > alpha.state.id_base >= 1_000_000

    crossed = await client.post(
        f"/p/beta/rest/1/{alpha.secret}/crm.contact.list", json={"select": ["ID"]}
    )
    assert (crossed.status_code, crossed.json()["error"]) == (401, "NO_AUTH_FOUND")
    lead = await client.post(
        webhook(sandbox, "alpha", "crm.lead.add"), json={"fields": {"TITLE": "only alpha"}}
    )
    assert lead.status_code == 200
    assert (await client.get("/p/beta/sandbox/leads")).json()["leads"] == []
    assert (await client.get("/sandbox/leads")).json()["leads"] == []
    assert [x["TITLE"] for x in (await client.get("/p/alpha/sandbox/leads")).json()["leads"]] == [
        "only alpha"
    ]
    some = min(in_alpha)
    assert (await client.get(f"/p/alpha/crm/contact/details/{some}/")).status_code == 200
    assert (await client.get(f"/p/beta/crm/contact/details/{some}/")).status_code == 404
    beta_calls = (await client.get("/p/beta/sandbox/calls")).json()["calls"]
    assert {call["method"] for call in beta_calls} == {"crm.contact.list"}


async def test_limits_and_faults_are_per_portal(
    client: httpx.AsyncClient, sandbox: Sandbox
) -> None:
    await client.put("/p/alpha/sandbox/limits", json={"per_second": 0.5, "burst": 1})
    await client.put("/p/beta/sandbox/faults", json={"error_count": 1})
    codes = []
    for name in ("alpha", "alpha", "beta", "beta", None):
        response = await client.post(webhook(sandbox, name, "user.get"), json={"ID": 1})
        codes.append(response.status_code)
    assert codes == [200, 503, 500, 200, 200]
    assert (await client.get("/sandbox/limits")).json()["per_second"] is None


async def test_handlers_and_events_stay_with_their_portal(
    client: httpx.AsyncClient, sandbox: Sandbox, hook: Hook
) -> None:
    url = "http://ingest.example.test/webhooks/bitrix24"
    added = await client.post("/p/alpha/sandbox/handlers", json={"url": url})
    assert added.status_code == 200
    assert (await client.get("/p/beta/sandbox/handlers")).json()["handlers"] == []
    await client.post("/p/beta/sandbox/answers", json={"count": 2, "seed": 1})
    await client.post("/sandbox/answers", json={"items": []})
    assert sandbox.named["beta"].portal.deliveries == []
    made = (await client.post("/p/alpha/sandbox/answers", json={"count": 1, "seed": 2})).json()
    [event] = await hook.wait(1)
    alpha = sandbox.named["alpha"].portal
    assert event["data[FIELDS][ID]"] == str(made["created"][0])
    assert (event["auth[member_id]"], event["auth[domain]"]) == (alpha.member_id, alpha.domain)
    assert event["auth[application_token]"] == alpha.application_token
    assert made["created"][0] > alpha.state.id_base


async def test_portals_are_added_over_http(client: httpx.AsyncClient) -> None:
    made = await client.post("/sandbox/portals", json={"name": "gamma", "contacts": 4, "sales": 1})
    assert made.status_code == 201
    gamma = made.json()
    assert (gamma["member_id"], gamma["client_endpoint"], gamma["install_url"]) == (
        named_member_id("gamma"),
        f"{ROOT}/p/gamma/rest/",
        f"{ROOT}/p/gamma/install",
    )
    assert len((await client.get("/p/gamma/sandbox/items")).json()["items"]) == 0
    info = (await client.get("/p/gamma/sandbox/info")).json()
    assert info["nps_deal_funnels"]
    again = await client.post("/sandbox/portals", json={"name": "gamma"})
    assert (again.status_code, again.json()["detail"]) == (
        409,
        "name: a portal named 'gamma' already runs",
    )
    bad = await client.post("/sandbox/portals", json={"name": "Gamma Two"})
    assert (bad.status_code, bad.json()["detail"][0]["loc"]) == (422, ["body", "name"])
    missing = await client.post(
        "/sandbox/portals", json={"name": "delta", "seed": "/no/such/portal.yaml"}
    )
    assert missing.status_code == 422
    assert missing.json()["detail"].startswith("seed: ")
    nowhere = await client.get("/p/omega/sandbox/info")
    assert (nowhere.status_code, nowhere.json()["detail"]) == (
        404,
        "no portal named 'omega' (named portals: alpha, beta, gamma)",
    )


def test_a_named_portal_is_the_same_portal_at_every_start(clock: FakeClock) -> None:
    first, second = make_sandbox(clock), make_sandbox(clock)
    one, other = first.add(spec("alpha")).portal, second.add(spec("alpha")).portal
    assert one.member_id == other.member_id == named_member_id("alpha")
    assert one.state.id_base == other.state.id_base
    assert one.state.entities == other.state.entities
    assert first.add(spec("beta")).portal.state.id_base != one.state.id_base


async def test_state_files_keep_each_portal_and_its_application(
    tmp_path: Path, clock: FakeClock
) -> None:
    state_file = tmp_path / "sandbox.json"
    registration = AppRegistration(
        client_id="local.nps.1",
        client_secret="app-secret",
        handler_url="http://nps.example.test/app/frame",
    )
    sandbox = make_sandbox(clock, registration=registration, state_file=state_file)
    sandbox.add(spec("alpha"))
    hook = Hook()
    app = create_app(sandbox, event_transport=httpx.MockTransport(hook))
    async with serving(app) as url, httpx.AsyncClient(base_url=url) as http:
        installed = (await http.post("/p/alpha/sandbox/install", json={})).json()
        assert installed["installed"] is True
        token = installed["form"]["body"]["AUTH_ID"]
        await http.post(
            "/p/alpha/rest/crm.lead.add", json={"auth": token, "fields": {"TITLE": "L"}}
        )
    assert sorted(path.name for path in tmp_path.iterdir()) == [
        "sandbox.alpha.json",
        "sandbox.json",
    ]

    reborn = make_sandbox(clock, registration=registration, state_file=state_file)
    alpha = reborn.add(spec("alpha")).portal
    assert alpha.member_id == named_member_id("alpha")
    assert alpha.state.app.installed is True
    assert alpha.state.app.application_token == installed["application_token"]
    app = create_app(reborn)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=ROOT) as http:
        profile = await http.post("/p/alpha/rest/profile", json={"auth": token})
        assert profile.json()["result"]["ID"] == "1"
        leads = (await http.get("/p/alpha/sandbox/leads")).json()["leads"]
        assert [lead["TITLE"] for lead in leads] == ["L"]


class Application:
    """A small Bitrix24 application on a real server: its install page asks the OAuth server
    who installs it and binds an event before it calls ``BX24.installFinish()``; it records
    the events it gets."""

    def __init__(self) -> None:
        self.during_install: dict[str, Any] = {}
        self.events: list[dict[str, str]] = []
        self._arrived = asyncio.Event()
        self.app = Starlette(
            routes=[
                Route("/app/install", self.install, methods=["POST"]),
                Route("/app/events", self.event, methods=["POST"]),
                Route("/webhooks/bitrix24", self.event, methods=["POST"]),
            ]
        )
        self.url = ""

    async def install(self, request: Request) -> HTMLResponse:
        form = dict(parse_qsl((await request.body()).decode()))
        token = form["AUTH_ID"]
        async with httpx.AsyncClient() as http:
            info = await http.get(f"{form['SERVER_ENDPOINT']}app.info", params={"auth": token})
            install = info.json()["result"]["install"]
            bound = await http.post(
                f"{install['client_endpoint']}event.bind",
                json={
                    "auth": token,
                    "event": "ONCRMDEALADD",
                    "handler": f"{self.url}/webhooks/bitrix24",
                },
            )
        self.during_install = {
            "query": dict(request.query_params),
            "member_id": install["member_id"],
            "installed": install["installed"],
            "bound": bound.json()["result"],
            "application_token": form["APPLICATION_TOKEN"],
        }
        return HTMLResponse("<script>BX24.init(function () { BX24.installFinish(); });</script>")

    async def event(self, request: Request) -> PlainTextResponse:
        self.events.append(dict(parse_qsl((await request.body()).decode())))
        self._arrived.set()
        return PlainTextResponse("ok")

    async def wait(self, count: int) -> list[dict[str, str]]:
        async with asyncio.timeout(10):
            while len(self.events) < count:
                self._arrived.clear()
                await self._arrived.wait()
        return self.events


async def test_the_install_flow_against_a_real_application_server() -> None:
    application = Application()
    async with serving(application.app) as app_url:
        application.url = app_url
        registration = AppRegistration(
            client_id="local.nps.1",
            client_secret="app-secret",
            install_url=f"{app_url}/app/install",
            handler_url=f"{app_url}/app/frame",
            callback_url=f"{app_url}/app/events",
        )
        sandbox = Sandbox(SandboxPortal(limits=Limits.off()), registration=registration)
        alpha = sandbox.add(PortalSpec(name="alpha", limits=Limits.off())).portal
        async with (
            serving(create_app(sandbox)) as sandbox_url,
            httpx.AsyncClient(base_url=sandbox_url) as http,
        ):
            answer = (await http.post("/p/alpha/sandbox/install", json={})).json()
            assert answer["installed"] is True
            assert answer["install_page"]["calls_install_finish"] is True
            assert application.during_install == {
                "query": {
                    "DOMAIN": "alpha.sandbox.local",
                    "PROTOCOL": "0",
                    "LANG": "en",
                    "APP_SID": answer["form"]["query"]["APP_SID"],
                },
                "member_id": alpha.member_id,
                "installed": False,
                "bound": True,
                "application_token": alpha.state.app.application_token,
            }
            [installed] = await application.wait(1)
            assert installed["event"] == "ONAPPINSTALL"
            assert installed["auth[client_endpoint]"] == f"{sandbox_url}/p/alpha/rest/"
            deal = await http.post(
                f"/p/alpha/rest/1/{alpha.secret}/crm.deal.add", json={"fields": {"TITLE": "D"}}
            )
            added = (await application.wait(2))[1]
            assert (added["event"], added["data[FIELDS][ID]"]) == (
                "ONCRMDEALADD",
                str(deal.json()["result"]),
            )
            assert added["auth[application_token]"] == installed["auth[application_token]"]
