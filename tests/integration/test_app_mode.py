"""Application mode (`NPS_MODE=app`, docs/app.md "Application mode") against two sandbox portals
over real HTTP that install the application, real PostgreSQL and RabbitMQ: ingest checks each
portal's events against that portal's own application_token and refuses portals not installed;
the pipeline (ingest's hydrator, scoring, router, crm_sync, as `nps run` wires them in
application mode) serves each installed portal with its own configuration and client, so each
portal's answers make its own leads, patches and rows only; a configuration edit and a new
install are picked up without a restart; an uninstall stops that portal's work (its messages
dropped, not dead-lettered) and the other goes on; an expired access token is refreshed once."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import parse_qsl, urlencode

import asyncpg
import httpx
import pytest
from aio_pika.abc import AbstractChannel
from fastapi import FastAPI
from prometheus_client import REGISTRY
from pydantic import SecretStr

from services.app.installer import Installer
from services.app.lifecycle import wanted_bindings
from services.app.web import create_app as create_app_web
from services.crm_sync.main import wire as crm_sync_wire
from services.dispatch.main import wire as dispatch_wire
from services.dispatch.settings import DispatchSettings
from services.ingest.api import create_app as create_ingest
from services.ingest.main import serve_ingest, subscribe_hydrator
from services.ops.dlq import list_dead_letters
from services.router.main import wire as router_wire
from services.sandbox.app import create_app as create_sandbox_app
from services.sandbox.limits import Limits
from services.sandbox.methods import CONTACT, LEAD
from services.sandbox.oauth_server import AppRegistration
from services.sandbox.portal import SandboxPortal
from services.sandbox.portals import PortalSpec, Sandbox, portal_factory
from services.sandbox.seed import add_answer_items
from services.scoring.main import wire as scoring_wire
from shared import portal_store
from shared.app_portals import AppPortals
from shared.bitrix24 import Bitrix24Client, MemoryRateBudget
from shared.bitrix24.tokens import AppCredentials, OAuthServer, TokenBook
from shared.events import PortalRef, SaleClosed, WebhookReceived
from shared.logging import configure_logging
from shared.messaging import make_broker, publish
from shared.outbox import Outbox
from shared.portal_config import Rate, load_portal_config
from shared.portals import PerPortal, PortalGoneError
from shared.service import Runtime, serve
from shared.settings import Settings
from shared.topology import CRM_SYNC_ACTIONS, DISPATCH_SALES, INGEST_HYDRATE, ROUTER_SCORED
from tests.support import serving
from tests.support.paths import EXAMPLE_CONFIG

NPS = 1038
CLIENT_ID = "local.nps.appmode"
SECRET = "appmode-secret"
APP = "http://nps.example.test"
INGEST = "http://ingest.example.test/webhooks/bitrix24"
SCORES = (2, 7, 9)
"""A detractor (service lead and task), a passive and a promoter (marketing lead); each a
contact patch: 6 actions per portal."""
TIMEOUT_S = 60.0


class ByHost(httpx.AsyncBaseTransport):
    """The network the portals' events travel: to the application's host or to ingest's."""

    def __init__(self) -> None:
        self.app: httpx.AsyncBaseTransport | None = None
        self.ingest: httpx.AsyncBaseTransport | None = None

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        target = self.app if request.url.host == "nps.example.test" else self.ingest
        assert target is not None
        return await target.handle_async_request(request)


