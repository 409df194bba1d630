"""The weekly digest's pure parts: which edition is due when (portal time zone), the weeks it
compares, the worst comments, the overdue list, and the e-mail in each language."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from services.reports.digest import (
    COMMENT_CHARS,
    TEXTS,
    DigestContent,
    Figures,
    build_digest,
    change,
    due,
    edition,
    overdue_items,
    worst_comments,
)
from shared.dispatch_config import Digest

UTC_TZ = ZoneInfo("UTC")
MOSCOW = ZoneInfo("Europe/Moscow")
MONDAY = date(2026, 12, 7)
DIGEST = Digest(to=("head@example.com", "Sales <sales@example.com>"), weekday="mon")


@pytest.mark.parametrize(
    ("now", "tz", "day"),
    [
        (datetime(2026, 12, 7, 9, 0, tzinfo=UTC), UTC_TZ, MONDAY),  # its moment
        (datetime(2026, 12, 7, 8, 59, tzinfo=UTC), UTC_TZ, MONDAY - timedelta(days=7)),
        (datetime(2026, 12, 9, 15, 0, tzinfo=UTC), UTC_TZ, MONDAY),  # Wednesday
        (datetime(2026, 12, 13, 23, 0, tzinfo=UTC), UTC_TZ, MONDAY),  # Sunday night
        # 06:30 UTC is 09:30 in Moscow: this Monday's; 05:30 UTC is 08:30: last week's
        (datetime(2026, 12, 7, 6, 30, tzinfo=UTC), MOSCOW, MONDAY),
        (datetime(2026, 12, 7, 5, 30, tzinfo=UTC), MOSCOW, MONDAY - timedelta(days=7)),
    ],
)
def test_the_edition_is_the_latest_scheduled_moment_in_the_portal_s_time_zone(
    now: datetime, tz: ZoneInfo, day: date
) -> None:
    ed = edition(now, DIGEST, tz)
    assert ed.day == day
    assert ed.scheduled == datetime.combine(day, time(9, 0), tz)
    assert (ed.start, ed.end) == (day - timedelta(days=7), day - timedelta(days=1))
    assert (ed.previous_start, ed.previous_end) == (
        day - timedelta(days=14),
        day - timedelta(days=8),
    )


def test_an_edition_goes_out_only_within_a_day_of_its_moment() -> None:
    friday = Digest(to=("a@example.com",), weekday="fri", time=time(16, 30))
    moment = datetime(2026, 12, 11, 16, 30, tzinfo=UTC)
    ed = edition(moment + timedelta(hours=3), friday, UTC_TZ)
    assert ed.scheduled == moment
    assert due(moment, ed)
    assert due(moment + timedelta(hours=23), ed)
    assert not due(moment + timedelta(hours=24), ed)  # started too late: skipped this week
    assert not due(moment - timedelta(minutes=1), ed)


def figures(nps: float | None, answers: int = 40, *, few: bool = False) -> Figures:
    return Figures.of(
        None
        if nps is None
        else {
            "nps": nps,
            "margin": 12.5,
            "answers": answers,
            "promoters": 20,
            "passives": 10,
            "detractors": 10,
            "few_answers": few,
        }
    )


def test_the_change_against_the_week_before() -> None:
    assert change(figures(25.0), figures(32.5)) == -7.5
    assert change(figures(25.0), figures(None)) is None
    assert Figures.of(None).answers == 0


def answer(score: int | None, comment: str | None, day: int, product: str = "Laser A") -> Any:
    return {
        "score": score,
        "comment": comment,
        "product_name": product,
        "submitted_at": datetime(2026, 12, day, 10, 0, tzinfo=UTC),
    }


def test_the_worst_comments_are_the_lowest_scores_newest_first_cut_to_length() -> None:
    rows = [
        answer(6, "slow delivery", 1),
        answer(0, "broke after a week", 2),
        answer(0, "  nobody   called\nback ", 4),
        answer(2, "", 5),  # no comment
        answer(None, "not scored", 5),
        answer(3, "x" * (COMMENT_CHARS + 50), 3, "Cryo B"),
    ]
    worst = worst_comments(rows, 3)
    assert [(c.score, c.text[:18], c.day.day) for c in worst] == [
        (0, "nobody called back", 4),
        (0, "broke after a week", 2),
        (3, "x" * 18, 3),
    ]
    assert len(worst[2].text) == COMMENT_CHARS
    assert worst[2].text.endswith("…")
    assert worst_comments(rows, 0) == []


def test_overdue_items_name_the_responsible_when_known() -> None:
    rows = [
        {
            "action": "service",
            "entity_type": "lead",
            "entity_id": 12,
            "responsible_id": 17,
            "hours_overdue": 5.5,
            "escalation": "created",
        },
        {
            "action": "task",
            "entity_type": "task",
            "entity_id": 9,
            "responsible_id": 99,
            "hours_overdue": 1.0,
            "escalation": None,
        },
    ]
    items = overdue_items(rows, {17: "Olga Service"})
    assert [(i.responsible, i.escalated) for i in items] == [("Olga Service", True), ("#99", False)]


def content(lang: str, **overrides: Any) -> DigestContent:
    ed = edition(datetime(2026, 12, 7, 9, 5, tzinfo=UTC), DIGEST, UTC_TZ)
    values: dict[str, Any] = {
        "edition": ed,
        "lang": lang,
        "week": figures(25.0, few=False),
        "previous": figures(32.5),
        "comments": worst_comments([answer(0, "<b>broke</b> & nobody called", 2)], 5),
        "overdue": overdue_items(
            [
                {
                    "action": "service",
                    "entity_type": "lead",
                    "entity_id": 12,
                    "responsible_id": 17,
                    "hours_overdue": 5.5,
                    "escalation": "queued",
                },
                {
                    "action": "escalation",
                    "entity_type": "task",
                    "entity_id": 40,
                    "responsible_id": 17,
                    "hours_overdue": 1.0,
                    "escalation": None,
                },
            ],
            {17: "Olga Service"},
        ),
        "overdue_total": 4,
    }
    return DigestContent(**{**values, **overrides})


def parts(message: Any) -> tuple[str, str]:
    text = message.get_body(("plain",)).get_content()
    html = message.get_body(("html",)).get_content()
    return text, html


def test_the_english_digest_says_nps_change_comments_and_overdue() -> None:
    message = build_digest(
        content("en"), DIGEST, sender="NPS <nps@example.com>", portal="m1", tz=UTC_TZ
    )
    assert message["Subject"] == "NPS weekly digest 2026-11-30 \u2013 2026-12-06: 25"
    assert message["To"] == "head@example.com, Sales <sales@example.com>"
    assert "digest.m1.2026-12-07" in message["Message-ID"]
    text, html = parts(message)
    assert "NPS: 25 (40 answers, margin of error ±12.5)" in text
    assert "the week before: 32.5 (40 answers), change: -7.5" in text
    assert "- 0 · Laser A · 2026-12-02: <b>broke</b> & nobody called" in text
    assert "Overdue follow-ups (4)" in text
    assert "service lead #12: 5.5 h overdue, responsible: Olga Service (escalated)" in text
    assert "escalation task #40: 1.0 h overdue, responsible: Olga Service\n" in text
    assert "and 2 more" in text
    assert "&lt;b&gt;broke&lt;/b&gt; &amp; nobody called" in html  # escaped
    assert "<b>broke</b>" not in html
    assert "too few answers" not in text


def test_the_russian_digest_and_a_week_on_too_few_answers() -> None:
    few = content("ru", week=figures(-28.6, answers=7, few=True), comments=[], overdue=[])
    message = build_digest(few, DIGEST, sender="nps@example.com", portal="m1", tz=UTC_TZ)
    assert message["Subject"].startswith("Сводка NPS за неделю 2026-11-30 \u2013 2026-12-06: -28.6")
    text, html = parts(message)
    assert "слишком мало ответов" in text
    assert "слишком мало ответов" in html
    assert TEXTS["ru"]["no_comments"] in text
    assert "изменение: -61.1" in text


def test_a_week_without_answers_has_no_nps() -> None:
    empty = content("en", week=Figures.of(None), overdue=[], overdue_total=0)
    message = build_digest(empty, DIGEST, sender="nps@example.com", portal="m1", tz=UTC_TZ)
    text, _ = parts(message)
    assert "NPS: — (no answers)" in text
    assert "change: —" in text
    assert "Nothing is overdue" in text
