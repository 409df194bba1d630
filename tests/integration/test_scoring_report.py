"""NPS reports on the real PostgreSQL, checked against a hand-computed example.

The example portal (0-10 scale; days are the portal's local days, +03:00). Current answers after
the updates below, as (item, product, score, manager, day):

    1 SERUM 10 mgr 5 2024-01-15  P      (version 2: CREAM 6 unticked → retracted)
    2 SERUM  9 mgr 7 2024-01-16  P      (CREAM skipped)
    3 LASER  3 mgr 5 2024-02-03  D      (an older version with 10 arrives late: ignored)
    4 LASER  9 mgr 7 2024-02-20  P      (version 1 said 8)
    5 LASER 10 none  2024-04-02  P
    6 CRYO   0 mgr 7 2024-04-10  D
    7 SERUM  7 mgr 5 2025-01-01  Pa     (01:30 +03:00: still 2024-12-31 in UTC)
    8 CREAM  8 mgr 7 2024-03-05  Pa,  SERUM 9 P

Totals: 9 answers, P5 Pa2 D2, NPS (5-2)/9 = 33.3, average 65/9 = 7.22. Reports by period or
manager add up equipment answers only (items 3-6: P2 D2, NPS 0.0, average 22/4 = 5.5) and note
how many cosmetics answers each row left out.
"""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
import pytest

from services.scoring.handlers import score_submission
from services.scoring.nps import DEFAULT_MIN_ANSWERS, nps_margin
from services.scoring.report import (
    COSMETICS_NOTE,
    ReportQuery,
    _parts,
    cosmetics_left_out_note,
    run_report,
)
from shared.outbox import Outbox
from tests.support.cosmetics import LEFT_OUT, PER_PRODUCT, score_the_check
from tests.support.scoring import make_submission

COSMETICS = {"kind": "cosmetics", "category_id": 10, "segment": "Cosmetics"}
LASER = {"kind": "equipment", "category_id": 12, "segment": "Laser A"}
CRYO = {"kind": "equipment", "category_id": 14, "segment": "Cryo B"}


@pytest.fixture(scope="module")
async def portal(pool: asyncpg.Pool) -> str:
    member = f"m-report-{uuid.uuid4().hex[:10]}"

    async def submit(
        item: int, segment: dict[str, Any], manager: int | None, at: str, *scores: Any, **kw: Any
    ) -> None:
        await score_submission(
            pool,
            Outbox(),
            make_submission(
                *scores,
                item_id=item,
                member_id=member,
                responsible_id=manager,
                submitted_at=at,
                updated_at=kw.pop("updated_at", at),
                **segment,
                **kw,
            ),
        )

    await submit(1, COSMETICS, 5, "2024-01-15T10:00:00+03:00", ("SERUM", 10), ("CREAM", 6))
    await submit(
        1,
        COSMETICS,
        5,
        "2024-01-15T10:00:00+03:00",
        ("SERUM", 10),
        updated_at="2024-01-20T10:00:00+03:00",
    )
    await submit(2, COSMETICS, 7, "2024-01-16T10:00:00+03:00", ("SERUM", 9), ("CREAM", None))
    await submit(
        3, LASER, 5, "2024-02-03T10:00:00+03:00", ("LASER", 3), updated_at="2024-02-04T10:00:00Z"
    )
    await submit(
        3, LASER, 5, "2024-02-03T10:00:00+03:00", ("LASER", 10), updated_at="2024-02-03T10:00:00Z"
    )
    await submit(4, LASER, 7, "2024-02-20T10:00:00+03:00", ("LASER", 8))
    await submit(
        4, LASER, 7, "2024-02-20T10:00:00+03:00", ("LASER", 9), updated_at="2024-02-21T10:00:00Z"
    )
    await submit(5, LASER, None, "2024-04-02T10:00:00+03:00", ("LASER", 10))
    await submit(6, CRYO, 7, "2024-04-10T10:00:00+03:00", ("CRYO", 0))
    await submit(7, COSMETICS, 5, "2025-01-01T01:30:00+03:00", ("SERUM", 7))
    await submit(8, COSMETICS, 7, "2024-03-05T10:00:00+03:00", ("CREAM", 8), ("SERUM", 9))
    return member


