"""Dashboard filters from the URL query string and back, and the report queries they make."""

from __future__ import annotations

from datetime import date

import pytest

from services.reports.filters import FilterError, Filters, parse_filters


def test_no_parameters_means_everything_by_month() -> None:
    assert parse_filters({}) == Filters()
    assert Filters().query_string() == ""


def test_empty_form_fields_mean_all_and_unknown_parameters_are_ignored() -> None:
    params = {"segment": "", "product": " ", "manager": "", "from": "", "to": "", "period": ""}
    assert parse_filters({**params, "token": "secret", "by": "colour"}) == Filters()


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
    filters = parse_filters(params)
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
    assert parse_filters(filters.params()) == filters
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
    ],
)
def test_bad_filters_are_named(params: dict[str, str], problem: str) -> None:
    with pytest.raises(FilterError) as caught:
        parse_filters(params)
    assert any(p.startswith(problem) for p in caught.value.problems), caught.value.problems


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(FilterError) as caught:
        parse_filters({"manager": "x", "from": "y", "period": "z"})
    assert [p.split(":")[0] for p in caught.value.problems] == ["manager", "from", "period"]
