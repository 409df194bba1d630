"""Offline intake against the sandbox (its offline queue, the application installed on a named
portal, ASGI in process), the real PostgreSQL and RabbitMQ: events queued while nothing listens
are stored once each through the webhook's path and published as `webhook.received`; a puller
killed between storing and clearing, or between reserving and recording its batch, loses
nothing and stores nothing twice once it runs again; two pullers at once store each event once;
the schedule backs off while the queue is empty; an inbound webhook's refusal stops the intake
with the setting named."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import httpx
import pytest
from aio_pika.abc import AbstractChannel
from prometheus_client import REGISTRY

from services.ingest.offline import (
    OfflineIntake,
    OfflineUnavailableError,
    PortalPuller,
    ServedOffline,
    served_portals,
)
from services.sandbox.app import create_app
from services.sandbox.limits import Limits
from services.sandbox.portals import PortalSpec, Sandbox
from shared.bitrix24 import Bitrix24Client, MemoryRateBudget
from shared.bitrix24.tokens import TokenBook
from shared.events import PortalRef
from shared.messaging import make_broker
from shared.outbox import Outbox, OutboxRelay
from shared.portal_config import PortalConfig
from shared.portals import PortalClients, PortalConfigs
from tests.support import T0, FakeClock, capture, forget_served_portal
from tests.support.app import (
    APP,
    ROOT,
    app_registration,
    book_client,
    install_pair,
    sandbox_for,
    token_book,
)

CLIENT_ID = "local.nps.1"
SECRET = "app-secret-0ff1"
REGISTRATION = app_registration(CLIENT_ID, SECRET, handler_url=f"{APP}/app/frame")
LEASE_S = 0.3


class CrashError(Exception):
    """The puller's process killed at a fault point."""


def crash_at(stage: str) -> Any:
    async def fault(at: str) -> None:
        if at == stage:
            raise CrashError(at)

    return fault


@dataclass
class World:
    sandbox: Sandbox
    clock: FakeClock
    transport: httpx.AsyncBaseTransport
    http: httpx.AsyncClient
    name: str
    book: TokenBook
    pool: asyncpg.Pool

    @property
    def member_id(self) -> str:
        return self.sandbox.named[self.name].portal.member_id

    @property
    def portal(self) -> PortalRef:
        return PortalRef(member_id=self.member_id)

    def client(self) -> Bitrix24Client:
        return book_client(self.book, self.member_id, self.transport)

    async def deals(self, count: int) -> list[int]:
        """`count` deals added on the portal while nothing listens: queued offline."""
        async with self.client() as api:
            return [
                int((await api.call("crm.deal.add", {"fields": {"TITLE": f"d{i}"}})).result)
                for i in range(count)
            ]

    async def queued(self) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        start: int | None = 0
        async with self.client() as api:
            while start is not None:
                page = await api.call("event.offline.list", {"start": start})
                rows.extend(page.result)
                start = page.next
        return rows

    async def stored(self) -> list[int]:
        """The deals ingest stored (one `ingest_events` row each, or more: a failure)."""
        rows = await self.pool.fetch(
            "SELECT item_id FROM ingest_events WHERE portal = $1 ORDER BY item_id", self.member_id
        )
        return [row["item_id"] for row in rows]

    async def open_batches(self) -> int:
        count: int = await self.pool.fetchval(
            "SELECT count(*) FROM ingest_offline_batches WHERE portal = $1", self.member_id
        )
        return count


@pytest.fixture
async def world(pool: asyncpg.Pool) -> AsyncIterator[World]:
    clock = FakeClock(T0)
    sandbox = sandbox_for(REGISTRATION, clock)
    name = f"off-{uuid.uuid4().hex[:8]}"
    sandbox.add(PortalSpec(name=name, limits=Limits.off()))
    stub = httpx.MockTransport(lambda _request: httpx.Response(200, text="ok"))
    transport = httpx.ASGITransport(app=create_app(sandbox, event_transport=stub))
    book = token_book(pool, transport, clock, CLIENT_ID, SECRET)
    async with httpx.AsyncClient(transport=transport, base_url=ROOT) as http:
        await install_pair(http, book, name, CLIENT_ID)
        world = World(sandbox, clock, transport, http, name, book, pool)
        async with world.client() as api:
            for event in ("ONCRMDEALADD", "ONCRMDEALUPDATE"):
                await api.call("event.bind", {"event": event, "event_type": "offline"})
        yield world
    await book.oauth.aclose()


