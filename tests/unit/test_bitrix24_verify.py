"""`nps config check --portal`: the field rules, on field lists as the portal describes them."""

from typing import Any

import pytest

from shared.bitrix24.verify import (
    PortalCategory,
    check_deal_fields,
    check_fields,
    check_funnels,
    contact_fields,
    item_fields,
    portal_categories,
    unmapped_categories,
)
from shared.portal_config import PortalConfig, parse_portal_config


def item_result(**overrides: dict[str, Any] | None) -> dict[str, Any]:
    """`crm.item.fields` of the example's smart process, every field fitting."""
    fields: dict[str, Any] = {
        "id": {"type": "integer", "isMultiple": False, "upperName": "ID"},
        "contactId": {"type": "crm_contact", "isMultiple": False, "upperName": "CONTACT_ID"},
        "assignedById": {"type": "user", "isMultiple": False, "upperName": "ASSIGNED_BY_ID"},
        "UF_CRM_5_COMMENT": {"type": "string", "upperName": "UF_CRM_5_COMMENT"},
        "UF_CRM_5_TO_SERVICE": {"type": "boolean", "upperName": "UF_CRM_5_TO_SERVICE"},
        "UF_CRM_5_SCORE": {"type": "integer", "upperName": "UF_CRM_5_SCORE"},
        "UF_CRM_5_CRYO_SCORE": {"type": "enumeration", "upperName": "UF_CRM_5_CRYO_SCORE"},
    }
    for product in ("SERUM", "CREAM", "MASK", "PEEL"):
        fields[f"UF_CRM_5_{product}_TESTED"] = {"type": "boolean"}
        fields[f"UF_CRM_5_{product}_SCORE"] = {"type": "double"}
    for name, spec in overrides.items():
        if spec is None:
            fields.pop(name)
        else:
            fields[name] = spec
    return {"fields": fields}


CONTACT_FIELDS = {
    "ID": {"type": "integer", "isMultiple": False},
    "NAME": {"type": "string", "isMultiple": False},
    "UF_CRM_NPS_LASER_A": {"type": "string", "isMultiple": False},
    "UF_CRM_NPS_LASER_A_DATE": {"type": "date", "isMultiple": False},
    "UF_CRM_NPS_CRYO_B": {"type": "double", "isMultiple": False},
    "UF_CRM_NPS_CRYO_B_DATE": {"type": "datetime", "isMultiple": False},
    "UF_CRM_NPS_HISTORY": {"type": "string", "isMultiple": True},
}


def userfield(name: str, type_: str, multiple: bool = False) -> dict[str, Any]:
    return {"FIELD_NAME": name, "USER_TYPE_ID": type_, "MULTIPLE": "Y" if multiple else "N"}


def check(
    config: PortalConfig,
    item: dict[str, Any],
    contact: dict[str, Any] = CONTACT_FIELDS,
    userfields: list[dict[str, Any]] | None = None,
) -> list[str]:
    return check_fields(config, item_fields(item), contact_fields(contact, userfields or []))


def test_a_portal_that_fits_has_no_problems(portal_config: PortalConfig) -> None:
    assert check(portal_config, item_result()) == []


def test_camel_case_user_field_names_are_found_by_their_upper_name(
    portal_config: PortalConfig,
) -> None:
    result = item_result(UF_CRM_5_SCORE=None)
    result["fields"]["ufCrm5Score"] = {"type": "integer", "upperName": "UF_CRM_5_SCORE"}
    assert check(portal_config, result) == []


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (
            {"UF_CRM_5_SCORE": None},
            "survey.segments[1].score_field: UF_CRM_5_SCORE does not exist in "
            "crm.item.fields of smart process 1038",
        ),
        (
            {"UF_CRM_5_CRYO_SCORE": {"type": "string"}},
            "survey.segments[2].score_field: UF_CRM_5_CRYO_SCORE is a string field; expected "
            "a numeric (integer, double) or enumeration field",
        ),
        (
            {"UF_CRM_5_MASK_TESTED": {"type": "integer"}},
            "survey.segments[0].products[2].tested_field: UF_CRM_5_MASK_TESTED is an integer "
            "field; expected a boolean field",
        ),
        (
            {"UF_CRM_5_TO_SERVICE": {"type": "string"}},
            "survey.fields.service_request: UF_CRM_5_TO_SERVICE is a string field; expected a "
            "boolean field",
        ),
        (
            {"contactId": None},
            "survey.fields.contact: contactId does not exist in crm.item.fields of smart "
            "process 1038",
        ),
    ],
)
def test_each_item_field_problem_is_one_line(
    portal_config: PortalConfig, overrides: dict[str, Any], expected: str
) -> None:
    assert check(portal_config, item_result(**overrides)) == [expected]


