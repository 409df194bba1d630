"""The "Send NPS survey" robot end to end against a sandbox portal (ASGI in process, both ways)
and the real PostgreSQL and SMTP: the install registers the robots (once, however often it
runs); the portal's automation rule reaches the robot on a deal and calls the application, which
verifies the call by the portal's `application_token` and queues `robot.called`; dispatch asks
(the NPS deal and the e-mail through crm_sync's writer and the survey page's intake, as the
topology routes them) and, once the e-mail is out, crm_sync answers the waiting business
process with `bizproc.event.send`. A repeated call (the same `event_token`) and a redelivery
ask nothing twice and answer nothing twice; a second launch on the same deal is answered "not
sent" with the reason; a forged call is refused. The test plays the broker (`Pump`), and once
the services run on the real RabbitMQ."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import yaml
from aio_pika.abc import AbstractChannel

from services.app.installer import Installer
from services.app.lifecycle import wanted_bindings
from services.app.robot import DEAL_ROBOT, NPS_ROBOT, PortalSmartProcess, RobotDoor, Robots
from services.app.web import create_app
from services.crm_sync.coalescer import CommandCoalescer
from services.crm_sync.dispatch import DispatchWriter
from services.crm_sync.main import wire as crm_sync_wire
from services.dispatch.dispatcher import Dispatcher
from services.dispatch.mailer import Mailer
from services.dispatch.main import wire as dispatch_wire
from services.dispatch.settings import DispatchSettings
from services.harness.stack import free_port
from services.ops.dlq import list_dead_letters
from services.sandbox.app import create_app as create_sandbox_app
from services.sandbox.crm import DEAL
from services.sandbox.limits import Limits
from services.sandbox.methods import CONTACT
from services.sandbox.portal import SandboxPortal
from services.sandbox.portals import PortalSpec, Sandbox, portal_factory
from services.sandbox.schema import EntityType
from services.survey.intake import IntakeSetup, RequestIntake
from services.survey.page_config import load_page_config
from services.survey.tokens import LinkSigner
from shared import portal_store
from shared.bitrix24 import Bitrix24Client
from shared.events import CrmWritten, DispatchCommand, RobotCalled, SurveyReady, SurveyRequested
from shared.outbox import Outbox
from shared.portal_config import PortalConfig, parse_portal_config
from shared.portals import PortalClients, PortalConfigs
from shared.service import Runtime, serve
from shared.settings import Settings
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
)
from tests.support.paths import EXAMPLE_CONFIG
from tests.support.pump import Pump
from tests.support.smtp import Inbox
from tests.support.survey import DAY, EXAMPLE_PAGE, KEYS

ROBOT_URL = f"{APP}/app/robot"
CLIENT_ID = "local.nps.robot"
SECRET = "app-secret-robot"
NOW = datetime(2026, 12, 7, 10, 0, tzinfo=UTC)
SURVEY = "After the sale"
NPS_FUNNEL = 20


def robot_config(member_id: str) -> PortalConfig:
    data = yaml.safe_load(EXAMPLE_CONFIG.read_text(encoding="utf-8"))
    data["portal"]["timezone"] = "UTC"
    data["portal"]["member_id"] = member_id
    data["dispatch"] = {
        "channel": "email",
        "language": "en",
        "email": {"sender": "Demo <nps@example.com>"},
        "window": {"start": "09:00", "end": "20:00"},
    }
    return parse_portal_config(data)


@dataclass
class World:
    sandbox: Sandbox
    name: str
    installer: Installer
    portals: httpx.AsyncClient
    app: httpx.AsyncClient
    dispatcher: Dispatcher
    writer: DispatchWriter
    pump: Pump
    client: Bitrix24Client
    """The portal's client in application mode (its tokens from the install)."""
    config: PortalConfig

    @property
    def portal(self) -> SandboxPortal:
        return self.sandbox.named[self.name].portal

    async def delivered(self, event: str, count: int) -> None:
        """Wait until `count` deliveries of `event` reached the application, all taken."""
        sent = await settled(self.portal, event, count)
        assert [(d.status, d.http_status) for d in sent] == [("delivered", 200)] * count

    async def state(self) -> dict[str, Any]:
        body: dict[str, Any] = (await self.portals.get(f"/p/{self.name}/sandbox/app")).json()
        return body

    async def launch(self, launch_id: int) -> dict[str, Any]:
        path = f"/p/{self.name}/sandbox/robot-launches/{launch_id}"
        body: dict[str, Any] = (await self.portals.get(path)).json()
        return body

    async def run(self, deal_id: int, **properties: str) -> dict[str, Any]:
        answer = await self.portals.post(
            f"/p/{self.name}/sandbox/robots/{DEAL_ROBOT}/run",
            json={"deal_id": deal_id, "properties": properties},
        )
        assert answer.status_code == 200, answer.text
        body: dict[str, Any] = answer.json()
        return body

    async def settle(self) -> None:
        for _ in range(20):
            handled = await self.pump.drain()
            looked = await self.dispatcher.tick()
            if not handled and not looked and not await self.pump.drain():
                return
        raise AssertionError("dispatch kept finding work")