@dataclass
class World:
    sandbox: Sandbox
    url: str
    book: TokenBook
    http: httpx.AsyncClient
    net: ByHost
    names: tuple[str, str]

    def use_ingest(self, app: FastAPI) -> None:
        """Where the portals' events go (and `send_events` posts them)."""
        self.net.ingest = httpx.ASGITransport(app=app)

    def portal(self, name: str) -> SandboxPortal:
        return self.sandbox.named[name].portal

    def key(self, name: str) -> str:
        return self.portal(name).member_id

    async def install(self, name: str) -> None:
        answer = await self.http.post(f"/p/{name}/sandbox/install", json={})
        assert answer.json()["installed"] is True, answer.text
        await self.delivered(name, "ONAPPINSTALL")

    async def uninstall(self, name: str) -> None:
        assert (await self.http.post(f"/p/{name}/sandbox/uninstall")).status_code == 200
        await self.delivered(name, "ONAPPUNINSTALL")

    async def delivered(self, name: str, event: str) -> None:
        portal = self.portal(name)
        async with asyncio.timeout(10):
            while not [d for d in portal.deliveries if d.event == event and d.status != "pending"]:
                await asyncio.sleep(0.02)

    def answers(self, name: str, scores: tuple[int, ...] = SCORES) -> list[int]:
        """NPS items in portal `name`, one per score, each from a contact of its own."""
        portal = self.portal(name)
        taken = {
            item["CONTACT_ID"]
            for item in portal.crm.records(1038).values()
            if item.get("CONTACT_ID")
        }
        contacts = [c for c in sorted(portal.crm.records(CONTACT)) if c not in taken]
        return add_answer_items(
            portal,
            [
                {"TITLE": "answer", "CATEGORY_ID": 12, "CONTACT_ID": contact, "UF_CRM_5_SCORE": s}
                for contact, s in zip(contacts, scores, strict=False)
            ],
        )

    async def send_events(self, name: str) -> list[httpx.Response]:
        """The item events the portal queued, POSTed to ingest as the portal sends them (those
        it has not sent itself meanwhile: it sends its queue after any REST request)."""
        bodies = [d.body for d in self.portal(name).take_outbox() if d.url == INGEST]
        return [await self.post(body) for body in bodies]

    async def post(self, body: str) -> httpx.Response:
        async with httpx.AsyncClient(transport=self.net, base_url="http://ingest") as ingest:
            return await ingest.post(
                INGEST,
                content=body,
                headers={"Content-Type": "application/x-www-form-urlencoded"},
            )


@contextlib.asynccontextmanager
async def world(
    pool: asyncpg.Pool,
    settings: Settings,
    oauth: dict[str, float] | None = None,
    *,
    offline: bool = False,
) -> AsyncIterator[tuple[World, Settings]]:
    """Two sandbox portals (seeded like the demo, the application registered) over real HTTP,
    the application's install side in process (binding ingest's events offline with
    `offline`), and the settings of application mode."""
    suffix = uuid.uuid4().hex[:8]
    names = (f"alpha-{suffix}", f"beta-{suffix}")
    default = SandboxPortal(limits=Limits.off())
    sandbox = Sandbox(
        default,
        registration=AppRegistration(
            client_id=CLIENT_ID,
            client_secret=SECRET,
            install_url=f"{APP}/app/install",
            callback_url=f"{APP}/app/events",
        ),
        factory=portal_factory(seed=str(EXAMPLE_CONFIG), clock=default.clock, seed_path=Path),
    )
    for name in names:
        sandbox.add(PortalSpec(name=name, contacts=12, sales=0, limits=Limits.off()))
    net = ByHost()
    async with serving(create_sandbox_app(sandbox, event_transport=net)) as url:
        assert sandbox.server is not None
        sandbox.server.base_url = url
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            if oauth:
                await http.put("/sandbox/oauth", json=oauth)
            configured = settings.model_copy(
                update={
                    "nps_mode": "app",
                    "bitrix24_oauth_url": url,
                    "bitrix24_client_id": CLIENT_ID,
                    "bitrix24_client_secret": SecretStr(SECRET),
                    "app_portals_reload_s": 0.5,
                }
            )
            credentials = AppCredentials.from_settings(configured)
            book = TokenBook(pool, OAuthServer(credentials))

            def client_for(member_id: str) -> Bitrix24Client:
                return Bitrix24Client(None, MemoryRateBudget(None), app=book.session(member_id))

            installer = Installer(
                book,
                CLIENT_ID,
                client_for,
                wanted_bindings(INGEST, f"{APP}/app/events", offline=offline),
            )
            net.app = httpx.ASGITransport(app=create_app_web(installer, f"{url}/sandbox/bx24.js"))
            await pool.execute("DELETE FROM outbox")  # another test's events, not these portals'
            try:
                yield World(sandbox, url, book, http, net, names), configured
            finally:
                await book.oauth.aclose()
                # The portals end with the sandbox: no other test's process may serve them, and
                # what this test queued and never relayed goes with them.
                keys = [sandbox.named[name].portal.member_id for name in names]
                await pool.execute(
                    "DELETE FROM bitrix24_app_portals WHERE member_id = ANY($1::text[])", keys
                )
                await pool.execute("DELETE FROM outbox")


