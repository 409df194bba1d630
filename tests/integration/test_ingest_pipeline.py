"""Hydrator and catch-up sweep against real PostgreSQL and RabbitMQ (smart-process items and NPS
deals), with the sandbox portal as Bitrix24 (its ASGI app as the REST client's transport; its
outgoing events posted to ingest)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest
from aio_pika.abc import AbstractChannel
from faststream.rabbit import RabbitBroker
from prometheus_client import REGISTRY

from services.harness.scratch import scratch_database, scratch_name
from services.ingest import read, store
from services.ingest.api import create_app as ingest_app
from services.ingest.contacts import ContactManagers
from services.ingest.hydrator import FieldCatalog, FieldsOutdatedError, Hydrator, ItemReader
from services.ingest.mapping import Answer
from services.ingest.sweep import SWEEP_LOCK, Sweeper
from services.sandbox.app import create_app as sandbox_app
from services.sandbox.limits import Limits
from services.sandbox.methods import CONTACT
from services.sandbox.portal import SandboxPortal
from services.sandbox.schema import EnumItem
from services.sandbox.seed import add_answer_items, seed_demo
from shared.bitrix24 import Bitrix24Client, MemoryRateBudget
from shared.db import Conn, create_pool
from shared.events import FormSubmitted, PortalRef, ProductAnswer, WebhookReceived
from shared.messaging import REASON_HEADER, PermanentError, make_broker, publish, subscribe
from shared.outbox import Outbox, OutboxRelay
from shared.portal_config import PortalConfig
from shared.settings import SANDBOX_APP_TOKEN, Settings
from shared.topology import INGEST_HYDRATE
from tests.support import Captured, capture, forget_served_portal
from tests.support.paths import EXAMPLE_CONFIG

FORM = {"Content-Type": "application/x-www-form-urlencoded"}
NPS = 1038
CRYO_SCORE_IDS = {score: 2001 + score for score in range(11)}  # the demo seed's list items


@pytest.fixture
def portal() -> SandboxPortal:
    portal = SandboxPortal(
        application_token=SANDBOX_APP_TOKEN, member_id=uuid.uuid4().hex, limits=Limits.off()
    )
    seed_demo(portal, config_path=EXAMPLE_CONFIG, contacts=3, seed=7)
    portal.register_handler("http://ingest/webhooks/bitrix24")
    return portal


@pytest.fixture
def config(portal_config: PortalConfig, portal: SandboxPortal) -> PortalConfig:
    section = portal_config.portal.model_copy(update={"member_id": portal.member_id})
    return portal_config.model_copy(update={"portal": section})


@pytest.fixture
async def b24(portal: SandboxPortal) -> AsyncIterator[Bitrix24Client]:
    transport = httpx.ASGITransport(app=sandbox_app(portal))
    base_url = f"http://sandbox/rest/{portal.user_id}/{portal.secret}/"
    async with Bitrix24Client(base_url, MemoryRateBudget(None), transport=transport) as client:
        yield client


@pytest.fixture
def hydrator(
    pool: asyncpg.Pool, outbox: Outbox, b24: Bitrix24Client, config: PortalConfig
) -> Hydrator:
    return Hydrator(pool, outbox, ItemReader(b24), FieldCatalog(b24), config)


@pytest.fixture
async def broker(amqp_url: str, channel: AbstractChannel) -> AsyncIterator[RabbitBroker]:
    broker = make_broker(amqp_url)
    yield broker
    await broker.stop()


@pytest.fixture
async def relay(pool: asyncpg.Pool, outbox: Outbox, broker: RabbitBroker) -> AsyncIterator[None]:
    """The outbox relay running against the real broker for the test's duration. Rows earlier
    tests left unpublished are dropped first: published here, they would reach this test's
    hydrator, whose portal calls send the sandbox's pending events before the test does."""
    await pool.execute("DELETE FROM outbox")
    await broker.connect()
    task = asyncio.create_task(OutboxRelay(pool, broker, poll_s=0.2).run(outbox))
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def answer_item(portal: SandboxPortal, **values: Any) -> int:
    [item_id] = add_answer_items(portal, [{"TITLE": "answer", "CONTACT_ID": 1, **values}])
    return item_id


async def deliver_events(portal: SandboxPortal, ingest: httpx.AsyncClient) -> list[str]:
    """Post the sandbox's pending outgoing events to ingest, as Bitrix24's queue would."""
    statuses = []
    for delivery in portal.take_outbox():
        response = await ingest.post("/webhooks/bitrix24", content=delivery.body, headers=FORM)
        statuses.append(response.json()["status"])
    return statuses


