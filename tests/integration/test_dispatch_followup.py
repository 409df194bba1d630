"""The follow-up against the sandbox portal (over HTTP, in process) and the real PostgreSQL, with
both clocks moved by the test: the leads and tasks crm_sync really creates are followed, the
sandbox takes them in work and closes them as a person does, the reads find it (in batches,
fewer as they age); an overdue one is escalated once (a `dispatch.call_task` command that
crm_sync carries out), never again on a redelivery, another round or a restart; dispatch's own
outcome consumer leaves the escalation alone; the dashboard's figures follow."""

from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import aio_pika
import asyncpg
import httpx
import pytest
import yaml
from aio_pika.abc import AbstractChannel
from pydantic import SecretStr

from services.crm_sync.coalescer import CommandCoalescer
from services.crm_sync.dispatch import DispatchWriter
from services.dispatch import read as followup_read
from services.dispatch.dispatcher import Dispatcher
from services.dispatch.follower import Follower
from services.dispatch.followup import follow_id
from services.dispatch.mailer import Mailer
from services.dispatch.main import wire
from services.dispatch.read import FollowupFilter
from services.dispatch.settings import DispatchSettings
from services.harness.stack import free_port
from services.ingest.api import EVENT_PATH
from services.ingest.api import create_app as ingest_app
from services.sandbox.faults import Faults
from services.sandbox.limits import Limits
from services.sandbox.methods import CONTACT
from services.sandbox.portal import SandboxPortal
from services.sandbox.seed import seed_demo
from services.sandbox.work import handle
from shared.bitrix24 import Bitrix24Client
from shared.events import CrmWritten, DispatchCommand, PortalEntityUpdated, PortalRef
from shared.outbox import Outbox
from shared.portal_config import PortalConfig, parse_portal_config
from shared.service import serve
from shared.settings import Settings
from shared.topology import DISPATCH_FOLLOWUP, DISPATCH_UPDATES, DISPATCH_WRITTEN, EXCHANGE
from tests.support import FakeClock
from tests.support.crm_sync import CONFIG_PATH, answer, client_for, portal_ref, route, writers
from tests.support.paths import EXAMPLE_CONFIG

MON_10 = datetime(2026, 12, 7, 10, 0, tzinfo=UTC)  # a Monday
HOUR = timedelta(hours=1)
MINUTE = timedelta(minutes=1)
SECOND = timedelta(seconds=1)
HEAD_OF_SERVICE = 17  # routing.service.responsible_id of the example YAML
MANAGER = 31


def followup_config() -> PortalConfig:
    data = yaml.safe_load(EXAMPLE_CONFIG.read_text())
    data["portal"]["timezone"] = "UTC"
    data["dispatch"]["followup"] = {
        "service": {"sla_hours": 4, "working_hours": True},
        "task": {"sla_hours": 24, "until": "closed", "escalate_to": 5},
        "read_every_minutes": 15,
        "read_max_minutes": 240,
    }
    return parse_portal_config(data)


class Clocks:
    """The follower's and the sandbox portal's clocks, moved together."""

    def __init__(self, start: datetime) -> None:
        self.now = start
        self.portal = FakeClock(start.timestamp())

    def __call__(self) -> datetime:
        return self.now

    def at(self, when: datetime) -> datetime:
        self.now = when
        self.portal.now = when.timestamp()
        return when


@pytest.fixture
def clocks() -> Clocks:
    return Clocks(MON_10)


@pytest.fixture
def portal(clocks: Clocks) -> SandboxPortal:
    portal = SandboxPortal(limits=Limits.off(), clock=clocks.portal)
    seed_demo(portal, config_path=CONFIG_PATH, contacts=10, seed=42)
    return portal


