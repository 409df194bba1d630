"""A sales deal the hydrator read → its one `sale.closed`, when it is a closed sale of a funnel
`dispatch.sales` watches (docs/ingest.md, Sales closed; docs/dispatch.md, Triggers).

The pure `services.ingest.sales` decides; this module reads what the decision needs (the funnel's
stages when the deal gives no `stageSemanticId`), skips a deal announced before without reading
more, reads the product rows (batched across concurrent messages) and records the deal as
announced in the statement that queues `sale.closed` (`store.record_sale`), so a redelivery, a
second path or a race announces nothing twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import asyncpg

from services.ingest import store
from services.ingest.sale_reads import FunnelCatalog, ProductRowReader
from services.ingest.sales import (
    ClosedSale,
    NotASale,
    SaleDecision,
    SaleSource,
    StagesNeeded,
    decide_sale,
    sold_products,
)
from shared.events import SaleClosed, WebhookReceived
from shared.outbox import Outbox
from shared.portal_config import PortalConfig

SaleOutcome = Literal["sale_closed", "sale_known", "not_a_sale"]


class StagesOutdatedError(Exception):
    """The deal's stage is not among its funnel's stages and those were read only moments ago:
    not permanent, the message is retried and the stages re-read once they may be stale."""


@dataclass(frozen=True)
class Announcement:
    outcome: SaleOutcome
    """`sale_closed`: announced now; `sale_known`: announced before; `not_a_sale`: see reason."""
    reason: str | None = None
    sale: SaleClosed | None = None


class SaleAnnouncer:
    """Announces closed sales: one `sale.closed` per (portal, deal)."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        outbox: Outbox,
        funnels: FunnelCatalog,
        products: ProductRowReader,
    ) -> None:
        self._pool = pool
        self._outbox = outbox
        self._funnels = funnels
        self._products = products

    async def announce(
        self, event: WebhookReceived, deal: dict[str, Any], config: PortalConfig
    ) -> Announcement:
        """Decide whether `deal` (read for `event`) is a closed sale and announce it once.
        Raises `AnswerError` on a deal field that cannot be read."""
        decision = await self._decide(event, deal, config)
        if isinstance(decision, NotASale):
            return Announcement("not_a_sale", decision.reason)
        portal = event.portal
        async with self._pool.acquire() as conn:
            known = await store.announced_sales(conn, portal.key, [decision.deal_id])
        if known:
            return Announcement("sale_known", "announced before")
        rows = await self._products.rows(decision.deal_id)
        sale = decision.event(
            portal,
            _source(event),
            sold_products(decision.deal_id, rows),
            correlation_id=event.correlation_id,
            causation_id=str(event.event_id),
        )
        async with self._pool.acquire() as conn:
            new = await store.record_sale(self._outbox, conn, sale)
        return Announcement("sale_closed" if new else "sale_known", None, sale)

    async def _decide(
        self, event: WebhookReceived, deal: dict[str, Any], config: PortalConfig
    ) -> ClosedSale | NotASale:
        """The decision, with the funnel's stages read (from the cache, then once more) when
        the deal gives no stage semantics."""
        robot = event.source == "robot"
        decision: SaleDecision = decide_sale(deal, config, None, robot=robot)
        if not isinstance(decision, StagesNeeded):
            return decision
        funnel = await self._funnels.funnel(decision.category_id)
        decision = decide_sale(deal, config, funnel, robot=robot)
        if not isinstance(decision, StagesNeeded):
            return decision
        fresh = await self._funnels.refresh(decision.category_id)
        if fresh is None:
            raise StagesOutdatedError(
                f"deal {event.item_id}: stage {decision.stage_id} is not among the stages of"
                f" deal category {decision.category_id}, read moments ago; retrying later"
            )
        decision = decide_sale(deal, config, fresh, robot=robot)
        if isinstance(decision, StagesNeeded):
            return NotASale(
                f"stage {decision.stage_id} is not among the stages of deal category"
                f" {decision.category_id} (crm.status.list)"
            )
        return decision


def _source(event: WebhookReceived) -> SaleSource:
    """How the sale reached ingest (a reread is ingest's own read after an event)."""
    return "event" if event.source == "reread" else event.source
