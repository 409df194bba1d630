"""200 sales deals won in the sandbox portal → 200 survey requests, each customer asked once:
the request's NPS deal created by crm_sync's writer (over the sandbox's REST API, once per
request by `originId`), its personal link issued by the survey page's intake, one e-mail per
request through a real SMTP server (aiosmtpd, in-process), and every customer asked within
`every_days` skipped with the reason `asked_recently`, never sent. The sales are announced
concurrently (and some twice, as a redelivery would), so the per-contact decisions race as they
do in production. Real PostgreSQL; the test plays the broker, passing each event dispatch,
crm_sync and the survey page queue in the outbox to the handler the topology routes it to."""

from __future__ import annotations

import asyncio
import json
import random
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
import yaml

from services.crm_sync.coalescer import CommandCoalescer
from services.crm_sync.dispatch import DispatchWriter
from services.dispatch.dispatcher import Dispatcher
from services.dispatch.mailer import Mailer
from services.dispatch.settings import DispatchSettings
from services.harness.dispatch_check import send_key
from services.sandbox.crm import DEAL
from services.sandbox.methods import CONTACT
from services.sandbox.portal import SandboxPortal
from services.sandbox.sales import close_sales
from services.survey.intake import IntakeSetup, RequestIntake
from services.survey.page_config import load_page_config
from services.survey.tokens import LinkSigner
from shared.events import (
    CrmWritten,
    DispatchCommand,
    PortalRef,
    SaleClosed,
    SoldProduct,
    SurveyReady,
    SurveyRequestChanged,
    SurveyRequested,
)
from shared.outbox import Outbox
from shared.portal_config import PortalConfig, parse_portal_config
from tests.support.crm_sync import client_for, new_portal
from tests.support.paths import EXAMPLE_CONFIG
from tests.support.smtp import Inbox
from tests.support.survey import DAY, EXAMPLE_PAGE, KEYS

NOW = datetime(2026, 12, 7, 10, 0, tzinfo=UTC)
SALES = 200
SURVEY = "After the sale"
NPS_FUNNEL = 20
BASE_URL = "http://survey.test"


@pytest.fixture
async def clean(pool: asyncpg.Pool) -> None:
    """Dispatch's and the survey page's tables and queued events of earlier tests gone (the
    session's database is this test session's own)."""
    await pool.execute(
        "TRUNCATE dispatch_sends, dispatch_optouts, dispatch_requests, dispatch_campaigns"
    )
    await pool.execute("DELETE FROM outbox")


def sales_config() -> PortalConfig:
    """The example portal YAML asking the deal survey of every won sale of funnel 0 by e-mail,
    at most once per 90 days."""
    data = yaml.safe_load(EXAMPLE_CONFIG.read_text(encoding="utf-8"))
    data["portal"]["timezone"] = "UTC"
    data["dispatch"] = {
        "channel": "email",
        "language": "en",
        "every_days": 90,
        "email": {"sender": "Demo <nps@example.com>"},
        "window": {"start": "09:00", "end": "20:00"},
        "sales": [{"funnel": 0, "survey": SURVEY}],
    }
    return parse_portal_config(data)


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


Handler = Callable[[str, dict[str, Any]], Awaitable[None]]


@dataclass
class Pump:
    """The broker for this test: the outbox's events, oldest first, each to its handler once;
    the events no handler takes are kept (the register's state events)."""

    pool: asyncpg.Pool
    handlers: dict[str, Handler]
    seen: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))
    last: int = 0

    async def drain(self) -> None:
        while True:
            rows = await self.pool.fetch(
                "SELECT id, routing_key, body FROM outbox WHERE id > $1 ORDER BY id LIMIT 500",
                self.last,
            )
            if not rows:
                return
            self.last = rows[-1]["id"]
            handled = [
                self.handlers[row["routing_key"]](row["routing_key"], _body(row["body"]))
                for row in rows
                if row["routing_key"] in self.handlers
            ]
            for row in rows:
                self.seen[row["routing_key"]].append(_body(row["body"]))
            await asyncio.gather(*handled)


def _body(raw: Any) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(raw) if isinstance(raw, str) else dict(raw)
    return body


