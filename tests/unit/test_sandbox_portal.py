"""Bitrix24 behaviour of the sandbox portal, through ``SandboxPortal.call`` (no HTTP)."""

from pathlib import Path
from typing import Any

import pytest

from services.sandbox.faults import Faults
from services.sandbox.limits import Limits
from services.sandbox.portal import SandboxPortal
from services.sandbox.seed import seed_demo
from tests.support import FakeClock

CONFIG = Path(__file__).parents[2] / "config" / "portal.example.yaml"
NPS = 1038


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(1_760_000_000.0)


@pytest.fixture
def portal(clock: FakeClock) -> SandboxPortal:
    portal = SandboxPortal(limits=Limits.off(), clock=clock)
    seed_demo(portal, CONFIG, contacts=20, seed=7)
    return portal


def ok(portal: SandboxPortal, method: str, params: dict[str, Any]) -> Any:
    status, body = portal.call(method, params)
    assert status == 200, body
    return body["result"]


def add_item(portal: SandboxPortal, **fields: Any) -> dict[str, Any]:
    params = {"entityTypeId": NPS, "fields": fields, "useOriginalUfNames": "Y"}
    item: dict[str, Any] = ok(portal, "crm.item.add", params)["item"]
    return item


# --- limits -------------------------------------------------------------------------------


def test_the_51st_request_of_a_burst_gets_503_and_a_drained_bucket_accepts_again(
    clock: FakeClock,
) -> None:
    portal = SandboxPortal(clock=clock)
    statuses = [portal.call("user.get", {"ID": 1})[0] for _ in range(51)]
    assert statuses == [200] * 50 + [503]
    status, body = portal.call("user.get", {"ID": 1})
    assert (status, body["error"], body["error_description"]) == (
        503,
        "QUERY_LIMIT_EXCEEDED",
        "Too many requests",
    )
    assert "time" in body
    clock.now += 0.5  # 2 req/s drains one request in half a second
    assert portal.call("user.get", {"ID": 1})[0] == 200
    assert portal.call("user.get", {"ID": 1})[0] == 503
    clock.now += 25
    assert [portal.call("user.get", {"ID": 1})[0] for _ in range(50)] == [200] * 50
    assert portal.calls_report()["limit_errors"]["QUERY_LIMIT_EXCEEDED"] == 3


def test_a_batch_counts_once_in_the_bucket(clock: FakeClock) -> None:
    portal = SandboxPortal(limits=Limits(per_second=2, burst=2), clock=clock)
    cmd = {f"u{i}": "user.get?ID=1" for i in range(50)}
    assert portal.call("batch", {"cmd": cmd})[0] == 200
    assert portal.call("batch", {"cmd": cmd})[0] == 200
    assert portal.call("batch", {"cmd": cmd})[0] == 503


def test_429_after_the_operating_budget_until_its_reset(clock: FakeClock) -> None:
    limits = Limits(per_second=None, operating_limit_s=480, cost_per_call_s=100)
    portal = SandboxPortal(limits=limits, clock=clock)
    start = clock.now
    for _ in range(5):  # 100 .. 500 s: the call that goes over is still allowed
        status, body = portal.call("user.get", {"ID": 1})
        assert status == 200
        clock.now += 1
    assert body["time"]["operating"] == 500
    assert body["time"]["operating_reset_at"] == int(start + 600)
    status, body = portal.call("user.get", {"ID": 1})
    assert (status, body["error"], body["error_description"]) == (
        429,
        "OPERATION_TIME_LIMIT",
        "Method is blocked due to operation time limit.",
    )
    assert body["time"]["operating_reset_at"] == int(start + 600)
    assert portal.call("crm.contact.fields", {})[0] == 200  # other methods still work
    clock.now = start + 600
    assert portal.call("user.get", {"ID": 1})[0] == 200


