"""Dashboard view models: chart geometry, bars, sparklines, links and the ops view (pure)."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta, timezone, tzinfo
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from services.ingest.read import UnmappedCategory
from services.reports.views import (
    DASH,
    LABEL_CHAR_WIDTH,
    Counts,
    ProductInfo,
    Tick,
    attention_lines,
    change,
    contact_url,
    distribution,
    fmt_avg,
    fmt_json_value,
    fmt_margin,
    fmt_nps,
    fmt_time,
    item_url,
    lane_lines,
    manager_label,
    manager_lines,
    mix,
    nps_bar,
    nps_y,
    ops_view,
    polyline,
    portal_origin,
    product_lines,
    sparkline,
    trend_chart,
    x_tick,
    x_ticks,
)
from services.scoring.nps import nps_margin, too_few_answers


def row(period: str, nps: float | None, p: int, n: int, d: int, **keys: Any) -> dict[str, Any]:
    answers = p + n + d
    return {
        **keys,
        "period": period,
        "nps": nps,
        "margin": None if nps is None else nps_margin(p, d, answers),
        "few_answers": too_few_answers(answers),
        "promoters": p,
        "passives": n,
        "detractors": d,
        "answers": answers,
        "avg_score": 7.5 if answers else None,
    }


def path_points(path: str) -> list[list[tuple[float, float]]]:
    """The pieces of an SVG path written by `polyline`, as lists of (x, y)."""
    pieces: list[list[tuple[float, float]]] = []
    for command, x, y in re.findall(r"([ML])(-?[\d.]+),(-?[\d.]+)", path):
        if command == "M":
            pieces.append([])
        pieces[-1].append((float(x), float(y)))
    return pieces


def test_nps_axis_maps_the_full_range_top_to_bottom() -> None:
    assert nps_y(100, 10, 210) == 10
    assert nps_y(-100, 10, 210) == 210
    assert nps_y(0, 10, 210) == 110
    assert nps_y(-50, 10, 210) == 160


def test_trend_chart_scales_nps_and_answer_bars() -> None:
    rows = [
        row("2024-01", 100.0, 4, 0, 0),
        row("2024-02", -50.0, 0, 1, 1),
        row("2024-03", 0.0, 1, 0, 1),
    ]
    chart = trend_chart(rows, width=960, height=400)
    first, second, third = chart.points
    assert chart.max_answers == 4
    assert first.y == chart.nps_top
    assert second.y is not None
    assert second.y > chart.zero_y
    assert third.y == pytest.approx(chart.zero_y, abs=0.01)
    assert first.bar_height == pytest.approx(chart.bars_bottom - chart.bars_top)
    assert second.bar_height == pytest.approx(first.bar_height / 2, abs=0.01)
    assert second.bar_y == pytest.approx(chart.bars_bottom - second.bar_height, abs=0.01)
    assert [p.x for p in chart.points] == sorted(p.x for p in chart.points)
    assert chart.left < first.x
    assert third.x < chart.right
    (piece,) = path_points(chart.line)
    for (x, y), point in zip(piece, chart.points, strict=True):
        assert x == pytest.approx(point.x, abs=0.05)
        assert y == pytest.approx(point.y, abs=0.05)
    assert [t.label for t in chart.x_ticks] == ["2024-01", "2024-02", "2024-03"]
    assert [t.label for t in chart.y_ticks] == ["+100", "+50", "0", "-50", "-100"]
    assert chart.marker_radius > 0


def test_periods_without_answers_break_the_line_and_have_no_bar() -> None:
    rows = [
        row("2024-01", 20.0, 2, 2, 1),
        row("2024-02", None, 0, 0, 0),
        row("2024-03", -20.0, 1, 2, 2),
        row("2024-04", 0.0, 1, 0, 1),
    ]
    chart = trend_chart(rows)
    gap = chart.points[1]
    assert gap.y is None
    assert gap.bar_height == 0
    pieces = path_points(chart.line)
    assert len(pieces) == 2
    assert len(pieces[0]) == 1
    assert len(pieces[1]) == 2


def test_an_empty_trend_has_no_points_and_says_so() -> None:
    chart = trend_chart([])
    assert chart.points == ()
    assert chart.line == ""
    assert chart.x_ticks == ()
    assert not chart.has_answers
    assert not trend_chart([row("2024-01", None, 0, 0, 0)]).has_answers


def test_long_trends_get_a_bounded_number_of_labels_and_no_markers() -> None:
    rows = [row(f"day {i}", 10.0, 1, 0, 0) for i in range(1095)]
    chart = trend_chart(rows, max_labels=12)
    assert 1 < len(chart.x_ticks) <= 12
    assert chart.x_ticks[0].label == "day 0"
    assert chart.marker_radius == 0
    assert chart.bar_width > 0
    assert chart.points[-1].x < chart.right


def test_the_last_label_of_a_daily_chart_stays_inside_it() -> None:
    days = [row(f"2024-03-{d:02d}", 10.0, 1, 0, 0) for d in range(1, 32)]
    chart = trend_chart(days, width=960)
    last = chart.x_ticks[-1]
    assert last.anchor == "end"
    assert last.at <= 960
    half = len(last.label) * LABEL_CHAR_WIDTH / 2
    for tick in chart.x_ticks[:-1]:
        assert (tick.anchor, tick.at - half >= 0, tick.at + half <= 960) == ("middle", True, True)


def test_the_last_label_does_not_overlap_the_one_before() -> None:
    days = [row(f"2024-{m:02d}-{d:02d}", 10.0, 1, 0, 0) for m in (4, 5) for d in range(1, 31)]
    chart = trend_chart([*days, row("2024-05-31", 10.0, 1, 0, 0)], width=960)
    labels = [tick.label for tick in chart.x_ticks]
    assert labels[-2:] == ["2024-05-19", "2024-05-31"]
    assert chart.x_ticks[-1].anchor == "end"
    assert x_ticks([("a", 100.0), ("b", 200.0)], 960) == (Tick("a", 100.0), Tick("b", 200.0))


@pytest.mark.parametrize(
    ("label", "at", "anchor"),
    [("2024-05", 480.0, "middle"), ("2024-05-31", 940.0, "end"), ("2024-05-31", 926.0, "middle")],
)
def test_an_axis_label_that_would_overflow_ends_at_its_point(
    label: str, at: float, anchor: str
) -> None:
    assert x_tick(label, at, 960) == Tick(label, at, anchor)


def test_a_single_period_sits_in_the_middle() -> None:
    chart = trend_chart([row("2024-Q1", -100.0, 0, 0, 3)])
    (only,) = chart.points
    assert only.x == pytest.approx((chart.left + chart.right) / 2)
    assert only.y == chart.nps_bottom
    assert path_points(chart.line) == [[(only.x, only.y)]]


def test_mix_widths_add_up_to_a_full_bar() -> None:
    shares = mix(Counts(nps=0.0, promoters=1, passives=1, detractors=1, answers=3, avg_score=7.0))
    assert shares is not None
    assert shares.promoters.start == 0
    assert shares.passives.start == shares.promoters.width
    assert shares.detractors.start == pytest.approx(shares.passives.start + shares.passives.width)
    total = shares.promoters.width + shares.passives.width + shares.detractors.width
    assert total == pytest.approx(100)
    assert shares.promoters.width == pytest.approx(33.333)


def test_mix_of_only_detractors_and_of_nothing() -> None:
    shares = mix(Counts(-100.0, 0, 0, 5, 5, 2.0))
    assert shares is not None
    assert (shares.promoters.width, shares.passives.width) == (0, 0)
    assert shares.detractors == type(shares.detractors)(0, 100)
    assert mix(Counts(None, 0, 0, 0, 0, None)) is None


@pytest.mark.parametrize(
    ("nps", "x", "width", "negative"),
    [
        (60.0, 50.0, 30.0, False),
        (-40.0, 30.0, 20.0, True),
        (-100.0, 0.0, 50.0, True),
        (0.0, 50.0, 0.0, False),
    ],
)
def test_nps_bar_grows_from_the_middle(nps: float, x: float, width: float, negative: bool) -> None:
    bar = nps_bar(nps)
    assert bar is not None
    assert (bar.x, bar.width, bar.negative) == (x, width, negative)


def test_no_nps_no_bar() -> None:
    assert nps_bar(None) is None


def test_polyline_starts_a_new_piece_after_each_gap() -> None:
    assert polyline([(0, 1), (1, None), (2, 3), (3, 4)]) == "M0.0,1.0M2.0,3.0L3.0,4.0"
    assert polyline([(0, None)]) == ""


def test_sparkline_spans_its_box_and_remembers_the_latest_value() -> None:
    line = sparkline([100.0, None, -100.0, 0.0], width=120, height=28)
    pieces = path_points(line.line)
    assert [len(p) for p in pieces] == [1, 2]
    assert pieces[0][0] == (3.0, 3.0)
    assert pieces[1][0] == (79.0, 25.0)
    assert pieces[1][1][0] == pytest.approx(117.0)
    assert line.zero_y == 14
    assert line.last == 0.0
    assert len(line.dots) == 3
    assert sparkline([None, None]).last is None
    assert sparkline([]).line == ""


def test_product_lines_join_the_trend_and_the_catalogue() -> None:
    rows = [
        row("", 50.0, 3, 0, 1, sku="EQ-1", name="Laser"),
        row("", None, 0, 0, 0, sku="COS-1", name="Serum"),
    ]
    trend = [
        row("2024-01", 100.0, 1, 0, 0, sku="EQ-1"),
        row("2024-02", 33.3, 2, 0, 1, sku="EQ-1"),
    ]
    catalogue = {"EQ-1": ProductInfo("Laser", ("Laser A", "Lasers"), ("equipment",))}
    laser, serum = product_lines(rows, trend, catalogue)
    assert (laser.sku, laser.segments, laser.kind) == ("EQ-1", "Laser A, Lasers", "equipment")
    assert laser.trend.last == 33.3
    assert laser.trend_span == "2024-01 … 2024-02"
    assert laser.mix is not None
    assert laser.bar is not None
    assert (serum.segments, serum.kind, serum.trend_span) == ("", "", "")
    assert serum.mix is None
    assert serum.bar is None
    assert serum.trend.line == ""


def test_manager_lines_name_the_answers_without_a_manager() -> None:
    lines = manager_lines(
        [
            {**row("", -20.0, 1, 2, 2), "manager_id": 17},
            {**row("", 100.0, 1, 0, 0), "manager_id": None},
        ]
    )
    assert [(line.manager_id, line.label) for line in lines] == [
        (17, "user 17"),
        (None, "no manager"),
    ]
    assert lines[0].bar is not None
    assert lines[0].bar.negative


@pytest.mark.parametrize(
    ("webhook", "origin"),
    [
        ("https://acme.bitrix24.ru/rest/1/s3cr3t/", "https://acme.bitrix24.ru"),
        ("http://user:pw@crm.local:8443/rest/7/abc/", "http://crm.local:8443"),
        ("http://127.0.0.1:8090/rest/1/sandbox/", "http://127.0.0.1:8090"),
        ("https://[::1]:9000/rest/1/x/", "https://[::1]:9000"),
    ],
)
def test_links_use_the_portal_origin_only(webhook: str, origin: str) -> None:
    assert portal_origin(webhook) == origin
    link = item_url(portal_origin(webhook), 1038, 4711)
    assert link == f"{origin}/crm/type/1038/details/4711/"
    assert "s3cr3t" not in link
    assert "pw" not in link
    assert "rest" not in link
    assert contact_url(origin, 501) == f"{origin}/crm/contact/details/501/"


def test_no_portal_no_links_and_bad_urls_are_refused() -> None:
    assert item_url(None, 1038, 1) is None
    assert (
        item_url("https://acme.bitrix24.ru", 2, 77)
        == "https://acme.bitrix24.ru/crm/deal/details/77/"
    )
    assert contact_url("https://a.b", None) is None
    with pytest.raises(ValueError, match="http"):
        portal_origin("ftp://portal/rest/1/x/")


def test_attention_lines_show_unscored_service_requests_and_links() -> None:
    at = datetime(2024, 5, 2, 1, 30, tzinfo=timezone(timedelta(hours=3)))
    records = [
        {
            "answer_id": "p:7:EQ",
            "entity_type_id": 1038,
            "item_id": 7,
            "segment": "Laser A",
            "sku": "EQ",
            "product_name": "Laser",
            "score": None,
            "category": None,
            "comment": None,
            "service_request": True,
            "contact_id": None,
            "responsible_id": None,
            "submitted_at": at,
        }
    ]
    (line,) = attention_lines(records, "https://acme.bitrix24.ru")
    assert line.submitted == "2024-05-01 22:30 UTC"
    (moscow,) = attention_lines(records, None, ZoneInfo("Europe/Moscow"))
    assert moscow.submitted == "2024-05-02 01:30 MSK"
    assert (line.score, line.category, line.comment) == (DASH, "not scored", "")
    assert line.item_url == "https://acme.bitrix24.ru/crm/type/1038/details/7/"
    assert line.contact_url is None
    assert line.manager == "no manager"
    assert line.product == "Laser (EQ)"


def test_ops_view_with_an_unreachable_broker_says_unknown() -> None:
    view = ops_view(None, [], None, ["ingest.hydrate", "crm_sync.actions"], None)
    assert view.conflicts_total is None
    assert [(q.queue, q.size, q.alert) for q in view.queues] == [
        ("ingest.hydrate", "unknown", False),
        ("crm_sync.actions", "unknown", False),
    ]
    assert not view.broker_reachable


def test_ops_view_counts_and_conflict_values() -> None:
    created = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)
    conflict = {
        "id": 3,
        "contact_id": 501,
        "field": "UF_CRM_NPS_LASER_A",
        "reason": "legacy value",
        "current_value": '"7 (2019)"',
        "proposed_value": "9",
        "answer_id": "p:1:EQ",
        "created_at": created,
    }
    view = ops_view(
        12,
        [conflict],
        {"ingest.hydrate": 0, "crm_sync.actions": 4},
        ["ingest.hydrate", "crm_sync.actions"],
        "https://a.b",
    )
    assert view.conflicts_total == 12
    (line,) = view.conflicts
    assert (line.current, line.proposed, line.created) == ("7 (2019)", "9", "2024-06-01 12:00 UTC")
    assert line.contact_url == "https://a.b/crm/contact/details/501/"
    assert [(q.size, q.alert) for q in view.queues] == [("0", False), ("4", True)]
    assert view.broker_reachable
    assert (line.field, line.field_code) == ("UF_CRM_NPS_LASER_A", "UF_CRM_NPS_LASER_A")


def test_ops_view_names_fields_by_title_and_shows_the_portals_time() -> None:
    created = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)
    conflicts = [
        {
            "id": n,
            "contact_id": 501,
            "field": code,
            "reason": "legacy value",
            "current_value": "7",
            "proposed_value": "9",
            "answer_id": "p:1:EQ",
            "created_at": created,
        }
        for n, code in enumerate(["UF_CRM_NPS_LASER_A", "UF_CRM_OTHER"])
    ]
    held = [UnmappedCategory(16, 3, created, created)]
    view = ops_view(
        2,
        conflicts,
        None,
        [],
        None,
        unmapped=held,
        field_titles={"UF_CRM_NPS_LASER_A": "Laser A: NPS score"},
        zone=ZoneInfo("Europe/Moscow"),
    )
    assert [(c.field, c.field_code) for c in view.conflicts] == [
        ("Laser A: NPS score", "UF_CRM_NPS_LASER_A"),
        ("UF_CRM_OTHER", "UF_CRM_OTHER"),
    ]
    assert view.conflicts[0].created == "2024-06-01 15:00 MSK"
    assert view.unmapped is not None
    assert view.unmapped[0].oldest == "2024-06-01 15:00 MSK"


@pytest.mark.parametrize(
    ("zone", "shown"),
    [
        (UTC, "2024-05-01 22:30 UTC"),
        (ZoneInfo("Europe/Moscow"), "2024-05-02 01:30 MSK"),
        (ZoneInfo("Asia/Yekaterinburg"), "2024-05-02 03:30 +05"),
        (ZoneInfo("America/New_York"), "2024-05-01 18:30 EDT"),
    ],
)
def test_times_are_shown_in_the_portals_time_zone(zone: tzinfo, shown: str) -> None:
    at = datetime(2024, 5, 2, 1, 30, tzinfo=timezone(timedelta(hours=3)))
    assert fmt_time(at, zone) == shown


def test_ops_view_lists_the_answers_waiting_for_a_segment() -> None:
    held = UnmappedCategory(
        category_id=16,
        items=3,
        oldest=datetime(2024, 6, 1, 12, 0, tzinfo=UTC),
        newest=datetime(2024, 6, 2, 9, 30, tzinfo=UTC),
    )
    lines = ops_view(None, [], None, [], None, unmapped=[held]).unmapped
    assert lines is not None
    assert [(u.category_id, u.answers, u.oldest, u.newest) for u in lines] == [
        (16, 3, "2024-06-01 12:00 UTC", "2024-06-02 09:30 UTC")
    ]
    assert ops_view(None, [], None, [], None).unmapped == ()
    assert ops_view(None, [], None, [], None, unmapped=None).unmapped is None


def test_formats() -> None:
    assert (fmt_nps(None), fmt_nps(-33.3), fmt_nps(100.0), fmt_nps(0.0)) == (
        DASH,
        "-33.3",
        "100.0",
        "0.0",
    )
    assert (fmt_avg(None), fmt_avg(7.0), fmt_avg(6.67)) == (DASH, "7.00", "6.67")
    assert (fmt_margin(None), fmt_margin(51.8), fmt_margin(0.0)) == (DASH, "±51.8", "±0.0")
    assert fmt_json_value(None) == DASH
    assert fmt_json_value('["a", 1]') == '["a", 1]'
    long_value = fmt_json_value('"' + "x" * 500 + '"')
    assert len(long_value) == 120
    assert long_value.endswith("…")


@pytest.mark.parametrize(
    ("nps", "answers", "few", "expected"),
    [
        (-28.6, 7, True, "unreliable: 7 answers"),
        (100.0, 1, True, "unreliable: 1 answer"),
        (12.5, 40, False, None),
        (None, 7, True, None),  # no NPS (cosmetics segment): nothing to call unreliable
        (None, 0, False, None),
    ],
)
def test_an_nps_from_too_few_answers_is_marked(
    nps: float | None, answers: int, few: bool, expected: str | None
) -> None:
    counts = Counts(nps, answers, 0, 0, answers, None, margin=None, few_answers=few)
    assert counts.unreliable == expected


def test_score_distribution_has_a_column_per_score() -> None:
    shown = distribution({0: 1, 7: 2, 10: 4}, width=440, height=150)
    assert [bar.score for bar in shown.bars] == list(range(11))
    assert [bar.count for bar in shown.bars] == [1, 0, 0, 0, 0, 0, 0, 2, 0, 0, 4]
    assert shown.total == 7
    assert [bar.category for bar in shown.bars] == ["d"] * 7 + ["n"] * 2 + ["p"] * 2
    tallest = shown.bars[10]
    assert (tallest.y, tallest.height, tallest.share) == (16.0, 114.0, "57 %")
    assert (shown.bars[7].height, shown.bars[7].y) == (57.0, 73.0)
    assert (shown.bars[1].height, shown.bars[1].y, shown.bars[1].share) == (0.0, 130.0, "0 %")
    assert all(0 <= bar.x <= 440 - shown.bar_width for bar in shown.bars)


def test_an_empty_distribution_has_no_columns_to_draw() -> None:
    shown = distribution({})
    assert shown.total == 0
    assert {(bar.count, bar.height, bar.share) for bar in shown.bars} == {(0, 0.0, DASH)}


@pytest.mark.parametrize(
    ("now", "before", "nps", "answers", "direction"),
    [
        ((12.5, 40), (-3.2, 31), "+15.7", "+9", "up"),
        ((-28.6, 7), (0.0, 12), "-28.6", "-5", "down"),
        ((10.0, 10), (10.0, 10), "+0.0", "+0", "same"),
        ((50.0, 2), (None, 0), DASH, "+2", ""),  # nothing before: no NPS to compare
        ((None, 0), (20.0, 5), DASH, "-5", ""),
    ],
)
def test_change_against_the_previous_period(
    now: tuple[float | None, int],
    before: tuple[float | None, int],
    nps: str,
    answers: str,
    direction: str,
) -> None:
    current = Counts(now[0], now[1], 0, 0, now[1], None)
    previous = Counts(before[0], before[1], 0, 0, before[1], None)
    delta = change(current, previous, date(2024, 3, 31), date(2024, 4, 29))
    assert (delta.nps, delta.answers, delta.direction) == (nps, answers, direction)
    assert (delta.since, delta.days) == ("2024-03-31 … 2024-04-29", 30)
    assert (delta.previous_nps, delta.previous_answers) == (fmt_nps(before[0]), before[1])


@pytest.mark.parametrize(
    ("manager_id", "label"),
    [(31, "Anna Petrova"), (32, "user 32"), (None, "no manager")],
)
def test_managers_are_named_where_the_portal_told_their_names(
    manager_id: int | None, label: str
) -> None:
    names = {31: "Anna Petrova"}
    assert manager_label(manager_id, names) == label
    [line] = manager_lines([{**row("", 10.0, 1, 0, 0), "manager_id": manager_id}], names)
    assert line.label == label
    record = {
        "answer_id": "p:7:EQ",
        "entity_type_id": 1038,
        "item_id": 7,
        "segment": "Laser A",
        "sku": "EQ",
        "product_name": "Laser",
        "score": 3,
        "category": "detractor",
        "comment": None,
        "service_request": False,
        "contact_id": None,
        "responsible_id": manager_id,
        "submitted_at": datetime(2024, 5, 2, tzinfo=UTC),
    }
    [attention] = attention_lines([record], None, names=names)
    assert attention.manager == label


@pytest.mark.parametrize(
    ("depths", "usage", "expected"),
    [
        (
            {"crm_sync.urgent": 2, "crm_sync.actions": 900},
            {"urgent": (1, 0.25), "bulk": (3, 3.0)},
            [("urgent", "2", 1, "25 %", "0.25 s"), ("bulk", "900", 3, "75 %", "1.00 s")],
        ),
        # no request in the window, broker down
        (None, {}, [("urgent", "unknown", 0, "—", "—"), ("bulk", "unknown", 0, "—", "—")]),
        # bulk alone: all of the budget
        (
            {"crm_sync.urgent": 0, "crm_sync.actions": 5},
            {"bulk": (40, 0.0)},
            [("urgent", "0", 0, "0 %", "—"), ("bulk", "5", 40, "100 %", "0.00 s")],
        ),
    ],
)
def test_lane_lines(
    depths: dict[str, int] | None,
    usage: dict[str, tuple[int, float]],
    expected: list[tuple[str, str, int, str, str]],
) -> None:
    queues = {"urgent": "crm_sync.urgent", "bulk": "crm_sync.actions"}
    lines = lane_lines(queues, depths, usage)
    assert [(x.lane, x.queued, x.requests, x.share, x.mean_wait) for x in lines] == expected
