"""Robots: what ``bizproc.robot.add`` accepts, documents, launch properties and answers."""

from typing import Any

import pytest

from services.sandbox.robots import (
    DYNAMIC_DOCUMENT,
    Launch,
    RobotError,
    accept_values,
    check_handler,
    document_entity,
    document_of,
    launch_properties,
    parse_robot,
    update_robot,
)

HOSTS = {"nps.example.com"}
GOOD: dict[str, Any] = {
    "CODE": "b24nps_send_survey",
    "HANDLER": "https://nps.example.com/webhooks/bitrix24/app-robot",
    "AUTH_USER_ID": "1",
    "USE_SUBSCRIPTION": "Y",
    "NAME": {"en": "Send NPS survey"},
    "PROPERTIES": {
        "survey": {"Name": "Survey", "Type": "select", "Required": "Y"},
        "delay_hours": {"Name": "Delay", "Type": "int", "Default": 0},
    },
    "RETURN_PROPERTIES": {"status": {"Name": "Status", "Type": "string"}},
    "DOCUMENT_TYPE": ["crm", "CCrmDocumentDeal", "DEAL"],
    "FILTER": {"INCLUDE": [["crm", "CCrmDocumentDeal"]]},
}


def robot(**changes: Any) -> dict[str, Any]:
    params = {**GOOD, **changes}
    return {key: value for key, value in params.items() if value is not None}


def test_a_robot_is_registered_with_its_fields() -> None:
    parsed = parse_robot(
        {key.lower(): value for key, value in GOOD.items()},
        app_hosts=HOSTS,
        smart_processes={1038},
    )
    assert parsed.code == "b24nps_send_survey"
    assert (parsed.auth_user_id, parsed.use_subscription) == (1, True)
    assert parsed.properties["survey"] == {"NAME": "Survey", "TYPE": "select", "REQUIRED": "Y"}
    assert parsed.render()["USE_SUBSCRIPTION"] == "Y"


@pytest.mark.parametrize(
    ("changes", "code", "message"),
    [
        ({"CODE": None}, "ERROR_ACTIVITY_VALIDATION_FAILURE", "Empty activity code!"),
        ({"CODE": "send survey"}, "ERROR_ACTIVITY_VALIDATION_FAILURE", "Wrong activity code!"),
        ({"HANDLER": "https://localhost/robot"}, "ERROR_WRONG_HANDLER_URL", "Wrong handler URL"),
        ({"HANDLER": None}, "ERROR_WRONG_HANDLER_URL", "Wrong handler URL"),
        (
            {"HANDLER": "ftp://nps.example.com/robot"},
            "ERROR_UNSUPPORTED_PROTOCOL",
            "Unsupported event handler protocol",
        ),
        (
            {"HANDLER": "https://other.example.com/robot"},
            "ERROR_HANDLER_URL_MATCH",
            "Handler URL host doesn't match application url",
        ),
        ({"NAME": ""}, "ERROR_ACTIVITY_VALIDATION_FAILURE", "Empty activity NAME!"),
        (
            {"PROPERTIES": {"1st": {"Name": "x"}}},
            "ERROR_ACTIVITY_VALIDATION_FAILURE",
            "Wrong property key (1st)!",
        ),
        (
            {"RETURN_PROPERTIES": {"status": {"Type": "string"}}},
            "ERROR_ACTIVITY_VALIDATION_FAILURE",
            "Empty property NAME (status)!",
        ),
        (
            {"DOCUMENT_TYPE": ["crm", "CCrmDocumentDeal", "TASK"]},
            "ERROR_ACTIVITY_VALIDATION_FAILURE",
            "Wrong activity DOCUMENT_TYPE!",
        ),
        (
            {"DOCUMENT_TYPE": ["crm", DYNAMIC_DOCUMENT, "DYNAMIC_999"]},
            "ERROR_ACTIVITY_VALIDATION_FAILURE",
            "Wrong activity DOCUMENT_TYPE!",
        ),
        ({"FILTER": "deals"}, "ERROR_ACTIVITY_VALIDATION_FAILURE", "Wrong activity FILTER!"),
        (
            {"USE_PLACEMENT": "Y"},
            "ERROR_ACTIVITY_VALIDATION_FAILURE",
            "Empty PLACEMENT_HANDLER!",
        ),
    ],
)
def test_what_robot_add_refuses(changes: dict[str, Any], code: str, message: str) -> None:
    with pytest.raises(RobotError) as refused:
        parse_robot(robot(**changes), app_hosts=HOSTS, smart_processes={1038})
    assert (refused.value.code, refused.value.message) == (code, message)


