"""A sales deal → whether it is a closed sale dispatch asks about, and its `sale.closed` (pure: no
I/O; docs/dispatch.md, Triggers; docs/ingest.md, Sales closed).

A deal counts when its funnel (`categoryId`) is one of `dispatch.sales` and its stage is a
success stage. The stage's semantics come from the deal's `stageSemanticId` when the portal gives
it ("S" success, "P" in progress, "F" failure), else from the funnel's stages as
`crm.status.list` lists them (`shared.deal_stages`): no stage id is ever typed. When neither
tells (no `stageSemanticId`, the stage not among the funnel's stages known), the decision is
`StagesNeeded`: the caller reads the funnel's stages (again) and decides once more. A robot call
(the outgoing-webhook robot on the won stage) is a decision of its own: only the funnel counts.

`sale.closed` is announced once per (portal, deal), with a deterministic id (`sale_event_id`),
so two paths announcing the same deal at once still give one message id.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from services.ingest.mapping import AnswerError, read_id, read_time, read_whole
from shared.deal_stages import Funnel
from shared.events import PortalRef, SaleClosed, SoldProduct, derived_id
from shared.portal_config import PortalConfig

SaleSource = Literal["event", "robot", "sweep"]
CLOSED_AT_FIELDS = ("movedTime", "closedate", "updatedTime")
"""Where a deal's close time is read, the first the portal gives: `movedTime` is the moment of
its last stage move (at a success stage: the win, to the second); `closedate` is a date a person
may set (the planned close), kept only when the portal gives no `movedTime`."""
_SEMANTIC_IDS = {"S": True, "P": False, "F": False}
"""`stageSemanticId`: success, in progress, failure."""


@dataclass(frozen=True)
class ClosedSale:
    """A sales deal of a watched funnel at a success stage (or named by the stage's robot)."""

    deal_id: int
    category_id: int
    stage_id: str
    contact_id: int | None
    company_id: int | None
    responsible_id: int | None
    closed_at: datetime

    def event(
        self,
        portal: PortalRef,
        source: SaleSource,
        products: tuple[SoldProduct, ...],
        *,
        correlation_id: str,
        causation_id: str | None,
    ) -> SaleClosed:
        """The deal's one `sale.closed` (its id derived from the portal and the deal alone)."""
        return SaleClosed(
            event_id=sale_event_id(portal, self.deal_id),
            correlation_id=correlation_id,
            causation_id=causation_id,
            portal=portal,
            source=source,
            deal_id=self.deal_id,
            category_id=self.category_id,
            stage_id=self.stage_id,
            contact_id=self.contact_id,
            company_id=self.company_id,
            responsible_id=self.responsible_id,
            closed_at=self.closed_at,
            products=products,
        )


@dataclass(frozen=True)
class NotASale:
    """The deal is no closed sale of a watched funnel; `reason` says why."""

    reason: str


@dataclass(frozen=True)
class StagesNeeded:
    """The deal gives no `stageSemanticId` and its stage is not among the funnel's stages at
    hand: read the funnel's stages (again) and decide once more."""

    category_id: int
    stage_id: str


SaleDecision = ClosedSale | NotASale | StagesNeeded


def sale_event_id(portal: PortalRef, deal_id: int) -> uuid.UUID:
    """The id of a deal's `sale.closed`: the same whichever path (event, robot, sweep) and
    message announce it."""
    return derived_id("sale.closed", portal.key, deal_id)


def sales_funnels(config: PortalConfig) -> tuple[int, ...]:
    """The deal categories `dispatch.sales` watches (none without a dispatch section)."""
    dispatch = config.dispatch
    return () if dispatch is None else tuple(trigger.funnel for trigger in dispatch.sales)


def in_sales_funnel(deal: Mapping[str, Any], config: PortalConfig) -> bool:
    """Whether the deal's `categoryId` is a funnel `dispatch.sales` watches (False when it
    cannot be read: the deal is then no sale, whatever else it is)."""
    try:
        category = read_whole(deal, "categoryId", deal.get("id"))
    except AnswerError:
        return False
    return category in sales_funnels(config)


def decide_sale(
    deal: Mapping[str, Any], config: PortalConfig, funnel: Funnel | None, *, robot: bool = False
) -> SaleDecision:
    """Whether `deal` (as `crm.item.list` gives it for entityTypeId 2) is a closed sale to
    announce. `funnel` is the deal category's stages when read (None: not yet); `robot` when the
    stage's robot asked (its placement is the decision: the stage is not looked at). Raises
    `AnswerError` on a field that cannot be read."""
    deal_id = read_whole(deal, "id", "?")
    category_id = read_whole(deal, "categoryId", deal_id)
    funnels = sales_funnels(config)
    if category_id not in funnels:
        watched = ", ".join(str(funnel) for funnel in funnels) or "none"
        return NotASale(
            f"deal category {category_id} is no sales funnel under dispatch.sales"
            f" (funnels: {watched})"
        )
    stage_id = deal.get("stageId")
    if not isinstance(stage_id, str) or not stage_id.strip():
        raise AnswerError(deal_id, "stageId", stage_id, "the deal's stage id")
    if not robot:
        semantic = str(deal.get("stageSemanticId") or "").strip().upper()
        won = _SEMANTIC_IDS.get(semantic)
        how = f"stageSemanticId {semantic}"
        if won is None:
            stage = None if funnel is None else funnel.stage(stage_id)
            if stage is None:
                return StagesNeeded(category_id, stage_id)
            won = stage.semantics == "success"
            how = f"a {stage.semantics} stage of funnel {category_id}"
        if not won:
            return NotASale(f"stage {stage_id} is no success stage ({how})")
    return ClosedSale(
        deal_id=deal_id,
        category_id=category_id,
        stage_id=stage_id,
        contact_id=read_id(deal, "contactId", deal_id),
        company_id=read_id(deal, "companyId", deal_id),
        responsible_id=read_id(deal, "assignedById", deal_id),
        closed_at=closed_at(deal, deal_id),
    )


def closed_at(deal: Mapping[str, Any], deal_id: object) -> datetime:
    """When the deal closed: its `movedTime`, else `closedate`, else `updatedTime` (the first the
    portal gives; raises `AnswerError` when none is given or it is no time)."""
    for field in CLOSED_AT_FIELDS:
        raw = deal.get(field)
        if raw not in (None, ""):
            return read_time(deal, field, deal_id)
    raise AnswerError(deal_id, CLOSED_AT_FIELDS[-1], None, "the time the deal closed")


def sold_products(deal_id: int, rows: Iterable[Any]) -> tuple[SoldProduct, ...]:
    """A deal's product rows (`crm.item.productrow.list`: `productId`, `productName`,
    `quantity`), in the portal's order. A row without a catalogue product has product id 0."""
    products = []
    for index, row in enumerate(rows):
        if not isinstance(row, Mapping):
            continue
        where = f"productRows[{index}]"
        product_field = f"{where}.productId"
        product_id = read_id({product_field: row.get("productId")}, product_field, deal_id)
        quantity = row.get("quantity")
        try:
            amount = 1.0 if quantity in (None, "") else float(quantity)
        except (TypeError, ValueError):
            amount = math.nan
        if not math.isfinite(amount) or amount < 0:
            raise AnswerError(deal_id, f"{where}.quantity", quantity, "a number, at least 0")
        name = row.get("productName")
        products.append(
            SoldProduct(
                product_id=product_id or 0,
                name=str(name).strip() if name is not None else "",
                quantity=amount,
            )
        )
    return tuple(products)