def event_for(portal: SandboxPortal, item_id: int, **changes: Any) -> WebhookReceived:
    values: dict[str, Any] = {
        "correlation_id": f"corr-{item_id}",
        "portal": PortalRef(member_id=portal.member_id),
        "source": "event",
        "event": "ONCRMDYNAMICITEMADD",
        "entity_type_id": NPS,
        "item_id": item_id,
        "ts": 1,
    }
    return WebhookReceived(**{**values, **changes})


async def answers_of(captured: Captured, member_id: str) -> list[dict[str, Any]]:
    """Wait for this portal's answers (the relay also publishes what earlier tests left)."""
    count = 1
    while True:
        bodies = await captured.wait_for(count)
        mine = [b for b in bodies if b["portal"]["member_id"] == member_id]
        if mine:
            return mine
        count = len(bodies) + 1


async def forms(pool: asyncpg.Pool, portal: SandboxPortal) -> list[dict[str, Any]]:
    """form.submitted bodies for this portal still in the outbox (no relay running)."""
    rows = await pool.fetch(
        """SELECT body FROM outbox WHERE routing_key = 'form.submitted'
           AND body->'portal'->>'member_id' = $1 ORDER BY id""",
        portal.member_id,
    )
    return [json.loads(row["body"]) for row in rows]


async def sweeps(pool: asyncpg.Pool, portal: SandboxPortal) -> list[dict[str, Any]]:
    rows = await pool.fetch(
        """SELECT body FROM outbox WHERE routing_key = 'webhook.received'
           AND body->>'source' = 'sweep' AND body->'portal'->>'member_id' = $1 ORDER BY id""",
        portal.member_id,
    )
    return [json.loads(row["body"]) for row in rows]


async def test_cosmetics_item_with_three_ticked_products_flows_to_three_answers(
    settings: Settings,
    config: PortalConfig,
    pool: asyncpg.Pool,
    portal: SandboxPortal,
    hydrator: Hydrator,
    broker: RabbitBroker,
    channel: AbstractChannel,
    outbox: Outbox,
    relay: None,
) -> None:
    subscribe(broker, INGEST_HYDRATE, WebhookReceived, hydrator.handle)
    await broker.start()
    item_id = answer_item(
        portal,
        CATEGORY_ID=10,
        UF_CRM_5_SERUM_TESTED=True,
        UF_CRM_5_SERUM_SCORE=9,
        UF_CRM_5_CREAM_TESTED=True,
        UF_CRM_5_MASK_TESTED=True,
        UF_CRM_5_MASK_SCORE=4,
        UF_CRM_5_COMMENT="Mask dried my skin",
    )
    async with (
        capture(channel, "form.submitted") as captured,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=ingest_app(settings, config, pool, outbox)),
            base_url="http://ingest",
        ) as ingest,
    ):
        assert await deliver_events(portal, ingest) == ["accepted"]
        [form] = await answers_of(captured, portal.member_id)
    assert (form["item_id"], form["category_id"], form["kind"], form["segment"]) == (
        item_id,
        10,
        "cosmetics",
        "Cosmetics",
    )
    assert [(a["sku"], a["score"]) for a in form["answers"]] == [
        ("COS-SERUM", 9),
        ("COS-CREAM", None),
        ("COS-MASK", 4),
    ]
    assert form["comment"] == "Mask dried my skin"
    assert form["contact_id"] == 1
    assert form["portal"]["member_id"] == portal.member_id


async def test_out_of_scale_score_is_dead_lettered_with_the_reason(
    portal: SandboxPortal,
    hydrator: Hydrator,
    broker: RabbitBroker,
    channel: AbstractChannel,
) -> None:
    subscribe(broker, INGEST_HYDRATE, WebhookReceived, hydrator.handle)
    await broker.start()
    item_id = answer_item(portal, CATEGORY_ID=12, UF_CRM_5_SCORE=11)
    await publish(broker, event_for(portal, item_id))
    queue = await channel.get_queue(INGEST_HYDRATE.dlq)
    message = None
    for _ in range(100):
        message = await queue.get(fail=False)
        if message is not None:
            break
        await asyncio.sleep(0.1)
    assert message is not None, "nothing reached the DLQ"
    await message.ack()
    reason = str(message.headers[REASON_HEADER])
    assert f"item {item_id}: field UF_CRM_5_SCORE holds 11" in reason
    assert "from 0 to 10" in reason


async def test_enumeration_score_is_resolved_to_its_number(
    pool: asyncpg.Pool, portal: SandboxPortal, hydrator: Hydrator
) -> None:
    item_id = answer_item(portal, CATEGORY_ID=14, UF_CRM_5_CRYO_SCORE=CRYO_SCORE_IDS[7])
    await hydrator.handle(event_for(portal, item_id))
    [form] = await forms(pool, portal)
    assert form["answers"] == [{"sku": "EQ-CRYO-B", "name": "Cryo B", "score": 7}]


