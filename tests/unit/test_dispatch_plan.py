"""Dispatch's pure decisions: who is asked, who is skipped and why, the send window, the next
step of a request."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import yaml

from services.dispatch.plan import (
    CampaignContact,
    Close,
    ContactHistory,
    Progress,
    Send,
    Wait,
    next_step,
    requests_for_campaign,
    requests_for_sale,
    skip_reason,
    window_opening,
)
from shared.dispatch_config import Dispatch, SendWindow
from shared.events import PortalRef, SaleClosed, SoldProduct
from shared.portal_config import ConfigError, PortalConfig, parse_portal_config
from tests.support.paths import EXAMPLE_CONFIG

UTC_TZ = ZoneInfo("UTC")
MOSCOW = ZoneInfo("Europe/Moscow")
MON = datetime(2026, 12, 7, 10, 0, tzinfo=UTC)  # a Monday


def config(**dispatch: Any) -> PortalConfig:
    data = yaml.safe_load(EXAMPLE_CONFIG.read_text())
    data["dispatch"] = {"email": {"sender": "nps@example.com"}, **dispatch}
    return parse_portal_config(data)


def sale(products: tuple[int, ...] = (), contact: int | None = 7) -> SaleClosed:
    return SaleClosed(
        correlation_id="c",
        portal=PortalRef(member_id="m"),
        source="event",
        deal_id=5,
        category_id=0,
        stage_id="WON",
        contact_id=contact,
        closed_at=MON,
        products=tuple(SoldProduct(product_id=p, name="x") for p in products),
    )


@pytest.mark.parametrize(
    ("trigger", "products", "expected"),
    [
        ({"funnel": 0, "survey": "After the sale"}, (101,), [("After the sale", None)]),
        (
            {"funnel": 0, "products": True},
            (101, 102, 101, 999),
            [("Laser A", "EQ-LASER-A"), ("Cryo B", "EQ-CRYO-B")],
        ),
        (
            {"funnel": 0, "survey": "After the sale", "products": True},
            (102,),
            [("After the sale", None), ("Cryo B", "EQ-CRYO-B")],
        ),
        ({"funnel": 3, "survey": "After the sale"}, (101,), []),
    ],
)
def test_a_sale_asks_its_deal_survey_and_one_survey_per_mapped_product(
    trigger: dict[str, Any], products: tuple[int, ...], expected: list[tuple[str, str | None]]
) -> None:
    c = config(sales=[trigger], products={"101": "EQ-LASER-A", "102": "EQ-CRYO-B"})
    assert [(w.survey, w.sku) for w in requests_for_sale(sale(products), c)] == expected


def test_request_ids_are_stable_and_differ_per_contact() -> None:
    c = config(sales=[{"funnel": 0, "survey": "After the sale"}])
    (a,) = requests_for_sale(sale(), c)
    (b,) = requests_for_sale(sale(), c)
    (other,) = requests_for_sale(sale(contact=8), c)
    assert a.request_id("m") == b.request_id("m") != other.request_id("m")
    contacts = [CampaignContact(1), CampaignContact(2), CampaignContact(1)]
    assert [w.contact_id for w in requests_for_campaign("k", "Laser A", contacts, c)] == [1, 2]


def test_a_portal_channel_request_needs_a_deal_to_write_the_link_into() -> None:
    c = config(
        channel="portal",
        portal_channel={"link_field": "UF_CRM_NPS_LINK", "trigger": "NPS_SEND"},
        sales=[{"funnel": 0, "products": True}],
        products={"101": "EQ-LASER-A"},
    )
    (from_sale,) = requests_for_sale(sale((101,)), c)
    (from_campaign,) = requests_for_campaign("k", "Laser A", [CampaignContact(1)], c)
    (deal_survey,) = requests_for_campaign("k", "After the sale", [CampaignContact(1)], c)
    assert skip_reason(from_sale, ContactHistory(), MON, 90) is None
    assert skip_reason(from_campaign, ContactHistory(), MON, 90) == "no_deal"
    assert skip_reason(deal_survey, ContactHistory(), MON, 90) is None


@pytest.mark.parametrize(
    ("contact", "history", "every_days", "expected"),
    [
        (None, ContactHistory(), 90, "no_contact"),
        (7, ContactHistory(opted_out=True), 90, "opted_out"),
        (7, ContactHistory(last_asked_at=MON - timedelta(days=89)), 90, "asked_recently"),
        (7, ContactHistory(last_asked_at=MON - timedelta(days=90)), 90, None),
        (7, ContactHistory(last_asked_at=MON - timedelta(days=1)), 0, None),
        (7, ContactHistory(), 90, None),
    ],
)
def test_who_is_skipped_and_why(
    contact: int | None, history: ContactHistory, every_days: int, expected: str | None
) -> None:
    c = config(sales=[{"funnel": 0, "survey": "After the sale"}])
    (wanted,) = requests_for_sale(sale(contact=contact), c)
    assert skip_reason(wanted, history, MON, every_days) == expected


WEEKDAYS_9_18 = SendWindow.model_validate(
    {"start": "09:00", "end": "18:00", "weekdays": ["mon", "tue", "wed", "thu", "fri"]}
)


@pytest.mark.parametrize(
    ("at", "tz", "expected"),
    [
        (MON, UTC_TZ, MON),  # inside
        (MON.replace(hour=7), UTC_TZ, MON.replace(hour=9)),  # before it opens
        (MON.replace(hour=18), UTC_TZ, MON.replace(hour=9) + timedelta(days=1)),  # closed
        (MON + timedelta(days=4, hours=9), UTC_TZ, MON.replace(hour=9) + timedelta(days=7)),
        # 10:00 UTC is 13:00 in Moscow; 16:00 UTC is 19:00 there, after closing
        (MON, MOSCOW, MON),
        (MON.replace(hour=16), MOSCOW, datetime(2026, 12, 8, 6, 0, tzinfo=UTC)),
    ],
)
def test_sends_wait_for_the_window_in_the_portals_time_zone(
    at: datetime, tz: ZoneInfo, expected: datetime
) -> None:
    assert window_opening(at, WEEKDAYS_9_18, tz) == expected


DISPATCH = Dispatch.model_validate(
    {"reminders": {"after_days": [3, 4]}, "unanswered": {"after_days": 2}}
)


def progress(**kw: Any) -> Progress:
    base: dict[str, Any] = {
        "state": "scheduled",
        "link_ready": True,
        "sends": 0,
        "last_sent_at": None,
        "expires_at": MON + timedelta(days=30),
    }
    return Progress(**{**base, **kw})


@pytest.mark.parametrize(
    ("p", "now", "expected"),
    [
        (progress(link_ready=False), MON, Wait(None)),
        (progress(sending=True), MON, Wait(None)),
        (progress(), MON, Send(0)),
        (progress(), MON.replace(hour=22), Wait(MON.replace(hour=9) + timedelta(days=1))),
        (
            progress(state="sent", sends=1, last_sent_at=MON),
            MON + timedelta(days=2),
            Wait(MON + timedelta(days=3)),
        ),
        (progress(state="sent", sends=1, last_sent_at=MON), MON + timedelta(days=3), Send(1)),
        (progress(state="reminded", sends=2, last_sent_at=MON), MON + timedelta(days=4), Send(2)),
        (
            progress(state="reminded", sends=3, last_sent_at=MON),
            MON + timedelta(days=1),
            Wait(MON + timedelta(days=2)),
        ),
        (
            progress(state="reminded", sends=3, last_sent_at=MON),
            MON + timedelta(days=2),
            Close("unanswered"),
        ),
        (
            progress(state="sent", sends=1, last_sent_at=MON),
            MON + timedelta(days=30),
            Close("expired"),
        ),
        (
            progress(state="answered", sends=1, last_sent_at=MON),
            MON + timedelta(days=9),
            Wait(None),
        ),
        (progress(state="skipped"), MON, Wait(None)),
    ],
)
def test_the_next_step_of_a_request(p: Progress, now: datetime, expected: object) -> None:
    assert next_step(p, now, DISPATCH, UTC_TZ) == expected


@pytest.mark.parametrize(
    ("dispatch", "message"),
    [
        (
            {"sales": [{"funnel": 0, "survey": "Nope"}]},
            "dispatch.sales[0].survey: 'Nope' is no deal survey's name",
        ),
        (
            {"sales": [{"funnel": 20, "survey": "After the sale"}]},
            "dispatch.sales[0].funnel: 20 is a deal survey's NPS funnel",
        ),
        ({"sales": [{"funnel": 0}]}, "give survey (a deal survey's name) or products: true"),
        (
            {"products": {"101": "COS-SERUM"}},
            "dispatch.products.101: 'COS-SERUM' is no equipment segment's SKU",
        ),
        (
            {"channel": "portal"},
            "dispatch.portal_channel: the portal channel is used but not set up",
        ),
        (
            {"window": {"start": "18:00", "end": "09:00"}},
            "window: end 09:00 must be after start 18:00",
        ),
        ({"surveys": {"Other": {"every_days": 30}}}, "dispatch.surveys: 'Other' names no survey"),
        (
            {"channel": "portal", "portal_channel": {"link_field": "UF_X", "stage": "C0:NPS"}},
            "dispatch.portal_channel.reminder_trigger: reminders are configured",
        ),
        (
            {"channel": "portal", "portal_channel": {"link_field": "UF_X"}},
            "give exactly one of trigger",
        ),
    ],
)
def test_a_wrong_dispatch_section_is_named(dispatch: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as error:
        config(**dispatch)
    assert message in str(error.value)


def test_config_check_says_what_dispatch_will_do() -> None:
    c = config(
        every_days=60,
        window={"start": "10:00", "end": "18:00", "weekdays": ["mon", "fri"]},
        reminders={"after_days": [2, 5]},
        sales=[{"funnel": 0, "survey": "After the sale", "products": True}],
        products={"101": "EQ-LASER-A"},
        followup={"service": {"sla_hours": 4, "working_hours": True}},
        digest={"to": ["head@example.com"], "weekday": "fri", "time": "16:00"},
    )
    assert c.dispatch is not None
    assert c.dispatch.summary() == [
        "dispatch: by email in ru, a contact asked about one survey at most every 60 days,"
        " sends 10:00-18:00 (mon, fri), reminders after 2, 5 day(s), unanswered 3 day(s) after"
        " the last message, then a call task",
        "dispatch: a won deal of funnel 0 asks deal survey 'After the sale' and one survey per"
        " product sold (1 mapped)",
        "dispatch: follow-up of created leads and tasks, SLA service 4 h (working)",
        "dispatch: weekly digest on fri 16:00 to 1 recipient(s)",
    ]