def test_batch_commands_count_against_their_own_methods_not_batch(clock: FakeClock) -> None:
    limits = Limits(per_second=None, operating_limit_s=150, cost_per_call_s=100)
    portal = SandboxPortal(limits=limits, clock=clock)
    body = portal.call("batch", {"cmd": {"a": "user.get?ID=1", "b": "user.get?ID=1"}})[1]
    assert body["result"]["result_time"]["b"]["operating"] == 200
    assert body["time"]["operating"] == 0
    body = portal.call("batch", {"cmd": {"c": "user.get?ID=1", "d": "crm.contact.fields"}})[1]
    assert body["result"]["result_error"] == {
        "c": {
            "error": "OPERATION_TIME_LIMIT",
            "error_description": "Method is blocked due to operation time limit.",
        }
    }
    assert "d" in body["result"]["result"]
    assert portal.calls_report()["limit_errors"]["OPERATION_TIME_LIMIT"] == 1


def test_limits_off_means_no_operating_fields(clock: FakeClock) -> None:
    body = SandboxPortal(limits=Limits.off(), clock=clock).call("user.get", {})[1]
    assert set(body["time"]) == {
        "start",
        "finish",
        "duration",
        "processing",
        "date_start",
        "date_finish",
    }


# --- batch --------------------------------------------------------------------------------


def test_batch_of_51_runs_50_and_fails_the_51st(portal: SandboxPortal) -> None:
    cmd = {f"c{i:02d}": f"user.get?ID={i}" for i in range(51)}
    result = ok(portal, "batch", {"halt": 0, "cmd": cmd})
    assert len(result["result"]) == 50
    assert result["result_error"] == {
        "c50": {
            "error": "ERROR_BATCH_LENGTH_EXCEEDED",
            "error_description": "Max batch length exceeded",
        }
    }
    assert set(result["result_time"]) == {f"c{i:02d}" for i in range(50)}
    assert result["result_total"]["c05"] == 1


def test_batch_references_earlier_results(portal: SandboxPortal) -> None:
    first = add_item(portal, categoryId=12, UF_CRM_5_SCORE=3)
    add_item(portal, categoryId=12, UF_CRM_5_SCORE=9)
    cmd = {
        "page": f"crm.item.list?entityTypeId={NPS}&order[id]=ASC&select[]=id&select[]=contactId",
        "next": f"crm.item.list?entityTypeId={NPS}&filter[>id]=$result[page][items][0][id]"
        "&select[]=id",
        "get": f"crm.item.get?entityTypeId={NPS}&id=$result[page][items][0][id]",
        "inline": f"crm.item.list?entityTypeId={NPS}&select[]=id"
        "&filter[title]=NPS%20%23$result[get][item][id]",
        "missing": f"crm.item.get?entityTypeId={NPS}&id=$result[nothing][item][id]",
    }
    result = ok(portal, "batch", {"cmd": cmd})
    assert [item["id"] for item in result["result"]["next"]["items"]] == [first["id"] + 1]
    assert result["result"]["get"]["item"]["id"] == first["id"]
    assert result["result"]["inline"]["items"] == [{"id": first["id"], "entityTypeId": NPS}]
    assert list(result["result_error"]) == ["missing"]


def test_empty_batch_sections_are_json_arrays(portal: SandboxPortal) -> None:
    result = ok(portal, "batch", {"cmd": {"u": "user.get?ID=1"}})
    assert result["result_error"] == []
    assert result["result_next"] == []
    empty = ok(portal, "batch", {"cmd": {}})
    assert empty == {
        "result": [],
        "result_error": [],
        "result_total": [],
        "result_next": [],
        "result_time": [],
    }
    listed = ok(portal, "batch", {"cmd": ["user.get?ID=1", "user.get?ID=5"]})
    assert isinstance(listed["result"], list)