@dataclass
class World:
    pool: asyncpg.Pool
    portal: SandboxPortal
    client: Bitrix24Client
    config: PortalConfig
    clocks: Clocks
    ref: PortalRef

    def follower(self) -> Follower:
        return Follower(
            self.pool, Outbox(), self.config, portal=self.client, clock=self.clocks, lease_s=300
        )

    def contact(self) -> int:
        return min(int(cid) for cid in self.portal.crm.records(CONTACT))

    async def created(self, action: str) -> CrmWritten:
        """A lead or task really created by crm_sync for a detractor's answer, its outcome
        event as crm_sync publishes it (at the test's clock)."""
        the_answer = answer(self.ref, self.contact(), score=3, responsible_id=MANAGER)
        written = await writers(self.pool, self.client, self.config).entities.create(
            route(the_answer, action)
        )
        assert written is not None
        return written.model_copy(update={"occurred_at": self.clocks.now})


@pytest.fixture
async def world(pool: asyncpg.Pool, portal: SandboxPortal, clocks: Clocks) -> World:
    """The follower reads every due row of the database: other tests' rows (other portals, on
    other clocks) would join its rounds and its reads."""
    await pool.execute("DELETE FROM dispatch_followups")
    return World(pool, portal, client_for(portal), followup_config(), clocks, portal_ref())


async def row(pool: asyncpg.Pool, written: CrmWritten) -> dict[str, Any]:
    found = await pool.fetchrow(
        "SELECT * FROM dispatch_followups WHERE follow_id = $1", follow_id(written.action_id)
    )
    assert found is not None
    return dict(found)


async def escalations(pool: asyncpg.Pool, follow: uuid.UUID) -> list[DispatchCommand]:
    rows = await pool.fetch(
        "SELECT body FROM outbox WHERE routing_key = 'dispatch.call_task'"
        " AND body::jsonb->>'request_id' = $1",
        str(follow),
    )
    return [DispatchCommand.model_validate(json.loads(r["body"])) for r in rows]


async def test_a_lead_taken_in_work_then_closed_is_followed_to_the_close(world: World) -> None:
    follower, clocks = world.follower(), world.clocks
    written = await world.created("service")
    await follower.on_written(written)
    await follower.on_written(written)  # a redelivery: the same one row
    first = await row(world.pool, written)
    assert (first["state"], first["entity_type"], first["manager_id"]) == ("open", "lead", MANAGER)
    assert first["responsible_id"] == HEAD_OF_SERVICE
    assert first["due_at"] == MON_10 + 4 * HOUR  # 4 working hours, inside Monday
    assert first["next_read_at"] == MON_10 + 15 * MINUTE

    assert await follower.tick(clocks.at(MON_10 + 10 * MINUTE)) == 0  # not due yet
    assert await follower.tick(clocks.at(MON_10 + 15 * MINUTE)) == 1
    assert (await row(world.pool, written))["state"] == "open"

    clocks.at(MON_10 + 50 * MINUTE)
    handle(world.portal.crm, lead_ids=[written.entity_id or 0], to="in_work")
    assert await follower.tick(clocks.at(MON_10 + HOUR)) == 1
    in_work = await row(world.pool, written)
    assert (in_work["state"], in_work["status"]) == ("in_work", "IN_PROCESS")
    assert in_work["first_change_at"] == MON_10 + 50 * MINUTE  # the portal's time of the edit

    clocks.at(MON_10 + 2 * HOUR)
    handle(world.portal.crm, lead_ids=[written.entity_id or 0], to="closed")
    assert await follower.tick(clocks.at(MON_10 + 2 * HOUR + 5 * MINUTE)) == 1
    closed = await row(world.pool, written)
    assert (closed["state"], closed["outcome"], closed["status"]) == (
        "closed",
        "success",
        "CONVERTED",
    )
    assert closed["closed_at"] == MON_10 + 2 * HOUR
    assert closed["next_read_at"] is None  # no more reads
    assert closed["escalation"] is None
    assert await follower.tick(clocks.at(MON_10 + 10 * HOUR)) == 0
    assert await escalations(world.pool, follow_id(written.action_id)) == []