def stats(nps: float | None, p: int, pa: int, d: int, avg: float | None) -> dict[str, Any]:
    answers = p + pa + d
    return {
        "nps": nps,
        "margin": None if nps is None else nps_margin(p, d, answers),
        "few_answers": 0 < answers < DEFAULT_MIN_ANSWERS,
        "promoters": p,
        "passives": pa,
        "detractors": d,
        "answers": p + pa + d,
        "avg_score": avg,
    }


EMPTY = stats(None, 0, 0, 0, None)


def noted(counts: dict[str, Any], cosmetics: int = 0) -> dict[str, Any]:
    """A row of a report by period or manager: `counts`, and the note of the cosmetics answers
    it left out (None when it left none out)."""
    return {**counts, "note": cosmetics_left_out_note(cosmetics) if cosmetics else None}


async def report(pool: asyncpg.Pool, portal: str, **query: Any) -> list[dict[str, Any]]:
    async with pool.acquire() as conn:
        rows = await run_report(conn, ReportQuery(portal=portal, **query))
    return [row.as_dict() for row in rows]


def period(name: str, start: str, end: str) -> dict[str, str]:
    return {"period": name, "period_start": start, "period_end": end}


async def test_by_product(pool: asyncpg.Pool, portal: str) -> None:
    assert await report(pool, portal, by="product") == [
        {"sku": "CREAM", "name": "cream", **stats(0.0, 0, 1, 0, 8.0)},
        {"sku": "CRYO", "name": "cryo", **stats(-100.0, 0, 0, 1, 0.0)},
        {"sku": "LASER", "name": "laser", **stats(33.3, 2, 0, 1, 7.33)},
        {"sku": "SERUM", "name": "serum", **stats(75.0, 3, 1, 0, 8.75)},
    ]


async def test_by_segment_withholds_cosmetics_nps(pool: asyncpg.Pool, portal: str) -> None:
    assert await report(pool, portal, by="segment") == [
        {
            "segment": "Cosmetics",
            "category_id": 10,
            "kind": "cosmetics",
            **stats(None, 3, 2, 0, None),
            "note": COSMETICS_NOTE,
        },
        {
            "segment": "Laser A",
            "category_id": 12,
            "kind": "equipment",
            **stats(33.3, 2, 0, 1, 7.33),
            "note": None,
        },
        {
            "segment": "Cryo B",
            "category_id": 14,
            "kind": "equipment",
            **stats(-100.0, 0, 0, 1, 0.0),
            "note": None,
        },
    ]


async def test_by_manager(pool: asyncpg.Pool, portal: str) -> None:
    assert await report(pool, portal, by="manager") == [
        {"manager_id": 5, **noted(stats(-100.0, 0, 0, 1, 3.0), 2)},
        {"manager_id": 7, **noted(stats(0.0, 1, 0, 1, 4.5), 3)},
        {"manager_id": None, **noted(stats(100.0, 1, 0, 0, 10.0))},
    ]


async def test_by_month_is_the_default_trend_with_empty_months(
    pool: asyncpg.Pool, portal: str
) -> None:
    rows = await report(pool, portal, by="period")
    assert rows == await report(pool, portal, by="period", period="month")
    assert [row["period"] for row in rows] == [f"2024-{m:02d}" for m in range(1, 13)] + ["2025-01"]
    by_name = {row["period"]: row for row in rows}
    assert by_name["2024-01"] == {
        **period("2024-01", "2024-01-01", "2024-01-31"),
        **noted(EMPTY, 2),
    }
    assert by_name["2024-02"] == {
        **period("2024-02", "2024-02-01", "2024-02-29"),
        **noted(stats(0.0, 1, 0, 1, 6.0)),
    }
    assert by_name["2024-03"] == {
        **period("2024-03", "2024-03-01", "2024-03-31"),
        **noted(EMPTY, 2),
    }
    assert by_name["2024-04"] == {
        **period("2024-04", "2024-04-01", "2024-04-30"),
        **noted(stats(0.0, 1, 0, 1, 5.0)),
    }
    assert by_name["2024-07"] == {**period("2024-07", "2024-07-01", "2024-07-31"), **noted(EMPTY)}
    assert by_name["2025-01"] == {
        **period("2025-01", "2025-01-01", "2025-01-31"),
        **noted(EMPTY, 1),
    }


