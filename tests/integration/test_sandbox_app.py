"""The sandbox as a Bitrix24 application's world, over HTTP (ASGI in process, the portal's
clock under the test's control): the OAuth server, install and uninstall, REST calls with an
access token, event bindings online and offline, widgets, robots."""

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest

from services.sandbox.app import create_app
from services.sandbox.limits import Limits
from services.sandbox.oauth_server import AppRegistration
from services.sandbox.portal import SandboxPortal
from services.sandbox.portals import PortalSpec, Sandbox
from tests.support import T0, FakeClock

ROOT = "http://sandbox"
APP = "http://nps.example.test"
HOOK = f"{APP}/webhooks/bitrix24"
EVENTS = f"{APP}/app/events"
ROBOT = f"{APP}/webhooks/bitrix24/app-robot"
REGISTRATION = AppRegistration(
    client_id="local.nps.1",
    client_secret="app-secret",
    install_url=f"{APP}/app/install",
    handler_url=f"{APP}/app/frame",
    callback_url=EVENTS,
)
MANAGER = 31
"""A user of the portal who is not an administrator."""


class AppStub:
    """Stands in for the application's server: records what the portals POST to it."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []
        self.status = 200
        self._arrived = asyncio.Event()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        self._arrived.set()
        return httpx.Response(self.status, text="<script>BX24.installFinish();</script>")

    def posts(self, path: str) -> list[dict[str, str]]:
        return [
            dict(parse_qsl(request.content.decode()))
            for request in self.requests
            if request.url.path == path
        ]

    async def wait(self, path: str, count: int = 1) -> list[dict[str, str]]:
        async with asyncio.timeout(5):
            while len(self.posts(path)) < count:
                self._arrived.clear()
                await self._arrived.wait()
        return self.posts(path)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)


@pytest.fixture
def sandbox(clock: FakeClock) -> Sandbox:
    sandbox = Sandbox(
        SandboxPortal(clock=clock, limits=Limits.off()),
        registration=REGISTRATION,
        clock=clock,
        base_url=ROOT,
    )
    for name in ("alpha", "beta"):
        host = sandbox.add(PortalSpec(name=name, limits=Limits.off()))
        host.portal.crm.add_user(MANAGER, "Anna", "Petrova", position="Sales manager")
    return sandbox


@pytest.fixture
def stub() -> AppStub:
    return AppStub()


@pytest.fixture
async def client(sandbox: Sandbox, stub: AppStub) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(sandbox, event_transport=httpx.MockTransport(stub))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url=ROOT) as client:
        yield client


async def install(client: httpx.AsyncClient, name: str = "alpha", **body: Any) -> dict[str, Any]:
    response = await client.post(f"/p/{name}/sandbox/install", json=body)
    assert response.status_code == 200, response.text
    return dict(response.json())


async def installed_token(client: httpx.AsyncClient, name: str = "alpha") -> str:
    return str((await install(client, name))["form"]["body"]["AUTH_ID"])


async def rest(
    client: httpx.AsyncClient, method: str, token: str | None, *, name: str = "alpha", **params: Any
) -> httpx.Response:
    body = params if token is None else {**params, "auth": token}
    return await client.post(f"/p/{name}/rest/{method}", json=body)


async def result(
    client: httpx.AsyncClient, method: str, token: str, *, name: str = "alpha", **params: Any
) -> Any:
    response = await rest(client, method, token, name=name, **params)
    assert response.status_code == 200, response.text
    return response.json()["result"]


async def error(
    client: httpx.AsyncClient, method: str, token: str | None, *, name: str = "alpha", **params: Any
) -> tuple[int, str, str]:
    response = await rest(client, method, token, name=name, **params)
    body = response.json()
    return response.status_code, body["error"], body["error_description"]


async def token_request(client: httpx.AsyncClient, **params: str) -> httpx.Response:
    query = {"client_id": "local.nps.1", "client_secret": "app-secret", **params}
    return await client.get("/oauth/token/", params=query)


# --- install ----------------------------------------------------------------------------------


async def test_install_posts_the_install_page_then_installfinish_sends_onappinstall(
    client: httpx.AsyncClient, sandbox: Sandbox, stub: AppStub
) -> None:
    alpha = sandbox.named["alpha"].portal
    answer = await install(client)
    assert answer["installed"] is True
    assert answer["install_page"]["status_code"] == 200
    page = next(r for r in stub.requests if r.url.path == "/app/install")
    query = dict(parse_qsl(page.url.query.decode()))
    assert set(query) == {"DOMAIN", "PROTOCOL", "LANG", "APP_SID"}
    assert (query["DOMAIN"], query["PROTOCOL"]) == ("alpha.sandbox.local", "0")
    form = dict(parse_qsl(page.content.decode()))
    token = alpha.state.app.application_token
    assert token is not None
    assert form["member_id"] == alpha.member_id
    assert form["APPLICATION_TOKEN"] == token
    assert form["SERVER_ENDPOINT"] == f"{ROOT}/rest/"
    assert (form["PLACEMENT"], form["PLACEMENT_OPTIONS"], form["AUTH_EXPIRES"]) == (
        "DEFAULT",
        "{}",
        "3600",
    )
    assert form["AUTH_ID"]
    assert form["REFRESH_ID"]

    [event] = await stub.wait("/app/events")
    assert event["event"] == "ONAPPINSTALL"
    assert (event["data[VERSION]"], event["data[INSTALLED]"]) == ("1", "Y")
    assert event["auth[application_token]"] == token
    assert event["auth[member_id]"] == alpha.member_id
    assert event["auth[client_endpoint]"] == f"{ROOT}/p/alpha/rest/"
    assert event["auth[server_endpoint]"] == f"{ROOT}/rest/"
    assert event["auth[refresh_token]"]
    assert (await result(client, "profile", event["auth[access_token]"]))["ID"] == "1"

    info = await result(client, "app.info", form["AUTH_ID"])
    assert (info["INSTALLED"], info["STATUS"], info["CODE"]) == (True, "L", "local.nps.1")
    server = (await client.get("/rest/app.info", params={"auth": form["AUTH_ID"]})).json()
    assert server["result"]["client_id"] == "local.nps.1"
    assert server["result"]["user_id"] == 1
    assert server["result"]["install"] == {
        "installed": True,
        "version": 1,
        "status": "L",
        "scope": "crm,bizproc,placement,task,user,basic",
        "domain": "alpha.sandbox.local",
        "uri": f"{ROOT}/p/alpha",
        "client_endpoint": f"{ROOT}/p/alpha/rest/",
        "member_id": alpha.member_id,
        "member_type": "PORTAL",
    }


async def test_events_wait_for_installfinish(
    client: httpx.AsyncClient, sandbox: Sandbox, stub: AppStub
) -> None:
    alpha = sandbox.named["alpha"].portal
    answer = await install(client, finish=False)
    assert answer["installed"] is False
    token = answer["form"]["body"]["AUTH_ID"]
    assert await result(client, "event.bind", token, event="ONCRMDEALADD", handler=HOOK)
    assert (await result(client, "app.info", token))["INSTALLED"] is False
    await result(client, "crm.deal.add", token, fields={"TITLE": "before"})
    assert [d.event for d in alpha.deliveries] == []

    bad = await client.post("/p/alpha/sandbox/install-finish", data={"APP_SID": "forged"})
    assert (bad.status_code, bad.json()["detail"]) == (
        403,
        "APP_SID: not a frame this portal opened",
    )
    app_sid = answer["form"]["query"]["APP_SID"]
    finished = await client.post("/p/alpha/sandbox/install-finish", data={"APP_SID": app_sid})
    assert finished.json() == {"installed": True, "new": True}
    again = await client.post("/p/alpha/sandbox/install-finish", data={"APP_SID": app_sid})
    assert again.json() == {"installed": True, "new": False}
    deal = await result(client, "crm.deal.add", token, fields={"TITLE": "after"})
    [event] = await stub.wait("/webhooks/bitrix24")
    assert (event["event"], event["data[FIELDS][ID]"]) == ("ONCRMDEALADD", str(deal))
    assert [d.event for d in alpha.deliveries] == ["ONAPPINSTALL", "ONCRMDEALADD"]


async def test_what_cannot_be_installed(client: httpx.AsyncClient, sandbox: Sandbox) -> None:
    finish = await client.post("/p/alpha/sandbox/install-finish", data={})
    assert (finish.status_code, finish.json()["detail"]) == (
        409,
        "the application is not on this portal: install it first",
    )
    manager = await client.post("/p/alpha/sandbox/install", json={"user_id": MANAGER})
    assert (manager.status_code, manager.json()["detail"]) == (
        403,
        f"user {MANAGER} is not an administrator of this portal",
    )
    default = await client.get("/sandbox/portals")
    assert [p["name"] for p in default.json()["portals"]] == [None, "alpha", "beta"]
    sandbox.server.registration = None
    unregistered = await client.post("/p/alpha/sandbox/install", json={})
    assert unregistered.status_code == 409
    assert "no application is registered" in unregistered.json()["detail"]


async def test_an_install_page_that_fails_leaves_the_application_not_installed(
    client: httpx.AsyncClient, stub: AppStub
) -> None:
    stub.status = 500
    answer = await install(client)
    assert answer["installed"] is False
    assert answer["install_page"]["error"] == "HTTP 500"


# --- the OAuth server -------------------------------------------------------------------------


async def test_authorize_exchange_and_refresh_rotation(
    client: httpx.AsyncClient, sandbox: Sandbox, clock: FakeClock
) -> None:
    alpha = sandbox.named["alpha"].portal
    await install(client)
    redirect = await client.get(
        "/p/alpha/oauth/authorize/",
        params={"client_id": "local.nps.1", "state": "s1", "user_id": MANAGER},
    )
    assert redirect.status_code == 302
    location = urlsplit(redirect.headers["location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == f"{APP}/app/frame"
    given = dict(parse_qsl(location.query))
    assert {k: v for k, v in given.items() if k != "code"} == {
        "state": "s1",
        "domain": "alpha.sandbox.local",
        "member_id": alpha.member_id,
        "scope": "crm,bizproc,placement,task,user,basic",
        "server_domain": "sandbox",
    }
    exchanged = await token_request(client, grant_type="authorization_code", code=given["code"])
    pair = exchanged.json()
    assert exchanged.status_code == 200
    assert (pair["member_id"], pair["user_id"], pair["expires_in"]) == (alpha.member_id, 31, 3600)
    assert (pair["client_endpoint"], pair["server_endpoint"]) == (
        f"{ROOT}/p/alpha/rest/",
        f"{ROOT}/rest/",
    )
    assert (await result(client, "profile", pair["access_token"]))["ADMIN"] is False
    reused = await token_request(client, grant_type="authorization_code", code=given["code"])
    assert (reused.status_code, reused.json()["error"]) == (400, "invalid_grant")

    refreshed = await token_request(
        client, grant_type="refresh_token", refresh_token=pair["refresh_token"]
    )
    fresh = refreshed.json()
    assert fresh["refresh_token"] != pair["refresh_token"]
    assert fresh["access_token"] != pair["access_token"]
    used = await token_request(
        client, grant_type="refresh_token", refresh_token=pair["refresh_token"]
    )
    assert used.json() == {
        "error": "invalid_grant",
        "error_description": "The refresh token has already been used",
    }

    late = await client.get(
        "/p/alpha/oauth/authorize", params={"client_id": "local.nps.1", "state": "s2"}
    )
    late_code = dict(parse_qsl(urlsplit(late.headers["location"]).query))["code"]
    clock.now += 30
    expired = await token_request(client, grant_type="authorization_code", code=late_code)
    assert expired.json()["error_description"] == "The authorization code has expired"

    counters = (await client.get("/sandbox/oauth")).json()["counters"][alpha.member_id]
    assert counters == {"exchanges": 1, "refreshes": 1, "invalid_grant": 3}


@pytest.mark.parametrize(
    ("params", "status", "code"),
    [
        (
            {"client_secret": "wrong", "grant_type": "refresh_token", "refresh_token": "r"},
            401,
            "invalid_client",
        ),
        (
            {"client_id": "other", "grant_type": "refresh_token", "refresh_token": "r"},
            401,
            "invalid_client",
        ),
        ({"grant_type": "password"}, 400, "invalid_request"),
        ({"grant_type": "refresh_token"}, 400, "invalid_request"),
        ({"grant_type": "refresh_token", "refresh_token": "unknown"}, 400, "invalid_grant"),
    ],
)
async def test_what_the_token_endpoint_refuses(
    client: httpx.AsyncClient, params: dict[str, str], status: int, code: str
) -> None:
    response = await token_request(client, **params)
    assert (response.status_code, response.json()["error"]) == (status, code)
    assert response.headers["cache-control"] == "no-store"


async def test_access_tokens_expire_after_the_configured_lifetime(
    client: httpx.AsyncClient, clock: FakeClock
) -> None:
    settings = await client.put("/sandbox/oauth", json={"access_ttl_s": 2})
    assert settings.json()["settings"]["access_ttl_s"] == 2
    form = (await install(client))["form"]["body"]
    token = form["AUTH_ID"]
    assert form["AUTH_EXPIRES"] == "2"
    clock.now += 1.9
    assert (await result(client, "profile", token))["ID"] == "1"
    clock.now += 0.1
    assert await error(client, "profile", token) == (
        401,
        "expired_token",
        "The access token provided has expired.",
    )
    server = await client.get("/rest/app.info", params={"auth": token})
    assert (server.status_code, server.json()["error"]) == (401, "expired_token")
    renewed = await token_request(
        client, grant_type="refresh_token", refresh_token=form["REFRESH_ID"]
    )
    assert (await result(client, "profile", renewed.json()["access_token"]))["ID"] == "1"
    bad = await client.put("/sandbox/oauth", json={"access_ttl_s": 0})
    assert bad.status_code == 422
    assert bad.json()["detail"][0]["loc"] == ["access_ttl_s"]


async def test_payment_required_is_answered_by_the_token_endpoint(
    client: httpx.AsyncClient,
) -> None:
    form = (await install(client))["form"]["body"]
    await client.put("/p/alpha/sandbox/app", json={"payment_required": True})
    response = await token_request(
        client, grant_type="refresh_token", refresh_token=form["REFRESH_ID"]
    )
    assert (response.status_code, response.json()["error"]) == (402, "PAYMENT_REQUIRED")


async def test_authorize_refusals(client: httpx.AsyncClient) -> None:
    missing = await client.get("/p/alpha/oauth/authorize/", params={"client_id": "local.nps.1"})
    assert missing.status_code == 400
    assert "The application is not installed on this portal." in missing.text
    await install(client)
    wrong = await client.get("/p/alpha/oauth/authorize/", params={"client_id": "nope"})
    assert wrong.status_code == 400
    elsewhere = await client.get(
        "/p/alpha/oauth/authorize/",
        params={"client_id": "local.nps.1", "redirect_uri": "https://evil.example.org/cb"},
    )
    assert elsewhere.status_code == 400
    assert "redirect_uri: expected a URL on the application&#x27;s host" in elsewhere.text


# --- REST with an access token ----------------------------------------------------------------


async def test_rest_calls_authenticate_with_the_token(
    client: httpx.AsyncClient, sandbox: Sandbox
) -> None:
    token = await installed_token(client)
    assert await error(client, "profile", None) == (
        401,
        "NO_AUTH_FOUND",
        "Wrong authorization data",
    )
    assert (await error(client, "profile", "garbage"))[:2] == (401, "invalid_token")
    assert (await error(client, "profile", token, name="beta"))[:2] == (401, "invalid_token")
    bearer = await client.post(
        "/p/alpha/rest/profile.json", headers={"Authorization": f"Bearer {token}"}
    )
    assert bearer.json()["result"]["ID"] == "1"
    query = await client.get("/p/alpha/rest/user.get", params={"access_token": token, "ID": 1})
    assert [user["ID"] for user in query.json()["result"]] == ["1"]
    deal = await result(client, "crm.deal.add", token, fields={"TITLE": "Laser"})
    batch = await result(
        client, "batch", token, cmd={"one": f"crm.deal.get?id={deal}", "me": "profile"}
    )
    assert batch["result"]["one"]["TITLE"] == "Laser"
    assert batch["result"]["me"]["ID"] == "1"
    calls = sandbox.named["alpha"].portal.calls_report(method="crm.deal.add")
    assert [call["status"] for call in calls["calls"]] == [200]


async def test_scopes_limit_what_a_token_may_call(
    client: httpx.AsyncClient, sandbox: Sandbox
) -> None:
    assert sandbox.server.registration is not None
    sandbox.server.registration = sandbox.server.registration.model_copy(update={"scope": ["crm"]})
    token = await installed_token(client)
    assert (await error(client, "placement.bind", token))[:2] == (401, "insufficient_scope")
    assert (await error(client, "user.get", token))[:2] == (401, "insufficient_scope")
    nested = await result(client, "batch", token, cmd={"u": "user.get"})
    assert nested["result_error"]["u"]["error"] == "insufficient_scope"
    assert await result(client, "crm.deal.list", token) == []
    assert (await error(client, "event.bind", token, event="ONTASKADD", handler=HOOK))[1] == (
        "ERROR_EVENT_NOT_FOUND"
    )


@pytest.mark.parametrize(
    ("method", "status", "code", "description"),
    [
        (
            "event.bind",
            403,
            "WRONG_AUTH_TYPE",
            "Current authorization type is denied for this method",
        ),
        (
            "event.get",
            403,
            "WRONG_AUTH_TYPE",
            "Current authorization type is denied for this method",
        ),
        (
            "event.offline.get",
            403,
            "WRONG_AUTH_TYPE",
            "Current authorization type is denied for this method",
        ),
        (
            "placement.bind",
            403,
            "WRONG_AUTH_TYPE",
            "Current authorization type is denied for this method Application context required",
        ),
        ("app.info", 403, "ACCESS_DENIED", "Access denied! Application context required"),
        ("bizproc.robot.add", 403, "ACCESS_DENIED", "Access denied! Application context required"),
    ],
)
async def test_app_only_methods_refuse_the_inbound_webhook(
    client: httpx.AsyncClient,
    sandbox: Sandbox,
    method: str,
    status: int,
    code: str,
    description: str,
) -> None:
    for host in (sandbox.default, sandbox.named["alpha"]):
        portal = host.portal
        response = await client.post(f"{host.prefix}/rest/1/{portal.secret}/{method}", json={})
        body = response.json()
        assert (response.status_code, body["error"], body["error_description"]) == (
            status,
            code,
            description,
        )


async def test_profile_and_features_answer_the_webhook_too(
    client: httpx.AsyncClient, sandbox: Sandbox
) -> None:
    portal = sandbox.default.portal
    profile = await client.post(f"/rest/1/{portal.secret}/profile", json={})
    assert profile.json()["result"]["ADMIN"] is True
    feature = await client.post(
        f"/rest/1/{portal.secret}/feature.get", json={"CODE": "rest_offline_extended"}
    )
    assert feature.json()["result"] == {"value": "Y"}
    empty = await client.post(f"/rest/1/{portal.secret}/feature.get", json={})
    assert (empty.status_code, empty.json()["error"]) == (400, "CODE_EMPTY")


async def test_app_info_names_the_plan(client: httpx.AsyncClient) -> None:
    token = await installed_token(client)
    await client.put("/p/alpha/sandbox/app", json={"license": "ent250", "status": "P"})
    info = await result(client, "app.info", token)
    assert (info["LICENSE_TYPE"], info["LICENSE_FAMILY"], info["STATUS"]) == ("ent250", "ent", "P")
    bad = await client.put("/p/alpha/sandbox/app", json={"status": "X"})
    assert (bad.status_code, bad.json()["detail"][0]["loc"]) == (422, ["status"])


# --- event bindings ---------------------------------------------------------------------------


async def manager_token(client: httpx.AsyncClient) -> str:
    redirect = await client.get(
        "/p/alpha/oauth/authorize/", params={"client_id": "local.nps.1", "user_id": MANAGER}
    )
    code = dict(parse_qsl(urlsplit(redirect.headers["location"]).query))["code"]
    response = await token_request(client, grant_type="authorization_code", code=code)
    return str(response.json()["access_token"])


async def test_event_bind_get_and_unbind(client: httpx.AsyncClient) -> None:
    token = await installed_token(client)
    assert await result(client, "event.bind", token, EVENT="onCrmDealAdd", HANDLER=HOOK)
    assert await result(client, "event.bind", token, event="ONCRMDEALUPDATE", event_type="offline")
    assert await result(
        client, "event.bind", token, event="ONCRMDEALUPDATE", handler=HOOK, auth_type=MANAGER
    )
    assert await result(client, "event.get", token) == [
        {"event": "ONCRMDEALADD", "handler": HOOK, "auth_type": "0", "offline": 0},
        {"event": "ONCRMDEALUPDATE", "connector_id": "", "offline": 1},
        {"event": "ONCRMDEALUPDATE", "handler": HOOK, "auth_type": str(MANAGER), "offline": 0},
    ]
    assert await error(client, "event.bind", token, event="ONCRMDEALADD", handler=HOOK) == (
        400,
        "ERROR_CORE",
        "Unable to set event handler: Handler already binded",
    )
    assert await result(client, "event.unbind", token, event="ONCRMDEALUPDATE", handler=HOOK) == {
        "count": 1
    }
    assert await result(
        client, "event.unbind", token, event="ONCRMDEALUPDATE", event_type="offline"
    ) == {"count": 1}
    assert len(await result(client, "event.get", token)) == 1


@pytest.mark.parametrize(
    ("params", "status", "code", "description"),
    [
        ({"handler": HOOK}, 400, "ERROR_ARGUMENT", "Argument 'EVENT' is null or empty"),
        ({"event": "ONCRMDEALADD"}, 400, "ERROR_ARGUMENT", "Argument 'HANDLER' is null or empty"),
        (
            {"event": "ONCRMDEALADD", "handler": HOOK, "event_type": "sometimes"},
            400,
            "ERROR_ARGUMENT",
            "Value must be one of {online|offline}",
        ),
        (
            {"event": "ONCRMNOSUCH", "handler": HOOK},
            400,
            "ERROR_EVENT_NOT_FOUND",
            "Event not found",
        ),
        (
            {"event": "ONCRMDEALADD", "handler": "http://localhost/hook"},
            400,
            "ERROR_WRONG_HANDLER_URL",
            "Wrong handler URL",
        ),
        (
            {"event": "ONOFFLINEEVENT", "event_type": "offline"},
            400,
            "ERROR_ARGUMENT",
            "Offline event cannot be registered for this event.",
        ),
    ],
)
async def test_what_event_bind_refuses(
    client: httpx.AsyncClient, params: dict[str, str], status: int, code: str, description: str
) -> None:
    token = await installed_token(client)
    assert await error(client, "event.bind", token, **params) == (status, code, description)


async def test_a_non_administrator_binds_only_for_itself_and_never_offline(
    client: httpx.AsyncClient,
) -> None:
    await install(client)
    token = await manager_token(client)
    assert await error(client, "event.bind", token, event="ONCRMDEALADD", event_type="offline") == (
        403,
        "ACCESS_DENIED",
        "Access denied! Offline events binding requires administrator access rights",
    )
    assert (
        await error(client, "event.bind", token, event="ONCRMDEALADD", handler=HOOK, auth_type=1)
    )[2] == ("Access denied! Event binding with AUTH_TYPE requires administrator access rights")
    assert await result(client, "event.bind", token, event="ONCRMDEALADD", handler=HOOK)
    assert await result(client, "event.get", token) == [
        {"event": "ONCRMDEALADD", "handler": HOOK, "auth_type": str(MANAGER), "offline": 0}
    ]
    assert (await error(client, "event.offline.get", token))[:2] == (403, "ACCESS_DENIED")


async def test_online_events_carry_the_application_token_and_a_users_token(
    client: httpx.AsyncClient, sandbox: Sandbox, stub: AppStub
) -> None:
    alpha = sandbox.named["alpha"].portal
    token = await installed_token(client)
    await result(client, "event.bind", token, event="ONCRMDEALADD", handler=HOOK)
    await result(
        client, "event.bind", token, event="ONCRMDEALUPDATE", handler=HOOK, auth_type=MANAGER
    )
    deal = await result(client, "crm.deal.add", token, fields={"TITLE": "Cryo"})
    await result(client, "crm.deal.update", token, id=deal, fields={"TITLE": "Cryo B"})
    added, updated = await stub.wait("/webhooks/bitrix24", 2)
    assert (added["event"], added["data[FIELDS][ID]"], added["event_handler_id"]) == (
        "ONCRMDEALADD",
        str(deal),
        "1",
    )
    assert added["auth[application_token]"] == alpha.state.app.application_token
    assert added["auth[member_id]"] == alpha.member_id
    assert "auth[refresh_token]" not in added
    assert (await result(client, "profile", added["auth[access_token]"]))["ID"] == "1"
    assert added["auth[user_id]"] == "1"
    assert (await result(client, "profile", updated["auth[access_token]"]))["ID"] == str(MANAGER)
    webhook = await client.post(
        f"/p/alpha/rest/1/{alpha.secret}/crm.deal.update",
        json={"id": deal, "fields": {"TITLE": "x"}},
    )
    assert webhook.status_code == 200
    third = (await stub.wait("/webhooks/bitrix24", 3))[2]
    assert third["event"] == "ONCRMDEALUPDATE"


# --- offline events ---------------------------------------------------------------------------


async def test_the_offline_queue_over_rest(client: httpx.AsyncClient, sandbox: Sandbox) -> None:
    token = await installed_token(client)
    await result(client, "event.bind", token, event="ONCRMDEALUPDATE", event_type="offline")
    first = await result(client, "crm.deal.add", token, fields={"TITLE": "a"})
    second = await result(client, "crm.deal.add", token, fields={"TITLE": "b"})
    for deal in (first, first, second):
        await result(client, "crm.deal.update", token, id=deal, fields={"TITLE": "c"})
    listed = await client.post("/p/alpha/rest/event.offline.list", json={"auth": token})
    assert listed.json()["total"] == 2

    batch = await result(client, "event.offline.get", token, clear=0, limit=1)
    assert [e["EVENT_DATA"]["FIELDS"]["ID"] for e in batch["events"]] == [str(first)]
    assert batch["events"][0]["EVENT_ADDITIONAL"] == {"user_id": "1"}
    await result(client, "crm.deal.update", token, id=first, fields={"TITLE": "d"})
    rows = await result(client, "event.offline.list", token, order={"ID": "ASC"})
    assert [(r["PROCESS_ID"], r["EVENT_DATA"]["FIELDS"]["ID"]) for r in rows] == [
        (batch["process_id"], str(first)),
        ("", str(second)),
        ("", str(first)),
    ]
    again = await result(
        client, "event.offline.get", token, clear=0, process_id=batch["process_id"]
    )
    assert again["events"] == batch["events"]
    message = batch["events"][0]["MESSAGE_ID"]
    assert (
        await result(
            client,
            "event.offline.clear",
            token,
            process_id=batch["process_id"],
            message_id=[message],
        )
        is True
    )
    taken = await result(client, "event.offline.get", token)
    assert taken["process_id"] is None
    assert [e["EVENT_DATA"]["FIELDS"]["ID"] for e in taken["events"]] == [str(second), str(first)]
    assert await result(client, "event.offline.list", token) == []


async def test_offline_errors_licenses_and_source_keys(
    client: httpx.AsyncClient, sandbox: Sandbox
) -> None:
    token = await installed_token(client)
    await result(client, "event.bind", token, event="ONCRMDEALADD", event_type="offline")
    await result(client, "crm.deal.add", token, fields={"TITLE": "queued"})
    batch = await result(client, "event.offline.get", token, clear=0)
    message = batch["events"][0]["MESSAGE_ID"]
    assert await result(
        client, "event.offline.error", token, process_id=batch["process_id"], message_id=[message]
    )
    assert (await result(client, "event.offline.get", token, clear=0))["events"] == []
    errors = await result(client, "event.offline.get", token, clear=1, error=1)
    assert [e["MESSAGE_ID"] for e in errors["events"]] == [message]
    assert await error(client, "event.offline.clear", token) == (
        400,
        "ERROR_ARGUMENT",
        "Argument 'PROCESS_ID' is null or empty",
    )
    assert (await error(client, "event.offline.error", token, process_id="p", message_id="x"))[
        2
    ] == ("Value must be array of MESSAGE_ID values")
    assert (await error(client, "event.offline.get", token, filter={"!ID": 1}))[1:] == (
        "ERROR_ARGUMENT",
        "Filter operation not allowed: !",
    )

    await result(
        client,
        "event.bind",
        token,
        event="ONCRMDEALUPDATE",
        event_type="offline",
        auth_connector="nps",
    )
    deal = await result(client, "crm.deal.add", token, fields={"TITLE": "ours"})
    await result(
        client, "crm.deal.update", token, id=deal, fields={"TITLE": "x"}, auth_connector="nps"
    )
    assert await result(client, "event.offline.list", token, auth_connector="nps") == []
    await result(client, "crm.deal.update", token, id=deal, fields={"TITLE": "y"})
    assert len(await result(client, "event.offline.list", token, auth_connector="nps")) == 1

    await client.put(
        "/p/alpha/sandbox/app",
        json={"features": {"rest_offline_extended": False, "rest_auth_connector": False}},
    )
    assert await error(client, "event.offline.get", token, clear=0) == (
        403,
        "WRONG_LICENSE",
        "This feature is not enabled for the current license: extended offline events handling",
    )
    assert await error(client, "event.offline.get", token, auth_connector="nps") == (
        403,
        "WRONG_LICENSE",
        "This feature is not enabled for the current license: auth_connector",
    )
    assert await result(client, "feature.get", token, CODE="rest_offline_extended") == {
        "value": "N"
    }


async def test_onofflineevent_pings_at_most_once_per_min_timeout(
    client: httpx.AsyncClient, sandbox: Sandbox, clock: FakeClock, stub: AppStub
) -> None:
    token = await installed_token(client)
    await result(client, "event.bind", token, event="ONCRMDEALADD", event_type="offline")
    await result(
        client, "event.bind", token, event="ONOFFLINEEVENT", handler=HOOK, options={"minTimeout": 5}
    )
    for title in ("a", "b", "c"):
        await result(client, "crm.deal.add", token, fields={"TITLE": title})
    [ping] = await stub.wait("/webhooks/bitrix24")
    assert (ping["event"], ping["data[type]"], ping["data[event]"], ping["data[minTimeout]"]) == (
        "ONOFFLINEEVENT",
        "add",
        "ONCRMDEALADD",
        "5",
    )
    assert ping["auth[refresh_token]"]
    clock.now += 5
    await result(client, "crm.deal.add", token, fields={"TITLE": "d"})
    pings = await stub.wait("/webhooks/bitrix24", 2)
    assert len(pings) == 2


# --- widgets and frames -----------------------------------------------------------------------


async def test_placements_and_the_frames_they_open(client: httpx.AsyncClient) -> None:
    token = await installed_token(client)
    tab = f"{APP}/app/frame"
    assert await result(
        client, "placement.bind", token, PLACEMENT="CRM_DEAL_DETAIL_TAB", HANDLER=tab, TITLE="NPS"
    )
    assert await error(
        client, "placement.bind", token, PLACEMENT="CRM_DEAL_DETAIL_TAB", HANDLER=tab
    ) == (
        400,
        "ERROR_CORE",
        "Unable to set placement handler: Handler already binded",
    )
    assert await error(client, "placement.bind", token, PLACEMENT="DEFAULT", HANDLER=tab) == (
        400,
        "ERROR_ARGUMENT",
        "Wrong value",
    )
    assert await error(client, "placement.bind", token, PLACEMENT="NOWHERE", HANDLER=tab) == (
        400,
        "ERROR_PLACEMENT_NOT_FOUND",
        "Placement not found",
    )
    assert "CRM_CONTACT_DETAIL_TAB" in await result(client, "placement.list", token)
    [bound] = await result(client, "placement.get", token)
    assert (bound["placement"], bound["handler"], bound["title"]) == (
        "CRM_DEAL_DETAIL_TAB",
        tab,
        "NPS",
    )

    opened = await client.get(
        "/p/alpha/sandbox/frame",
        params={"placement": "CRM_DEAL_DETAIL_TAB", "ID": "7", "user_id": MANAGER},
    )
    form = opened.json()
    assert form["url"] == tab
    assert json.loads(form["body"]["PLACEMENT_OPTIONS"]) == {"ID": "7"}
    assert "APPLICATION_TOKEN" not in form["body"]
    assert (await result(client, "profile", form["body"]["AUTH_ID"]))["ID"] == str(MANAGER)
    page = await client.get("/p/alpha/sandbox/frame")
    assert page.json()["body"]["PLACEMENT"] == "DEFAULT"
    assert page.json()["body"]["APPLICATION_TOKEN"]
    assert await result(client, "placement.unbind", token, PLACEMENT="CRM_DEAL_DETAIL_TAB") == {
        "count": 1
    }
    gone = await client.get("/p/alpha/sandbox/frame", params={"placement": "CRM_DEAL_DETAIL_TAB"})
    assert gone.status_code == 404


async def test_until_installed_only_administrators_open_the_application(
    client: httpx.AsyncClient,
) -> None:
    await install(client, finish=False)
    refused = await client.get("/p/alpha/sandbox/frame", params={"user_id": MANAGER})
    assert (refused.status_code, refused.json()["detail"]) == (
        403,
        "the application is not installed yet: only administrators open it",
    )
    assert (await client.get("/p/alpha/sandbox/frame", params={"user_id": 1})).status_code == 200


async def test_the_portal_pages_frame_the_application(client: httpx.AsyncClient) -> None:
    page = await client.get("/p/alpha/install")
    assert page.status_code == 200
    csp = page.headers["content-security-policy"]
    assert "frame-src http: https:" in csp
    nonce = csp.split("'nonce-")[1].split("'")[0]
    assert f"<script nonce={nonce}>" in page.text
    assert f'action="{APP}/app/install?DOMAIN=alpha.sandbox.local&amp;PROTOCOL=0' in page.text
    assert 'name="AUTH_ID"' in page.text
    assert f"{ROOT}/p/alpha/sandbox/install-finish" in page.text
    script = await client.get("/sandbox/bx24.js")
    assert script.headers["content-type"].startswith("application/javascript")
    assert "BX24.installFinish = function" in script.text
    app_page = await client.get("/p/alpha/app", params={"user_id": 1})
    assert 'value="DEFAULT"' in app_page.text
    missing = await client.get("/p/alpha/placement/CRM_DEAL_DETAIL_TAB", params={"ID": "3"})
    assert missing.status_code == 404


# --- robots -----------------------------------------------------------------------------------


ROBOT_FIELDS: dict[str, Any] = {
    "CODE": "b24nps_send_survey",
    "HANDLER": ROBOT,
    "AUTH_USER_ID": 1,
    "USE_SUBSCRIPTION": "Y",
    "NAME": {"en": "Send NPS survey"},
    "PROPERTIES": {"survey": {"Name": "Survey", "Type": "string", "Required": "Y"}},
    "RETURN_PROPERTIES": {
        "status": {"Name": "Status", "Type": "string"},
        "request_id": {"Name": "Request", "Type": "string"},
    },
    "DOCUMENT_TYPE": ["crm", "CCrmDocumentDeal", "DEAL"],
}


async def test_robots_are_registered_listed_updated_and_deleted(client: httpx.AsyncClient) -> None:
    token = await installed_token(client)
    assert await result(client, "bizproc.robot.add", token, **ROBOT_FIELDS)
    assert await error(client, "bizproc.robot.add", token, **ROBOT_FIELDS) == (
        400,
        "ERROR_ACTIVITY_ALREADY_INSTALLED",
        "Activity or Robot already installed!",
    )
    elsewhere = {**ROBOT_FIELDS, "CODE": "other", "HANDLER": "https://elsewhere.example.org/r"}
    assert (await error(client, "bizproc.robot.add", token, **elsewhere))[
        1
    ] == "ERROR_HANDLER_URL_MATCH"
    assert await result(client, "bizproc.robot.list", token) == ["b24nps_send_survey"]
    assert await result(
        client, "bizproc.robot.update", token, CODE="b24nps_send_survey", FIELDS={"NAME": "Ask"}
    )
    assert await result(client, "bizproc.robot.delete", token, CODE="b24nps_send_survey")
    assert await error(client, "bizproc.robot.delete", token, CODE="b24nps_send_survey") == (
        400,
        "ERROR_ACTIVITY_NOT_FOUND",
        "Activity or Robot not found!",
    )
    manager = await manager_token(client)
    assert (await error(client, "bizproc.robot.list", manager))[:2] == (403, "ACCESS_DENIED")


async def test_a_robot_launch_calls_its_handler_and_waits_for_one_answer(
    client: httpx.AsyncClient, sandbox: Sandbox, clock: FakeClock, stub: AppStub
) -> None:
    alpha = sandbox.named["alpha"].portal
    token = await installed_token(client)
    await result(client, "bizproc.robot.add", token, **ROBOT_FIELDS)
    deal = await result(client, "crm.deal.add", token, fields={"TITLE": "Sale"})
    launched = await client.post(
        "/p/alpha/sandbox/robots/b24nps_send_survey/run",
        json={"deal_id": deal, "properties": {"survey": "main"}},
    )
    launch = launched.json()
    assert (launched.status_code, launch["status"]) == (200, "waiting")
    [call] = await stub.wait("/webhooks/bitrix24/app-robot")
    assert call["event_token"] == launch["event_token"]
    assert call["workflow_id"] == launch["workflow_id"]
    assert [call[f"document_id[{i}]"] for i in range(3)] == [
        "crm",
        "CCrmDocumentDeal",
        f"DEAL_{deal}",
    ]
    assert [call[f"document_type[{i}]"] for i in range(3)] == ["crm", "CCrmDocumentDeal", "DEAL"]
    assert (call["properties[survey]"], call["use_subscription"], call["code"]) == (
        "main",
        "Y",
        "b24nps_send_survey",
    )
    assert call["auth[application_token]"] == alpha.state.app.application_token
    assert call["auth[member_id]"] == alpha.member_id
    assert (await result(client, "profile", call["auth[access_token]"]))["ID"] == "1"

    repeated = await client.post(f"/p/alpha/sandbox/robot-launches/{launch['id']}/repeat")
    assert len(repeated.json()["deliveries"]) == 2
    calls = await stub.wait("/webhooks/bitrix24/app-robot", 2)
    assert calls[1]["event_token"] == launch["event_token"]

    assert await result(
        client,
        "bizproc.event.send",
        token,
        EVENT_TOKEN=launch["event_token"],
        RETURN_VALUES={"status": "sent", "request_id": "r-1", "extra": "x"},
        LOG_MESSAGE="survey sent",
    )
    assert await error(client, "bizproc.event.send", token, EVENT_TOKEN=launch["event_token"]) == (
        403,
        "ACCESS_DENIED",
        "Access denied!",
    )
    answered = (await client.get(f"/p/alpha/sandbox/robot-launches/{launch['id']}")).json()
    assert (answered["status"], answered["sends"], answered["refused_sends"]) == ("answered", 1, 1)
    assert answered["return_values"] == {"status": "sent", "request_id": "r-1"}
    assert answered["ignored_values"] == {"extra": "x"}
    assert answered["log_message"] == "survey sent"

    timed = await client.post(
        "/p/alpha/sandbox/robots/b24nps_send_survey/run",
        json={"deal_id": deal, "properties": {"survey": "main"}, "timeout_s": 60},
    )
    clock.now += 60
    assert (
        await error(client, "bizproc.event.send", token, EVENT_TOKEN=timed.json()["event_token"])
    )[:2] == (
        403,
        "ACCESS_DENIED",
    )
    launches = (await client.get("/p/alpha/sandbox/robot-launches")).json()["launches"]
    assert [x["status"] for x in launches] == ["answered", "timed_out"]
    assert (await error(client, "bizproc.event.send", token, EVENT_TOKEN="forged"))[:2] == (
        403,
        "ACCESS_DENIED",
    )


@pytest.mark.parametrize(
    ("body", "status", "detail"),
    [
        ({"deal_id": 999, "properties": {"survey": "x"}}, 404, "no CRM item 999 of type 2"),
        (
            {"properties": {"survey": "x"}},
            422,
            "expected deal_id, entity_type_id with entity_id, or document_id",
        ),
        ({"deal_id": 0, "properties": {}}, 404, None),
    ],
)
async def test_what_a_robot_run_refuses(
    client: httpx.AsyncClient, body: dict[str, Any], status: int, detail: str | None
) -> None:
    token = await installed_token(client)
    await result(client, "bizproc.robot.add", token, **ROBOT_FIELDS)
    response = await client.post("/p/alpha/sandbox/robots/b24nps_send_survey/run", json=body)
    assert response.status_code == status
    if detail is not None:
        assert response.json()["detail"] == detail


async def test_a_robot_run_needs_its_required_properties(client: httpx.AsyncClient) -> None:
    token = await installed_token(client)
    await result(client, "bizproc.robot.add", token, **ROBOT_FIELDS)
    deal = await result(client, "crm.deal.add", token, fields={"TITLE": "Sale"})
    response = await client.post(
        "/p/alpha/sandbox/robots/b24nps_send_survey/run", json={"deal_id": deal}
    )
    assert (response.status_code, response.json()["detail"]) == (
        422,
        "properties: survey is required",
    )
    unknown = await client.post("/p/alpha/sandbox/robots/nope/run", json={"deal_id": deal})
    assert (unknown.status_code, unknown.json()["detail"]) == (
        404,
        "no robot 'nope' on this portal",
    )


# --- update and uninstall ---------------------------------------------------------------------


async def test_uninstall_tells_the_handlers_and_revokes_everything(
    client: httpx.AsyncClient, sandbox: Sandbox, stub: AppStub
) -> None:
    alpha = sandbox.named["alpha"].portal
    form = (await install(client))["form"]["body"]
    token = form["AUTH_ID"]
    application_token = alpha.state.app.application_token
    await result(client, "event.bind", token, event="ONAPPUNINSTALL", handler=EVENTS)
    await result(client, "event.bind", token, event="ONCRMDEALADD", handler=HOOK)
    await result(client, "bizproc.robot.add", token, **ROBOT_FIELDS)
    deleted = await client.post("/p/alpha/sandbox/uninstall", params={"clean": 1})
    assert deleted.json() == {"uninstalled": True, "handlers_told": 1}
    installed, uninstalled = await stub.wait("/app/events", 2)
    assert installed["event"] == "ONAPPINSTALL"
    assert {k: v for k, v in uninstalled.items() if k != "ts"} == {
        "event": "ONAPPUNINSTALL",
        "event_handler_id": "1",
        "data[LANGUAGE_ID]": "en",
        "data[CLEAN]": "1",
        "auth[domain]": "alpha.sandbox.local",
        "auth[server_endpoint]": f"{ROOT}/rest/",
        "auth[status]": "L",
        "auth[client_endpoint]": f"{ROOT}/p/alpha/rest/",
        "auth[member_id]": alpha.member_id,
        "auth[application_token]": application_token,
    }
    assert (await error(client, "profile", token))[:2] == (401, "invalid_token")
    refresh = await token_request(
        client, grant_type="refresh_token", refresh_token=form["REFRESH_ID"]
    )
    assert refresh.json()["error"] == "invalid_grant"
    server = await client.get("/rest/app.info", params={"auth": token})
    assert server.status_code == 401
    state = (await client.get("/p/alpha/sandbox/app")).json()
    assert (state["added"], state["installed"], state["bindings"], state["robots"]) == (
        False,
        False,
        [],
        [],
    )
    await client.post(
        f"/p/alpha/rest/1/{alpha.secret}/crm.deal.add", json={"fields": {"TITLE": "x"}}
    )
    assert [d.event for d in alpha.deliveries] == ["ONAPPINSTALL", "ONAPPUNINSTALL"]
    twice = await client.post("/p/alpha/sandbox/uninstall")
    assert twice.status_code == 409

    again = await install(client)
    assert again["application_token"] not in (None, application_token)


async def test_an_update_brings_a_new_application_token_and_drops_the_bindings(
    client: httpx.AsyncClient, sandbox: Sandbox, stub: AppStub
) -> None:
    alpha = sandbox.named["alpha"].portal
    token = await installed_token(client)
    old = alpha.state.app.application_token
    await result(client, "event.bind", token, event="ONAPPUPDATE", handler=EVENTS)
    await result(
        client, "placement.bind", token, PLACEMENT="CRM_DEAL_DETAIL_TAB", HANDLER=f"{APP}/app/frame"
    )
    updated = await client.post("/p/alpha/sandbox/update")
    assert updated.json() == {"version": 2}
    event = (await stub.wait("/app/events", 2))[1]
    assert (event["event"], event["data[VERSION]"], event["data[PREVIOUS_VERSION]"]) == (
        "ONAPPUPDATE",
        "2",
        "1",
    )
    assert event["auth[application_token]"] == alpha.state.app.application_token != old
    assert await result(client, "event.get", token) == []
    assert await result(client, "placement.get", token) == []
    assert (await result(client, "app.info", token))["VERSION"] == 2
