"""Offline events read like the same events posted online, and when to pull next (pure)."""

from __future__ import annotations

from typing import Any

import pytest

from services.ingest.offline_events import (
    Batch,
    BatchError,
    OfflineRecord,
    Unreadable,
    as_form,
    next_wait,
    read_batch,
    read_record,
    record_form,
    refusal,
    round_of,
    unreadable_ids,
)
from services.ingest.webhook import Accepted, Ignored, Updated, read_event
from shared.dispatch_config import Dispatch, Followup
from shared.events import PortalRef
from shared.portal_config import load_portal_config
from tests.support.paths import EXAMPLE_CONFIG

CONFIG = load_portal_config(EXAMPLE_CONFIG)
PORTAL = PortalRef(member_id="m-1", domain="acme.bitrix24.com")
NPS_TYPE = CONFIG.survey.entity_type_id
STAMP = "2024-07-22T18:00:08+03:00"
UNIX = 1721660408


def record(
    event: str, data: Any, timestamp: str = STAMP, message_id: str = "a" * 32
) -> OfflineRecord:
    return OfflineRecord(id="7", message_id=message_id, event=event, data=data, timestamp=timestamp)


def test_a_batch_is_read_with_its_process_id_and_records() -> None:
    answer = {
        "process_id": "p-1",
        "events": [
            {
                "ID": "7",
                "TIMESTAMP_X": STAMP,
                "EVENT_NAME": "ONCRMDEALADD",
                "EVENT_DATA": {"FIELDS": {"ID": "5"}},
                "EVENT_ADDITIONAL": {"user_id": "1"},
                "MESSAGE_ID": "b" * 32,
            }
        ],
    }
    assert read_batch(answer) == Batch(
        "p-1", [OfflineRecord("7", "b" * 32, "ONCRMDEALADD", {"FIELDS": {"ID": "5"}}, STAMP)]
    )
    assert read_batch({"process_id": None, "events": []}) == Batch(None, [])
    assert read_batch({"events": {}}) == Batch(None, [])


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        ([], "got no object"),
        ({"events": "x"}, "events is not a list"),
        ({"events": ["x"]}, "an event is not an object"),
    ],
)
def test_a_batch_of_another_shape_is_refused(answer: object, message: str) -> None:
    with pytest.raises(BatchError, match=message):
        read_batch(answer)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ({"FIELDS": {"ID": 5}}, {"FIELDS": {"ID": "5"}}),
        ({"A": [1, None]}, {"A": {"0": "1", "1": ""}}),
        ({"B": True, "C": False}, {"B": "Y", "C": "N"}),
        ("x", "x"),
    ],
)
def test_json_values_become_what_a_form_carries(value: Any, expected: Any) -> None:
    assert as_form(value) == expected


def test_the_record_is_the_form_an_online_event_posts() -> None:
    form = record_form(record("ONCRMDEALADD", {"FIELDS": {"ID": 5}}), PORTAL)
    assert form == {
        "event": "ONCRMDEALADD",
        "data": {"FIELDS": {"ID": "5"}},
        "auth": {"member_id": "m-1", "domain": "acme.bitrix24.com"},
        "ts": str(UNIX),
    }
    assert record_form(record("X", {}), PortalRef(member_id="m-2"))["auth"] == {"member_id": "m-2"}


def test_an_item_event_is_accepted_as_the_same_event_online_with_the_same_duplicate_key() -> None:
    data = {"FIELDS": {"ID": "24", "ENTITY_TYPE_ID": str(NPS_TYPE)}}
    outcome = read_record(record("ONCRMDYNAMICITEMUPDATE", data), PORTAL, CONFIG)
    online = read_event(
        {
            "event": "ONCRMDYNAMICITEMUPDATE",
            "data": data,
            "ts": str(UNIX),
            "auth": {"member_id": "m-1", "domain": "acme.bitrix24.com", "application_token": "t"},
        },
        CONFIG,
    )
    assert isinstance(outcome, Accepted)
    assert isinstance(online, Accepted)
    assert (outcome.source, outcome.event, outcome.entity_type_id, outcome.item_id, outcome.ts) == (
        "event",
        "ONCRMDYNAMICITEMUPDATE",
        NPS_TYPE,
        24,
        UNIX,
    )
    assert outcome.portal == online.portal == PORTAL
    mine = outcome.to_event()
    theirs = online.to_event()
    assert mine.model_dump(exclude={"event_id", "occurred_at"}) == theirs.model_dump(
        exclude={"event_id", "occurred_at"}
    )
    assert outcome.payload["offline"] == {"id": "7", "message_id": "a" * 32}
    assert {k: v for k, v in outcome.payload.items() if k != "offline"} == online.payload


