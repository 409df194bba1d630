"""What the dashboard reads besides `run_report`, through the owners' read modules: the filter
choices and the latest detractors and service requests (scoring), crm_sync's conflicts, the
dead-letter queue sizes (`services.ops.dlq`), crm_sync's lanes (their queues and their
requests in the shared rate budget), when the surveys behind answers were sent (crm_sync's
survey items and dispatch's register) and the call tasks' outcomes (crm_sync), shaped for the
views.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

import aio_pika
from aio_pika.exceptions import AMQPException

from services.crm_sync import read as crm_sync_read
from services.dispatch import read as dispatch_read
from services.reports.asked import answer_sent_at, call_task_command
from services.reports.filters import Filters
from services.reports.views import FilterOptions, ProductInfo
from services.scoring import read as scoring_read
from shared.bitrix24.budget import lane_usage
from shared.bitrix24.lanes import BULK, URGENT
from shared.db import Conn
from shared.events import DEAL_ENTITY_TYPE_ID
from shared.logging import get_logger
from shared.topology import CRM_SYNC_ACTIONS, CRM_SYNC_URGENT

ATTENTION_LIMIT = 50
CONFLICTS_LIMIT = 50
LANE_MINUTES = 15
LANE_QUEUES: dict[str, str] = {URGENT: CRM_SYNC_URGENT.name, BULK: CRM_SYNC_ACTIONS.name}
BROKER_TIMEOUT_S = 2.0

log = get_logger(__name__)


async def filter_options(conn: Conn, portal: str | None) -> FilterOptions:
    """Portals, segments, products (with their segments) and managers that have answers."""
    choices = await scoring_read.choices(conn, portal)
    return FilterOptions(
        portals=choices.portals,
        segments=choices.segments,
        catalogue={
            p.sku: ProductInfo(name=p.name, segments=p.segments, kinds=p.kinds)
            for p in choices.products
        },
        managers=choices.managers,
    )


async def attention(
    conn: Conn, filters: Filters, limit: int = ATTENTION_LIMIT
) -> list[dict[str, Any]]:
    """The latest current detractors and service requests, narrowed by the filters."""
    return await scoring_read.attention(
        conn,
        portal=filters.key,
        segment=filters.segment,
        product=filters.product,
        manager=filters.manager,
        start=filters.date_from,
        end=filters.date_to,
        limit=limit,
    )


def _stored(value: Any) -> str | None:
    return None if value is None else json.dumps(value, ensure_ascii=False)


async def conflicts(
    conn: Conn, portal: str | None, limit: int = CONFLICTS_LIMIT
) -> tuple[int | None, list[dict[str, Any]]]:
    """How many conflicts crm_sync recorded and the latest ones; (None, []) without its table."""
    async with conn.transaction(readonly=True):
        total = await crm_sync_read.conflict_count(conn, portal=portal)
        if total is None:
            return None, []
        views = await crm_sync_read.list_conflicts(conn, portal=portal, limit=limit)
    return total, [
        {
            "id": v.id,
            "contact_id": v.contact_id,
            "field": v.field,
            "reason": v.reason,
            "current_value": _stored(v.current),
            "proposed_value": _stored(v.proposed),
            "answer_id": v.answer_id,
            "created_at": v.created_at,
        }
        for v in views
    ]


async def lane_depths(rabbitmq_url: str | None) -> dict[str, int] | None:
    """Messages waiting in each lane's queue; None when the broker cannot say."""
    if rabbitmq_url is None:
        return None
    try:
        connection = await aio_pika.connect(rabbitmq_url, timeout=BROKER_TIMEOUT_S)
        async with connection:
            channel = await connection.channel()
            underlay = await channel.get_underlay_channel()
            depths: dict[str, int] = {}
            for queue in LANE_QUEUES.values():
                declared = await underlay.queue_declare(queue, passive=True)
                depths[queue] = declared.message_count or 0
            return depths
    except (OSError, TimeoutError, AMQPException) as exc:
        log.warning("lane_queues_unknown", error=type(exc).__name__)
        return None


async def lanes(conn: Conn) -> dict[str, tuple[int, float]]:
    """Requests per lane in the last `LANE_MINUTES` minutes, with the seconds they waited."""
    return await lane_usage(conn, LANE_MINUTES)


async def sent_dates(
    conn: Conn, records: Sequence[Mapping[str, Any]], portal: str | None
) -> dict[str, datetime]:
    """When the survey behind each answer of `records` (all-ratings records) was sent, by answer
    id (answers dispatch did not ask for are left out): an NPS deal through the register's
    `nps_deal_id`, a smart-process item through the survey page request crm_sync wrote into it
    (`crm_survey_items`) and that request in the register."""
    if not records:
        return {}
    deals = [r["item_id"] for r in records if r["entity_type_id"] == DEAL_ENTITY_TYPE_ID]
    items = [r["item_id"] for r in records if r["entity_type_id"] != DEAL_ENTITY_TYPE_ID]
    deal_sent = await dispatch_read.deal_sent_at(conn, portal, deals) if deals else {}
    item_requests = await crm_sync_read.survey_item_requests(conn, portal, items) if items else []
    requests = (
        await dispatch_read.sent_requests(conn, [request for _, request in item_requests])
        if item_requests
        else []
    )
    return answer_sent_at(records, deal_sent, item_requests, requests)


async def deal_selection(
    conn: Conn, query: scoring_read.RatingsQuery, portal: str | None, deal_id: int
) -> tuple[scoring_read.RatingsQuery, list[dict[str, Any]]]:
    """`query` narrowed to one deal's answers, and that deal's requests in dispatch's register
    (the deal card's tab): the answers of the deal itself as an NPS deal, of the NPS deals its
    requests created and of the smart-process items the survey page requests of its segment
    surveys were written into (`crm_survey_items`); all of `portal` (the session's) only."""
    requests = await dispatch_read.deal_requests(conn, portal, deal_id)
    deals = {deal_id} | {r["nps_deal_id"] for r in requests if r["nps_deal_id"] is not None}
    segment = [r["request_id"] for r in requests if r["kind"] == "segment"]
    items = await crm_sync_read.request_items(conn, portal, segment) if segment else []
    chosen = scoring_read.DealItems(deals=tuple(sorted(deals)), items=tuple(items))
    return replace(query, deal=chosen), requests


async def call_task_outcomes(
    conn: Conn, records: Sequence[Mapping[str, Any]]
) -> dict[str, crm_sync_read.CommandOutcome]:
    """crm_sync's outcome of the call task of each unanswered request of `records`, by command
    id (the register records the task's id, not why it was not created)."""
    commands: dict[str, list[str]] = {}
    for r in records:
        if r["state"] == "unanswered" and r["call_task_id"] is None:
            commands.setdefault(r["portal"], []).append(call_task_command(r["request_id"]))
    outcomes: dict[str, crm_sync_read.CommandOutcome] = {}
    for portal, ids in commands.items():
        outcomes.update(await crm_sync_read.command_outcomes(conn, portal, ids))
    return outcomes
