"""What crm_sync creates for an answer, and how it finds it again (pure)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from services.crm_sync.entities import (
    ORIGINATOR,
    ActionError,
    created_id,
    crm_bindings,
    deadline_for,
    found_lead,
    found_task,
    item_binding,
    lead_fields,
    lead_lookup,
    manager_name,
    responsible_for,
    task_fields,
    task_lookup,
    task_marker,
    title_for,
    written_event,
)
from shared.events import PortalRef, RouteAction, ScoredAnswer
from shared.portal_config import PortalConfig, parse_portal_config

SUBMITTED = datetime(2026, 3, 14, 10, 30, tzinfo=UTC)


def action(
    kind: str = "service",
    params: dict[str, Any] | None = None,
    *,
    contact_id: int | None = 42,
    score: int = 2,
    scale: str = "0-10",
) -> RouteAction:
    answer = ScoredAnswer.model_validate(
        {
            "answer_id": "p:77:EQ-LASER-A",
            "portal": PortalRef(member_id="p"),
            "entity_type_id": 1038,
            "item_id": 77,
            "category_id": 12,
            "segment": "Laser A",
            "kind": "equipment",
            "sku": "EQ-LASER-A",
            "product_name": "Laser A",
            "scale": scale,
            "score": score,
            "category": "detractor" if score < 7 else "promoter",
            "comment": "It stopped heating",
            "service_request": True,
            "contact_id": contact_id,
            "responsible_id": 31,
            "submitted_at": SUBMITTED,
            "updated_at": SUBMITTED,
        }
    )
    return RouteAction(
        correlation_id="corr-1",
        action_id=str(uuid.uuid4()),
        action=kind,
        rule=f"builtin:{kind}",
        answer=answer,
        params=params or {},
    )


@pytest.mark.parametrize(
    ("entity_type_id", "item_id", "code"),
    [(1038, 77, "T40e_77"), (128, 6, "T80_6"), (177, 1, "Tb1_1")],
)
def test_smart_process_items_bind_by_hex_type(entity_type_id: int, item_id: int, code: str) -> None:
    assert item_binding(entity_type_id, item_id) == code


def test_a_task_binds_the_contact_and_the_item() -> None:
    assert crm_bindings(action().answer) == ["C_42", "T40e_77"]
    assert crm_bindings(action(contact_id=None).answer) == ["T40e_77"]


@pytest.mark.parametrize(
    ("kind", "params", "responsible"),
    [
        ("service", {}, 17),
        ("marketing", {}, 23),
        ("task", {}, 5),
        ("service", {"responsible_id": 99}, 99),
        ("task", {"responsible_id": "7"}, 7),
    ],
)
def test_the_responsible_comes_from_params_else_the_routing_section(
    portal_config: PortalConfig, kind: str, params: dict[str, Any], responsible: int
) -> None:
    assert responsible_for(action(kind, params), portal_config) == responsible


@pytest.mark.parametrize("bad", [0, -3, "boss", 1.5, True, None])
def test_a_bad_responsible_is_refused(portal_config: PortalConfig, bad: Any) -> None:
    with pytest.raises(ActionError, match="responsible_id"):
        responsible_for(action("service", {"responsible_id": bad}), portal_config)


def test_nothing_is_created_for_other_actions(portal_config: PortalConfig) -> None:
    with pytest.raises(ActionError, match="creates nothing"):
        responsible_for(action("contact"), portal_config)


def test_a_task_without_routing_task_needs_its_responsible(portal_config: PortalConfig) -> None:
    data = portal_config.model_dump(mode="json", exclude_none=True)
    del data["routing"]["task"]
    config = parse_portal_config(data)
    now = datetime(2026, 1, 1, 9, 0, tzinfo=UTC)
    assert responsible_for(action("task", {"responsible_id": 31}), config) == 31
    assert deadline_for(action("task"), config, now) == now + timedelta(hours=24)
    with pytest.raises(ActionError, match=r"routing\.task \(the head of sales\) is not set"):
        responsible_for(action("task"), config)


def test_the_deadline_is_hours_from_now(portal_config: PortalConfig) -> None:
    now = datetime(2026, 1, 1, 9, 0, tzinfo=UTC)
    assert deadline_for(action("task"), portal_config, now) == now + timedelta(hours=24)
    later = deadline_for(action("task", {"deadline_hours": 4}), portal_config, now)
    assert later == now + timedelta(hours=4)


def test_titles_come_from_params_or_name_product_and_score() -> None:
    assert title_for(action(params={"title": " NPS 2: Laser A "})) == "NPS 2: Laser A"
    assert title_for(action("service")) == "NPS 2/10, service request: Laser A"
    assert title_for(action("marketing", score=10)) == "NPS 10/10, promoter: Laser A"
    assert (
        title_for(action("task", score=0, scale="binary"))
        == "NPS not satisfied, detractor: Laser A"
    )


def test_a_lead_carries_the_action_id_contact_and_comment() -> None:
    the_action = action("service")
    params = lead_fields(the_action, 17)
    fields = params["fields"]
    assert fields["ORIGIN_ID"] == the_action.action_id
    assert fields["ORIGINATOR_ID"] == ORIGINATOR
    assert fields["ASSIGNED_BY_ID"] == 17
    assert fields["CONTACT_ID"] == 42
    assert "It stopped heating" in fields["COMMENTS"]
    assert "Service requested: yes" in fields["COMMENTS"]
    assert params["params"] == {"REGISTER_SONET_EVENT": "Y"}
    assert "CONTACT_ID" not in lead_fields(action("service", contact_id=None), 17)["fields"]


def test_a_lead_is_found_by_origin_and_originator() -> None:
    assert lead_lookup("a-1")["filter"] == {"ORIGIN_ID": "a-1", "ORIGINATOR_ID": ORIGINATOR}
    assert found_lead([{"ID": "12"}]) == 12
    assert found_lead([]) is None
    assert found_lead({"unexpected": True}) is None


def test_a_task_names_score_comment_product_and_manager() -> None:
    the_action = action("task")
    deadline = datetime(2026, 3, 15, 10, 30, tzinfo=UTC)
    fields = task_fields(the_action, 5, "Anna Petrova (#31)", deadline)["fields"]
    assert fields["RESPONSIBLE_ID"] == 5
    assert fields["DEADLINE"] == "2026-03-15T10:30:00+00:00"
    assert fields["UF_CRM_TASK"] == ["C_42", "T40e_77"]
    assert fields["XML_ID"] == the_action.action_id
    for part in ("2/10", "It stopped heating", "Laser A", "Anna Petrova (#31)"):
        assert part in fields["DESCRIPTION"]
    assert fields["DESCRIPTION"].splitlines()[-1] == task_marker(the_action.action_id)


def test_a_task_is_found_among_the_items_tasks_by_its_action() -> None:
    the_action = action("task")
    assert task_lookup(the_action)["filter"] == {"UF_CRM_TASK": "T40e_77"}
    mine = {"id": "8", "description": f"...\n{task_marker(the_action.action_id)}"}
    other = {"id": "7", "description": f"...\n{task_marker('another-action')}"}
    assert found_task({"tasks": [other, mine]}, the_action.action_id) == 8
    assert found_task({"tasks": [other]}, the_action.action_id) is None
    assert found_task({"tasks": [{"id": "9", "xmlId": the_action.action_id}]}, the_action.action_id)
    assert found_task([], the_action.action_id) is None


def test_created_ids_are_read_from_either_answer_shape() -> None:
    assert created_id("crm.lead.add", 3465) == 3465
    assert created_id("tasks.task.add", {"task": {"id": "3711"}}) == 3711
    with pytest.raises(ActionError, match="usable id"):
        created_id("tasks.task.add", {"task": []})


@pytest.mark.parametrize(
    ("user", "user_id", "name"),
    [
        ({"NAME": "Anna", "LAST_NAME": "Petrova"}, 31, "Anna Petrova (#31)"),
        ({"NAME": "Anna", "LAST_NAME": ""}, 31, "Anna (#31)"),
        ({}, 31, "user (#31)"),
        (None, 31, "user #31 (not found)"),
        (None, None, "not assigned"),
    ],
)
def test_manager_names(user: dict[str, str] | None, user_id: int | None, name: str) -> None:
    assert manager_name(user, user_id) == name


def test_the_written_event_of_an_action_always_has_the_same_id() -> None:
    the_action = action("marketing")
    first = written_event(the_action, "created", entity_type="lead", entity_id=5, details={})
    again = written_event(the_action, "existing", entity_type="lead", entity_id=5, details={})
    assert first.event_id == again.event_id
    assert first.routing_key() == "crm.written.marketing"
    assert (first.correlation_id, first.causation_id) == ("corr-1", str(the_action.event_id))