async def test_by_quarter_and_year(pool: asyncpg.Pool, portal: str) -> None:
    assert await report(pool, portal, by="period", period="quarter") == [
        {**period("2024-Q1", "2024-01-01", "2024-03-31"), **noted(stats(0.0, 1, 0, 1, 6.0), 4)},
        {**period("2024-Q2", "2024-04-01", "2024-06-30"), **noted(stats(0.0, 1, 0, 1, 5.0))},
        {**period("2024-Q3", "2024-07-01", "2024-09-30"), **noted(EMPTY)},
        {**period("2024-Q4", "2024-10-01", "2024-12-31"), **noted(EMPTY)},
        {**period("2025-Q1", "2025-01-01", "2025-03-31"), **noted(EMPTY, 1)},
    ]
    assert await report(pool, portal, by="period", period="year") == [
        {**period("2024", "2024-01-01", "2024-12-31"), **noted(stats(0.0, 2, 0, 2, 5.5), 4)},
        {**period("2025", "2025-01-01", "2025-12-31"), **noted(EMPTY, 1)},
    ]


async def test_by_week(pool: asyncpg.Pool, portal: str) -> None:
    rows = await report(pool, portal, by="period", period="week")
    assert rows[0] == {**period("2024-W03", "2024-01-15", "2024-01-21"), **noted(EMPTY, 2)}
    assert rows[-1] == {**period("2025-W01", "2024-12-30", "2025-01-05"), **noted(EMPTY, 1)}
    assert len(rows) == 51
    by_name = {row["period"]: row for row in rows}
    assert by_name["2024-W05"] == {
        **period("2024-W05", "2024-01-29", "2024-02-04"),
        **noted(stats(-100.0, 0, 0, 1, 3.0)),
    }
    assert by_name["2024-W04"] == {
        **period("2024-W04", "2024-01-22", "2024-01-28"),
        **noted(EMPTY),
    }


async def test_by_day_within_a_range(pool: asyncpg.Pool, portal: str) -> None:
    rows = await report(
        pool, portal, by="period", period="day", date_from="2024-01-14", date_to="2024-01-17"
    )
    assert rows == [
        {**period("2024-01-14", "2024-01-14", "2024-01-14"), **noted(EMPTY)},
        {**period("2024-01-15", "2024-01-15", "2024-01-15"), **noted(EMPTY, 1)},
        {**period("2024-01-16", "2024-01-16", "2024-01-16"), **noted(EMPTY, 1)},
        {**period("2024-01-17", "2024-01-17", "2024-01-17"), **noted(EMPTY)},
    ]


async def test_custom_range_is_one_row(pool: asyncpg.Pool, portal: str) -> None:
    assert await report(
        pool, portal, by="period", date_from="2024-02-01", date_to="2024-04-05"
    ) == [
        {
            **period("2024-02-01..2024-04-05", "2024-02-01", "2024-04-05"),
            **noted(stats(33.3, 2, 0, 1, 7.33), 2),
        }
    ]
    assert await report(pool, portal, by="period", period="range") == [
        {"period": "all", "period_start": None, "period_end": None}
        | noted(stats(0.0, 2, 0, 2, 5.5), 5)
    ]
    assert await report(pool, portal, by="period", date_from="2024-12-01") == [
        {"period": "2024-12-01..", "period_start": "2024-12-01", "period_end": None}
        | noted(EMPTY, 1)
    ]


async def test_month_buckets_are_clipped_to_the_range(pool: asyncpg.Pool, portal: str) -> None:
    assert await report(
        pool, portal, by="period", period="month", date_from="2024-01-16", date_to="2024-02-10"
    ) == [
        {**period("2024-01", "2024-01-16", "2024-01-31"), **noted(EMPTY, 1)},
        {**period("2024-02", "2024-02-01", "2024-02-10"), **noted(stats(-100.0, 0, 0, 1, 3.0))},
    ]