async def until(check: Callable[[], Awaitable[bool]], what: str) -> None:
    deadline = time.monotonic() + TIMEOUT_S
    while not await check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.2)


def forged(body: str, **auth: str) -> str:
    """`body` with some of its `auth[...]` values replaced."""
    pairs = [
        (key, auth.get(key[5:-1], value) if key.startswith("auth[") else value)
        for key, value in parse_qsl(body, keep_blank_values=True)
    ]
    return urlencode(pairs)


async def stored(pool: asyncpg.Pool, key: str) -> int:
    return int(await pool.fetchval("SELECT count(*) FROM ingest_events WHERE portal = $1", key))


async def test_ingest_takes_each_installed_portals_own_events_only(
    pool: asyncpg.Pool, settings: Settings
) -> None:
    async with world(pool, settings) as (w, configured):
        alpha, beta = w.names
        await w.install(alpha)
        template = load_portal_config(EXAMPLE_CONFIG)
        book = TokenBook(pool, OAuthServer(AppCredentials.from_settings(configured)))
        portals = AppPortals(pool, book, template)
        await portals.reload()
        assert w.key(alpha) in portals.served()
        assert w.key(beta) not in portals.served()
        w.use_ingest(create_ingest(configured, template, pool, Outbox(), portals=portals))

        w.answers(alpha, (9,))
        [alpha_body] = [d.body for d in w.portal(alpha).take_outbox() if d.url == INGEST]
        accepted = await w.post(alpha_body)
        assert (accepted.status_code, accepted.json()["status"]) == (200, "accepted")
        assert await stored(pool, w.key(alpha)) == 1

        # A portal the application is not installed on, and a wrong token: nothing stored.
        refused = await w.post(forged(alpha_body, member_id=w.key(beta)))
        assert refused.status_code == 403
        assert refused.json() == {
            "error": "the application is not installed on this portal",
            "field": "auth[member_id]",
            "expected": "a portal the application is installed on",
        }
        wrong = await w.post(forged(alpha_body, application_token="not-alphas"))
        assert (wrong.status_code, wrong.json()["error"]) == (401, "application token not accepted")

        # A robot call: the same check, its token and portal as query parameters.
        alpha_token = w.portal(alpha).state.app.application_token
        assert alpha_token is not None

        def robot(member_id: str, token: str) -> str:
            query = {
                "application_token": token,
                "member_id": member_id,
                "id": "77",
                "category_id": "12",
                "UF_CRM_5_SCORE": "3",
                "updated_time": "2024-07-22T18:05:00+03:00",
            }
            return f"{INGEST}/robot?{urlencode(query)}"

        async with httpx.AsyncClient(transport=w.net) as http:
            took = await http.post(robot(w.key(alpha), alpha_token))
            assert (took.status_code, took.json()["status"]) == (200, "accepted")
            refused = await http.post(robot(w.key(beta), alpha_token))
            assert (refused.status_code, refused.json()["field"]) == (403, "member_id")
            wrong = await http.post(robot(w.key(alpha), "not-alphas"))
            assert (wrong.status_code, wrong.json()["field"]) == (401, "application_token")
        assert await stored(pool, w.key(alpha)) == 2

        # beta installs: served from its first event on, with its own token only.
        await w.install(beta)
        w.answers(beta, (3,))
        [beta_body] = [d.body for d in w.portal(beta).take_outbox() if d.url == INGEST]
        other = await w.post(forged(beta_body, application_token=alpha_token))
        assert other.status_code == 401
        assert (await w.post(beta_body)).json()["status"] == "accepted"
        assert w.key(beta) in portals.served()
        assert (await stored(pool, w.key(alpha)), await stored(pool, w.key(beta))) == (2, 1)

        # alpha's configuration edited: served from the next reload on, what is built per
        # portal rebuilt from it.
        built = PerPortal(portals.configs, lambda key: portals.configs.get(key).portal.timezone)
        assert built.get(w.key(alpha)) == template.portal.timezone
        clients = {name: portals.clients.get(w.key(name)) for name in (alpha, beta)}
        text = EXAMPLE_CONFIG.read_text().replace(
            f"timezone: {template.portal.timezone}", "timezone: Asia/Almaty"
        )
        async with pool.acquire() as conn:
            await portal_store.save(conn, w.key(alpha), text, by="test", expected_version=None)
        await portals.reload()
        assert built.get(w.key(alpha)) == "Asia/Almaty"
        assert built.get(w.key(beta)) == template.portal.timezone
        assert portals.clients.get(w.key(alpha)) is clients[alpha]  # the same budget

        # alpha's plan changed: a new client with the plan's budget; beta's untouched.
        assert template.portal.plan == "standard"
        async with pool.acquire() as conn:
            await portal_store.save(
                conn,
                w.key(alpha),
                text.replace("plan: standard", "plan: enterprise"),
                by="test",
                expected_version=1,
            )
        await portals.reload()
        client = portals.clients.get(w.key(alpha))
        assert client is not clients[alpha]
        assert client.budget.rate == Rate(per_second=5, burst=250)
        assert portals.clients.get(w.key(beta)) is clients[beta]

        # beta uninstalls: refused at the door, taken out of the portals served; alpha goes on.
        await w.uninstall(beta)
        gone = await w.post(beta_body)
        assert (gone.status_code, gone.json()["error"]) == (
            403,
            "the application is uninstalled on this portal",
        )
        await portals.reload()
        with pytest.raises(PortalGoneError, match="uninstalled"):
            portals.configs.get(w.key(beta))
        w.answers(alpha, (10,))
        assert [r.json()["status"] for r in await w.send_events(alpha)] == ["accepted"]
        assert (await stored(pool, w.key(alpha)), await stored(pool, w.key(beta))) == (3, 1)
        await portals.aclose()