def test_contact_field_problems(portal_config: PortalConfig) -> None:
    contact = {
        **CONTACT_FIELDS,
        "UF_CRM_NPS_LASER_A": {"type": "boolean", "isMultiple": False},
        "UF_CRM_NPS_CRYO_B_DATE": {"type": "datetime", "isMultiple": True},
    }
    contact.pop("UF_CRM_NPS_CRYO_B")
    assert check(portal_config, item_result(), contact) == [
        "survey.segments[1].contact_fields.score: UF_CRM_NPS_LASER_A is a boolean field; "
        "expected a single numeric, enumeration or string field",
        "survey.segments[2].contact_fields.score: UF_CRM_NPS_CRYO_B does not exist in the "
        "contact fields",
        "survey.segments[2].contact_fields.date: UF_CRM_NPS_CRYO_B_DATE is a multiple datetime "
        "field; expected a single date, datetime or string field",
    ]


def test_a_history_field_must_be_multiple(portal_config: PortalConfig) -> None:
    userfields = [userfield("UF_CRM_NPS_HISTORY", "string", multiple=False)]
    problems = check(portal_config, item_result(), userfields=userfields)
    expected = (
        "contact_fields.history: UF_CRM_NPS_HISTORY is a string field; expected a multiple "
        "string field"
    )
    assert problems == [
        f"survey.segments[1].{expected}",
        f"survey.segments[2].{expected}",
    ]


def test_the_userfield_list_knows_fields_the_contact_fields_lack(
    portal_config: PortalConfig,
) -> None:
    contact = {k: v for k, v in CONTACT_FIELDS.items() if k != "UF_CRM_NPS_CRYO_B"}
    userfields = [userfield("UF_CRM_NPS_CRYO_B", "enumeration")]
    assert check(portal_config, item_result(), contact, userfields) == []


@pytest.mark.parametrize(
    ("result", "expected"),
    [
        (
            {"categories": [{"id": 10, "name": "Cosmetics"}, {"id": "16", "name": "Laser C"}]},
            [PortalCategory(10, "Cosmetics"), PortalCategory(16, "Laser C")],
        ),
        ({"categories": [{"id": 3}]}, [PortalCategory(3, "")]),
        ({"categories": [{"name": "no id"}, {"id": "x"}, {"id": None}, "16"]}, []),
        ({"categories": []}, []),
        ({}, []),
        ([], []),
        (None, []),
    ],
)
def test_portal_categories_are_read_from_crm_category_list(
    result: Any, expected: list[PortalCategory]
) -> None:
    assert portal_categories(result) == expected


@pytest.mark.parametrize(
    ("listed", "unmapped"),
    [
        ([10, 12, 14], []),
        ([10, 16, 12, 14, 18], [16, 18]),
        ([0], [0]),
        ([], []),
    ],
)
def test_unmapped_categories_are_those_no_segment_maps(
    portal_config: PortalConfig, listed: list[int], unmapped: list[int]
) -> None:
    categories = [PortalCategory(category_id, f"form {category_id}") for category_id in listed]
    assert [c.category_id for c in unmapped_categories(categories, portal_config)] == unmapped