@pytest.fixture
async def world(pool: asyncpg.Pool, inbox: tuple[Inbox, int]) -> AsyncIterator[World]:
    clock = FakeClock(T0)
    sandbox = sandbox_for(
        app_registration(CLIENT_ID, SECRET),
        clock,
        factory=portal_factory(seed=str(EXAMPLE_CONFIG), clock=clock, seed_path=Path),
    )
    name = f"robot-{uuid.uuid4().hex[:8]}"
    sandbox.add(PortalSpec(name=name, contacts=10, sales=3, limits=Limits.off()))
    member_id = sandbox.named[name].portal.member_id
    to_sandbox = Forward()
    sandbox_net = httpx.ASGITransport(app=to_sandbox)
    book = token_book(pool, sandbox_net, clock, CLIENT_ID, SECRET)
    config = robot_config(member_id)

    def client_for(key: str) -> Bitrix24Client:
        return book_client(book, key, sandbox_net)

    installer = Installer(
        book,
        CLIENT_ID,
        client_for,
        wanted_bindings(INGEST, f"{APP}/app/events"),
        clock=clock,
        robots=Robots(ROBOT_URL, PortalSmartProcess(pool, config)),
    )
    door = RobotDoor(book, pool, Outbox())
    app_net = httpx.ASGITransport(app=create_app(installer, f"{ROOT}/sandbox/bx24.js", door))
    to_sandbox.target = create_sandbox_app(sandbox, event_transport=ToApp(app_net))

    client = client_for(member_id)
    settings = DispatchSettings(smtp_port=inbox[1], _env_file=None)
    dispatcher = Dispatcher(
        pool,
        Outbox(),
        PortalConfigs({member_id: config}),
        portal=PortalClients({member_id: client}),
        mailer=Mailer(settings),
        settings=settings,
        clock=lambda: NOW,
    )
    writer = DispatchWriter(pool, Outbox(), CommandCoalescer(client, window_s=0.01))
    intake = RequestIntake(
        pool,
        Outbox(),
        IntakeSetup(
            portal=config,
            page=load_page_config(EXAMPLE_PAGE),
            signer=LinkSigner(KEYS, 30 * DAY, clock=NOW.timestamp),
            base_url="http://survey.test",
        ),
    )

    async def command(_key: str, body: dict[str, Any]) -> None:
        await writer.carry_out(DispatchCommand.model_validate(body))

    async def robot(_key: str, body: dict[str, Any]) -> None:
        await dispatcher.on_robot(RobotCalled.model_validate(body))

    async def written(_key: str, body: dict[str, Any]) -> None:
        await dispatcher.on_written(CrmWritten.model_validate(body))

    async def requested(_key: str, body: dict[str, Any]) -> None:
        await intake.handle(SurveyRequested.model_validate(body))

    async def ready(_key: str, body: dict[str, Any]) -> None:
        await dispatcher.on_ready(SurveyReady.model_validate(body))

    pump = Pump(
        pool,
        {
            "robot.called": robot,
            "dispatch.nps_deal": command,
            "dispatch.robot_answer": command,
            "crm.written.nps_deal": written,
            "survey.requested": requested,
            "survey.ready": ready,
        },
    )
    await pump.start()
    async with (
        httpx.AsyncClient(transport=sandbox_net, base_url=ROOT) as portals,
        httpx.AsyncClient(transport=app_net, base_url=APP) as app,
    ):
        world = World(
            sandbox, name, installer, portals, app, dispatcher, writer, pump, client, config
        )
        answer = await portals.post(f"/p/{name}/sandbox/install", json={})
        assert answer.status_code == 200, answer.text
        await world.delivered("ONAPPINSTALL", 1)
        yield world
    await client.aclose()
    await book.oauth.aclose()