async def test_an_untouched_lead_is_escalated_once_and_crm_sync_creates_the_task(
    world: World,
) -> None:
    follower, clocks = world.follower(), world.clocks
    written = await world.created("service")
    await follower.on_written(written)
    follow = follow_id(written.action_id)
    # reads grow rarer (15 min, then a sixth of the age) but one falls on the deadline
    moments = [MON_10 + m * MINUTE for m in (15, 20, 30, 40, 45, 120, 130, 150, 200, 234)]
    for moment in moments:
        await follower.tick(clocks.at(moment))
    before = await row(world.pool, written)
    assert before["reads"] == 7  # not at 20, 40, 130 min: not due then
    assert before["next_read_at"] == MON_10 + 4 * HOUR  # the deadline
    assert await escalations(world.pool, follow) == []

    await follower.tick(clocks.at(MON_10 + 4 * HOUR))
    (command,) = await escalations(world.pool, follow)
    assert command.command_id == f"{follow}:escalation:0"
    assert command.call_task is not None
    assert command.call_task.responsible_id == HEAD_OF_SERVICE
    assert command.call_task.contact_id == world.contact()
    assert f"#{written.entity_id}" in command.call_task.title
    escalated = await row(world.pool, written)
    assert (escalated["escalation"], escalated["escalated_to"]) == ("queued", HEAD_OF_SERVICE)

    # another round, a restarted follower, a redelivered outcome: nothing more
    await follower.tick(clocks.at(MON_10 + 5 * HOUR))
    restarted = world.follower()
    await restarted.on_written(written)
    await restarted.tick(clocks.at(MON_10 + 9 * HOUR))
    assert len(await escalations(world.pool, follow)) == 1

    # crm_sync carries the command out on the portal; its outcome reaches both consumers
    dispatch_writer = DispatchWriter(
        world.pool, Outbox(), CommandCoalescer(world.client, window_s=0.01), clock=clocks
    )
    outcome = await dispatch_writer.carry_out(command)
    assert outcome is not None
    outcome = outcome.model_copy(update={"occurred_at": clocks.now})  # as published then
    assert outcome.outcome == "created"
    task = world.portal.state.tasks[outcome.entity_id or 0]
    assert task["RESPONSIBLE_ID"] == HEAD_OF_SERVICE
    assert task["XML_ID"] == command.command_id
    dispatcher = Dispatcher(
        world.pool,
        Outbox(),
        world.config,
        portal=world.client,
        mailer=Mailer(DispatchSettings(_env_file=None)),
        settings=DispatchSettings(_env_file=None),
        clock=clocks,
    )
    await dispatcher.on_written(outcome)  # no request of the register: left alone, no error
    await follower.on_written(outcome)
    await follower.on_written(outcome)
    done = await row(world.pool, written)
    assert (done["escalation"], done["escalation_task_id"]) == ("created", outcome.entity_id)

    # the escalation task is followed like any task: to its deadline, never escalated itself
    task_row = await row(world.pool, outcome)
    assert (task_row["action"], task_row["entity_type"], task_row["entity_id"]) == (
        "escalation",
        "task",
        outcome.entity_id,
    )
    assert (task_row["manager_id"], task_row["contact_id"]) == (MANAGER, world.contact())
    assert task_row["responsible_id"] == HEAD_OF_SERVICE
    deadline = outcome.occurred_at + 4 * HOUR  # escalation_deadline_hours
    assert (task_row["sla_hours"], task_row["sla_working_hours"], task_row["sla_until"]) == (
        4.0,
        False,
        "closed",
    )
    assert task_row["due_at"] == deadline
    await follower.tick(clocks.at(deadline + HOUR))
    late = await row(world.pool, outcome)
    assert (late["state"], late["escalation"]) == ("open", None)
    assert len(await escalations(world.pool, follow)) == 1
    assert await escalations(world.pool, follow_id(outcome.action_id)) == []
    where = FollowupFilter(portal=world.ref.key, action="escalation")
    async with world.pool.acquire() as conn:
        (overdue,) = await followup_read.overdue(conn, deadline + HOUR, where)
    assert overdue["entity_id"] == outcome.entity_id

    # the head of service completes it: the next read finds it closed
    clocks.at(deadline + 2 * HOUR)
    handle(world.portal.crm, task_ids=[outcome.entity_id or 0], to="closed")
    await follower.tick(clocks.at(deadline + 6 * HOUR))
    closed = await row(world.pool, outcome)
    assert (closed["state"], closed["outcome"]) == ("closed", "success")
    assert closed["closed_at"] == deadline + 2 * HOUR
    async with world.pool.acquire() as conn:
        (summary,) = await followup_read.loop_closed(conn, deadline + 6 * HOUR, where)
    assert (summary["key"], summary["followed"], summary["closed"]) == ("escalation", 1, 1)


