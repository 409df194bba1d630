"""Routing of deal-survey answers as tables: the stage move and the head of sales' task."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from services.router.rules import action_id, builtin_rule, plan_actions
from shared.events import Category, NpsScored, PortalRef, ScoredAnswer
from shared.portal_config import PortalConfig, parse_portal_config

SUBMITTED = datetime(2025, 3, 4, 10, 0, tzinfo=UTC)
NPS_FUNNEL = 20


def deal_scored(category: Category, version: int = 0, deal_id: int = 77) -> NpsScored:
    score = {"promoter": 10, "passive": 8, "detractor": 2}[category]
    answer = ScoredAnswer(
        answer_id=f"m1:D_{deal_id}:DEAL-SALES",
        portal=PortalRef(member_id="m1"),
        entity_type_id=2,
        item_id=deal_id,
        category_id=NPS_FUNNEL,
        segment="After the sale",
        kind="deal",
        sku="DEAL-SALES",
        product_name="Sales",
        scale="0-10",
        score=score,
        category=category,
        comment="Slow delivery",
        contact_id=42,
        responsible_id=32,
        submitted_at=SUBMITTED,
        updated_at=SUBMITTED + timedelta(minutes=version),
    )
    return NpsScored(correlation_id=f"corr-{deal_id}", answer=answer)


def with_changes(portal_config: PortalConfig, **survey: Any) -> PortalConfig:
    data = portal_config.model_dump(mode="json", exclude_none=True)
    data["deal_surveys"][0].update(survey)
    return parse_portal_config(data)


@pytest.mark.parametrize(
    ("category", "stages", "expected"),
    [
        ("promoter", {}, [("stage", "success")]),
        ("passive", {}, [("stage", "success")]),
        ("detractor", {}, [("stage", "failure"), ("task", None)]),
        ("passive", {"passive": "leave"}, []),
        ("detractor", {"detractor": "leave"}, [("task", None)]),
        ("promoter", {"promoter": "failure"}, [("stage", "failure")]),
    ],
)
def test_deal_answers_cause_a_stage_move_and_a_task_for_detractors(
    portal_config: PortalConfig,
    category: Category,
    stages: dict[str, str],
    expected: list[tuple[str, str | None]],
) -> None:
    config = with_changes(portal_config, stages=stages) if stages else portal_config
    actions = plan_actions(deal_scored(category), config)
    assert [(a.action, a.params.get("outcome")) for a in actions] == expected
    assert all(a.params["survey"] == "After the sale" for a in actions)


def test_no_task_without_routing_task(portal_config: PortalConfig) -> None:
    data = portal_config.model_dump(mode="json", exclude_none=True)
    del data["routing"]["task"]
    actions = plan_actions(deal_scored("detractor"), parse_portal_config(data))
    assert [a.action for a in actions] == ["stage"]


def test_each_answer_version_gets_its_own_stage_action_and_one_task(
    portal_config: PortalConfig,
) -> None:
    first = plan_actions(deal_scored("detractor", version=0), portal_config)
    again = plan_actions(deal_scored("detractor", version=0), portal_config)
    edited = plan_actions(deal_scored("detractor", version=5), portal_config)
    assert [a.action_id for a in first] == [a.action_id for a in again]
    assert first[0].action_id != edited[0].action_id  # the stage: crm_sync decides
    assert first[1].action_id == edited[1].action_id  # the task: once per detractor answer
    answer_id = first[0].answer.answer_id
    version = f"failure|{SUBMITTED.isoformat()}"
    assert first[0].action_id == action_id(answer_id, builtin_rule("stage"), version)


def test_deal_answers_make_no_leads_and_no_contact_patch(portal_config: PortalConfig) -> None:
    categories: tuple[Category, ...] = ("promoter", "passive", "detractor")
    for category in categories:
        actions = plan_actions(deal_scored(category), portal_config)
        assert {a.action for a in actions} <= {"stage", "task"}


def test_a_rule_cannot_send_the_stage_action(portal_config: PortalConfig) -> None:
    data = portal_config.model_dump(mode="json", exclude_none=True)
    data["routing"]["rules"] = [{"name": "move", "action": "stage"}]
    with pytest.raises(ValueError, match="action 'stage' is the built-in move of an NPS deal"):
        parse_portal_config(data)
