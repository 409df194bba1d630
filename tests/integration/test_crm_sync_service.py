"""crm_sync as it runs: `serve()` with its wiring on the real RabbitMQ and PostgreSQL, talking
HTTP to a sandbox portal served on a free port (route.* in, crm.written.* out, DLQ, replicas)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aio_pika
import uvicorn
import yaml
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage

from services.crm_sync.entities import task_marker
from services.crm_sync.main import wire
from services.sandbox.app import create_app
from services.sandbox.limits import Limits
from services.sandbox.methods import CONTACT, LEAD
from services.sandbox.portal import QUERY_LIMIT_EXCEEDED, SandboxPortal
from services.sandbox.seed import seed_demo
from shared.events import CrmWritten, RouteAction
from shared.messaging import REASON_HEADER
from shared.service import serve
from shared.settings import SANDBOX_SECRET, SANDBOX_USER_ID, Settings
from shared.topology import CRM_SYNC_ACTIONS, EXCHANGE
from tests.support import Captured, capture
from tests.support.crm_sync import (
    CONFIG_PATH,
    SCORE,
    answer,
    blank_laser,
    contacts_where,
    portal_ref,
    route,
)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def demo_portal(contacts: int, limits: Limits) -> SandboxPortal:
    portal = SandboxPortal(user_id=SANDBOX_USER_ID, secret=SANDBOX_SECRET, limits=limits)
    seed_demo(portal, config_path=CONFIG_PATH, contacts=contacts, seed=42)
    return portal


@contextlib.asynccontextmanager
async def serving(portal: SandboxPortal, settings: Settings) -> AsyncIterator[Settings]:
    """The portal on a free port; yields settings pointing the services at it."""
    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(portal), host="127.0.0.1", port=port, log_level="warning")
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    try:
        yield settings.model_copy(update={"sandbox_host": "127.0.0.1", "sandbox_port": port})
    finally:
        server.should_exit = True
        await task


@contextlib.asynccontextmanager
async def crm_sync(settings: Settings, prefetch: int = 200) -> AsyncIterator[None]:
    """The service as `nps run crm_sync` runs it. With prefetch 1 it handles one message at a
    time in queue order: once the event of the last message sent is out, every earlier message
    has been handled."""
    stop = asyncio.Event()
    task = asyncio.create_task(serve("crm_sync", settings, wire, stop=stop, prefetch=prefetch))
    try:
        yield
    finally:
        stop.set()
        await task


async def send(channel: AbstractChannel, action: RouteAction) -> None:
    exchange = await channel.get_exchange(EXCHANGE)
    await exchange.publish(
        aio_pika.Message(
            action.model_dump_json().encode(),
            message_id=str(action.event_id),
            correlation_id=action.correlation_id,
            content_type="application/json",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        ),
        routing_key=action.routing_key(),
    )


def leads_of(portal: SandboxPortal, actions: list[RouteAction]) -> list[dict[str, Any]]:
    """The portal's leads created for `actions` (other tests' leftovers may reach it too)."""
    ids = {action.action_id for action in actions}
    return [lead for lead in portal.crm.records(LEAD).values() if lead["ORIGIN_ID"] in ids]


def tasks_of(portal: SandboxPortal, actions: list[RouteAction]) -> list[dict[str, Any]]:
    markers = {task_marker(action.action_id) for action in actions}
    return [
        task
        for task in portal.state.tasks.values()
        if markers & set(str(task["DESCRIPTION"]).splitlines())
    ]


async def written_for(
    captured: Captured, actions: list[RouteAction], timeout: float = 30
) -> list[CrmWritten]:
    """The events of `actions`, once each has one (the relay also publishes what other tests
    left in the shared outbox: those are ignored)."""
    wanted = {action.action_id for action in actions}

    def mine() -> list[CrmWritten]:
        events = [CrmWritten.model_validate(body) for body in captured.bodies]
        return [event for event in events if event.action_id in wanted]

    async with asyncio.timeout(timeout):
        while {event.action_id for event in mine()} != wanted:
            await asyncio.sleep(0.05)
    return mine()


async def dead_letters(channel: AbstractChannel, count: int) -> list[AbstractIncomingMessage]:
    queue = await channel.get_queue(CRM_SYNC_ACTIONS.dlq, ensure=False)
    messages: list[AbstractIncomingMessage] = []
    async with asyncio.timeout(20):
        while len(messages) < count:
            message = await queue.get(fail=False)
            if message is None:
                await asyncio.sleep(0.05)
                continue
            await message.ack()
            messages.append(message)
    return messages


async def test_actions_in_written_events_out(settings: Settings, channel: AbstractChannel) -> None:
    portal = demo_portal(30, Limits.off())
    ref = portal_ref()
    cid = contacts_where(portal, blank_laser)[0]
    detractor = answer(ref, cid, score=2, comment="Broken again")
    actions = [
        route(detractor, "service"),
        route(detractor, "task"),
        route(detractor, "contact"),
        route(answer(ref, 7, score=10, item_id=4242), "marketing"),
    ]
    async with (
        serving(portal, settings) as portal_settings,
        capture(channel, "crm.written.#") as captured,
        crm_sync(portal_settings, prefetch=1),
    ):
        for action in actions:
            await send(channel, action)
        await written_for(captured, actions)
        for action in actions:  # redelivered: done already, nothing new is published
            await send(channel, action)
        sentinel = route(answer(ref, 8, score=10, item_id=4343), "marketing")
        await send(channel, sentinel)
        await written_for(captured, [sentinel])
        events = await written_for(captured, actions)

    assert len(events) == len(actions)
    by_action = {event.action_id: event for event in events}
    assert {by_action[a.action_id].routing_key() for a in actions} == {
        "crm.written.service",
        "crm.written.task",
        "crm.written.contact",
        "crm.written.marketing",
    }
    assert all(by_action[a.action_id].correlation_id == a.correlation_id for a in actions)
    assert len(leads_of(portal, [*actions, sentinel])) == 3
    assert len(tasks_of(portal, actions)) == 1
    record = portal.crm.get(CONTACT, cid)
    assert record is not None
    assert record[SCORE] == "2"


async def test_of_two_answers_of_one_second_the_later_item_ends_in_the_contact(
    settings: Settings, channel: AbstractChannel
) -> None:
    portal = demo_portal(30, Limits.off())
    ref = portal_ref()
    first, second = contacts_where(portal, blank_laser)[:2]
    # Items 9 and 10 submitted in the same second (a double submit): 10 is the later one.
    actions = [
        route(answer(ref, first, score=8, item_id=10)),
        route(answer(ref, first, score=3, item_id=9)),
        route(answer(ref, second, score=3, item_id=9)),
        route(answer(ref, second, score=8, item_id=10)),
    ]
    async with (
        serving(portal, settings) as portal_settings,
        capture(channel, "crm.written.#") as captured,
        crm_sync(portal_settings, prefetch=1),
    ):
        for action in actions:
            await send(channel, action)
        events = await written_for(captured, actions)

    assert {cid: (portal.crm.get(CONTACT, cid) or {}).get(SCORE) for cid in (first, second)} == {
        first: "8",
        second: "8",
    }
    by_action = {event.action_id: event.outcome for event in events}
    assert [by_action[action.action_id] for action in actions] == [
        "patched",
        "skipped",
        "patched",
        "patched",
    ]


async def test_a_400_from_the_portal_goes_to_the_dlq_with_the_reason(
    settings: Settings, channel: AbstractChannel
) -> None:
    portal = demo_portal(5, Limits.off())
    action = route(answer(portal_ref(), 2, score=1), "task", {"responsible_id": 4040})
    async with serving(portal, settings) as portal_settings, crm_sync(portal_settings):
        await send(channel, action)
        (dead,) = await dead_letters(channel, 1)

    assert dead.message_id == str(action.event_id)
    reason = dead.headers[REASON_HEADER]
    assert isinstance(reason, str)
    assert "tasks.task.add" in reason
    assert "not found" in reason
    assert dead.headers["x-nps-attempts"] == 1
    assert not tasks_of(portal, [action])


async def test_two_replicas_share_one_budget_without_limit_errors(
    settings: Settings, channel: AbstractChannel, tmp_path: Path
) -> None:
    per_second, burst = 5.0, 5
    portal = demo_portal(500, Limits(per_second=per_second, burst=burst))
    config = yaml.safe_load(CONFIG_PATH.read_text(encoding="utf-8"))
    config["portal"] = {"plan": "custom", "rate": {"per_second": per_second, "burst": burst}}
    fast = tmp_path / "portal.yaml"
    fast.write_text(yaml.safe_dump(config), encoding="utf-8")
    ref = portal_ref()
    contacts = sorted(portal.crm.records(CONTACT))
    actions = [route(answer(ref, cid, score=cid % 11)) for cid in contacts]
    leads = [
        route(answer(ref, cid, score=10, item_id=9000 + cid), "marketing") for cid in contacts[:60]
    ]
    async with (
        serving(portal, settings.model_copy(update={"nps_config": fast})) as replica,
        capture(channel, "crm.written.#") as captured,
        crm_sync(replica),
        crm_sync(replica),
    ):
        for action in [*actions, *leads]:
            await send(channel, action)
        events = await written_for(captured, [*actions, *leads], timeout=60)

    report = portal.calls_report(limit=0)
    assert report["limit_errors"][QUERY_LIMIT_EXCEEDED] == 0
    assert report["requests"] > 2 * burst
    assert len(leads_of(portal, leads)) == len(leads)
    assert len(events) == len(actions) + len(leads)
    assert {event.outcome for event in events} <= {"patched", "conflict", "created"}


async def test_an_urgent_lead_queued_behind_a_contact_backlog_is_written_within_three_requests(
    settings: Settings, channel: AbstractChannel, tmp_path: Path
) -> None:
    """500 contact patches wait in the bulk queue (eleven requests' worth at least) when a
    detractor's service lead arrives in the urgent lane: it is created by one of the portal's
    first three requests, and the backlog is then written as before."""
    per_second, burst = 20.0, 5
    portal = demo_portal(500, Limits(per_second=per_second, burst=burst))
    config = yaml.safe_load(CONFIG_PATH.read_text(encoding="utf-8"))
    config["portal"] = {"plan": "custom", "rate": {"per_second": per_second, "burst": burst}}
    limited = tmp_path / "portal.yaml"
    limited.write_text(yaml.safe_dump(config), encoding="utf-8")
    ref = portal_ref()
    contacts = sorted(portal.crm.records(CONTACT))
    backlog = [route(answer(ref, cid, score=cid % 11)) for cid in contacts]
    lead = route(answer(ref, contacts[0], score=1, item_id=7777), "service").model_copy(
        update={"urgent": True}
    )
    async with (
        serving(portal, settings.model_copy(update={"nps_config": limited})) as replica,
        capture(channel, "crm.written.#") as captured,
    ):
        for action in [*backlog, lead]:
            await send(channel, action)
        async with crm_sync(replica):
            await written_for(captured, [lead], timeout=60)
            events = await written_for(captured, backlog, timeout=120)

    calls = portal.calls_report()["calls"]
    requests = [call["seq"] for call in calls if call["method"] == "batch"]
    (add,) = [call for call in calls if call["method"] == "crm.lead.add"]
    assert requests.index(add["batch"]) < 3
    assert len(requests) > 11
    assert len(leads_of(portal, [lead])) == 1
    assert {event.outcome for event in events} <= {"patched", "conflict"}
