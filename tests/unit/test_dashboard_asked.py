"""The "Asked" page's view models as tables (services/reports/asked.py, pure): response rates,
the funnel per survey, manager and period, the change against the previous period, the next
reminder, the call task's state, the lines and CSV cells of the lists, when the survey behind an
answer was sent; and the page rendered from them."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from services.reports import pages
from services.reports.asked import (
    ASKED_CSV_HEADER,
    AskedView,
    Funnel,
    FunnelBar,
    answer_sent_at,
    asked_change,
    asked_csv_row,
    asked_lines,
    by_manager,
    by_period,
    by_survey,
    call_task_command,
    call_task_state,
    deal_url,
    fmt_rate,
    next_reminder,
    register_summary,
    request_status,
    task_url,
    total,
)
from services.reports.filters import Filters
from services.reports.views import DASH, FilterOptions
from shared.dispatch_config import Dispatch
from tests.support.dashboard import figures

ORIGIN = "https://acme.bitrix24.ru"
MSK = ZoneInfo("Europe/Moscow")
SENT = datetime(2026, 12, 7, 10, 0, tzinfo=UTC)
REQUEST = uuid.UUID("00000000-0000-0000-0000-0000000000a1")
DISPATCH = Dispatch.model_validate(
    {"reminders": {"after_days": [3, 4]}, "unanswered": {"after_days": 2, "responsible_id": 5}}
)
OPTIONS = FilterOptions(portals=("p",), segments=(), catalogue={}, managers=(31,))


def row(
    day: date = date(2026, 12, 7),
    survey: str = "After the sale",
    responsible_id: int | None = 31,
    *counts: int,
) -> dict[str, Any]:
    sent, opened, answered, awaiting, unanswered = counts or (4, 2, 1, 1, 2)
    return {
        "day": day,
        "survey": survey,
        "responsible_id": responsible_id,
        "sent": sent,
        "opened": opened,
        "answered": answered,
        "awaiting": awaiting,
        "unanswered": unanswered,
    }


def request(**overrides: Any) -> dict[str, Any]:
    """A register row as dispatch's read module gives it: sent once, awaiting an answer."""
    return {
        "request_id": REQUEST,
        "portal": "m1",
        "survey": "After the sale",
        "kind": "deal",
        "sku": None,
        "contact_id": 42,
        "responsible_id": 31,
        "sale_deal_id": 500,
        "nps_deal_id": 900,
        "channel": "email",
        "state": "sent",
        "reason": None,
        "sends": 1,
        "due_at": SENT,
        "created_at": SENT,
        "sent_at": SENT,
        "last_sent_at": SENT,
        "opened_at": None,
        "answered_at": None,
        "closed_at": None,
        "call_task_id": None,
        **overrides,
    }


@dataclass(frozen=True)
class Outcome:
    state: str
    outcome: str | None = None
    entity_id: int | None = None
    reason: str | None = None


@pytest.mark.parametrize(
    ("part", "whole", "shown"),
    [(1, 3, "33.3 %"), (0, 5, "0.0 %"), (5, 5, "100.0 %"), (0, 0, DASH), (2, 3, "66.7 %")],
)
def test_fmt_rate(part: int, whole: int, shown: str) -> None:
    assert fmt_rate(part, whole) == shown


@pytest.mark.parametrize(
    ("funnel", "bar"),
    [
        (Funnel(4, 2, 1), FunnelBar(answered=25.0, opened=25.0, opened_start=25.0)),
        (Funnel(3, 0, 0), FunnelBar(answered=0.0, opened=0.0, opened_start=0.0)),
        (Funnel(3, 3, 3), FunnelBar(answered=100.0, opened=0.0, opened_start=100.0)),
        (Funnel(3, 2, 0), FunnelBar(answered=0.0, opened=66.667, opened_start=0.0)),
        (Funnel(0, 0, 0), None),
    ],
)
def test_the_funnel_bar(funnel: Funnel, bar: FunnelBar | None) -> None:
    assert funnel.bar == bar


def test_totals_and_rates() -> None:
    whole = total([row(), row(date(2026, 12, 8), "Laser A", None, 2, 2, 1, 1, 0)])
    assert whole == Funnel(6, 4, 2, 2, 2)
    assert (whole.open_rate, whole.answer_rate) == ("66.7 %", "33.3 %")
    assert total([]) == Funnel()
    assert (Funnel().open_rate, Funnel().answer_rate) == (DASH, DASH)


