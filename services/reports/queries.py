"""What the dashboard reads besides `run_report`: the filter choices, the latest detractors and
service requests, crm_sync's conflicts, and the dead-letter queue sizes from RabbitMQ.

Every query runs read-only with JIT off; every value is a `$n` parameter.
"""

from __future__ import annotations

from typing import Any

import aio_pika
from aio_pika.exceptions import AMQPException

from services.ops.dlq import counts
from services.reports.filters import Filters
from services.reports.views import FilterOptions, ProductInfo
from services.scoring.report import filter_conditions
from shared.db import Conn
from shared.logging import get_logger
from shared.topology import CORE_QUEUES

log = get_logger(__name__)

ATTENTION_LIMIT = 50
CONFLICTS_LIMIT = 50
BROKER_TIMEOUT_S = 2.0

_ANSWERED = "d.promoters + d.passives + d.detractors > 0"


async def filter_options(conn: Conn, portal: str | None) -> FilterOptions:
    """Portals, segments, products (with their segments) and managers that have answers."""
    where = " AND d.portal = $1" if portal is not None else ""
    params = [portal] if portal is not None else []
    async with conn.transaction(readonly=True):
        await conn.execute("SET LOCAL jit = off")
        portals = await conn.fetch("SELECT DISTINCT portal FROM scoring_segments ORDER BY portal")
        segments = await conn.fetch(
            "SELECT DISTINCT ON (d.category_id) d.category_id, d.name"  # noqa: S608 - fixed text
            f" FROM scoring_segments d WHERE true{where} ORDER BY d.category_id, d.portal",
            *params,
        )
        products = await conn.fetch(
            "SELECT DISTINCT ON (d.sku) d.sku, d.name FROM scoring_products d"  # noqa: S608
            f" WHERE true{where} ORDER BY d.sku, d.portal",
            *params,
        )
        placements = await conn.fetch(
            "SELECT DISTINCT p.sku, s.name, s.kind FROM"  # noqa: S608 - fixed text
            " (SELECT DISTINCT d.portal, d.category_id, d.sku FROM scoring_daily d"
            f"  WHERE {_ANSWERED}{where}) p"
            " JOIN scoring_segments s ON s.portal = p.portal AND s.category_id = p.category_id"
            " ORDER BY p.sku, s.name",
            *params,
        )
        managers = await conn.fetch(
            "SELECT DISTINCT d.responsible_id FROM scoring_manager_monthly d"  # noqa: S608
            f" WHERE d.responsible_id > 0 AND {_ANSWERED}{where} ORDER BY d.responsible_id",
            *params,
        )
    segment_names: dict[str, list[str]] = {}
    kinds: dict[str, list[str]] = {}
    for row in placements:
        segment_names.setdefault(row["sku"], []).append(row["name"])
        if row["kind"] not in kinds.setdefault(row["sku"], []):
            kinds[row["sku"]].append(row["kind"])
    return FilterOptions(
        portals=tuple(row["portal"] for row in portals),
        segments=tuple((row["category_id"], row["name"]) for row in segments),
        catalogue={
            row["sku"]: ProductInfo(
                name=row["name"],
                segments=tuple(segment_names.get(row["sku"], ())),
                kinds=tuple(kinds.get(row["sku"], ())),
            )
            for row in products
        },
        managers=tuple(row["responsible_id"] for row in managers),
    )


async def attention(
    conn: Conn, filters: Filters, limit: int = ATTENTION_LIMIT
) -> list[dict[str, Any]]:
    """The latest current detractors and service requests (a ticked service checkbox counts
    even without a score), newest first (as crm_sync orders answers: submitted, updated, then the
    later item of the same second; one item's products by sku), narrowed by the filters."""
    conditions = ["d.is_current", "(d.category = 'detractor' OR d.service_request)"]
    params: list[Any] = []
    filter_conditions(
        conditions,
        params,
        portal=filters.portal,
        segment=filters.segment,
        product=filters.product,
        manager=filters.manager,
        day="d.day",
        start=filters.date_from,
        end=filters.date_to,
    )
    params.append(limit)
    sql = (
        "SELECT d.answer_id, d.entity_type_id, d.item_id, d.segment, d.sku,"  # noqa: S608 - fixed fragments, values are $n
        " d.product_name, d.score, d.category, d.comment, d.service_request, d.contact_id,"
        " d.responsible_id, d.submitted_at FROM scoring_answers d"
        f" WHERE {' AND '.join(conditions)}"
        " ORDER BY d.submitted_at DESC, d.updated_at DESC, d.item_id DESC, d.answer_id"
        f" LIMIT ${len(params)}"
    )
    async with conn.transaction(readonly=True):
        await conn.execute("SET LOCAL jit = off")
        return [dict(row) for row in await conn.fetch(sql, *params)]


async def conflicts(
    conn: Conn, portal: str | None, limit: int = CONFLICTS_LIMIT
) -> tuple[int | None, list[dict[str, Any]]]:
    """How many conflicts crm_sync recorded and the latest ones; (None, []) without its table."""
    where = " WHERE portal = $1" if portal is not None else ""
    params = [portal] if portal is not None else []
    async with conn.transaction(readonly=True):
        if await conn.fetchval("SELECT to_regclass('crm_conflicts')") is None:
            return None, []
        total = await conn.fetchval(
            f"SELECT count(*) FROM crm_conflicts{where}",  # noqa: S608 - fixed text
            *params,
        )
        rows = await conn.fetch(
            "SELECT id, contact_id, field, reason, current_value::text,"  # noqa: S608
            " proposed_value::text, answer_id, created_at"
            f" FROM crm_conflicts{where} ORDER BY id DESC LIMIT ${len(params) + 1}",
            *params,
            limit,
        )
    return int(total), [dict(row) for row in rows]


def queue_names() -> list[str]:
    """The core queues whose dead letters the ops view shows."""
    return [spec.name for spec in CORE_QUEUES]


async def dead_letter_sizes(
    rabbitmq_url: str | None, connect_timeout_s: float = BROKER_TIMEOUT_S
) -> dict[str, int] | None:
    """Dead letters waiting per core queue; None when the broker cannot say (down, no topology)."""
    if rabbitmq_url is None:
        return None
    try:
        connection = await aio_pika.connect(rabbitmq_url, timeout=connect_timeout_s)
        async with connection:
            return await counts(await connection.channel())
    except (OSError, TimeoutError, AMQPException) as exc:
        log.warning("dead_letters_unknown", error=type(exc).__name__)
        return None
