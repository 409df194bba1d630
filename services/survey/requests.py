"""What a survey request asks about, resolved against the portal YAML (pure: no I/O).

A request names a smart-process segment of `survey.segments` (by category id or name): an
equipment segment asks about its one product, a cosmetics segment about every product it lists.
Or it names an NPS deal and its deal survey of `deal_surveys` (found from the deal's category, or
by the survey's name or category id): one score on the deal survey's scale and the comment.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from shared.events import Scale
from shared.portal_config import (
    CosmeticsSegment,
    DealSurvey,
    EquipmentSegment,
    PortalConfig,
    Product,
)

Language = Literal["ru", "en"]
LANGUAGES: tuple[Language, ...] = ("ru", "en")
DEFAULT_PORTAL = "default"
"""The portal of a request when the portal YAML pins no `portal.member_id`."""


class RequestError(ValueError):
    """The request names something the portal YAML does not have; the message says what."""


@dataclass(frozen=True)
class SurveyRequest:
    """One personal survey: who is asked, about what, in which language."""

    request_id: uuid.UUID
    portal: str
    contact_id: int
    category_id: int
    sku: str | None
    """The equipment product asked about; None for a cosmetics segment (all its products); a
    deal survey's product for a deal request."""
    lang: Language
    deal_id: int | None = None
    """The NPS deal asked about (`category_id` is then the deal survey's deal category)."""


def find_segment(config: PortalConfig, segment: str) -> CosmeticsSegment | EquipmentSegment:
    """The segment named by its category id or its name (case-insensitive)."""
    for candidate in config.survey.segments:
        if segment.strip() == str(candidate.category_id) or (
            candidate.name is not None and candidate.name.casefold() == segment.strip().casefold()
        ):
            return candidate
    known = ", ".join(
        f"{s.category_id}" + (f" ({s.name})" if s.name else "") for s in config.survey.segments
    )
    raise RequestError(f"segment {segment!r} is not in survey.segments; known: {known}")


def new_request(
    config: PortalConfig,
    *,
    contact_id: int,
    segment: str,
    product: str | None,
    lang: str,
    portal: str,
) -> SurveyRequest:
    """A fresh request (random id), checked against the portal YAML."""
    if contact_id <= 0:
        raise RequestError(f"contact {contact_id} is not a contact id; expected a positive number")
    if lang not in LANGUAGES:
        raise RequestError(f"language {lang!r} is not offered; expected one of ru, en")
    chosen = find_segment(config, segment)
    sku: str | None = None
    if isinstance(chosen, EquipmentSegment):
        if product is not None and product != chosen.product.sku:
            raise RequestError(
                f"segment {chosen.category_id} asks about {chosen.product.sku};"
                f" --product {product} is not it"
            )
        sku = chosen.product.sku
    elif product is not None:
        raise RequestError(
            f"segment {chosen.category_id} is a cosmetics segment: it asks about every product"
            " it lists; leave --product out"
        )
    return SurveyRequest(
        request_id=uuid.uuid4(),
        portal=portal,
        contact_id=contact_id,
        category_id=chosen.category_id,
        sku=sku,
        lang=lang,
    )


def _known_deal_surveys(config: PortalConfig) -> str:
    return ", ".join(f"{d.category_id} ({d.name})" for d in config.deal_surveys) or "none"


def find_deal_survey(config: PortalConfig, survey: str) -> DealSurvey:
    """The deal survey named by its deal category id or its name (case-insensitive)."""
    wanted = survey.strip()
    for candidate in config.deal_surveys:
        if wanted == str(candidate.category_id) or candidate.name.casefold() == wanted.casefold():
            return candidate
    raise RequestError(
        f"deal survey {survey!r} is not in deal_surveys; known: {_known_deal_surveys(config)}"
    )


def deal_survey_of(config: PortalConfig, deal_id: int, deal_category: int) -> DealSurvey:
    """The deal survey of a deal in `deal_category` (read from the portal)."""
    found = config.deal_survey(deal_category)
    if found is None:
        raise RequestError(
            f"deal {deal_id} is in deal category {deal_category}, which is no deal survey's;"
            f" known: {_known_deal_surveys(config)} (or name one with --survey)"
        )
    return found


def _positive(value: Any) -> int | None:
    text = str(value or "").strip()
    return int(text) if text.isdigit() and int(text) > 0 else None


def resolve_deal(
    config: PortalConfig,
    deal_id: int,
    *,
    survey: str | None,
    contact: int | None,
    deal: Mapping[str, Any] | None,
) -> tuple[DealSurvey, int]:
    """The deal survey and the contact a link about `deal_id` is for: `--survey` and
    `--contact` when given, otherwise the deal's category and contact (`deal`: the deal as
    `crm.item.get` read it, None when the portal has no such deal or it was not read)."""
    read = deal or {}
    if deal is None and (survey is None or contact is None):
        raise RequestError(f"deal {deal_id} is not in the portal (crm.item.get found no such deal)")
    if survey is not None:
        chosen = find_deal_survey(config, survey)
    else:
        chosen = deal_survey_of(config, deal_id, _positive(read.get("categoryId")) or 0)
    if contact is None:
        contact = _positive(read.get("contactId"))
        if contact is None:
            raise RequestError(f"deal {deal_id} has no contact; give the contact with --contact")
    return chosen, contact


def new_deal_request(
    survey: DealSurvey, *, deal_id: int, contact_id: int, lang: str, portal: str
) -> SurveyRequest:
    """A fresh request (random id) about the NPS deal `deal_id` of `survey`."""
    if deal_id <= 0:
        raise RequestError(f"deal {deal_id} is not a deal id; expected a positive number")
    if contact_id <= 0:
        raise RequestError(f"contact {contact_id} is not a contact id; expected a positive number")
    if lang not in LANGUAGES:
        raise RequestError(f"language {lang!r} is not offered; expected one of ru, en")
    return SurveyRequest(
        request_id=uuid.uuid4(),
        portal=portal,
        contact_id=contact_id,
        category_id=survey.category_id,
        sku=survey.product.sku,
        lang=lang,
        deal_id=deal_id,
    )


@dataclass(frozen=True)
class Asked:
    """What a request's page asks: the products, on which scale, whether as a cosmetics
    segment (a tested box and a score each), with the service box, and the deal survey."""

    products: list[Product]
    scale: Scale
    cosmetics: bool = False
    service_box: bool = False
    deal_survey: DealSurvey | None = None


def asked(config: PortalConfig, request: SurveyRequest) -> Asked:
    """What the request's page asks (RequestError when the portal YAML no longer has it)."""
    if request.deal_id is not None:
        deal = config.deal_survey(request.category_id)
        if deal is None:
            raise RequestError(f"deal category {request.category_id} is no longer a deal survey")
        if deal.product.sku != request.sku:
            raise RequestError(f"deal survey {deal.name} no longer asks about {request.sku}")
        return Asked([deal.product], deal.scale or config.nps.scale, deal_survey=deal)
    segment = config.survey.segment(request.category_id)
    if segment is None:
        raise RequestError(f"segment {request.category_id} is no longer in survey.segments")
    if isinstance(segment, EquipmentSegment):
        if segment.product.sku != request.sku:
            raise RequestError(f"segment {request.category_id} no longer asks about {request.sku}")
        return Asked([segment.product], config.nps.scale, service_box=True)
    return Asked(list(segment.products), config.nps.scale, cosmetics=True)