async def test_product_trend_by_quarter(pool: asyncpg.Pool, portal: str) -> None:
    rows = await report(pool, portal, by="product", period="quarter")
    assert len(rows) == 4 * 5
    serum = [row for row in rows if row["sku"] == "SERUM"]
    assert serum == [
        {
            "sku": "SERUM",
            "name": "serum",
            **period("2024-Q1", "2024-01-01", "2024-03-31"),
            **stats(100.0, 3, 0, 0, 9.33),
        },
        {"sku": "SERUM", "name": "serum", **period("2024-Q2", "2024-04-01", "2024-06-30"), **EMPTY},
        {"sku": "SERUM", "name": "serum", **period("2024-Q3", "2024-07-01", "2024-09-30"), **EMPTY},
        {"sku": "SERUM", "name": "serum", **period("2024-Q4", "2024-10-01", "2024-12-31"), **EMPTY},
        {
            "sku": "SERUM",
            "name": "serum",
            **period("2025-Q1", "2025-01-01", "2025-03-31"),
            **stats(0.0, 0, 1, 0, 7.0),
        },
    ]


@pytest.mark.parametrize("segment", ["12", "laser a", "Laser A"])
async def test_filter_by_segment_id_or_name(pool: asyncpg.Pool, portal: str, segment: str) -> None:
    assert await report(pool, portal, by="product", segment=segment) == [
        {"sku": "LASER", "name": "laser", **stats(33.3, 2, 0, 1, 7.33)}
    ]


async def test_filter_by_product(pool: asyncpg.Pool, portal: str) -> None:
    """One product's answers: its NPS, cosmetics or not."""
    assert await report(pool, portal, by="manager", product="SERUM") == [
        {"manager_id": 5, **noted(stats(50.0, 1, 1, 0, 8.5))},
        {"manager_id": 7, **noted(stats(100.0, 2, 0, 0, 9.0))},
    ]


async def test_manager_reports_on_single_days(pool: asyncpg.Pool, portal: str) -> None:
    """Not on month boundaries: read from the answers rather than the monthly rollup."""
    assert await report(
        pool, portal, by="manager", date_from="2024-01-16", date_to="2024-02-25"
    ) == [
        {"manager_id": 5, **noted(stats(-100.0, 0, 0, 1, 3.0))},
        {"manager_id": 7, **noted(stats(100.0, 1, 0, 0, 9.0), 1)},
    ]
    assert await report(
        pool, portal, by="manager", date_from="2024-04-01", date_to="2024-04-05"
    ) == [{"manager_id": None, **noted(stats(100.0, 1, 0, 0, 10.0))}]
    assert await report(
        pool,
        portal,
        by="period",
        period="day",
        manager=7,
        date_from="2024-02-19",
        date_to="2024-02-21",
    ) == [
        {**period("2024-02-19", "2024-02-19", "2024-02-19"), **noted(EMPTY)},
        {**period("2024-02-20", "2024-02-20", "2024-02-20"), **noted(stats(100.0, 1, 0, 0, 9.0))},
        {**period("2024-02-21", "2024-02-21", "2024-02-21"), **noted(EMPTY)},
    ]
    weekly = await report(pool, portal, by="manager", period="week", product="LASER")
    assert [(r["manager_id"], r["period"]) for r in weekly if r["answers"]] == [
        (5, "2024-W05"),
        (7, "2024-W08"),
        (None, "2024-W14"),
    ]


async def test_manager_reports_over_whole_months_agree_with_single_days(
    pool: asyncpg.Pool, portal: str
) -> None:
    whole = await report(pool, portal, by="manager", date_from="2024-01-01", date_to="2024-03-31")
    days = await report(pool, portal, by="manager", date_from="2024-01-01", date_to="2024-03-30")
    assert (
        whole
        == days
        == [
            {"manager_id": 5, **noted(stats(-100.0, 0, 0, 1, 3.0), 1)},
            {"manager_id": 7, **noted(stats(100.0, 1, 0, 0, 9.0), 3)},
        ]
    )


