"""Deals in ingest: deal events and robot calls accepted, a deal read as a deal survey's answer."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest

from services.ingest.mapping import (
    AnswerError,
    NotAnAnswer,
    deal_responsible,
    map_deal,
    sale_deal_id,
)
from services.ingest.webhook import (
    Accepted,
    Ignored,
    RequestError,
    parse_form,
    read_event,
    read_robot,
)
from shared.events import ProductAnswer
from shared.portal_config import PortalConfig, load_portal_config

CONFIG = load_portal_config(Path(__file__).resolve().parents[2] / "config/portal.example.yaml")
WITHOUT_DEALS = CONFIG.model_copy(update={"deal_surveys": [], "dispatch": None})
NOW = datetime(2024, 7, 22, 15, 0, tzinfo=UTC)


def deal_event(event: str = "ONCRMDEALUPDATE", deal_id: str | None = "77") -> dict[str, Any]:
    values = {
        "event": event,
        "event_handler_id": "12",
        "data[FIELDS][ID]": deal_id,
        "ts": "1766047124",
        "auth[member_id]": "d897063e1ce7c5eb9f04b9751eef5915",
        "auth[application_token]": "secret",
    }
    return parse_form(urlencode({k: v for k, v in values.items() if v is not None}))


@pytest.mark.parametrize("event", ["ONCRMDEALADD", "ONCRMDEALUPDATE", "onCrmDealUpdate"])
def test_deal_events_carrying_only_the_id_are_accepted_as_entity_type_2(event: str) -> None:
    result = read_event(deal_event(event), CONFIG)
    assert isinstance(result, Accepted)
    assert (result.event, result.entity_type_id, result.item_id, result.fields) == (
        event.upper(),
        2,
        77,
        None,
    )
    assert "secret" not in str(result.payload)


def test_deal_events_are_ignored_without_deal_surveys() -> None:
    result = read_event(deal_event(), WITHOUT_DEALS)
    assert isinstance(result, Ignored)
    assert "no deal survey (deal_surveys) and no sales funnel" in result.reason


def test_a_deal_event_without_an_id_is_400() -> None:
    with pytest.raises(RequestError) as caught:
        read_event(deal_event(deal_id=None), CONFIG)
    assert (caught.value.status, caught.value.field) == (400, "data[FIELDS][ID]")


def test_the_robot_sends_a_deal_answer_in_item_shape() -> None:
    params = parse_form(
        urlencode(
            {
                "application_token": "t",
                "entity_type_id": "2",
                "id": "77",
                "category_id": "20",
                "contact_id": "7",
                "responsible_id": "31",
                "UF_CRM_NPS_SCORE": "3",
                "UF_CRM_NPS_COMMENT": "late delivery",
                "UF_CRM_5_SCORE": "dropped: a smart-process field",
            }
        )
    )
    result = read_robot(params, CONFIG, NOW)
    assert isinstance(result, Accepted)
    assert result.entity_type_id == 2
    assert result.fields == {
        "id": 77,
        "entityTypeId": 2,
        "categoryId": 20,
        "contactId": "7",
        "assignedById": "31",
        "UF_CRM_NPS_SCORE": "3",
        "UF_CRM_NPS_COMMENT": "late delivery",
        "createdTime": NOW.isoformat(),
        "updatedTime": NOW.isoformat(),
    }
    assert isinstance(read_robot(params, WITHOUT_DEALS, NOW), Ignored)


def deal(**values: Any) -> dict[str, Any]:
    return {
        "id": 77,
        "categoryId": 20,
        "stageId": "C20:NEW",
        "contactId": 7,
        "assignedById": 31,
        "UF_CRM_NPS_SCORE": 3,
        "UF_CRM_NPS_COMMENT": " late delivery ",
        "UF_CRM_NPS_SALE_DEAL": 76,
        "createdTime": "2024-07-20T10:00:00+03:00",
        "updatedTime": "2024-07-22T18:00:00+03:00",
        **values,
    }


def test_an_answered_nps_deal_is_an_answer_of_its_deal_survey() -> None:
    answer = map_deal(deal(), CONFIG, {})
    assert not isinstance(answer, NotAnAnswer)
    assert (answer.entity_type_id, answer.item_id, answer.category_id) == (2, 77, 20)
    assert (answer.kind, answer.segment, answer.scale) == ("deal", "After the sale", "0-10")
    assert (answer.contact_id, answer.responsible_id, answer.comment) == (7, 31, "late delivery")
    assert answer.answers == (ProductAnswer(sku="DEAL-SALES", name="Sales", score=3),)
    assert answer.submitted_at.isoformat() == "2024-07-20T10:00:00+03:00"


@pytest.mark.parametrize(
    ("values", "reason"),
    [
        ({"UF_CRM_NPS_SCORE": None}, "not answered yet: UF_CRM_NPS_SCORE is empty"),
        ({"UF_CRM_NPS_SCORE": ""}, "not answered yet"),
        ({"categoryId": 0}, "deal category 0 is no deal survey's"),
    ],
    ids=["no-score", "empty-score", "sales-funnel"],
)
def test_deals_that_hold_no_answer(values: dict[str, Any], reason: str) -> None:
    result = map_deal(deal(**values), CONFIG, {})
    assert isinstance(result, NotAnAnswer)
    assert reason in result.reason


def test_a_score_of_the_wrong_scale_is_an_error_naming_the_deal_and_field() -> None:
    with pytest.raises(AnswerError, match="item 77: field UF_CRM_NPS_SCORE holds '11'"):
        map_deal(deal(UF_CRM_NPS_SCORE="11"), CONFIG, {})


def test_a_deal_survey_may_have_its_own_scale() -> None:
    data = CONFIG.model_dump(mode="json", exclude_none=True)
    data["deal_surveys"][0]["scale"] = "binary"
    config = PortalConfig.model_validate(data)
    answer = map_deal(deal(UF_CRM_NPS_SCORE="yes"), config, {})
    assert not isinstance(answer, NotAnAnswer)
    assert (answer.scale, answer.answers[0].score) == ("binary", 1)


def test_the_sales_deal_link_and_responsible() -> None:
    survey = CONFIG.deal_surveys[0]
    assert sale_deal_id(deal(), survey) == 76
    assert sale_deal_id(deal(UF_CRM_NPS_SALE_DEAL=None), survey) is None
    unlinked = survey.model_copy(update={"sale_deal_field": None})
    assert sale_deal_id(deal(), unlinked) is None
    assert deal_responsible({"id": 76, "assignedById": "32"}) == 32
    assert deal_responsible({"id": 76, "assignedById": None}) is None