def test_batch_halt_nested_batch_and_unknown_methods(portal: SandboxPortal) -> None:
    cmd = {
        "a": "crm.contact.get?ID=999999",
        "b": "batch?cmd[x]=user.get",
        "c": "no.such.method",
        "d": "user.get?ID=1",
    }
    result = ok(portal, "batch", {"halt": 0, "cmd": cmd})
    assert result["result_error"]["a"] == {"error": "", "error_description": "Not found"}
    assert result["result_error"]["b"]["error"] == "ERROR_BATCH_METHOD_NOT_ALLOWED"
    assert result["result_error"]["c"]["error"] == "ERROR_METHOD_NOT_FOUND"
    assert list(result["result"]) == ["d"]
    halted = ok(portal, "batch", {"halt": 1, "cmd": cmd})
    assert list(halted["result_error"]) == ["a"]
    assert halted["result"] == []


# --- crm.item.* ---------------------------------------------------------------------------


def test_missing_item_and_missing_contact_are_400_with_bitrix_bodies(
    portal: SandboxPortal,
) -> None:
    status, body = portal.call("crm.item.get", {"entityTypeId": NPS, "id": 999})
    assert (status, body["error"], body["error_description"]) == (
        400,
        "NOT_FOUND",
        "Element not found",
    )
    status, body = portal.call("crm.item.get", {"entityTypeId": 999, "id": 1})
    assert (status, body["error_description"]) == (400, "Smart process not found")
    status, body = portal.call("crm.contact.get", {"ID": 999999})
    assert (status, body["error"], body["error_description"]) == (400, "", "Not found")
    assert "time" in body
    status, body = portal.call("crm.contact.get", {})
    assert (status, body["error_description"]) == (400, "ID is not defined or invalid.")


def test_use_original_uf_names_switches_user_field_names(portal: SandboxPortal) -> None:
    item = add_item(portal, categoryId=12, UF_CRM_5_SCORE=8, ufCrm5Comment="fine")
    params = {"entityTypeId": NPS, "id": item["id"]}
    camel = ok(portal, "crm.item.get", params)["item"]
    original = ok(portal, "crm.item.get", {**params, "useOriginalUfNames": "Y"})["item"]
    assert camel["ufCrm5Score"] == 8
    assert camel["ufCrm5Comment"] == "fine"
    assert "UF_CRM_5_SCORE" not in camel
    assert original["UF_CRM_5_SCORE"] == 8
    assert "ufCrm5Score" not in original
    assert camel["assignedById"] == original["assignedById"] == 1
    fields = ok(portal, "crm.item.fields", params)["fields"]
    assert fields["ufCrm5Score"]["upperName"] == "UF_CRM_5_SCORE"
    assert fields["contactId"]["upperName"] == "CONTACT_ID"
    assert (
        "UF_CRM_5_SCORE"
        in ok(portal, "crm.item.fields", {**params, "useOriginalUfNames": "Y"})["fields"]
    )


def test_enumeration_stores_list_item_ids(portal: SandboxPortal) -> None:
    fields = ok(portal, "crm.item.fields", {"entityTypeId": NPS, "useOriginalUfNames": "Y"})[
        "fields"
    ]
    score = fields["UF_CRM_5_CRYO_SCORE"]
    assert score["type"] == "enumeration"
    assert score["items"][0] == {"ID": "2001", "VALUE": "0"}
    by_value = {entry["VALUE"]: int(entry["ID"]) for entry in score["items"]}
    item = add_item(portal, categoryId=14, UF_CRM_5_CRYO_SCORE=by_value["7"])
    assert item["UF_CRM_5_CRYO_SCORE"] == 2008
    listed = ok(
        portal,
        "crm.item.list",
        {"entityTypeId": NPS, "filter": {"ufCrm5CryoScore": "2008"}, "select": ["id"]},
    )
    assert [row["id"] for row in listed["items"]] == [item["id"]]
    status, body = portal.call(
        "crm.item.add", {"entityTypeId": NPS, "fields": {"UF_CRM_5_CRYO_SCORE": "7"}}
    )
    assert (status, body["error"]) == (400, "CRM_FIELD_ERROR_VALUE_NOT_VALID")