def puller(world: World, outbox: Outbox, **options: Any) -> PortalPuller:
    return PortalPuller(world.pool, outbox, world.portal, lease_s=LEASE_S, **options)


async def drain(world: World, worker: PortalPuller, config: PortalConfig) -> int:
    """Pull until the queue is empty; how many pulls it took."""
    pulls = 0
    async with world.client() as api:
        while True:
            pulls += 1
            if await worker.pull(api, config) == "empty":
                return pulls


async def published(
    world: World, channel: AbstractChannel, amqp_url: str, expected: int
) -> list[int]:
    """Publish the outbox to RabbitMQ and return the deals of this portal's `webhook.received`
    (waiting for `expected` of them, then a moment for any extra one)."""
    broker = make_broker(amqp_url)
    await broker.start()
    try:
        async with capture(channel, "webhook.received") as captured:
            relay = OutboxRelay(world.pool, broker)
            while (await relay.publish_pending())[0]:
                pass

            def mine() -> list[dict[str, Any]]:
                return [
                    body
                    for body in captured.bodies
                    if body["portal"]["member_id"] == world.member_id
                ]

            async with asyncio.timeout(10):
                while len(mine()) < expected:
                    await asyncio.sleep(0.02)
            await asyncio.sleep(0.3)
            bodies = mine()
    finally:
        await broker.stop()
    assert {(b["source"], b["event"], b["entity_type_id"]) for b in bodies} <= {
        ("event", "ONCRMDEALADD", 2)
    }
    return sorted(body["item_id"] for body in bodies)


def counted(outcome: str) -> float:
    value = REGISTRY.get_sample_value("nps_ingest_offline_events_total", {"outcome": outcome})
    return value or 0.0


async def test_events_queued_while_nothing_listens_are_drained_once(
    world: World,
    outbox: Outbox,
    portal_config: PortalConfig,
    channel: AbstractChannel,
    amqp_url: str,
) -> None:
    deals = await world.deals(60)
    assert len(await world.queued()) == 60
    accepted = counted("accepted")

    pulls = await drain(world, puller(world, outbox), portal_config)

    assert pulls == 3  # a full batch of 50, the other 10, then an empty queue
    assert await world.stored() == deals
    assert await world.queued() == []
    assert await world.open_batches() == 0
    assert counted("accepted") - accepted == 60
    row = await world.pool.fetchrow(
        "SELECT source, event, ts, payload FROM ingest_events WHERE portal = $1 AND item_id = $2",
        world.member_id,
        deals[0],
    )
    assert row is not None
    assert (row["source"], row["event"], row["ts"]) == ("event", "ONCRMDEALADD", int(T0))
    payload = json.loads(row["payload"])
    assert payload["data"] == {"FIELDS": {"ID": str(deals[0])}}
    assert set(payload["offline"]) == {"id", "message_id"}
    assert await published(world, channel, amqp_url, 60) == deals

    # Pulled again, nothing: the queue is empty and nothing is stored twice.
    assert await drain(world, puller(world, outbox), portal_config) == 1
    assert await world.stored() == deals