def customer_deal(portal: SandboxPortal) -> int:
    """A sales deal whose contact has an e-mail address."""
    contacts = portal.crm.records(CONTACT)
    return min(
        deal_id
        for deal_id, deal in portal.crm.records(DEAL).items()
        if deal.get("CONTACT_ID")
        and contacts[int(deal["CONTACT_ID"])].get("EMAIL")
        and int(deal.get("CATEGORY_ID") or 0) == 0
    )


async def test_the_install_registers_both_robots_once(world: World) -> None:
    robots = {robot["CODE"]: robot for robot in (await world.state())["robots"]}
    assert set(robots) == {DEAL_ROBOT, NPS_ROBOT}
    for robot in robots.values():
        assert (robot["HANDLER"], robot["USE_SUBSCRIPTION"]) == (ROBOT_URL, "Y")
        assert set(robot["PROPERTIES"]) == {"survey", "channel", "delay_minutes"}
        assert set(robot["RETURN_PROPERTIES"]) == {"sent", "reason"}
    assert robots[DEAL_ROBOT]["DOCUMENT_TYPE"] == ["crm", "CCrmDocumentDeal", "DEAL"]
    assert robots[NPS_ROBOT]["DOCUMENT_TYPE"][2] == "DYNAMIC_1038"

    await world.installer.bind(world.portal.member_id)
    assert len((await world.state())["robots"]) == 2


async def test_an_update_registers_the_robots_again(world: World) -> None:
    """The portal's update removes the application's robots; its ONAPPUPDATE brings them back."""
    answer = await world.portals.post(f"/p/{world.name}/sandbox/update")
    assert answer.status_code == 200, answer.text
    await world.delivered("ONAPPUPDATE", 1)
    assert {robot["CODE"] for robot in (await world.state())["robots"]} == {DEAL_ROBOT, NPS_ROBOT}


async def test_each_portals_robot_is_on_its_own_configurations_smart_process(
    world: World, pool: asyncpg.Pool
) -> None:
    """The NPS robot's document type is the smart process of the portal's stored configuration
    (its settings page), not the deployment's; a portal without one (or with one that no longer
    validates) takes the deployment's."""
    member_id = world.portal.member_id
    world.portal.crm.register_type(
        EntityType(
            entity_type_id=1040,
            title="NPS 2",
            code="DYNAMIC_1040",
            uf_entity_id="CRM_9",
            dynamic=True,
        )
    )
    text = EXAMPLE_CONFIG.read_text(encoding="utf-8").replace(
        "entity_type_id: 1038", "entity_type_id: 1040"
    )
    async with pool.acquire() as conn:
        await portal_store.save(conn, member_id, text, by="test", expected_version=None)
    try:
        async with world.installer.client_for(member_id) as api:
            await api.call("bizproc.robot.delete", {"CODE": NPS_ROBOT})
        await world.installer.bind(member_id)
        robots = {robot["CODE"]: robot for robot in (await world.state())["robots"]}
        assert robots[NPS_ROBOT]["DOCUMENT_TYPE"][2] == "DYNAMIC_1040"
        smart_process = PortalSmartProcess(pool, world.config)
        assert await smart_process(member_id) == 1040
        assert await smart_process(f"other-{member_id}") == 1038
        await pool.execute(
            "UPDATE portal_configs SET yaml = 'survey: [' WHERE portal = $1", member_id
        )
        assert await smart_process(member_id) == 1038
    finally:
        await pool.execute("DELETE FROM portal_configs WHERE portal = $1", member_id)


