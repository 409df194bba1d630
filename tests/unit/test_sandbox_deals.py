"""Deals on the sandbox portal: funnels and their stages, the deal methods and events."""

from pathlib import Path
from typing import Any

import pytest

from services.sandbox.limits import Limits
from services.sandbox.persistence import load_portal, save_portal
from services.sandbox.portal import SandboxPortal
from services.sandbox.seed import answer_nps_deals, open_nps_deals, seed_demo
from tests.support import FakeClock

CONFIG = Path(__file__).parents[2] / "config" / "portal.example.yaml"
NPS_FUNNEL = 20


@pytest.fixture
def portal() -> SandboxPortal:
    portal = SandboxPortal(limits=Limits.off(), clock=FakeClock(1_760_000_000.0))
    seed_demo(portal, CONFIG, contacts=20, seed=7)
    return portal


def ok(portal: SandboxPortal, method: str, params: dict[str, Any]) -> Any:
    status, body = portal.call(method, params)
    assert status == 200, body
    return body["result"]


def test_status_list_gives_each_funnels_stages_with_their_semantics(
    portal: SandboxPortal,
) -> None:
    nps = ok(portal, "crm.status.list", {"filter": {"ENTITY_ID": "DEAL_STAGE_20"}})
    assert [(s["STATUS_ID"], s["SEMANTICS"], s["CATEGORY_ID"]) for s in nps] == [
        ("C20:NEW", None, "20"),
        ("C20:WON", "S", "20"),
        ("C20:LOSE", "F", "20"),
        ("C20:APOLOGY", "F", "20"),
    ]
    sales = ok(portal, "crm.status.list", {"filter": {"ENTITY_ID": "DEAL_STAGE"}})
    assert [(s["STATUS_ID"], s["CATEGORY_ID"]) for s in sales][-2:] == [
        ("WON", None),
        ("LOSE", None),
    ]
    assert ok(portal, "crm.status.list", {"filter": {"ENTITY_ID": "DEAL_STAGE_99"}}) == []


def test_deal_categories_and_fields_come_from_the_portal_yaml(portal: SandboxPortal) -> None:
    categories = ok(portal, "crm.category.list", {"entityTypeId": 2})["categories"]
    assert [(c["id"], c["isDefault"]) for c in categories] == [(0, "Y"), (20, "N")]
    fields = ok(portal, "crm.deal.fields", {})
    assert {"UF_CRM_NPS_SCORE", "UF_CRM_NPS_COMMENT", "UF_CRM_NPS_SALE_DEAL"} <= set(fields)


def test_a_stage_of_another_funnel_is_answered_true_and_the_stage_stays(
    portal: SandboxPortal,
) -> None:
    deal_id = ok(portal, "crm.deal.add", {"fields": {"TITLE": "NPS", "CATEGORY_ID": NPS_FUNNEL}})
    assert ok(portal, "crm.deal.get", {"id": deal_id})["STAGE_ID"] == "C20:NEW"
    assert ok(portal, "crm.deal.update", {"id": deal_id, "fields": {"STAGE_ID": "WON"}}) is True
    assert ok(portal, "crm.deal.get", {"id": deal_id})["STAGE_ID"] == "C20:NEW"
    ok(portal, "crm.deal.update", {"id": deal_id, "fields": {"STAGE_ID": "C20:WON"}})
    assert ok(portal, "crm.deal.get", {"id": deal_id})["STAGE_ID"] == "C20:WON"


def test_deals_read_as_items_of_entity_type_2(portal: SandboxPortal) -> None:
    deal_id = ok(
        portal,
        "crm.deal.add",
        {"fields": {"CATEGORY_ID": NPS_FUNNEL, "UF_CRM_NPS_SCORE": 4, "ASSIGNED_BY_ID": 31}},
    )
    params = {
        "entityTypeId": 2,
        "filter": {"@id": [deal_id]},
        "select": ["*"],
        "useOriginalUfNames": "Y",
    }
    [item] = ok(portal, "crm.item.list", params)["items"]
    assert (item["id"], item["categoryId"], item["stageId"]) == (deal_id, 20, "C20:NEW")
    assert (item["UF_CRM_NPS_SCORE"], item["assignedById"]) == (4, 31)
    assert item["updatedTime"]