def test_per_survey_by_name_and_per_manager_most_sent_first_without_one_last() -> None:
    rows = [
        row(date(2026, 12, 7), "laser B", 31, 1, 1, 1, 0, 0),
        row(date(2026, 12, 8), "After the sale", None, 5, 0, 0, 5, 0),
        row(date(2026, 12, 8), "After the sale", 31, 1, 0, 0, 0, 1),
        row(date(2026, 12, 9), "After the sale", 32, 3, 3, 0, 3, 0),
        row(date(2026, 12, 9), "laser B", 32, 1, 0, 0, 1, 0),
    ]
    surveys = by_survey(rows)
    assert [(s.key, s.label, s.value, s.funnel) for s in surveys] == [
        ("survey-After the sale", "After the sale", "After the sale", Funnel(9, 3, 0, 8, 1)),
        ("survey-laser B", "laser B", "laser B", Funnel(2, 1, 1, 1, 0)),
    ]
    managers = by_manager(rows, {32: "Olga Petrova"})
    assert [(m.key, m.label, m.value, m.funnel.sent) for m in managers] == [
        ("manager-32", "Olga Petrova", "32", 4),
        ("manager-31", "user 31", "31", 2),
        ("manager-none", "no manager", None, 5),
    ]


def test_per_period_in_order_of_the_periods() -> None:
    def week(day: date) -> tuple[date, str]:
        start = day - timedelta(days=day.weekday())
        return start, f"week of {start.isoformat()}"

    rows = [
        row(date(2026, 12, 14), "A", 1, 1, 0, 0, 1, 0),
        row(date(2026, 12, 7), "A", 1, 2, 1, 1, 0, 1),
        row(date(2026, 12, 13), "B", 1, 3, 0, 0, 0, 3),
    ]
    lines = by_period(rows, week)
    assert [(line.key, line.funnel) for line in lines] == [
        ("period-week of 2026-12-07", Funnel(5, 1, 1, 0, 4)),
        ("period-week of 2026-12-14", Funnel(1, 0, 0, 1, 0)),
    ]
    assert [line.value for line in lines] == [None, None]


@pytest.mark.parametrize(
    ("now", "then", "expected"),
    [
        (
            Funnel(10, 5, 4),
            Funnel(4, 3, 1),
            {
                "sent": "+6",
                "answer_rate": "+15.0",
                "open_rate": "-25.0",
                "previous_answer_rate": "25.0 %",
                "previous_open_rate": "75.0 %",
                "direction": "up",
            },
        ),
        (
            Funnel(2, 0, 0),
            Funnel(4, 2, 2),
            {"sent": "-2", "answer_rate": "-50.0", "direction": "down"},
        ),
        (Funnel(2, 1, 1), Funnel(4, 2, 2), {"answer_rate": "+0.0", "direction": "same"}),
        (
            Funnel(3, 1, 1),
            Funnel(),
            {"sent": "+3", "answer_rate": DASH, "open_rate": DASH, "direction": ""},
        ),
        (Funnel(), Funnel(1, 1, 1), {"sent": "-1", "answer_rate": DASH, "direction": ""}),
    ],
)
def test_the_change_against_the_previous_period(
    now: Funnel, then: Funnel, expected: dict[str, str]
) -> None:
    delta = asked_change(now, then, date(2026, 11, 1), date(2026, 11, 30))
    assert (delta.since, delta.days, delta.previous_sent) == (
        "2026-11-01 … 2026-11-30",
        30,
        then.sent,
    )
    assert {key: getattr(delta, key) for key in expected} == expected


@pytest.mark.parametrize(
    ("overrides", "shown"),
    [
        ({}, "2026-12-10 13:00 MSK"),  # 3 days after the first message
        ({"due_at": SENT + timedelta(days=3, hours=20)}, "2026-12-11 09:00 MSK"),  # the window
        ({"due_at": None}, "2026-12-10 13:00 MSK"),  # a portal send in flight
        (
            {"sends": 2, "last_sent_at": SENT + timedelta(days=3)},
            "2026-12-14 13:00 MSK",  # the second reminder, 4 days after the first
        ),
        (
            {"sends": 3, "last_sent_at": SENT + timedelta(days=7)},
            "none left: unanswered from 2026-12-16 13:00 MSK",
        ),
        ({"sends": 0, "last_sent_at": None}, DASH),
    ],
)
def test_the_next_reminder(overrides: dict[str, Any], shown: str) -> None:
    assert next_reminder(request(**overrides), DISPATCH, MSK) == shown


