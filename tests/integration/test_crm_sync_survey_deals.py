"""Deal surveys' answers of the survey page written into the sandbox portal's NPS deals: the score
and comment fields, a change written once, redelivered and late versions writing nothing, the
deal's update event fired for ingest, a deal that is gone dead-lettered."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import asyncpg
import pytest

from services.crm_sync.coalescer import CommandCoalescer
from services.crm_sync.surveys import SurveyWriter
from services.sandbox.crm import DEAL_UPDATE
from services.sandbox.portal import SandboxPortal
from services.sandbox.seed import open_nps_deals
from shared.events import PortalRef, ProductAnswer, SurveyAnswered
from shared.messaging import PermanentError
from shared.outbox import Outbox
from shared.portal_config import PortalConfig
from tests.support.crm_sync import client_for, new_portal

DEAL = 2
HOOK = "http://ingest.test/bitrix24/events"


def answered(
    request_id: uuid.UUID, deal_id: int, score: int, *, version: int = 1, comment: str | None = None
) -> SurveyAnswered:
    return SurveyAnswered(
        correlation_id=f"survey-{request_id}",
        request_id=request_id,
        version=version,
        portal=PortalRef(),
        contact_id=3,
        category_id=20,
        scale="0-10",
        answers=[ProductAnswer(sku="DEAL-SALES", name="Sales", score=score)],
        comment=comment,
        answered_at=datetime(2026, 3, 14, 10, 30, tzinfo=UTC),
        deal_id=deal_id,
    )


def writer(pool: asyncpg.Pool, portal: SandboxPortal, config: PortalConfig) -> SurveyWriter:
    coalescer = CommandCoalescer(client_for(portal), window_s=0.01)
    return SurveyWriter(pool, Outbox(), coalescer, config)


def changes(portal: SandboxPortal, deal_id: int, field: str) -> list[object]:
    return [c.after for c in portal.crm.history(DEAL, deal_id) if c.field == field]


def updates_fired(portal: SandboxPortal, deal_id: int) -> int:
    return sum(1 for d in portal.deliveries if d.event == DEAL_UPDATE and d.item_id == deal_id)


@pytest.fixture
def portal() -> SandboxPortal:
    portal = new_portal(contacts=5)
    portal.register_handler(HOOK, [DEAL_UPDATE])
    return portal


async def test_a_deal_answer_fills_the_nps_deals_score_and_comment(
    pool: asyncpg.Pool, portal: SandboxPortal, portal_config: PortalConfig
) -> None:
    (deal_id,) = open_nps_deals(portal, 1, seed=1)
    request = uuid.uuid4()

    written = await writer(pool, portal, portal_config).write(
        answered(request, deal_id, 4, comment="Delivery was late")
    )

    assert written is not None
    assert (written.action, written.outcome, written.entity_type, written.entity_id) == (
        "survey",
        "patched",
        "deal",
        deal_id,
    )
    deal = portal.crm.records(DEAL)[deal_id]
    assert (deal["UF_CRM_NPS_SCORE"], deal["UF_CRM_NPS_COMMENT"]) == (4, "Delivery was late")
    assert deal["CATEGORY_ID"] == 20
    assert updates_fired(portal, deal_id) == 1
    row = await pool.fetchrow(
        "SELECT item_id, version FROM crm_survey_items WHERE request_id = $1", request
    )
    assert row is not None
    assert (row["item_id"], row["version"]) == (deal_id, 1)


async def test_a_changed_answer_is_written_once_and_never_by_an_older_version(
    pool: asyncpg.Pool, portal: SandboxPortal, portal_config: PortalConfig
) -> None:
    (deal_id,) = open_nps_deals(portal, 1, seed=2)
    request = uuid.uuid4()
    w = writer(pool, portal, portal_config)
    first = answered(request, deal_id, 3, comment="Slow")
    second = answered(request, deal_id, 9, version=2)

    assert await w.write(first) is not None
    assert await w.write(first) is None  # a redelivery
    assert await w.write(second) is not None
    assert await w.write(second) is None  # a redelivery of the change
    assert await w.write(first) is None  # late: older than what the deal holds

    assert changes(portal, deal_id, "UF_CRM_NPS_SCORE") == [3, 9]
    assert changes(portal, deal_id, "UF_CRM_NPS_COMMENT") == ["Slow", None]
    assert updates_fired(portal, deal_id) == 2
    queued = await pool.fetchval(
        "SELECT count(*) FROM outbox WHERE routing_key = 'crm.written.survey'"
        " AND body->>'entity_type' = 'deal' AND body->>'action_id' LIKE $1",
        f"survey:{request}:%",
    )
    assert queued == 2


async def test_an_answer_about_a_deal_that_is_gone_is_dead_lettered(
    pool: asyncpg.Pool, portal: SandboxPortal, portal_config: PortalConfig
) -> None:
    request = uuid.uuid4()
    with pytest.raises(PermanentError, match="NPS deal 999999 no longer exists"):
        await writer(pool, portal, portal_config).write(answered(request, 999999, 8))
    stored = await pool.fetchval(
        "SELECT count(*) FROM crm_survey_items WHERE request_id = $1", request
    )
    assert stored == 0