def test_deal_events_carry_only_the_id_and_a_funnel_move_is_its_own_event(
    portal: SandboxPortal,
) -> None:
    portal.register_handler("http://ingest.local/hook", ["ONCRMDEALADD", "ONCRMDEALUPDATE"])
    portal.register_handler("http://ingest.local/hook", ["ONCRMDEALMOVETOCATEGORY"])
    deal_id = ok(portal, "crm.deal.add", {"fields": {"CATEGORY_ID": NPS_FUNNEL}})
    ok(portal, "crm.deal.update", {"id": deal_id, "fields": {"UF_CRM_NPS_SCORE": 9}})
    ok(portal, "crm.deal.update", {"id": deal_id, "fields": {"CATEGORY_ID": 0}})
    queued = portal.take_outbox()
    assert [d.event for d in queued] == [
        "ONCRMDEALADD",
        "ONCRMDEALUPDATE",
        "ONCRMDEALMOVETOCATEGORY",
    ]
    assert f"data%5BFIELDS%5D%5BID%5D={deal_id}&" in queued[0].body
    assert "ENTITY_TYPE_ID" not in queued[0].body


def test_tasks_bind_to_deals(portal: SandboxPortal) -> None:
    fields = {"TITLE": "NPS 3/10", "RESPONSIBLE_ID": 5, "UF_CRM_TASK": ["D_7", "C_2"]}
    ok(portal, "tasks.task.add", {"fields": fields})
    listed = ok(portal, "tasks.task.list", {"filter": {"UF_CRM_TASK": "D_7"}})["tasks"]
    assert [task["title"] for task in listed] == ["NPS 3/10"]


def test_nps_deals_open_unanswered_for_won_sales_then_get_answered(
    portal: SandboxPortal,
) -> None:
    opened = open_nps_deals(portal, 5, seed=1)
    deals = portal.crm.records(2)
    for deal_id in opened:
        deal = deals[deal_id]
        sale = deals[deal["UF_CRM_NPS_SALE_DEAL"]]
        assert (deal["CATEGORY_ID"], deal["STAGE_ID"], deal["UF_CRM_NPS_SCORE"]) == (
            20,
            "C20:NEW",
            None,
        )
        assert (sale["CATEGORY_ID"], sale["STAGE_ID"]) == (0, "WON")
        assert (deal["CONTACT_ID"], deal["ASSIGNED_BY_ID"]) == (
            sale["CONTACT_ID"],
            sale["ASSIGNED_BY_ID"],
        )
    answer_nps_deals(portal, opened, seed=1)
    assert all(0 <= deals[deal_id]["UF_CRM_NPS_SCORE"] <= 10 for deal_id in opened)


def test_a_portal_saved_before_deals_existed_gets_them_when_loaded(tmp_path: Path) -> None:
    saved = SandboxPortal(limits=Limits.off())
    del saved.state.entity_types[2]
    del saved.state.entities[2]
    path = tmp_path / "state.json"
    save_portal(saved, path)
    loaded = load_portal(path, limits=Limits.off())
    assert ok(loaded, "crm.deal.list", {}) == []
    assert [s["STATUS_ID"] for s in ok(loaded, "crm.status.list", {})][-1] == "LOSE"


def test_a_portal_saved_before_stage_semantics_gets_them_when_loaded(tmp_path: Path) -> None:
    saved = SandboxPortal(limits=Limits.off())
    won = saved.crm.add(2, {"TITLE": "Won", "STAGE_ID": "WON"}, method="test")["ID"]
    del saved.state.entity_types[2].fields["STAGE_SEMANTIC_ID"]
    for deal in saved.crm.records(2).values():
        del deal["STAGE_SEMANTIC_ID"]
    path = tmp_path / "state.json"
    save_portal(saved, path)
    loaded = load_portal(path, limits=Limits.off())
    assert ok(loaded, "crm.deal.get", {"id": won})["STAGE_SEMANTIC_ID"] == "S"
    item = ok(loaded, "crm.item.get", {"entityTypeId": 2, "id": won})["item"]
    assert item["stageSemanticId"] == "S"