async def test_a_task_in_work_is_overdue_when_its_sla_asks_it_closed(world: World) -> None:
    follower, clocks = world.follower(), world.clocks
    written = await world.created("task")
    await follower.on_written(written)
    follow = follow_id(written.action_id)
    assert (await row(world.pool, written))["due_at"] == MON_10 + 24 * HOUR

    clocks.at(MON_10 + 30 * MINUTE)
    handle(world.portal.crm, task_ids=[written.entity_id or 0], to="in_work")
    await follower.tick(clocks.at(MON_10 + HOUR))
    assert (await row(world.pool, written))["state"] == "in_work"
    await follower.tick(clocks.at(MON_10 + 24 * HOUR))
    (command,) = await escalations(world.pool, follow)
    assert command.call_task is not None
    assert command.call_task.responsible_id == 5

    now = MON_10 + 25 * HOUR
    where = FollowupFilter(portal=world.ref.key)
    async with world.pool.acquire() as conn:
        (overdue,) = await followup_read.overdue(conn, now, where)
        (summary,) = await followup_read.loop_closed(conn, now, where)
    assert (overdue["entity_id"], overdue["state"], overdue["hours_overdue"]) == (
        written.entity_id,
        "in_work",
        1.0,
    )
    assert overdue["escalation"] == "queued"
    assert summary["key"] == "task"
    assert (summary["followed"], summary["in_work"], summary["overdue"]) == (1, 1, 1)
    assert summary["median_hours_to_change"] == 0.5

    # completed at last: closed, no longer overdue
    clocks.at(MON_10 + 26 * HOUR)
    handle(world.portal.crm, task_ids=[written.entity_id or 0], to="closed")
    await follower.tick(clocks.at(MON_10 + 29 * HOUR))
    closed = await row(world.pool, written)
    assert (closed["state"], closed["closed_at"]) == ("closed", MON_10 + 26 * HOUR)
    async with world.pool.acquire() as conn:
        assert await followup_read.overdue(conn, MON_10 + 30 * HOUR, where) == []


