"""NPS deals answered on the sandbox portal, routed by the router's rules and carried out by
crm_sync on the real PostgreSQL: the right stage for each deal, one task per negative answer, a
deal a person moved left alone and reported, an edited answer moving the deal again only when the
outcome changes; every action delivered twice (a redelivery) has one effect."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import pytest

from services.crm_sync.coalescer import CommandCoalescer
from services.crm_sync.contacts import ContactWriter
from services.crm_sync.creates import EntityWriter
from services.crm_sync.handlers import Writers, handle_action
from services.crm_sync.read import list_conflicts
from services.crm_sync.stages import StageWriter, stage_field
from services.router.rules import plan_actions
from services.sandbox.portal import SandboxPortal
from services.sandbox.seed import answer_nps_deals, open_nps_deals
from shared.events import Category, NpsScored, PortalRef, ScoredAnswer
from shared.outbox import Outbox
from shared.portal_config import PortalConfig
from tests.support.crm_sync import client_for, new_portal, portal_ref

DEAL = 2
WON, LOSE, APOLOGY = "C20:WON", "C20:LOSE", "C20:APOLOGY"
MANAGERS = {31: "Anna Petrova", 32: "Dmitry Sokolov", 33: "Elena Volkova"}


@pytest.fixture
def portal() -> SandboxPortal:
    return new_portal(contacts=30)


@pytest.fixture
async def writers(
    pool: asyncpg.Pool, outbox: Outbox, portal: SandboxPortal, portal_config: PortalConfig
) -> AsyncIterator[Writers]:
    async with client_for(portal) as client:
        coalescer = CommandCoalescer(client, window_s=0.02)
        yield Writers(
            contacts=ContactWriter(pool, outbox, coalescer, portal_config),
            entities=EntityWriter(pool, outbox, coalescer, portal_config),
            stages=StageWriter(pool, outbox, coalescer),
        )


def category_of(score: int) -> Category:
    return "promoter" if score >= 9 else "passive" if score >= 7 else "detractor"


def scored(ref: PortalRef, deal: dict[str, Any], *, version: int = 0) -> NpsScored:
    """The scored answer of an NPS deal as it stands on the portal."""
    score = int(deal["UF_CRM_NPS_SCORE"])
    created = datetime.fromisoformat(str(deal["DATE_CREATE"]))
    answer = ScoredAnswer(
        answer_id=f"{ref.key}:D_{deal['ID']}:DEAL-SALES",
        portal=ref,
        entity_type_id=DEAL,
        item_id=deal["ID"],
        category_id=20,
        segment="After the sale",
        kind="deal",
        sku="DEAL-SALES",
        product_name="Sales",
        scale="0-10",
        score=score,
        category=category_of(score),
        comment=deal["UF_CRM_NPS_COMMENT"],
        contact_id=deal["CONTACT_ID"],
        responsible_id=deal["ASSIGNED_BY_ID"],
        submitted_at=created,
        updated_at=created + timedelta(minutes=version),
    )
    return NpsScored(correlation_id=f"corr-{deal['ID']}", answer=answer)


async def route_twice(event: NpsScored, config: PortalConfig, writers: Writers) -> None:
    """The router's actions for `event`, each delivered twice."""
    for action in plan_actions(event, config):
        await handle_action(action, writers)
        await handle_action(action, writers)


def stage_moves(portal: SandboxPortal, deal_id: int) -> list[str]:
    """The stages a deal was moved to after it was opened."""
    return [
        str(change.after)
        for change in portal.crm.history(DEAL, deal_id)
        if change.field == "STAGE_ID" and change.before is not None
    ]


def tasks_of(portal: SandboxPortal, deal_id: int) -> list[dict[str, Any]]:
    return [t for t in portal.state.tasks.values() if f"D_{deal_id}" in t["UF_CRM_TASK"]]


async def test_200_answered_nps_deals_reach_the_right_stage_and_detractors_get_one_task(
    portal: SandboxPortal, writers: Writers, portal_config: PortalConfig
) -> None:
    ref = portal_ref()
    deal_ids = answer_nps_deals(portal, open_nps_deals(portal, 200, seed=5), seed=5)
    deals = portal.crm.records(DEAL)
    await asyncio.gather(
        *(route_twice(scored(ref, deals[i]), portal_config, writers) for i in deal_ids)
    )
    head_of_sales = portal_config.routing.task
    assert head_of_sales is not None
    negatives = 0
    for deal_id in deal_ids:
        deal = deals[deal_id]
        score = deal["UF_CRM_NPS_SCORE"]
        negative = score <= 6
        assert stage_moves(portal, deal_id) == [LOSE if negative else WON], deal_id
        tasks = tasks_of(portal, deal_id)
        if not negative:
            assert tasks == []
            continue
        negatives += 1
        [task] = tasks
        assert task["RESPONSIBLE_ID"] == head_of_sales.responsible_id
        assert f"C_{deal['CONTACT_ID']}" in task["UF_CRM_TASK"]
        description = task["DESCRIPTION"]
        assert f"Score: {score}/10 (detractor)" in description
        assert f"Customer comment: {deal['UF_CRM_NPS_COMMENT'] or '(none)'}" in description
        manager = deal["ASSIGNED_BY_ID"]
        assert f"Responsible manager: {MANAGERS.get(manager, '')}".strip() in description
        assert f"(#{manager})" in description
        assert f"NPS deal {deal_id} (After the sale)" in description
    assert negatives > 20
    assert len(portal.state.tasks) == negatives


