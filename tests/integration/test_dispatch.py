"""Dispatch against real PostgreSQL, a real SMTP server (aiosmtpd, in-process) and the sandbox
portal: a sale asks once, e-mails go out once inside the window, reminders and the unanswered
call task on a moved clock, opt-out and throttling honoured, a campaign's dry run equals its run."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from services.dispatch.commands import run_campaign
from services.dispatch.dispatcher import Dispatcher
from services.dispatch.mailer import Mailer
from services.dispatch.plan import CampaignContact
from services.dispatch.settings import DispatchSettings
from services.harness.stack import free_port
from shared.events import (
    CrmWritten,
    PortalRef,
    SaleClosed,
    SoldProduct,
    SurveyAnswered,
    SurveyOptedOut,
    SurveyReady,
)
from shared.outbox import Outbox
from shared.portal_config import PortalConfig, parse_portal_config
from tests.support.crm_sync import client_for, new_portal
from tests.support.paths import EXAMPLE_CONFIG
from tests.support.smtp import Inbox

MONDAY_10 = datetime(2026, 12, 7, 10, 0, tzinfo=UTC)
PORTAL = PortalRef(member_id="m1")


def dispatch_config(**overrides: Any) -> PortalConfig:
    import yaml

    data = yaml.safe_load(EXAMPLE_CONFIG.read_text())
    data["portal"]["timezone"] = "UTC"
    data["dispatch"] = {
        "channel": "email",
        "language": "en",
        "email": {"sender": "Demo <nps@example.com>"},
        "window": {"start": "09:00", "end": "20:00"},
        "reminders": {"after_days": [3]},
        "unanswered": {"after_days": 2, "task": True, "responsible_id": 5},
        "sales": [{"funnel": 0, "survey": "After the sale", "products": True}],
        "products": {"101": "EQ-LASER-A"},
        **overrides,
    }
    return parse_portal_config(data)


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
async def clean(pool: asyncpg.Pool) -> None:
    await pool.execute(
        "TRUNCATE dispatch_sends, dispatch_optouts, dispatch_requests, dispatch_campaigns"
    )
    await pool.execute(
        "DELETE FROM outbox WHERE routing_key LIKE 'dispatch.%'"
        " OR routing_key LIKE 'survey.requested'"
    )


def make(
    pool: asyncpg.Pool, port: int, config: PortalConfig, clock: Clock
) -> tuple[Dispatcher, Any]:
    portal = new_portal(contacts=20)
    settings = DispatchSettings(smtp_port=port, _env_file=None)
    dispatcher = Dispatcher(
        pool,
        Outbox(),
        config,
        portal=client_for(portal),
        mailer=Mailer(settings),
        settings=settings,
        clock=clock,
    )
    return dispatcher, portal


def sale(deal_id: int, contact_id: int | None, products: tuple[int, ...] = ()) -> SaleClosed:
    return SaleClosed(
        correlation_id=f"deal:{deal_id}",
        portal=PORTAL,
        source="event",
        deal_id=deal_id,
        category_id=0,
        stage_id="WON",
        contact_id=contact_id,
        responsible_id=31,
        closed_at=MONDAY_10,
        products=tuple(SoldProduct(product_id=p, name=f"P{p}") for p in products),
    )


async def queued(pool: asyncpg.Pool, key: str) -> list[dict[str, Any]]:
    rows = await pool.fetch("SELECT body FROM outbox WHERE routing_key = $1 ORDER BY id", key)
    return [json.loads(row["body"]) for row in rows]


async def register(pool: asyncpg.Pool) -> dict[str, dict[str, Any]]:
    rows = await pool.fetch("SELECT * FROM dispatch_requests ORDER BY created_at, survey")
    return {row["survey"]: dict(row) for row in rows}


def ready(request_id: uuid.UUID) -> SurveyReady:
    return SurveyReady(
        correlation_id="x",
        request_id=request_id,
        portal=PORTAL,
        url=f"http://survey.test/s/{request_id}",
        optout_url=f"http://survey.test/s/{request_id}/optout",
        company="Demo Clinic Supply",
        expires_at=MONDAY_10 + timedelta(days=30),
    )


def contact_with_email(portal: Any) -> int:
    from services.sandbox.methods import CONTACT

    return next(
        int(cid) for cid, record in portal.crm.records(CONTACT).items() if record.get("EMAIL")
    )


async def test_a_won_sale_asks_its_deal_survey_and_one_survey_per_mapped_product(
    pool: asyncpg.Pool, inbox: tuple[Inbox, int], clean: None
) -> None:
    clock = Clock(MONDAY_10)
    dispatcher, _portal = make(pool, inbox[1], dispatch_config(), clock)

    await dispatcher.on_sale(sale(500, 7, products=(101, 101, 999)))
    await dispatcher.on_sale(sale(500, 7, products=(101,)))  # the event again: nothing new

    rows = await register(pool)
    assert set(rows) == {"After the sale", "Laser A"}
    assert {row["state"] for row in rows.values()} == {"scheduled"}
    (deal_command,) = await queued(pool, "dispatch.nps_deal")
    assert deal_command["nps_deal"]["contact_id"] == 7
    assert deal_command["nps_deal"]["sale_deal_id"] == 500
    assert deal_command["nps_deal"]["sale_deal_field"] == "UF_CRM_NPS_SALE_DEAL"
    (link,) = await queued(pool, "survey.requested")
    assert (link["sku"], link["deal_id"]) == ("EQ-LASER-A", None)

    deal_request = rows["After the sale"]["request_id"]
    written = CrmWritten(
        correlation_id="x",
        action_id=f"{deal_request}:nps_deal:0",
        action="nps_deal",
        outcome="created",
        entity_type="deal",
        entity_id=900,
    )
    await dispatcher.on_written(written)
    await dispatcher.on_written(written)
    links = await queued(pool, "survey.requested")
    assert [item["deal_id"] for item in links] == [None, 900]


async def test_a_sale_without_contact_and_a_throttled_contact_are_skipped_with_the_reason(
    pool: asyncpg.Pool, inbox: tuple[Inbox, int], clean: None
) -> None:
    clock = Clock(MONDAY_10)
    dispatcher, _ = make(pool, inbox[1], dispatch_config(), clock)

    await dispatcher.on_sale(sale(501, None))
    await dispatcher.on_sale(sale(502, 8))
    clock.now += timedelta(days=30)
    await dispatcher.on_sale(sale(503, 8))  # asked 30 days ago, every_days 90
    clock.now += timedelta(days=61)
    await dispatcher.on_sale(sale(504, 8))  # 91 days later: asked again

    rows = await pool.fetch("SELECT ref, state, reason FROM dispatch_requests ORDER BY ref")
    assert [tuple(row) for row in rows] == [
        ("501", "skipped", "no_contact"),
        ("502", "scheduled", None),
        ("503", "skipped", "asked_recently"),
        ("504", "scheduled", None),
    ]
    skipped = await queued(pool, "dispatch.request.skipped")
    assert sorted(item["reason"] for item in skipped) == ["asked_recently", "no_contact"]


async def test_email_sent_once_in_the_window_then_a_reminder_then_unanswered_with_a_call_task(
    pool: asyncpg.Pool, inbox: tuple[Inbox, int], clean: None
) -> None:
    mailbox, port = inbox
    clock = Clock(MONDAY_10.replace(hour=21))  # after the window closed
    config = dispatch_config(sales=[{"funnel": 0, "survey": "After the sale"}])
    dispatcher, portal = make(pool, port, config, clock)
    contact = contact_with_email(portal)
    await dispatcher.on_sale(sale(510, contact))
    request_id = (await register(pool))["After the sale"]["request_id"]
    await dispatcher.on_ready(ready(request_id))

    await dispatcher.tick()
    assert mailbox.messages == []  # outside the window: waits for 09:00
    clock.now = MONDAY_10 + timedelta(days=1)
    await dispatcher.tick()
    await dispatcher.tick()  # again: nothing more

    (first,) = mailbox.messages
    assert first["Subject"] == "How likely are you to recommend Demo Clinic Supply?"
    body = first.get_payload()[0].get_payload(decode=True).decode()  # type: ignore[index,union-attr]
    assert f"http://survey.test/s/{request_id}?score=10" in body
    assert f"http://survey.test/s/{request_id}/optout" in body
    assert first["List-Unsubscribe"].strip() == f"<http://survey.test/s/{request_id}/optout>"
    row = (await register(pool))["After the sale"]
    assert (row["state"], row["sends"]) == ("sent", 1)

    clock.now += timedelta(days=2)
    await dispatcher.tick()
    assert len(mailbox.messages) == 1  # the reminder is due after 3 days
    clock.now += timedelta(days=1)
    await dispatcher.tick()
    assert len(mailbox.messages) == 2
    assert mailbox.messages[1]["Subject"].startswith("Reminder:")
    assert (await register(pool))["After the sale"]["state"] == "reminded"

    clock.now += timedelta(days=2)
    await dispatcher.tick()
    row = (await register(pool))["After the sale"]
    assert row["state"] == "unanswered"
    (task,) = await queued(pool, "dispatch.call_task")
    assert task["call_task"]["responsible_id"] == 31  # the sale's responsible
    assert task["call_task"]["contact_id"] == contact
    clock.now += timedelta(days=10)
    await dispatcher.tick()
    assert len(mailbox.messages) == 2
    assert len(await queued(pool, "dispatch.call_task")) == 1
    refused = CrmWritten(
        correlation_id="x",
        action_id=task["command_id"],
        action="call_task",
        outcome="failed",
        details={"reason": "user 31 does not exist"},
    )
    await dispatcher.on_written(refused)
    row = (await register(pool))["After the sale"]
    assert (row["state"], row["reason"], row["call_task_id"]) == (
        "unanswered",
        "call task not created: user 31 does not exist",
        None,
    )
    await dispatcher.on_written(refused.model_copy(update={"outcome": "created", "entity_id": 77}))
    assert (await register(pool))["After the sale"]["call_task_id"] == 77


async def test_an_answer_cancels_the_reminders_and_an_opt_out_stops_every_survey(
    pool: asyncpg.Pool, inbox: tuple[Inbox, int], clean: None
) -> None:
    mailbox, port = inbox
    clock = Clock(MONDAY_10)
    dispatcher, portal = make(pool, port, dispatch_config(), clock)
    contact = contact_with_email(portal)
    await dispatcher.on_sale(sale(520, contact, products=(101,)))
    rows = await register(pool)
    laser = rows["Laser A"]["request_id"]
    await dispatcher.on_ready(ready(laser))
    await dispatcher.tick()
    assert len(mailbox.messages) == 1

    await dispatcher.on_answered(
        SurveyAnswered(
            correlation_id="x",
            request_id=laser,
            version=1,
            portal=PORTAL,
            contact_id=contact,
            category_id=12,
            scale="0-10",
            answers=[],
            answered_at=clock.now,
        )
    )
    clock.now += timedelta(days=30)
    await dispatcher.tick()
    assert len(mailbox.messages) == 1
    assert (await register(pool))["Laser A"]["state"] == "answered"

    await dispatcher.on_opted_out(
        SurveyOptedOut(
            correlation_id="x",
            request_id=laser,
            portal=PORTAL,
            contact_id=contact,
            opted_out_at=clock.now,
        )
    )
    deal_row = (await register(pool))["After the sale"]
    assert (deal_row["state"], deal_row["reason"]) == ("skipped", "opted_out")
    clock.now += timedelta(days=365)
    await dispatcher.on_sale(sale(521, contact))
    later = await pool.fetchrow("SELECT state, reason FROM dispatch_requests WHERE ref = '521'")
    assert later is not None
    assert tuple(later) == ("skipped", "opted_out")


async def test_a_contact_without_email_fails_with_the_reason_and_is_not_retried(
    pool: asyncpg.Pool, inbox: tuple[Inbox, int], clean: None
) -> None:
    from services.sandbox.methods import CONTACT

    mailbox, port = inbox
    clock = Clock(MONDAY_10)
    config = dispatch_config(sales=[{"funnel": 0, "survey": "After the sale"}])
    dispatcher, portal = make(pool, port, config, clock)
    contact = next(
        int(cid) for cid, record in portal.crm.records(CONTACT).items() if not record.get("EMAIL")
    )
    await dispatcher.on_sale(sale(530, contact))
    request_id = (await register(pool))["After the sale"]["request_id"]
    await dispatcher.on_ready(ready(request_id))
    await dispatcher.tick()
    clock.now += timedelta(days=5)
    await dispatcher.tick()

    row = (await register(pool))["After the sale"]
    assert (row["state"], row["reason"]) == ("failed", "the contact has no e-mail address")
    assert mailbox.messages == []


async def test_the_smtp_server_down_defers_the_send_without_losing_it(
    pool: asyncpg.Pool, inbox: tuple[Inbox, int], clean: None
) -> None:
    mailbox, port = inbox
    clock = Clock(MONDAY_10)
    config = dispatch_config(sales=[{"funnel": 0, "survey": "After the sale"}])
    dispatcher, portal = make(pool, free_port(), config, clock)  # nobody listens there
    contact = contact_with_email(portal)
    await dispatcher.on_sale(sale(540, contact))
    request_id = (await register(pool))["After the sale"]["request_id"]
    await dispatcher.on_ready(ready(request_id))
    await dispatcher.tick()
    assert (await register(pool))["After the sale"]["state"] == "scheduled"

    working, _ = make(pool, port, config, clock)
    clock.now += timedelta(minutes=2)
    await working.tick()
    assert len(mailbox.messages) == 1
    assert (await register(pool))["After the sale"]["state"] == "sent"


async def test_a_campaigns_dry_run_takes_the_decisions_its_run_takes(
    pool: asyncpg.Pool, inbox: tuple[Inbox, int], clean: None
) -> None:
    clock = Clock(MONDAY_10)
    config = dispatch_config()
    dispatcher, portal = make(pool, inbox[1], config, clock)
    await dispatcher.on_sale(sale(550, 3))  # contact 3 was asked today
    await dispatcher.on_opted_out(
        SurveyOptedOut(
            correlation_id="x",
            request_id=uuid.uuid4(),
            portal=PORTAL,
            contact_id=4,
            opted_out_at=clock.now,
        )
    )
    contacts = [CampaignContact(contact_id=i) for i in (1, 2, 3, 4, 5, 5)]
    client = client_for(portal)

    async def campaign(dry_run: bool) -> tuple[Any, int]:
        return await run_campaign(
            pool,
            client,
            config,
            portal="m1",
            survey="After the sale",
            name="spring",
            contacts=contacts,
            dry_run=dry_run,
            progress=False,
        )

    before = await pool.fetchval("SELECT count(*) FROM dispatch_requests")
    dry = await campaign(True)
    assert await pool.fetchval("SELECT count(*) FROM dispatch_requests") == before
    real = await campaign(False)
    assert dry == real
    assert dict(real[0]) == {"asked": 3, "asked_recently": 1, "opted_out": 1}
    again = await campaign(False)
    assert (dict(again[0]), again[1]) == ({"asked": 0}, 5)


async def test_the_portal_channel_asks_crm_sync_to_send_and_follows_its_outcome(
    pool: asyncpg.Pool, inbox: tuple[Inbox, int], clean: None
) -> None:
    clock = Clock(MONDAY_10)
    config = dispatch_config(
        channel="portal",
        portal_channel={"link_field": "UF_CRM_NPS_LINK", "trigger": "NPS_SEND"},
        sales=[{"funnel": 0, "survey": "After the sale"}],
    )
    dispatcher, _ = make(pool, inbox[1], config, clock)
    await dispatcher.on_sale(sale(560, 9))
    request_id = (await register(pool))["After the sale"]["request_id"]
    await dispatcher.on_written(
        CrmWritten(
            correlation_id="x",
            action_id=f"{request_id}:nps_deal:0",
            action="nps_deal",
            outcome="created",
            entity_type="deal",
            entity_id=901,
        )
    )
    await dispatcher.on_ready(ready(request_id))

    await dispatcher.tick()
    await dispatcher.tick()  # the send is in flight: nothing more
    (first,) = await queued(pool, "dispatch.survey_send")
    assert first["survey_send"] == {
        "deal_id": 901,
        "link_field": "UF_CRM_NPS_LINK",
        "url": f"http://survey.test/s/{request_id}",
        "trigger": "NPS_SEND",
        "stage": None,
        "timeline_title": "NPS survey sent",
        "timeline_text": "Survey 'After the sale': the customer's personal link was sent.",
        "reminder": 0,
    }
    assert (await register(pool))["After the sale"]["state"] == "scheduled"

    sent = CrmWritten(
        correlation_id="x",
        action_id=first["command_id"],
        action="survey_send",
        outcome="sent",
        entity_type="deal",
        entity_id=901,
    )
    await dispatcher.on_written(sent)
    await dispatcher.on_written(sent)  # a redelivery changes nothing
    row = (await register(pool))["After the sale"]
    assert (row["state"], row["sends"]) == ("sent", 1)

    clock.now += timedelta(days=3)
    await dispatcher.tick()
    reminder = (await queued(pool, "dispatch.survey_send"))[1]
    assert reminder["survey_send"]["url"] == f"http://survey.test/s/{request_id}?m=1"
    await dispatcher.on_written(
        sent.model_copy(
            update={
                "action_id": reminder["command_id"],
                "outcome": "failed",
                "details": {"reason": "deal 901 does not exist"},
            }
        )
    )
    row = (await register(pool))["After the sale"]
    assert (row["state"], row["reason"]) == ("failed", "deal 901 does not exist")
