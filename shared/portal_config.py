"""The portal YAML (DESIGN §3): survey mapping, contact fields we own, routing, rate plan.

`load_portal_config()` validates the file and raises `ConfigError` whose message names each bad
key by its dotted path and says what was expected.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from shared.events import Category, Kind, Scale

PLAN_RATES: dict[str, tuple[float, int]] = {"standard": (2.0, 50), "enterprise": (5.0, 250)}


class ConfigError(ValueError):
    """The portal YAML is missing, unreadable or invalid; the message names every bad key."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Rate(_Strict):
    per_second: float = Field(gt=0)
    burst: int = Field(ge=1)


class PortalSection(_Strict):
    plan: Literal["standard", "enterprise", "custom"] = "standard"
    rate: Rate | None = None
    member_id: str | None = None

    @model_validator(mode="after")
    def _rate_matches_plan(self) -> PortalSection:
        if self.plan != "custom" and self.rate is not None:
            raise ValueError("'rate' is only used with plan: custom; remove it or set plan: custom")
        return self

    def effective_rate(self) -> Rate | None:
        """The request budget to respect; None = unlimited (an on-premise portal without limits)."""
        if self.plan == "custom":
            return self.rate
        per_second, burst = PLAN_RATES[self.plan]
        return Rate(per_second=per_second, burst=burst)


class NpsSection(_Strict):
    scale: Scale = "0-10"


class SurveyFields(_Strict):
    contact: str = "contactId"
    responsible: str = "assignedById"
    comment: str | None = None
    service_request: str | None = None


class Product(_Strict):
    sku: str = Field(min_length=1)
    name: str = Field(min_length=1)


class CosmeticsProduct(Product):
    tested_field: str = Field(min_length=1)
    score_field: str = Field(min_length=1)


class ContactFields(_Strict):
    """The ONLY contact fields b24-nps may ever write for a segment."""

    score: str = Field(min_length=1)
    date: str | None = None
    history: str | None = None


class CosmeticsSegment(_Strict):
    category_id: int = Field(ge=0)
    name: str | None = None
    kind: Literal["cosmetics"]
    products: list[CosmeticsProduct] = Field(min_length=1)


class EquipmentSegment(_Strict):
    category_id: int = Field(ge=0)
    name: str | None = None
    kind: Literal["equipment"]
    product: Product
    score_field: str = Field(min_length=1)
    contact_fields: ContactFields | None = None


Segment = Annotated[CosmeticsSegment | EquipmentSegment, Field(discriminator="kind")]


class Survey(_Strict):
    entity_type_id: int = Field(ge=128, description="the NPS smart process (crm.type.list)")
    fields: SurveyFields = SurveyFields()
    segments: list[Segment] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_categories(self) -> Survey:
        seen: set[int] = set()
        for segment in self.segments:
            if segment.category_id in seen:
                raise ValueError(f"category_id {segment.category_id} appears in two segments")
            seen.add(segment.category_id)
        return self

    def segment(self, category_id: int) -> CosmeticsSegment | EquipmentSegment | None:
        return next((s for s in self.segments if s.category_id == category_id), None)


class ResponsibleAction(_Strict):
    responsible_id: int = Field(gt=0)


class TaskAction(ResponsibleAction):
    deadline_hours: int = Field(default=24, gt=0)


class ScoreRange(_Strict):
    min: int | None = None
    max: int | None = None


class RuleMatch(_Strict):
    kind: list[Kind] | None = None
    category: list[Category] | None = None
    score: ScoreRange | None = None
    sku: list[str] | None = None
    segment: list[int] | None = None
    service_request: bool | None = None


class Rule(_Strict):
    """A declarative routing rule: when `match` holds, publish `route.<action>` with `params`."""

    name: str = Field(min_length=1, pattern=r"^[a-z0-9][a-z0-9_-]*$")
    match: RuleMatch = RuleMatch()
    action: str = Field(min_length=1, pattern=r"^[a-z0-9][a-z0-9_]*$")
    params: dict[str, Any] = Field(default_factory=dict)


class Routing(_Strict):
    service: ResponsibleAction
    marketing: ResponsibleAction
    task: TaskAction
    rules: list[Rule] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique_rule_names(self) -> Routing:
        names = [rule.name for rule in self.rules]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"rule names must be unique; repeated: {', '.join(duplicates)}")
        return self


class PortalConfig(_Strict):
    portal: PortalSection = PortalSection()
    nps: NpsSection = NpsSection()
    survey: Survey
    routing: Routing


def _describe(error: Any) -> str:
    internal = ("function-after", "tagged-union")
    loc = ".".join(str(part) for part in error["loc"] if not str(part).startswith(internal))
    return f"{loc or '(top level)'}: {error['msg']}"


def parse_portal_config(data: Any, source: str = "portal config") -> PortalConfig:
    """Validate already-loaded YAML data."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping with portal, nps, survey and routing keys")
    try:
        return PortalConfig.model_validate(data)
    except ValidationError as exc:
        problems = "\n".join(f"  - {_describe(err)}" for err in exc.errors())
        raise ConfigError(f"{source} is invalid:\n{problems}") from None


def load_portal_config(path: Path) -> PortalConfig:
    """Read and validate the portal YAML at `path`."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"{path}: no such file (copy config/portal.example.yaml there or set NPS_CONFIG)"
        ) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    return parse_portal_config(data, source=str(path))