def test_item_update_is_partial_and_ignores_unknown_fields(portal: SandboxPortal) -> None:
    item = add_item(portal, categoryId=12, UF_CRM_5_SCORE=4, UF_CRM_5_COMMENT="broken")
    updated = ok(
        portal,
        "crm.item.update",
        {
            "entityTypeId": NPS,
            "id": item["id"],
            "fields": {"UF_CRM_5_SCORE": 6, "NO_SUCH_FIELD": 1},
            "useOriginalUfNames": "Y",
        },
    )["item"]
    assert updated["UF_CRM_5_SCORE"] == 6
    assert updated["UF_CRM_5_COMMENT"] == "broken"
    assert updated["categoryId"] == 12
    assert updated["stageId"] == "DT1038_12:NEW"
    status, body = portal.call(
        "crm.item.update", {"entityTypeId": NPS, "id": 999, "fields": {"title": "x"}}
    )
    assert (status, body["error"]) == (400, "NOT_FOUND")


def test_item_list_filters_order_and_pages(portal: SandboxPortal) -> None:
    for score in range(11):
        add_item(portal, categoryId=12, UF_CRM_5_SCORE=score)
    for _ in range(49):
        add_item(portal, categoryId=10)

    def ids(filter_: dict[str, Any], **extra: Any) -> list[int]:
        params = {"entityTypeId": NPS, "filter": filter_, "select": ["id"], **extra}
        return [row["id"] for row in ok(portal, "crm.item.list", params)["items"]]

    assert ids({"@id": [2, 4]}) == [2, 4]
    assert ids({">=ufCrm5Score": 9}) == [10, 11]
    assert ids({">UF_CRM_5_SCORE": 9}) == [11]
    assert ids({"<=UF_CRM_5_SCORE": 1}) == [1, 2]
    assert ids({"<UF_CRM_5_SCORE": 1}) == [1]
    assert ids({"=UF_CRM_5_SCORE": 5}) == [6]
    assert ids({"!categoryId": 10}) == list(range(1, 12))
    assert ids({"categoryId": 12}, order={"id": "DESC"})[:2] == [11, 10]
    status, body = portal.call("crm.item.list", {"entityTypeId": NPS, "filter": {"nope": 1}})
    assert (status, body["error"]) == (400, "INVALID_ARG_VALUE")

    status, body = portal.call("crm.item.list", {"entityTypeId": NPS, "select": ["id"]})
    assert (len(body["result"]["items"]), body["total"], body["next"]) == (50, 60, 50)
    body = portal.call("crm.item.list", {"entityTypeId": NPS, "start": 50})[1]
    assert (len(body["result"]["items"]), body["total"], "next" in body) == (10, 60, False)
    body = portal.call("crm.item.list", {"entityTypeId": NPS, "start": -1})[1]
    assert (len(body["result"]["items"]), body["total"], "next" in body) == (50, 0, False)


def test_boolean_user_fields_filter_with_1_and_0_not_y_and_n(portal: SandboxPortal) -> None:
    add_item(portal, categoryId=12, UF_CRM_5_TO_SERVICE="Y")
    add_item(portal, categoryId=12, UF_CRM_5_TO_SERVICE=False)

    def count(value: Any) -> int:
        params = {"entityTypeId": NPS, "filter": {"UF_CRM_5_TO_SERVICE": value}}
        return len(ok(portal, "crm.item.list", params)["items"])

    assert (count(1), count("0"), count("Y"), count("N")) == (1, 1, 0, 0)


def test_multiple_item_field_needs_an_array(portal: SandboxPortal) -> None:
    status, body = portal.call("crm.item.add", {"entityTypeId": NPS, "fields": {"observers": 5}})
    assert (status, body["error"]) == (400, "100")


# --- crm.contact.* ------------------------------------------------------------------------


def contact(portal: SandboxPortal, contact_id: int) -> dict[str, Any]:
    result: dict[str, Any] = ok(portal, "crm.contact.get", {"ID": contact_id})
    return result