def deal_config(portal_config: PortalConfig, **overrides: Any) -> PortalConfig:
    data = portal_config.model_dump(mode="json", exclude_none=True)
    data.pop("dispatch", None)  # no sales funnel to check here
    data["deal_surveys"] = [
        {
            "category_id": 7,
            "name": "After the sale",
            "product": {"sku": "DEAL-SALES", "name": "Sales"},
            "score_field": "UF_CRM_NPS_SCORE",
            "comment_field": "UF_CRM_NPS_COMMENT",
            "sale_deal_field": "UF_CRM_SALE_DEAL",
            **overrides,
        }
    ]
    return parse_portal_config(data)


DEAL_FIELDS = {
    "fields": {
        "id": {"type": "integer"},
        "UF_CRM_NPS_SCORE": {"type": "string", "upperName": "UF_CRM_NPS_SCORE"},
        "UF_CRM_NPS_COMMENT": {"type": "string", "upperName": "UF_CRM_NPS_COMMENT"},
        "UF_CRM_SALE_DEAL": {"type": "integer", "upperName": "UF_CRM_SALE_DEAL"},
    }
}


def test_deal_fields_that_fit_have_no_problems(portal_config: PortalConfig) -> None:
    assert check_deal_fields(deal_config(portal_config), item_fields(DEAL_FIELDS)) == []


def test_deal_field_problems_name_the_deal_survey(portal_config: PortalConfig) -> None:
    config = deal_config(portal_config, score_field="UF_CRM_NPS_FLAG", comment_field="UF_NONE")
    fields = {"fields": {**DEAL_FIELDS["fields"], "UF_CRM_NPS_FLAG": {"type": "boolean"}}}
    assert check_deal_fields(config, item_fields(fields)) == [
        "deal_surveys[0].score_field: UF_CRM_NPS_FLAG is a boolean field; expected a numeric"
        " (integer, double), enumeration or string field",
        "deal_surveys[0].comment_field: UF_NONE does not exist in the deal fields"
        " (crm.item.fields, entityTypeId 2)",
    ]


def test_funnels_resolve_their_success_and_failure_stages(portal_config: PortalConfig) -> None:
    rows = [
        {"ENTITY_ID": "DEAL_STAGE_7", "STATUS_ID": "C7:NEW", "SORT": 10, "SEMANTICS": None},
        {"ENTITY_ID": "DEAL_STAGE_7", "STATUS_ID": "C7:WON", "SORT": 60, "SEMANTICS": "S"},
        {"ENTITY_ID": "DEAL_STAGE_7", "STATUS_ID": "C7:LOSE", "SORT": 70, "SEMANTICS": "F"},
    ]
    problems, funnels = check_funnels(deal_config(portal_config), {7: rows})
    assert problems == []
    assert [(f.success and f.success.id, f.failure and f.failure.id) for f in funnels] == [
        ("C7:WON", "C7:LOSE")
    ]
    problems, _ = check_funnels(deal_config(portal_config), {7: []})
    assert problems == ["deal_surveys[0].category_id: deal category 7 does not exist (no stages)"]


def test_a_sales_funnel_needs_a_success_stage(portal_config: PortalConfig) -> None:
    config = portal_config.model_copy(update={"deal_surveys": []})
    sales = [
        {"ENTITY_ID": "DEAL_STAGE", "STATUS_ID": "NEW", "SORT": 10, "SEMANTICS": None},
        {"ENTITY_ID": "DEAL_STAGE", "STATUS_ID": "LOSE", "SORT": 70, "SEMANTICS": "F"},
    ]
    assert check_funnels(config, {0: sales})[0] == [
        "dispatch.sales[0].funnel: deal category 0 has no success stage (SEMANTICS S): no sale"
        " there can close"
    ]
    won = {"ENTITY_ID": "DEAL_STAGE", "STATUS_ID": "WON", "SORT": 60, "SEMANTICS": "S"}
    assert check_funnels(config, {0: [*sales, won]})[0] == []