async def test_a_puller_killed_between_storing_and_clearing_stores_nothing_twice(
    world: World,
    outbox: Outbox,
    portal_config: PortalConfig,
    channel: AbstractChannel,
    amqp_url: str,
) -> None:
    deals = await world.deals(20)
    with pytest.raises(CrashError):
        await drain(world, puller(world, outbox, fault=crash_at("stored")), portal_config)
    assert await world.stored() == deals
    assert await world.open_batches() == 1
    queued = await world.queued()
    assert len(queued) == 20
    assert len({row["PROCESS_ID"] for row in queued}) == 1
    later = await world.deals(5)  # changes while ingest is down
    duplicates = counted("duplicate")

    # The restarted puller waits for the dead one's lease, reads its batch again with the same
    # process id (every event a duplicate), clears it, then takes what came since.
    restarted = puller(world, outbox)
    async with world.client() as api:
        assert await restarted.pull(api, portal_config) == "some"  # a new batch: the 5
        assert await world.stored() == sorted(deals + later)
        await asyncio.sleep(LEASE_S)
        assert await restarted.pull(api, portal_config) == "full"  # the left batch read again
    assert counted("duplicate") - duplicates == 20
    assert await drain(world, restarted, portal_config) == 1
    assert await world.stored() == sorted(deals + later)
    assert await world.queued() == []
    assert await world.open_batches() == 0
    assert await published(world, channel, amqp_url, 25) == sorted(deals + later)


async def test_a_puller_killed_before_recording_its_batch_loses_nothing(
    world: World,
    outbox: Outbox,
    portal_config: PortalConfig,
    channel: AbstractChannel,
    amqp_url: str,
) -> None:
    deals = await world.deals(7)
    with pytest.raises(CrashError):
        await drain(world, puller(world, outbox, fault=crash_at("reserved")), portal_config)
    assert await world.stored() == []
    assert await world.open_batches() == 0
    assert {row["PROCESS_ID"] for row in await world.queued()} != {""}  # reserved, no row

    # The restarted puller finds the reserved batch no row names and adopts it; once the lease
    # it gave the (dead) reserver has run out, it reads the batch and stores it.
    restarted = puller(world, outbox)
    async with world.client() as api:
        assert await restarted.pull(api, portal_config) == "empty"
        assert await world.open_batches() == 1
        await asyncio.sleep(LEASE_S)
        assert await restarted.pull(api, portal_config) == "full"
    assert await world.stored() == deals
    assert await world.queued() == []
    assert await world.open_batches() == 0
    assert await published(world, channel, amqp_url, 7) == deals


async def test_two_pullers_at_once_store_each_event_once(
    world: World,
    outbox: Outbox,
    portal_config: PortalConfig,
    channel: AbstractChannel,
    amqp_url: str,
) -> None:
    first = await world.deals(30)
    with pytest.raises(CrashError):
        await drain(world, puller(world, outbox, fault=crash_at("stored")), portal_config)
    more = await world.deals(170)
    await asyncio.sleep(LEASE_S)  # the crashed batch is up for the taking by either

    one, two = puller(world, outbox), puller(world, outbox)
    pulls = await asyncio.gather(drain(world, one, portal_config), drain(world, two, portal_config))

    assert all(count >= 2 for count in pulls)  # both took batches
    assert await world.stored() == sorted(first + more)
    assert await world.queued() == []
    assert await world.open_batches() == 0
    assert await published(world, channel, amqp_url, 200) == sorted(first + more)


async def test_the_intake_backs_off_while_the_queue_is_empty(
    world: World, outbox: Outbox, portal_config: PortalConfig
) -> None:
    now = [0.0]
    async with world.client() as api:
        served = [ServedOffline(world.portal, api, portal_config)]

        async def portals() -> list[ServedOffline]:
            return served

        intake = OfflineIntake(
            world.pool, outbox, portals, 5.0, 30.0, lease_s=LEASE_S, clock=lambda: now[0]
        )
        deals = await world.deals(3)
        waits = []
        for _ in range(5):
            waits.append(await intake.round())
            now[0] += waits[-1]
        assert waits == [5.0, 10.0, 20.0, 30.0, 30.0]
        assert await world.stored() == deals
        more = await world.deals(2)
        now[0] += 30.0
        assert await intake.round() == 5.0  # events again: back to the base interval
        assert await world.stored() == sorted(deals + more)
        assert await intake.round() == 5.0  # not due yet: nothing pulled, the same schedule


