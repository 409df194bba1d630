"""Many portals (docs/crm_sync.md, Many portals): crm_sync as `nps run crm_sync` runs it in
application mode, two sandbox portals installed over real HTTP, real RabbitMQ and PostgreSQL.
Portal A, at its ceiling with a backlog of urgent leads ahead in the shared queue, does not slow
portal B's urgent lead: A's messages are held aside in A's held queue, B's lead is written while
they still wait there, and every one of A's leads is then written exactly once. A held queue an
earlier run left is drained from start, with messages or empty (its messages back later)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx
import yaml
from aio_pika import DeliveryMode, Message
from aio_pika.abc import AbstractChannel, AbstractQueue
from prometheus_client import REGISTRY
from pydantic import SecretStr

from services.crm_sync.main import wire
from services.sandbox.app import create_app as create_sandbox_app
from services.sandbox.limits import Limits
from services.sandbox.methods import LEAD
from services.sandbox.portal import SandboxPortal
from services.sandbox.portals import PortalSpec, Sandbox, portal_factory
from shared import portal_store
from shared.bitrix24.tokens import AppCredentials, OAuthServer, TokenBook
from shared.events import PortalRef, RouteAction
from shared.messaging import make_broker, publish
from shared.service import Runtime, serve
from shared.settings import Settings
from shared.topology import CRM_SYNC_URGENT, DLX
from tests.support import serving
from tests.support.app import APP, app_registration, install_pair, two_names
from tests.support.crm_sync import answer, route
from tests.support.paths import EXAMPLE_CONFIG

CLIENT_ID = "local.nps.fairness"
SECRET = "fairness-secret"
BACKLOG = 120
"""A's urgent leads queued ahead of B's: four times the urgent consumer's prefetch (32), several
of A's requests at its ceiling."""
TIMEOUT_S = 90.0


def slow_config() -> str:
    """The example portal YAML at one request every two seconds (burst 1)."""
    config = yaml.safe_load(EXAMPLE_CONFIG.read_text(encoding="utf-8"))
    config["portal"] = {"plan": "custom", "rate": {"per_second": 0.5, "burst": 1}}
    return yaml.safe_dump(config)


def urgent_lead(key: str, contact_id: int, item_id: int) -> RouteAction:
    ref = PortalRef(member_id=key)
    action = route(answer(ref, contact_id, score=1, item_id=item_id), "service")
    return action.model_copy(update={"urgent": True})


async def until(check: Callable[[], Awaitable[bool]], what: str) -> None:
    deadline = time.monotonic() + TIMEOUT_S
    while not await check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)


async def done(pool: asyncpg.Pool, actions: list[RouteAction]) -> int:
    found = await pool.fetchval(
        "SELECT count(*) FROM crm_actions WHERE action_id = ANY($1::text[]) AND state = 'done'",
        [action.action_id for action in actions],
    )
    return int(found)


def held_total() -> float:
    labels = {"queue": CRM_SYNC_URGENT.name}
    return REGISTRY.get_sample_value("nps_crm_sync_held_total", labels) or 0.0


def portals_held() -> float:
    return REGISTRY.get_sample_value("nps_crm_sync_portals_held") or 0.0


def leads_by_origin(portal: SandboxPortal) -> Counter[str]:
    return Counter(str(lead.get("ORIGIN_ID")) for lead in portal.crm.records(LEAD).values())


@dataclass
class Portals:
    a: SandboxPortal
    b: SandboxPortal
    key_a: str
    key_b: str
    settings: Settings
    """crm_sync's settings in application mode, against these portals."""

    @property
    def held_a(self) -> str:
        """A's held queue of `crm_sync.urgent`."""
        return f"{CRM_SYNC_URGENT.name}.portal.{self.key_a}"