async def test_robots_the_portal_refuses_to_list_leave_the_install_alone(world: World) -> None:
    """Without the `bizproc` scope (or a plan without business processes) even
    `bizproc.robot.list` is refused: logged, no robot registered, the bindings still made."""
    assert world.sandbox.server is not None
    registration = world.sandbox.server.registration
    assert registration is not None
    scopes = [scope for scope in registration.scope if scope != "bizproc"]
    narrowed = await world.portals.put(
        "/sandbox/oauth/app", json={**registration.model_dump(), "scope": scopes}
    )
    assert narrowed.status_code == 200, narrowed.text
    assert world.installer.robots is not None
    assert await world.installer.robots.register(world.client, world.portal.member_id) == []
    await world.installer.bind(world.portal.member_id)


async def test_a_robot_call_sends_one_survey_and_answers_the_business_process_once(
    world: World, pool: asyncpg.Pool, inbox: tuple[Inbox, int]
) -> None:
    mailbox, _ = inbox
    deal_id = customer_deal(world.portal)
    launch = await world.run(deal_id, survey=SURVEY, channel="email")
    await world.delivered(f"ROBOT:{DEAL_ROBOT}", 1)
    # The portal calls again with the same event_token (a repeated launch's call).
    repeat = await world.portals.post(
        f"/p/{world.name}/sandbox/robot-launches/{launch['id']}/repeat"
    )
    assert repeat.status_code == 200, repeat.text
    await world.delivered(f"ROBOT:{DEAL_ROBOT}", 2)
    await world.settle()
    # The repeated call is the same message (its id derives from the event_token): while the
    # first waits in the outbox it is one row; published already, dispatch gets it twice, and a
    # redelivery once more. None of it asks again, nor answers again.
    (call,) = [RobotCalled.model_validate(body) for body in world.pump.seen["robot.called"]]
    await world.dispatcher.on_robot(call)
    await world.dispatcher.on_robot(call)
    (answer,) = {
        body["command_id"]: body for body in world.pump.seen["dispatch.robot_answer"]
    }.values()
    assert await world.writer.carry_out(DispatchCommand.model_validate(answer)) is None
    await world.settle()

    rows = await pool.fetch(
        "SELECT * FROM dispatch_requests WHERE robot_token = $1", launch["event_token"]
    )
    assert [(r["source"], r["survey"], r["state"], r["sends"]) for r in rows] == [
        ("robot", SURVEY, "sent", 1)
    ]
    (row,) = rows
    assert (row["sale_deal_id"], row["ref"]) == (deal_id, launch["event_token"])
    mails = [m for m in mailbox.messages if str(row["request_id"]) in m["Message-ID"]]
    assert len(mails) == 1
    contact = world.portal.crm.records(CONTACT)[row["contact_id"]]
    assert mails[0]["To"] == contact["EMAIL"][0]["VALUE"]
    nps = [
        d
        for d in world.portal.crm.records(DEAL).values()
        if d.get("ORIGIN_ID") == str(row["request_id"])
    ]
    assert [d["CATEGORY_ID"] for d in nps] == [NPS_FUNNEL]

    answered = await world.launch(launch["id"])
    assert (answered["status"], answered["sends"], answered["refused_sends"]) == (
        "answered",
        1,
        0,
    )
    assert answered["return_values"] == {"sent": "Y", "reason": ""}

    # A second launch on the same deal: the customer was asked just now, so not sent, and the
    # business process is told why.
    again = await world.run(deal_id, survey=SURVEY)
    await world.delivered(f"ROBOT:{DEAL_ROBOT}", 3)
    await world.settle()
    second = await world.launch(again["id"])
    assert (second["status"], second["sends"]) == ("answered", 1)
    assert second["return_values"]["sent"] == "N"
    assert "within every_days" in second["return_values"]["reason"]
    assert len([m for m in mailbox.messages if str(row["request_id"]) in m["Message-ID"]]) == 1

    # An unknown survey: answered at once with the reason, nothing asked.
    unknown = await world.run(deal_id, survey="Nope")
    await world.delivered(f"ROBOT:{DEAL_ROBOT}", 4)
    await world.settle()
    third = await world.launch(unknown["id"])
    assert third["return_values"]["sent"] == "N"
    assert "'Nope' is none of the portal's surveys" in third["return_values"]["reason"]
    assert not await pool.fetchval(
        "SELECT count(*) FROM dispatch_requests WHERE robot_token = $1", unknown["event_token"]
    )


