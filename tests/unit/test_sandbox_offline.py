"""The offline event queue: one record per message until reserved, batches by process id,
clearing, error marks, listing and the arguments Bitrix24 refuses."""

import hashlib
import itertools
from typing import Any

import pytest

from services.sandbox.offline import (
    LIST_FIELDS,
    OfflineError,
    OfflineQueue,
    message_id,
    parse_filter,
    parse_order,
)

T0 = 1_700_000_000.0
ORDER = [("TIMESTAMP_X", False)]


def deal(item_id: int) -> dict[str, Any]:
    return {"FIELDS": {"ID": str(item_id)}}


def queue_of(*items: int, connector: str = "") -> OfflineQueue:
    queue = OfflineQueue()
    _process_ids[id(queue)] = itertools.count(1)
    for offset, item in enumerate(items):
        queue.push("ONCRMDEALUPDATE", deal(item), user_id=1, connector=connector, now=T0 + offset)
    return queue


_process_ids: dict[int, "itertools.count[int]"] = {}


def get(queue: OfflineQueue, **options: Any) -> tuple[str | None, list[int]]:
    """``event.offline.get`` on ``queue``; new process ids are p1, p2, … per queue."""
    counter = _process_ids.setdefault(id(queue), itertools.count(1))
    arguments: dict[str, Any] = {
        "conditions": [],
        "order": ORDER,
        "limit": 50,
        "clear": True,
        "process_id": None,
        "connector": "",
        "error": False,
        "new_process_id": lambda: f"p{next(counter)}",
    }
    arguments.update(options)
    shown, records = queue.get(**arguments)
    return shown, [int(record.event_data["FIELDS"]["ID"]) for record in records]


def test_the_message_id_is_md5_of_name_and_json_data() -> None:
    expected = hashlib.md5(b'ONCRMDEALADD|{"FIELDS":{"ID":"7"}}').hexdigest()
    assert message_id("ONCRMDEALADD", deal(7)) == expected
    assert len(expected) == 32


def test_a_repeat_updates_the_unreserved_record_and_adds_one_when_reserved() -> None:
    queue = queue_of(7, 8)
    queue.push("ONCRMDEALUPDATE", deal(7), user_id=5, connector="", now=T0 + 10)
    assert [(r.id, r.timestamp, r.event_additional) for r in queue.records] == [
        (1, T0 + 10, {"user_id": "5"}),
        (2, T0 + 1, {"user_id": "1"}),
    ]
    shown, reserved = get(queue, clear=False, limit=1, order=[("ID", False)])
    assert (shown, reserved) == ("p1", [7])
    queue.push("ONCRMDEALUPDATE", deal(7), user_id=1, connector="", now=T0 + 20)
    assert [(r.id, r.process_id) for r in queue.records] == [(1, "p1"), (2, ""), (3, "")]


def test_a_source_key_keeps_its_own_records() -> None:
    queue = queue_of(7)
    queue.push("ONCRMDEALUPDATE", deal(7), user_id=1, connector="ours", now=T0 + 5)
    assert len(queue.records) == 2
    assert get(queue, connector="ours") == (None, [7])
    assert [r.connector for r in queue.records] == [""]


@pytest.mark.parametrize(
    ("options", "shown", "taken", "left"),
    [
        ({}, None, [1, 2, 3], []),
        ({"limit": 2}, None, [1, 2], [3]),
        ({"clear": False}, "p1", [1, 2, 3], [1, 2, 3]),
        ({"clear": False, "limit": 1}, "p1", [1], [1, 2, 3]),
        ({"conditions": [(">", "ID", 1)]}, None, [2, 3], [1]),
        ({"order": [("ID", True)], "limit": 1}, None, [3], [1, 2]),
        ({"conditions": [("=", "EVENT_NAME", "ONCRMDEALADD")]}, None, [], [1, 2, 3]),
    ],
)
def test_get_reserves_or_takes_the_first_records(
    options: dict[str, Any], shown: str | None, taken: list[int], left: list[int]
) -> None:
    queue = queue_of(1, 2, 3)
    assert get(queue, **options) == (shown, taken)
    assert [int(r.event_data["FIELDS"]["ID"]) for r in queue.records] == left


def test_parallel_gets_receive_disjoint_batches_and_a_batch_can_be_read_again() -> None:
    queue = queue_of(1, 2, 3, 4, 5)
    first = get(queue, clear=False, limit=2)
    second = get(queue, clear=False, limit=2)
    assert (first, second) == (("p1", [1, 2]), ("p2", [3, 4]))
    assert get(queue, clear=False, process_id="p1") == ("p1", [1, 2])
    assert get(queue, clear=False, process_id="unknown") == ("unknown", [])


def test_clear_with_a_process_id_deletes_the_whole_batch_beyond_the_limit() -> None:
    queue = queue_of(1, 2, 3, 4)
    get(queue, clear=False, limit=3)
    assert get(queue, process_id="p1", limit=1) == ("p1", [1])
    assert [int(r.event_data["FIELDS"]["ID"]) for r in queue.records] == [4]