@contextlib.asynccontextmanager
async def installed(
    pool: asyncpg.Pool, settings: Settings, channel: AbstractChannel, *, slow_a: bool
) -> AsyncIterator[Portals]:
    """Two sandbox portals over real HTTP with the application installed (A at one request every
    two seconds with `slow_a`, B at the standard rate), `crm_sync.urgent` empty; A's held queue
    and the portals' rows are gone afterwards."""
    names = two_names()
    default = SandboxPortal(limits=Limits.off())
    sandbox = Sandbox(
        default,
        registration=app_registration(CLIENT_ID, SECRET, handler_url=f"{APP}/app/frame"),
        factory=portal_factory(seed=str(EXAMPLE_CONFIG), clock=default.clock, seed_path=Path),
    )
    for name in names:
        sandbox.add(PortalSpec(name=name, contacts=12, sales=0, limits=Limits.off()))
    events = httpx.MockTransport(lambda _request: httpx.Response(200, json={}))
    async with serving(create_sandbox_app(sandbox, event_transport=events)) as url:
        assert sandbox.server is not None
        sandbox.server.base_url = url
        configured = settings.model_copy(
            update={
                "nps_mode": "app",
                "bitrix24_oauth_url": url,
                "bitrix24_client_id": CLIENT_ID,
                "bitrix24_client_secret": SecretStr(SECRET),
                "app_portals_reload_s": 0.5,
            }
        )
        book = TokenBook(pool, OAuthServer(AppCredentials.from_settings(configured)))
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            a, b = [await install_pair(http, book, name, CLIENT_ID) for name in names]
        await book.oauth.aclose()
        if slow_a:
            async with pool.acquire() as conn:
                await portal_store.save(conn, a, slow_config(), by="test", expected_version=None)
        await (await channel.get_queue(CRM_SYNC_URGENT.name)).purge()
        alpha, beta = (sandbox.named[name].portal for name in names)
        portals = Portals(alpha, beta, a, b, configured)
        try:
            yield portals
        finally:
            await channel.queue_delete(portals.held_a)
            await pool.execute(
                "DELETE FROM bitrix24_app_portals WHERE member_id = ANY($1::text[])", [a, b]
            )
            await pool.execute("DELETE FROM portal_configs WHERE portal = $1", a)


async def wire_then_collect(runtime: Runtime) -> None:
    """crm_sync's wiring, then a garbage collection before the broker starts: the drains set up
    at start (`recover`) must survive it (the broker holds a held queue's subscriber weakly)."""
    await wire(runtime)
    gc.collect()


@contextlib.asynccontextmanager
async def crm_sync(settings: Settings) -> AsyncIterator[None]:
    stop = asyncio.Event()
    service = asyncio.create_task(
        serve("crm_sync", settings, wire_then_collect, stop=stop, prefetch=200)
    )
    try:
        yield
    finally:
        stop.set()
        await service


async def publish_all(settings: Settings, actions: list[RouteAction]) -> None:
    broker = make_broker(settings.rabbitmq_url.get_secret_value())
    await broker.connect()
    try:
        for action in actions:
            await publish(broker, action)
    finally:
        await broker.stop()


async def declare_held(channel: AbstractChannel, portals: Portals) -> AbstractQueue:
    """A's held queue of `crm_sync.urgent`, as a run declares it."""
    return await channel.declare_queue(
        portals.held_a,
        durable=True,
        arguments={
            "x-queue-type": "quorum",
            "x-dead-letter-exchange": DLX,
            "x-dead-letter-routing-key": CRM_SYNC_URGENT.name,
        },
    )


async def put_held(
    channel: AbstractChannel, held: AbstractQueue, actions: list[RouteAction]
) -> None:
    """`actions` into the held queue `held`, as a run parks them."""
    for action in actions:
        message = Message(
            action.model_dump_json().encode(),
            message_id=str(action.event_id),
            correlation_id=action.correlation_id,
            content_type="application/json",
            delivery_mode=DeliveryMode.PERSISTENT,
        )
        await channel.default_exchange.publish(message, routing_key=held.name)


async def test_a_portal_at_its_ceiling_does_not_slow_another_portals_urgent_write(
    pool: asyncpg.Pool, settings: Settings, channel: AbstractChannel
) -> None:
    async with installed(pool, settings, channel, slow_a=True) as portals:
        backlog = [urgent_lead(portals.key_a, 1 + n % 12, 9000 + n) for n in range(BACKLOG)]
        b_lead = urgent_lead(portals.key_b, 1, 9999)
        await publish_all(portals.settings, [*backlog, b_lead])
        held_before = held_total()
        async with crm_sync(portals.settings):

            async def b_written() -> bool:
                return await done(pool, [b_lead]) == 1

            await until(b_written, "B's urgent lead written")
            a_done = await done(pool, backlog)
            waiting = await channel.declare_queue(portals.held_a, passive=True)
            # B's lead went while most of A's backlog, queued ahead of it, still waited in A's
            # held queue at A's ceiling (one request every two seconds).
            assert a_done < BACKLOG
            assert (waiting.declaration_result.message_count or 0) > 0
            assert held_total() > held_before
            assert portals_held() >= 1

            async def a_written() -> bool:
                return await done(pool, backlog) == BACKLOG

            await until(a_written, "every one of A's leads written")

            async def released() -> bool:
                return portals_held() == 0

            await until(released, "A let through again once its held queue is empty")

        # Every one of A's leads exactly once, on A; B's on B.
        a_leads = leads_by_origin(portals.a)
        assert {action.action_id: a_leads[action.action_id] for action in backlog} == {
            action.action_id: 1 for action in backlog
        }
        assert leads_by_origin(portals.b) == Counter({b_lead.action_id: 1})