async def test_a_lead_closed_in_the_portal_is_read_at_once_through_its_update_event(
    world: World, settings: Settings
) -> None:
    """The sandbox POSTs `ONCRMLEADUPDATE` / `ONTASKUPDATE` to ingest's handler; ingest forwards
    `portal.updated.<lead|task>`; the follower reads the entity at its next round instead of at
    its scheduled read (15 min after it was created)."""
    world = replace(world, ref=PortalRef(member_id=world.portal.member_id))
    world.portal.register_handler(f"http://ingest{EVENT_PATH}")
    follower, clocks = world.follower(), world.clocks
    lead, task = await world.created("service"), await world.created("task")
    for written in (lead, task):
        await follower.on_written(written)
    served = world.config.portal.model_copy(update={"member_id": world.portal.member_id})
    ingest = ingest_app(
        settings.model_copy(
            update={"bitrix24_app_token": SecretStr(world.portal.application_token)}
        ),
        world.config.model_copy(update={"portal": served}),
        world.pool,
        Outbox(),
    )
    clocks.at(MON_10 + 3 * MINUTE)
    handle(world.portal.crm, lead_ids=[lead.entity_id or 0], to="closed")
    handle(world.portal.crm, task_ids=[task.entity_id or 0], to="in_work")
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=ingest), base_url="http://ingest"
    ) as http:
        for delivery in world.portal.take_outbox():
            answer = await http.post(
                EVENT_PATH,
                content=delivery.body,
                headers={"Content-Type": "application/x-www-form-urlencoded"},
            )
            assert answer.json()["status"] == "forwarded", delivery.event
    forwarded = [
        PortalEntityUpdated.model_validate(json.loads(r["body"]))
        for r in await world.pool.fetch(
            "SELECT body FROM outbox WHERE routing_key LIKE 'portal.updated.%'"
            " AND body::jsonb->'portal'->>'member_id' = $1 ORDER BY id",
            world.portal.member_id,
        )
    ]
    assert [(e.routing_key(), e.entity_id) for e in forwarded] == [
        ("portal.updated.lead", lead.entity_id),
        ("portal.updated.task", task.entity_id),
    ]

    assert await follower.tick(clocks.at(MON_10 + 4 * MINUTE)) == 0  # first read at 15 min
    for event in forwarded:
        await follower.on_updated(event)
    assert await follower.tick(clocks.at(MON_10 + 5 * MINUTE)) == 2  # read at once
    closed, in_work = await row(world.pool, lead), await row(world.pool, task)
    assert (closed["state"], closed["closed_at"], closed["next_read_at"]) == (
        "closed",
        MON_10 + 3 * MINUTE,  # the portal's time of the close
        None,
    )
    assert (in_work["state"], in_work["first_change_at"]) == ("in_work", MON_10 + 3 * MINUTE)

    # an update of what is no longer read, or was never followed: nothing to do
    await follower.on_updated(forwarded[0])
    stranger = forwarded[1].model_copy(update={"entity_id": 987654})
    await follower.on_updated(stranger)
    assert await follower.tick(clocks.at(MON_10 + 6 * MINUTE)) == 0

    # the task's next change is read at once too
    clocks.at(MON_10 + 7 * MINUTE)
    handle(world.portal.crm, task_ids=[task.entity_id or 0], to="closed")
    await follower.on_updated(forwarded[1])
    assert await follower.tick(clocks.at(MON_10 + 8 * MINUTE)) == 1
    done = await row(world.pool, task)
    assert (done["state"], done["closed_at"]) == ("closed", MON_10 + 7 * MINUTE)


async def test_loop_closed_per_action_and_per_manager(world: World) -> None:
    follower, clocks = world.follower(), world.clocks
    made = [await world.created(action) for action in ("service", "service", "marketing")]
    for written in made:
        await follower.on_written(written)
    clocks.at(MON_10 + HOUR)
    handle(world.portal.crm, lead_ids=[made[0].entity_id or 0], to="closed")
    clocks.at(MON_10 + 3 * HOUR)
    handle(world.portal.crm, lead_ids=[made[2].entity_id or 0], to="junk")
    requests = world.portal.calls_report()["requests"]
    assert await follower.tick(clocks.at(MON_10 + 3 * HOUR + MINUTE)) == 3
    # one request: the lead statuses and the three leads by one id filter
    assert world.portal.calls_report()["requests"] == requests + 1
    (lead_list,) = world.portal.calls_report(method="crm.lead.list", limit=1)["calls"]
    assert lead_list["batch"] is not None

    where = FollowupFilter(portal=world.ref.key)
    now = MON_10 + 5 * HOUR
    async with world.pool.acquire() as conn:
        by_action = await followup_read.loop_closed(conn, now, where, "action")
        by_manager = await followup_read.loop_closed(conn, now, where, "manager")
        listed = await followup_read.followups(conn, where, state="closed")
    summary = {r["key"]: r for r in by_action}
    assert (summary["service"]["closed_pct"], summary["service"]["median_hours_to_close"]) == (
        50.0,
        1.0,
    )
    assert summary["service"]["overdue"] == 1  # the other one, untouched past 4 working hours
    assert (summary["marketing"]["closed_pct"], summary["marketing"]["closed"]) == (100.0, 1)
    (manager,) = by_manager
    assert (manager["key"], manager["followed"], manager["closed"]) == (MANAGER, 3, 2)
    assert manager["median_hours_to_close"] == 2.0
    assert {r["outcome"] for r in listed} == {"success", "failure"}


