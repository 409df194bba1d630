"""Parsing and checking incoming Bitrix24 requests (pure: the HTTP layer is tested separately)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.ingest.webhook import (
    MAX_BODY_BYTES,
    Accepted,
    Ignored,
    Registered,
    RequestError,
    Sender,
    Updated,
    authenticate_app,
    authenticate_event,
    authenticate_robot,
    check_content_length,
    check_content_type,
    correlation_for,
    member_to_learn,
    nest,
    parse_form,
    read_event,
    read_robot,
    token_matches,
)
from shared.dispatch_config import Dispatch, Followup
from shared.events import PortalRef
from shared.portal_config import load_portal_config

CONFIG = load_portal_config(Path(__file__).resolve().parents[2] / "config/portal.example.yaml")
NOW = datetime(2024, 7, 22, 15, 0, tzinfo=UTC)


def body(**overrides: str | None) -> str:
    values: dict[str, str | None] = {
        "event": "ONCRMDYNAMICITEMUPDATE",
        "event_handler_id": "975",
        "data[FIELDS][ID]": "24",
        "data[FIELDS][ENTITY_TYPE_ID]": "1038",
        "ts": "1766047124",
        "auth[domain]": "some-domain.bitrix24.com",
        "auth[member_id]": "d897063e1ce7c5eb9f04b9751eef5915",
        "auth[application_token]": "jvh9y1ulvt2m6k5or90v9mg8nn32ozas",
    }
    values.update(overrides)
    return urlencode({key: value for key, value in values.items() if value is not None})


def rejected(call: Any, *args: Any) -> RequestError:
    with pytest.raises(RequestError) as caught:
        call(*args)
    return caught.value


def test_parse_nests_bracket_keys() -> None:
    form = parse_form(body().encode())
    assert form["data"] == {"FIELDS": {"ID": "24", "ENTITY_TYPE_ID": "1038"}}
    assert form["auth"]["member_id"] == "d897063e1ce7c5eb9f04b9751eef5915"
    assert form["ts"] == "1766047124"


def test_nest_appends_empty_brackets_and_last_scalar_wins() -> None:
    assert nest([("a[]", "x"), ("a[]", "y"), ("b", "1"), ("b", "2")]) == {
        "a": {"0": "x", "1": "y"},
        "b": "2",
    }


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        (b"event=ON%ZZ", "body"),
        (b"event=ON%4", "body"),
        (b"event=%FF%FE", "body"),
        (b"\xff\xfe=1", "body"),
        (b"a=1&a[b]=2", "a[b]"),
        (b"a[b]=2&a=1", "a"),
        (b"a]=1", "a]"),
        (b"a[b][c][d][e][f][g]=1", "a[b][c][d][e][f][g]"),
    ],
)
def test_malformed_bodies_are_400_naming_the_field(raw: bytes, field: str) -> None:
    error = rejected(parse_form, raw)
    assert error.status == 400
    assert error.field == field
    assert error.body() == {"error": error.error, "field": field, "expected": error.expected}


def test_too_many_parameters_is_400() -> None:
    raw = "&".join(f"p{n}=1" for n in range(600)).encode()
    assert rejected(parse_form, raw).status == 400


@pytest.mark.parametrize(
    "content_type",
    [
        "application/x-www-form-urlencoded",
        "application/x-www-form-urlencoded; charset=UTF-8",
        "Application/X-WWW-Form-Urlencoded",
    ],
)
def test_form_content_type_accepted(content_type: str) -> None:
    check_content_type(content_type)


@pytest.mark.parametrize("content_type", [None, "application/json", "multipart/form-data; b=x"])
def test_other_content_types_are_415(content_type: str | None) -> None:
    error = rejected(check_content_type, content_type)
    assert (error.status, error.field) == (415, "Content-Type")


def test_content_length_checks() -> None:
    check_content_length(None)
    check_content_length(str(MAX_BODY_BYTES))
    assert rejected(check_content_length, str(MAX_BODY_BYTES + 1)).status == 413
    assert rejected(check_content_length, "12abc").status == 400


def test_token_matches_any_accepted_token() -> None:
    assert token_matches("new", ["old", "new"])
    assert token_matches("old", ["old", "new"])
    assert not token_matches("other", ["old", "new"])
    assert not token_matches("old", [])


@pytest.mark.parametrize(
    ("overrides", "status", "field"),
    [
        ({"auth[application_token]": None}, 401, "auth[application_token]"),
        ({"auth[application_token]": ""}, 401, "auth[application_token]"),
        ({"auth[application_token]": "wrong"}, 401, "auth[application_token]"),
        ({"auth[member_id]": "someone-else"}, 403, "auth[member_id]"),
        ({"auth[member_id]": None}, 403, "auth[member_id]"),
    ],
)
def test_event_authentication(overrides: dict[str, str | None], status: int, field: str) -> None:
    form = parse_form(body(**overrides))
    error = rejected(
        authenticate_event,
        form,
        ["jvh9y1ulvt2m6k5or90v9mg8nn32ozas"],
        "d897063e1ce7c5eb9f04b9751eef5915",
    )
    assert (error.status, error.field) == (status, field)
    assert "jvh9y1ulvt2m6k5or90v9mg8nn32ozas" not in str(error.body())


def test_event_authentication_passes_with_rotated_token_and_no_member_configured() -> None:
    form = parse_form(body(**{"auth[member_id]": "anything"}))
    authenticate_event(form, ["next-token", "jvh9y1ulvt2m6k5or90v9mg8nn32ozas"], None)


TOKEN = "jvh9y1ulvt2m6k5or90v9mg8nn32ozas"
INSTALLED = Registered("installed", TOKEN)


@pytest.mark.parametrize(
    ("overrides", "registered", "status", "error", "field"),
    [
        ({}, Registered("installed", "another-portals-token"), 401, "not accepted", "token"),
        ({"auth[application_token]": None}, INSTALLED, 401, "missing", "token"),
        ({"auth[application_token]": "wrong"}, INSTALLED, 401, "not accepted", "token"),
        ({}, None, 403, "not installed on this portal", "member"),
        ({}, Registered("uninstalled", None), 403, "uninstalled on this portal", "member"),
        ({}, Registered("revoked", TOKEN), 403, "revoked on this portal", "member"),
        ({}, Registered("installed", None), 403, "not known yet", "member"),
        ({"auth[member_id]": None}, INSTALLED, 400, "portal missing", "member"),
    ],
)
def test_application_mode_checks_the_sending_portals_own_token(
    overrides: dict[str, str | None],
    registered: Registered | None,
    status: int,
    error: str,
    field: str,
) -> None:
    sender = Sender.of_event(parse_form(body(**overrides)))

    def check() -> None:
        sender.portal()
        authenticate_app(sender, registered)

    refused = rejected(check)
    assert (refused.status, refused.field) == (
        status,
        {"token": "auth[application_token]", "member": "auth[member_id]"}[field],
    )
    assert error in refused.error
    assert TOKEN not in str(refused.body())


def test_application_mode_accepts_the_portals_own_token_from_a_robot_too() -> None:
    event = Sender.of_event(parse_form(body()))
    assert event.portal() == "d897063e1ce7c5eb9f04b9751eef5915"
    authenticate_app(event, INSTALLED)
    robot = Sender.of_robot({"application_token": TOKEN, "member_id": "m-robot"})
    assert (robot.portal(), robot.token_field, robot.member_field) == (
        "m-robot",
        "application_token",
        "member_id",
    )
    authenticate_app(robot, INSTALLED)


def test_nps_update_is_accepted_without_the_token_in_the_payload() -> None:
    result = read_event(parse_form(body()), CONFIG)
    assert isinstance(result, Accepted)
    assert (result.source, result.event, result.entity_type_id, result.item_id, result.ts) == (
        "event",
        "ONCRMDYNAMICITEMUPDATE",
        1038,
        24,
        1766047124,
    )
    assert result.portal == PortalRef(
        member_id="d897063e1ce7c5eb9f04b9751eef5915", domain="some-domain.bitrix24.com"
    )
    assert "application_token" not in str(result.payload)
    assert result.payload["auth"]["member_id"] == "d897063e1ce7c5eb9f04b9751eef5915"
    event = result.to_event()
    assert event.correlation_id == correlation_for(result.portal, 1038, 24)
    assert event.fields is None


@pytest.mark.parametrize(
    ("name", "base"),
    [
        ("onCrmDynamicItemAdd", "ONCRMDYNAMICITEMADD"),
        ("ONCRMDYNAMICITEMUPDATE", "ONCRMDYNAMICITEMUPDATE"),
        ("ONCRMDYNAMICITEMADD_1038", "ONCRMDYNAMICITEMADD"),
        ("oncrmdynamicitemupdate_1038", "ONCRMDYNAMICITEMUPDATE"),
    ],
)
def test_event_names_case_insensitive_and_per_type(name: str, base: str) -> None:
    result = read_event(parse_form(body(event=name)), CONFIG)
    assert isinstance(result, Accepted)
    assert result.event == base


def test_per_type_event_without_entity_type_takes_it_from_the_name() -> None:
    form = parse_form(
        body(event="ONCRMDYNAMICITEMADD_1038", **{"data[FIELDS][ENTITY_TYPE_ID]": None})
    )
    result = read_event(form, CONFIG)
    assert isinstance(result, Accepted)
    assert result.entity_type_id == 1038


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"event": "ONCRMDEALDELETE"}, "ONCRMDEALDELETE is not an NPS item"),
        ({"event": "ONCRMDYNAMICITEMDELETE"}, "not an NPS item"),
        ({"event": "ONAPPTEST", "data[FIELDS][ID]": None}, "not an NPS item"),
        ({"data[FIELDS][ENTITY_TYPE_ID]": "1040"}, "entity type 1040 is not the NPS"),
        ({"event": "ONCRMDYNAMICITEMADD_1040", "data[FIELDS][ENTITY_TYPE_ID]": None}, "1040"),
    ],
)
def test_other_events_are_ignored_with_a_reason(
    overrides: dict[str, str | None], reason: str
) -> None:
    result = read_event(parse_form(body(**overrides)), CONFIG)
    assert isinstance(result, Ignored)
    assert reason in result.reason


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"event": None}, "event"),
        ({"event": "  "}, "event"),
        ({"data[FIELDS][ID]": None}, "data[FIELDS][ID]"),
        ({"data[FIELDS][ID]": "abc"}, "data[FIELDS][ID]"),
        ({"data[FIELDS][ID]": "0"}, "data[FIELDS][ID]"),
        ({"data[FIELDS][ID]": "-4"}, "data[FIELDS][ID]"),
        ({"data[FIELDS][ENTITY_TYPE_ID]": None}, "data[FIELDS][ENTITY_TYPE_ID]"),
        ({"data[FIELDS][ENTITY_TYPE_ID]": "x"}, "data[FIELDS][ENTITY_TYPE_ID]"),
        ({"event": "ONCRMDYNAMICITEMADD_1038", "data[FIELDS][ENTITY_TYPE_ID]": "1040"}, None),
        ({"ts": "yesterday"}, "ts"),
    ],
)
def test_bad_events_are_400_naming_the_field(
    overrides: dict[str, str | None], field: str | None
) -> None:
    error = rejected(read_event, parse_form(body(**overrides)), CONFIG)
    assert error.status == 400
    assert error.field == (field or "data[FIELDS][ENTITY_TYPE_ID]")


LEAD_UPDATE = {
    "event": "ONCRMLEADUPDATE",
    "data[FIELDS][ENTITY_TYPE_ID]": None,
    "data[FIELDS][ID]": "4242",
}
TASK_UPDATE = {
    "event": "ONTASKUPDATE",
    "data[FIELDS][ENTITY_TYPE_ID]": None,
    "data[FIELDS][ID]": None,
    "data[FIELDS_BEFORE][ID]": "77",
    "data[FIELDS_AFTER][ID]": "77",
    "data[IS_ACCESSIBLE_BEFORE]": "undefined",
    "data[IS_ACCESSIBLE_AFTER]": "undefined",
}


@pytest.mark.parametrize(
    ("overrides", "entity_type", "entity_id"),
    [
        (LEAD_UPDATE, "lead", 4242),  # data[FIELDS][ID]
        ({**LEAD_UPDATE, "event": "onCrmLeadUpdate"}, "lead", 4242),
        (TASK_UPDATE, "task", 77),  # data[FIELDS_AFTER][ID]
        ({**TASK_UPDATE, "data[FIELDS_BEFORE][ID]": None}, "task", 77),
    ],
)
def test_lead_and_task_updates_are_forwarded_to_the_follow_up(
    overrides: dict[str, str | None], entity_type: str, entity_id: int
) -> None:
    result = read_event(parse_form(body(**overrides)), CONFIG)
    assert isinstance(result, Updated)
    assert (result.entity_type, result.entity_id, result.ts) == (entity_type, entity_id, 1766047124)
    event = result.to_event()
    assert event.routing_key() == f"portal.updated.{entity_type}"
    assert event.portal.key == "d897063e1ce7c5eb9f04b9751eef5915"
    assert (event.entity_type, event.entity_id, event.event) == (
        entity_type,
        entity_id,
        result.event,
    )
    assert result.to_event().event_id != event.event_id  # each one a read: none lost
    assert "jvh9y1ulvt2m6k5or90v9mg8nn32ozas" not in event.model_dump_json()


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({**LEAD_UPDATE, "data[FIELDS][ID]": None}, "data[FIELDS][ID]"),
        ({**LEAD_UPDATE, "data[FIELDS][ID]": "0"}, "data[FIELDS][ID]"),
        ({**TASK_UPDATE, "data[FIELDS_AFTER][ID]": None}, "data[FIELDS_AFTER][ID]"),
        ({**TASK_UPDATE, "data[FIELDS_AFTER][ID]": "x"}, "data[FIELDS_AFTER][ID]"),
        ({**TASK_UPDATE, "ts": "yesterday"}, "ts"),
    ],
)
def test_bad_updates_are_400_naming_the_field(overrides: dict[str, str | None], field: str) -> None:
    error = rejected(read_event, parse_form(body(**overrides)), CONFIG)
    assert (error.status, error.field) == (400, field)


def test_updates_are_ignored_when_the_follow_up_is_off() -> None:
    dispatch = (CONFIG.dispatch or Dispatch()).model_copy(
        update={"followup": Followup(enabled=False)}
    )
    off = CONFIG.model_copy(update={"dispatch": dispatch})
    result = read_event(parse_form(body(**TASK_UPDATE)), off)
    assert isinstance(result, Ignored)
    assert "dispatch.followup.enabled" in result.reason


def robot(**values: str) -> dict[str, Any]:
    params = {
        "application_token": "sandbox-app-token",
        "id": "88",
        "category_id": "10",
        "contact_id": "7",
        "responsible_id": "31",
        "UF_CRM_5_SERUM_TESTED": "Y",
        "UF_CRM_5_SERUM_SCORE": "9",
        "UF_CRM_5_COMMENT": "nice",
        "unrelated": "dropped",
    }
    params.update(values)
    return parse_form(urlencode(params))


def test_robot_fields_are_carried_in_item_shape() -> None:
    result = read_robot(robot(updated_time="2024-07-22T18:05:00+03:00"), CONFIG, NOW)
    assert isinstance(result, Accepted)
    assert (result.source, result.event, result.item_id, result.entity_type_id) == (
        "robot",
        "ROBOT",
        88,
        1038,
    )
    assert result.fields == {
        "id": 88,
        "entityTypeId": 1038,
        "categoryId": 10,
        "contactId": "7",
        "assignedById": "31",
        "UF_CRM_5_COMMENT": "nice",
        "UF_CRM_5_SERUM_TESTED": "Y",
        "UF_CRM_5_SERUM_SCORE": "9",
        "createdTime": NOW.isoformat(),
        "updatedTime": "2024-07-22T18:05:00+03:00",
    }
    assert result.ts == int(datetime(2024, 7, 22, 15, 5, tzinfo=UTC).timestamp())
    assert "application_token" not in str(result.payload)


def test_robot_without_times_uses_receipt_time_and_no_ts() -> None:
    result = read_robot(robot(), CONFIG, NOW)
    assert isinstance(result, Accepted)
    assert result.ts is None
    assert result.fields is not None
    assert result.fields["updatedTime"] == NOW.isoformat()


def test_robot_multiple_values_become_lists() -> None:
    params = robot()
    params.update(parse_form("UF_CRM_5_COMMENT[]=a&UF_CRM_5_COMMENT[]=b"))
    result = read_robot(params, CONFIG, NOW)
    assert isinstance(result, Accepted)
    assert result.fields is not None
    assert result.fields["UF_CRM_5_COMMENT"] == ["a", "b"]


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"id": ""}, "id"),
        ({"id": "x"}, "id"),
        ({"category_id": ""}, "category_id"),
        ({"entity_type_id": "abc"}, "entity_type_id"),
        ({"updated_time": "soon"}, "updated_time"),
        ({"created_time": "31.31.2024"}, "created_time"),
    ],
)
def test_bad_robot_calls_are_400(values: dict[str, str], field: str) -> None:
    error = rejected(read_robot, robot(**values), CONFIG, NOW)
    assert (error.status, error.field) == (400, field)


def test_robot_with_a_plain_auth_value_still_reads() -> None:
    params = robot(auth="x")
    authenticate_robot(params, ["sandbox-app-token"], None)
    result = read_robot(params, CONFIG, NOW)
    assert isinstance(result, Accepted)
    assert result.payload["auth"] == {}


def test_robot_for_another_smart_process_is_ignored() -> None:
    assert isinstance(read_robot(robot(entity_type_id="1040"), CONFIG, NOW), Ignored)


def test_robot_token_in_either_place() -> None:
    authenticate_robot(robot(), ["sandbox-app-token"], None)
    nested = robot(**{"auth[application_token]": "sandbox-app-token"})
    del nested["application_token"]
    authenticate_robot(nested, ["sandbox-app-token"], None)
    error = rejected(
        authenticate_robot, robot(application_token="nope"), ["sandbox-app-token"], None
    )
    assert (error.status, error.field) == (401, "application_token")
    foreign = rejected(authenticate_robot, robot(member_id="x"), ["sandbox-app-token"], "mine")
    assert (foreign.status, foreign.field) == (403, "member_id")


@pytest.mark.parametrize(
    ("learned", "error", "expected"),
    [
        (False, "event from a portal other than the configured one", "portal.member_id"),
        (
            True,
            "event from a portal other than the one this deployment serves",
            "the member_id learned from the deployment's first event (`nps config check --portal`)",
        ),
    ],
)
def test_another_portal_is_403_saying_where_the_served_one_comes_from(
    learned: bool, error: str, expected: str
) -> None:
    with pytest.raises(RequestError) as refused:
        authenticate_event(
            parse_form(body()), ["jvh9y1ulvt2m6k5or90v9mg8nn32ozas"], "mine", learned=learned
        )
    assert refused.value.status == 403
    assert refused.value.body() == {
        "error": error,
        "field": "auth[member_id]",
        "expected": expected,
    }


@pytest.mark.parametrize(
    ("portal", "learnable"),
    [
        (PortalRef(member_id="a1", domain="x.bitrix24.com"), True),
        (PortalRef(member_id="a1"), True),
        (PortalRef(domain="x.bitrix24.com"), False),
        (PortalRef(), False),
    ],
)
def test_only_a_portal_with_a_member_id_can_be_learned(portal: PortalRef, learnable: bool) -> None:
    if learnable:
        assert member_to_learn(portal, "member_id") == portal
    else:
        refused = rejected(member_to_learn, portal, "member_id")
        assert (refused.status, refused.field) == (403, "member_id")


KEYS = st.sampled_from(
    [
        "event",
        "ts",
        "data[FIELDS][ID]",
        "data[FIELDS][ENTITY_TYPE_ID]",
        "data[FIELDS]",
        "data",
        "data[FIELDS][ID][]",
        "auth",
        "auth[member_id]",
        "auth[domain]",
        "id",
        "id[x]",
        "category_id",
        "entity_type_id",
        "updated_time",
        "created_time[]",
        "member_id",
        "UF_CRM_5_SCORE",
        "UF_CRM_5_SCORE[]",
        "contact_id",
    ]
)
VALUES = st.one_of(
    st.sampled_from(["", "1038", "24", "-1", "0", "Y", "ONCRMDYNAMICITEMADD", "2024-07-22"]),
    st.text(max_size=12),
)


@settings(max_examples=300, deadline=None)
@given(pairs=st.lists(st.tuples(KEYS, VALUES), max_size=12), robot_call=st.booleans())
def test_any_request_is_accepted_ignored_or_rejected_cleanly(
    pairs: list[tuple[str, str]], robot_call: bool
) -> None:
    """Whatever arrives, the outcome is a result or a RequestError, never another exception."""
    raw = urlencode([*pairs, ("auth[application_token]", "t"), ("application_token", "t")])
    result = outcome(raw, robot_call)
    if isinstance(result, RequestError):
        assert result.status in (400, 401, 403)
    elif isinstance(result, Accepted):
        assert result.item_id > 0
        assert "application_token" not in str(result.payload)
        assert result.to_event().item_id == result.item_id
    elif isinstance(result, Updated):
        assert result.to_event().entity_id == result.entity_id > 0


def outcome(raw: str, robot_call: bool) -> Accepted | Updated | Ignored | RequestError:
    try:
        form = parse_form(raw)
        if robot_call:
            authenticate_robot(form, ["t"], None)
            return read_robot(form, CONFIG, NOW)
        authenticate_event(form, ["t"], None)
        return read_event(form, CONFIG)
    except RequestError as error:
        return error