def test_contact_values_come_back_as_strings(portal: SandboxPortal) -> None:
    ok(
        portal,
        "crm.contact.update",
        {"ID": 1, "FIELDS": {"UF_CRM_NPS_CRYO_B": 7.5, "UF_CRM_NPS_LASER_A_DATE": "2024-05-06"}},
    )
    card = contact(portal, 1)
    assert card["ID"] == "1"
    assert card["UF_CRM_NPS_CRYO_B"] == "7.5"
    assert card["UF_CRM_NPS_LASER_A_DATE"] == "2024-05-06T00:00:00+03:00"
    assert isinstance(card["ASSIGNED_BY_ID"], str)


def test_contact_update_is_partial_and_replaces_multiple_fields(portal: SandboxPortal) -> None:
    before = contact(portal, 2)
    assert (
        ok(
            portal,
            "crm.contact.update",
            {
                "ID": 2,
                "FIELDS": {"UF_CRM_NPS_HISTORY": ["a", "b"], "UNKNOWN_FIELD": "x"},
                "PARAMS": {"REGISTER_SONET_EVENT": "N"},
            },
        )
        is True
    )
    after = contact(portal, 2)
    assert after["UF_CRM_NPS_HISTORY"] == ["a", "b"]
    assert after["NAME"] == before["NAME"]
    assert after["UF_CRM_NPS_LASER_A"] == before["UF_CRM_NPS_LASER_A"]
    ok(portal, "crm.contact.update", {"ID": 2, "FIELDS": {"UF_CRM_NPS_HISTORY": ["c"]}})
    assert contact(portal, 2)["UF_CRM_NPS_HISTORY"] == ["c"]
    changes = portal.crm.history(3, 2)
    assert [(c.field, c.before, c.after, c.method) for c in changes[-2:]] == [
        ("UF_CRM_NPS_HISTORY", before["UF_CRM_NPS_HISTORY"], ["a", "b"], "crm.contact.update"),
        ("UF_CRM_NPS_HISTORY", ["a", "b"], ["c"], "crm.contact.update"),
    ]
    status, body = portal.call("crm.contact.update", {"ID": 999999, "FIELDS": {"NAME": "x"}})
    assert (status, body["error"], body["error_description"]) == (400, "", "Not found")


def test_phone_and_email_follow_the_multiple_field_rules(portal: SandboxPortal) -> None:
    ok(portal, "crm.contact.update", {"ID": 3, "FIELDS": {"PHONE": []}})
    phones = contact(portal, 3)["PHONE"]
    assert len(phones) == 1  # an empty list changes nothing
    first = phones[0]["ID"]
    ok(
        portal,
        "crm.contact.update",
        {
            "ID": 3,
            "FIELDS": {"PHONE": [{"VALUE": "+100", "VALUE_TYPE": "MOBILE"}, {"VALUE": "+200"}]},
        },
    )
    phones = contact(portal, 3)["PHONE"]
    assert [p["VALUE"] for p in phones][1:] == ["+100", "+200"]
    second, third = phones[1]["ID"], phones[2]["ID"]
    ok(
        portal,
        "crm.contact.update",
        {
            "ID": 3,
            "FIELDS": {
                "PHONE": [
                    {"ID": first, "VALUE": "+111", "VALUE_TYPE": "HOME"},
                    {"ID": second},
                    {"ID": third, "DELETE": "Y"},
                ],
                "EMAIL": [{"VALUE": "x@example.com"}],
            },
        },
    )
    card = contact(portal, 3)
    assert card["PHONE"] == [
        {"ID": first, "VALUE_TYPE": "HOME", "VALUE": "+111", "TYPE_ID": "PHONE"}
    ]
    assert card["EMAIL"][-1]["VALUE"] == "x@example.com"