def test_without_reminders_the_request_waits_to_end_unanswered() -> None:
    never = Dispatch.model_validate({"reminders": {"after_days": []}})
    assert next_reminder(request(), never, UTC) == "none left: unanswered from 2026-12-10 10:00 UTC"


@pytest.mark.parametrize(
    ("overrides", "status"),
    [
        ({}, "awaiting answer"),
        ({"state": "opened", "opened_at": SENT}, "awaiting answer"),
        ({"state": "reminded", "sends": 2}, "awaiting answer"),
        ({"state": "answered", "answered_at": SENT, "closed_at": SENT}, "answered"),
        ({"state": "unanswered", "closed_at": SENT}, "unanswered"),
        ({"state": "sent", "reason": "opted_out", "closed_at": SENT}, "opted out"),
        ({"state": "expired", "closed_at": SENT}, "expired"),
        ({"state": "failed", "reason": "mailbox full", "closed_at": SENT}, "failed (mailbox full)"),
        ({"state": "failed", "closed_at": SENT}, "failed"),
    ],
)
def test_request_status(overrides: dict[str, Any], status: str) -> None:
    assert request_status(request(**overrides)) == status


UNANSWERED = {"state": "unanswered", "closed_at": SENT + timedelta(days=5)}


@pytest.mark.parametrize(
    ("overrides", "outcome", "dispatch", "shown"),
    [
        ({"call_task_id": 7001}, None, DISPATCH, ("created", 7001, 31)),
        ({"call_task_id": 7001, "responsible_id": None}, None, DISPATCH, ("created", 7001, 5)),
        (
            {"reason": "no responsible for the call task (dispatch.unanswered.responsible_id)"},
            None,
            DISPATCH,
            (
                "not created (no responsible for the call task"
                " (dispatch.unanswered.responsible_id))",
                None,
                None,
            ),
        ),
        (
            {},
            Outcome("pending"),
            DISPATCH,
            ("not created yet (crm_sync is creating it)", None, None),
        ),
        (
            {},
            Outcome("done", "failed", None, "deal 900 does not exist"),
            DISPATCH,
            ("not created (deal 900 does not exist)", None, None),
        ),
        (
            {},
            Outcome("done", "failed"),
            DISPATCH,
            ("not created (the portal refused it)", None, None),
        ),
        ({}, Outcome("done", "created", 7002), DISPATCH, ("created", 7002, 31)),
        ({}, Outcome("done", "existing", 7003), DISPATCH, ("created", 7003, 31)),
        (
            {},
            None,
            Dispatch.model_validate({"unanswered": {"task": False}}),
            ("not created (call tasks are off: dispatch.unanswered.task)", None, None),
        ),
        ({}, None, DISPATCH, ("not created yet (queued for crm_sync)", None, None)),
    ],
)
def test_the_call_task_state(
    overrides: dict[str, Any], outcome: Outcome | None, dispatch: Dispatch, shown: tuple[Any, ...]
) -> None:
    state = call_task_state(request(**UNANSWERED, **overrides), outcome, dispatch)
    assert (state.text, state.task_id, state.responsible_id) == shown


def test_links_to_the_portal() -> None:
    assert deal_url(ORIGIN, 900) == f"{ORIGIN}/crm/deal/details/900/"
    assert deal_url(None, 900) is None
    assert deal_url(ORIGIN, None) is None
    assert task_url(ORIGIN, 31, 7001) == f"{ORIGIN}/company/personal/user/31/tasks/task/view/7001/"
    assert task_url(ORIGIN, None, 7001) is None
    assert task_url(None, 31, 7001) is None
    assert call_task_command(REQUEST) == f"{REQUEST}:call_task:0"


