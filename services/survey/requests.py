"""What a survey request asks about, resolved against the portal YAML (pure: no I/O).

A request names a smart-process segment of `survey.segments` (by category id or name): an
equipment segment asks about its one product, a cosmetics segment about every product it lists.
Or it names an NPS deal and its deal survey of `deal_surveys` (found from the deal's category, or
by the survey's name or category id): one score on the deal survey's scale and the comment.

A request is made by hand (`nps survey link`: `new_request`, `new_deal_request`) or by dispatch
(`survey.requested`: `requested`), checked the same way.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal

from shared.events import PortalRef, Scale, SurveyRequested
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
    correlation_id: str | None = None
    """Dispatch's correlation id of a request it made (`survey.requested`), carried on by the
    request's events; None for a link made by hand."""

    @property
    def portal_ref(self) -> PortalRef:
        """The portal as the request's events name it."""
        return PortalRef(member_id=None if self.portal == DEFAULT_PORTAL else self.portal)

    @property
    def events_correlation_id(self) -> str:
        """The correlation id of the request's events: dispatch's, else one of its own."""
        return self.correlation_id or f"survey-{self.request_id}"


def _check_contact(contact_id: int) -> None:
    if contact_id <= 0:
        raise RequestError(f"contact {contact_id} is not a contact id; expected a positive number")


def _language(lang: str) -> Language:
    if lang not in LANGUAGES:
        raise RequestError(f"language {lang!r} is not offered; expected one of ru, en")
    return lang


def _check_deal(deal_id: int) -> None:
    if deal_id <= 0:
        raise RequestError(f"deal {deal_id} is not a deal id; expected a positive number")


def _segment_sku(
    chosen: CosmeticsSegment | EquipmentSegment, product: str | None, named: str
) -> str | None:
    """The sku a request about `chosen` stores: an equipment segment's own product (`product`,
    when given, must be it); None for a cosmetics segment, which asks about all its products
    (`product` must be left out). `named` is how the caller calls `product` in messages."""
    if isinstance(chosen, EquipmentSegment):
        if product is not None and product != chosen.product.sku:
            raise RequestError(
                f"segment {chosen.category_id} asks about {chosen.product.sku};"
                f" {named} {product} is not it"
            )
        return chosen.product.sku
    if product is not None:
        raise RequestError(
            f"segment {chosen.category_id} is a cosmetics segment: it asks about every product"
            f" it lists; leave {named} out"
        )
    return None


def find_segment(config: PortalConfig, segment: str) -> CosmeticsSegment | EquipmentSegment:
    """The segment named by its category id or its name (case-insensitive)."""
    for candidate in config.survey.segments:
        if segment.strip() == str(candidate.category_id) or (
            candidate.name is not None and candidate.name.casefold() == segment.strip().casefold()
        ):
            return candidate
    raise RequestError(
        f"segment {segment!r} is not in survey.segments; known: {_known_segments(config)}"
    )


def _known_segments(config: PortalConfig) -> str:
    return (
        ", ".join(
            f"{s.category_id}" + (f" ({s.name})" if s.name else "") for s in config.survey.segments
        )
        or "none"
    )


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
    _check_contact(contact_id)
    language = _language(lang)
    chosen = find_segment(config, segment)
    sku = _segment_sku(chosen, product, "--product")
    return SurveyRequest(
        request_id=uuid.uuid4(),
        portal=portal,
        contact_id=contact_id,
        category_id=chosen.category_id,
        sku=sku,
        lang=language,
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
    _check_deal(deal_id)
    _check_contact(contact_id)
    language = _language(lang)
    return SurveyRequest(
        request_id=uuid.uuid4(),
        portal=portal,
        contact_id=contact_id,
        category_id=survey.category_id,
        sku=survey.product.sku,
        lang=language,
        deal_id=deal_id,
    )


def requested(config: PortalConfig, event: SurveyRequested) -> SurveyRequest:
    """The request dispatch made (`survey.requested`), under its `request_id`, checked against
    the portal YAML as a link made by hand is: a segment of `survey.segments` by its category
    (an equipment segment's `sku`, when given, must be its product; a cosmetics segment takes
    none), or with `deal_id` a deal survey by its deal category (its `sku`, when given, must be
    the deal survey's product). RequestError names the request and what does not fit."""
    try:
        request = _requested(config, event)
    except RequestError as exc:
        raise RequestError(f"survey.requested {event.request_id}: {exc}") from None
    return replace(request, request_id=event.request_id, correlation_id=event.correlation_id)


def _requested(config: PortalConfig, event: SurveyRequested) -> SurveyRequest:
    served = config.portal.member_id
    if served is not None and event.portal.member_id not in {None, served}:
        raise RequestError(
            f"portal {event.portal.member_id!r} is not the portal served"
            f" (portal.member_id {served!r})"
        )
    portal = served or event.portal.key
    _check_contact(event.contact_id)
    if event.deal_id is not None:
        _check_deal(event.deal_id)
        survey = config.deal_survey(event.category_id)
        if survey is None:
            raise RequestError(
                f"deal category {event.category_id} is no deal survey's;"
                f" known: {_known_deal_surveys(config)}"
            )
        if event.sku is not None and event.sku != survey.product.sku:
            raise RequestError(
                f"deal survey {survey.name} asks about {survey.product.sku};"
                f" sku {event.sku} is not it"
            )
        return new_deal_request(
            survey,
            deal_id=event.deal_id,
            contact_id=event.contact_id,
            lang=event.lang,
            portal=portal,
        )
    segment = config.survey.segment(event.category_id)
    if segment is None:
        raise RequestError(
            f"segment {event.category_id} is not in survey.segments;"
            f" known: {_known_segments(config)}"
        )
    return SurveyRequest(
        request_id=event.request_id,
        portal=portal,
        contact_id=event.contact_id,
        category_id=segment.category_id,
        sku=_segment_sku(segment, event.sku, "sku"),
        lang=event.lang,
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
