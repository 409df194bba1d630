"""Deal surveys on the survey page (pure): the link's deal survey and contact, what the page asks,
its texts, and the NPS deal's fields crm_sync writes."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

from services.crm_sync.entities import ActionError
from services.crm_sync.survey_items import deal_fields, entity_type_of, survey_written
from services.survey.form import Answer, read_answer
from services.survey.page_config import PageConfig
from services.survey.requests import (
    RequestError,
    SurveyRequest,
    asked,
    new_deal_request,
    resolve_deal,
)
from services.survey.views import TEXTS, texts
from shared.events import PortalRef, ProductAnswer, SurveyAnswered
from shared.portal_config import PortalConfig, Product

REQUEST = uuid.UUID("5d0c1f1e-7a2b-4c3d-9e8f-0a1b2c3d4e5f")
SALES = [Product(sku="DEAL-SALES", name="Sales")]
COSMETICS = ["COS-SERUM", "COS-CREAM", "COS-MASK", "COS-PEEL"]


def with_scale(config: PortalConfig, scale: str | None) -> PortalConfig:
    deal = config.deal_surveys[0].model_copy(update={"scale": scale})
    return config.model_copy(update={"deal_surveys": [deal]})


@pytest.mark.parametrize(
    ("survey", "contact", "deal", "expected"),
    [
        (None, None, {"categoryId": 20, "contactId": 7}, (20, 7)),
        (None, None, {"categoryId": "20", "contactId": "7"}, (20, 7)),
        (None, 9, {"categoryId": 20, "contactId": 7}, (20, 9)),
        ("After the sale", None, {"categoryId": 0, "contactId": 7}, (20, 7)),
        ("after the SALE", 9, None, (20, 9)),
        ("20", 9, None, (20, 9)),
    ],
)
def test_a_deal_links_survey_and_contact(
    portal_config: PortalConfig,
    survey: str | None,
    contact: int | None,
    deal: dict[str, Any] | None,
    expected: tuple[int, int],
) -> None:
    chosen, contact_id = resolve_deal(portal_config, 55, survey=survey, contact=contact, deal=deal)
    assert (chosen.category_id, contact_id) == expected


@pytest.mark.parametrize(
    ("survey", "contact", "deal", "message"),
    [
        (None, None, None, "deal 55 is not in the portal"),
        (None, 9, None, "deal 55 is not in the portal"),
        ("After the sale", None, None, "deal 55 is not in the portal"),
        (
            None,
            None,
            {"categoryId": 0, "contactId": 7},
            "deal 55 is in deal category 0, which is no deal survey's; known: 20 (After the sale)",
        ),
        ("Nope", 9, None, "deal survey 'Nope' is not in deal_surveys; known: 20 (After the sale)"),
        (None, None, {"categoryId": 20, "contactId": 0}, "deal 55 has no contact; give the"),
        (None, None, {"categoryId": 20}, "deal 55 has no contact"),
    ],
)
def test_a_deal_link_names_what_is_missing(
    portal_config: PortalConfig,
    survey: str | None,
    contact: int | None,
    deal: dict[str, Any] | None,
    message: str,
) -> None:
    with pytest.raises(RequestError, match="^" + message.replace("(", r"\(").replace(")", r"\)")):
        resolve_deal(portal_config, 55, survey=survey, contact=contact, deal=deal)


@pytest.mark.parametrize(
    ("deal_id", "contact", "lang", "message"),
    [
        (0, 7, "ru", "deal 0 is not a deal id"),
        (55, -1, "ru", "contact -1 is not a contact id"),
        (55, 7, "de", "language 'de' is not offered"),
    ],
)
def test_a_deal_request_refuses_bad_values(
    portal_config: PortalConfig, deal_id: int, contact: int, lang: str, message: str
) -> None:
    with pytest.raises(RequestError, match=message):
        new_deal_request(
            portal_config.deal_surveys[0],
            deal_id=deal_id,
            contact_id=contact,
            lang=lang,
            portal="p",
        )


def test_a_deal_request_asks_about_its_deal_surveys_product(portal_config: PortalConfig) -> None:
    request = new_deal_request(
        portal_config.deal_surveys[0], deal_id=55, contact_id=7, lang="en", portal="p"
    )
    assert (request.deal_id, request.category_id, request.sku, request.contact_id) == (
        55,
        20,
        "DEAL-SALES",
        7,
    )


def request(category: int, sku: str | None, deal_id: int | None) -> SurveyRequest:
    return SurveyRequest(REQUEST, "p", 7, category, sku, "en", deal_id)


@pytest.mark.parametrize(
    ("given", "deal_scale", "expected"),
    [
        (request(20, "DEAL-SALES", 55), None, ("0-10", ["DEAL-SALES"], False, False, True)),
        (request(20, "DEAL-SALES", 55), "binary", ("binary", ["DEAL-SALES"], False, False, True)),
        (request(12, "EQ-LASER-A", None), "binary", ("0-10", ["EQ-LASER-A"], False, True, False)),
        (request(10, None, None), None, ("0-10", COSMETICS, True, False, False)),
    ],
)
def test_what_the_page_asks(
    portal_config: PortalConfig,
    given: SurveyRequest,
    deal_scale: str | None,
    expected: tuple[str, list[str], bool, bool, bool],
) -> None:
    what = asked(with_scale(portal_config, deal_scale), given)
    products = [p.sku for p in what.products]
    shown = (what.scale, products, what.cosmetics, what.service_box, what.deal_survey is not None)
    assert shown == expected


@pytest.mark.parametrize(
    ("given", "message"),
    [
        (request(21, "DEAL-SALES", 55), "deal category 21 is no longer a deal survey"),
        (request(20, "OTHER", 55), "deal survey After the sale no longer asks about OTHER"),
        (request(20, "DEAL-SALES", None), "segment 20 is no longer in survey.segments"),
    ],
)
def test_a_request_the_yaml_no_longer_has(
    portal_config: PortalConfig, given: SurveyRequest, message: str
) -> None:
    with pytest.raises(RequestError, match=message):
        asked(portal_config, given)


@pytest.mark.parametrize(("service_box", "expected"), [(True, True), (False, False)])
def test_the_service_box_counts_only_where_it_is_shown(service_box: bool, expected: bool) -> None:
    answer = read_answer(
        {"score": "3", "service": "1"}, SALES, "0-10", cosmetics=False, service_box=service_box
    )
    assert answer == Answer({"DEAL-SALES": 3}, service_request=expected)


def test_a_deal_surveys_own_texts_win_on_its_pages_only() -> None:
    page = PageConfig.model_validate(
        {
            "company": {"name": "Clinic"},
            "texts": {"en": {"comment": "Page comment", "submit": "Go"}},
            "deal_texts": {"After the sale": {"en": {"comment": "How was the sale?"}}},
        }
    )
    deal = texts(page, "en", "After the sale")
    assert (deal["comment"], deal["submit"]) == ("How was the sale?", "Go")
    assert texts(page, "en")["comment"] == "Page comment"
    assert texts(page, "ru", "After the sale")["comment"] == TEXTS["ru"]["comment"]


@pytest.mark.parametrize(
    ("deal_texts", "problem"),
    [
        ({"After the sale": {"en": {"nope": "x"}}}, "deal_texts.After the sale.en: unknown key"),
        (
            {"After the sale": {"ru": {"question": "{deal}"}}},
            "deal_texts.After the sale.ru.question",
        ),
    ],
)
def test_deal_texts_are_checked_like_the_pages_texts(
    deal_texts: dict[str, Any], problem: str
) -> None:
    with pytest.raises(ValueError, match=problem):
        PageConfig.model_validate({"company": {"name": "Clinic"}, "deal_texts": deal_texts})


def deal_answer(score: int | None, comment: str | None = None, **extra: Any) -> SurveyAnswered:
    return SurveyAnswered(
        correlation_id="c",
        request_id=REQUEST,
        version=2,
        portal=PortalRef(),
        contact_id=7,
        category_id=extra.pop("category", 20),
        scale="0-10",
        answers=[ProductAnswer(sku=extra.pop("sku", "DEAL-SALES"), name="Sales", score=score)],
        comment=comment,
        answered_at=datetime(2026, 1, 1, tzinfo=UTC),
        deal_id=55,
    )


@pytest.mark.parametrize(
    ("given", "lists", "expected"),
    [
        (deal_answer(9, "Fast"), {}, {"UF_CRM_NPS_SCORE": 9, "UF_CRM_NPS_COMMENT": "Fast"}),
        (deal_answer(0), {}, {"UF_CRM_NPS_SCORE": 0, "UF_CRM_NPS_COMMENT": ""}),
        (
            deal_answer(7, "Ok"),
            {"UF_CRM_NPS_SCORE": {"7": "107", "8": "108"}},
            {"UF_CRM_NPS_SCORE": "107", "UF_CRM_NPS_COMMENT": "Ok"},
        ),
    ],
)
def test_the_nps_deals_fields(
    portal_config: PortalConfig,
    given: SurveyAnswered,
    lists: dict[str, dict[str, str]],
    expected: dict[str, Any],
) -> None:
    assert deal_fields(given, portal_config, lists) == expected


def test_a_deal_survey_without_a_comment_field_writes_the_score_only(
    portal_config: PortalConfig,
) -> None:
    deal = portal_config.deal_surveys[0].model_copy(update={"comment_field": None})
    config = portal_config.model_copy(update={"deal_surveys": [deal]})
    assert deal_fields(deal_answer(9, "Fast"), config, {}) == {"UF_CRM_NPS_SCORE": 9}


@pytest.mark.parametrize(
    ("given", "lists", "message"),
    [
        (deal_answer(9, category=21), {}, "deal category 21 is not in deal_surveys"),
        (deal_answer(9, sku="OTHER"), {}, "has no score for DEAL-SALES"),
        (deal_answer(None), {}, "has no score for DEAL-SALES"),
        (deal_answer(10), {"UF_CRM_NPS_SCORE": {"9": "109"}}, "has no item whose value is 10"),
    ],
)
def test_a_deal_answer_that_cannot_be_written(
    portal_config: PortalConfig,
    given: SurveyAnswered,
    lists: dict[str, dict[str, str]],
    message: str,
) -> None:
    with pytest.raises(ActionError, match=message):
        deal_fields(given, portal_config, lists)


def test_a_deal_answer_is_written_into_the_deal(portal_config: PortalConfig) -> None:
    given = deal_answer(9)
    assert entity_type_of(given, portal_config) == 2
    written = survey_written(given, "patched", 55)
    assert (written.entity_type, written.entity_id, written.action_id) == (
        "deal",
        55,
        f"survey:{REQUEST}:2",
    )