async def test_a_list_item_added_later_is_found_after_a_refresh(
    pool: asyncpg.Pool, portal: SandboxPortal, b24: Bitrix24Client, config: PortalConfig
) -> None:
    now = [0.0]
    hydrator = Hydrator(
        pool, Outbox(), ItemReader(b24), FieldCatalog(b24, clock=lambda: now[0]), config
    )
    first = answer_item(portal, CATEGORY_ID=14, UF_CRM_5_CRYO_SCORE=CRYO_SCORE_IDS[4])
    await hydrator.handle(event_for(portal, first))
    etype = portal.crm.entity_type(NPS)
    assert etype is not None
    etype.fields["UF_CRM_5_CRYO_SCORE"].items.append(EnumItem(id=3000, value="9"))
    second = answer_item(portal, CATEGORY_ID=14, UF_CRM_5_CRYO_SCORE=3000)
    with pytest.raises(FieldsOutdatedError, match="UF_CRM_5_CRYO_SCORE holds 3000"):
        await hydrator.handle(event_for(portal, second))
    now[0] = 61.0
    await hydrator.handle(event_for(portal, second))
    assert [f["answers"][0]["score"] for f in await forms(pool, portal)] == [4, 9]
    reads = portal.calls_report(method="crm.item.fields")["calls"]
    assert len(reads) == 2


async def test_equipment_answer_carries_people_comment_and_service_flag(
    pool: asyncpg.Pool, portal: SandboxPortal, hydrator: Hydrator
) -> None:
    item_id = answer_item(
        portal,
        CATEGORY_ID=12,
        UF_CRM_5_SCORE=2,
        UF_CRM_5_TO_SERVICE=True,
        UF_CRM_5_COMMENT="Broken after a week",
        ASSIGNED_BY_ID=31,
    )
    await hydrator.handle(event_for(portal, item_id))
    [form] = await forms(pool, portal)
    assert form["answers"] == [{"sku": "EQ-LASER-A", "name": "Laser A", "score": 2}]
    assert (form["service_request"], form["comment"]) == (True, "Broken after a week")
    assert (form["contact_id"], form["responsible_id"], form["scale"]) == (1, 31, "0-10")
    assert form["causation_id"] is not None


async def test_redelivery_and_repeated_reads_publish_once(
    pool: asyncpg.Pool, portal: SandboxPortal, hydrator: Hydrator
) -> None:
    item_id = answer_item(portal, CATEGORY_ID=12, UF_CRM_5_SCORE=8)
    event = event_for(portal, item_id)
    await hydrator.handle(event)
    await hydrator.handle(event)
    await hydrator.handle(event_for(portal, item_id, event="ONCRMDYNAMICITEMUPDATE", ts=2))
    assert len(await forms(pool, portal)) == 1


async def test_a_changed_item_is_published_again(
    pool: asyncpg.Pool, portal: SandboxPortal, hydrator: Hydrator
) -> None:
    item_id = answer_item(portal, CATEGORY_ID=12, UF_CRM_5_SCORE=8)
    await hydrator.handle(event_for(portal, item_id))
    portal.crm.update(NPS, item_id, {"UF_CRM_5_SCORE": 3}, method="test")
    await hydrator.handle(event_for(portal, item_id, event="ONCRMDYNAMICITEMUPDATE", ts=2))
    assert [f["answers"][0]["score"] for f in await forms(pool, portal)] == [8, 3]


async def test_an_older_state_arriving_after_a_newer_one_publishes_nothing(
    pool: asyncpg.Pool, portal: SandboxPortal, hydrator: Hydrator
) -> None:
    def robot(score: int, updated: str) -> WebhookReceived:
        fields = {
            "id": 7,
            "categoryId": 12,
            "UF_CRM_5_SCORE": score,
            "createdTime": "2024-07-22T18:00:00Z",
            "updatedTime": updated,
        }
        return event_for(portal, 7, source="robot", fields=fields)

    await hydrator.handle(robot(9, "2024-07-22T19:00:00Z"))
    await hydrator.handle(robot(3, "2024-07-22T18:30:00Z"))
    assert [f["answers"][0]["score"] for f in await forms(pool, portal)] == [9]


async def test_missing_item_is_dropped(
    pool: asyncpg.Pool, portal: SandboxPortal, hydrator: Hydrator
) -> None:
    await hydrator.handle(event_for(portal, 987_654))
    assert await forms(pool, portal) == []


async def test_unreadable_robot_score_is_permanent(
    portal: SandboxPortal, hydrator: Hydrator
) -> None:
    fields = {
        "id": 6,
        "categoryId": 12,
        "UF_CRM_5_SCORE": "ten",
        "createdTime": "2024-07-22T18:00:00Z",
        "updatedTime": "2024-07-22T18:00:00Z",
    }
    with pytest.raises(PermanentError, match=r"item 6: field UF_CRM_5_SCORE holds 'ten'"):
        await hydrator.handle(event_for(portal, 6, source="robot", fields=fields))