async def test_a_failed_read_is_tried_again_after_the_lease_and_a_deleted_lead_closes(
    world: World,
) -> None:
    follower, clocks = world.follower(), world.clocks
    written = await world.created("marketing")
    await follower.on_written(written)
    world.portal.faults.configure(Faults(outage_s=3600, outage_status=503))
    assert await follower.tick(clocks.at(MON_10 + 15 * MINUTE)) == 0
    assert (await row(world.pool, written))["reads"] == 0
    world.portal.faults.configure(Faults())
    assert await follower.tick(clocks.at(MON_10 + 16 * MINUTE)) == 0  # claimed: waits
    del world.portal.crm.records(1)[written.entity_id or 0]  # someone deleted the lead
    assert await follower.tick(clocks.at(MON_10 + 20 * MINUTE)) == 1
    gone = await row(world.pool, written)
    assert (gone["state"], gone["outcome"], gone["next_read_at"]) == ("closed", "deleted", None)


async def test_the_service_follows_outcomes_from_the_broker_and_an_escalation_breaks_nothing(
    pool: asyncpg.Pool, settings: Settings, channel: AbstractChannel
) -> None:
    """`nps run dispatch`'s wiring on the real RabbitMQ: a lead's outcome reaches the follow-up,
    its update event makes it due for a read at once; an escalation's `crm.written.call_task`
    reaches both dispatch consumers and neither dead-letters it."""
    ref = portal_ref()
    nowhere = f"http://127.0.0.1:{free_port()}/rest/1/none/"  # no portal calls are expected
    configured = settings.model_copy(update={"bitrix24_webhook_url": SecretStr(nowhere)})
    dispatch_settings = DispatchSettings(smtp_port=free_port(), tick_s=3600, _env_file=None)
    lead = CrmWritten(
        correlation_id="corr-service",
        action_id=f"{ref.key}:77:EQ-LASER-A:service",
        action="service",
        outcome="created",
        entity_type="lead",
        entity_id=4242,
        details={"portal": ref.key, "contact_id": 3, "responsible_id": 17, "manager_id": 31},
    )
    follow = uuid.uuid4()
    escalation = CrmWritten(
        correlation_id=f"followup:{follow}",
        action_id=f"{follow}:escalation:0",
        action="call_task",
        outcome="created",
        entity_type="task",
        entity_id=99,
        details={"request_id": str(follow)},
    )
    stop = asyncio.Event()
    service = asyncio.create_task(
        serve("dispatch", configured, partial(wire, settings=dispatch_settings), stop=stop)
    )
    try:
        exchange = await channel.get_exchange(EXCHANGE)
        for event in (escalation, lead, lead):
            await exchange.publish(
                aio_pika.Message(
                    event.model_dump_json().encode(),
                    message_id=str(event.event_id),
                    content_type="application/json",
                ),
                routing_key=event.routing_key(),
            )
        async with asyncio.timeout(30):
            while (
                await pool.fetchval(
                    "SELECT count(*) FROM dispatch_followups WHERE action_id = $1", lead.action_id
                )
                != 1
            ):
                await asyncio.sleep(0.05)
        # the portal's update event of the lead: read at once (the timer's next round)
        updated = PortalEntityUpdated(
            correlation_id="corr-update",
            portal=ref,
            event="ONCRMLEADUPDATE",
            entity_type="lead",
            entity_id=4242,
        )
        await exchange.publish(
            aio_pika.Message(
                updated.model_dump_json().encode(),
                message_id=str(updated.event_id),
                content_type="application/json",
            ),
            routing_key=updated.routing_key(),
        )
        async with asyncio.timeout(30):
            # due now, or already claimed by the timer's round (its read fails: no portal)
            while not await pool.fetchval(
                "SELECT next_read_at <= now() OR read_lease IS NOT NULL"
                " FROM dispatch_followups WHERE action_id = $1",
                lead.action_id,
            ):
                await asyncio.sleep(0.05)
        async with asyncio.timeout(30):
            for queue in (DISPATCH_WRITTEN, DISPATCH_FOLLOWUP, DISPATCH_UPDATES):
                declared = await channel.declare_queue(queue.name, passive=True)
                while declared.declaration_result.message_count:
                    await asyncio.sleep(0.05)
                    declared = await channel.declare_queue(queue.name, passive=True)
    finally:
        stop.set()
        await service
    for queue in (DISPATCH_WRITTEN, DISPATCH_FOLLOWUP, DISPATCH_UPDATES):
        dead = await channel.declare_queue(queue.dlq, passive=True)
        assert dead.declaration_result.message_count == 0, queue.dlq
    recorded = await pool.fetchrow(
        "SELECT entity_id, manager_id, portal FROM dispatch_followups WHERE action_id = $1",
        lead.action_id,
    )
    assert recorded is not None
    assert dict(recorded) == {"entity_id": 4242, "manager_id": 31, "portal": ref.key}


