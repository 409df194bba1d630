"""Ingest's state as tests reset it, and the portal YAML's sales funnels as tests set them."""

from __future__ import annotations

from typing import Any

import asyncpg

from shared.portal_config import EquipmentSegment, PortalConfig

SENDER = "Demo Clinic <nps@example.com>"


async def forget_served_portal(pool: asyncpg.Pool) -> None:
    """Let the next authentic event teach ingest its portal again, as in a new deployment: tests
    of the unpinned app share one database but each sends from portals of its own."""
    await pool.execute("DELETE FROM ingest_portal")


def with_sales(config: PortalConfig, *funnels: int, **changes: Any) -> PortalConfig:
    """`config` with a `dispatch` section watching the sales `funnels`, validated as the portal
    YAML would be; `changes` replace top-level keys first. Each funnel asks the first deal
    survey, or, without one, one equipment survey per product sold (product 101 mapped to the
    first equipment segment)."""
    data = config.model_dump(mode="json", exclude_none=True)
    data.update(changes)
    surveys = data.get("deal_surveys") or []
    dispatch: dict[str, Any] = {"email": {"sender": SENDER}}
    if surveys:
        dispatch["sales"] = [{"funnel": f, "survey": surveys[0]["name"]} for f in funnels]
    else:
        sku = next(s.product.sku for s in config.survey.segments if isinstance(s, EquipmentSegment))
        dispatch["sales"] = [{"funnel": f, "products": True} for f in funnels]
        dispatch["products"] = {"101": sku}
    data["dispatch"] = dispatch
    return PortalConfig.model_validate(data)
