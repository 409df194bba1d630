"""The chaos verdict's judgement of dispatch (`services/harness/dispatch_check.py`): every won sale
asks its surveys once, every request is sent or skipped for a reason the portal bears out, every
send is one message in the inbox, a second copy is the documented resend only when a fault that
can cause it came between the copies, and every deal survey's request has one NPS deal."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from services.harness.dispatch_check import (
    NO_ADDRESS,
    DispatchFacts,
    Incident,
    Sale,
    expected_surveys,
    judge,
    send_key,
)
from shared.portal_config import PortalConfig, load_portal_config
from tests.support.paths import EXAMPLE_CONFIG

T0 = datetime(2026, 12, 7, 10, 0, tzinfo=UTC)
ADDRESS = "anna@example.com"


@pytest.fixture(scope="module")
def config() -> PortalConfig:
    return load_portal_config(EXAMPLE_CONFIG)


def request(
    survey: str = "After the sale",
    *,
    ref: str = "1",
    source: str = "sale",
    contact: int = 7,
    state: str = "sent",
    reason: str | None = None,
    sends: int = 1,
    nps_deal: int | None = 900,
    minute: int = 0,
) -> dict[str, Any]:
    return {
        "request_id": uuid.uuid4(),
        "source": source,
        "ref": ref,
        "survey": survey,
        "contact_id": contact,
        "channel": "email",
        "state": state,
        "reason": reason,
        "sends": sends,
        "nps_deal_id": nps_deal,
        "created_at": T0 + timedelta(minutes=minute),
    }


def message(
    row: Mapping[str, Any], n: int = 0, at: float = 100.0, to: str = ADDRESS
) -> dict[str, Any]:
    return {
        "message_id": f"<179653512000.13249.{int(at * 1000)}.{row['request_id']}.{n}@b24-nps>",
        "received": at,
        "to": to,
        "envelope_to": [to],
    }


def facts(
    requests: list[dict[str, Any]],
    messages: list[dict[str, Any]] | None = None,
    *,
    sales: tuple[Sale, ...] = (),
    incidents: tuple[Incident, ...] = (),
    emails: dict[int, str | None] | None = None,
    evicted: int = 0,
) -> DispatchFacts:
    deals = {
        str(row["request_id"]): [row["nps_deal_id"]]
        for row in requests
        if row["survey"] == "After the sale" and row["nps_deal_id"] is not None
    }
    return DispatchFacts(
        requests=requests,
        messages=[message(row) for row in requests if row["sends"]]
        if messages is None
        else messages,
        evicted=evicted,
        sales=sales,
        nps_deals=deals,
        emails={7: ADDRESS, 8: None} if emails is None else emails,
        incidents=incidents,
    )


def test_send_keys_come_from_the_message_id_dispatch_builds() -> None:
    request_id = "0b9cbc1e-5c4b-4ac4-9b0e-8c6f4d2d3f11"
    assert send_key(f"<1.2.3.{request_id}.2@b24-nps>") == (request_id, 2)
    assert send_key(f"<{request_id}.0@b24-nps>") == (request_id, 0)
    assert send_key(f"<x{request_id}.0@b24-nps>") is None
    assert send_key("<abc@example.com>") is None
    assert send_key(None) is None


@pytest.mark.parametrize(
    ("products", "surveys"),
    [
        ((), ["After the sale"]),
        ((101, 201, 101), ["After the sale", "Laser A"]),
        ((102, 101), ["After the sale", "Cryo B", "Laser A"]),
        ((999,), ["After the sale"]),
    ],
    ids=["no-products", "one-laser-twice", "both", "unmapped"],
)
def test_a_won_sale_asks_its_deal_survey_and_one_survey_per_mapped_product(
    config: PortalConfig, products: tuple[int, ...], surveys: list[str]
) -> None:
    assert expected_surveys(Sale(1, 0, products), config) == surveys
    assert expected_surveys(Sale(1, 5, products), config) == []  # a funnel nobody watches


def test_a_clean_run_has_nothing_to_say(config: PortalConfig) -> None:
    rows = [request(), request("Laser A", nps_deal=None)]
    found = judge(facts(rows, sales=(Sale(1, 0, (101,)),)), config)
    assert (found.lost, found.duplicated, found.resent) == ([], [], [])
    assert (found.requests, found.sent, found.messages) == (2, 2, 2)
    assert found.states == {"sent": 2}


def test_a_sale_without_its_requests_is_lost_and_two_for_one_survey_duplicated(
    config: PortalConfig,
) -> None:
    rows = [request(ref="1"), request(ref="1", source="robot"), request("Cryo B", nps_deal=None)]
    found = judge(facts(rows, sales=(Sale(1, 0, (101,)), Sale(2, 0, ()))), config)
    assert found.lost == [
        "sale 1: no request for 'Laser A'",
        "sale 2: no request for 'After the sale'",
    ]
    assert found.duplicated == [
        "sale 1: 2 requests for 'After the sale'",
        "sale 1: 1 request(s) for 'Cryo B', which it does not ask",
    ]


def test_skips_and_failures_count_only_when_the_portal_bears_them_out(
    config: PortalConfig,
) -> None:
    first = request(ref="1", minute=0)
    throttled = request(ref="2", state="skipped", reason="asked_recently", sends=0, minute=5)
    unfounded = request(
        ref="3", contact=9, state="skipped", reason="asked_recently", sends=0, minute=5
    )
    no_contact = request(ref="4", contact=0, state="skipped", reason="no_contact", sends=0)
    opted = request(ref="5", contact=9, state="skipped", reason="opted_out", sends=0)
    no_address = request(ref="6", contact=8, state="failed", reason=NO_ADDRESS, sends=0)
    has_address = request(ref="7", state="failed", reason=NO_ADDRESS, sends=0)
    waiting = request(ref="8", state="scheduled", sends=0, nps_deal=None)
    rows = [first, throttled, unfounded, no_contact, opted, no_address, has_address, waiting]
    for row in rows:
        if row["state"] == "skipped":
            row["nps_deal_id"] = None
    found = judge(facts(rows), config)
    assert found.lost == [
        f"request {unfounded['request_id']} skipped as asked recently, but contact 9 was not"
        " asked about 'After the sale' before",
        f"request {opted['request_id']} skipped: opted_out",
        f"request {has_address['request_id']} failed: {NO_ADDRESS}",
        f"request {waiting['request_id']} never sent (state scheduled, NPS deal None)",
        f"request {waiting['request_id']}: no NPS deal with its originId",
    ]
    assert found.duplicated == []


def test_a_send_without_its_message_or_to_another_address_is_lost(config: PortalConfig) -> None:
    silent, elsewhere, reminded = request(), request(), request(sends=2)
    messages = [message(elsewhere, to="someone@example.org"), message(reminded, 0)]
    found = judge(facts([silent, elsewhere, reminded], messages), config)
    assert found.lost == [
        f"send 0 of request {silent['request_id']}: recorded as sent, no message in the inbox",
        f"send 0 of request {elsewhere['request_id']}: to another address than contact 7's",
        f"send 1 of request {reminded['request_id']}: recorded as sent, no message in the inbox",
    ]


def test_a_message_the_register_does_not_record_is_a_duplicate(config: PortalConfig) -> None:
    row = request()
    messages = [message(row, 0), message(row, 1), {"message_id": "<x@y>", "received": 1.0}]
    found = judge(facts([row], messages), config)
    assert found.duplicated == [
        "1 message(s) in the inbox that are no survey send",
        f"1 message(s) for send 1 of request {row['request_id']}, which the register does not"
        " record as sent",
    ]


KILL = Incident("kill:dispatch", started=105.0, ended=110.0)


@pytest.mark.parametrize(
    ("copies", "incidents", "resent", "duplicated"),
    [
        ((100.0, 120.0), (KILL,), 1, 0),
        ((100.0, 120.0), (Incident("db-restart", 101.0, 103.0),), 1, 0),
        ((100.0, 120.0), (), 0, 1),
        ((100.0, 120.0), (Incident("kill:crm_sync", 105.0, 110.0),), 0, 1),
        ((100.0, 104.5), (KILL,), 1, 0),
        ((100.0, 101.0), (KILL,), 0, 1),
        ((111.5, 130.0), (KILL,), 0, 1),
        ((100.0, 120.0, 140.0), (KILL,), 1, 1),
        ((100.0, 120.0, 140.0), (KILL, Incident("kill:all", 125.0, 131.0)), 2, 0),
    ],
    ids=[
        "across-a-kill",
        "across-a-db-restart",
        "no-fault",
        "a-fault-that-cannot",
        "within-the-slack",
        "before-the-kill",
        "after-the-kill",
        "one-fault-explains-one-copy",
        "two-faults-two-copies",
    ],
)
def test_a_second_copy_is_the_documented_resend_only_across_a_fault_that_can_cause_it(
    config: PortalConfig,
    copies: tuple[float, ...],
    incidents: tuple[Incident, ...],
    resent: int,
    duplicated: int,
) -> None:
    row = request()
    found = judge(facts([row], [message(row, 0, at) for at in copies], incidents=incidents), config)
    assert (len(found.resent), len(found.duplicated), found.lost) == (resent, duplicated, [])


def test_a_resend_says_whether_it_kept_its_message_id(config: PortalConfig) -> None:
    row = request()
    same = message(row, 0, 100.0)
    found = judge(facts([row], [same, {**same, "received": 120.0}], incidents=(KILL,)), config)
    assert found.resent == [
        f"send 0 of request {row['request_id']}: a message again after kill:dispatch (accepted"
        " before the crash, not recorded), the same Message-ID"
    ]
    found = judge(facts([row], [same, message(row, 0, 120.0)], incidents=(KILL,)), config)
    assert found.resent[0].endswith("another Message-ID (dispatch documents the same one)")


def test_each_deal_survey_request_has_exactly_its_nps_deal(config: PortalConfig) -> None:
    fine, none, twice, other = request(), request(), request(), request(nps_deal=901)
    laser = request("Laser A", nps_deal=None)
    judged = facts([fine, none, twice, other, laser])
    judged.nps_deals = {
        str(fine["request_id"]): [900],
        str(twice["request_id"]): [902, 903],
        str(other["request_id"]): [904],
        str(laser["request_id"]): [905],
        "a-request-nobody-made": [906],
    }
    found = judge(judged, config)
    assert found.lost == [
        f"request {none['request_id']}: no NPS deal with its originId",
        f"request {other['request_id']}: the register names NPS deal 901, the portal's is 904",
    ]
    assert found.duplicated == [
        f"request {twice['request_id']}: 2 NPS deals [902, 903]",
        f"request {laser['request_id']}: NPS deal(s) [905] it does not ask",
        "NPS deal(s) [906] for no request (a-request-nobody-made)",
    ]


def test_an_inbox_that_dropped_messages_cannot_pass(config: PortalConfig) -> None:
    found = judge(facts([request()], evicted=3), config)
    assert found.lost == [
        "the inbox dropped 3 older message(s) (it keeps 1,000): run fewer sales or a smaller"
        " campaign, the sends cannot be counted"
    ]