async def test_a_deal_a_person_moved_is_left_alone_and_reported(
    pool: asyncpg.Pool, portal: SandboxPortal, writers: Writers, portal_config: PortalConfig
) -> None:
    ref = portal_ref()
    closed, elsewhere = answer_nps_deals(portal, open_nps_deals(portal, 2, seed=1), seed=1)
    portal.crm.update(DEAL, closed, {"STAGE_ID": APOLOGY}, method="crm.deal.update")
    portal.crm.update(DEAL, elsewhere, {"CATEGORY_ID": 0}, method="crm.deal.update")
    deals = portal.crm.records(DEAL)
    for deal_id in (closed, elsewhere):
        await route_twice(scored(ref, deals[deal_id]), portal_config, writers)
    assert stage_moves(portal, closed) == [APOLOGY]
    assert deals[elsewhere]["CATEGORY_ID"] == 0
    async with pool.acquire() as conn:
        conflicts = await list_conflicts(conn, portal=ref.key)
    reasons = {c.field: c.reason for c in conflicts}
    assert reasons == {
        stage_field(closed): "a person moved the deal to the failure stage C20:APOLOGY"
        " before b24-nps did",
        stage_field(elsewhere): "the deal is in funnel 0 now, not the NPS funnel 20",
    }
    assert {c.contact_id for c in conflicts} == {
        deals[closed]["CONTACT_ID"],
        deals[elsewhere]["CONTACT_ID"],
    }


async def test_an_edited_answer_moves_the_deal_again_only_when_the_outcome_changes(
    portal: SandboxPortal, writers: Writers, portal_config: PortalConfig
) -> None:
    ref = portal_ref()
    [deal_id] = open_nps_deals(portal, 1, seed=2)
    deal = portal.crm.records(DEAL)[deal_id]
    edits = [(3, "detractor"), (5, "detractor"), (8, "passive"), (10, "promoter"), (1, "detractor")]
    for version, (score, _) in enumerate(edits):
        portal.crm.update(DEAL, deal_id, {"UF_CRM_NPS_SCORE": score}, method="test")
        await route_twice(scored(ref, deal, version=version), portal_config, writers)
    assert stage_moves(portal, deal_id) == [LOSE, WON, LOSE]
    assert len(tasks_of(portal, deal_id)) == 1  # one detractor answer: one task


async def test_an_older_answer_arriving_late_does_not_undo_a_newer_move(
    portal: SandboxPortal, writers: Writers, portal_config: PortalConfig
) -> None:
    ref = portal_ref()
    [deal_id] = open_nps_deals(portal, 1, seed=3)
    deal = portal.crm.records(DEAL)[deal_id]
    portal.crm.update(DEAL, deal_id, {"UF_CRM_NPS_SCORE": 2}, method="test")
    older = scored(ref, deal, version=0)
    portal.crm.update(DEAL, deal_id, {"UF_CRM_NPS_SCORE": 10}, method="test")
    await route_twice(scored(ref, deal, version=1), portal_config, writers)
    await route_twice(older, portal_config, writers)
    assert stage_moves(portal, deal_id) == [WON]


async def test_a_move_the_portal_answers_true_to_but_does_not_make_is_not_taken_for_done(
    pool: asyncpg.Pool,
    portal: SandboxPortal,
    writers: Writers,
    portal_config: PortalConfig,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A person moves the deal to the sales funnel between crm_sync's read and its move: the
    portal answers the move `true` and keeps the deal where it is; the verify read catches it."""
    ref = portal_ref()
    [deal_id] = answer_nps_deals(portal, open_nps_deals(portal, 1, seed=4), seed=4)
    original = portal.call
    moved: list[bool] = []

    def call(
        method: str, params: Any, *, auth: tuple[str, str] | None = None, arrived: bool = False
    ) -> Any:
        reply = original(method, params, auth=auth, arrived=arrived)
        if not moved and "crm.item.get" in json.dumps(params):
            portal.crm.update(DEAL, deal_id, {"CATEGORY_ID": 0}, method="crm.deal.update")
            moved.append(True)
        return reply

    monkeypatch.setattr(portal, "call", call)
    event = scored(ref, portal.crm.records(DEAL)[deal_id])
    [stage] = [a for a in plan_actions(event, portal_config) if a.action == "stage"]
    written = await writers.stages.move(stage)
    assert written is not None
    assert written.outcome == "conflict"
    assert str(written.details["reason"]).startswith("the portal accepted the move to C20:")
    assert portal.crm.records(DEAL)[deal_id]["STAGE_ID"] == "NEW"
    async with pool.acquire() as conn:
        [conflict] = await list_conflicts(conn, portal=ref.key)
    assert conflict.field == stage_field(deal_id)