async def test_a_held_queue_left_with_messages_is_drained_at_start(
    pool: asyncpg.Pool, settings: Settings, channel: AbstractChannel
) -> None:
    """A run stopped (crashed) with A's messages in A's held queue: the next run drains them,
    and A's new messages wait behind them until it is empty."""
    async with installed(pool, settings, channel, slow_a=False) as portals:
        left = [urgent_lead(portals.key_a, n, 9100 + n) for n in range(1, 4)]
        await put_held(channel, await declare_held(channel, portals), left)
        new = urgent_lead(portals.key_a, 5, 9200)
        async with crm_sync(portals.settings):
            await publish_all(portals.settings, [new])

            async def written() -> bool:
                return await done(pool, [*left, new]) == len(left) + 1

            await until(written, "A's left-over and new leads written")

            async def released() -> bool:
                return portals_held() == 0

            await until(released, "A let through once its held queue is empty")
            emptied = await channel.declare_queue(portals.held_a, passive=True)
            assert emptied.declaration_result.message_count == 0
        a_leads = leads_by_origin(portals.a)
        assert [a_leads[action.action_id] for action in [*left, new]] == [1, 1, 1, 1]


async def test_an_empty_held_queue_left_by_an_earlier_run_is_drained_too(
    pool: asyncpg.Pool, settings: Settings, channel: AbstractChannel
) -> None:
    """A's held queue is empty at start, its messages in the hands of a process still stopping
    (a rolling restart): they come back to it after start and are drained all the same, and A
    stays open meanwhile."""
    async with installed(pool, settings, channel, slow_a=False) as portals:
        held = await declare_held(channel, portals)
        returned = [urgent_lead(portals.key_a, n, 9300 + n) for n in range(1, 3)]
        async with crm_sync(portals.settings):
            b_lead = urgent_lead(portals.key_b, 1, 9399)
            await publish_all(portals.settings, [b_lead])

            async def started() -> bool:
                return await done(pool, [b_lead]) == 1

            await until(started, "crm_sync consuming (B's lead written)")
            assert portals_held() == 0
            await put_held(channel, held, returned)

            async def written() -> bool:
                return await done(pool, returned) == len(returned)

            await until(written, "A's messages back in its held queue written")
            emptied = await channel.declare_queue(portals.held_a, passive=True)
            assert emptied.declaration_result.message_count == 0
        a_leads = leads_by_origin(portals.a)
        assert [a_leads[action.action_id] for action in returned] == [1, 1]


async def test_a_held_queue_another_replica_parked_into_and_left_is_drained(
    pool: asyncpg.Pool, settings: Settings, channel: AbstractChannel
) -> None:
    """A's held queue appears after this process started, its messages parked there by a
    replica since scaled down (nobody here ever held A): the next look at the served portals'
    held queues (every `APP_PORTALS_RELOAD_S`) drains them."""
    async with installed(pool, settings, channel, slow_a=False) as portals:
        parked = [urgent_lead(portals.key_a, n, 9500 + n) for n in range(1, 3)]
        async with crm_sync(portals.settings):
            b_lead = urgent_lead(portals.key_b, 1, 9599)
            await publish_all(portals.settings, [b_lead])

            async def started() -> bool:
                return await done(pool, [b_lead]) == 1

            await until(started, "crm_sync consuming (B's lead written)")
            held = await declare_held(channel, portals)
            await put_held(channel, held, parked)

            async def written() -> bool:
                return await done(pool, parked) == len(parked)

            await until(written, "the messages another replica parked written")
        a_leads = leads_by_origin(portals.a)
        assert [a_leads[action.action_id] for action in parked] == [1, 1]
