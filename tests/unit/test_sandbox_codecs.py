"""PHP bracket keys, field-name conversion and the outgoing event body."""

from urllib.parse import parse_qsl

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.sandbox.brackets import encode, parse_query
from services.sandbox.events import event_body
from services.sandbox.naming import camel_to_upper, uf_to_camel, upper_to_camel


def test_bracket_keys_rebuild_nested_dicts_and_lists() -> None:
    query = (
        "entityTypeId=1038&fields%5BTITLE%5D=x&fields%5BUF_CRM_5_SCORE%5D=7"
        "&filter%5B%40ID%5D%5B0%5D=1&filter%5B%40ID%5D%5B1%5D=2&select[]=ID&select[]=NAME"
        "&order[ID]=DESC&sparse[3]=z&empty="
    )
    assert parse_query(query) == {
        "entityTypeId": "1038",
        "fields": {"TITLE": "x", "UF_CRM_5_SCORE": "7"},
        "filter": {"@ID": ["1", "2"]},
        "select": ["ID", "NAME"],
        "order": {"ID": "DESC"},
        "sparse": {"3": "z"},
        "empty": "",
    }


def test_deep_keys_and_appends_nest_like_php() -> None:
    parsed = parse_query(
        "fields[PHONE][0][VALUE]=1&fields[PHONE][0][VALUE_TYPE]=WORK&fields[PHONE][][VALUE]=2"
    )
    assert parsed == {"fields": {"PHONE": [{"VALUE": "1", "VALUE_TYPE": "WORK"}, {"VALUE": "2"}]}}


_keys = st.text(alphabet="abcXYZ_@>=!%", min_size=1, max_size=6).filter(lambda k: not k.isdigit())
_text = st.text(st.characters(exclude_categories=["Cs"]), max_size=8)
_values = st.recursive(
    _text,
    lambda inner: (
        st.lists(inner, min_size=1, max_size=3)
        | st.dictionaries(_keys, inner, min_size=1, max_size=3)
    ),
    max_leaves=8,
)


@given(st.dictionaries(_keys, _values, max_size=4))
def test_encode_then_parse_round_trips(params: dict[str, object]) -> None:
    assert parse_query(encode(params)) == params


@pytest.mark.parametrize(
    ("upper", "camel"),
    [
        ("UF_CRM_10_5186744711", "ufCrm10_5186744711"),
        ("UF_CRM_3_DIGIT", "ufCrm3Digit"),
        ("UF_CRM_3_DIGIT10", "ufCrm_3_DIGIT10"),
        ("UF_CRM_1747309879", "ufCrm_1747309879"),
        ("UF_CRM_5_TO_SERVICE", "ufCrm5ToService"),
        ("UF_CRM_NPS_LASER_A", "ufCrm_NPS_LASER_A"),
    ],
)
def test_user_field_names_convert_as_api_facts_describe(upper: str, camel: str) -> None:
    assert uf_to_camel(upper) == camel


def test_standard_names_convert_both_ways() -> None:
    assert upper_to_camel("ASSIGNED_BY_ID") == "assignedById"
    assert camel_to_upper("assignedById") == "ASSIGNED_BY_ID"
    assert upper_to_camel("UF_CRM_TASK") == "ufCrmTask"


def test_event_body_is_the_realistic_raw_body_of_api_facts() -> None:
    body = event_body(
        event="ONCRMDYNAMICITEMUPDATE",
        handler_id=975,
        entity_type_id=1220,
        item_id=24,
        ts=1766047124,
        domain="some-domain.bitrix24.com",
        member_id="d897063e1ce7c5eb9f04b9751eef5915",
        application_token="jvh9y1ulvt2m6k5or90v9mg8nn32ozas",
    )
    assert body == (
        "event=ONCRMDYNAMICITEMUPDATE&event_handler_id=975"
        "&data%5BFIELDS%5D%5BID%5D=24&data%5BFIELDS%5D%5BENTITY_TYPE_ID%5D=1220"
        "&ts=1766047124"
        "&auth%5Bdomain%5D=some-domain.bitrix24.com"
        "&auth%5Bclient_endpoint%5D=https%3A%2F%2Fsome-domain.bitrix24.com%2Frest%2F"
        "&auth%5Bserver_endpoint%5D=https%3A%2F%2Foauth.bitrix.info%2Frest%2F"
        "&auth%5Bmember_id%5D=d897063e1ce7c5eb9f04b9751eef5915"
        "&auth%5Bapplication_token%5D=jvh9y1ulvt2m6k5or90v9mg8nn32ozas"
    )
    assert dict(parse_qsl(body))["data[FIELDS][ENTITY_TYPE_ID]"] == "1220"