def test_lines_of_the_lists() -> None:
    waiting, segment, closed, answered = asked_lines(
        [
            request(),
            request(nps_deal_id=None, sku="EQ-LASER-A", survey="Laser A", responsible_id=32),
            request(**UNANSWERED, sends=2, call_task_id=7001),
            request(state="answered", answered_at=SENT, opened_at=SENT, closed_at=SENT),
        ],
        ORIGIN,
        DISPATCH,
        zone=MSK,
        names={32: "Olga Petrova"},
    )
    assert waiting.request_id == str(REQUEST)
    assert (waiting.sent, waiting.status, waiting.reminders) == (
        "2026-12-07 13:00 MSK",
        "awaiting answer",
        0,
    )
    assert (waiting.deal, waiting.deal_url) == ("NPS deal 900", f"{ORIGIN}/crm/deal/details/900/")
    assert waiting.contact_url == f"{ORIGIN}/crm/contact/details/42/"
    assert (waiting.next_reminder, waiting.call_task, waiting.closed) == (
        "2026-12-10 13:00 MSK",
        "",
        DASH,
    )
    assert (segment.deal, segment.product, segment.manager) == (
        "sale 500",
        "EQ-LASER-A",
        "Olga Petrova",
    )
    assert (closed.status, closed.reminders, closed.next_reminder) == ("unanswered", 1, "")
    assert (closed.closed, closed.call_task, closed.task_id) == (
        "2026-12-12 13:00 MSK",
        "created",
        7001,
    )
    assert closed.task_url == f"{ORIGIN}/company/personal/user/31/tasks/task/view/7001/"
    assert (answered.status, answered.answered, answered.closed) == (
        "answered",
        "2026-12-07 13:00 MSK",
        DASH,
    )
    (bare,) = asked_lines([request(nps_deal_id=None, sale_deal_id=None)], None, DISPATCH)
    assert (bare.deal, bare.deal_url, bare.contact_url) == (DASH, None, None)


def test_a_csv_row_follows_the_header_and_is_safe() -> None:
    (line,) = asked_lines(
        [request(**UNANSWERED, survey="=HYPERLINK(1)", call_task_id=7001)],
        ORIGIN,
        DISPATCH,
        names={31: "-Anna"},
    )
    assert dict(zip(ASKED_CSV_HEADER, asked_csv_row(line), strict=True)) == {
        "sent": "2026-12-07 10:00 UTC",
        "survey": "'=HYPERLINK(1)",
        "product": "",
        "contact": "42",
        "contact link": f"{ORIGIN}/crm/contact/details/42/",
        "responsible": "'-Anna",
        "deal": "NPS deal 900",
        "deal link": f"{ORIGIN}/crm/deal/details/900/",
        "channel": "email",
        "status": "unanswered",
        "reminders": "0",
        "opened": "",
        "answered": "",
        "next reminder": "",
        "closed": "2026-12-12 10:00 UTC",
        "call task": "created",
        "call task id": "7001",
        "call task link": f"{ORIGIN}/company/personal/user/31/tasks/task/view/7001/",
    }


@dataclass(frozen=True)
class Sent:
    request_id: uuid.UUID
    portal: str
    kind: str
    sent_at: datetime | None


def test_when_the_survey_behind_an_answer_was_sent() -> None:
    one, two, three, four = (uuid.UUID(int=n) for n in range(1, 5))
    records = [
        {"answer_id": "deal", "portal": "m1", "entity_type_id": 2, "item_id": 77},
        {"answer_id": "item", "portal": "m1", "entity_type_id": 1038, "item_id": 77},
        {"answer_id": "other portal", "portal": "m2", "entity_type_id": 1038, "item_id": 78},
        {"answer_id": "by hand", "portal": "m1", "entity_type_id": 1038, "item_id": 79},
        {"answer_id": "not sent", "portal": "m1", "entity_type_id": 1038, "item_id": 80},
        {"answer_id": "deal of m2", "portal": "m2", "entity_type_id": 2, "item_id": 77},
    ]
    later = SENT + timedelta(days=1)
    found = answer_sent_at(
        records,
        {("m1", 77): later},
        [(77, one), (78, two), (79, uuid.UUID(int=99)), (80, three), (77, four)],
        [
            Sent(one, "m1", "segment", SENT),
            Sent(two, "m1", "segment", SENT),  # item 78 of portal m1, not m2's
            Sent(three, "m1", "segment", None),
            Sent(four, "m1", "deal", later),  # deal 77's request, not item 77's
        ],
    )
    assert found == {"deal": later, "item": SENT}


def test_the_register_summary() -> None:
    assert register_summary({"sent": 2, "skipped": 5, "answered": 2, "failed": 0}) == (
        "5 skipped, 2 answered, 2 sent"
    )
    assert register_summary({}) == ""