async def test_after_an_update_ingest_takes_the_new_token_only(
    pool: asyncpg.Pool, settings: Settings
) -> None:
    """The portal's update (a new application_token, every binding dropped, ONAPPUPDATE to the
    application): the bindings are back and ingest takes the portal's events with the new
    token, refusing the old one, without a restart."""
    async with world(pool, settings) as (w, configured):
        alpha, _beta = w.names
        await w.install(alpha)
        template = load_portal_config(EXAMPLE_CONFIG)
        book = TokenBook(pool, OAuthServer(AppCredentials.from_settings(configured)))
        portals = AppPortals(pool, book, template)
        await portals.reload()
        w.use_ingest(create_ingest(configured, template, pool, Outbox(), portals=portals))
        w.answers(alpha, (9,))
        [before] = [d.body for d in w.portal(alpha).take_outbox() if d.url == INGEST]
        assert (await w.post(before)).json()["status"] == "accepted"
        bound = {(b.event, b.handler) for b in w.portal(alpha).state.app.bindings}
        old_token = w.portal(alpha).state.app.application_token

        answer = await w.http.post(f"/p/{alpha}/sandbox/update")
        assert answer.status_code == 200, answer.text
        await w.delivered(alpha, "ONAPPUPDATE")
        update = [d for d in w.portal(alpha).deliveries if d.event == "ONAPPUPDATE"]
        assert [(d.status, d.http_status) for d in update] == [("delivered", 200)]
        assert {(b.event, b.handler) for b in w.portal(alpha).state.app.bindings} == bound
        new_token = w.portal(alpha).state.app.application_token
        assert new_token not in (None, old_token)

        w.answers(alpha, (4,))
        [after] = [d.body for d in w.portal(alpha).take_outbox() if d.url == INGEST]
        assert (await w.post(after)).json()["status"] == "accepted"
        stale = await w.post(forged(after, application_token=str(old_token)))
        assert (stale.status_code, stale.json()["error"]) == (401, "application token not accepted")
        assert (await w.post(before)).status_code == 401  # the old token's event, sent again
        assert await stored(pool, w.key(alpha)) == 2
        await portals.aclose()


