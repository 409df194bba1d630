"""What crm_sync writes for an answer of the survey page: the fields of its smart-process item,
and how to find that item again; for a deal survey's answer the NPS deal's score and comment
fields (pure: no I/O).

The item is what the portal's own CRM form would have created: in the segment's category, with
the contact, the score field(s), the cosmetics' tested flags, the comment and the service box,
so the portal stays the system of record and the item comes back through ingest like any other.
A new item's responsible is the contact's responsible manager, as the portal's own form
would have it (whose NPS it is in the manager reports). It carries `XML_ID` =
`b24-nps-survey:<request id>`: after an uncertain outcome the writer finds
it by that instead of creating a second one. A change of the answer rewrites the same item:
every field the survey owns is sent (a product no longer tested gets its flag off and its score
emptied).

A deal survey's answer is written into its NPS deal (`crm.item.update`, entityTypeId 2): the deal
survey's `score_field` (a list field gets its list item's id) and `comment_field` (emptied when the
changed answer has no comment). The deal's update then comes back through ingest like an answer a
person typed into the deal.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from services.crm_sync.entities import ActionError
from shared.events import DEAL_ENTITY_TYPE_ID, CrmWritten, SurveyAnswered, WriteOutcome
from shared.portal_config import CosmeticsSegment, PortalConfig

XML_PREFIX = "b24-nps-survey:"
SURVEY_ACTION = "survey"
SOURCE = "b24-nps survey page"

ListValues = Mapping[str, Mapping[str, str]]
"""Enumeration field name → {VALUE → list item ID}."""


def survey_xml_id(event: SurveyAnswered) -> str:
    return f"{XML_PREFIX}{event.request_id}"


def list_values(result: Any) -> dict[str, dict[str, str]]:
    """Each enumeration field of `crm.item.fields`' result (by name and upperName) with its
    list items as VALUE → ID."""
    fields = result.get("fields") if isinstance(result, Mapping) else None
    values: dict[str, dict[str, str]] = {}
    if not isinstance(fields, Mapping):
        return values
    for name, spec in fields.items():
        if not isinstance(spec, Mapping) or spec.get("type") != "enumeration":
            continue
        items = {
            str(entry.get("VALUE", entry.get("value", ""))).strip(): str(
                entry.get("ID", entry.get("id", ""))
            )
            for entry in spec.get("items") or []
            if isinstance(entry, Mapping)
        }
        values[str(name)] = items
        upper = spec.get("upperName")
        if isinstance(upper, str) and upper:
            values[upper] = items
    return values


def _score_value(field: str, score: int | None, lists: ListValues) -> Any:
    if score is None:
        return ""
    if field not in lists:
        return score
    item = lists[field].get(str(score))
    if item is None:
        raise ActionError(f"list field {field} has no item whose value is {score}")
    return item


def item_fields(event: SurveyAnswered, config: PortalConfig, lists: ListValues) -> dict[str, Any]:
    """`fields` of the `crm.item.add`/`crm.item.update` call (names as with
    `useOriginalUfNames=Y`) for `event`."""
    survey = config.survey
    segment = survey.segment(event.category_id)
    if segment is None:
        raise ActionError(f"segment {event.category_id} is not in survey.segments")
    names = survey.fields
    fields: dict[str, Any] = {
        "categoryId": event.category_id,
        names.contact: event.contact_id,
        "xmlId": survey_xml_id(event),
        "sourceDescription": SOURCE,
    }
    if names.comment is not None:
        fields[names.comment] = event.comment or ""
    answered = {answer.sku: answer for answer in event.answers}
    if isinstance(segment, CosmeticsSegment):
        for product in segment.products:
            answer = answered.get(product.sku)
            fields[product.tested_field] = "Y" if answer is not None else "N"
            score = None if answer is None else answer.score
            fields[product.score_field] = _score_value(product.score_field, score, lists)
        if names.service_request is not None:
            fields[names.service_request] = "N"
        return fields
    answer = answered.get(segment.product.sku)
    if answer is None or answer.score is None:
        raise ActionError(
            f"the answer to segment {event.category_id} has no score for {segment.product.sku}"
        )
    fields[segment.score_field] = _score_value(segment.score_field, answer.score, lists)
    if names.service_request is not None:
        fields[names.service_request] = "Y" if event.service_request else "N"
    return fields


def deal_fields(event: SurveyAnswered, config: PortalConfig, lists: ListValues) -> dict[str, Any]:
    """`fields` of the NPS deal's `crm.item.update` call (names as with `useOriginalUfNames=Y`)
    for a deal survey's answer."""
    survey = config.deal_survey(event.category_id)
    if survey is None:
        raise ActionError(f"deal category {event.category_id} is not in deal_surveys")
    answer = next((a for a in event.answers if a.sku == survey.product.sku), None)
    if answer is None or answer.score is None:
        raise ActionError(
            f"the answer to deal survey {survey.name} has no score for {survey.product.sku}"
        )
    fields: dict[str, Any] = {
        survey.score_field: _score_value(survey.score_field, answer.score, lists)
    }
    if survey.comment_field is not None:
        fields[survey.comment_field] = event.comment or ""
    return fields


def entity_type_of(event: SurveyAnswered, config: PortalConfig) -> int:
    """The entity type an answer is written into: the NPS deal or the survey's smart process."""
    return DEAL_ENTITY_TYPE_ID if event.deal_id is not None else config.survey.entity_type_id


def item_lookup(entity_type_id: int, event: SurveyAnswered) -> dict[str, Any]:
    """`crm.item.list` params that find the item written for `event`'s request, if any."""
    return {
        "entityTypeId": entity_type_id,
        "filter": {"=xmlId": survey_xml_id(event)},
        "select": ["id"],
        "order": {"id": "ASC"},
    }


def contact_lookup(contact_id: int) -> dict[str, Any]:
    """`crm.contact.list` params that read the contact's responsible manager."""
    return {"filter": {"ID": contact_id}, "select": ["ID", "ASSIGNED_BY_ID"]}


def contact_responsible(result: Any) -> int | None:
    """The `ASSIGNED_BY_ID` of the contact `crm.contact.list` found (None: no such contact)."""
    rows = result if isinstance(result, list) else []
    row = rows[0] if rows and isinstance(rows[0], Mapping) else {}
    raw = row.get("ASSIGNED_BY_ID")
    return int(raw) if isinstance(raw, int | str) and str(raw).isdigit() else None


def found_item(result: Any) -> int | None:
    items = result.get("items") if isinstance(result, Mapping) else None
    if not isinstance(items, list) or not items or not isinstance(items[0], Mapping):
        return None
    raw = items[0].get("id", items[0].get("ID"))
    return int(raw) if isinstance(raw, int | str) and str(raw).isdigit() else None


def written_item_id(result: Any) -> int:
    """The id of the item `crm.item.add` created (ActionError when the answer has none)."""
    item = result.get("item") if isinstance(result, Mapping) else None
    found = found_item({"items": [item]}) if isinstance(item, Mapping) else None
    if found is None:
        raise ActionError(f"crm.item.add answered without an item id: {result!r}"[:300])
    return found


def survey_written(event: SurveyAnswered, outcome: WriteOutcome, item_id: int) -> CrmWritten:
    return CrmWritten(
        **event.caused("crm", outcome),
        action_id=f"survey:{event.request_id}:{event.version}",
        action=SURVEY_ACTION,
        outcome=outcome,
        entity_type="item" if event.deal_id is None else "deal",
        entity_id=item_id,
        details={"request_id": str(event.request_id), "version": event.version},
    )
