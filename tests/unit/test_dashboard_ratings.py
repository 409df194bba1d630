"""The all-ratings page's view models and filters as tables: its lines, the CSV cells (formulas
made harmless), the pager, the ratings filters read from and written back to the URL (pure)."""

from __future__ import annotations

import csv
import io
from datetime import UTC, date, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from services.reports.filters import FilterError, Filters, parse_filters
from services.reports.views import (
    CSV_HEADER,
    DASH,
    csv_row,
    csv_text,
    pager,
    rating_lines,
    safe_cell,
)
from services.scoring.read import RatingsQuery, like_pattern

TODAY = date(2026, 12, 6)
ORIGIN = "https://acme.bitrix24.ru"


def record(**overrides: Any) -> dict[str, Any]:
    return {
        "answer_id": "m1:1038:501:EQ-LASER-A",
        "entity_type_id": 1038,
        "item_id": 501,
        "segment": "Laser A",
        "sku": "EQ-LASER-A",
        "product_name": "Laser A",
        "score": 3,
        "category": "detractor",
        "comment": "It stopped heating",
        "service_request": True,
        "contact_id": 42,
        "responsible_id": 7,
        "submitted_at": datetime(2024, 5, 3, 6, 0, tzinfo=UTC),
        **overrides,
    }


@pytest.mark.parametrize(
    ("overrides", "field", "expected"),
    [
        ({}, "answered", "2024-05-03 09:00 MSK"),
        ({}, "item", "item 501"),
        ({}, "item_url", f"{ORIGIN}/crm/type/1038/details/501/"),
        ({"entity_type_id": 2, "item_id": 77}, "item", "deal 77"),
        ({"entity_type_id": 2, "item_id": 77}, "item_url", f"{ORIGIN}/crm/deal/details/77/"),
        ({}, "product", "Laser A (EQ-LASER-A)"),
        ({}, "manager", "Olga Petrova"),
        ({"responsible_id": 9}, "manager", "user 9"),
        ({"responsible_id": None}, "manager", "no manager"),
        ({"score": None, "category": None}, "score", DASH),
        ({"score": None, "category": None}, "category", "not scored"),
        ({"comment": None}, "comment", ""),
        ({}, "sent", DASH),
        ({"answer_id": "m1:1038:7:EQ-LASER-A"}, "sent", "2024-05-01 12:30 MSK"),
        ({}, "contact_url", f"{ORIGIN}/crm/contact/details/42/"),
        ({"contact_id": None}, "contact_url", None),
    ],
)
def test_rating_lines(overrides: dict[str, Any], field: str, expected: object) -> None:
    sent = {"m1:1038:7:EQ-LASER-A": datetime(2024, 5, 1, 9, 30, tzinfo=UTC)}
    (line,) = rating_lines(
        [record(**overrides)], ORIGIN, ZoneInfo("Europe/Moscow"), {7: "Olga Petrova"}, sent
    )
    assert getattr(line, field) == expected


def test_without_a_portal_address_nothing_is_linked() -> None:
    (line,) = rating_lines([record()], None)
    assert (line.item_url, line.contact_url, line.answered) == (None, None, "2024-05-03 06:00 UTC")


