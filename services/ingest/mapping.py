"""An NPS smart-process item → the survey answer it holds (pure: no I/O).

The item is a mapping as `crm.item.list` returns it with `useOriginalUfNames=Y` (standard fields in
camelCase, user fields as `UF_CRM_*`), or as a robot sent it (every value a string). Values are read
leniently in form (`"7"`, `7`, `7.0`; `"Y"`, `true`, `"1"`) and strictly in meaning: a score that is
not a number of the configured scale is an `AnswerError` naming the item, the field and the value,
never a silent 0.

Enumeration (list) score fields hold a list item ID; `enums` maps such a field to its items
(`ID` → `VALUE`, from `crm.item.fields`) and the VALUE is read as the score.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from shared.events import DEAL_ENTITY_TYPE_ID, ProductAnswer, Scale, SubmittedAnswer
from shared.portal_config import CosmeticsSegment, DealSurvey, EquipmentSegment, PortalConfig

EnumValues = Mapping[str, Mapping[str, str]]
"""Enumeration field name → {list item ID → VALUE}."""

SCALE_BOUNDS: dict[Scale, tuple[int, int]] = {"0-10": (0, 10), "1-10": (1, 10), "binary": (0, 1)}
_BINARY_YES = frozenset({"1", "y", "yes", "true", "satisfied", "да"})
_BINARY_NO = frozenset(
    {"0", "n", "no", "false", "unsatisfied", "dissatisfied", "not satisfied", "нет"}
)
_FLAG_TRUE = frozenset({"y", "yes", "1", "true", "on"})
_FLAG_FALSE = frozenset({"n", "no", "0", "false", "off", ""})
_LOCAL_FORMATS = ("%d.%m.%Y %H:%M:%S", "%d.%m.%Y %H:%M", "%d.%m.%Y")


class AnswerError(ValueError):
    """An item field holds a value that cannot be read as what the survey expects."""

    def __init__(self, item_id: object, field: str, value: object, expected: str) -> None:
        super().__init__(f"item {item_id}: field {field} holds {value!r}; expected {expected}")
        self.item_id = item_id
        self.field = field
        self.value = value
        self.expected = expected


class UnknownListItemError(AnswerError):
    """An enumeration score names a list item the known field definition does not have."""


class Answer(SubmittedAnswer):
    """The content of a `FormSubmitted` (everything but the envelope and the portal), as read
    from an item or a deal."""

    def managed_by(self, responsible_id: int | None) -> Answer:
        """The same answer, whose NPS is `responsible_id`'s (`survey.manager`, a sales deal)."""
        return self.model_copy(update={"responsible_id": responsible_id})

    def fingerprint(self) -> str:
        """A digest of the content: two reads of an unchanged item give the same value."""
        content = {
            "item": [self.entity_type_id, self.item_id, self.category_id, self.segment],
            "scale": self.scale,
            "people": [self.contact_id, self.responsible_id],
            "comment": self.comment,
            "service": self.service_request,
            "times": [self.submitted_at.isoformat(), self.updated_at.isoformat()],
            "answers": [[a.sku, a.score] for a in self.answers],
        }
        return hashlib.sha256(json.dumps(content, ensure_ascii=False).encode()).hexdigest()


@dataclass(frozen=True)
class NotASurvey:
    """The item belongs to a category no segment of the portal config maps (a form added on the
    portal before the YAML learned it): ingest holds it until the configuration maps it."""

    reason: str
    category_id: int
    updated_at: datetime


def map_item(
    item: Mapping[str, Any], config: PortalConfig, enums: EnumValues
) -> Answer | NotASurvey:
    """Read `item` as a survey answer of `config` (raises `AnswerError` on unreadable values)."""
    item_id = _required_int(item, "id", "?")
    category_id = _required_int(item, "categoryId", item_id)
    segment = config.survey.segment(category_id)
    if segment is None:
        configured = ", ".join(str(s.category_id) for s in config.survey.segments)
        return NotASurvey(
            f"category {category_id} is not a configured segment ({configured})",
            category_id=category_id,
            updated_at=read_time(item, "updatedTime", item_id),
        )
    fields = config.survey.fields
    scale = config.nps.scale
    if isinstance(segment, EquipmentSegment):
        score = read_score(item, segment.score_field, scale, enums, item_id)
        product = segment.product
        answers: tuple[ProductAnswer, ...] = (
            ProductAnswer(sku=product.sku, name=product.name, score=score),
        )
    else:
        answers = _cosmetics_answers(item, segment, scale, enums, item_id)
    return Answer(
        item_id=item_id,
        entity_type_id=config.survey.entity_type_id,
        category_id=category_id,
        segment=segment.name or str(category_id),
        kind=segment.kind,
        scale=scale,
        contact_id=_optional_id(item, fields.contact, item_id),
        responsible_id=_optional_id(item, fields.responsible, item_id),
        comment=_comment(item, fields.comment),
        service_request=(
            read_flag(item, fields.service_request, item_id) if fields.service_request else False
        ),
        submitted_at=read_time(item, "createdTime", item_id),
        updated_at=read_time(item, "updatedTime", item_id),
        answers=answers,
    )