@dataclass
class World:
    portal: SandboxPortal
    dispatcher: Dispatcher
    pump: Pump
    clock: Clock
    ref: PortalRef

    def sale(self, deal_id: int) -> SaleClosed:
        """The sale as ingest announces it: the deal's contact, responsible and products."""
        deal = self.portal.crm.records(DEAL)[deal_id]
        rows = self.portal.crm.product_rows("D", deal_id)
        return SaleClosed(
            correlation_id=f"deal:{deal_id}",
            portal=self.ref,
            source="event",
            deal_id=deal_id,
            category_id=int(deal["CATEGORY_ID"]),
            stage_id=str(deal["STAGE_ID"]),
            contact_id=deal["CONTACT_ID"],
            responsible_id=deal["ASSIGNED_BY_ID"],
            closed_at=self.clock.now,
            products=tuple(
                SoldProduct(product_id=row["productId"], name=row["productName"]) for row in rows
            ),
        )

    async def announce(self, deal_ids: list[int], concurrency: int = 8) -> None:
        gate = asyncio.Semaphore(concurrency)

        async def one(deal_id: int) -> None:
            async with gate:
                await self.dispatcher.on_sale(self.sale(deal_id))

        await asyncio.gather(*(one(deal_id) for deal_id in deal_ids))

    async def settle(self) -> None:
        """Every event handled and every due send made, as the running services would."""
        for _ in range(50):
            await self.pump.drain()
            looked = await self.dispatcher.tick()
            await self.pump.drain()
            if not looked:
                return
        raise AssertionError("dispatch kept finding due work")


@pytest.fixture
async def world(pool: asyncpg.Pool, inbox: tuple[Inbox, int], clean: None) -> World:
    config = sales_config()
    portal = new_portal(contacts=150)
    client = client_for(portal)
    clock = Clock(NOW)
    settings = DispatchSettings(smtp_port=inbox[1], _env_file=None)
    dispatcher = Dispatcher(
        pool,
        Outbox(),
        config,
        portal=client,
        mailer=Mailer(settings),
        settings=settings,
        clock=clock,
    )
    writer = DispatchWriter(
        pool, Outbox(), CommandCoalescer(client, window_s=0.01), clock=lambda: clock.now
    )

    def stamp() -> float:
        return clock.now.timestamp()

    intake = RequestIntake(
        pool,
        Outbox(),
        IntakeSetup(
            portal=config,
            page=load_page_config(EXAMPLE_PAGE),
            signer=LinkSigner(KEYS, 30 * DAY, clock=stamp),
            base_url=BASE_URL,
        ),
    )

    async def nps_deal(_key: str, body: dict[str, Any]) -> None:
        await writer.carry_out(DispatchCommand.model_validate(body))

    async def written(_key: str, body: dict[str, Any]) -> None:
        await dispatcher.on_written(CrmWritten.model_validate(body))

    async def requested(_key: str, body: dict[str, Any]) -> None:
        await intake.handle(SurveyRequested.model_validate(body))

    async def ready(_key: str, body: dict[str, Any]) -> None:
        await dispatcher.on_ready(SurveyReady.model_validate(body))

    pump = Pump(
        pool,
        {
            "dispatch.nps_deal": nps_deal,
            "crm.written.nps_deal": written,
            "survey.requested": requested,
            "survey.ready": ready,
        },
    )
    ref = PortalRef(member_id=portal.member_id)
    return World(portal, dispatcher, pump, clock, ref)


def earlier_sale(world: World, contact_id: int) -> int:
    """A sale of `contact_id` won before: a deal of funnel 0 at its won stage."""
    deal = world.portal.crm.add(
        DEAL,
        {"TITLE": "An earlier sale", "CATEGORY_ID": 0, "STAGE_ID": "WON", "CONTACT_ID": contact_id},
        method="test",
    )
    return int(deal["ID"])


