"""What the dashboard reads besides `run_report`, through the owners' read modules: the filter
choices and the latest detractors and service requests (scoring), crm_sync's conflicts, the
dead-letter queue sizes (`services.ops.dlq`), and crm_sync's lanes (their queues and their
requests in the shared rate budget), shaped for the views.
"""

from __future__ import annotations

import json
from typing import Any

import aio_pika
from aio_pika.exceptions import AMQPException

from services.crm_sync import read as crm_sync_read
from services.reports.filters import Filters
from services.reports.views import FilterOptions, ProductInfo
from services.scoring import read as scoring_read
from shared.bitrix24.budget import lane_usage
from shared.bitrix24.lanes import BULK, URGENT
from shared.db import Conn
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
        portal=filters.portal,
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