async def test_a_gone_portals_backlog_is_dropped_at_once_and_holds_up_no_other(
    pool: asyncpg.Pool, settings: Settings
) -> None:
    """`ensure` for a portal known gone reads nothing (each of its messages would otherwise
    wait a second for a read of its own, the lock shared with every portal); messages of a
    portal never seen wait together for one read."""
    async with world(pool, settings) as (w, configured):
        alpha, beta = w.names
        await w.install(alpha)
        await w.install(beta)
        book = TokenBook(pool, OAuthServer(AppCredentials.from_settings(configured)))
        portals = AppPortals(pool, book, load_portal_config(EXAMPLE_CONFIG), reload_s=60)
        await w.uninstall(beta)
        await portals.reload()
        gone, never = w.key(beta), "never-installed-" + uuid.uuid4().hex
        started = time.monotonic()
        backlog = [portals.ensure(gone) for _ in range(20)]
        unknown = [portals.ensure(never) for _ in range(5)]
        await asyncio.wait_for(
            asyncio.gather(*backlog, *unknown, portals.ensure(w.key(alpha))), timeout=3
        )
        assert time.monotonic() - started < 2
        with pytest.raises(PortalGoneError, match="uninstalled"):
            portals.configs.get(gone)
        assert w.key(alpha) in portals.served()
        await portals.aclose()


async def written(pool: asyncpg.Pool, key: str) -> tuple[int, int]:
    """The router's actions for portal `key`, and how many crm_sync has done."""
    routed = await pool.fetchval("SELECT count(*) FROM router_actions WHERE portal = $1", key)
    done = await pool.fetchval(
        "SELECT count(*) FROM crm_actions WHERE portal = $1 AND state = 'done'", key
    )
    return int(routed), int(done)


async def test_each_installed_portal_gets_its_own_work_until_it_uninstalls(
    pool: asyncpg.Pool, settings: Settings, channel: AbstractChannel
) -> None:
    configure_logging("info", "json")
    async with world(pool, settings) as (w, configured):
        alpha, beta = w.names
        a, b = w.key(alpha), w.key(beta)
        await w.install(alpha)
        served: list[AppPortals] = []

        async def wire(runtime: Runtime) -> None:
            assert runtime.portals is not None
            served.append(runtime.portals)
            subscribe_hydrator(runtime)
            await scoring_wire(runtime)
            await router_wire(runtime)
            await crm_sync_wire(runtime)
            ingest = create_ingest(
                configured,
                runtime.portals.template,
                runtime.pool,
                runtime.outbox,
                portals=runtime.portals,
            )
            w.use_ingest(ingest)

        stop = asyncio.Event()
        service = asyncio.create_task(serve("appmode", configured, wire, stop=stop))
        try:
            await until(lambda: asyncio.sleep(0, bool(served)), "the pipeline started")
            assert a in served[0].served()
            # beta installs while the pipeline runs: served without a restart.
            await w.install(beta)
            items = {alpha: w.answers(alpha), beta: w.answers(beta)}
            for name in w.names:
                await w.send_events(name)

            async def received() -> bool:
                return await stored(pool, a) == await stored(pool, b) == 3

            await until(received, "both portals' events accepted by ingest")

            async def both_written() -> bool:
                return await written(pool, a) == (6, 6) and await written(pool, b) == (6, 6)

            await until(both_written, "both portals' actions written")
            # Each portal called within a rate budget of its own, keyed by its member_id.
            budgets = await pool.fetchval(
                "SELECT count(*) FROM rate_buckets WHERE portal = ANY($1::text[])", [a, b]
            )
            assert budgets == 2

            # beta uninstalls; alpha's access token expires on the portal's side.
            await w.uninstall(beta)
            token = await pool.fetchval(
                "SELECT access_token FROM bitrix24_app_portals WHERE member_id = $1", a
            )
            w.portal(alpha).state.app.tokens.access[token].expires = 0.0
            before = refreshes(w.sandbox, a)
            dropped_before = dropped()
            # An event of beta's accepted just before its uninstall, still in the queue.
            in_flight = WebhookReceived(
                correlation_id="appmode-in-flight",
                portal=PortalRef(member_id=b, domain=w.portal(beta).domain),
                source="event",
                event="ONCRMDYNAMICITEMADD",
                entity_type_id=NPS,
                item_id=items[beta][0],
                ts=2,
            )
            broker = make_broker(configured.rabbitmq_url.get_secret_value())
            await broker.connect()
            try:
                await publish(broker, in_flight)
            finally:
                await broker.stop()
            more = w.answers(alpha, (1, 10))
            await w.send_events(alpha)

            async def alpha_again() -> bool:
                # the detractor: service lead, task, patch; the promoter: marketing, patch
                return await written(pool, a) == (11, 11) and dropped() > dropped_before

            await until(alpha_again, "alpha's new answers written, beta's event dropped")
            assert refreshes(w.sandbox, a) == before + 1
            assert await written(pool, b) == (6, 6)
            letters = await list_dead_letters(
                channel, [INGEST_HYDRATE.name, ROUTER_SCORED.name, CRM_SYNC_ACTIONS.name]
            )
            assert not [letter for letter in letters if b in letter.body.decode()]
            scored = await pool.fetchval(
                "SELECT count(*) FROM scoring_answers WHERE portal = $1 AND item_id = ANY($2)",
                a,
                more,
            )
            assert scored == 2
        finally:
            stop.set()
            await service

    # Each portal's leads, tasks and patches are its own.
    for name, key in ((alpha, a), (beta, b)):
        portal = w.portal(name)
        other = w.portal(beta if name == alpha else alpha)
        actions = await pool.fetch(
            "SELECT action_id, action, contact_id FROM crm_actions WHERE portal = $1", key
        )
        mine = {r["action_id"] for r in actions}
        leads = {lead["ORIGIN_ID"] for lead in portal.crm.records(LEAD).values()}
        assert {r["action_id"] for r in actions if r["action"] in ("service", "marketing")} <= (
            leads & mine
        )
        assert not mine & {lead["ORIGIN_ID"] for lead in other.crm.records(LEAD).values()}
        patched = {r["contact_id"] for r in actions if r["action"] == "contact"}
        assert patched <= set(portal.crm.records(CONTACT))
        writes = await pool.fetch(
            "SELECT DISTINCT portal FROM crm_contact_writes WHERE contact_id = ANY($1::bigint[])"
            " AND portal = ANY($2::text[])",
            list(patched),
            [a, b],
        )
        assert {r["portal"] for r in writes} == {key}