def view(**overrides: Any) -> AskedView:
    rows = [row(), row(date(2026, 12, 8), "Laser <b>A</b>", None, 2, 2, 1, 1, 0)]
    lines = asked_lines(
        [request(), request(**UNANSWERED, request_id=uuid.UUID(int=2))], ORIGIN, DISPATCH
    )
    values: dict[str, Any] = {
        "funnel": total(rows),
        "change": None,
        "surveys": tuple(by_survey(rows)),
        "managers": tuple(by_manager(rows)),
        "periods": tuple(by_period(rows, lambda day: (day, day.isoformat()))),
        "awaiting": (lines[0],),
        "awaiting_total": 7,
        "unanswered": (lines[1],),
        "unanswered_total": 1,
        "register": "6 sent",
        **overrides,
    }
    return AskedView(**values)


def test_the_page_shows_the_funnel_the_lists_and_links_keeping_the_filters() -> None:
    filters = Filters(
        portal="m1", preset="30d", date_from=date(2026, 11, 8), date_to=date(2026, 12, 7)
    )
    page = pages.asked_page(filters, OPTIONS, view(), csv_url="/asked.csv?portal=m1")
    rows = figures(page)
    assert rows["asked"] == {
        "sent": "6",
        "opened": "4",
        "open_rate": "66.7 %",
        "answered": "2",
        "answer_rate": "33.3 %",
        "awaiting": "2",
        "unanswered": "2",
    }
    assert rows["survey-Laser <b>A</b>"]["sent"] == "2"
    assert rows["manager-31"]["answer_rate"] == "25.0 %"
    assert rows["period-2026-12-08"]["open_rate"] == "100.0 %"
    assert rows["awaiting-total"] == {"total": "7"}
    assert rows[str(REQUEST)]["next_reminder"] == "2026-12-10 10:00 UTC"
    assert rows[str(uuid.UUID(int=2))]["call_task"] == "not created yet (queued for crm_sync)"
    assert "the 1 waiting longest" in page
    assert "Laser &lt;b&gt;A&lt;/b&gt;" in page
    assert 'href="/asked?segment=Laser+%3Cb%3EA%3C%2Fb%3E&amp;dates=30d&amp;portal=m1"' in page
    assert 'href="/asked?manager=31&amp;dates=30d&amp;portal=m1"' in page
    assert 'href="/asked.csv?portal=m1"' in page
    assert '<a href="/asked?dates=30d&amp;portal=m1" class="on">Asked</a>' in page
    assert '<a href="/followup?dates=30d&amp;portal=m1&amp;action=call_task">' in page


def test_the_change_names_the_rates_only_when_the_previous_period_sent_any() -> None:
    first, last = date(2026, 11, 1), date(2026, 11, 30)
    compared = pages.asked_page(
        Filters(),
        OPTIONS,
        view(change=asked_change(Funnel(6, 4, 2), Funnel(4, 3, 2), first, last)),
        csv_url="/asked.csv",
    )
    assert figures(compared)["change"] == {
        "sent": "+2",
        "previous_sent": "4",
        "answer_rate": "-16.7",
        "previous_answer_rate": "50.0 %",
        "open_rate": "-8.3",
        "previous_open_rate": "75.0 %",
    }
    first_time = pages.asked_page(
        Filters(),
        OPTIONS,
        view(change=asked_change(Funnel(6, 4, 2), Funnel(), first, last)),
        csv_url="/asked.csv",
    )
    assert figures(first_time)["change"] == {"sent": "+6", "previous_sent": "0"}


def test_empty_states_say_what_to_do() -> None:
    nothing = view(
        funnel=Funnel(),
        surveys=(),
        managers=(),
        periods=(),
        awaiting=(),
        awaiting_total=0,
        unanswered=(),
        unanswered_total=0,
    )
    never = pages.asked_page(Filters(), OPTIONS, replace(nothing, register=""), csv_url="/")
    assert "No survey was sent yet: configure dispatch, docs/dispatch.md." in never
    assert "asked" not in figures(never)
    filtered = pages.asked_page(Filters(), OPTIONS, nothing, csv_url="/asked.csv")
    assert "No survey was sent for these filters." in filtered
    assert figures(filtered)["register"] == {"states": "6 sent"}
    quiet = pages.asked_page(Filters(), OPTIONS, view(awaiting=(), unanswered=()), csv_url="/")
    assert "Nobody is awaited" in quiet
    assert "No unanswered surveys for these filters." in quiet