def test_contact_list_select_filter_and_userfields(portal: SandboxPortal) -> None:
    rows = ok(portal, "crm.contact.list", {"filter": {"@ID": ["1", "2"]}})
    assert [row["ID"] for row in rows] == ["1", "2"]
    assert "UF_CRM_NPS_HISTORY" not in rows[0]
    assert "PHONE" not in rows[0]
    rows = ok(portal, "crm.contact.list", {"filter": {"ID": 1}, "select": ["ID", "UF_*", "PHONE"]})
    assert {"UF_CRM_NPS_HISTORY", "PHONE", "UF_CRM_NPS_CRYO_B"} <= set(rows[0])
    assert "NAME" not in rows[0]
    userfields = ok(portal, "crm.contact.userfield.list", {"filter": {"MULTIPLE": "Y"}})
    assert [uf["FIELD_NAME"] for uf in userfields] == ["UF_CRM_NPS_HISTORY"]
    types = {
        uf["FIELD_NAME"]: uf["USER_TYPE_ID"] for uf in ok(portal, "crm.contact.userfield.list", {})
    }
    assert types["UF_CRM_NPS_LASER_A"] == "string"
    assert types["UF_CRM_NPS_CRYO_B"] == "double"
    fields = ok(portal, "crm.contact.fields", {})
    assert fields["PHONE"]["type"] == "crm_multifield"
    assert fields["UF_CRM_NPS_HISTORY"]["isMultiple"] is True


# --- leads, tasks, timeline, users --------------------------------------------------------


def test_lead_add_returns_the_id_and_origin_is_filterable(portal: SandboxPortal) -> None:
    lead_id = ok(
        portal,
        "crm.lead.add",
        {
            "fields": {
                "TITLE": "Laser A: score 2",
                "ASSIGNED_BY_ID": 17,
                "CONTACT_ID": 4,
                "ORIGIN_ID": "action-1",
                "ORIGINATOR_ID": "b24-nps",
                "NOT_A_FIELD": "ignored",
            }
        },
    )
    assert lead_id == 1
    rows = ok(
        portal, "crm.lead.list", {"filter": {"ORIGIN_ID": "action-1", "ORIGINATOR_ID": "b24-nps"}}
    )
    assert [(row["ID"], row["STATUS_ID"], row["ASSIGNED_BY_ID"]) for row in rows] == [
        ("1", "NEW", "17")
    ]
    assert ok(portal, "crm.lead.list", {"filter": {"ORIGIN_ID": "action-2"}}) == []


def test_task_add_answers_camel_case_and_tasks_are_findable(portal: SandboxPortal) -> None:
    fields = {
        "TITLE": "NPS 3 from Ivan",
        "DESCRIPTION": "Score 3: broken",
        "RESPONSIBLE_ID": 5,
        "DEADLINE": "2025-10-24T19:00:00+03:00",
        "UF_CRM_TASK": ["C_4", "T40e_1"],
        "XML_ID": "action-7",
    }
    task = ok(portal, "tasks.task.add", {"fields": fields})["task"]
    assert task["xmlId"] == "action-7"
    assert (task["id"], task["title"], task["responsibleId"]) == ("1", "NPS 3 from Ivan", "5")
    assert task["deadline"] == "2025-10-24T19:00:00+03:00"
    assert "ufCrmTask" not in task
    found = ok(
        portal,
        "tasks.task.list",
        {"filter": {"UF_CRM_TASK": "T40e_1"}, "select": ["ID", "TITLE", "UF_CRM_TASK"]},
    )["tasks"]
    assert found == [{"id": "1", "title": "NPS 3 from Ivan", "ufCrmTask": ["C_4", "T40e_1"]}]
    assert ok(portal, "tasks.task.list", {"filter": {"%TITLE": "from ivan"}})["tasks"]
    assert ok(portal, "tasks.task.list", {"filter": {"UF_CRM_TASK": "T40e_2"}})["tasks"] == []
    status, body = portal.call("tasks.task.add", {"fields": {"TITLE": "x", "RESPONSIBLE_ID": 404}})
    assert (status, body["error"]) == (400, "ERROR_CORE")
    status, body = portal.call("tasks.task.add", {"fields": {"RESPONSIBLE_ID": 5}})
    assert body["error_description"] == "Task title not specified"