async def test_two_hundred_won_sales_ask_each_customer_once_and_skip_the_throttled_with_the_reason(
    world: World, pool: asyncpg.Pool, inbox: tuple[Inbox, int]
) -> None:
    mailbox, _ = inbox
    crm = world.portal.crm
    won = close_sales(world.portal, SALES, seed=3).closed
    customer = {deal_id: int(crm.records(DEAL)[deal_id]["CONTACT_ID"]) for deal_id in won}
    by_contact = Counter(customer.values())
    repeat_buyers = sorted(contact for contact, n in by_contact.items() if n > 1)
    assert len(repeat_buyers) >= 8, "the sample should have customers who bought twice"
    picked = random.Random(5).sample(repeat_buyers, 8)
    recent, long_ago = set(picked[:4]), set(picked[4:])

    # Asked before: 100 days ago (may be asked again), 30 days ago (within every_days).
    for contacts, days in ((long_ago, 100), (recent, 30)):
        world.clock.now = NOW - timedelta(days=days)
        await world.announce([earlier_sale(world, contact) for contact in sorted(contacts)])
        await world.settle()
    assert len(mailbox.messages) == 8
    before = {
        row["request_id"] for row in await pool.fetch("SELECT request_id FROM dispatch_requests")
    }

    world.clock.now = NOW
    redelivered = random.Random(6).sample(won, 20)
    await world.announce([*won, *redelivered])
    await world.settle()

    rows = await pool.fetch(
        "SELECT * FROM dispatch_requests WHERE NOT (request_id = ANY($1::uuid[])) ORDER BY ref",
        before,
    )
    assert len(rows) == SALES
    assert Counter(int(row["ref"]) for row in rows) == Counter(won)
    assert {(row["source"], row["survey"], row["channel"]) for row in rows} == {
        ("sale", SURVEY, "email")
    }
    scheduled = [row for row in rows if row["state"] != "skipped"]
    skipped = [row for row in rows if row["state"] == "skipped"]

    # Each customer asked once: one request per contact not asked within 90 days, sent.
    asked = Counter(row["contact_id"] for row in scheduled)
    assert set(asked) == set(by_contact) - recent
    assert set(asked.values()) == {1}
    assert {(row["state"], row["sends"], row["reason"]) for row in scheduled} == {("sent", 1, None)}
    assert len(skipped) == SALES - len(asked)
    assert {row["reason"] for row in skipped} == {"asked_recently"}
    assert {row["contact_id"] for row in skipped if by_contact[row["contact_id"]] == 1} <= recent
    assert all(by_contact[c] == sum(1 for r in skipped if r["contact_id"] == c) for c in recent)
    changed = [
        SurveyRequestChanged.model_validate(body)
        for body in world.pump.seen["dispatch.request.skipped"]
    ]
    assert Counter(event.reason for event in changed) == {"asked_recently": len(skipped)}

    # One e-mail per request, to the customer, with the survey page's personal link.
    by_send = defaultdict(list)
    for message in mailbox.messages:
        key = send_key(message["Message-ID"])
        assert key is not None, message["Message-ID"]
        by_send[key].append(message)
    assert {len(copies) for copies in by_send.values()} == {1}
    for row in scheduled:
        (message,) = by_send[(str(row["request_id"]), 0)]
        contact = crm.records(CONTACT)[row["contact_id"]]
        assert message["To"] == contact["EMAIL"][0]["VALUE"]
        text = message.get_payload()[0].get_payload(decode=True).decode()  # type: ignore[index,union-attr]
        assert f"{BASE_URL}/s/" in text
    for row in skipped:
        assert (str(row["request_id"]), 0) not in by_send
    assert len(mailbox.messages) == 8 + len(scheduled)

    # One NPS deal per request sent, in the survey's funnel, with the sale's customer; none for
    # the skipped ones.
    nps = [deal for deal in crm.records(DEAL).values() if deal["CATEGORY_ID"] == NPS_FUNNEL]
    origins = Counter(deal["ORIGIN_ID"] for deal in nps if deal.get("ORIGINATOR_ID") == "b24-nps")
    assert set(origins.values()) == {1}
    for row in scheduled:
        assert origins[str(row["request_id"])] == 1
        deal = crm.records(DEAL)[row["nps_deal_id"]]
        assert (deal["ORIGIN_ID"], deal["CONTACT_ID"]) == (
            str(row["request_id"]),
            row["contact_id"],
        )
        assert deal["UF_CRM_NPS_SALE_DEAL"] == int(row["ref"])
    assert not any(str(row["request_id"]) in origins for row in skipped)

    # Again later the same day: nothing more goes out.
    world.clock.now = NOW + timedelta(hours=2)
    await world.announce(won[:30])
    await world.settle()
    assert len(mailbox.messages) == 8 + len(scheduled)
    assert await pool.fetchval("SELECT count(*) FROM dispatch_requests") == SALES + 8