async def test_an_inbound_webhook_cannot_pull_and_the_intake_stops_naming_the_setting(
    world: World, outbox: Outbox, portal_config: PortalConfig
) -> None:
    portal = world.sandbox.named[world.name].portal
    webhook = Bitrix24Client(
        f"{ROOT}/p/{world.name}/rest/1/{portal.secret}/", MemoryRateBudget(None), world.transport
    )
    async with webhook:
        served = [ServedOffline(world.portal, webhook, portal_config)]

        async def portals() -> list[ServedOffline]:
            return served

        intake = OfflineIntake(world.pool, outbox, portals, 5.0, 30.0)
        with pytest.raises(OfflineUnavailableError, match=r"INGEST_OFFLINE: .*inbound webhook"):
            await intake.run(asyncio.Event())


async def test_a_plan_without_reservations_is_refused_and_nothing_is_taken(
    world: World, outbox: Outbox, portal_config: PortalConfig
) -> None:
    answer = await world.http.put(
        f"/p/{world.name}/sandbox/app", json={"features": {"rest_offline_extended": False}}
    )
    assert answer.status_code == 200, answer.text
    deals = await world.deals(2)
    refused = REGISTRY.get_sample_value("nps_ingest_offline_pulls_total", {"outcome": "refused"})
    async with world.client() as api:
        served = [ServedOffline(world.portal, api, portal_config)]

        async def portals() -> list[ServedOffline]:
            return served

        intake = OfflineIntake(world.pool, outbox, portals, 5.0, 30.0, clock=lambda: 0.0)
        assert await intake.round() == 5.0  # backed off like a failure, ingest goes on
    after = REGISTRY.get_sample_value("nps_ingest_offline_pulls_total", {"outcome": "refused"})
    assert (after or 0.0) - (refused or 0.0) == 1
    assert await world.stored() == []
    assert [int(row["EVENT_DATA"]["FIELDS"]["ID"]) for row in await world.queued()] == deals


async def test_a_record_that_cannot_be_read_is_reported_as_an_error_and_the_rest_stored(
    world: World, outbox: Outbox, portal_config: PortalConfig
) -> None:
    deals = await world.deals(2)
    # A record no deal event could be read from (no id): pushed into the portal's queue as the
    # portal would keep it.
    queue = world.sandbox.named[world.name].portal.state.app.offline
    broken = queue.push("ONCRMDEALUPDATE", {"FIELDS": {}}, user_id=1, connector="", now=T0)

    assert await drain(world, puller(world, outbox), portal_config) == 2
    assert await world.stored() == deals
    assert [
        (row["MESSAGE_ID"], row["ERROR"], row["PROCESS_ID"]) for row in await world.queued()
    ] == [(broken.message_id, "1", "")]
    assert await world.open_batches() == 0


async def test_the_portals_come_from_the_runtimes_providers(
    world: World, portal_config: PortalConfig
) -> None:
    async with world.client() as api:
        configs = PortalConfigs({world.member_id: portal_config})
        clients = [PortalClients({world.member_id: api})]
        by_key = served_portals(world.pool, lambda: configs, lambda: clients[0])
        assert await by_key() == [ServedOffline(world.portal, api, portal_config)]
        # Asked again each round: a portal installed since (a client, no configuration yet) is
        # skipped, the others pulled.
        clients[0] = PortalClients({"m-new": api, world.member_id: api})
        assert await by_key() == [ServedOffline(world.portal, api, portal_config)]
        configs = PortalConfigs({world.member_id: portal_config, "m-new": portal_config})
        assert [p.portal.key for p in await by_key()] == ["m-new", world.member_id]

        unpinned = portal_config.model_copy(
            update={"portal": portal_config.portal.model_copy(update={"member_id": None})}
        )
        await forget_served_portal(world.pool)
        one = served_portals(
            world.pool, lambda: PortalConfigs.one(unpinned), lambda: PortalClients.one(api)
        )
        assert await one() == []  # the one portal not known yet: nothing to stamp events with
        pinned = unpinned.model_copy(
            update={"portal": unpinned.portal.model_copy(update={"member_id": "m-pinned"})}
        )
        one = served_portals(
            world.pool, lambda: PortalConfigs.one(pinned), lambda: PortalClients.one(api)
        )
        assert await one() == [ServedOffline(PortalRef(member_id="m-pinned"), api, pinned)]
