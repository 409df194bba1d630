"""The "Send NPS survey" robot's pure parts: the request a call asks for (or why none), its
delay, the answer's wording, the call as the portal POSTs it, the robots registered, the
`bizproc.event.send` params and the command carrying them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import yaml

from services.app.lifecycle import LifecycleError
from services.app.robot import DEAL_ROBOT, NPS_ROBOT, read_robot_call, wanted_robots
from services.crm_sync.dispatch_calls import robot_answer_params
from services.dispatch.plan import (
    Progress,
    RobotDocument,
    Send,
    Wait,
    next_step,
    request_for_robot,
    robot_document,
    robot_reason,
)
from shared.dispatch_config import Dispatch
from shared.events import DispatchCommand, PortalRef, RobotAnswer, RobotCalled
from shared.portal_config import PortalConfig, parse_portal_config
from tests.support.paths import EXAMPLE_CONFIG

MON = datetime(2026, 12, 7, 10, 0, tzinfo=UTC)
DOCUMENT = RobotDocument(contact_id=7, company_id=3, responsible_id=31)


def config() -> PortalConfig:
    data = yaml.safe_load(EXAMPLE_CONFIG.read_text())
    data["dispatch"] = {"email": {"sender": "nps@example.com"}, "channel": "email"}
    return parse_portal_config(data)


def call(entity_type_id: int = 2, /, **properties: str) -> RobotCalled:
    return RobotCalled(
        correlation_id="c",
        portal=PortalRef(member_id="m"),
        code=DEAL_ROBOT,
        event_token="wf.1|A1_2|tok",
        entity_type_id=entity_type_id,
        entity_id=15,
        properties=properties,
    )


def test_a_deal_robot_asks_the_deal_survey_for_the_deals_contact_under_its_event_token() -> None:
    wanted = request_for_robot(call(survey="After the sale"), DOCUMENT, config(), MON)
    assert not isinstance(wanted, str)
    assert (wanted.source, wanted.ref, wanted.kind, wanted.survey) == (
        "robot",
        "wf.1|A1_2|tok",
        "deal",
        "After the sale",
    )
    assert (wanted.contact_id, wanted.company_id, wanted.responsible_id) == (7, 3, 31)
    assert (wanted.sale_deal_id, wanted.robot_token, wanted.send_after) == (
        15,
        "wf.1|A1_2|tok",
        None,
    )
    assert wanted.channel == "email"
    again = request_for_robot(call(survey="After the sale"), DOCUMENT, config(), MON)
    assert not isinstance(again, str)
    assert again.request_id("m") == wanted.request_id("m")


def test_an_nps_item_robot_has_no_sale_and_the_channel_and_delay_are_the_robots() -> None:
    data = yaml.safe_load(EXAMPLE_CONFIG.read_text())
    data["dispatch"] = {
        "email": {"sender": "nps@example.com"},
        "portal_channel": {"link_field": "UF_CRM_NPS_LINK", "trigger": "NPS_SEND"},
    }
    portal = parse_portal_config(data)
    wanted = request_for_robot(
        call(1038, survey="Laser A", channel="portal", delay_minutes="90"), DOCUMENT, portal, MON
    )
    assert not isinstance(wanted, str)
    assert (wanted.kind, wanted.sale_deal_id, wanted.channel) == ("segment", None, "portal")
    assert wanted.send_after == MON + timedelta(minutes=90)


@pytest.mark.parametrize(
    ("properties", "reason"),
    [
        ({}, "the robot's survey '' is none of the portal's surveys (After the sale, "),
        ({"survey": "Nope"}, "the robot's survey 'Nope' is none of the portal's surveys"),
        (
            {"survey": "After the sale", "channel": "sms"},
            "the robot's channel 'sms': email or portal expected",
        ),
        (
            {"survey": "After the sale", "channel": "portal"},
            "the portal channel is not configured (dispatch.portal_channel)",
        ),
        (
            {"survey": "After the sale", "delay_minutes": "-5"},
            "the robot's delay_minutes '-5': a whole number of minutes expected",
        ),
        (
            {"survey": "After the sale", "delay_minutes": "\u00b2"},
            "the robot's delay_minutes '\u00b2': a whole number of minutes expected",
        ),
        (
            {"survey": "After the sale", "delay_minutes": "\u0667"},
            "the robot's delay_minutes '\u0667': a whole number of minutes expected",
        ),
        (
            {"survey": "After the sale", "delay_minutes": "10000000000"},
            "the robot's delay_minutes '10000000000': a whole number of minutes expected,"
            " at most 525600",
        ),
        (
            {"survey": "After the sale", "delay_minutes": "525601"},
            "the robot's delay_minutes '525601'",
        ),
    ],
)
def test_an_unusable_call_asks_nothing_and_says_why(
    properties: dict[str, str], reason: str
) -> None:
    wanted = request_for_robot(call(**properties), DOCUMENT, config(), MON)
    assert isinstance(wanted, str)
    assert wanted.startswith(reason)


def test_the_longest_delay_a_robot_may_ask_for() -> None:
    wanted = request_for_robot(
        call(survey="After the sale", delay_minutes="525600"), DOCUMENT, config(), MON
    )
    assert not isinstance(wanted, str)
    assert wanted.send_after == MON + timedelta(days=365)


@pytest.mark.parametrize(
    ("result", "document"),
    [
        (
            {"item": {"contactId": 7, "companyId": 0, "assignedById": "31"}},
            RobotDocument(7, None, 31),
        ),
        ({"item": {"contactId": None}}, RobotDocument(None, None, None)),
        ({"items": []}, None),
        ([], None),
    ],
)
def test_the_robots_document_as_read(result: Any, document: RobotDocument | None) -> None:
    assert robot_document(result) == document


def test_the_robots_delay_holds_the_first_message_back() -> None:
    progress = Progress(
        state="scheduled",
        link_ready=True,
        sends=0,
        last_sent_at=None,
        expires_at=None,
        send_after=MON + timedelta(minutes=30),
    )
    tz = ZoneInfo("UTC")
    assert next_step(progress, MON, Dispatch(), tz) == Wait(MON + timedelta(minutes=30))
    assert next_step(progress, MON + timedelta(minutes=30), Dispatch(), tz) == Send(0)


def test_why_not_sent_as_the_business_process_reads_it() -> None:
    assert robot_reason("skipped", "asked_recently") == (
        "the contact was asked about this survey within every_days"
    )
    assert robot_reason("failed", "the contact has no e-mail address") == (
        "the contact has no e-mail address"
    )
    assert robot_reason("expired", None) == "expired"


FORM = {
    "code": DEAL_ROBOT,
    "event_token": "wf.1|A1_2|tok",
    "document_id[0]": "crm",
    "document_id[1]": "Bitrix\\Crm\\Integration\\BizProc\\Document\\Dynamic",
    "document_id[2]": "DYNAMIC_1038_5",
    "properties[survey]": "Laser A",
    "properties[delay_minutes]": "0",
    "auth[member_id]": "m1",
    "auth[application_token]": "secret-token",
}


def test_a_robot_call_as_the_portal_posts_it() -> None:
    read = read_robot_call(FORM)
    assert (read.member_id, read.entity_type_id, read.entity_id, read.event_token) == (
        "m1",
        1038,
        5,
        "wf.1|A1_2|tok",
    )
    assert read.properties == {"survey": "Laser A", "delay_minutes": "0"}
    assert "secret-token" not in repr(read)
    deal = read_robot_call({**FORM, "document_id[2]": "DEAL_7"})
    assert (deal.entity_type_id, deal.entity_id) == (2, 7)
    largest = read_robot_call({**FORM, "document_id[2]": "DEAL_" + "9" * 18, "code": NPS_ROBOT})
    assert (largest.entity_id, largest.code) == (10**18 - 1, NPS_ROBOT)


@pytest.mark.parametrize(
    ("change", "field", "status"),
    [
        ({"auth[application_token]": ""}, "auth[application_token]", 403),
        ({"auth[member_id]": " "}, "auth[member_id]", 403),
        ({"event_token": ""}, "event_token", 400),
        ({"document_id[2]": "CONTACT_3"}, "document_id[2]", 400),
        ({"document_id[2]": "DEAL_" + "7" * 5000}, "document_id[2]", 400),
        ({"document_id[2]": "DEAL_" + "9" * 20}, "document_id[2]", 400),
        ({"document_id[2]": "DEAL_\u0667"}, "document_id[2]", 400),
        ({"document_id[2]": "DYNAMIC_" + "1" * 30 + "_5"}, "document_id[2]", 400),
        ({"code": "another_apps_robot"}, "code", 400),
        ({"code": ""}, "code", 400),
    ],
)
def test_what_a_robot_call_must_carry(change: dict[str, str], field: str, status: int) -> None:
    with pytest.raises(LifecycleError) as refused:
        read_robot_call({**FORM, **change})
    assert (refused.value.field, refused.value.status) == (field, status)


def test_the_robots_every_portal_gets() -> None:
    robots = wanted_robots("https://nps.example.com/app/robot", 1038)
    assert set(robots) == {DEAL_ROBOT, NPS_ROBOT}
    assert robots[DEAL_ROBOT]["DOCUMENT_TYPE"] == ["crm", "CCrmDocumentDeal", "DEAL"]
    assert robots[NPS_ROBOT]["DOCUMENT_TYPE"][2] == "DYNAMIC_1038"
    for robot in robots.values():
        assert (robot["HANDLER"], robot["USE_SUBSCRIPTION"]) == (
            "https://nps.example.com/app/robot",
            "Y",
        )
        assert set(robot["PROPERTIES"]) == {"survey", "channel", "delay_minutes"}
        assert set(robot["RETURN_PROPERTIES"]) == {"sent", "reason"}


def test_the_answer_to_the_business_process() -> None:
    sent = robot_answer_params(RobotAnswer(event_token="t", sent=True))
    assert sent["EVENT_TOKEN"] == "t"
    assert sent["RETURN_VALUES"] == {"sent": "Y", "reason": ""}
    skipped = robot_answer_params(RobotAnswer(event_token="t", sent=False, reason="opted out"))
    assert skipped["RETURN_VALUES"] == {"sent": "N", "reason": "opted out"}
    assert "opted out" in skipped["LOG_MESSAGE"]


def test_the_answer_is_a_dispatch_command_of_its_own() -> None:
    answer = RobotAnswer(event_token="t", sent=True)
    command = DispatchCommand(
        correlation_id="c",
        command_id="r:robot_answer:0",
        request_id="00000000-0000-0000-0000-000000000001",
        portal=PortalRef(member_id="m"),
        robot_answer=answer,
    )
    assert (command.action, command.routing_key()) == ("robot_answer", "dispatch.robot_answer")
    with pytest.raises(ValueError, match="exactly one command"):
        DispatchCommand(
            correlation_id="c",
            command_id="r:robot_answer:0",
            request_id="00000000-0000-0000-0000-000000000001",
            portal=PortalRef(member_id="m"),
            robot_answer=answer,
            call_task={
                "responsible_id": 1,
                "title": "t",
                "description": "d",
                "deadline_hours": 1,
                "contact_id": 1,
            },
        )
