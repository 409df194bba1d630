"""Report query validation and the table shown to people (no database needed)."""

from __future__ import annotations

from datetime import date

import pytest
from pydantic import ValidationError

from services.scoring.nps import NpsAggregate
from services.scoring.report import COSMETICS_NOTE, ReportQuery, ReportRow, render_table


def test_from_after_to_is_rejected_with_both_dates() -> None:
    with pytest.raises(ValidationError, match=r"from \(2024-06-01\) is after to \(2024-05-01\)"):
        ReportQuery(date_from=date(2024, 6, 1), date_to=date(2024, 5, 1))


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"by": "colour"}, "by"),
        ({"period": "fortnight"}, "period"),
        ({"manager": 0}, "manager"),
        ({"segment": ""}, "segment"),
        ({"sku": "X"}, "sku"),
    ],
)
def test_invalid_query_names_the_field(query: dict[str, object], field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        ReportQuery.model_validate(query)
    assert [error["loc"][0] for error in caught.value.errors()] == [field]


@pytest.mark.parametrize(
    ("query", "period"),
    [
        ({"by": "period"}, "month"),
        ({"by": "period", "date_from": "2024-01-01"}, "range"),
        ({"by": "period", "date_to": "2024-01-01"}, "range"),
        ({"by": "period", "period": "week", "date_from": "2024-01-01"}, "week"),
        ({"by": "product"}, None),
        ({"by": "product", "date_from": "2024-01-01"}, None),
        ({"by": "manager", "period": "quarter"}, "quarter"),
    ],
)
def test_effective_period(query: dict[str, object], period: str | None) -> None:
    assert ReportQuery.model_validate(query).effective_period == period


@pytest.mark.parametrize(
    ("query", "equipment_only"),
    [
        ({"by": "period"}, True),
        ({"by": "manager"}, True),
        ({"by": "manager", "segment": "Cosmetics"}, True),
        ({"by": "period", "product": "COS-SERUM"}, False),
        ({"by": "manager", "product": "COS-SERUM"}, False),
        ({"by": "segment"}, False),
        ({"by": "product"}, False),
    ],
)
def test_reports_over_several_products_leave_cosmetics_out(
    query: dict[str, object], equipment_only: bool
) -> None:
    assert ReportQuery.model_validate(query).equipment_only is equipment_only


def test_cosmetics_segment_row_withholds_nps_and_average() -> None:
    stats = NpsAggregate(promoters=2, passives=1, detractors=1, score_sum=30)
    keys = {"segment": "Cosmetics", "category_id": 10, "kind": "cosmetics"}
    row = ReportRow(keys, stats, COSMETICS_NOTE, withheld=True).as_dict()
    assert row == {
        **keys,
        "nps": None,
        "margin": None,
        "few_answers": True,
        "promoters": 2,
        "passives": 1,
        "detractors": 1,
        "answers": 4,
        "avg_score": None,
        "note": COSMETICS_NOTE,
    }
    assert ReportRow({"sku": "A", "name": "a"}, stats).as_dict()["nps"] == 25.0


@pytest.mark.parametrize(
    ("stats", "min_answers", "margin", "few"),
    [
        (NpsAggregate(1, 3, 3, 40), 30, 51.8, True),  # -28.6 from 7 answers
        (NpsAggregate(1, 3, 3, 40), 7, 51.8, False),  # a threshold of 7 trusts it
        (NpsAggregate(50, 20, 30, 750), 30, 17.1, False),
        (NpsAggregate(), 30, None, False),  # no answers: nothing to mark
    ],
)
def test_row_says_how_sure_its_nps_is(
    stats: NpsAggregate, min_answers: int, margin: float | None, few: bool
) -> None:
    row = ReportRow({"sku": "A", "name": "a"}, stats).as_dict(min_answers)
    assert (row["margin"], row["few_answers"]) == (margin, few)


def test_table_for_people() -> None:
    rows = [
        ReportRow({"sku": "EQ-LASER-A", "name": "Laser A"}, NpsAggregate(2, 0, 1, 22)).as_dict(),
        ReportRow({"sku": "COS-SERUM", "name": "Serum"}, NpsAggregate()).as_dict(),
    ]
    assert render_table(rows, "product", 30).splitlines() == [
        "sku         name       nps  margin  promoters  passives  detractors  answers  avg_score",
        "----------  -------  -----  ------  ---------  --------  ----------  -------  ---------",
        "EQ-LASER-A  Laser A  33.3*  ±106.7          2         0           1        3       7.33",
        "COS-SERUM   Serum        -       -          0         0           0        0          -",
        "* fewer than 30 answers: too few to rely on",
    ]


def test_table_without_few_answers_has_no_mark() -> None:
    rows = [ReportRow({"sku": "A", "name": "a"}, NpsAggregate(2, 0, 1, 22)).as_dict(3)]
    lines = render_table(rows, "product", 3).splitlines()
    assert lines[-1].split() == ["A", "a", "33.3", "±106.7", "2", "0", "1", "3", "7.33"]


def test_table_shows_period_and_note_columns() -> None:
    keys = {"segment": "Cosmetics", "category_id": 10, "kind": "cosmetics", "period": "2024-Q1"}
    row = ReportRow(keys, NpsAggregate(1, 0, 0, 9), COSMETICS_NOTE).as_dict(1)
    header, _rule, line = render_table([row], "segment", 1).splitlines()
    assert header.split() == [
        "segment",
        "kind",
        "period",
        "nps",
        "margin",
        "promoters",
        "passives",
        "detractors",
        "answers",
        "avg_score",
        "note",
    ]
    assert line.startswith("Cosmetics  cosmetics  2024-Q1")
    assert line.endswith(COSMETICS_NOTE)


def test_empty_table() -> None:
    assert render_table([], "manager") == "no answers match"
