"""Report periods: calendar buckets (day, ISO week, month, quarter, year), their labels and ranges.

Pure. Weeks start on Monday and are labelled by ISO week (`2025-W01` may start in December).
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Literal, get_args

Granularity = Literal["day", "week", "month", "quarter", "year"]
Period = Literal["day", "week", "month", "quarter", "year", "range"]
GRANULARITIES: tuple[Granularity, ...] = get_args(Granularity)
PERIODS: tuple[Period, ...] = get_args(Period)


def bucket_start(day: date, unit: Granularity) -> date:
    """The first day of the `unit` that contains `day`."""
    if unit == "day":
        return day
    if unit == "week":
        return day - timedelta(days=day.weekday())
    if unit == "month":
        return day.replace(day=1)
    if unit == "quarter":
        return date(day.year, 3 * ((day.month - 1) // 3) + 1, 1)
    return date(day.year, 1, 1)


def next_bucket(start: date, unit: Granularity) -> date:
    """The first day of the bucket after the one starting at `start`."""
    if unit == "day":
        return start + timedelta(days=1)
    if unit == "week":
        return start + timedelta(days=7)
    months = {"month": 1, "quarter": 3, "year": 12}[unit]
    index = start.year * 12 + start.month - 1 + months
    return date(index // 12, index % 12 + 1, 1)


def bucket_end(start: date, unit: Granularity) -> date:
    """The last day (inclusive) of the bucket starting at `start`."""
    return next_bucket(start, unit) - timedelta(days=1)


def label(start: date, unit: Granularity) -> str:
    """How a bucket is named in reports: 2024-05-06, 2024-W19, 2024-05, 2024-Q2, 2024."""
    if unit == "day":
        return start.isoformat()
    if unit == "week":
        iso = start.isocalendar()
        return f"{iso.year}-W{iso.week:02d}"
    if unit == "month":
        return f"{start.year}-{start.month:02d}"
    if unit == "quarter":
        return f"{start.year}-Q{(start.month - 1) // 3 + 1}"
    return str(start.year)


def buckets(first: date, last: date, unit: Granularity) -> list[date]:
    """The starts of every bucket from the one holding `first` to the one holding `last`."""
    starts: list[date] = []
    current, stop = bucket_start(first, unit), bucket_start(last, unit)
    while current <= stop:
        starts.append(current)
        current = next_bucket(current, unit)
    return starts
