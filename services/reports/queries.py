"""What the dashboard reads besides `run_report`, through the owners' read modules: the filter
choices and the latest detractors and service requests (scoring), crm_sync's conflicts, and the
dead-letter queue sizes (`services.ops.dlq`), shaped for the views.
"""

from __future__ import annotations

import json
from typing import Any

from services.crm_sync import read as crm_sync_read
from services.reports.filters import Filters
from services.reports.views import FilterOptions, ProductInfo
from services.scoring import read as scoring_read
from shared.db import Conn

ATTENTION_LIMIT = 50
CONFLICTS_LIMIT = 50


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
