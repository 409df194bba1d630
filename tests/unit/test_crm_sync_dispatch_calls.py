"""What crm_sync calls for dispatch's commands and what the answers mean (pure)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from services.crm_sync.dispatch_calls import (
    Observed,
    Recovered,
    RefusedError,
    Send,
    call_task_add,
    call_task_bindings,
    call_task_lookup,
    call_task_step,
    check_send,
    dispatch_written,
    nps_deal_add,
    nps_deal_lookup,
    nps_deal_step,
    plan_send,
    portal_wide,
    send_calls,
    send_details,
    send_reads,
    stage_category,
    timeline_id,
)
from services.crm_sync.entities import found_task, task_marker
from shared.events import CallTask, DispatchCommand, NewNpsDeal, PortalRef, PortalSend

REQUEST = uuid.UUID("5a0c3a8e-1f2b-4c6d-8e9f-0a1b2c3d4e5f")
URL = "https://nps.example.com/s/abc"
LINK = "UF_CRM_NPS_LINK"
STAGES_20 = [
    {"ENTITY_ID": "DEAL_STAGE_20", "STATUS_ID": "C20:NEW", "NAME": "New", "SORT": "10"},
    {"ENTITY_ID": "DEAL_STAGE_20", "STATUS_ID": "C20:SEND", "NAME": "Send", "SORT": "20"},
    {"ENTITY_ID": "DEAL_STAGE_20", "STATUS_ID": "C20:WON", "SORT": "30", "SEMANTICS": "S"},
]


def command(**body: Any) -> DispatchCommand:
    return DispatchCommand(
        correlation_id="corr-1",
        command_id="cmd-1",
        request_id=REQUEST,
        portal=PortalRef(member_id="m1"),
        **body,
    )


def new_deal(**extra: Any) -> NewNpsDeal:
    return NewNpsDeal(**{"category_id": 20, "title": "NPS: Anna Petrova", "contact_id": 3, **extra})


def portal_send(**extra: Any) -> PortalSend:
    return PortalSend(
        **{"deal_id": 7, "link_field": LINK, "url": URL, "trigger": "NPS_SEND", **extra}
    )


def deal(**fields: Any) -> dict[str, Any]:
    return {"id": 7, "categoryId": 20, "stageId": "C20:NEW", LINK: None, **fields}


# --- nps_deal ---------------------------------------------------------------------------------


def test_an_nps_deal_is_created_with_contact_company_responsible_sale_and_origin() -> None:
    the_deal = new_deal(
        company_id=4,
        responsible_id=31,
        sale_deal_id=900,
        sale_deal_field="UF_CRM_NPS_SALE_DEAL",
    )

    params = nps_deal_add(command(nps_deal=the_deal), the_deal)

    assert params == {
        "entityTypeId": 2,
        "useOriginalUfNames": "Y",
        "fields": {
            "title": "NPS: Anna Petrova",
            "categoryId": 20,
            "contactIds": [3],
            "contactId": 3,
            "companyId": 4,
            "assignedById": 31,
            "originatorId": "b24-nps",
            "originId": str(REQUEST),
            "UF_CRM_NPS_SALE_DEAL": 900,
        },
    }
    assert "stageId" not in params["fields"]


@pytest.mark.parametrize(
    "extra",
    [{}, {"sale_deal_id": 900}, {"sale_deal_field": "UF_CRM_NPS_SALE_DEAL"}],
)
def test_an_nps_deal_leaves_out_what_is_not_given(extra: dict[str, Any]) -> None:
    the_deal = new_deal(**extra)

    fields = nps_deal_add(command(nps_deal=the_deal), the_deal)["fields"]

    assert set(fields) == {
        "title",
        "categoryId",
        "contactIds",
        "contactId",
        "originatorId",
        "originId",
    }


def test_an_nps_deal_is_looked_up_by_its_request_and_originator() -> None:
    lookup = nps_deal_lookup(command(nps_deal=new_deal()))

    assert lookup["entityTypeId"] == 2
    assert lookup["filter"] == {"=originatorId": "b24-nps", "=originId": str(REQUEST)}


@pytest.mark.parametrize(
    ("existing", "contact", "stages", "expected"),
    [
        (41, True, STAGES_20, 41),
        (41, False, [], 41),  # found before: whatever became of the contact since
        (None, True, STAGES_20, None),
        (None, False, STAGES_20, "contact 3 (nps_deal.contact_id) does not exist"),
        (None, True, [], "deal category 20 (nps_deal.category_id) has no stages"),
        (None, True, None, "deal category 20 (nps_deal.category_id) has no stages"),
    ],
)
def test_an_nps_deal_is_found_created_or_refused(
    existing: int | None, contact: bool, stages: Any, expected: int | str | None
) -> None:
    if isinstance(expected, str):
        with pytest.raises(RefusedError) as refused:
            nps_deal_step(new_deal(), existing=existing, contact=contact, stages=stages)
        assert expected in str(refused.value)
        return
    assert nps_deal_step(new_deal(), existing=existing, contact=contact, stages=stages) == expected


# --- survey_send ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "reason"),
    [
        ({"link_field": " "}, "survey_send.link_field is empty"),
        ({"url": ""}, "survey_send.url is empty"),
    ],
)
def test_a_send_without_a_link_is_refused(extra: dict[str, Any], reason: str) -> None:
    with pytest.raises(RefusedError, match=reason):
        check_send(portal_send(**extra))


def test_a_send_with_a_stage_or_a_trigger_passes_the_check() -> None:
    check_send(portal_send())
    check_send(portal_send(trigger=None, stage="C20:SEND"))


@pytest.mark.parametrize(
    ("stage", "category"),
    [("C20:SEND", 20), ("C7:NEW", 7), ("NEW", 0), ("PREPARATION", 0), ("CX:NEW", 0)],
)
def test_a_stage_names_its_funnel(stage: str, category: int) -> None:
    assert stage_category(stage) == category


def test_a_send_reads_the_deal_and_with_a_stage_its_funnel() -> None:
    plain = send_reads(portal_send())
    staged = send_reads(portal_send(trigger=None, stage="C20:SEND"))

    assert [(c.name, c.method) for c in plain] == [("deal", "crm.item.get")]
    assert plain[0].params == {"entityTypeId": 2, "id": 7, "useOriginalUfNames": "Y"}
    assert [(c.name, c.method) for c in staged] == [
        ("deal", "crm.item.get"),
        ("stages", "crm.status.list"),
    ]
    assert staged[1].params == {"filter": {"ENTITY_ID": "DEAL_STAGE_20"}}


@pytest.mark.parametrize(
    ("current", "observed", "sends"),
    [
        (None, None, True),  # the first attempt
        ("https://nps.example.com/s/old", None, True),  # another request's link before
        (URL, None, True),  # no send attempted yet (a reminder: the link is there already)
        (None, Observed(None), True),  # an earlier attempt that did not get through
        (URL, Observed(None), False),  # an earlier attempt wrote the link: it was sent
        (URL, Observed("https://nps.example.com/s/old"), False),
        (URL, Observed(URL), True),  # the link was there before: the field cannot tell
    ],
)
def test_after_an_uncertain_outcome_the_link_field_tells_whether_the_send_ran(
    current: str | None, observed: Observed | None, sends: bool
) -> None:
    plan = plan_send(portal_send(), deal(**{LINK: current}), None, observed)

    if sends:
        assert isinstance(plan, Send)
        assert plan.current == current
    else:
        assert isinstance(plan, Recovered)


@pytest.mark.parametrize(
    ("the_deal", "extra", "reason"),
    [
        (None, {}, "deal 7 (survey_send.deal_id) does not exist"),
        ({"id": 7, "categoryId": 20}, {}, "deal 7 has no field UF_CRM_NPS_LINK"),
        (deal(), {"stage": "C20:GONE"}, "is not a stage of deal category 20"),
        (deal(categoryId=0), {"stage": "C20:SEND"}, "belongs to deal category 20 but deal 7 is"),
        (deal(stageId="C20:SEND"), {"stage": "C20:SEND"}, "is at stage C20:SEND already"),
    ],
)
def test_a_send_the_portal_would_ignore_is_refused(
    the_deal: dict[str, Any] | None, extra: dict[str, Any], reason: str
) -> None:
    send = portal_send(**({"trigger": None, **extra} if extra else {}))

    with pytest.raises(RefusedError) as refused:
        plan_send(send, the_deal, STAGES_20, None)

    assert reason in str(refused.value)


def test_a_send_already_moved_by_an_earlier_attempt_is_recovered_not_refused() -> None:
    send = portal_send(trigger=None, stage="C20:SEND")
    moved = deal(stageId="C20:SEND", **{LINK: URL})

    assert isinstance(plan_send(send, moved, STAGES_20, Observed(None)), Recovered)


def test_a_send_writes_the_link_then_fires_the_trigger_then_adds_the_timeline_entry() -> None:
    send = portal_send(timeline_title="NPS survey sent", timeline_text="By SMS", reminder=1)

    calls = send_calls(send)

    assert [(c.name, c.method) for c in calls] == [
        ("link", "crm.item.update"),
        ("deliver", "crm.automation.trigger"),
        ("timeline", "crm.timeline.logmessage.add"),
    ]
    assert calls[0].params == {
        "entityTypeId": 2,
        "id": 7,
        "fields": {LINK: URL},
        "useOriginalUfNames": "Y",
    }
    assert calls[1].params == {"target": "DEAL_7", "code": "NPS_SEND"}
    assert calls[2].params == {
        "fields": {
            "entityTypeId": 2,
            "entityId": 7,
            "title": "NPS survey sent",
            "text": "By SMS",
            "iconCode": "info",
        }
    }
    assert send_details(send) == {"deal_id": 7, "reminder": 1, "trigger": "NPS_SEND"}


def test_a_send_by_stage_moves_the_deal_and_without_a_title_adds_no_entry() -> None:
    send = portal_send(trigger=None, stage="C20:SEND")

    calls = send_calls(send)

    assert [c.name for c in calls] == ["link", "deliver"]
    assert calls[1] == (
        "deliver",
        "crm.item.update",
        {"entityTypeId": 2, "id": 7, "fields": {"stageId": "C20:SEND"}},
    )
    assert send_details(send) == {"deal_id": 7, "reminder": 0, "stage": "C20:SEND"}


def test_a_timeline_entry_without_a_text_repeats_its_title() -> None:
    (_, _, timeline) = send_calls(portal_send(timeline_title="NPS survey sent"))

    assert timeline.params["fields"]["text"] == "NPS survey sent"


@pytest.mark.parametrize(
    ("result", "expected"),
    [({"logMessage": {"id": 12}}, 12), ({"logMessage": {}}, None), (True, None)],
)
def test_the_timeline_entry_id_is_read_from_the_answer(result: Any, expected: int | None) -> None:
    assert timeline_id(result) == expected


@pytest.mark.parametrize(
    ("data", "expected"),
    [({"link": None}, Observed(None)), ({"link": URL}, Observed(URL)), (None, None), ({}, None)],
)
def test_what_a_send_observed_round_trips_through_json(
    data: Any, expected: Observed | None
) -> None:
    assert Observed.from_json(data) == expected
    if expected is not None:
        assert expected.to_json() == data


# --- call_task --------------------------------------------------------------------------------


def call_task(**extra: Any) -> CallTask:
    return CallTask(
        **{
            "responsible_id": 31,
            "title": "Call Anna Petrova",
            "description": "She did not answer the survey.",
            "deadline_hours": 24,
            "deal_id": 7,
            "contact_id": 3,
            **extra,
        }
    )


@pytest.mark.parametrize(
    ("extra", "bindings", "looked_up_by"),
    [
        ({}, ["D_7", "C_3"], "D_7"),
        ({"contact_id": None}, ["D_7"], "D_7"),
        ({"deal_id": None}, ["C_3"], "C_3"),
    ],
)
def test_a_call_task_is_bound_to_its_deal_and_contact_and_looked_up_by_the_first(
    extra: dict[str, Any], bindings: list[str], looked_up_by: str
) -> None:
    task = call_task(**extra)

    assert call_task_bindings(task) == bindings
    lookup = call_task_lookup(task)
    assert lookup["filter"] == {"UF_CRM_TASK": looked_up_by}
    assert lookup["order"] == {"ID": "DESC"}


def test_a_call_task_carries_the_command_id_and_its_deadline() -> None:
    now = datetime(2026, 3, 14, 10, 30, tzinfo=UTC)

    fields = call_task_add("cmd-1", call_task(deadline_hours=48), now)["fields"]

    assert fields == {
        "TITLE": "Call Anna Petrova",
        "DESCRIPTION": f"She did not answer the survey.\n{task_marker('cmd-1')}",
        "RESPONSIBLE_ID": 31,
        "DEADLINE": (now + timedelta(hours=48)).isoformat(timespec="seconds"),
        "UF_CRM_TASK": ["D_7", "C_3"],
        "XML_ID": "cmd-1",
    }
    listed = {"tasks": [{"id": 5, "xmlId": "other"}, {"id": 9, "xmlId": "cmd-1"}]}
    assert found_task(listed, "cmd-1") == 9


@pytest.mark.parametrize(
    ("existing", "deal_found", "contact_found", "expected"),
    [
        (9, False, False, 9),
        (None, True, True, None),
        (None, None, True, None),
        (None, True, None, None),
        (None, False, True, "deal 7 (call_task.deal_id) does not exist"),
        (None, True, False, "contact 3 (call_task.contact_id) does not exist"),
    ],
)
def test_a_call_task_is_found_created_or_refused(
    existing: int | None,
    deal_found: bool | None,
    contact_found: bool | None,
    expected: int | str | None,
) -> None:
    task = call_task()
    if isinstance(expected, str):
        with pytest.raises(RefusedError) as refused:
            call_task_step(task, existing=existing, deal=deal_found, contact=contact_found)
        assert expected in str(refused.value)
        return
    assert call_task_step(task, existing=existing, deal=deal_found, contact=contact_found) == (
        expected
    )


# --- outcomes ---------------------------------------------------------------------------------


def test_the_written_event_answers_the_command_with_a_stable_id() -> None:
    the_command = command(survey_send=portal_send())

    first = dispatch_written(
        the_command, "sent", entity_type="deal", entity_id=7, details={"reminder": 0}
    )
    again = dispatch_written(
        the_command, "sent", entity_type="deal", entity_id=7, details={"reminder": 0}
    )

    assert first.event_id == again.event_id
    assert first.routing_key() == "crm.written.survey_send"
    assert (first.action_id, first.action, first.outcome) == ("cmd-1", "survey_send", "sent")
    assert (first.entity_type, first.entity_id) == ("deal", 7)
    assert first.details == {"request_id": str(REQUEST), "reminder": 0}
    assert (first.correlation_id, first.causation_id) == ("corr-1", str(the_command.event_id))


@pytest.mark.parametrize(
    ("code", "wide"),
    [
        ("NO_AUTH_FOUND", True),
        ("insufficient_scope", True),
        ("ERROR_METHOD_NOT_FOUND", True),
        ("", False),
        ("NOT_FOUND", False),
        ("ERROR_CORE", False),
        ("ACCESS_DENIED", False),
        ("INVALID_ARG_VALUE", False),
    ],
)
def test_only_errors_of_the_webhook_or_portal_concern_more_than_the_command(
    code: str, wide: bool
) -> None:
    assert portal_wide(code) is wide