async def test_concurrent_events_share_one_read(
    pool: asyncpg.Pool, portal: SandboxPortal, hydrator: Hydrator
) -> None:
    ids = [answer_item(portal, CATEGORY_ID=12, UF_CRM_5_SCORE=s) for s in range(6)]
    await asyncio.gather(*(hydrator.handle(event_for(portal, item_id)) for item_id in ids))
    reads = portal.calls_report(method="crm.item.list")["calls"]
    assert len(reads) == 1
    assert sorted(f["item_id"] for f in await forms(pool, portal)) == ids


async def test_sweep_submits_an_item_whose_event_never_arrived(
    pool: asyncpg.Pool,
    portal: SandboxPortal,
    b24: Bitrix24Client,
    config: PortalConfig,
    hydrator: Hydrator,
) -> None:
    sweeper = Sweeper(pool, Outbox(), b24, config)
    first = await sweeper.sweep_once()
    assert first.initialised
    item_id = answer_item(portal, CATEGORY_ID=12, UF_CRM_5_SCORE=10)
    portal.take_outbox()  # the event is lost: ingest was down
    result = await sweeper.sweep_once()
    assert (result.listed, result.submitted) == (1, 1)
    [submitted] = await sweeps(pool, portal)
    event = WebhookReceived.model_validate(submitted)
    assert (event.item_id, event.event, event.fields is not None) == (item_id, "SWEEP", True)
    item = portal.crm.get(NPS, item_id)
    assert item is not None
    assert event.ts == int(datetime.fromisoformat(str(item["UPDATED_TIME"])).timestamp())
    await hydrator.handle(event)
    [form] = await forms(pool, portal)
    assert (form["item_id"], form["answers"][0]["score"]) == (item_id, 10)
    again = await sweeper.sweep_once()
    assert (again.listed, again.submitted) == (1, 0)
    assert result.watermark is not None
    assert again.watermark == result.watermark


async def test_sweep_leaves_items_whose_event_arrived(
    settings: Settings,
    pool: asyncpg.Pool,
    portal: SandboxPortal,
    b24: Bitrix24Client,
    config: PortalConfig,
) -> None:
    seen = answer_item(portal, CATEGORY_ID=12, UF_CRM_5_SCORE=5)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=ingest_app(settings, config, pool, Outbox())),
        base_url="http://ingest",
    ) as ingest:
        assert await deliver_events(portal, ingest) == ["accepted"]
    lost = answer_item(portal, CATEGORY_ID=10, UF_CRM_5_PEEL_TESTED=True)
    portal.take_outbox()
    since = datetime.now(UTC) - timedelta(hours=1)
    result = await Sweeper(pool, Outbox(), b24, config).sweep_once(since=since)
    assert (result.listed, result.submitted) == (2, 1)
    assert [s["item_id"] for s in await sweeps(pool, portal)] == [lost]
    assert seen != lost


async def test_sweep_keeps_to_the_learned_portal_whatever_event_came_last(
    settings: Settings,
    pool: asyncpg.Pool,
    portal: SandboxPortal,
    b24: Bitrix24Client,
    portal_config: PortalConfig,
) -> None:
    """Unpinned: the sweep works for the portal ingest learned from its first event, not for
    whichever portal the newest stored event names (say, a row from before the upgrade)."""
    await forget_served_portal(pool)
    try:
        answer_item(portal, CATEGORY_ID=12, UF_CRM_5_SCORE=5)
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=ingest_app(settings, portal_config, pool, Outbox())),
            base_url="http://ingest",
        ) as ingest:
            assert await deliver_events(portal, ingest) == ["accepted"]
        invented = PortalRef(member_id=uuid.uuid4().hex)
        stray = WebhookReceived(
            correlation_id=str(uuid.uuid4()),
            portal=invented,
            source="event",
            event="ONCRMDYNAMICITEMADD",
            entity_type_id=NPS,
            item_id=1,
        )
        async with pool.acquire() as conn:
            assert await store.record_received(Outbox(), conn, stray, {})
        lost = answer_item(portal, CATEGORY_ID=12, UF_CRM_5_SCORE=9)
        portal.take_outbox()
        since = datetime.now(UTC) - timedelta(hours=1)
        result = await Sweeper(pool, Outbox(), b24, portal_config).sweep_once(since=since)
        assert (result.listed, result.submitted) == (2, 1)
        assert [s["item_id"] for s in await sweeps(pool, portal)] == [lost]
        assert not await pool.fetchval(
            "SELECT count(*) FROM ingest_events WHERE member_id = $1 AND source = 'sweep'",
            invented.member_id,
        )
    finally:
        await forget_served_portal(pool)