async def test_a_forged_robot_call_is_refused(world: World, pool: asyncpg.Pool) -> None:
    member_id = world.portal.member_id
    form = {
        "code": DEAL_ROBOT,
        "event_token": "forged|token",
        "document_id[0]": "crm",
        "document_id[1]": "CCrmDocumentDeal",
        "document_id[2]": f"DEAL_{customer_deal(world.portal)}",
        "properties[survey]": SURVEY,
        "auth[member_id]": member_id,
        "auth[application_token]": "not-the-portals-token",
    }
    before = await pool.fetchval("SELECT count(*) FROM outbox WHERE routing_key = 'robot.called'")
    forged = await world.app.post("/app/robot", data=form)
    assert forged.status_code == 403
    assert forged.json()["field"] == "auth[application_token]"
    stranger = await world.app.post("/app/robot", data={**form, "auth[member_id]": "f" * 32})
    assert (stranger.status_code, stranger.json()["field"]) == (403, "auth[member_id]")
    tokenless = {k: v for k, v in form.items() if k != "auth[application_token]"}
    missing = await world.app.post("/app/robot", data=tokenless)
    assert (missing.status_code, missing.json()["field"]) == (403, "auth[application_token]")
    after = await pool.fetchval("SELECT count(*) FROM outbox WHERE routing_key = 'robot.called'")
    assert after == before


async def test_the_services_answer_a_robot_call_through_rabbitmq(
    world: World, pool: asyncpg.Pool, settings: Settings, channel: AbstractChannel
) -> None:
    """dispatch's and crm_sync's wiring (`nps run dispatch`, `nps run crm_sync`) on the real
    RabbitMQ, serving the portal with its application-mode client: the call the application
    queued reaches dispatch (`dispatch.robots`), its answer crm_sync (`crm_sync.dispatch`,
    `dispatch.robot_answer`), which answers the launch; `crm.written.robot_answer` is routable
    (the `nps.written` tap), so nothing dead-letters."""
    member_id = world.portal.member_id
    configs = PortalConfigs({member_id: world.config})
    clients = PortalClients({member_id: world.client})

    async def wire(runtime: Runtime) -> None:
        runtime.configs, runtime.clients = configs, clients
        await dispatch_wire(
            runtime, DispatchSettings(smtp_port=free_port(), tick_s=3600, _env_file=None)
        )
        await crm_sync_wire(runtime)

    stop = asyncio.Event()
    service = asyncio.create_task(serve("robot", settings, wire, stop=stop))
    try:
        launch = await world.run(customer_deal(world.portal), survey="Nope")
        await world.delivered(f"ROBOT:{DEAL_ROBOT}", 1)
        async with asyncio.timeout(30):
            while (await world.launch(launch["id"]))["status"] != "answered":
                assert not service.done()
                await asyncio.sleep(0.1)
    finally:
        stop.set()
        await service
    answered = await world.launch(launch["id"])
    assert (answered["sends"], answered["return_values"]["sent"]) == (1, "N")
    assert "'Nope' is none of the portal's surveys" in answered["return_values"]["reason"]
    assert await list_dead_letters(channel, ["dispatch.robots", "crm_sync.dispatch"]) == []