def test_a_smart_process_document_type_must_exist() -> None:
    params = robot(DOCUMENT_TYPE=["crm", DYNAMIC_DOCUMENT, "DYNAMIC_1038"])
    assert parse_robot(params, app_hosts=HOSTS, smart_processes={1038}).document_type == [
        "crm",
        DYNAMIC_DOCUMENT,
        "DYNAMIC_1038",
    ]


@pytest.mark.parametrize(
    ("url", "hosts", "code"),
    [
        ("http://127.0.0.1:8000/robot", {"127.0.0.1"}, None),
        ("http://127.0.0.1:8000/robot", {"localhost"}, None),
        ("http://10.0.0.2/robot", {"127.0.0.1"}, "ERROR_HANDLER_URL_MATCH"),
        ("https://.example.com/robot", HOSTS, "ERROR_WRONG_HANDLER_URL"),
        ("not a url", HOSTS, "ERROR_WRONG_HANDLER_URL"),
    ],
)
def test_a_handler_lives_on_the_application_host(
    url: str, hosts: set[str], code: str | None
) -> None:
    if code is None:
        check_handler(url, hosts)
        return
    with pytest.raises(RobotError) as refused:
        check_handler(url, hosts)
    assert refused.value.code == code


def test_update_changes_fields_and_checks_them_again() -> None:
    registered = parse_robot(robot(), app_hosts=HOSTS, smart_processes=set())
    changed = update_robot(
        registered, {"name": {"en": "Ask"}}, app_hosts=HOSTS, smart_processes=set()
    )
    assert (changed.code, changed.name, changed.handler) == (
        registered.code,
        {"en": "Ask"},
        registered.handler,
    )
    with pytest.raises(RobotError) as refused:
        update_robot(
            registered,
            {"HANDLER": "https://elsewhere.example.org/r"},
            app_hosts=HOSTS,
            smart_processes=set(),
        )
    assert refused.value.code == "ERROR_HANDLER_URL_MATCH"


@pytest.mark.parametrize(
    ("document_id", "entity"),
    [
        (["crm", "CCrmDocumentDeal", "DEAL_123"], (2, 123)),
        (["crm", "CCrmDocumentLead", "LEAD_5"], (1, 5)),
        (["crm", DYNAMIC_DOCUMENT, "DYNAMIC_1038_7"], (1038, 7)),
    ],
)
def test_document_ids_name_the_entity(document_id: list[str], entity: tuple[int, int]) -> None:
    assert document_entity(document_id) == entity
    assert document_of(*entity)[0] == document_id


@pytest.mark.parametrize(
    "bad", [["crm", "CCrmDocumentDeal", "DEAL_x"], ["DEAL_1"], ["a", "b", "TASK_1"]]
)
def test_unreadable_document_ids(bad: list[str]) -> None:
    with pytest.raises(RobotError):
        document_entity(bad)


def test_launch_properties_take_defaults_and_require_required_ones() -> None:
    registered = parse_robot(robot(), app_hosts=HOSTS, smart_processes=set())
    assert launch_properties(registered, {"survey": "main"}) == {
        "survey": "main",
        "delay_hours": 0,
    }
    with pytest.raises(RobotError) as missing:
        launch_properties(registered, {})
    assert missing.value.message == "properties: survey is required"
    with pytest.raises(RobotError) as unknown:
        launch_properties(registered, {"survey": "x", "channel": "email"})
    assert unknown.value.message == (
        "properties: channel not among the robot's (survey, delay_hours)"
    )


def test_return_values_keep_the_declared_ones() -> None:
    registered = parse_robot(robot(), app_hosts=HOSTS, smart_processes=set())
    assert accept_values(registered, {"status": "sent", "link": "x"}) == (
        {"status": "sent"},
        {"link": "x"},
    )
    assert accept_values(registered, "sent") == ({}, {})


def test_a_waiting_launch_times_out() -> None:
    launch = Launch(
        id=1,
        code="c",
        workflow_id="w",
        event_token="t",
        document_id=["crm", "CCrmDocumentDeal", "DEAL_1"],
        document_type=["crm", "CCrmDocumentDeal", "DEAL"],
        properties={},
        user_id=1,
        use_subscription=True,
        created=100.0,
        timeout_at=160.0,
    )
    assert launch.state(159.9) == "waiting"
    assert launch.state(160.0) == "timed_out"
    assert launch.state(100.0) == "timed_out"