@dataclass(frozen=True)
class NotAnAnswer:
    """A deal that holds no survey answer: of a funnel no deal survey names (ignored), or an NPS
    deal not answered yet (its score field is empty)."""

    reason: str


def map_deal(
    deal: Mapping[str, Any], config: PortalConfig, enums: EnumValues
) -> Answer | NotAnAnswer:
    """Read a deal (as `crm.item.list` returns it for entityTypeId 2, `useOriginalUfNames=Y`)
    as the answer of its deal survey. The answer's time is the NPS deal's creation (the sale's
    close); raises `AnswerError` on unreadable values."""
    deal_id = _required_int(deal, "id", "?")
    category_id = _required_int(deal, "categoryId", deal_id)
    survey = config.deal_survey(category_id)
    if survey is None:
        return NotAnAnswer(f"deal category {category_id} is no deal survey's")
    scale = survey.scale or config.nps.scale
    score = read_score(deal, survey.score_field, scale, enums, deal_id)
    if score is None:
        return NotAnAnswer(f"not answered yet: {survey.score_field} is empty")
    product = survey.product
    return Answer(
        item_id=deal_id,
        entity_type_id=DEAL_ENTITY_TYPE_ID,
        category_id=category_id,
        segment=survey.name,
        kind="deal",
        scale=scale,
        contact_id=_optional_id(deal, "contactId", deal_id),
        responsible_id=_optional_id(deal, "assignedById", deal_id),
        comment=_comment(deal, survey.comment_field),
        service_request=False,
        submitted_at=read_time(deal, "createdTime", deal_id),
        updated_at=read_time(deal, "updatedTime", deal_id),
        answers=(ProductAnswer(sku=product.sku, name=product.name, score=score),),
    )


def sale_deal_id(deal: Mapping[str, Any], survey: DealSurvey) -> int | None:
    """The sales deal an NPS deal links to (`sale_deal_field`), None without one."""
    if survey.sale_deal_field is None:
        return None
    return _optional_id(deal, survey.sale_deal_field, deal.get("id"))


def deal_responsible(deal: Mapping[str, Any]) -> int | None:
    """A deal's responsible (`assignedById`), None when unset."""
    return _optional_id(deal, "assignedById", deal.get("id"))


def read_id(item: Mapping[str, Any], field: str, item_id: object) -> int | None:
    """An optional id field (a contact, a company, a user); None when empty (raises
    `AnswerError` on a value that is no id)."""
    return _optional_id(item, field, item_id)


def read_whole(item: Mapping[str, Any], field: str, item_id: object) -> int:
    """A required whole number at least 0 (an id, a category; raises `AnswerError`)."""
    return _required_int(item, field, item_id)


def _cosmetics_answers(
    item: Mapping[str, Any],
    segment: CosmeticsSegment,
    scale: Scale,
    enums: EnumValues,
    item_id: int,
) -> tuple[ProductAnswer, ...]:
    """One answer per product the customer tested; a given score counts even without the tick."""
    answers: list[ProductAnswer] = []
    for product in segment.products:
        score = read_score(item, product.score_field, scale, enums, item_id)
        if read_flag(item, product.tested_field, item_id) or score is not None:
            answers.append(ProductAnswer(sku=product.sku, name=product.name, score=score))
    return tuple(answers)


def read_score(
    item: Mapping[str, Any], field: str, scale: Scale, enums: EnumValues, item_id: object
) -> int | None:
    """The score in `field` on `scale`; None when the question was skipped (empty)."""
    raw = _single(item, field, item_id)
    if _is_empty(raw):
        return None
    items = enums.get(field)
    if items is not None:
        key = _enum_key(raw)
        if key not in items:
            known = ", ".join(f"{k}={v!r}" for k, v in items.items()) or "none"
            raise UnknownListItemError(
                item_id, field, raw, f"the ID of one of the field's list items ({known})"
            )
        return _score_value(items[key], scale, field, item_id, f"list item {key} of")
    return _score_value(raw, scale, field, item_id, "")


