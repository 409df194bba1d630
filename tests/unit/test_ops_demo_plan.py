"""What `nps demo` decides and says about dispatch: the hand-answered NPS deals, when it leaves
dispatch out and why, which e-mail is which request's and where its survey link is, the score a
customer gives on the form's scale, which e-mails it answers, its progress and register lines."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from services.ops.demo_plan import (
    CUSTOMERS,
    DEFAULT_DEALS,
    DispatchProgress,
    Handling,
    csrf_field,
    customers,
    dashboard_lines,
    dispatch_left_out,
    followed_expected,
    followup_lines,
    handled_seen,
    handling,
    nps_deals,
    on_scale,
    register_lines,
    request_of,
    score_choices,
    survey_link,
    survey_page,
    where_to_look,
    window_closed,
)
from shared.dispatch_config import Dispatch, SendWindow
from shared.portal_config import PortalConfig

MONDAY_10 = datetime(2026, 12, 7, 10, 0, tzinfo=UTC)
RID = "5ad108db-a6a0-5130-9f84-e423026c038c"
LINK = "http://127.0.0.1:8002/s/IjVhZDEwOGRi.aG9n.sig"


def _config(portal_config: PortalConfig, **dispatch: Any) -> PortalConfig:
    base = {
        "email": {"sender": "Demo <nps@example.com>"},
        "sales": [{"funnel": 0, "survey": "After the sale", "products": True}],
        "window": {"start": "09:00", "end": "20:00"},
    }
    section = Dispatch.model_validate({**base, **dispatch})
    return portal_config.model_copy(update={"dispatch": section})


def _without_dispatch(portal_config: PortalConfig) -> PortalConfig:
    return portal_config.model_copy(update={"dispatch": None})


@pytest.mark.parametrize(
    ("watched", "asked", "count", "says"),
    [
        (False, None, DEFAULT_DEALS, None),
        (False, 5, 5, None),
        (True, None, 0, "dispatch opens them for the sales the demo closes"),
        (True, 0, 0, None),
        (True, 10, 10, "dispatch watches: it asks their customers too"),
    ],
    ids=["no-dispatch", "no-dispatch-asked", "dispatch", "dispatch-none-asked", "dispatch-asked"],
)
def test_nps_deals_are_answered_by_hand_only_where_dispatch_does_not_open_them(
    portal_config: PortalConfig, watched: bool, asked: int | None, count: int, says: str | None
) -> None:
    config = _config(portal_config) if watched else _without_dispatch(portal_config)
    choice = nps_deals(config, asked)
    assert choice.count == count
    if says is None:
        assert choice.note is None
    else:
        assert choice.note is not None
        assert says in choice.note


def test_dispatch_of_another_funnel_leaves_the_hand_answered_deals_as_they_were(
    portal_config: PortalConfig,
) -> None:
    config = _config(portal_config, sales=[{"funnel": 3, "survey": "After the sale"}])
    assert nps_deals(config, None).count == DEFAULT_DEALS


@pytest.mark.parametrize(
    ("dispatch", "sales", "at", "left_out", "says"),
    [
        (None, 5, MONDAY_10, True, None),
        ({}, 0, MONDAY_10, True, None),
        ({"sales": []}, 5, MONDAY_10, True, None),
        ({}, 5, MONDAY_10, False, None),
        (
            {"sales": [{"funnel": 3, "survey": "After the sale"}]},
            5,
            MONDAY_10,
            True,
            "dispatch.sales watches funnel(s) 3, and the sandbox closes sales of funnel 0 only",
        ),
        (
            {
                "channel": "portal",
                "portal_channel": {"link_field": "UF_CRM_NPS_LINK", "trigger": "NPS_SEND"},
            },
            5,
            MONDAY_10,
            True,
            "dispatch.channel: portal",
        ),
        (
            {
                "portal_channel": {"link_field": "UF_CRM_NPS_LINK", "trigger": "NPS_SEND"},
                "surveys": {"After the sale": {"channel": "portal"}},
            },
            5,
            MONDAY_10,
            True,
            "dispatch.channel: portal",
        ),
        ({}, 5, MONDAY_10.replace(hour=21), True, "dispatch sends only inside dispatch.window"),
    ],
    ids=[
        "no-dispatch",
        "sales-0",
        "no-sales",
        "shown",
        "other-funnel",
        "portal-channel",
        "portal-for-the-deal-survey",
        "window-closed",
    ],
)
def test_the_demo_shows_dispatch_or_says_why_not(
    portal_config: PortalConfig,
    dispatch: dict[str, Any] | None,
    sales: int,
    at: datetime,
    left_out: bool,
    says: str | None,
) -> None:
    config = (
        _without_dispatch(portal_config) if dispatch is None else _config(portal_config, **dispatch)
    )
    out, why = dispatch_left_out(config, sales, at)
    assert out is left_out
    if says is None:
        assert why is None
    else:
        assert why is not None
        assert says in why


@pytest.mark.parametrize(
    ("at", "window", "timezone", "closed"),
    [
        (MONDAY_10, SendWindow(), "UTC", False),
        (MONDAY_10.replace(hour=9), SendWindow(), "UTC", False),
        (MONDAY_10.replace(hour=8, minute=59), SendWindow(), "UTC", True),
        (MONDAY_10.replace(hour=20), SendWindow(), "UTC", True),
        (MONDAY_10.replace(hour=18), SendWindow(), "Europe/Moscow", True),
        (MONDAY_10.replace(hour=7), SendWindow(), "Europe/Moscow", False),
        (MONDAY_10, SendWindow(weekdays=("sat", "sun")), "UTC", True),
    ],
    ids=["inside", "at-start", "before", "at-end", "evening-in-moscow", "morning-in-moscow", "day"],
)
def test_the_send_window_in_the_portals_time_zone(
    at: datetime, window: SendWindow, timezone: str, closed: bool
) -> None:
    why = window_closed(at, window, timezone)
    assert (why is not None) is closed
    if why is not None:
        assert f"{window.start:%H:%M}-{window.end:%H:%M}" in why
        assert timezone in why


def test_a_closed_window_says_when_and_where() -> None:
    why = window_closed(MONDAY_10.replace(hour=5, minute=27), SendWindow(), "UTC")
    assert why == (
        "dispatch sends only inside dispatch.window (09:00-20:00, every day, UTC) and it is mon"
        " 05:27 there now, so the demo leaves dispatch out: run it inside the window, or widen"
        " dispatch.window in the portal YAML"
    )


@pytest.mark.parametrize(
    ("message_id", "found"),
    [
        (f"<{RID}.0@b24-nps>", RID),
        (f"<{RID}.1@b24-nps>", RID),
        ("<0f0f0f0f-a6a0-5130-9f84-e423026c038c.0@b24-nps>", None),
        (None, None),
        ("", None),
    ],
    ids=["first", "reminder", "another-request", "none", "empty"],
)
def test_an_email_is_its_requests_by_its_message_id(message_id: str | None, found: str) -> None:
    assert request_of(message_id, [RID, "11111111-2222-3333-4444-555555555555"]) == found


@pytest.mark.parametrize(
    ("links", "link"),
    [
        ([f"{LINK}?score=0", f"{LINK}?score=10", LINK, f"{LINK}/optout"], LINK),
        ([f"{LINK}/optout", f"{LINK}?score=3", f"{LINK}?score=9"], LINK),
        ([f"{LINK}/optout", "https://example.com/"], None),
        (["https://nps.example.com/survey/s/tok?score=5"], "https://nps.example.com/survey/s/tok"),
        ([], None),
    ],
    ids=["open-link", "score-links-only", "no-survey-link", "under-a-path", "none"],
)
def test_the_survey_link_among_an_emails_links(links: list[str], link: str | None) -> None:
    assert survey_link(links) == link


@pytest.mark.parametrize(
    ("link", "page"),
    [
        (LINK, "http://127.0.0.1:8002"),
        ("https://nps.example.com/survey/s/tok", "https://nps.example.com/survey"),
    ],
)
def test_the_survey_page_of_a_link(link: str, page: str) -> None:
    assert survey_page(link) == page


FORM = """<form method="post" action="/s/tok">
<input type="hidden" name="csrf" value="abc.DEF-1_2">
<input type="radio" id="score-0" name="score" value="0">
<input type="radio" id="score-10" name="score" value="10">
<input type="radio" id="score-5" name="score" value="5" checked>
<textarea id="comment" name="comment"></textarea>"""


def test_the_forms_csrf_field_and_scores() -> None:
    assert csrf_field(FORM) == "abc.DEF-1_2"
    assert score_choices(FORM) == [0, 5, 10]
    assert csrf_field("<form></form>") is None
    assert score_choices('<input name="score_1" value="3">') == []


@pytest.mark.parametrize(
    ("wanted", "offered", "score"),
    [
        (3, list(range(11)), 3),
        (10, list(range(11)), 10),
        (3, list(range(1, 11)), 4),
        (8, list(range(1, 11)), 8),
        (3, [0, 1], 0),
        (8, [0, 1], 1),
        (10, [0, 1], 1),
    ],
)
def test_a_score_keeps_its_place_on_the_forms_scale(
    wanted: int, offered: list[int], score: int
) -> None:
    assert on_scale(wanted, offered) == score


def test_a_form_without_scores_is_refused() -> None:
    with pytest.raises(ValueError, match="no score"):
        on_scale(3, [])


def _row(rid: str, sale: int, **fields: Any) -> dict[str, Any]:
    return {
        "request_id": rid,
        "sale_deal_id": sale,
        "kind": "deal",
        "survey": "After the sale",
        "channel": "email",
        "state": "sent",
        "sends": 1,
        "nps_deal_id": 100 + sale,
        "reason": None,
        **fields,
    }


def test_the_customers_answer_nps_deals_by_sale_then_one_opens_only() -> None:
    rows = [
        _row("e", 5),
        _row("a", 1),
        _row("b", 1, kind="segment", survey="Laser A", nps_deal_id=None),
        _row("c", 2),
        _row("d", 3, state="skipped", sends=0, nps_deal_id=None),
        _row("f", 4),
        _row("g", 6),
    ]
    links = {rid: f"{LINK}{rid}" for rid in "abcefg"}
    assert len(CUSTOMERS) == 3
    assert customers(rows, links) == (["a", "c", "f"], ["e"])
    assert customers(rows, {"a": LINK}) == (["a"], [])
    assert customers(rows, {}) == ([], [])


def test_the_customers_are_a_detractor_first() -> None:
    assert CUSTOMERS[0][0] <= 6
    assert {score >= 9 for score, _ in CUSTOMERS} == {True, False}


def test_the_progress_counts_the_demos_sales_and_requests() -> None:
    sales = [1, 2, 3]
    assert DispatchProgress.of(sales, []).line() == (
        "sales in the register 0/3 · requests 0: scheduled 0, sent 0, answered 0"
    )
    rows = [
        _row("a", 1, state="scheduled", sends=0),
        _row("b", 1, state="skipped", sends=0, reason="asked_recently"),
        _row("c", 2, state="opened"),
        _row("d", 2, state="answered"),
        _row("e", 9, state="sent"),
    ]
    progress = DispatchProgress.of(sales, rows, moved=0, answering=1)
    assert progress.line() == (
        "sales in the register 2/3 · requests 5: scheduled 1, sent 3, answered 1, skipped 1"
        " · NPS deals moved 0/1"
    )
    assert not progress.sending_done
    done = DispatchProgress.of([1, 2], [r for r in rows if r["state"] != "scheduled"])
    assert done.sending_done


def test_the_register_lines_list_the_demos_requests_then_every_count() -> None:
    rows = [
        _row("c", 2, kind="segment", survey="Laser A", nps_deal_id=None),
        _row("b", 2, state="answered"),
        _row("a", 1, state="skipped", sends=0, nps_deal_id=None, reason="asked_recently"),
    ]
    lines = register_lines(rows, {"sent": 4, "answered": 2, "skipped": 1}, {102: "failure"})
    assert lines == [
        "The register for these sales (nps survey list):",
        "  survey             channel state      sends NPS deal stage     sale  reason",
        "  After the sale     email   skipped        0                       1  asked_recently",
        "  After the sale     email   answered       1      102 failure      2",
        "  Laser A            email   sent           1                       2",
        "  every request in the register: answered 2, sent 4, skipped 1",
    ]


def test_where_to_look_names_the_register_the_inbox_the_page_and_a_deal() -> None:
    lines = where_to_look("http://127.0.0.1:8090", "http://127.0.0.1:8002", 102)
    assert lines[0] == "Where to look:"
    places = [line.split()[0] for line in lines[1:]]
    assert places == [
        "nps",
        "http://127.0.0.1:8090/inbox",
        "http://127.0.0.1:8002",
        "nps",
        "http://127.0.0.1:8090/crm/deal/details/102/",
    ]
    assert lines[1].startswith("  nps survey list ")
    assert len(where_to_look("http://127.0.0.1:8090", None, None)) == 4


# --- the follow-up ------------------------------------------------------------------------


def test_the_followed_are_the_created_leads_and_tasks_of_the_demos_answers() -> None:
    crm = {
        "service:created": 3,
        "service:existing": 1,
        "marketing:created": 2,
        "task:created": 4,
        "contact:patched": 9,
        "stage:patched": 5,
        "task:failed": 1,
    }
    assert followed_expected(crm) == 10
    assert followed_expected({}) == 0


@pytest.mark.parametrize(
    ("leads", "tasks", "steps"),
    [
        (
            [9, 3, 7, 1, 5, 11],
            [40, 20, 30],
            [Handling("closed", (1, 3), (20, 30)), Handling("in_work", (5, 7))],
        ),
        ([4], [], [Handling("closed", (4,))]),
        ([4, 2], [8], [Handling("closed", (2,), (8,))]),
        ([], [], []),
    ],
)
def test_the_demos_managers_close_the_oldest_third_and_take_the_next_in_work(
    leads: list[int], tasks: list[int], steps: list[Handling]
) -> None:
    assert handling(leads, tasks) == steps


def test_the_handled_are_seen_in_the_state_they_were_moved_to() -> None:
    steps = [Handling("closed", (1, 3), (20,)), Handling("in_work", (5,))]
    states = {("lead", 1): "closed", ("lead", 3): "in_work", ("task", 20): "closed"}
    assert handled_seen(steps, states) == 2
    states.update({("lead", 3): "closed", ("lead", 5): "in_work"})
    assert handled_seen(steps, states) == 4
    assert handled_seen(steps, {("task", 1): "closed"}) == 0  # a lead is not a task


def test_the_followup_lines_tell_the_loop_and_how_fast_it_was_seen() -> None:
    total = {
        "followed": 12,
        "open": 4,
        "in_work": 3,
        "closed": 5,
        "median_hours_to_change": 0.01,
        "median_hours_to_close": 2.5,
    }
    first, loop = followup_lines(total, 8, 4.2)
    assert first.startswith("Follow-up (did anyone act?): 12 leads and tasks")
    assert "the 8 the demo moved in the portal were seen in 4 s" in first
    assert loop == (
        "  open 4 · in work 3 · closed 5 · loop closed 41.7 %"
        " · median to first change 1 min · median to close 2.5 h"
    )
    empty = {**total, "followed": 0, "closed": 0, "median_hours_to_close": None}
    assert (
        "loop closed — · median to first change 1 min · median to close —"
        in (followup_lines(empty, 0, 0)[1])
    )


def test_the_dashboard_lines_name_its_pages() -> None:
    lines = dashboard_lines("http://127.0.0.1:8001/")
    assert lines[0].startswith("The dashboard")
    assert [line.split()[0] for line in lines[1:]] == [
        "http://127.0.0.1:8001/ratings",
        "http://127.0.0.1:8001/asked",
        "http://127.0.0.1:8001/followup",
        "http://127.0.0.1:8001/managers",
    ]
