"""The survey form: reading a submitted body into an answer, and the answer's NPS category
(pure: no I/O).

The body is `application/x-www-form-urlencoded`: `score` (equipment) or `score_<n>` and
`tested_<n>` for the n-th product of a cosmetics segment, `service` (the service-department
box), `comment` and `csrf`. Anything else is ignored; anything malformed is a `FormError` that
says what was expected, shown on the form again.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import parse_qsl

from services.survey.requests import SurveyRequest
from shared.events import (
    Category,
    ProductAnswer,
    Scale,
    SurveyAnswered,
    derived_id,
)
from shared.portal_config import Product

MAX_BODY_BYTES = 16 * 1024
MAX_COMMENT = 2000
MAX_FIELDS = 100
SCALE_BOUNDS: dict[Scale, tuple[int, int]] = {"0-10": (0, 10), "1-10": (1, 10), "binary": (0, 1)}


class FormError(ValueError):
    """The submitted form cannot be taken as it is; `code` names the problem for the page."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


@dataclass(frozen=True)
class Answer:
    """What the customer answered: a score per product (None: tested, not scored)."""

    scores: dict[str, int | None]
    service_request: bool = False
    comment: str | None = None
    tested: list[str] = field(default_factory=list)
    """Cosmetics: the products ticked as tested (every product in `scores`)."""

    def to_json(self) -> dict[str, Any]:
        return {
            "scores": self.scores,
            "service_request": self.service_request,
            "comment": self.comment,
            "tested": self.tested,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Answer:
        return cls(
            scores=dict(data["scores"]),
            service_request=bool(data["service_request"]),
            comment=data["comment"],
            tested=list(data["tested"]),
        )


def parse_body(body: bytes) -> dict[str, str]:
    """The form fields of a urlencoded body (the first value of each name)."""
    if len(body) > MAX_BODY_BYTES:
        raise FormError("too_large")
    try:
        text = body.decode("utf-8")
        pairs = parse_qsl(
            text, keep_blank_values=True, strict_parsing=False, max_num_fields=MAX_FIELDS
        )
    except (UnicodeDecodeError, ValueError):
        raise FormError("malformed") from None
    fields: dict[str, str] = {}
    for name, value in pairs:
        fields.setdefault(name, value)
    return fields


def read_score(raw: str | None, scale: Scale) -> int | None:
    """A score of `scale` from its text; None when absent; FormError when off the scale."""
    if raw is None or raw == "":
        return None
    low, high = SCALE_BOUNDS[scale]
    if not raw.isascii() or not raw.isdigit() or len(raw) > 2 or not low <= int(raw) <= high:
        raise FormError("score")
    return int(raw)


def _flag(raw: str | None) -> bool:
    return raw is not None and raw.lower() in {"1", "on", "y", "yes", "true"}


def read_answer(
    fields: Mapping[str, str],
    products: Sequence[Product],
    scale: Scale,
    *,
    cosmetics: bool,
    service_box: bool = True,
) -> Answer:
    """The answer the form holds for the `products` asked about (`service` counts only on a
    page with the service box: not a deal survey's)."""
    comment = (fields.get("comment") or "").replace("\r\n", "\n").strip()
    if len(comment) > MAX_COMMENT:
        raise FormError("comment")
    if "\x00" in comment:
        raise FormError("malformed")
    if not cosmetics:
        score = read_score(fields.get("score"), scale)
        if score is None:
            raise FormError("no_score")
        return Answer(
            scores={products[0].sku: score},
            service_request=service_box and _flag(fields.get("service")),
            comment=comment or None,
        )
    scores: dict[str, int | None] = {}
    for index, product in enumerate(products):
        score = read_score(fields.get(f"score_{index}"), scale)
        if score is not None or _flag(fields.get(f"tested_{index}")):
            scores[product.sku] = score
    if not scores:
        raise FormError("no_product")
    return Answer(scores=scores, comment=comment or None, tested=list(scores))


def draft_answer(
    fields: Mapping[str, str],
    products: Sequence[Product],
    scale: Scale,
    *,
    cosmetics: bool,
    service_box: bool = True,
) -> Answer:
    """What a refused form held, read leniently (a bad score left out, the comment cut to
    length), so the form shown again keeps what the visitor entered."""

    def lenient(raw: str | None) -> int | None:
        try:
            return read_score(raw, scale)
        except FormError:
            return None

    comment = (fields.get("comment") or "").replace("\x00", "")[:MAX_COMMENT].strip()
    if not cosmetics:
        score = lenient(fields.get("score"))
        return Answer(
            scores={} if score is None else {products[0].sku: score},
            service_request=service_box and _flag(fields.get("service")),
            comment=comment or None,
        )
    scores: dict[str, int | None] = {}
    for index, product in enumerate(products):
        score = lenient(fields.get(f"score_{index}"))
        if score is not None or _flag(fields.get(f"tested_{index}")):
            scores[product.sku] = score
    return Answer(scores=scores, comment=comment or None, tested=list(scores))


def categorize(score: int, scale: Scale) -> Category:
    if scale == "binary":
        return "promoter" if score == 1 else "detractor"
    if score >= 9:
        return "promoter"
    if score >= 7:
        return "passive"
    return "detractor"


def answer_category(answer: Answer, scale: Scale) -> Category | None:
    """The category of the answer's lowest score (None when no product was scored): the
    thank-you page of a customer unhappy with one product is not a promoter's."""
    given = [score for score in answer.scores.values() if score is not None]
    return categorize(min(given), scale) if given else None


def answered_event(
    request: SurveyRequest,
    products: Sequence[Product],
    answer: Answer,
    *,
    version: int,
    scale: Scale,
    answered_at: datetime,
) -> SurveyAnswered:
    """The `survey.answered` event of version `version` of the request's answer: its id is
    derived from the request and the version, so the same version is one message."""
    names = {product.sku: product.name for product in products}
    return SurveyAnswered(
        event_id=derived_id("survey.answered", request.request_id, version),
        correlation_id=request.events_correlation_id,
        request_id=request.request_id,
        version=version,
        portal=request.portal_ref,
        contact_id=request.contact_id,
        category_id=request.category_id,
        scale=scale,
        answers=[
            ProductAnswer(sku=sku, name=names.get(sku, sku), score=score)
            for sku, score in answer.scores.items()
        ],
        service_request=answer.service_request,
        comment=answer.comment,
        answered_at=answered_at,
        deal_id=request.deal_id,
    )