@pytest.mark.parametrize(
    ("text", "cell"),
    [
        ('=HYPERLINK("http://evil")', '\'=HYPERLINK("http://evil")'),
        ("+1+2", "'+1+2"),
        ("-3", "'-3"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\t=1", "'\t=1"),
        ("\r=1", "'\r=1"),
        ("fine = good", "fine = good"),
        ("3", "3"),
        ("", ""),
        ("'quoted", "'quoted"),
    ],
)
def test_safe_cell(text: str, cell: str) -> None:
    assert safe_cell(text) == cell


def test_a_csv_row_follows_the_header_and_is_safe() -> None:
    (line,) = rating_lines([record(comment="-broken", contact_id=None)], ORIGIN, UTC, {})
    row = csv_row(line)
    assert dict(zip(CSV_HEADER, row, strict=True)) == {
        "sent": "",
        "answered": "2024-05-03 06:00 UTC",
        "survey": "Laser A",
        "item": "item 501",
        "item link": f"{ORIGIN}/crm/type/1038/details/501/",
        "product": "Laser A (EQ-LASER-A)",
        "score": "3",
        "category": "detractor",
        "service request": "yes",
        "comment": "'-broken",
        "responsible": "user 7",
        "contact": "",
        "contact link": "",
    }
    (unscored,) = rating_lines([record(score=None, category=None, service_request=False)], None)
    assert csv_row(unscored)[6:9] == ["", "not scored", ""]
    sent = {line.answer_id: datetime(2024, 5, 1, 9, 30, tzinfo=UTC)}
    (asked,) = rating_lines([record()], None, UTC, {}, sent)
    assert csv_row(asked)[:2] == ["2024-05-01 09:30 UTC", "2024-05-03 06:00 UTC"]


def test_csv_text_quotes_what_needs_it() -> None:
    rows = [["a,b", 'say "hi"', "two\nlines", "план"]]
    text = csv_text(rows)
    assert text == '"a,b","say ""hi""","two\nlines",план\r\n'
    assert list(csv.reader(io.StringIO(text))) == rows


def link(n: int) -> str:
    return f"/ratings?page={n}"


@pytest.mark.parametrize(
    ("page", "shown", "total", "expected"),
    [
        (1, 0, 0, (0, 0, None, None)),
        (1, 50, 50, (1, 50, None, None)),
        (1, 50, 51, (1, 50, None, link(2))),
        (2, 1, 51, (51, 51, link(1), None)),
        (2, 50, 150, (51, 100, link(1), link(3))),
        (9, 0, 51, (0, 0, link(8), None)),
    ],
)
def test_pager(page: int, shown: int, total: int, expected: tuple[object, ...]) -> None:
    at = pager(page, 50, shown, total, link)
    assert (at.first, at.last, at.previous, at.next) == expected
    assert at.total == total


@pytest.mark.parametrize(
    ("text", "pattern"),
    [
        ("late", "%late%"),
        ("100%", "%100\\%%"),
        ("a_b", "%a\\_b%"),
        ("back\\slash", "%back\\\\slash%"),
    ],
)
def test_like_pattern_takes_wildcards_literally(text: str, pattern: str) -> None:
    assert like_pattern(text) == pattern


THEMES = {"delivery": ("доставк", "courier")}


def test_ratings_filters_are_read_and_written_back() -> None:
    params = {
        "category": "none",
        "comment": "yes",
        "q": "Доставка",
        "theme": "delivery",
        "page": "3",
        "manager": "7",
        "dates": "30d",
    }
    filters = parse_filters(params, TODAY, THEMES)
    assert (filters.category, filters.has_comment, filters.search, filters.theme) == (
        "none",
        True,
        "Доставка",
        "delivery",
    )
    assert filters.page == 3
    assert parse_filters(filters.params(), TODAY, THEMES) == filters
    assert filters.ratings(THEMES) == RatingsQuery(
        manager=7,
        start=date(2026, 11, 7),
        end=TODAY,
        category="none",
        has_comment=True,
        search="Доставка",
        words=("доставк", "courier"),
    )
    assert "category" not in filters.api_url("product")
    assert Filters(page=1).query_string() == ""


@pytest.mark.parametrize(
    ("params", "problem"),
    [
        ({"category": "angry"}, "category: expected one of promoter, passive, detractor, none"),
        ({"comment": "no"}, "comment: expected one of yes, got 'no'"),
        ({"theme": "weather"}, "theme: expected one of delivery, got 'weather'"),
        ({"page": "0"}, "page: expected a page number from 1 to 1000000, got '0'"),
        ({"page": "two"}, "page: expected a page number from 1"),
        ({"page": "\N{ARABIC-INDIC DIGIT ONE}"}, "page: expected a page number from 1"),
        ({"q": "x" * 201}, "q: at most 200 characters"),
    ],
)
def test_bad_ratings_filters_are_named(params: dict[str, str], problem: str) -> None:
    with pytest.raises(FilterError) as raised:
        parse_filters(params, TODAY, THEMES)
    assert any(p.startswith(problem) for p in raised.value.problems), raised.value.problems


def test_without_themes_a_theme_is_refused_by_name() -> None:
    with pytest.raises(FilterError) as raised:
        parse_filters({"theme": "delivery"}, TODAY)
    assert raised.value.problems == [
        "theme: expected none (no themes are configured), got 'delivery'"
    ]
