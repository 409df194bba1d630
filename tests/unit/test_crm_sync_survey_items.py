"""The smart-process item crm_sync writes for a survey page answer (pure)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

from services.crm_sync.entities import ActionError
from services.crm_sync.survey_items import (
    contact_responsible,
    found_item,
    item_fields,
    list_values,
    survey_written,
    written_item_id,
)
from shared.events import PortalRef, ProductAnswer, SurveyAnswered
from shared.portal_config import PortalConfig

REQUEST = uuid.UUID("0b7c2f4e-8d1a-4e5b-9c3d-6f2a1b0e9d87")
COMMON = {
    "xmlId": f"b24-nps-survey:{REQUEST}",
    "sourceDescription": "b24-nps survey page",
    "contactId": 3,
}


def event(category: int, scores: dict[str, int | None], **extra: Any) -> SurveyAnswered:
    return SurveyAnswered(
        correlation_id="c",
        request_id=REQUEST,
        version=1,
        portal=PortalRef(),
        contact_id=3,
        category_id=category,
        scale="0-10",
        answers=[ProductAnswer(sku=sku, name=sku, score=score) for sku, score in scores.items()],
        answered_at=datetime(2026, 1, 1, tzinfo=UTC),
        **extra,
    )


@pytest.mark.parametrize(
    ("given", "lists", "expected"),
    [
        (
            event(12, {"EQ-LASER-A": 0}, service_request=True, comment="Broken"),
            {},
            {
                "categoryId": 12,
                "UF_CRM_5_COMMENT": "Broken",
                "UF_CRM_5_SCORE": 0,
                "UF_CRM_5_TO_SERVICE": "Y",
            },
        ),
        (
            event(14, {"EQ-CRYO-B": 10}),
            {"UF_CRM_5_CRYO_SCORE": {"10": "2110", "9": "2109"}},
            {
                "categoryId": 14,
                "UF_CRM_5_COMMENT": "",
                "UF_CRM_5_CRYO_SCORE": "2110",
                "UF_CRM_5_TO_SERVICE": "N",
            },
        ),
        (
            event(10, {"COS-SERUM": 9, "COS-PEEL": None}),
            {},
            {
                "categoryId": 10,
                "UF_CRM_5_COMMENT": "",
                "UF_CRM_5_SERUM_TESTED": "Y",
                "UF_CRM_5_SERUM_SCORE": 9,
                "UF_CRM_5_CREAM_TESTED": "N",
                "UF_CRM_5_CREAM_SCORE": "",
                "UF_CRM_5_MASK_TESTED": "N",
                "UF_CRM_5_MASK_SCORE": "",
                "UF_CRM_5_PEEL_TESTED": "Y",
                "UF_CRM_5_PEEL_SCORE": "",
                "UF_CRM_5_TO_SERVICE": "N",
            },
        ),
    ],
)
def test_item_fields(
    portal_config: PortalConfig,
    given: SurveyAnswered,
    lists: dict[str, dict[str, str]],
    expected: dict[str, Any],
) -> None:
    assert item_fields(given, portal_config, lists) == {**COMMON, **expected}


@pytest.mark.parametrize(
    ("given", "lists", "message"),
    [
        (event(99, {"X": 1}), {}, "segment 99 is not in survey.segments"),
        (event(12, {"EQ-LASER-A": None}), {}, "no score for EQ-LASER-A"),
        (event(12, {"EQ-CRYO-B": 5}), {}, "no score for EQ-LASER-A"),
        (event(14, {"EQ-CRYO-B": 5}), {"UF_CRM_5_CRYO_SCORE": {"4": "1"}}, "no item whose"),
    ],
)
def test_item_fields_refuse(
    portal_config: PortalConfig,
    given: SurveyAnswered,
    lists: dict[str, dict[str, str]],
    message: str,
) -> None:
    with pytest.raises(ActionError, match=message):
        item_fields(given, portal_config, lists)


def test_list_values_read_by_name_and_upper_name() -> None:
    result = {
        "fields": {
            "ufCrm5CryoScore": {
                "type": "enumeration",
                "upperName": "UF_CRM_5_CRYO_SCORE",
                "items": [{"ID": "2101", "VALUE": "0"}, {"id": 2102, "value": " 1 "}],
            },
            "title": {"type": "string"},
        }
    }
    expected = {"0": "2101", "1": "2102"}
    assert list_values(result) == {
        "ufCrm5CryoScore": expected,
        "UF_CRM_5_CRYO_SCORE": expected,
    }
    assert list_values(None) == {}


@pytest.mark.parametrize(
    ("result", "found"),
    [
        ({"items": [{"id": 7}]}, 7),
        ({"items": [{"ID": "8"}]}, 8),
        ({"items": []}, None),
        ({"items": [{"id": "x"}]}, None),
        ([], None),
    ],
)
def test_found_item(result: Any, found: int | None) -> None:
    assert found_item(result) == found


@pytest.mark.parametrize(
    ("result", "responsible"),
    [
        ([{"ID": "3", "ASSIGNED_BY_ID": "31"}], 31),
        ([{"ID": "3", "ASSIGNED_BY_ID": 7}], 7),
        ([{"ID": "3", "ASSIGNED_BY_ID": None}], None),
        ([], None),
        ({"error": "x"}, None),
    ],
)
def test_contact_responsible(result: Any, responsible: int | None) -> None:
    assert contact_responsible(result) == responsible


def test_written_item_id_and_event() -> None:
    assert written_item_id({"item": {"id": 41}}) == 41
    with pytest.raises(ActionError):
        written_item_id({"item": {}})
    source = event(12, {"EQ-LASER-A": 5})
    written = survey_written(source, "created", 41)
    assert written.routing_key() == "crm.written.survey"
    assert written.action_id == f"survey:{REQUEST}:1"
    again = survey_written(source, "created", 41)
    assert written.event_id == again.event_id