async def test_manager_report_with_partial_months_at_both_ends(
    pool: asyncpg.Pool, portal: str
) -> None:
    """Whole February and March from the monthly rollup, 16-31 January and 1-5 April by day."""
    assert await report(
        pool, portal, by="manager", date_from="2024-01-16", date_to="2024-04-05"
    ) == [
        {"manager_id": 5, **noted(stats(-100.0, 0, 0, 1, 3.0))},
        {"manager_id": 7, **noted(stats(100.0, 1, 0, 0, 9.0), 3)},
        {"manager_id": None, **noted(stats(100.0, 1, 0, 0, 10.0))},
    ]
    monthly = await report(
        pool, portal, by="manager", period="month", date_from="2024-01-16", date_to="2024-04-05"
    )
    assert [(r["manager_id"], r["period"], r["period_start"], r["nps"]) for r in monthly] == [
        (5, "2024-01", "2024-01-16", None),
        (5, "2024-02", "2024-02-01", -100.0),
        (5, "2024-03", "2024-03-01", None),
        (5, "2024-04", "2024-04-01", None),
        (7, "2024-01", "2024-01-16", None),
        (7, "2024-02", "2024-02-01", 100.0),
        (7, "2024-03", "2024-03-01", None),
        (7, "2024-04", "2024-04-01", None),
        (None, "2024-01", "2024-01-16", None),
        (None, "2024-02", "2024-02-01", None),
        (None, "2024-03", "2024-03-01", None),
        (None, "2024-04", "2024-04-01", 100.0),
    ]
    assert await report(pool, portal, by="manager", date_from="2024-01-20") == [
        {"manager_id": 5, **noted(stats(-100.0, 0, 0, 1, 3.0), 1)},
        {"manager_id": 7, **noted(stats(0.0, 1, 0, 1, 4.5), 2)},
        {"manager_id": None, **noted(stats(100.0, 1, 0, 0, 10.0))},
    ]


async def test_manager_by_week_with_partial_weeks_at_both_ends(
    pool: asyncpg.Pool, portal: str
) -> None:
    """Tuesday 16 January to Tuesday 5 March 2024: the whole weeks 22 January - 3 March come from
    the weekly rollup, 16-21 January and 4-5 March from the answers. Manager 5's answer of Monday
    15 January shares its week with manager 7's of the 16th but is outside the range."""
    edges = {"by": "manager", "period": "week", "date_from": "2024-01-16", "date_to": "2024-03-05"}
    plan = [
        (part.source.table, str(part.start), str(part.end))
        for part in _parts(ReportQuery.model_validate(edges))
    ]
    assert plan == [
        ("scoring_manager_weekly", "2024-01-22", "2024-03-03"),
        ("scoring_answers", "2024-01-16", "2024-01-21"),
        ("scoring_answers", "2024-03-04", "2024-03-05"),
    ]
    weeks = [
        period("2024-W03", "2024-01-16", "2024-01-21"),
        period("2024-W04", "2024-01-22", "2024-01-28"),
        period("2024-W05", "2024-01-29", "2024-02-04"),
        period("2024-W06", "2024-02-05", "2024-02-11"),
        period("2024-W07", "2024-02-12", "2024-02-18"),
        period("2024-W08", "2024-02-19", "2024-02-25"),
        period("2024-W09", "2024-02-26", "2024-03-03"),
        period("2024-W10", "2024-03-04", "2024-03-05"),
    ]
    manager_5 = {"2024-W05": noted(stats(-100.0, 0, 0, 1, 3.0))}  # LASER 3 on 3 February
    manager_7 = {
        "2024-W03": noted(EMPTY, 1),  # SERUM 9 on 16 January (left edge)
        "2024-W08": noted(stats(100.0, 1, 0, 0, 9.0)),  # LASER 9 on 20 February (rollup)
        "2024-W10": noted(EMPTY, 2),  # CREAM 8 and SERUM 9 on 5 March (right edge)
    }
    assert await report(pool, portal, **edges) == [
        {"manager_id": manager, **week, **counts.get(week["period"], noted(EMPTY))}
        for manager, counts in ((5, manager_5), (7, manager_7))
        for week in weeks
    ]
    # Monday 4 March alone at the right edge: the answers of the 5th are left out.
    to_monday = await report(pool, portal, **{**edges, "date_to": "2024-03-04"})
    monday = period("2024-W10", "2024-03-04", "2024-03-04")
    assert to_monday[-1] == {"manager_id": 7, **monday, **noted(EMPTY)}
    # Within one week there is no whole week: the answers alone.
    assert await report(
        pool, portal, by="manager", period="week", date_from="2024-01-16", date_to="2024-01-20"
    ) == [
        {"manager_id": 7, **period("2024-W03", "2024-01-16", "2024-01-20"), **manager_7["2024-W03"]}
    ]