async def test_one_sweeper_at_a_time(
    pool: asyncpg.Pool, b24: Bitrix24Client, config: PortalConfig
) -> None:
    async with pool.acquire() as holder:
        await holder.execute("SELECT pg_advisory_lock($1)", SWEEP_LOCK)
        try:
            result = await Sweeper(pool, Outbox(), b24, config).sweep_once()
        finally:
            await holder.execute("SELECT pg_advisory_unlock($1)", SWEEP_LOCK)
    assert not result.ran


async def test_without_a_known_portal_the_sweep_waits_for_the_first_event(
    pg_server: str, b24: Bitrix24Client, portal_config: PortalConfig
) -> None:
    """No `portal.member_id` and no event yet: submitting under a guessed portal key would
    count the same answers twice once events arrive, so the sweep does nothing."""
    async with scratch_database(pg_server, scratch_name("test_fresh")) as dsn:
        fresh = await create_pool(dsn)
        try:
            assert portal_config.portal.member_id is None
            result = await Sweeper(fresh, Outbox(), b24, portal_config).sweep_once()
            assert not result.ran
            assert await fresh.fetchval("SELECT count(*) FROM ingest_sweep_watermarks") == 0
        finally:
            await fresh.close()


@pytest.fixture
def contact_config(config: PortalConfig) -> PortalConfig:
    """The portal config with `survey.manager: contact`."""
    return config.model_copy(
        update={"survey": config.survey.model_copy(update={"manager": "contact"})}
    )


async def test_the_manager_is_the_contacts_responsible_when_configured(
    pool: asyncpg.Pool, portal: SandboxPortal, b24: Bitrix24Client, contact_config: PortalConfig
) -> None:
    contacts = ContactManagers(b24)
    hydrator = Hydrator(
        pool, Outbox(), ItemReader(b24), FieldCatalog(b24), contact_config, contacts=contacts
    )
    portal.crm.update(CONTACT, 1, {"ASSIGNED_BY_ID": 41}, method="test")
    portal.crm.update(CONTACT, 2, {"ASSIGNED_BY_ID": 43}, method="test")
    items = [
        answer_item(portal, CATEGORY_ID=12, UF_CRM_5_SCORE=2, ASSIGNED_BY_ID=31),
        answer_item(portal, CATEGORY_ID=12, UF_CRM_5_SCORE=9, CONTACT_ID=2, ASSIGNED_BY_ID=31),
        answer_item(portal, CATEGORY_ID=12, UF_CRM_5_SCORE=7, CONTACT_ID=None, ASSIGNED_BY_ID=31),
    ]
    before = len(portal.calls_report(method="crm.contact.list")["calls"])
    await asyncio.gather(*(hydrator.handle(event_for(portal, item)) for item in items))
    people = {
        f["item_id"]: (f["contact_id"], f["responsible_id"]) for f in await forms(pool, portal)
    }
    assert people == {items[0]: (1, 41), items[1]: (2, 43), items[2]: (None, None)}
    # The two look-ups of the moment share one read.
    assert len(portal.calls_report(method="crm.contact.list")["calls"]) == before + 1


async def test_the_manager_is_the_items_responsible_by_default(
    pool: asyncpg.Pool, portal: SandboxPortal, hydrator: Hydrator
) -> None:
    portal.crm.update(CONTACT, 1, {"ASSIGNED_BY_ID": 41}, method="test")
    item_id = answer_item(portal, CATEGORY_ID=12, UF_CRM_5_SCORE=2, ASSIGNED_BY_ID=31)
    await hydrator.handle(event_for(portal, item_id))
    [form] = await forms(pool, portal)
    assert (form["contact_id"], form["responsible_id"]) == (1, 31)


async def test_a_contact_gone_leaves_the_answer_without_a_manager(
    pool: asyncpg.Pool, portal: SandboxPortal, b24: Bitrix24Client, contact_config: PortalConfig
) -> None:
    hydrator = Hydrator(
        pool,
        Outbox(),
        ItemReader(b24),
        FieldCatalog(b24),
        contact_config,
        contacts=ContactManagers(b24),
    )
    item_id = answer_item(
        portal, CATEGORY_ID=12, UF_CRM_5_SCORE=2, CONTACT_ID=999, ASSIGNED_BY_ID=31
    )
    await hydrator.handle(event_for(portal, item_id))
    [form] = await forms(pool, portal)
    assert (form["contact_id"], form["responsible_id"]) == (999, None)


def test_contact_managers_need_a_reader(
    pool: asyncpg.Pool, b24: Bitrix24Client, contact_config: PortalConfig
) -> None:
    with pytest.raises(ValueError, match=r"survey\.manager: contact"):
        Hydrator(pool, Outbox(), ItemReader(b24), FieldCatalog(b24), contact_config)