def test_timeline_comment_needs_lower_case_fields(portal: SandboxPortal) -> None:
    comment = {"ENTITY_ID": 1, "ENTITY_TYPE": "contact", "COMMENT": "NPS 9"}
    assert ok(portal, "crm.timeline.comment.add", {"fields": comment}) == 1
    assert portal.call("crm.timeline.comment.add", {"FIELDS": comment})[0] == 400
    missing = {**comment, "ENTITY_ID": 999999}
    assert portal.call("crm.timeline.comment.add", {"fields": missing})[0] == 400


def test_user_get_by_id(portal: SandboxPortal) -> None:
    users = ok(portal, "user.get", {"ID": 17})
    assert [(u["ID"], u["NAME"], u["LAST_NAME"]) for u in users] == [("17", "Sergey", "Fedorov")]
    assert {u["ID"] for u in ok(portal, "user.get", {"FILTER": {"ID": [5, 23]}})} == {"5", "23"}


def test_method_names_are_case_insensitive_and_unknown_ones_404(portal: SandboxPortal) -> None:
    assert portal.call("USER.GET.json", {"ID": 1})[0] == 200
    status, body = portal.call("crm.company.list", {})
    assert (status, body["error"], body["error_description"]) == (
        404,
        "ERROR_METHOD_NOT_FOUND",
        "Method not found!",
    )


def test_wrong_webhook_credentials_get_401(portal: SandboxPortal) -> None:
    status, body = portal.call("user.get", {}, auth=("1", "wrong"))
    assert (status, body["error"], body["error_description"]) == (
        401,
        "NO_AUTH_FOUND",
        "Wrong authorization data",
    )
    assert portal.call("user.get", {}, auth=("2", portal.secret))[0] == 401
    assert portal.call("user.get", {}, auth=("1", portal.secret))[0] == 200


# --- events -------------------------------------------------------------------------------


def test_item_add_and_real_updates_queue_events_for_handlers(
    portal: SandboxPortal, clock: FakeClock
) -> None:
    add_handler, update_handler, *_ = portal.register_handler(
        "http://ingest.local/webhooks/bitrix24"
    )
    item = add_item(portal, categoryId=12, UF_CRM_5_SCORE=2)
    update = {"entityTypeId": NPS, "id": item["id"], "fields": {"UF_CRM_5_SCORE": 2}}
    ok(portal, "crm.item.update", update)  # nothing changes: no save, no event
    ok(portal, "crm.item.update", {**update, "fields": {"UF_CRM_5_SCORE": 3}})
    ok(portal, "crm.contact.update", {"ID": 1, "FIELDS": {"NAME": "x"}})  # contacts: no event
    queued = portal.take_outbox()
    assert [(d.event, d.handler_id, d.item_id) for d in queued] == [
        ("ONCRMDYNAMICITEMADD", add_handler.id, item["id"]),
        ("ONCRMDYNAMICITEMUPDATE", update_handler.id, item["id"]),
    ]
    assert f"ts={int(clock.now)}" in queued[0].body
    assert f"auth%5Bapplication_token%5D={portal.application_token}" in queued[0].body
    assert portal.take_outbox() == []


def test_lead_and_task_updates_queue_the_events_bitrix24_sends(portal: SandboxPortal) -> None:
    portal.register_handler("http://ingest.local/webhooks/bitrix24")
    lead = ok(portal, "crm.lead.add", {"fields": {"TITLE": "Service", "STATUS_ID": "NEW"}})
    task = ok(portal, "tasks.task.add", {"fields": {"TITLE": "Call", "RESPONSIBLE_ID": 1}})
    task_id = int(task["task"]["id"])
    assert portal.take_outbox() == []  # an add is not bound by default
    ok(portal, "crm.lead.update", {"id": lead, "fields": {"STATUS_ID": "NEW"}})  # no change
    ok(portal, "crm.lead.update", {"id": lead, "fields": {"STATUS_ID": "IN_PROCESS"}})
    ok(portal, "tasks.task.complete", {"taskId": task_id})
    lead_event, task_event = portal.take_outbox()
    assert (lead_event.event, lead_event.item_id) == ("ONCRMLEADUPDATE", lead)
    assert "data%5BFIELDS%5D%5BID%5D=" + str(lead) in lead_event.body
    assert (task_event.event, task_event.item_id) == ("ONTASKUPDATE", task_id)
    assert "data%5BFIELDS_AFTER%5D%5BID%5D=" + str(task_id) in task_event.body
    assert "data%5BFIELDS_BEFORE%5D%5BID%5D=" + str(task_id) in task_event.body
    assert "data%5BFIELDS%5D" not in task_event.body