def test_deal_events_lead_updates_and_foreign_events() -> None:
    deal = read_record(record("ONCRMDEALUPDATE", {"FIELDS": {"ID": 9}}), PORTAL, CONFIG)
    assert isinstance(deal, Accepted)
    assert (deal.entity_type_id, deal.item_id) == (2, 9)
    followed = CONFIG.model_copy(update={"dispatch": Dispatch(followup=Followup(enabled=True))})
    lead = read_record(record("ONCRMLEADUPDATE", {"FIELDS": {"ID": "3"}}), PORTAL, followed)
    assert isinstance(lead, Updated)
    assert (lead.entity_type, lead.entity_id, lead.ts) == ("lead", 3, UNIX)
    other = read_record(
        record("ONCRMDYNAMICITEMADD", {"FIELDS": {"ID": "1", "ENTITY_TYPE_ID": "999"}}),
        PORTAL,
        CONFIG,
    )
    assert isinstance(other, Ignored)


@pytest.mark.parametrize(
    ("event", "data", "timestamp", "reason"),
    [
        ("ONCRMDEALADD", {"FIELDS": {}}, STAMP, "data[FIELDS][ID]: data[FIELDS][ID] missing"),
        ("ONCRMDEALADD", {"FIELDS": {"ID": "0"}}, STAMP, "must be positive"),
        ("ONCRMDEALADD", None, STAMP, "data[FIELDS][ID]"),
        ("", {}, STAMP, "event: event name missing"),
        ("ONCRMDEALADD", {"FIELDS": {"ID": "5"}}, "yesterday", "TIMESTAMP_X is not a date"),
        ("ONCRMDEALADD", {"FIELDS": {"ID": "5"}}, "2024-07-22T18:00:08", "TIMESTAMP_X"),
    ],
)
def test_what_cannot_be_read_is_unreadable_with_the_reason(
    event: str, data: Any, timestamp: str, reason: str
) -> None:
    outcome = read_record(record(event, data, timestamp), PORTAL, CONFIG)
    assert isinstance(outcome, Unreadable)
    assert outcome.message_id == "a" * 32
    assert reason in outcome.reason


def test_the_unreadable_are_reported_by_message_id_once() -> None:
    assert unreadable_ids(
        [Unreadable("b" * 32, "x"), Unreadable("a" * 32, "y"), Unreadable("b" * 32, "z")]
    ) == ["a" * 32, "b" * 32]
    assert unreadable_ids([Unreadable("", "no message id")]) == []


@pytest.mark.parametrize(
    ("events", "expected"), [(0, "empty"), (1, "some"), (49, "some"), (50, "full"), (51, "full")]
)
def test_a_round_by_its_size(events: int, expected: str) -> None:
    assert round_of(events) == expected


@pytest.mark.parametrize(
    ("outcome", "previous", "expected"),
    [
        ("full", 40.0, 0.0),
        ("some", 40.0, 5.0),
        ("empty", 0.0, 5.0),
        ("empty", 5.0, 10.0),
        ("empty", 40.0, 60.0),
        ("empty", 60.0, 60.0),
        ("failed", 0.0, 5.0),
        ("failed", 20.0, 40.0),
    ],
)
def test_the_wait_backs_off_while_empty_and_drains_a_full_queue_at_once(
    outcome: Any, previous: float, expected: float
) -> None:
    assert next_wait(outcome, previous, base_s=5.0, max_s=60.0) == expected


@pytest.mark.parametrize(
    ("code", "kind"),
    [
        ("WRONG_AUTH_TYPE", "webhook"),
        ("wrong_license", "license"),
        ("ACCESS_DENIED", "rights"),
        ("ERROR_ARGUMENT", "other"),
    ],
)
def test_why_a_portal_refuses(code: str, kind: str) -> None:
    assert refusal(code) == kind
