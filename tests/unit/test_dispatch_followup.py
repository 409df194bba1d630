"""The follow-up's pure decisions: what a lead's or task's status means, when a change happened,
when an entity is read next, the SLA's deadline in working hours, whether the one escalation is
due and to whom, the reads in batches, the command ids of escalations, and the configuration."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import yaml
from pydantic import ValidationError

from services.dispatch.followup import (
    ESCALATION,
    Followed,
    LeadStatuses,
    Seen,
    add_working_hours,
    command_action,
    command_request,
    escalation_command_id,
    escalation_due,
    escalation_target,
    escalation_text,
    follow_id,
    lead_seen,
    lead_statuses,
    next_read,
    observe,
    overdue,
    read_ids,
    rows_by_id,
    satisfied,
    sla_due,
    state_reads,
    task_seen,
)
from shared.dispatch_config import Digest, Dispatch, Followup, Sla, WorkingHours
from shared.portal_config import ConfigError, parse_portal_config
from tests.support.paths import EXAMPLE_CONFIG

UTC_TZ = ZoneInfo("UTC")
MOSCOW = ZoneInfo("Europe/Moscow")
MON_10 = datetime(2026, 12, 7, 10, 0, tzinfo=UTC)  # a Monday
HOUR = timedelta(hours=1)

# What Bitrix24 answers to crm.status.list with ENTITY_ID STATUS (semantics in SEMANTICS and in
# EXTRA), in a portal whose statuses were renamed and extended.
PORTAL_STATUSES = [
    {"ENTITY_ID": "STATUS", "STATUS_ID": "JUNK", "SORT": "60", "SEMANTICS": "F"},
    {"ENTITY_ID": "STATUS", "STATUS_ID": "NEW", "SORT": "10", "SEMANTICS": None},
    {"ENTITY_ID": "STATUS", "STATUS_ID": "CALL_BACK", "SORT": "25", "SEMANTICS": None},
    {"ENTITY_ID": "STATUS", "STATUS_ID": "IN_PROCESS", "SORT": "20"},
    {"ENTITY_ID": "STATUS", "STATUS_ID": "CONVERTED", "SORT": "50", "SEMANTICS": "S"},
    {
        "ENTITY_ID": "STATUS",
        "STATUS_ID": "LOST_TO_RIVAL",
        "SORT": "70",
        "EXTRA": {"SEMANTICS": "failure"},
    },
    {"ENTITY_ID": "DEAL_STAGE", "STATUS_ID": "WON", "SORT": "5", "SEMANTICS": "S"},
]


def statuses() -> LeadStatuses:
    return lead_statuses(PORTAL_STATUSES)


def test_lead_statuses_come_from_the_portal_by_semantics_and_sort() -> None:
    read = statuses()
    assert read.initial == "NEW"
    assert dict(read.closed) == {
        "CONVERTED": "success",
        "JUNK": "failure",
        "LOST_TO_RIVAL": "failure",
    }
    assert lead_statuses("not a list") == LeadStatuses(initial=None, closed={})


@pytest.mark.parametrize(
    ("status", "state", "outcome"),
    [
        ("NEW", "open", None),
        ("", "open", None),
        ("IN_PROCESS", "in_work", None),
        ("CALL_BACK", "in_work", None),
        ("SOMETHING_NEW", "in_work", None),
        ("CONVERTED", "closed", "success"),
        ("JUNK", "closed", "failure"),
        ("LOST_TO_RIVAL", "closed", "failure"),
    ],
)
def test_a_lead_status_means_open_in_work_or_closed(
    status: str, state: str, outcome: str | None
) -> None:
    row = {
        "ID": "7",
        "STATUS_ID": status,
        "ASSIGNED_BY_ID": "17",
        "DATE_MODIFY": "2026-12-07T14:30:00+03:00",
    }
    seen = lead_seen(row, statuses())
    assert (seen.state, seen.outcome, seen.status) == (state, outcome, status)
    assert seen.responsible_id == 17
    assert seen.changed_at == datetime(2026, 12, 7, 11, 30, tzinfo=UTC)


@pytest.mark.parametrize(
    ("status", "state", "outcome"),
    [
        (1, "open", None),
        (2, "open", None),
        (3, "in_work", None),
        (6, "in_work", None),
        (4, "closed", "success"),
        (5, "closed", "success"),
        (7, "closed", "failure"),
        (None, "open", None),
    ],
)
def test_a_task_status_means_open_in_work_or_closed(
    status: int | None, state: str, outcome: str | None
) -> None:
    row = {
        "id": "9",
        "status": None if status is None else str(status),
        "responsibleId": "5",
        "changedDate": "2026-12-07T13:00:00+03:00",
        "closedDate": "2026-12-07T12:00:00+03:00" if outcome == "success" else None,
    }
    seen = task_seen(row)
    assert (seen.state, seen.outcome, seen.responsible_id) == (state, outcome, 5)
    expected = 9 if outcome == "success" else 10
    assert seen.changed_at == datetime(2026, 12, 7, expected, tzinfo=UTC)


def followed(**overrides: Any) -> Followed:
    values: dict[str, Any] = {
        "action": "service",
        "entity_type": "lead",
        "state": "open",
        "created_at": MON_10,
        "responsible_id": 17,
        "status": "NEW",
    }
    return Followed(**{**values, **overrides})


def seen(state: str, at: datetime | None, outcome: str | None = None) -> Seen:
    return Seen(
        state=state,  # type: ignore[arg-type]
        outcome=outcome,  # type: ignore[arg-type]
        status="X",
        responsible_id=None,
        changed_at=at,
    )


@pytest.mark.parametrize(
    ("before", "read", "first", "closed"),
    [
        # untouched: nothing recorded
        (followed(), seen("open", None), None, None),
        # taken in work between two reads: the portal's time
        (
            followed(last_read_at=MON_10 + HOUR),
            seen("in_work", MON_10 + 2 * HOUR),
            MON_10 + 2 * HOUR,
            None,
        ),
        # the portal's time before the last read (an old edit time): the read's time
        (
            followed(last_read_at=MON_10 + HOUR),
            seen("in_work", MON_10 + HOUR / 2),
            MON_10 + 3 * HOUR,
            None,
        ),
        # the portal's time in the future (clock skew): the read's time
        (followed(), seen("in_work", MON_10 + 9 * HOUR), MON_10 + 3 * HOUR, None),
        # closed straight from open: first change = close
        (
            followed(),
            seen("closed", MON_10 + 2 * HOUR, "success"),
            MON_10 + 2 * HOUR,
            MON_10 + 2 * HOUR,
        ),
        # closed after it was in work: the first change stays
        (
            followed(state="in_work", first_change_at=MON_10 + HOUR, last_read_at=MON_10 + HOUR),
            seen("closed", MON_10 + 2 * HOUR, "success"),
            MON_10 + HOUR,
            MON_10 + 2 * HOUR,
        ),
        # gone: deleted, closed at the read
        (followed(), None, MON_10 + 3 * HOUR, MON_10 + 3 * HOUR),
    ],
)
def test_a_read_records_the_first_change_and_the_close_once(
    before: Followed, read: Seen | None, first: datetime | None, closed: datetime | None
) -> None:
    change = observe(before, read, MON_10 + 3 * HOUR)
    assert (change.first_change_at, change.closed_at) == (first, closed)
    if read is None:
        assert (change.state, change.outcome) == ("closed", "deleted")
    assert change.responsible_id == 17  # kept when the read does not name one


FOLLOWUP = Followup(read_every_minutes=15, read_max_minutes=240, stop_after_days=30)


@pytest.mark.parametrize(
    ("age", "state", "due", "expected"),
    [
        (timedelta(minutes=15), "open", None, timedelta(minutes=15)),  # young: the minimum
        (timedelta(hours=6), "open", None, timedelta(hours=1)),  # a sixth of its age
        (timedelta(days=3), "in_work", None, timedelta(hours=4)),  # old: the maximum
        (timedelta(hours=6), "open", timedelta(minutes=20), timedelta(minutes=20)),  # deadline
        (timedelta(hours=6), "in_work", timedelta(minutes=20), timedelta(hours=1)),  # acted
        (timedelta(hours=6), "closed", None, None),  # closed: no more reads
        (timedelta(days=30), "open", None, None),  # followed long enough
    ],
)
def test_reads_grow_rarer_with_age_and_meet_the_deadline(
    age: timedelta, state: str, due: timedelta | None, expected: timedelta | None
) -> None:
    now = MON_10 + age
    entity = followed(due_at=None if due is None else now + due, sla_until="acted")
    later = next_read(entity, state, now, FOLLOWUP)  # type: ignore[arg-type]
    assert later == (None if expected is None else now + expected)


OFFICE = WorkingHours()  # 09:00-18:00, Monday to Friday


@pytest.mark.parametrize(
    ("start", "hours", "tz", "expected"),
    [
        # inside one day
        (datetime(2026, 12, 7, 10, 0, tzinfo=UTC), 4, UTC_TZ, datetime(2026, 12, 7, 14, 0)),
        # crosses the evening: 1 h on Monday, 3 h on Tuesday
        (datetime(2026, 12, 7, 17, 0, tzinfo=UTC), 4, UTC_TZ, datetime(2026, 12, 8, 12, 0)),
        # Friday evening: on to Monday
        (datetime(2026, 12, 11, 16, 0, tzinfo=UTC), 4, UTC_TZ, datetime(2026, 12, 14, 11, 0)),
        # created at night or on Saturday: counted from the next opening
        (datetime(2026, 12, 8, 2, 0, tzinfo=UTC), 1, UTC_TZ, datetime(2026, 12, 8, 10, 0)),
        (datetime(2026, 12, 12, 12, 0, tzinfo=UTC), 4, UTC_TZ, datetime(2026, 12, 14, 13, 0)),
        # more than a working day
        (datetime(2026, 12, 7, 9, 0, tzinfo=UTC), 20, UTC_TZ, datetime(2026, 12, 9, 11, 0)),
        # the portal's time zone: 16:00 UTC is 19:00 in Moscow, after hours
        (datetime(2026, 12, 7, 16, 0, tzinfo=UTC), 4, MOSCOW, datetime(2026, 12, 8, 13, 0)),
    ],
)
def test_working_hours_count_only_inside_the_week_s_opening_hours(
    start: datetime, hours: float, tz: ZoneInfo, expected: datetime
) -> None:
    due = add_working_hours(start, hours, OFFICE, tz)
    assert due == expected.replace(tzinfo=tz).astimezone(UTC)


def test_an_sla_without_working_hours_counts_the_clock() -> None:
    friday_evening = datetime(2026, 12, 11, 17, 0, tzinfo=UTC)
    assert sla_due(friday_evening, Sla(sla_hours=4), OFFICE, UTC_TZ) == friday_evening + 4 * HOUR
    assert sla_due(
        friday_evening, Sla(sla_hours=4, working_hours=True), OFFICE, UTC_TZ
    ) == datetime(2026, 12, 14, 12, 0, tzinfo=UTC)


DUE = MON_10 + 4 * HOUR


@pytest.mark.parametrize(
    ("entity", "now", "expected"),
    [
        (followed(due_at=DUE, sla_until="acted", last_read_at=DUE), DUE, True),
        # not yet due
        (followed(due_at=DUE, sla_until="acted", last_read_at=DUE), DUE - HOUR, False),
        # not read since the deadline: the entity may have been handled meanwhile
        (followed(due_at=DUE, sla_until="acted", last_read_at=DUE - HOUR), DUE + HOUR, False),
        # in work meets an "acted" SLA, not a "closed" one
        (
            followed(state="in_work", due_at=DUE, sla_until="acted", last_read_at=DUE),
            DUE,
            False,
        ),
        (
            followed(state="in_work", due_at=DUE, sla_until="closed", last_read_at=DUE),
            DUE,
            True,
        ),
        # escalated once: never again
        (
            followed(due_at=DUE, sla_until="acted", last_read_at=DUE, escalation="queued"),
            DUE + HOUR,
            False,
        ),
        # closed, or no SLA
        (
            followed(state="closed", closed_at=DUE, due_at=DUE, last_read_at=DUE),
            DUE,
            False,
        ),
        (followed(last_read_at=DUE), DUE, False),
        # an escalation task past its deadline: overdue, never escalated itself
        (
            followed(
                action=ESCALATION,
                entity_type="task",
                due_at=DUE,
                sla_until="closed",
                last_read_at=DUE,
            ),
            DUE + HOUR,
            False,
        ),
    ],
)
def test_the_one_escalation_is_due_when_overdue_and_read_since_the_deadline(
    entity: Followed, now: datetime, expected: bool
) -> None:
    assert escalation_due(entity, now) is expected


def test_an_escalated_entity_stays_overdue_until_it_meets_its_sla() -> None:
    escalated = followed(due_at=DUE, sla_until="acted", last_read_at=DUE, escalation="created")
    assert overdue(escalated, DUE + HOUR)
    assert not overdue(followed(state="in_work", due_at=DUE, sla_until="acted"), DUE + HOUR)
    assert satisfied("in_work", None)
    assert not satisfied("in_work", "closed")


@pytest.mark.parametrize(
    ("followup", "expected"),
    [
        (Followup(service=Sla(sla_hours=4, escalate_to=9), escalate_to=8), 9),
        (Followup(service=Sla(sla_hours=4), escalate_to=8), 8),
        (Followup(service=Sla(sla_hours=4)), 17),
    ],
)
def test_the_escalation_goes_to_the_action_s_person_else_the_section_s_else_the_head_of_service(
    followup: Followup, expected: int
) -> None:
    assert escalation_target("service", followup, head_of_service=17) == expected
    assert escalation_target("task", Followup(), head_of_service=None) is None


@pytest.mark.parametrize(
    ("sla", "title"),
    [
        (
            {"sla_hours": 4.0, "sla_working_hours": True, "sla_until": "acted"},
            "Overdue: service lead #42 not taken in work within 4 working h",
        ),
        (
            {"sla_hours": 24.0, "sla_working_hours": False, "sla_until": "closed"},
            "Overdue: service lead #42 not closed within 24 h",
        ),
        # a row followed before the flag was kept: the hours alone
        (
            {"sla_hours": 4.0, "sla_working_hours": None, "sla_until": "acted"},
            "Overdue: service lead #42 not taken in work within 4 h",
        ),
    ],
)
def test_the_escalation_task_names_the_entity_and_the_sla_it_began_with(
    sla: dict[str, Any], title: str
) -> None:
    entity = followed(due_at=DUE, last_read_at=DUE, **sla)
    shown, description = escalation_text(entity, 42, UTC_TZ)
    assert shown == title
    assert "2026-12-07 14:00" in description
    assert "user #17" in description


def test_an_escalation_task_is_followed_to_its_deadline_never_escalated() -> None:
    sla = Followup(escalation_deadline_hours=6).sla(ESCALATION)
    assert sla == Sla(sla_hours=6, working_hours=False, until="closed", escalate=False)


def test_escalation_command_ids_have_the_shape_of_dispatch_s_and_an_action_of_their_own() -> None:
    follow = follow_id("answer-1:service")
    assert follow == follow_id("answer-1:service")  # one per action
    command = escalation_command_id(follow)
    request_text, action, n_text = command.rsplit(":", 2)  # as dispatch's on_written parses it
    assert (uuid.UUID(request_text), action, int(n_text)) == (follow, ESCALATION, 0)
    assert command_action(command) == ESCALATION
    assert command_request(command) == follow
    request = uuid.uuid4()
    assert command_action(f"{request}:call_task:0") == "call_task"
    assert command_action("portal:77:EQ-LASER-A:task") is None
    assert command_request("not-a-command") is None


def test_states_are_read_fifty_ids_per_list_call() -> None:
    reads = state_reads([*list(range(1, 121)), 5], [7, 8])
    assert [(r.name, r.method, len(read_ids(r))) for r in reads] == [
        ("leads0", "crm.lead.list", 50),
        ("leads1", "crm.lead.list", 50),
        ("leads2", "crm.lead.list", 20),
        ("tasks0", "tasks.task.list", 2),
    ]
    assert reads[0].params["filter"] == {"@ID": list(range(1, 51))}
    assert reads[0].params["start"] == -1
    assert reads[3].params["filter"] == {"ID": [7, 8]}
    assert rows_by_id(reads[3], {"tasks": [{"id": "7", "status": "2"}]}) == {
        7: {"id": "7", "status": "2"}
    }
    assert rows_by_id(reads[0], [{"ID": "3"}, "junk"]) == {3: {"ID": "3"}}


def portal_yaml(dispatch: dict[str, Any]) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(EXAMPLE_CONFIG.read_text())
    data["dispatch"] = {**data["dispatch"], **dispatch}
    return data


def test_the_followup_and_digest_sections_parse_from_the_portal_yaml() -> None:
    config = parse_portal_config(
        portal_yaml(
            {
                "followup": {
                    "service": {"sla_hours": 4, "working_hours": True},
                    "task": {"sla_hours": 24, "until": "closed", "escalate_to": 5},
                    "working_hours": {"start": "08:00", "end": "17:00"},
                },
                "digest": {"to": ["Head <head@example.com>"], "weekday": "fri", "time": "16:30"},
            }
        )
    )
    dispatch = config.dispatch
    assert dispatch is not None
    service = dispatch.followup.sla("service")
    assert service is not None
    assert service.working_hours
    assert service.until == "acted"
    assert dispatch.followup.sla("marketing") is None
    assert dispatch.digest is not None
    assert dispatch.digest.weekday == "fri"
    assert Dispatch().followup.enabled
    assert Dispatch().digest is None


@pytest.mark.parametrize(
    ("dispatch", "message"),
    [
        ({"followup": {"service": {"sla_hours": 0}}}, "sla_hours"),
        ({"followup": {"service": {"sla_hours": 4, "until": "soon"}}}, "until"),
        ({"followup": {"read_every_minutes": 60, "read_max_minutes": 30}}, "read_max_minutes"),
        (
            {"followup": {"working_hours": {"start": "18:00", "end": "09:00"}}},
            "working_hours: end 09:00 must be after start 18:00",
        ),
        ({"followup": {"servise": {"sla_hours": 4}}}, "servise"),
        ({"digest": {"to": []}}, "digest.to"),
        ({"digest": {"to": ["head at example"]}}, "is not an e-mail address"),
        ({"digest": {"to": ["a@example.com"], "weekday": "monday"}}, "weekday"),
    ],
)
def test_a_bad_followup_or_digest_setting_is_named(dispatch: dict[str, Any], message: str) -> None:
    with pytest.raises((ConfigError, ValidationError)) as raised:
        parse_portal_config(portal_yaml(dispatch))
    assert message in str(raised.value)


def test_a_digest_needs_a_sender() -> None:
    data = portal_yaml({"digest": {"to": ["a@example.com"]}})
    del data["dispatch"]["email"]
    data["dispatch"]["channel"] = "portal"
    data["dispatch"]["portal_channel"] = {"link_field": "UF_CRM_NPS_LINK", "trigger": "T"}
    data["dispatch"]["reminders"] = {"after_days": []}
    with pytest.raises(ConfigError) as raised:
        parse_portal_config(data)
    assert "dispatch.digest.sender" in str(raised.value)
    assert Digest(to=("a@example.com",), sender="x@example.com").sender == "x@example.com"
