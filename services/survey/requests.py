"""What a survey request asks about, resolved against the portal YAML (pure: no I/O).

A request names a smart-process segment of `survey.segments` (by category id or name): an
equipment segment asks about its one product, a cosmetics segment about every product it lists.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Literal

from shared.portal_config import CosmeticsSegment, EquipmentSegment, PortalConfig, Product

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
    """The equipment product asked about; None for a cosmetics segment (all its products)."""
    lang: Language


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


def asked_products(
    config: PortalConfig, request: SurveyRequest
) -> tuple[CosmeticsSegment | EquipmentSegment, list[Product]]:
    """The request's segment and the products its page asks about (RequestError when the
    portal YAML no longer has them)."""
    segment = config.survey.segment(request.category_id)
    if segment is None:
        raise RequestError(f"segment {request.category_id} is no longer in survey.segments")
    if isinstance(segment, EquipmentSegment):
        if segment.product.sku != request.sku:
            raise RequestError(f"segment {request.category_id} no longer asks about {request.sku}")
        return segment, [segment.product]
    return segment, list(segment.products)