# --- faults -------------------------------------------------------------------------------


def test_counted_faults_are_deterministic(portal: SandboxPortal, clock: FakeClock) -> None:
    portal.faults.configure(Faults(error_count=2, hang_count=1, hang_s=30, latency_s=0.5))
    assert portal.delay("user.get") == 30.5
    assert portal.delay("user.get") == 0.5
    statuses = [portal.call("user.get", {"ID": 1})[0] for _ in range(3)]
    assert statuses == [500, 500, 200]
    portal.faults.configure(Faults(outage_s=60, outage_status=503))
    assert portal.call("user.get", {})[1]["error"] == "SERVICE_UNAVAILABLE"
    clock.now += 60
    assert portal.call("user.get", {})[0] == 200


def test_rate_faults_repeat_with_the_same_seed(portal: SandboxPortal) -> None:
    def run() -> list[int]:
        portal.faults.configure(Faults(error_rate=0.3, seed=11, methods=["user.get"]))
        return [portal.call("user.get", {})[0] for _ in range(40)]

    first = run()
    assert 500 in first
    assert 200 in first
    assert run() == first
    assert portal.call("crm.contact.fields", {})[0] == 200


# --- crm.category.* -----------------------------------------------------------------------


def test_category_list_gives_the_smart_process_pipelines_as_bitrix24_does(
    portal: SandboxPortal,
) -> None:
    result = ok(portal, "crm.category.list", {"entityTypeId": NPS})
    assert result["categories"] == [
        {"id": 10, "name": "Cosmetics", "sort": 500, "entityTypeId": NPS, "isDefault": "Y"},
        {"id": 12, "name": "Laser A", "sort": 500, "entityTypeId": NPS, "isDefault": "N"},
        {"id": 14, "name": "Cryo B", "sort": 500, "entityTypeId": NPS, "isDefault": "N"},
    ]


def test_an_added_category_takes_new_items(portal: SandboxPortal) -> None:
    # Category ids are unique across the portal: the demo's NPS deal funnel is 20.
    params = {"entityTypeId": NPS, "fields": {"name": "Laser C", "sort": 100}}
    category = ok(portal, "crm.category.add", params)["category"]
    assert category == {
        "id": 21,
        "name": "Laser C",
        "sort": 100,
        "entityTypeId": NPS,
        "isDefault": "N",
    }
    listed = ok(portal, "crm.category.list", {"entityTypeId": NPS})["categories"]
    assert [c["id"] for c in listed] == [21, 10, 12, 14]
    item = add_item(portal, categoryId=21, UF_CRM_5_SCORE=3)
    assert (item["categoryId"], item["stageId"]) == (21, f"DT{NPS}_21:NEW")


@pytest.mark.parametrize(
    ("method", "params", "code"),
    [
        ("crm.category.list", {"entityTypeId": 4242}, "NOT_FOUND"),
        ("crm.category.add", {"entityTypeId": NPS, "fields": {"sort": 1}}, "INVALID_ARG_VALUE"),
        ("crm.category.add", {"entityTypeId": NPS}, "INVALID_ARG_VALUE"),
    ],
)
def test_category_methods_refuse_bad_parameters(
    portal: SandboxPortal, method: str, params: dict[str, Any], code: str
) -> None:
    status, body = portal.call(method, params)
    assert (status, body["error"]) == (400, code)
