"""The "Follow-up" page's view models as tables (services/reports/followup.py, pure): durations,
the loop closed % and its bar, the rows per action (with their SLA and the escalation tasks) and
per manager, the change against the previous period, the overdue lines with their links and
escalations, CSV cells; the `action` filter and the follow-up selection of the filters; and the
page, the overview's tile and the empty states rendered from them."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from services.reports import pages
from services.reports.filters import FilterError, Filters, parse_filters
from services.reports.followup import (
    FOLLOWUP_CSV_HEADER,
    Escalations,
    FollowupTile,
    FollowupView,
    Loop,
    LoopBar,
    by_action,
    by_manager,
    entity_url,
    escalation,
    fmt_hours,
    fmt_hours_change,
    followup_csv_row,
    has_sla,
    loop_change,
    overdue_lines,
    row_sla_text,
    sla_text,
    state_text,
)
from services.reports.views import DASH, NO_COUNTS, FilterOptions, distribution, trend_chart
from shared.dispatch_config import Followup
from tests.support.dashboard import figures

ORIGIN = "https://acme.bitrix24.ru"
MSK = ZoneInfo("Europe/Moscow")
CREATED = datetime(2026, 12, 7, 10, 0, tzinfo=UTC)
FOLLOW = uuid.UUID("00000000-0000-0000-0000-0000000000f1")
FOLLOWUP = Followup.model_validate(
    {
        "service": {"sla_hours": 4, "working_hours": True},
        "task": {"sla_hours": 24, "until": "closed"},
    }
)
OPTIONS = FilterOptions(portals=("p",), segments=(), catalogue={}, managers=(31,))
TODAY = date(2026, 12, 7)


def loop_row(key: Any = "service", *counts: int, **overrides: Any) -> dict[str, Any]:
    """A `loop_closed` row: followed, open, in work, closed, overdue, escalated."""
    followed, open_, in_work, closed, overdue, escalated = counts or (4, 1, 1, 2, 1, 1)
    return {
        "key": key,
        "followed": followed,
        "open": open_,
        "in_work": in_work,
        "closed": closed,
        "closed_pct": None,  # not read: the view counts it from closed and followed
        "median_hours_to_change": 0.5,
        "median_hours_to_close": 3.0,
        "overdue": overdue,
        "escalated": escalated,
        **overrides,
    }


def total_row(
    *counts: int, escalations: tuple[int, int, int, int, int] = (0, 0, 0, 0, 0)
) -> dict[str, Any]:
    """A `loop_closed_total` row with the escalations queued, created, failed, skipped, and
    created before they were followed."""
    queued, created, failed, skipped, unfollowed = escalations
    row = loop_row(None, *counts)
    del row["key"]
    return {
        **row,
        "escalation_queued": queued,
        "escalation_created": created,
        "escalation_failed": failed,
        "escalation_skipped": skipped,
        "escalation_unfollowed": unfollowed,
    }


def record(**overrides: Any) -> dict[str, Any]:
    """An `overdue` row: a service lead untouched 2.5 h past its deadline, not escalated yet."""
    return {
        "follow_id": FOLLOW,
        "portal": "m1",
        "action": "service",
        "entity_type": "lead",
        "entity_id": 4242,
        "responsible_id": 17,
        "manager_id": 31,
        "contact_id": 42,
        "deal_id": None,
        "state": "open",
        "outcome": None,
        "status": "NEW",
        "created_at": CREATED,
        "first_change_at": None,
        "closed_at": None,
        "last_read_at": CREATED + timedelta(hours=6),
        "stopped_at": None,
        "due_at": CREATED + timedelta(hours=4),
        "sla_hours": 4.0,
        "sla_working_hours": True,
        "sla_until": "acted",
        "escalation": None,
        "escalated_at": None,
        "escalated_to": None,
        "escalation_task_id": None,
        "escalation_reason": None,
        "hours_overdue": 2.5,
        **overrides,
    }


@pytest.mark.parametrize(
    ("hours", "shown"),
    [
        (None, DASH),
        (0.0, "0 min"),
        (0.5, "30 min"),
        (0.99, "59 min"),
        (0.999, "1.0 h"),  # 60 minutes
        (1.0, "1.0 h"),
        (5.5, "5.5 h"),
        (47.9, "47.9 h"),
        (48.0, "2.0 d"),
        (80.0, "3.3 d"),
    ],
)
def test_durations(hours: float | None, shown: str) -> None:
    assert fmt_hours(hours) == shown


@pytest.mark.parametrize(
    ("now", "then", "shown"),
    [
        (3.0, 1.5, "+1.5 h"),
        (1.0, 1.5, "-30 min"),
        (2.0, 2.0, "+0 min"),
        (None, 1.0, DASH),
        (1.0, None, DASH),
        (100.0, 4.0, "+4.0 d"),
    ],
)
def test_the_change_of_a_duration(now: float | None, then: float | None, shown: str) -> None:
    assert fmt_hours_change(now, then) == shown


@pytest.mark.parametrize(
    ("loop", "pct", "bar"),
    [
        (Loop(4, 1, 1, 2), "50.0 %", LoopBar(closed=50.0, in_work=25.0, in_work_start=50.0)),
        (Loop(3, 3, 0, 0), "0.0 %", LoopBar(closed=0.0, in_work=0.0, in_work_start=0.0)),
        (Loop(3, 0, 0, 3), "100.0 %", LoopBar(closed=100.0, in_work=0.0, in_work_start=100.0)),
        (Loop(3, 1, 2, 0), "0.0 %", LoopBar(closed=0.0, in_work=66.667, in_work_start=0.0)),
        (Loop(), DASH, None),
    ],
)
def test_loop_closed_and_its_bar(loop: Loop, pct: str, bar: LoopBar | None) -> None:
    assert loop.closed_pct == pct
    assert loop.bar == bar


def test_a_loop_of_a_row() -> None:
    loop = Loop.of(loop_row("service", 5, 1, 2, 2, 1, 1, median_hours_to_close=None))
    assert loop == Loop(5, 1, 2, 2, 1, 1, hours_to_change=0.5, hours_to_close=None)
    assert (loop.closed_pct, loop.to_change, loop.to_close) == ("40.0 %", "30 min", DASH)


@pytest.mark.parametrize(
    ("action", "shown"),
    [
        ("service", "4 working h to act"),
        ("task", "24 h to close"),
        ("marketing", "no SLA"),
        ("escalation", "4 h to close"),  # its deadline (escalation_deadline_hours)
    ],
)
def test_the_sla_of_an_action(action: str, shown: str) -> None:
    assert sla_text(action, FOLLOWUP) == shown


def test_has_sla() -> None:
    assert has_sla(FOLLOWUP)
    assert not has_sla(Followup())


def test_per_action_in_a_fixed_order_with_the_escalation_tasks_last() -> None:
    rows = [
        loop_row("escalation", 2, 0, 1, 1, 0, 0),
        loop_row("task"),
        loop_row("other"),
        loop_row("call_task"),
        loop_row("service"),
        loop_row("marketing"),
    ]
    lines = by_action(rows, FOLLOWUP)
    assert [(line.key, line.label, line.value, line.sla) for line in lines] == [
        ("action-service", "service lead", "service", "4 working h to act"),
        ("action-marketing", "marketing lead", "marketing", "no SLA"),
        ("action-task", "head of sales' task", "task", "24 h to close"),
        ("action-call_task", "call task", "call_task", "no SLA"),
        ("action-escalation", "escalation task", "escalation", "4 h to close"),
        ("action-other", "other", None, "no SLA"),
    ]
    # followed like any task: its state as read
    assert lines[4].loop == Loop.of(loop_row("escalation", 2, 0, 1, 1, 0, 0))


def test_escalations_in_words() -> None:
    assert Escalations(queued=1, created=2, failed=1, skipped=1).text == (
        "2 tasks created, 1 queued for crm_sync, 1 refused by the portal,"
        " 1 not made (escalation off or nobody to escalate to)"
    )
    assert Escalations(created=1).text == "1 task created"
    assert Escalations().text == ""
    assert Escalations.of(total_row(escalations=(1, 2, 3, 4, 1))) == Escalations(1, 2, 3, 4, 1)
    assert Escalations(created=3, unfollowed=2).text == (
        "3 tasks created (2 made before they were followed: not in the table)"
    )


def test_per_manager_by_name_most_followed_first_without_one_last() -> None:
    rows = [
        loop_row(None, 9, 9, 0, 0, 0, 0),
        loop_row(31, 2, 1, 0, 1, 0, 0),
        loop_row(32, 5, 1, 1, 3, 1, 0),
    ]
    lines = by_manager(rows, {32: "Olga Petrova"})
    assert [(line.key, line.label, line.value, line.loop.followed) for line in lines] == [
        ("manager-32", "Olga Petrova", "32", 5),
        ("manager-31", "user 31", "31", 2),
        ("manager-none", "no manager", None, 9),
    ]


@pytest.mark.parametrize(
    ("now", "then", "expected"),
    [
        (
            Loop(4, 0, 0, 3, hours_to_close=2.0),
            Loop(2, 1, 0, 1, hours_to_close=3.5),
            {
                "followed": "+2",
                "closed_pct": "+25.0",
                "previous_closed_pct": "50.0 %",
                "to_close": "-1.5 h",
                "previous_to_close": "3.5 h",
                "direction": "up",
                "close_direction": "up",
            },
        ),
        (
            Loop(2, 2, 0, 0),
            Loop(2, 0, 0, 2, hours_to_close=1.0),
            {"closed_pct": "-100.0", "to_close": DASH, "direction": "down", "close_direction": ""},
        ),
        (
            Loop(2, 0, 0, 2, hours_to_close=5.0),
            Loop(4, 0, 0, 4, hours_to_close=1.0),
            {"closed_pct": "+0.0", "direction": "same", "close_direction": "down"},
        ),
        (
            Loop(3, 3, 0, 0),
            Loop(),
            {"followed": "+3", "closed_pct": DASH, "previous_closed_pct": DASH, "direction": ""},
        ),
    ],
)
def test_the_change_against_the_previous_period(
    now: Loop, then: Loop, expected: dict[str, str]
) -> None:
    delta = loop_change(now, then, date(2026, 11, 1), date(2026, 11, 30))
    assert (delta.since, delta.days, delta.previous_followed) == (
        "2026-11-01 … 2026-11-30",
        30,
        then.followed,
    )
    assert {key: getattr(delta, key) for key in expected} == expected


def test_links_to_the_portal_entity() -> None:
    assert entity_url(ORIGIN, record()) == f"{ORIGIN}/crm/lead/details/4242/"
    task = record(entity_type="task", entity_id=77, responsible_id=5)
    assert entity_url(ORIGIN, task) == f"{ORIGIN}/company/personal/user/5/tasks/task/view/77/"
    assert entity_url(ORIGIN, {**task, "responsible_id": None}) is None
    assert entity_url(None, record()) is None


@pytest.mark.parametrize(
    ("overrides", "text", "task", "url"),
    [
        ({}, "not yet (at its next read)", None, None),
        (
            {"escalation": "queued", "escalated_to": 17},
            "queued for Ivan Sokolov (crm_sync is creating the task)",
            None,
            None,
        ),
        (
            {"escalation": "created", "escalated_to": 17, "escalation_task_id": 9001},
            "task created for Ivan Sokolov",
            9001,
            f"{ORIGIN}/company/personal/user/17/tasks/task/view/9001/",
        ),
        (
            {"escalation": "created", "escalated_to": 18, "escalation_task_id": 9002},
            "task created for user 18",
            9002,
            f"{ORIGIN}/company/personal/user/18/tasks/task/view/9002/",
        ),
        (
            {"escalation": "failed", "escalation_reason": "contact 42 does not exist"},
            "failed (contact 42 does not exist)",
            None,
            None,
        ),
        ({"escalation": "failed"}, "failed (the portal refused it)", None, None),
        ({"action": "escalation"}, "none: it is the escalation", None, None),
        (
            {"escalation": "skipped", "escalation_reason": "escalation is off"},
            "not escalated (escalation is off)",
            None,
            None,
        ),
    ],
)
def test_the_escalation_of_an_overdue_one(
    overrides: dict[str, Any], text: str, task: int | None, url: str | None
) -> None:
    shown = escalation(record(**overrides), ORIGIN, {17: "Ivan Sokolov"})
    assert (shown.text, shown.task_id, shown.task_url) == (text, task, url)


@pytest.mark.parametrize(
    ("overrides", "shown"),
    [
        ({}, "open (NEW)"),
        ({"state": "in_work", "status": "IN_PROCESS"}, "in work (IN_PROCESS)"),
        ({"state": "in_work", "status": "3"}, "in work (3)"),
        ({"status": None}, "open"),
    ],
)
def test_the_state_as_read(overrides: dict[str, Any], shown: str) -> None:
    assert state_text(record(**overrides)) == shown


def test_overdue_lines() -> None:
    lead, task = overdue_lines(
        [
            record(),
            record(
                follow_id=uuid.UUID(int=2),
                action="task",
                entity_type="task",
                entity_id=77,
                responsible_id=5,
                manager_id=None,
                contact_id=None,
                state="in_work",
                status="3",
                sla_until="closed",
                due_at=CREATED + timedelta(hours=24),
                hours_overdue=50.0,
                escalation="created",
                escalated_to=5,
                escalation_task_id=9001,
            ),
        ],
        ORIGIN,
        zone=MSK,
        names={31: "Anna Petrova", 17: "Ivan Sokolov"},
    )
    assert lead.follow_id == str(FOLLOW)
    assert (lead.action, lead.entity, lead.entity_url) == (
        "service lead",
        "lead 4242",
        f"{ORIGIN}/crm/lead/details/4242/",
    )
    assert (lead.state, lead.responsible, lead.manager) == (
        "open (NEW)",
        "Ivan Sokolov",
        "Anna Petrova",
    )
    assert (lead.contact_id, lead.contact_url) == (42, f"{ORIGIN}/crm/contact/details/42/")
    assert (lead.created, lead.deadline, lead.needed) == (
        "2026-12-07 13:00 MSK",
        "2026-12-07 17:00 MSK",
        "acted on",
    )
    assert (lead.late, lead.escalation, lead.escalation_url) == (
        "2.5 h",
        "not yet (at its next read)",
        None,
    )
    assert (task.action, task.entity, task.state, task.needed) == (
        "head of sales' task",
        "task 77",
        "in work (3)",
        "closed",
    )
    assert task.entity_url == f"{ORIGIN}/company/personal/user/5/tasks/task/view/77/"
    assert (task.manager, task.contact_id, task.contact_url, task.late) == (
        "no manager",
        None,
        None,
        "2.1 d",
    )
    assert (task.escalation, task.escalation_task_id) == ("task created for user 5", 9001)
    (nobody,) = overdue_lines([record(responsible_id=None)], None)
    assert (nobody.responsible, nobody.entity_url, nobody.created) == (
        "nobody",
        None,
        "2026-12-07 10:00 UTC",
    )


def test_a_csv_row_follows_the_header_and_is_safe() -> None:
    (line,) = overdue_lines(
        [
            record(
                escalation="failed",
                escalation_reason="=HYPERLINK(1)",
                hours_overdue=26.0,
            )
        ],
        ORIGIN,
        names={17: "-Ivan", 31: "@Anna"},
    )
    assert dict(zip(FOLLOWUP_CSV_HEADER, followup_csv_row(line), strict=True)) == {
        "action": "service lead",
        "entity": "lead 4242",
        "entity link": f"{ORIGIN}/crm/lead/details/4242/",
        "state": "open (NEW)",
        "responsible": "'-Ivan",
        "manager": "'@Anna",
        "contact": "42",
        "contact link": f"{ORIGIN}/crm/contact/details/42/",
        "created": "2026-12-07 10:00 UTC",
        "SLA": "4 working h to act",
        "SLA deadline": "2026-12-07 14:00 UTC",
        "needed by then": "acted on",
        "hours overdue": "26.0",
        "escalation": "failed (=HYPERLINK(1))",
        "escalation task id": "",
        "escalation task link": "",
    }
    (bare,) = overdue_lines(
        [record(contact_id=None, escalation="created", escalated_to=None, escalation_task_id=5)],
        None,
    )
    cells = dict(zip(FOLLOWUP_CSV_HEADER, followup_csv_row(bare), strict=True))
    assert (cells["contact"], cells["contact link"], cells["entity link"]) == ("", "", "")
    assert (cells["escalation"], cells["escalation task id"]) == ("task created", "5")


# --- the filters ------------------------------------------------------------------------------


def test_the_action_filter_is_read_written_back_and_refused_by_name() -> None:
    filters = parse_filters({"action": "call_task", "manager": "31"}, TODAY)
    assert filters.action == "call_task"
    assert filters.query_string() == "?manager=31&action=call_task"
    assert parse_filters({"action": ""}, TODAY).action is None
    with pytest.raises(FilterError) as refused:
        parse_filters({"action": "lead"}, TODAY)
    assert refused.value.problems == [
        "action: expected one of service, marketing, task, call_task, escalation, got 'lead'"
    ]


def test_the_follow_up_selection_counts_local_days() -> None:
    filters = parse_filters(
        {
            "from": "2026-12-01",
            "to": "2026-12-07",
            "action": "service",
            "manager": "31",
            "portal": "m1",
        },
        TODAY,
    )
    where = filters.followup(MSK)
    assert (where.portal, where.action, where.manager) == ("m1", "service", 31)
    assert where.since == datetime(2026, 11, 30, 21, 0, tzinfo=UTC)
    assert where.until == datetime(2026, 12, 7, 21, 0, tzinfo=UTC)
    everything = Filters().followup(UTC)
    assert (everything.since, everything.until, everything.action) == (None, None, None)
    before = filters.previous()
    assert before is not None
    assert before.followup(MSK).since == datetime(2026, 11, 23, 21, 0, tzinfo=UTC)


# --- the page -------------------------------------------------------------------------------


def view(**overrides: Any) -> FollowupView:
    escalations = Escalations(queued=1, created=1)
    lines = overdue_lines(
        [
            record(),
            record(
                follow_id=uuid.UUID(int=2),
                escalation="created",
                escalated_to=17,
                escalation_task_id=9001,
            ),
        ],
        ORIGIN,
        names={17: "Ivan <b>Sokolov</b>"},
    )
    values: dict[str, Any] = {
        "loop": Loop.of(total_row(6, 2, 1, 3, 2, 2)),
        "change": None,
        "actions": tuple(
            by_action(
                [
                    loop_row("service", 4, 1, 1, 2, 2, 2),
                    loop_row("task", 2, 1, 0, 1, 0, 0),
                    loop_row("escalation", 2, 1, 0, 1, 0, 0),
                ],
                FOLLOWUP,
            )
        ),
        "managers": tuple(by_manager([loop_row(31, 6, 2, 1, 3, 2, 2)], {31: "Anna Petrova"})),
        "escalations": escalations,
        "overdue": tuple(lines),
        "overdue_total": 5,
        "followed_in_all": 9,
        **overrides,
    }
    return FollowupView(**values)


def test_the_page_shows_the_loop_the_tables_and_the_overdue_ones() -> None:
    filters = Filters(
        portal="m1", preset="30d", date_from=date(2026, 11, 8), date_to=date(2026, 12, 7)
    )
    page = pages.followup_page(filters, OPTIONS, view(), csv_url="/followup.csv?portal=m1")
    rows = figures(page)
    assert rows["loop"] == {
        "followed": "6",
        "open": "2",
        "in_work": "1",
        "closed": "3",
        "closed_pct": "50.0 %",
        "to_change": "30 min",
        "to_close": "3.0 h",
        "overdue": "2",
        "escalated": "2",
    }
    assert rows["action-service"] == {
        "sla": "4 working h to act",
        "followed": "4",
        "open": "1",
        "in_work": "1",
        "closed": "2",
        "closed_pct": "50.0 %",
        "to_change": "30 min",
        "to_close": "3.0 h",
        "overdue": "2",
        "escalated": "2",
    }
    assert rows["action-task"]["sla"] == "24 h to close"
    assert rows["action-escalation"] == {  # followed like any task, to its deadline
        "sla": "4 h to close",
        "followed": "2",
        "open": "1",
        "in_work": "0",
        "closed": "1",
        "closed_pct": "50.0 %",
        "to_change": "30 min",
        "to_close": "3.0 h",
        "overdue": "0",
        "escalated": "0",
    }
    assert rows["escalations"] == {"text": "1 task created, 1 queued for crm_sync"}
    assert rows["manager-31"]["closed_pct"] == "50.0 %"
    assert rows["overdue-total"] == {"total": "5"}
    assert rows[str(FOLLOW)] == {
        "action": "service lead",
        "entity": "lead 4242",
        "state": "open (NEW)",
        "responsible": "Ivan <b>Sokolov</b>",
        "manager": "user 31",
        "contact_id": "42",
        "created": "2026-12-07 10:00 UTC",
        "deadline": "2026-12-07 14:00 UTC",
        "sla": "4 working h to act",
        "late": "2.5 h",
        "escalation": "not yet (at its next read)",
    }
    escalated = rows[str(uuid.UUID(int=2))]
    assert escalated["escalation"] == "task created for Ivan <b>Sokolov</b>"
    assert escalated["escalation_task"] == "task 9001"
    assert "Ivan &lt;b&gt;Sokolov&lt;/b&gt;" in page
    assert "the 2 longest overdue" in page
    assert f'href="{ORIGIN}/crm/lead/details/4242/"' in page
    assert f'href="{ORIGIN}/company/personal/user/17/tasks/task/view/9001/"' in page
    assert 'href="/followup?dates=30d&amp;portal=m1&amp;action=service"' in page
    assert 'href="/followup?manager=31&amp;dates=30d&amp;portal=m1"' in page
    assert 'href="/followup.csv?portal=m1"' in page
    assert '<a href="/followup?dates=30d&amp;portal=m1" class="on">Follow-up</a>' in page
    assert '<select name="action"' in page
    assert '<select name="segment"' not in page


def test_the_change_names_the_rates_only_when_the_previous_period_followed_any() -> None:
    first, last = date(2026, 11, 1), date(2026, 11, 30)
    now = Loop(6, 2, 1, 3, hours_to_close=3.0)
    compared = pages.followup_page(
        Filters(),
        OPTIONS,
        view(change=loop_change(now, Loop(4, 0, 0, 4, hours_to_close=1.0), first, last)),
        csv_url="/followup.csv",
    )
    assert figures(compared)["change"] == {
        "followed": "+2",
        "previous_followed": "4",
        "closed_pct": "-50.0",
        "previous_closed_pct": "100.0 %",
        "to_close": "+2.0 h",
        "previous_to_close": "1.0 h",
    }
    first_time = pages.followup_page(
        Filters(), OPTIONS, view(change=loop_change(now, Loop(), first, last)), csv_url="/"
    )
    assert figures(first_time)["change"] == {"followed": "+6", "previous_followed": "0"}


def test_empty_states_say_what_to_do() -> None:
    nothing = view(
        loop=Loop(),
        actions=(),
        managers=(),
        escalations=Escalations(),
        overdue=(),
        overdue_total=0,
    )
    never = pages.followup_page(
        Filters(), OPTIONS, replace(nothing, followed_in_all=0), csv_url="/"
    )
    assert "Nothing is followed yet: start dispatch" in never
    assert "to see what is overdue" not in never  # the actions have an SLA
    assert "loop" not in figures(never)
    assert "overdue-total" not in figures(never)
    bare = pages.followup_page(
        Filters(), OPTIONS, replace(nothing, followed_in_all=0, slas=False), csv_url="/"
    )
    assert "Give the actions an SLA in the portal YAML" in bare
    off = pages.followup_page(
        Filters(), OPTIONS, replace(nothing, followed_in_all=0, enabled=False), csv_url="/"
    )
    assert "The follow-up is off: dispatch.followup.enabled is false" in off
    filtered = pages.followup_page(Filters(), OPTIONS, nothing, csv_url="/")
    assert "No lead or task b24-nps created matches these filters." in filtered
    assert figures(filtered)["followed-in-all"] == {"followed": "9"}
    assert "Nothing is overdue for these filters" in filtered
    no_sla = pages.followup_page(Filters(), OPTIONS, replace(nothing, slas=False), csv_url="/")
    assert "No action has an SLA, so nothing is ever overdue" in no_sla
    in_time = pages.followup_page(
        Filters(), OPTIONS, view(overdue=(), overdue_total=0), csv_url="/"
    )
    assert "Nothing is overdue for these filters" in in_time
    assert "CSV of all" not in in_time


def test_the_overview_tile_links_to_the_follow_up_page() -> None:
    chart = trend_chart([])
    filters = Filters(manager=31, preset="7d", date_from=date(2026, 12, 1), date_to=TODAY)
    late = pages.trend_page(
        filters,
        OPTIONS,
        chart,
        NO_COUNTS,
        "month",
        api_url="/api/report",
        scores=distribution({}),
        followup=FollowupTile(3, "/followup?manager=31&dates=7d"),
    )
    assert figures(late)["followup"] == {"overdue": "3"}
    assert '<a class="tile late" href="/followup?manager=31&amp;dates=7d">' in late
    assert "overdue follow-ups" in late
    one = pages.trend_page(
        Filters(),
        OPTIONS,
        chart,
        NO_COUNTS,
        "month",
        api_url="/",
        scores=distribution({}),
        followup=FollowupTile(0, "/followup"),
    )
    assert '<a class="tile" href="/followup">' in one
    assert FollowupTile(1, "/").label == "overdue follow-up"
    without = pages.trend_page(
        Filters(), OPTIONS, chart, NO_COUNTS, "month", api_url="/", scores=distribution({})
    )
    assert "followup" not in figures(without)


def test_the_problems_page_offers_the_action_choice() -> None:
    page = pages.problems_page(pages.FOLLOWUP, OPTIONS, ["action: expected one of …"])
    assert '<option value="call_task">call task</option>' in page
    assert "These filters cannot be used" in page
    assert replace(Filters(), action="task").params() == {"action": "task"}


@pytest.mark.parametrize(
    ("working", "shown"),
    [
        (True, "4 working h to act"),
        (False, "4 h to act"),
        (None, "4 h (working or calendar: unknown) to act"),  # followed before 0615
    ],
)
def test_the_sla_a_row_began_with(working: bool | None, shown: str) -> None:
    assert row_sla_text(record(sla_working_hours=working)) == shown
    assert row_sla_text(record(sla_hours=None, sla_working_hours=None)) == "no SLA"
