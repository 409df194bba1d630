"""Sales closed (dispatch): a won sales deal reaches ingest by its deal event, the won stage's
robot or the stage-history sweep, and goes out once as `sale.closed`; against the sandbox portal
over HTTP (its ASGI app as the REST client's transport, its outgoing events posted to ingest's
app), real PostgreSQL and RabbitMQ."""

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

from services.ingest.api import create_app as ingest_app
from services.ingest.closed_sales import SaleAnnouncer, StagesOutdatedError
from services.ingest.hydrator import FieldCatalog, Hydrator, ItemReader
from services.ingest.sale_reads import STAGES_REFRESH_S, FunnelCatalog, ProductRowReader
from services.ingest.sales import sale_event_id
from services.ingest.sweep import Sweeper
from services.sandbox.app import create_app as sandbox_app
from services.sandbox.limits import Limits
from services.sandbox.portal import SandboxPortal
from services.sandbox.schema import StageDef, deal_funnel
from services.sandbox.seed import seed_demo
from shared.bitrix24 import Bitrix24Client, MemoryRateBudget
from shared.events import PortalRef, SaleClosed, WebhookReceived
from shared.messaging import make_broker, subscribe
from shared.outbox import Outbox, OutboxRelay
from shared.portal_config import PortalConfig
from shared.settings import SANDBOX_APP_TOKEN, Settings
from shared.topology import INGEST_HYDRATE
from tests.support import FakeClock, capture, with_sales
from tests.support.paths import EXAMPLE_CONFIG

FORM = {"Content-Type": "application/x-www-form-urlencoded"}
DEAL = 2
SALES = 3
"""The sales funnel dispatch watches (stages C3:NEW, C3:WON success, C3:LOSE failure)."""
OTHER = 0
"""The default funnel: sales, but not watched."""
NPS_FUNNEL = 20
LASER, CRYO = 101, 102
DEAL_EVENTS = ("ONCRMDEALADD", "ONCRMDEALUPDATE", "ONCRMDEALMOVETOCATEGORY")


@pytest.fixture
def portal() -> SandboxPortal:
    """The portal on a clock each change moves on by a second (`tick`): Bitrix24's event `ts`
    keeps seconds, and two events of one deal within a second are one event to ingest."""
    portal = SandboxPortal(
        application_token=SANDBOX_APP_TOKEN,
        member_id=uuid.uuid4().hex,
        limits=Limits.off(),
        clock=FakeClock(time.time()),
    )
    seed_demo(portal, config_path=EXAMPLE_CONFIG, contacts=3, seed=7)
    portal.state.entity_types[DEAL].categories.append(deal_funnel(SALES, "Equipment sales"))
    portal.crm.add_product(LASER, "Laser A", 1_250_000.0)
    portal.crm.add_product(CRYO, "Cryo B", 640_000.0)
    portal.register_handler("http://ingest/webhooks/bitrix24", DEAL_EVENTS)
    return portal


@pytest.fixture
def config(portal_config: PortalConfig, portal: SandboxPortal) -> PortalConfig:
    section = portal_config.portal.model_copy(update={"member_id": portal.member_id})
    return with_sales(portal_config.model_copy(update={"portal": section}), SALES)


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
async def ingest(
    settings: Settings, config: PortalConfig, pool: asyncpg.Pool, outbox: Outbox
) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=ingest_app(settings, config, pool, outbox))
    async with httpx.AsyncClient(transport=transport, base_url="http://ingest") as client:
        yield client


def tick(portal: SandboxPortal) -> None:
    clock = portal.clock
    assert isinstance(clock, FakeClock)
    clock.now += 1


def sale(portal: SandboxPortal, category: int = SALES, stage: str = "NEW", **values: Any) -> int:
    """A sales deal of contact 1 and company-less, responsible 32, with a laser and two cryo
    units sold, at `stage` of `category` (`C<category>:` added outside the default funnel)."""
    prefix = "" if category == 0 else f"C{category}:"
    tick(portal)
    deal = portal.crm.add(
        DEAL,
        {
            "CATEGORY_ID": category,
            "STAGE_ID": f"{prefix}{stage}",
            "CONTACT_ID": 1,
            "ASSIGNED_BY_ID": 32,
            **values,
        },
        method="test",
    )
    tick(portal)
    portal.crm.set_product_rows(
        "D",
        deal["ID"],
        [{"productId": LASER, "quantity": 1}, {"productId": CRYO, "quantity": 2}],
        method="test",
    )
    return int(deal["ID"])