class HeldAfterRead:
    """The portal as the follower reads it, each read's answer held until `release` is set
    (`read` tells one came back): a read in flight."""

    def __init__(self, client: Bitrix24Client) -> None:
        self.client = client
        self.read = asyncio.Event()
        self.release = asyncio.Event()

    async def batch(self, commands: list[Any]) -> Any:
        answer = await self.client.batch(commands)
        self.read.set()
        await self.release.wait()
        return answer


def held_follower(world: World, held: HeldAfterRead) -> Follower:
    return Follower(
        world.pool,
        Outbox(),
        world.config,
        portal=held,  # type: ignore[arg-type]
        clock=world.clocks,
        lease_s=300,
    )


async def test_an_update_during_a_read_in_flight_is_read_again_at_once(world: World) -> None:
    follower, clocks = world.follower(), world.clocks
    written = await world.created("service")
    await follower.on_written(written)
    held = HeldAfterRead(world.client)
    reading = asyncio.create_task(held_follower(world, held).tick(clocks.at(MON_10 + 15 * MINUTE)))
    try:
        await held.read.wait()  # read: still open
        clocks.at(MON_10 + 15 * MINUTE + 30 * SECOND)
        handle(world.portal.crm, lead_ids=[written.entity_id or 0], to="closed")
        updated = PortalEntityUpdated(
            portal=world.ref,
            event="ONCRMLEADUPDATE",
            correlation_id=str(uuid.uuid4()),
            entity_type="lead",
            entity_id=written.entity_id or 0,
        )
        await follower.on_updated(updated)
        claimed = await row(world.pool, written)
        assert claimed["next_read_at"] == MON_10 + 20 * MINUTE  # the claim stays
    finally:
        held.release.set()
    await reading
    read = await row(world.pool, written)
    assert (read["state"], read["next_read_at"]) == ("open", MON_10 + 15 * MINUTE + 30 * SECOND)
    await follower.tick(clocks.at(MON_10 + 16 * MINUTE))  # not at +30 min
    assert (await row(world.pool, written))["state"] == "closed"


async def test_a_read_that_outlived_its_lease_does_not_overwrite_a_newer_one(
    world: World,
) -> None:
    follower, clocks = world.follower(), world.clocks
    written = await world.created("service")
    await follower.on_written(written)
    held = HeldAfterRead(world.client)
    slow = asyncio.create_task(held_follower(world, held).tick(clocks.at(MON_10 + 15 * MINUTE)))
    try:
        await held.read.wait()  # replica A read it open, and hangs past its lease
        clocks.at(MON_10 + 18 * MINUTE)
        handle(world.portal.crm, lead_ids=[written.entity_id or 0], to="closed")
        await follower.tick(clocks.at(MON_10 + 21 * MINUTE))  # replica B
        assert (await row(world.pool, written))["state"] == "closed"
    finally:
        held.release.set()
    await slow  # A's older read is dropped
    closed = await row(world.pool, written)
    assert (closed["state"], closed["closed_at"], closed["next_read_at"], closed["reads"]) == (
        "closed",
        MON_10 + 18 * MINUTE,
        None,
        1,
    )
