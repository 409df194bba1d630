"""Dashboard filters from the URL query string and back, and the report queries they make."""

from __future__ import annotations

from datetime import date

import pytest

from services.dispatch.read import AskedFilter
from services.reports.filters import PRESETS, FilterError, Filters, parse_filters, preset_range

TODAY = date(2026, 12, 6)


def test_no_parameters_means_everything_by_month() -> None:
    assert parse_filters({}, TODAY) == Filters()
    assert Filters().query_string() == ""


def test_empty_form_fields_mean_all_and_unknown_parameters_are_ignored() -> None:
    params = {"segment": "", "product": " ", "manager": "", "from": "", "to": "", "period": ""}
    assert parse_filters({**params, "token": "secret", "by": "colour"}, TODAY) == Filters()


def test_every_filter_is_read_and_written_back() -> None:
    params = {
        "segment": "Laser A",
        "product": "EQ-LASER-A",
        "manager": "17",
        "from": "2024-01-01",
        "to": "2024-06-30",
        "period": "week",
        "portal": "a1b2",
    }
    filters = parse_filters(params, TODAY)
    assert filters == Filters(
        segment="Laser A",
        product="EQ-LASER-A",
        manager=17,
        date_from=date(2024, 1, 1),
        date_to=date(2024, 6, 30),
        period="week",
        portal="a1b2",
    )
    assert filters.params() == params
    assert parse_filters(filters.params(), TODAY) == filters
    assert filters.query_string() == (
        "?segment=Laser+A&product=EQ-LASER-A&manager=17&from=2024-01-01&to=2024-06-30"
        "&period=week&portal=a1b2"
    )


def test_the_report_query_carries_every_filter() -> None:
    filters = Filters(segment="12", manager=5, date_from=date(2024, 2, 1), portal="p")
    query = filters.report("manager")
    assert (query.by, query.period, query.segment, query.manager, query.portal) == (
        "manager",
        None,
        "12",
        5,
        "p",
    )
    assert query.date_from == date(2024, 2, 1)
    assert filters.report("period", "range").effective_period == "range"
    assert Filters(period="quarter").report("product", "quarter").period == "quarter"


def test_the_asked_selection_carries_the_filters_and_the_portals_zone() -> None:
    filters = parse_filters(
        {"segment": "Laser A", "product": "EQ-LASER-A", "manager": "17", "dates": "7d"}, TODAY
    )
    assert filters.asked("Europe/Moscow") == AskedFilter(
        portal=None,
        survey="Laser A",
        sku="EQ-LASER-A",
        responsible_id=17,
        start=date(2026, 11, 30),
        end=TODAY,
        zone="Europe/Moscow",
    )
    assert Filters(portal="p1").asked("UTC") == AskedFilter(portal="p1", zone="UTC")


def test_api_url_names_the_same_report() -> None:
    filters = Filters(product="EQ 1", period="week", portal="p")
    assert filters.api_url("product") == "/api/report?by=product&product=EQ+1&portal=p"
    assert filters.api_url("period", "week") == (
        "/api/report?by=period&product=EQ+1&portal=p&period=week"
    )


@pytest.mark.parametrize(
    ("params", "problem"),
    [
        ({"manager": "abc"}, "manager: expected a user id (a whole number from 1), got 'abc'"),
        ({"manager": "0"}, "manager: expected a user id"),
        ({"manager": "-3"}, "manager: expected a user id"),
        ({"from": "yesterday"}, "from: expected a date YYYY-MM-DD, got 'yesterday'"),
        ({"to": "2024-02-30"}, "to: expected a date YYYY-MM-DD"),
        ({"period": "fortnight"}, "period: expected one of day, week, month, quarter, year"),
        ({"period": "range"}, "period: expected one of"),
        ({"from": "2024-06-01", "to": "2024-05-01"}, "from (2024-06-01) is after to (2024-05-01)"),
        ({"product": "x" * 201}, "product: at most 200 characters"),
        ({"dates": "week"}, "dates: expected one of 7d, 30d, 90d, month, quarter, got 'week'"),
    ],
)
def test_bad_filters_are_named(params: dict[str, str], problem: str) -> None:
    with pytest.raises(FilterError) as caught:
        parse_filters(params, TODAY)
    assert any(p.startswith(problem) for p in caught.value.problems), caught.value.problems


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(FilterError) as caught:
        parse_filters({"manager": "x", "from": "y", "period": "z"}, TODAY)
    assert [p.split(":")[0] for p in caught.value.problems] == ["manager", "from", "period"]


@pytest.mark.parametrize(
    ("preset", "today", "first", "last"),
    [
        ("7d", date(2026, 12, 6), date(2026, 11, 30), date(2026, 12, 6)),
        ("30d", date(2026, 12, 6), date(2026, 11, 7), date(2026, 12, 6)),
        ("90d", date(2026, 12, 6), date(2026, 9, 8), date(2026, 12, 6)),
        ("30d", date(2024, 3, 1), date(2024, 2, 1), date(2024, 3, 1)),  # over a leap February
        ("month", date(2026, 12, 6), date(2026, 12, 1), date(2026, 12, 6)),
        ("month", date(2026, 12, 1), date(2026, 12, 1), date(2026, 12, 1)),
        ("quarter", date(2026, 12, 6), date(2026, 10, 1), date(2026, 12, 6)),
        ("quarter", date(2026, 3, 31), date(2026, 1, 1), date(2026, 3, 31)),
        ("quarter", date(2026, 4, 1), date(2026, 4, 1), date(2026, 4, 1)),
        ("quarter", date(2026, 8, 15), date(2026, 7, 1), date(2026, 8, 15)),
    ],
)
def test_date_presets_end_today(preset: str, today: date, first: date, last: date) -> None:
    assert preset_range(preset, today) == (first, last)


def test_a_preset_takes_the_place_of_the_dates_and_stays_in_links() -> None:
    filters = parse_filters(
        {"dates": "30d", "from": "2020-01-01", "to": "", "period": "week"}, TODAY
    )
    assert (filters.preset, filters.date_from, filters.date_to) == (
        "30d",
        date(2026, 11, 7),
        TODAY,
    )
    assert filters.query_string() == "?dates=30d&period=week"
    assert parse_filters(filters.params(), TODAY) == filters
    assert filters.api_url("product") == "/api/report?by=product&from=2026-11-07&to=2026-12-06"
    assert set(PRESETS) == {"7d", "30d", "90d", "month", "quarter"}


@pytest.mark.parametrize(
    ("first", "last", "before_first", "before_last"),
    [
        (date(2024, 5, 1), date(2024, 5, 31), date(2024, 3, 31), date(2024, 4, 30)),
        (date(2026, 12, 1), date(2026, 12, 6), date(2026, 11, 25), date(2026, 11, 30)),
        (date(2024, 3, 1), date(2024, 3, 1), date(2024, 2, 29), date(2024, 2, 29)),
    ],
)
def test_the_previous_period_has_the_same_length(
    first: date, last: date, before_first: date, before_last: date
) -> None:
    filters = Filters(segment="12", date_from=first, date_to=last, preset="month")
    assert filters.previous() == Filters(segment="12", date_from=before_first, date_to=before_last)


@pytest.mark.parametrize(
    "filters",
    [Filters(), Filters(date_from=date(2024, 5, 1)), Filters(date_to=date(2024, 5, 1))],
)
def test_an_open_range_has_no_previous_period(filters: Filters) -> None:
    assert filters.previous() is None