def move(portal: SandboxPortal, deal_id: int, stage: str, **values: Any) -> None:
    tick(portal)
    portal.crm.update(DEAL, deal_id, {"STAGE_ID": stage, **values}, method="test")


async def deliver(portal: SandboxPortal, ingest: httpx.AsyncClient) -> list[tuple[str, str]]:
    """Post the sandbox's pending outgoing events to ingest, as Bitrix24's queue would."""
    statuses = []
    for delivery in portal.take_outbox():
        response = await ingest.post("/webhooks/bitrix24", content=delivery.body, headers=FORM)
        statuses.append((delivery.event, response.json()["status"]))
    return statuses


async def received(pool: asyncpg.Pool, portal: SandboxPortal) -> list[WebhookReceived]:
    """The portal's `webhook.received` waiting in the outbox (no relay runs), taken out."""
    rows = await pool.fetch(
        """DELETE FROM outbox WHERE routing_key = 'webhook.received'
           AND body->'portal'->>'member_id' = $1 RETURNING id, body""",
        portal.member_id,
    )
    return [
        WebhookReceived.model_validate(json.loads(row["body"]))
        for row in sorted(rows, key=lambda row: row["id"])
    ]


async def hydrate(pool: asyncpg.Pool, portal: SandboxPortal, hydrator: Hydrator) -> int:
    """Hand the portal's waiting `webhook.received` to the hydrator; how many there were."""
    events = await received(pool, portal)
    for event in events:
        await hydrator.handle(event)
    return len(events)


async def sales_closed(pool: asyncpg.Pool, portal: SandboxPortal) -> list[SaleClosed]:
    rows = await pool.fetch(
        """SELECT body FROM outbox WHERE routing_key = 'sale.closed'
           AND body->'portal'->>'member_id' = $1 ORDER BY id""",
        portal.member_id,
    )
    return [SaleClosed.model_validate(json.loads(row["body"])) for row in rows]


def product_row_reads(portal: SandboxPortal) -> list[dict[str, Any]]:
    calls: list[dict[str, Any]] = portal.calls_report(method="crm.item.productrow.list")["calls"]
    return calls


# --- deal events -----------------------------------------------------------------------------


async def test_a_won_sales_deal_goes_out_once_as_sale_closed_through_rabbitmq(
    pool: asyncpg.Pool,
    outbox: Outbox,
    portal: SandboxPortal,
    hydrator: Hydrator,
    ingest: httpx.AsyncClient,
    amqp_url: str,
    channel: AbstractChannel,
) -> None:
    await pool.execute("DELETE FROM outbox")  # what earlier tests left would reach this hydrator
    broker = make_broker(amqp_url)
    subscribe(broker, INGEST_HYDRATE, WebhookReceived, hydrator.handle)
    await broker.start()
    relay = asyncio.create_task(OutboxRelay(pool, broker, poll_s=0.2).run(outbox))
    try:
        async with capture(channel, "sale.closed") as captured:
            deal_id = sale(portal)
            move(portal, deal_id, "C3:WON")
            assert await deliver(portal, ingest) == [
                ("ONCRMDEALADD", "accepted"),
                ("ONCRMDEALUPDATE", "accepted"),  # the product rows' amount
                ("ONCRMDEALUPDATE", "accepted"),  # the move to the success stage
            ]
            [body] = await captured.wait_for(1)
    finally:
        relay.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await relay
        await broker.stop()
    event = SaleClosed.model_validate(body)
    portal_ref = PortalRef(member_id=portal.member_id)
    assert event.event_id == sale_event_id(portal_ref, deal_id)
    assert (event.source, event.deal_id, event.category_id, event.stage_id) == (
        "event",
        deal_id,
        SALES,
        "C3:WON",
    )
    assert (event.contact_id, event.company_id, event.responsible_id) == (1, None, 32)
    assert [(p.product_id, p.name, p.quantity) for p in event.products] == [
        (LASER, "Laser A", 1),
        (CRYO, "Cryo B", 2),
    ]
    assert event.closed_at.tzinfo is not None
    row = await pool.fetchrow(
        "SELECT source, stage_id, event_id FROM ingest_sales WHERE portal = $1 AND deal_id = $2",
        portal_ref.key,
        deal_id,
    )
    assert row is not None
    assert (row["source"], row["stage_id"], row["event_id"]) == ("event", "C3:WON", event.event_id)