async def test_filter_by_manager(pool: asyncpg.Pool, portal: str) -> None:
    rows = await report(pool, portal, by="segment", manager=7)
    assert [(row["segment"], row["nps"], row["answers"], row["avg_score"]) for row in rows] == [
        ("Cosmetics", None, 3, None),
        ("Laser A", 100.0, 1, 9.0),
        ("Cryo B", -100.0, 1, 0.0),
    ]


async def test_filter_by_date_range(pool: asyncpg.Pool, portal: str) -> None:
    assert await report(
        pool, portal, by="product", date_from="2024-02-01", date_to="2024-03-31"
    ) == [
        {"sku": "CREAM", "name": "cream", **stats(0.0, 0, 1, 0, 8.0)},
        {"sku": "LASER", "name": "laser", **stats(0.0, 1, 0, 1, 6.0)},
        {"sku": "SERUM", "name": "serum", **stats(100.0, 1, 0, 0, 9.0)},
    ]
    assert await report(pool, portal, by="product", date_from="2025-01-01") == [
        {"sku": "SERUM", "name": "serum", **stats(0.0, 0, 1, 0, 7.0)}
    ]


async def test_filters_combine(pool: asyncpg.Pool, portal: str) -> None:
    assert await report(
        pool,
        portal,
        by="period",
        period="year",
        segment="Cosmetics",
        manager=5,
        date_to="2024-12-31",
    ) == [{**period("2024", "2024-01-01", "2024-12-31"), **noted(EMPTY, 1)}]


async def test_portal_filter_isolates_portals(pool: asyncpg.Pool, portal: str) -> None:
    assert await report(pool, f"{portal}-other", by="product") == []
    assert await report(pool, f"{portal}-other", by="period") == []
    everything = await report(pool, portal, by="product")
    assert sum(row["answers"] for row in everything) == 9


async def test_nothing_matches(pool: asyncpg.Pool, portal: str) -> None:
    assert await report(pool, portal, by="manager", product="NOPE") == []
    assert await report(
        pool, portal, by="period", period="day", date_from="2030-01-01", date_to="2030-01-02"
    ) == [
        {**period("2030-01-01", "2030-01-01", "2030-01-01"), **noted(EMPTY)},
        {**period("2030-01-02", "2030-01-02", "2030-01-02"), **noted(EMPTY)},
    ]


@pytest.fixture(scope="module")
async def check_portal(pool: asyncpg.Pool) -> str:
    member = f"m-check-{uuid.uuid4().hex[:10]}"
    await score_the_check(pool, member)
    return member


@pytest.mark.parametrize(
    "query",
    [
        {"by": "period"},
        {"by": "period", "period": "range"},
        {"by": "period", "period": "day"},
        {"by": "manager"},
        {"by": "manager", "period": "week"},
        {"by": "manager", "date_from": "2024-05-02", "date_to": "2024-05-02"},
    ],
    ids=["period", "range", "day", "manager", "manager-weekly", "manager-one-day"],
)
async def test_the_cosmetics_check_has_no_aggregate_nps(
    pool: asyncpg.Pool, check_portal: str, query: dict[str, Any]
) -> None:
    rows = await report(pool, check_portal, **query)
    assert [row["note"] for row in rows if row["note"]] == [LEFT_OUT]
    assert all(row["nps"] is None and row["answers"] == 0 for row in rows)


async def test_the_cosmetics_check_by_segment_and_product(
    pool: asyncpg.Pool, check_portal: str
) -> None:
    [segment] = await report(pool, check_portal, by="segment")
    assert (segment["nps"], segment["answers"], segment["note"]) == (None, 5, COSMETICS_NOTE)
    products = await report(pool, check_portal, by="product")
    assert {row["sku"]: row["nps"] for row in products} == PER_PRODUCT
    trend = await report(pool, check_portal, by="period", product="COS-SERUM")
    assert [(row["nps"], row["answers"], row["note"]) for row in trend] == [(0.0, 2, None)]
