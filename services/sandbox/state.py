"""Everything a portal stores, as one serialisable model (the ``--state-file`` content)."""

from typing import Any, Literal

from pydantic import BaseModel, Field

from services.sandbox.app_state import AppState
from services.sandbox.schema import EntityType


class Change(BaseModel):
    """One field change of one entity: what it was, what it became, when and by which method."""

    field: str
    before: Any
    after: Any
    time: str
    method: str


class Handler(BaseModel):
    """A registered outgoing-event handler (one per event, as Bitrix24 binds them)."""

    id: int
    event: str
    url: str


class ProductLayout(BaseModel):
    sku: str
    name: str
    score_field: str
    tested_field: str | None = None


class SegmentLayout(BaseModel):
    category_id: int
    name: str
    kind: Literal["cosmetics", "equipment"]
    products: list[ProductLayout]
    contact_fields: dict[str, str] = Field(default_factory=dict)


class SurveyLayout(BaseModel):
    """Where a seeded portal keeps the survey answers (UPPER field names)."""

    entity_type_id: int
    contact_field: str
    responsible_field: str
    comment_field: str | None = None
    service_field: str | None = None
    segments: list[SegmentLayout]


class DealSurveyLayout(BaseModel):
    """An NPS deal funnel of a seeded portal (UPPER field names)."""

    category_id: int
    name: str
    score_field: str
    comment_field: str | None = None
    sale_deal_field: str | None = None


class Product(BaseModel):
    """A product of the catalog, which product rows refer to by ``productId``."""

    id: int
    name: str
    price: float
    measure_code: int = 796
    measure_name: str = "pcs"


class PortalState(BaseModel):
    entity_types: dict[int, EntityType] = Field(default_factory=dict)
    entities: dict[int, dict[int, dict[str, Any]]] = Field(default_factory=dict)
    history: dict[int, dict[int, list[Change]]] = Field(default_factory=dict)
    users: dict[int, dict[str, Any]] = Field(default_factory=dict)
    tasks: dict[int, dict[str, Any]] = Field(default_factory=dict)
    comments: list[dict[str, Any]] = Field(default_factory=list)
    handlers: list[Handler] = Field(default_factory=list)
    counters: dict[str, int] = Field(default_factory=dict)
    survey: SurveyLayout | None = None
    deal_surveys: list[DealSurveyLayout] = Field(default_factory=list)
    stage_history: list[dict[str, Any]] = Field(default_factory=list)
    """``crm.stagehistory.list`` records of deals, oldest first."""
    products: dict[int, Product] = Field(default_factory=dict)
    product_rows: list[dict[str, Any]] = Field(default_factory=list)
    """Every product row of every owner, as ``crm.item.productrow.list`` returns them."""
    trigger_codes: list[str] = Field(default_factory=list)
    """Automation triggers configured on the portal (by code): a fired one is ``matched``."""
    automation: list[dict[str, Any]] = Field(default_factory=list)
    """Each ``crm.automation.trigger`` call: target, code, the entity, when, matched."""
    log_messages: list[dict[str, Any]] = Field(default_factory=list)
    """Timeline log entries (``crm.timeline.logmessage.add``), with their owner."""
    id_base: int = 0
    """Ids of records, tasks, comments… count on from here: a named portal's differ from the
    others' (a leak across portals shows as an id its portal does not have)."""
    app: AppState = Field(default_factory=AppState)
    """The registered application on this portal (named portals; see ``application``)."""