async def test_a_sale_updated_again_is_not_announced_again_nor_its_products_read(
    pool: asyncpg.Pool, portal: SandboxPortal, hydrator: Hydrator, ingest: httpx.AsyncClient
) -> None:
    deal_id = sale(portal)
    move(portal, deal_id, "C3:WON")
    await deliver(portal, ingest)
    assert await hydrate(pool, portal, hydrator) == 3  # ADD, the rows' amount, the move
    [first] = await sales_closed(pool, portal)
    assert len(product_row_reads(portal)) == 1
    tick(portal)
    portal.crm.update(DEAL, deal_id, {"TITLE": "Paid in full"}, method="test")
    assert await deliver(portal, ingest) == [("ONCRMDEALUPDATE", "accepted")]
    assert await hydrate(pool, portal, hydrator) == 1
    assert await sales_closed(pool, portal) == [first]
    assert len(product_row_reads(portal)) == 1  # announced before: nothing more is read


async def test_deals_not_won_or_of_a_funnel_not_watched_announce_nothing(
    pool: asyncpg.Pool, portal: SandboxPortal, hydrator: Hydrator, ingest: httpx.AsyncClient
) -> None:
    sale(portal)  # in progress
    lost = sale(portal)
    move(portal, lost, "C3:LOSE")
    sale(portal, category=OTHER, stage="WON")  # won, in a funnel dispatch does not watch
    portal.crm.add(DEAL, {"CATEGORY_ID": NPS_FUNNEL, "CONTACT_ID": 1}, method="test")
    await deliver(portal, ingest)
    assert await hydrate(pool, portal, hydrator) >= 4
    assert await sales_closed(pool, portal) == []
    assert product_row_reads(portal) == []


async def test_a_won_deal_moved_into_the_sales_funnel_counts(
    pool: asyncpg.Pool, portal: SandboxPortal, hydrator: Hydrator, ingest: httpx.AsyncClient
) -> None:
    deal_id = sale(portal, category=OTHER, stage="WON")
    await deliver(portal, ingest)
    await hydrate(pool, portal, hydrator)
    assert await sales_closed(pool, portal) == []
    tick(portal)
    portal.crm.update(DEAL, deal_id, {"CATEGORY_ID": SALES, "STAGE_ID": "C3:WON"}, method="test")
    assert await deliver(portal, ingest) == [("ONCRMDEALMOVETOCATEGORY", "accepted")]
    assert await hydrate(pool, portal, hydrator) == 1
    [event] = await sales_closed(pool, portal)
    assert (event.deal_id, event.category_id, event.stage_id) == (deal_id, SALES, "C3:WON")


async def test_a_deal_moved_into_the_nps_funnel_is_read_like_an_update(
    pool: asyncpg.Pool, portal: SandboxPortal, hydrator: Hydrator, ingest: httpx.AsyncClient
) -> None:
    deal_id = sale(portal, category=OTHER, UF_CRM_NPS_SCORE=9)
    await deliver(portal, ingest)
    await hydrate(pool, portal, hydrator)
    tick(portal)
    portal.crm.update(
        DEAL, deal_id, {"CATEGORY_ID": NPS_FUNNEL, "STAGE_ID": "C20:NEW"}, method="test"
    )
    assert await deliver(portal, ingest) == [("ONCRMDEALMOVETOCATEGORY", "accepted")]
    assert await hydrate(pool, portal, hydrator) == 1
    [row] = await pool.fetch(
        """SELECT body FROM outbox WHERE routing_key = 'form.submitted'
           AND body->'portal'->>'member_id' = $1""",
        portal.member_id,
    )
    form = json.loads(row["body"])
    assert (form["item_id"], form["category_id"], form["answers"][0]["score"]) == (
        deal_id,
        NPS_FUNNEL,
        9,
    )


async def test_the_product_rows_of_concurrent_sales_are_read_in_one_request(
    pool: asyncpg.Pool, portal: SandboxPortal, hydrator: Hydrator
) -> None:
    deals = [sale(portal, stage="WON") for _ in range(3)]
    portal.take_outbox()
    events = [
        WebhookReceived(
            correlation_id=f"corr-{deal_id}",
            portal=PortalRef(member_id=portal.member_id),
            source="event",
            event="ONCRMDEALUPDATE",
            entity_type_id=DEAL,
            item_id=deal_id,
            ts=1,
        )
        for deal_id in deals
    ]
    await asyncio.gather(*(hydrator.handle(event) for event in events))
    assert sorted(event.deal_id for event in await sales_closed(pool, portal)) == deals
    reads = product_row_reads(portal)
    assert len(reads) == 3
    assert len({read["batch"] for read in reads}) == 1  # three commands, one batch request
    assert reads[0]["batch"] is not None