def dropped() -> float:
    labels = {"queue": INGEST_HYDRATE.name}
    return REGISTRY.get_sample_value("nps_messages_dropped_total", labels) or 0.0


def refreshes(sandbox: Sandbox, member_id: str) -> int:
    """How many times the OAuth server refreshed the portal's tokens."""
    assert sandbox.server is not None
    return sandbox.server.counters.get(member_id, Counter())["refreshes"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def test_ingest_sweeps_each_installed_portal(pool: asyncpg.Pool, settings: Settings) -> None:
    """`nps run ingest` in application mode: the catch-up sweep lists each installed portal's
    items with that portal's token and submits the ones whose event never came, under its key."""
    async with world(pool, settings) as (w, configured):
        alpha, beta = w.names
        for name in w.names:
            await w.install(name)
        swept = configured.model_copy(
            update={
                "ingest_port": free_port(),
                "ingest_health_port": free_port(),
                "sweep_interval_s": 0.3,
            }
        )
        stop = asyncio.Event()
        service = asyncio.create_task(serve_ingest(swept, stop))
        try:

            async def watermarks() -> bool:
                found = await pool.fetchval(
                    "SELECT count(DISTINCT portal) FROM ingest_sweep_watermarks"
                    " WHERE portal = ANY($1::text[])",
                    [w.key(alpha), w.key(beta)],
                )
                return int(found) == 2

            await until(watermarks, "each portal's first sweep")
            for name in w.names:
                w.answers(name, (8,))
                w.portal(name).take_outbox()  # its event is lost: only the sweep finds it

            async def found() -> bool:
                rows = await pool.fetch(
                    "SELECT portal FROM ingest_events WHERE source = 'sweep'"
                    " AND portal = ANY($1::text[])",
                    [w.key(alpha), w.key(beta)],
                )
                return sorted(r["portal"] for r in rows) == sorted([w.key(alpha), w.key(beta)])

            await until(found, "each portal's lost answer swept")
        finally:
            stop.set()
            await service


async def test_ingest_pulls_each_installed_portals_offline_queue(
    pool: asyncpg.Pool, settings: Settings
) -> None:
    """`nps run ingest` in application mode with `INGEST_OFFLINE`: an installed portal whose
    events the application bound offline has its offline queue pulled into ingest."""
    async with world(pool, settings, offline=True) as (w, configured):
        alpha, _beta = w.names
        await w.install(alpha)
        pulling = configured.model_copy(
            update={
                "ingest_port": free_port(),
                "ingest_health_port": free_port(),
                "ingest_offline": True,
                "ingest_offline_poll_s": 0.2,
                "ingest_offline_poll_max_s": 0.5,
            }
        )
        [item] = w.answers(alpha, (8,))
        assert not [d for d in w.portal(alpha).take_outbox() if d.url == INGEST]
        stop = asyncio.Event()
        service = asyncio.create_task(serve_ingest(pulling, stop))
        try:

            async def pulled() -> bool:
                rows = await pool.fetch(
                    "SELECT item_id, payload FROM ingest_events WHERE portal = $1", w.key(alpha)
                )
                return [r["item_id"] for r in rows if '"offline"' in r["payload"]] == [item]

            await until(pulled, "alpha's offline queue pulled")
        finally:
            stop.set()
            await service
            await pool.execute("DELETE FROM ingest_events WHERE portal = $1", w.key(alpha))


def won_sale(key: str, deal_id: int) -> SaleClosed:
    """A won deal of the default funnel on portal `key`: the example YAML's dispatch asks its
    customer "After the sale"."""
    return SaleClosed(
        correlation_id=f"appmode-deal:{deal_id}",
        portal=PortalRef(member_id=key),
        source="event",
        deal_id=deal_id,
        category_id=0,
        stage_id="WON",
        contact_id=deal_id,
        responsible_id=1,
        closed_at=datetime.now(UTC),
    )


async def test_dispatch_serves_a_portal_installed_while_it_runs_and_drops_an_uninstalled_ones(
    pool: asyncpg.Pool, settings: Settings, channel: AbstractChannel
) -> None:
    """`nps run dispatch` in application mode: a sale of a portal installed after dispatch
    started is asked (the portal read in on its first message, no restart); once the portal
    uninstalls, its next sale is dropped (counted, never dead-lettered) and asks nothing."""
    async with world(pool, settings) as (w, configured):
        alpha, beta = w.names
        a, b = w.key(alpha), w.key(beta)
        await w.install(alpha)
        served: list[AppPortals] = []

        async def wire(runtime: Runtime) -> None:
            await dispatch_wire(runtime, DispatchSettings(_env_file=None, tick_s=3600))
            assert runtime.portals is not None
            served.append(runtime.portals)

        async def requests(key: str) -> int:
            return int(
                await pool.fetchval("SELECT count(*) FROM dispatch_requests WHERE portal = $1", key)
            )

        broker = make_broker(configured.rabbitmq_url.get_secret_value())
        await broker.connect()
        stop = asyncio.Event()
        service = asyncio.create_task(serve("appmode-dispatch", configured, wire, stop=stop))
        try:
            await until(lambda: asyncio.sleep(0, bool(served)), "dispatch started")
            await w.install(beta)  # after dispatch read the installed portals
            await publish(broker, won_sale(b, 7001))

            async def beta_asked() -> bool:
                return await requests(b) == 1

            await until(beta_asked, "beta's sale asked")

            await w.uninstall(beta)
            # Read again every APP_PORTALS_RELOAD_S (0.5 s here): from then on beta is gone.
            await until(lambda: asyncio.sleep(0, b not in served[0].served()), "beta stopped")
            before = sales_dropped()
            await publish(broker, won_sale(b, 7002))
            await publish(broker, won_sale(a, 7003))

            async def handled() -> bool:
                return await requests(a) == 1 and sales_dropped() > before

            await until(handled, "alpha's sale asked, beta's dropped")
            assert await requests(b) == 1
            letters = await list_dead_letters(channel, [DISPATCH_SALES.name])
            assert not [letter for letter in letters if b in letter.body.decode()]
        finally:
            await broker.stop()
            stop.set()
            await service
            await pool.execute(
                "DELETE FROM dispatch_requests WHERE portal = ANY($1::text[])", [a, b]
            )


def sales_dropped() -> float:
    labels = {"queue": DISPATCH_SALES.name}
    return REGISTRY.get_sample_value("nps_messages_dropped_total", labels) or 0.0