async def test_the_sweep_loop_reports_when_it_last_swept(
    pool: asyncpg.Pool, b24: Bitrix24Client, config: PortalConfig
) -> None:
    """What the "catch-up sweep not running" alert compares: the newest sweep and the interval."""
    stop = asyncio.Event()
    loop = asyncio.create_task(Sweeper(pool, Outbox(), b24, config).run(0.05, stop))
    await asyncio.sleep(0.3)
    later = time.time()
    await asyncio.sleep(0.5)
    stop.set()
    await loop
    last_run = REGISTRY.get_sample_value("nps_ingest_sweep_last_run_timestamp_seconds")
    assert last_run is not None
    assert last_run >= later
    assert REGISTRY.get_sample_value("nps_ingest_sweep_interval_seconds") == 0.05


# --- NPS deals: deal events and the sweep bring answered NPS deals in ----------------------

DEAL = 2
NPS_FUNNEL = 20


def sale_and_nps_deal(portal: SandboxPortal, **answer: Any) -> tuple[int, int]:
    """A won sale of manager 32 and its NPS deal (responsible 31), answered with `answer`."""
    sale = portal.crm.add(
        DEAL,
        {"CATEGORY_ID": 0, "STAGE_ID": "WON", "CONTACT_ID": 1, "ASSIGNED_BY_ID": 32},
        method="test",
    )
    nps = portal.crm.add(
        DEAL,
        {
            "CATEGORY_ID": NPS_FUNNEL,
            "CONTACT_ID": 1,
            "ASSIGNED_BY_ID": 31,
            "UF_CRM_NPS_SALE_DEAL": sale["ID"],
        },
        method="test",
    )
    if answer:
        portal.crm.update(DEAL, nps["ID"], answer, method="test")
    return sale["ID"], nps["ID"]


def deal_event(portal: SandboxPortal, deal_id: int) -> WebhookReceived:
    return event_for(portal, deal_id, entity_type_id=DEAL, event="ONCRMDEALUPDATE")


async def test_deal_events_are_accepted_by_the_webhook(
    settings: Settings,
    config: PortalConfig,
    pool: asyncpg.Pool,
    portal: SandboxPortal,
    broker: RabbitBroker,
) -> None:
    sale_and_nps_deal(portal, UF_CRM_NPS_SCORE=9)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=ingest_app(settings, config, pool, Outbox())),
        base_url="http://ingest",
    ) as ingest:
        statuses = []
        for delivery in portal.take_outbox():
            response = await ingest.post("/webhooks/bitrix24", content=delivery.body, headers=FORM)
            statuses.append((delivery.event, response.json()["status"]))
    assert statuses == [
        ("ONCRMDEALADD", "accepted"),
        ("ONCRMDEALADD", "accepted"),
        ("ONCRMDEALUPDATE", "accepted"),
    ]


async def test_an_answered_nps_deal_is_published_with_the_sales_managers_name(
    pool: asyncpg.Pool, portal: SandboxPortal, hydrator: Hydrator
) -> None:
    _, deal_id = sale_and_nps_deal(portal, UF_CRM_NPS_SCORE=3, UF_CRM_NPS_COMMENT="Late")
    await hydrator.handle(deal_event(portal, deal_id))
    [form] = await forms(pool, portal)
    assert (form["entity_type_id"], form["item_id"], form["category_id"]) == (DEAL, deal_id, 20)
    assert (form["kind"], form["segment"], form["comment"]) == ("deal", "After the sale", "Late")
    assert (form["contact_id"], form["responsible_id"]) == (1, 32)
    assert [(a["sku"], a["score"]) for a in form["answers"]] == [("DEAL-SALES", 3)]


async def test_sales_deals_and_unanswered_nps_deals_publish_nothing(
    pool: asyncpg.Pool, portal: SandboxPortal, hydrator: Hydrator
) -> None:
    sale_id, deal_id = sale_and_nps_deal(portal)
    await hydrator.handle(deal_event(portal, sale_id))
    await hydrator.handle(deal_event(portal, deal_id))
    await hydrator.handle(deal_event(portal, 9999))
    assert await forms(pool, portal) == []


async def test_the_sweep_recovers_a_lost_deal_event(
    pool: asyncpg.Pool,
    portal: SandboxPortal,
    b24: Bitrix24Client,
    config: PortalConfig,
    hydrator: Hydrator,
) -> None:
    # No sales funnel watched (dispatch): only the NPS funnel's deals are swept.
    sweeper = Sweeper(pool, Outbox(), b24, config.model_copy(update={"dispatch": None}))
    assert (await sweeper.sweep_once()).initialised
    sale_and_nps_deal(portal)  # opened, not answered: listed, but no answer
    _, deal_id = sale_and_nps_deal(portal, UF_CRM_NPS_SCORE=10)
    portal.take_outbox()  # the events are lost: ingest was down
    result = await sweeper.sweep_once(since=datetime.now(UTC) - timedelta(hours=1))
    assert result.listed == 2  # the NPS funnel only: the sales deals are not listed
    submitted = [WebhookReceived.model_validate(s) for s in await sweeps(pool, portal)]
    assert sorted(s.entity_type_id for s in submitted) == [DEAL, DEAL]
    for event in submitted:
        await hydrator.handle(event)
    [form] = await forms(pool, portal)
    assert (form["item_id"], form["answers"][0]["score"]) == (deal_id, 10)