def _score_value(raw: object, scale: Scale, field: str, item_id: object, via: str) -> int:
    low, high = SCALE_BOUNDS[scale]
    expected = (
        "a binary answer (0/1, yes/no)"
        if scale == "binary"
        else f"a whole number from {low} to {high} (scale {scale})"
    )
    shown = f"{via} {field}".strip()
    if scale == "binary" and isinstance(raw, str):
        word = raw.strip().lower()
        if word in _BINARY_YES:
            return 1
        if word in _BINARY_NO:
            return 0
    number = _number(raw)
    if number is None or not number.is_integer() or not low <= number <= high:
        raise AnswerError(item_id, shown, raw, expected)
    return int(number)


def _number(raw: object) -> float | None:
    if isinstance(raw, bool):
        return None
    if isinstance(raw, int | float):
        value = float(raw)
    elif isinstance(raw, str):
        try:
            value = float(raw.strip())
        except ValueError:
            return None
    else:
        return None
    return value if math.isfinite(value) else None


def _enum_key(raw: object) -> str:
    if isinstance(raw, float) and raw.is_integer():
        return str(int(raw))
    return str(raw).strip()


def read_flag(item: Mapping[str, Any], field: str, item_id: object) -> bool:
    """A checkbox: `Y`/`N`, `1`/`0`, booleans; absent or empty is unticked."""
    raw = _single(item, field, item_id)
    if raw is None or isinstance(raw, bool):
        return bool(raw)
    if isinstance(raw, int | float):
        return raw != 0
    text = str(raw).strip().lower()
    if text in _FLAG_TRUE:
        return True
    if text in _FLAG_FALSE:
        return False
    raise AnswerError(item_id, field, raw, "a checkbox value (Y/N, 1/0, true/false)")


def read_time(item: Mapping[str, Any], field: str, item_id: object) -> datetime:
    """An ISO 8601 time (`2024-07-22T18:00:08+03:00`) or `22.07.2024 18:00:08` (read as UTC)."""
    raw = item.get(field)
    if isinstance(raw, str) and raw.strip():
        text = raw.strip()
        parsed: datetime | None
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            parsed = _local_time(text)
        if parsed is not None:
            return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)
    raise AnswerError(item_id, field, raw, "a date and time, ISO 8601 (2024-07-22T18:00:08+03:00)")


def _local_time(text: str) -> datetime | None:
    for layout in _LOCAL_FORMATS:
        try:
            return datetime.strptime(text, layout).replace(tzinfo=UTC)
        except ValueError:
            continue
    return None


def _comment(item: Mapping[str, Any], field: str | None) -> str | None:
    if field is None:
        return None
    raw = item.get(field)
    if isinstance(raw, list):
        raw = "\n".join(str(part) for part in raw if not _is_empty(part))
    if _is_empty(raw):
        return None
    # PostgreSQL stores no NUL in text or jsonb: a comment with one would fail every service.
    text = str(raw).replace("\x00", "").strip()
    return text or None


def _required_int(item: Mapping[str, Any], field: str, item_id: object) -> int:
    value = _int(item.get(field))
    if value is None or value < 0:
        raise AnswerError(item_id, field, item.get(field), "a whole number")
    return value


def _optional_id(item: Mapping[str, Any], field: str, item_id: object) -> int | None:
    raw = _single(item, field, item_id)
    if _is_empty(raw):
        return None
    value = _int(raw)
    if value is None or value < 0:
        raise AnswerError(item_id, field, raw, "an id (a whole number) or nothing")
    return value or None


def _int(raw: object) -> int | None:
    if isinstance(raw, bool):
        return None
    if isinstance(raw, int):
        return raw
    if isinstance(raw, float) and raw.is_integer():
        return int(raw)
    if isinstance(raw, str) and _is_whole_number(raw):
        return int(raw.strip())
    return None


def _is_whole_number(text: str) -> bool:
    """ASCII digits with an optional minus: `"²".isdigit()` is true, but `int("²")` fails."""
    digits = text.strip().removeprefix("-")
    return digits.isascii() and digits.isdigit()


def _single(item: Mapping[str, Any], field: str, item_id: object) -> Any:
    """The field's one value: a multiple field may hold at most one entry here."""
    raw = item.get(field)
    if isinstance(raw, list | tuple):
        values = [value for value in raw if not _is_empty(value)]
        if len(values) > 1:
            raise AnswerError(item_id, field, raw, "a single value")
        return values[0] if values else None
    return raw


def _is_empty(raw: object) -> bool:
    return raw is None or (isinstance(raw, str) and not raw.strip())
