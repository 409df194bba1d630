"""Report periods: bucket starts, ends, labels and sequences."""

from __future__ import annotations

from datetime import date

import pytest

from services.scoring.periods import Granularity, bucket_end, bucket_start, buckets, label

D = date.fromisoformat


@pytest.mark.parametrize(
    ("unit", "day", "start", "end", "name"),
    [
        ("day", "2024-02-29", "2024-02-29", "2024-02-29", "2024-02-29"),
        ("week", "2024-05-08", "2024-05-06", "2024-05-12", "2024-W19"),
        ("week", "2024-05-06", "2024-05-06", "2024-05-12", "2024-W19"),
        ("week", "2024-05-12", "2024-05-06", "2024-05-12", "2024-W19"),
        ("week", "2025-01-01", "2024-12-30", "2025-01-05", "2025-W01"),
        ("week", "2021-01-03", "2020-12-28", "2021-01-03", "2020-W53"),
        ("month", "2024-02-15", "2024-02-01", "2024-02-29", "2024-02"),
        ("month", "2023-12-31", "2023-12-01", "2023-12-31", "2023-12"),
        ("quarter", "2024-01-01", "2024-01-01", "2024-03-31", "2024-Q1"),
        ("quarter", "2024-06-30", "2024-04-01", "2024-06-30", "2024-Q2"),
        ("quarter", "2024-08-10", "2024-07-01", "2024-09-30", "2024-Q3"),
        ("quarter", "2024-12-31", "2024-10-01", "2024-12-31", "2024-Q4"),
        ("year", "2024-07-04", "2024-01-01", "2024-12-31", "2024"),
    ],
)
def test_bucket_of_a_day(unit: Granularity, day: str, start: str, end: str, name: str) -> None:
    assert bucket_start(D(day), unit) == D(start)
    assert bucket_end(D(start), unit) == D(end)
    assert label(D(start), unit) == name


def test_buckets_cover_the_range_including_partial_ends() -> None:
    assert buckets(D("2024-11-15"), D("2025-02-01"), "month") == [
        D("2024-11-01"),
        D("2024-12-01"),
        D("2025-01-01"),
        D("2025-02-01"),
    ]
    assert buckets(D("2024-12-30"), D("2025-01-02"), "day") == [
        D("2024-12-30"),
        D("2024-12-31"),
        D("2025-01-01"),
        D("2025-01-02"),
    ]
    assert [label(s, "quarter") for s in buckets(D("2024-03-31"), D("2024-10-01"), "quarter")] == [
        "2024-Q1",
        "2024-Q2",
        "2024-Q3",
        "2024-Q4",
    ]
    assert buckets(D("2024-05-08"), D("2024-05-20"), "week") == [
        D("2024-05-06"),
        D("2024-05-13"),
        D("2024-05-20"),
    ]
    assert buckets(D("2023-06-01"), D("2024-01-01"), "year") == [D("2023-01-01"), D("2024-01-01")]


def test_single_bucket_and_empty_range() -> None:
    assert buckets(D("2024-05-08"), D("2024-05-08"), "year") == [D("2024-01-01")]
    assert buckets(D("2024-05-08"), D("2024-04-08"), "day") == []
