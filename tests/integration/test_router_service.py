"""The router service on the real RabbitMQ and PostgreSQL: scored events in, route.* actions out.

The router runs with prefetch 1 here, so it handles messages one at a time in queue order: once
the actions of the last event published have arrived, every earlier event has been handled, and
"nothing more arrived" is a fact rather than a wait.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aio_pika
import asyncpg
import yaml
from aio_pika.abc import AbstractChannel

from services.router.main import wire
from services.router.rules import plan_actions
from shared.events import NpsScored, RouteAction
from shared.messaging import REASON_HEADER
from shared.portal_config import PortalConfig, parse_portal_config
from shared.service import serve
from shared.settings import Settings
from shared.topology import EXCHANGE, ROUTER_SCORED
from tests.support import Captured, capture
from tests.support.router import scored

BUILTIN_ROUTES = ("route.service.urgent", "route.marketing", "route.task.urgent", "route.contact")
_items = itertools.count(700_000)


def item() -> int:
    """An item id no other test of this session uses (router_actions outlives a test)."""
    return next(_items)


@asynccontextmanager
async def running_router(settings: Settings) -> AsyncIterator[None]:
    stop = asyncio.Event()
    task = asyncio.create_task(serve("router", settings, wire, stop=stop, prefetch=1))
    try:
        yield
    finally:
        stop.set()
        await task


async def send(channel: AbstractChannel, event: NpsScored) -> None:
    """Publish a scored event as scoring does (message id = event id), confirmed."""
    exchange = await channel.get_exchange(EXCHANGE)
    await exchange.publish(
        aio_pika.Message(
            event.model_dump_json().encode(),
            message_id=str(event.event_id),
            correlation_id=event.correlation_id,
            content_type="application/json",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        ),
        routing_key=event.routing_key(),
    )


def received(captured: Captured) -> list[tuple[str, int, str]]:
    """(routing key, item id, action id) of every captured action."""
    actions = [RouteAction.model_validate(body) for body in captured.bodies]
    return [
        (key, a.answer.item_id, a.action_id)
        for key, a in zip(captured.routing_keys, actions, strict=True)
    ]


def keys(captured: Captured) -> list[tuple[str, int]]:
    return [(key, item_id) for key, item_id, _ in received(captured)]


async def test_scored_answers_become_the_right_actions(
    settings: Settings, channel: AbstractChannel, portal_config: PortalConfig
) -> None:
    cosmetics, detractor, promoter, passive = item(), item(), item(), item()
    events = [
        scored("detractor", 1, kind="cosmetics", item_id=cosmetics),
        scored("detractor", 2, item_id=detractor),
        scored("promoter", 10, item_id=promoter),
        scored("passive", 7, item_id=passive),
    ]
    async with capture(channel, "route.#") as captured, running_router(settings):
        for event in events:
            await send(channel, event)
        await captured.wait_for(6)
    assert keys(captured) == [
        ("route.service.urgent", detractor),
        ("route.task.urgent", detractor),
        ("route.contact", detractor),
        ("route.marketing", promoter),
        ("route.contact", promoter),
        ("route.contact", passive),
    ]
    expected_ids = [a.action_id for e in events for a in plan_actions(e, portal_config)]
    assert [action_id for *_, action_id in received(captured)] == expected_ids
    assert [m.message_id for m in captured.messages] == expected_ids
    task = RouteAction.model_validate(captured.bodies[1])
    assert task.correlation_id == events[1].correlation_id
    assert task.params["responsible_id"] == 5
    assert task.params["comment"] == "It stopped heating"


async def test_redelivery_sends_no_action_twice(
    settings: Settings, channel: AbstractChannel, pool: asyncpg.Pool
) -> None:
    answer, sentinel = item(), item()
    event = scored("detractor", 3, item_id=answer)
    republished = scored("detractor", 3, item_id=answer)  # same answer, a new event id
    async with capture(channel, "route.#") as captured, running_router(settings):
        await send(channel, event)
        await send(channel, event)
        await send(channel, republished)
        await send(channel, scored("passive", 8, item_id=sentinel))
        await captured.wait_for(4)
    assert keys(captured) == [
        ("route.service.urgent", answer),
        ("route.task.urgent", answer),
        ("route.contact", answer),
        ("route.contact", sentinel),
    ]
    recorded = await pool.fetchval(
        "SELECT count(*) FROM router_actions WHERE answer_id = $1", event.answer.answer_id
    )
    assert recorded == 3


async def test_a_superseded_answer_sends_only_what_changed(
    settings: Settings, channel: AbstractChannel
) -> None:
    answer = item()
    versions = [
        scored("passive", 7, item_id=answer),
        scored("detractor", 3, item_id=answer, version=1, supersedes="passive"),
        scored("detractor", 5, item_id=answer, version=2, supersedes="detractor"),
    ]
    async with capture(channel, "route.#") as captured, running_router(settings):
        for event in versions:
            await send(channel, event)
        await captured.wait_for(5)
    assert [key for key, _ in keys(captured)] == [
        "route.contact",
        "route.service.urgent",
        "route.task.urgent",
        "route.contact",
        "route.contact",
    ]
    contact_scores = [
        body["answer"]["score"] for body in captured.bodies if body["action"] == "contact"
    ]
    assert contact_scores == [7, 3, 5]


def _with_rules(portal_config: PortalConfig, path: Path, *rules: dict[str, Any]) -> Path:
    data = portal_config.model_dump(mode="json", exclude_none=True)
    data["routing"]["rules"] = list(rules)
    parse_portal_config(data)
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


async def _dead_letter(channel: AbstractChannel) -> aio_pika.abc.AbstractIncomingMessage:
    queue = await channel.get_queue(ROUTER_SCORED.dlq)
    for _ in range(100):
        message = await queue.get(fail=False)
        if message is not None:
            await message.ack()
            return message
        await asyncio.sleep(0.1)
    raise AssertionError(f"nothing reached {ROUTER_SCORED.dlq}")


async def test_an_action_nobody_consumes_dead_letters_the_answer_with_the_reason(
    settings: Settings, channel: AbstractChannel, portal_config: PortalConfig, tmp_path: Path
) -> None:
    rule = {
        "name": "laser-alarm",
        "match": {"kind": ["equipment"], "category": ["detractor"]},
        "action": "telegram",
        "params": {"text": "{product}: {score}"},
    }
    config_path = _with_rules(portal_config, tmp_path / "portal.yaml", rule)
    settings = settings.model_copy(update={"nps_config": config_path})
    answer = item()
    event = scored("detractor", 2, item_id=answer)
    async with capture(channel, *BUILTIN_ROUTES) as builtins, running_router(settings):
        await send(channel, event)
        dead = await _dead_letter(channel)
        await builtins.wait_for(3)
    reason = dead.headers[REASON_HEADER]
    assert isinstance(reason, str)
    assert reason.startswith("no consumer bound to route.telegram (action 'telegram' of rule")
    assert json.loads(dead.body)["event_id"] == str(event.event_id)

    # Once a consumer is bound, replaying the dead letter sends the missing action only.
    async with (
        capture(channel, *BUILTIN_ROUTES) as builtins_again,
        capture(channel, "route.telegram") as telegram,
        running_router(settings),
    ):
        await channel.default_exchange.publish(
            aio_pika.Message(dead.body, message_id=dead.message_id),
            routing_key=ROUTER_SCORED.name,
        )
        sentinel = item()
        await send(channel, scored("promoter", 9, item_id=sentinel))
        await builtins_again.wait_for(2)
        (alert,) = await telegram.wait_for(1)
    assert keys(builtins_again) == [("route.marketing", sentinel), ("route.contact", sentinel)]
    assert alert["params"]["text"] == "Laser A: 2"
    assert alert["rule"] == "laser-alarm"