async def test_the_sweeper_reads_the_names_of_the_managers_answers_name(
    pool: asyncpg.Pool,
    portal: SandboxPortal,
    b24: Bitrix24Client,
    config: PortalConfig,
    hydrator: Hydrator,
) -> None:
    sweeper = Sweeper(pool, Outbox(), b24, config)
    assert (await sweeper.sweep_once()).initialised
    named = answer_item(portal, CATEGORY_ID=12, UF_CRM_5_SCORE=9, ASSIGNED_BY_ID=31)
    gone = answer_item(portal, CATEGORY_ID=12, UF_CRM_5_SCORE=3, ASSIGNED_BY_ID=9999)
    portal.take_outbox()
    await sweeper.sweep_once()
    for submitted in await sweeps(pool, portal):
        await hydrator.handle(WebhookReceived.model_validate(submitted))
    key = PortalRef(member_id=portal.member_id).key
    async with pool.acquire() as conn:
        assert await read.user_names(conn, key) == {}
        wanted = await conn.fetch(
            "SELECT user_id FROM ingest_users WHERE portal = $1 ORDER BY user_id", key
        )
    assert [row["user_id"] for row in wanted] == [31, 9999]
    await sweeper.sweep_once()
    async with pool.acquire() as conn:
        assert await read.user_names(conn, key) == {}  # the names are read on their own turn
    stop = asyncio.Event()
    names = asyncio.create_task(sweeper.run_names(0.05, stop))
    try:
        async with asyncio.timeout(10):
            while not await pool.fetchval(
                "SELECT bool_and(refreshed_at IS NOT NULL) FROM ingest_users WHERE portal = $1",
                key,
            ):
                await asyncio.sleep(0.05)
    finally:
        stop.set()
        await names
    async with pool.acquire() as conn:
        assert await read.user_names(conn, key) == {31: "Anna Petrova"}
        assert await read.user_names(conn, "another-portal") == {}
        first = await conn.fetch(
            "SELECT user_id, refreshed_at FROM ingest_users WHERE portal = $1 ORDER BY user_id", key
        )
    assert named != gone
    assert all(row["refreshed_at"] is not None for row in first)
    assert await sweeper.refresh_names() == 0
    async with pool.acquire() as conn:
        again = await conn.fetch(
            "SELECT user_id, refreshed_at FROM ingest_users WHERE portal = $1 ORDER BY user_id", key
        )
    assert again == first  # read again only once stale (the unknown user too)


async def rereads(pool: asyncpg.Pool, portal: SandboxPortal) -> list[WebhookReceived]:
    """The reads ingest asked for after a tie, still in the outbox (no relay running)."""
    rows = await pool.fetch(
        """SELECT body FROM outbox WHERE routing_key = 'webhook.received'
           AND body->>'source' = 'reread' AND body->'portal'->>'member_id' = $1 ORDER BY id""",
        portal.member_id,
    )
    return [WebhookReceived.model_validate_json(row["body"]) for row in rows]