@pytest.mark.parametrize(
    ("ids", "message_ids", "left"),
    [
        (None, None, [4]),
        ([2], None, [1, 3, 4]),
        (None, [message_id("ONCRMDEALUPDATE", deal(3))], [1, 2, 4]),
        ([1], [message_id("ONCRMDEALUPDATE", deal(3))], [2, 3, 4]),
        ([4], None, [1, 2, 3, 4]),
    ],
)
def test_clearing_a_batch(
    ids: list[int] | None, message_ids: list[str] | None, left: list[int]
) -> None:
    queue = queue_of(1, 2, 3, 4)
    get(queue, clear=False, limit=3)
    queue.clear("p1", "", ids=ids, message_ids=message_ids)
    assert [r.id for r in queue.records] == left


def test_an_error_mark_releases_the_record_for_error_reads_and_drops_other_copies() -> None:
    queue = queue_of(1, 2)
    get(queue, clear=False)
    queue.push("ONCRMDEALUPDATE", deal(1), user_id=1, connector="", now=T0 + 9)  # a repeat
    queue.mark_error("p1", "", [message_id("ONCRMDEALUPDATE", deal(1))])
    assert [(r.id, r.process_id, r.error) for r in queue.records] == [(1, "", 1), (2, "p1", 0)]
    assert get(queue, clear=False) == ("p2", [])
    assert get(queue, clear=False, error=True) == ("p3", [1])


def test_listing_shows_everything_with_process_and_error_in_pages() -> None:
    queue = queue_of(*range(1, 61))
    get(queue, clear=False, limit=2)
    page, total, following = queue.listing(
        conditions=[], order=[("ID", False)], connector="", start=0
    )
    assert (len(page), total, following) == (50, 60, 50)
    assert page[0].render(full=True)["PROCESS_ID"] == "p1"
    assert page[0].render(full=True)["ERROR"] == "0"
    page, total, following = queue.listing(
        conditions=[], order=[("ID", False)], connector="", start=50
    )
    assert (len(page), following) == (10, None)
    assert len(queue.records) == 60


def test_a_record_renders_as_bitrix24_returns_it() -> None:
    record = queue_of(7).records[0]
    assert record.render() == {
        "ID": "1",
        "TIMESTAMP_X": "2023-11-15T01:13:20+03:00",
        "EVENT_NAME": "ONCRMDEALUPDATE",
        "EVENT_DATA": {"FIELDS": {"ID": "7"}},
        "EVENT_ADDITIONAL": {"user_id": "1"},
        "MESSAGE_ID": message_id("ONCRMDEALUPDATE", deal(7)),
    }


def test_reserved_records_expire_after_the_lifetime() -> None:
    queue = queue_of(1, 2)
    get(queue, clear=False, limit=1)
    assert queue.expire(T0 + 2_952_000) == 0
    assert queue.expire(T0 + 2_952_001) == 1
    assert [r.id for r in queue.records] == [2]


@pytest.mark.parametrize(
    ("raw", "conditions"),
    [
        (None, []),
        ({">=ID": "5"}, [(">=", "ID", 5)]),
        (
            {"EVENT_NAME": "X", "=message_id": "m"},
            [("=", "EVENT_NAME", "X"), ("=", "MESSAGE_ID", "m")],
        ),
        ({"<TIMESTAMP_X": "2023-11-15T01:13:20+03:00"}, [("<", "TIMESTAMP_X", T0)]),
    ],
)
def test_filters_read_an_operation_before_the_field(raw: Any, conditions: list[Any]) -> None:
    assert parse_filter(raw) == conditions


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("ID", "The filter is not an array."),
        ({"!ID": 1}, "Filter operation not allowed: !"),
        ({"%EVENT_NAME": "X"}, "Filter operation not allowed: %"),
        ({"PROCESS_ID": "p"}, "Filter field not allowed: PROCESS_ID"),
        ({"ID": [1, 2]}, "The value of an argument 'ID' has an invalid type"),
        ({"ID": "one"}, "ID: expected an integer, got 'one'"),
    ],
)
def test_filters_bitrix24_refuses(raw: Any, message: str) -> None:
    with pytest.raises(OfflineError) as refused:
        parse_filter(raw)
    assert refused.value.message == message


def test_the_list_filters_by_process_and_error_too() -> None:
    assert parse_filter({"PROCESS_ID": "p", "ERROR": "1"}, LIST_FIELDS) == [
        ("=", "PROCESS_ID", "p"),
        ("=", "ERROR", 1),
    ]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (None, [("TIMESTAMP_X", False)]),
        ({"id": "desc"}, [("ID", True)]),
        ({"ID": "ASC", "EVENT_NAME": "DESC"}, [("ID", False), ("EVENT_NAME", True)]),
    ],
)
def test_order(raw: Any, expected: list[tuple[str, bool]]) -> None:
    assert parse_order(raw) == expected


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("ID", "The order is not an array."),
        ({"ERROR": "ASC"}, "Order field not allowed: ERROR"),
        ({"ID": "UP"}, "Order direction should be one of {ASC|DESC}"),
    ],
)
def test_orders_bitrix24_refuses(raw: Any, message: str) -> None:
    with pytest.raises(OfflineError) as refused:
        parse_order(raw)
    assert refused.value.message == message


def test_a_limit_must_be_positive() -> None:
    with pytest.raises(OfflineError) as refused:
        get(queue_of(1), limit=0)
    assert (refused.value.message, refused.value.argument) == (
        "Value must be positive integer",
        "LIMIT",
    )