# --- the won stage's robot --------------------------------------------------------------------


async def robot_call(
    ingest: httpx.AsyncClient, portal: SandboxPortal, deal_id: int, category: int = SALES
) -> dict[str, Any]:
    response = await ingest.post(
        "/webhooks/bitrix24/robot",
        params={
            "application_token": SANDBOX_APP_TOKEN,
            "member_id": portal.member_id,
            "entity_type_id": DEAL,
            "id": deal_id,
            "category_id": category,
        },
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_the_won_stages_robot_announces_the_sale_once(
    pool: asyncpg.Pool, portal: SandboxPortal, hydrator: Hydrator, ingest: httpx.AsyncClient
) -> None:
    deal_id = sale(portal)  # the robot's placement decides, not the stage
    portal.take_outbox()  # no deal events: the portal sends only the robot's calls
    assert (await robot_call(ingest, portal, deal_id))["status"] == "accepted"
    assert (await robot_call(ingest, portal, deal_id))["status"] == "accepted"
    assert await hydrate(pool, portal, hydrator) == 2
    [event] = await sales_closed(pool, portal)
    assert (event.source, event.deal_id, event.stage_id, event.contact_id) == (
        "robot",
        deal_id,
        "C3:NEW",
        1,
    )
    assert len(event.products) == 2


async def test_a_robot_for_a_deal_outside_the_sales_funnels_announces_nothing(
    pool: asyncpg.Pool, portal: SandboxPortal, hydrator: Hydrator, ingest: httpx.AsyncClient
) -> None:
    moved = sale(portal, category=OTHER, stage="WON")  # the robot says sales, the deal is not
    other = sale(portal, category=OTHER, stage="WON")
    portal.take_outbox()
    assert (await robot_call(ingest, portal, moved))["status"] == "accepted"
    ignored = await robot_call(ingest, portal, other, category=OTHER)
    assert ignored == {
        "status": "ignored",
        "reason": f"deal category {OTHER} is neither a sales funnel under dispatch.sales"
        f" ({SALES}) nor a deal survey's funnel ({NPS_FUNNEL})",
    }
    assert await hydrate(pool, portal, hydrator) == 1
    assert await sales_closed(pool, portal) == []


# --- the stage-history sweep -------------------------------------------------------------------


async def test_the_sweep_finds_a_sale_whose_event_was_lost(
    pool: asyncpg.Pool,
    outbox: Outbox,
    portal: SandboxPortal,
    b24: Bitrix24Client,
    config: PortalConfig,
    hydrator: Hydrator,
    ingest: httpx.AsyncClient,
) -> None:
    sweeper = Sweeper(pool, outbox, b24, config)
    assert (await sweeper.sweep_once()).initialised
    announced = sale(portal)
    move(portal, announced, "C3:WON")
    await deliver(portal, ingest)
    await hydrate(pool, portal, hydrator)
    lost = sale(portal)
    move(portal, lost, "C3:WON")
    sale(portal, category=OTHER, stage="WON")  # another funnel's history is not listed
    portal.take_outbox()  # the events are lost: ingest was down
    result = await sweeper.sweep_once()
    assert (result.listed, result.submitted) == (2, 1)
    [submitted] = await received(pool, portal)
    assert (submitted.source, submitted.event, submitted.item_id, submitted.fields) == (
        "sweep",
        "SWEEP",
        lost,
        None,
    )
    await hydrator.handle(submitted)
    assert [(e.deal_id, e.source) for e in await sales_closed(pool, portal)] == [
        (announced, "event"),
        (lost, "sweep"),
    ]
    again = await sweeper.sweep_once()
    assert (again.listed, again.submitted) == (2, 0)
    key = PortalRef(member_id=portal.member_id).key
    watermark = await pool.fetchval(
        """SELECT watermark FROM ingest_sweep_watermarks
           WHERE portal = $1 AND entity_type_id = 2 AND scope = $2""",
        key,
        f"stagehistory:{SALES}",
    )
    assert watermark is not None
    assert watermark > datetime.now(UTC) - timedelta(minutes=5)


async def test_a_funnel_first_swept_starts_from_now(
    pool: asyncpg.Pool,
    outbox: Outbox,
    portal: SandboxPortal,
    b24: Bitrix24Client,
    config: PortalConfig,
) -> None:
    old = sale(portal)
    move(portal, old, "C3:WON")
    sweeper = Sweeper(pool, outbox, b24, config)
    first = await sweeper.sweep_once()
    assert (first.initialised, first.submitted) == (True, 0)
    assert await received(pool, portal) == []
    since = await sweeper.sweep_once(since=datetime.now(UTC) - timedelta(hours=1))
    assert since.submitted == 1  # `nps sweep --since` backfills from an explicit time


# --- the funnel's stages when the deal gives no semantics ---------------------------------------


async def test_without_stage_semantics_the_funnels_stages_decide(
    pool: asyncpg.Pool,
    outbox: Outbox,
    portal: SandboxPortal,
    b24: Bitrix24Client,
    config: PortalConfig,
) -> None:
    clock = FakeClock()
    announcer = SaleAnnouncer(pool, outbox, FunnelCatalog(b24, clock), ProductRowReader(b24))
    won, paid = sale(portal, stage="WON"), sale(portal, stage="NEW")
    event = WebhookReceived(
        correlation_id="corr",
        portal=PortalRef(member_id=portal.member_id),
        source="event",
        event="ONCRMDEALUPDATE",
        entity_type_id=DEAL,
        item_id=won,
    )

    def read(deal_id: int) -> dict[str, Any]:
        """The deal as a portal without `stageSemanticId` gives it."""
        item = portal.crm.records(DEAL)[deal_id]
        return {
            "id": deal_id,
            "categoryId": item["CATEGORY_ID"],
            "stageId": item["STAGE_ID"],
            "contactId": item["CONTACT_ID"],
            "updatedTime": "2024-07-22T18:00:00+03:00",
        }

    assert (await announcer.announce(event, read(won), config)).outcome == "sale_closed"
    status_reads = portal.calls_report(method="crm.status.list")["calls"]
    assert len(status_reads) == 1
    # A success stage added to the funnel since its stages were read: the deal at it waits
    # (retried) until the stages may be read again, then counts.
    funnel = next(c for c in portal.state.entity_types[DEAL].categories if c.id == SALES)
    funnel.stages.append(StageDef(status_id="C3:PAID", name="Paid", sort=35, semantics="S"))
    move(portal, paid, "C3:PAID")
    at_paid = event.model_copy(update={"item_id": paid})
    with pytest.raises(StagesOutdatedError, match="not among the stages of deal category 3"):
        await announcer.announce(at_paid, read(paid), config)
    clock.now += STAGES_REFRESH_S
    announced = await announcer.announce(at_paid, read(paid), config)
    assert (announced.outcome, announced.sale and announced.sale.stage_id) == (
        "sale_closed",
        "C3:PAID",
    )
    assert len(portal.calls_report(method="crm.status.list")["calls"]) == 2
    unknown = event.model_copy(update={"item_id": won})
    clock.now += STAGES_REFRESH_S
    odd = {**read(won), "stageId": "C3:GONE"}
    gone = await announcer.announce(unknown, odd, config)
    assert (gone.outcome, gone.reason) == (
        "not_a_sale",
        "stage C3:GONE is not among the stages of deal category 3 (crm.status.list)",
    )


async def test_a_sale_with_more_than_a_page_of_product_rows_carries_them_all(
    pool: asyncpg.Pool, portal: SandboxPortal, hydrator: Hydrator, ingest: httpx.AsyncClient
) -> None:
    deal_id = sale(portal, stage="WON")
    rows = [{"productId": LASER if i % 2 else CRYO, "quantity": i + 1} for i in range(61)]
    tick(portal)
    portal.crm.set_product_rows("D", deal_id, rows, method="test")
    portal.take_outbox()
    assert (await robot_call(ingest, portal, deal_id))["status"] == "accepted"
    assert await hydrate(pool, portal, hydrator) == 1
    [event] = await sales_closed(pool, portal)
    assert [p.quantity for p in event.products] == [i + 1 for i in range(61)]
    assert len(product_row_reads(portal)) == 2  # the batch command, then the second page