class TestStatesWithinOneSecond:
    """Bitrix24's updatedTime keeps seconds: two states of an item saved within one second."""

    @pytest.fixture
    def portal(self) -> SandboxPortal:
        """A portal whose clock stands still: every save carries the same updatedTime."""
        still = time.time()
        portal = SandboxPortal(
            application_token=SANDBOX_APP_TOKEN,
            member_id=uuid.uuid4().hex,
            limits=Limits.off(),
            clock=lambda: still,
        )
        seed_demo(portal, config_path=EXAMPLE_CONFIG, contacts=3, seed=7)
        return portal

    async def test_a_tie_is_published_with_a_higher_revision_and_read_once_more(
        self, pool: asyncpg.Pool, portal: SandboxPortal, hydrator: Hydrator
    ) -> None:
        item_id = answer_item(portal, CATEGORY_ID=12, UF_CRM_5_SCORE=8)
        await hydrator.handle(event_for(portal, item_id))
        portal.crm.update(NPS, item_id, {"UF_CRM_5_SCORE": 3}, method="test")
        changed = event_for(portal, item_id, event="ONCRMDYNAMICITEMUPDATE", ts=2)
        await hydrator.handle(changed)
        await hydrator.handle(changed)  # a redelivery asks for no second read
        published = await forms(pool, portal)
        assert [(f["answers"][0]["score"], f["revision"]) for f in published] == [(8, 0), (3, 1)]
        assert published[0]["updated_at"] == published[1]["updated_at"]
        [reread] = await rereads(pool, portal)
        assert (reread.item_id, reread.fields, reread.causation_id) == (
            item_id,
            None,
            str(changed.event_id),
        )

        # The read finds the state published last: nothing more, and no further read.
        await hydrator.handle(reread)
        assert len(await forms(pool, portal)) == 2
        assert len(await rereads(pool, portal)) == 1

    async def test_the_read_after_a_tie_publishes_a_state_changed_since(
        self, pool: asyncpg.Pool, portal: SandboxPortal, hydrator: Hydrator
    ) -> None:
        item_id = answer_item(portal, CATEGORY_ID=12, UF_CRM_5_SCORE=8)
        await hydrator.handle(event_for(portal, item_id))
        portal.crm.update(NPS, item_id, {"UF_CRM_5_SCORE": 3}, method="test")
        await hydrator.handle(event_for(portal, item_id, event="ONCRMDYNAMICITEMUPDATE", ts=2))
        # Changed back before the read (its event still on the way): the read publishes it.
        portal.crm.update(NPS, item_id, {"UF_CRM_5_SCORE": 8}, method="test")
        [reread] = await rereads(pool, portal)
        await hydrator.handle(reread)
        published = await forms(pool, portal)
        assert [(f["answers"][0]["score"], f["revision"]) for f in published] == [
            (8, 0),
            (3, 1),
            (8, 2),
        ]
        # The event of that change, read now, finds the state published last.
        await hydrator.handle(event_for(portal, item_id, event="ONCRMDYNAMICITEMUPDATE", ts=3))
        assert len(await forms(pool, portal)) == 3
        assert len(await rereads(pool, portal)) == 1

    async def test_a_state_decided_from_a_last_state_since_replaced_is_not_recorded(
        self, pool: asyncpg.Pool, outbox: Outbox, portal: SandboxPortal
    ) -> None:
        """Two messages decide the revision of their states from the same last state (revision
        0) at once: the first records revision 1, the second finds the last state of the second
        is no longer the one it decided from and records nothing (the hydrator retries it)."""
        cause = event_for(portal, 41)
        outcomes = []
        for score in (9, 2):
            answer = Answer(
                entity_type_id=NPS,
                item_id=41,
                category_id=12,
                segment="Cryo",
                kind="equipment",
                scale="0-10",
                submitted_at=datetime(2026, 3, 5, 10, tzinfo=UTC),
                updated_at=datetime(2026, 3, 5, 10, tzinfo=UTC),
                answers=(ProductAnswer(sku="CRYO", name="Cryo", score=score),),
                revision=1,
            )
            form = FormSubmitted.of(
                answer, portal=cause.portal, **cause.caused("form", answer.fingerprint())
            )
            async with pool.acquire() as conn:
                outcomes.append(
                    await store.record_answer(
                        outbox, conn, "test", str(uuid.uuid4()), answer=answer, form=form, seen=0
                    )
                )
        assert outcomes == ["new", "tie"]
        assert [f["answers"][0]["score"] for f in await forms(pool, portal)] == [9]

    async def test_two_states_recorded_at_once_with_one_revision_conflict(
        self, pool: asyncpg.Pool, outbox: Outbox, portal: SandboxPortal
    ) -> None:
        """Two first states of one second recorded by two messages at the very same time: the
        key on the revision lets one through; the other is told to decide again."""
        cause = event_for(portal, 42)

        def state(score: int) -> tuple[Answer, FormSubmitted]:
            answer = Answer(
                entity_type_id=NPS,
                item_id=42,
                category_id=12,
                segment="Cryo",
                kind="equipment",
                scale="0-10",
                submitted_at=datetime(2026, 3, 5, 10, tzinfo=UTC),
                updated_at=datetime(2026, 3, 5, 10, tzinfo=UTC),
                answers=(ProductAnswer(sku="CRYO", name="Cryo", score=score),),
            )
            envelope = cause.caused("form", answer.fingerprint())
            return answer, FormSubmitted.of(answer, portal=cause.portal, **envelope)

        async def record(conn: Conn, score: int) -> str:
            answer, form = state(score)
            outcome: str = await store.record_answer(
                outbox, conn, "test", str(uuid.uuid4()), answer=answer, form=form
            )
            return outcome

        async with pool.acquire() as first, pool.acquire() as second:
            async with outbox.transaction(first):
                assert await record(first, 9) == "new"
                racing = asyncio.create_task(record(second, 2))
                await asyncio.sleep(0.3)  # the second waits on the first's row
                assert not racing.done()
            assert await racing == "conflict"
        assert [f["answers"][0]["score"] for f in await forms(pool, portal)] == [9]
