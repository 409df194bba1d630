"""The PHP bracket encoder of batch commands (docs/bitrix24-client.md, Bitrix24 facts: batch)."""

from datetime import UTC, date, datetime
from urllib.parse import parse_qsl

import pytest

from shared.bitrix24.encoding import command_string, encode_query


def pairs(query: str) -> list[tuple[str, str]]:
    return parse_qsl(query, keep_blank_values=True, strict_parsing=True)


def test_nested_dicts_and_lists_become_bracket_keys_in_order() -> None:
    query = encode_query(
        {
            "entityTypeId": 1038,
            "filter": {"@id": [3, 4], ">updatedTime": "2024-01-01"},
            "select": ["id", "UF_CRM_5_SCORE"],
            "fields": {"UF_CRM_MULTI": [{"VALUE": "a"}, {"VALUE": "b"}]},
        }
    )
    assert pairs(query) == [
        ("entityTypeId", "1038"),
        ("filter[@id][0]", "3"),
        ("filter[@id][1]", "4"),
        ("filter[>updatedTime]", "2024-01-01"),
        ("select[0]", "id"),
        ("select[1]", "UF_CRM_5_SCORE"),
        ("fields[UF_CRM_MULTI][0][VALUE]", "a"),
        ("fields[UF_CRM_MULTI][1][VALUE]", "b"),
    ]


def test_structure_brackets_stay_readable_and_key_parts_are_escaped() -> None:
    assert encode_query({"fields": {"TITLE": "x"}}) == "fields[TITLE]=x"
    assert encode_query({"filter": {">id": 5}}) == "filter[%3Eid]=5"


def test_values_that_php_would_misread_are_percent_encoded() -> None:
    text = "a&b=c +100% ünïcode [x]"
    query = encode_query({"fields": {"COMMENTS": text}})
    assert "&" not in query
    assert " " not in query
    assert "+" not in query
    assert pairs(query) == [("fields[COMMENTS]", text)]


def test_none_becomes_an_empty_string() -> None:
    assert pairs(encode_query({"fields": {"UF_X": None}})) == [("fields[UF_X]", "")]


def test_booleans_are_one_and_zero() -> None:
    assert pairs(encode_query({"a": True, "b": False})) == [("a", "1"), ("b", "0")]


def test_an_empty_list_or_dict_keeps_its_key_as_an_empty_string() -> None:
    # Dropping the key would turn "id in (nothing)" into "no filter at all".
    assert pairs(encode_query({"filter": {"@id": []}, "params": {}})) == [
        ("filter[@id]", ""),
        ("params", ""),
    ]


def test_dates_are_iso_8601_and_numbers_plain() -> None:
    query = encode_query(
        {"d": date(2024, 7, 22), "t": datetime(2024, 7, 22, 18, 0, 8, tzinfo=UTC), "f": 9.5}
    )
    assert pairs(query) == [
        ("d", "2024-07-22"),
        ("t", "2024-07-22T18:00:08+00:00"),
        ("f", "9.5"),
    ]


def test_tuples_encode_like_lists() -> None:
    assert encode_query({"select": ("id", "title")}) == encode_query({"select": ["id", "title"]})


def test_an_unsupported_value_names_its_key() -> None:
    with pytest.raises(TypeError, match=r"fields\[X\]: cannot send a set"):
        encode_query({"fields": {"X": {1, 2}}})


def test_result_references_survive_the_encoding() -> None:
    query = encode_query({"filter": {">id": "$result[page0][items][49][id]"}})
    assert pairs(query) == [("filter[>id]", "$result[page0][items][49][id]")]


def test_command_string_joins_method_and_query() -> None:
    assert command_string("crm.contact.get", {"ID": 7}) == "crm.contact.get?ID=7"
    assert command_string("user.current", {}) == "user.current"
