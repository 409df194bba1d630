"""The dashboard's filters, read from and written back to the URL query string.

`?segment=12&product=EQ-LASER-A&manager=5&from=2024-01-01&to=2024-06-30&period=week&portal=abc`.
An empty value means "all" (an HTML form submits `segment=` for "all segments"); parameters
that are not filters (the one-time `token`) are ignored here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any
from urllib.parse import urlencode

from services.scoring.read import GRANULARITIES, Granularity, GroupBy, Period, ReportQuery

DEFAULT_PERIOD: Granularity = "month"
MAX_TEXT = 200
FIELDS: tuple[str, ...] = ("segment", "product", "manager", "from", "to", "period", "portal")


class FilterError(ValueError):
    """One or more filters that cannot be read; each problem names its parameter."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class Filters:
    """What every view is narrowed to; `period` is the trend's (and sparklines') granularity."""

    segment: str | None = None
    product: str | None = None
    manager: int | None = None
    date_from: date | None = None
    date_to: date | None = None
    period: Granularity = DEFAULT_PERIOD
    portal: str | None = None

    def report(self, by: GroupBy, period: Period | None = None) -> ReportQuery:
        """The report query of these filters, grouped `by` and split by `period` if given."""
        return ReportQuery(
            by=by,
            period=period,
            date_from=self.date_from,
            date_to=self.date_to,
            segment=self.segment,
            product=self.product,
            manager=self.manager,
            portal=self.portal,
        )

    def params(self) -> dict[str, str]:
        """The filters that are set, as query parameters (the default period left out)."""
        values: dict[str, Any] = {
            "segment": self.segment,
            "product": self.product,
            "manager": self.manager,
            "from": self.date_from,
            "to": self.date_to,
            "period": None if self.period == DEFAULT_PERIOD else self.period,
            "portal": self.portal,
        }
        return {key: str(value) for key, value in values.items() if value is not None}

    def query_string(self) -> str:
        """`?segment=…&…` for links that keep the filters, or "" when none is set."""
        params = self.params()
        return "?" + urlencode(params) if params else ""

    def api_url(self, by: GroupBy, period: Period | None = None) -> str:
        """The `/api/report` URL that answers the same rows as `report(by, period)`."""
        params = {"by": by, **{k: v for k, v in self.params().items() if k != "period"}}
        if period is not None:
            params["period"] = period
        return "/api/report?" + urlencode(params)


def _text(name: str, raw: str | None, problems: list[str]) -> str | None:
    if raw is None:
        return None
    if len(raw) > MAX_TEXT:
        problems.append(f"{name}: at most {MAX_TEXT} characters")
        return None
    return raw


def _day(name: str, raw: str | None, problems: list[str]) -> date | None:
    if raw is None:
        return None
    try:
        return date.fromisoformat(raw)
    except ValueError:
        problems.append(f"{name}: expected a date YYYY-MM-DD, got {raw!r}")
        return None


def _manager(raw: str | None, problems: list[str]) -> int | None:
    if raw is None:
        return None
    if raw.isascii() and raw.isdigit() and int(raw) >= 1:
        return int(raw)
    problems.append(f"manager: expected a user id (a whole number from 1), got {raw!r}")
    return None


def _period(raw: str | None, problems: list[str]) -> Granularity:
    if raw is None:
        return DEFAULT_PERIOD
    if raw in GRANULARITIES:
        return raw
    problems.append(f"period: expected one of {', '.join(GRANULARITIES)}, got {raw!r}")
    return DEFAULT_PERIOD


def parse_filters(params: Mapping[str, str]) -> Filters:
    """The filters in `params`; raises `FilterError` naming every parameter that is wrong."""
    raw = {name: params.get(name, "").strip() or None for name in FIELDS}
    problems: list[str] = []
    segment = _text("segment", raw["segment"], problems)
    product = _text("product", raw["product"], problems)
    portal = _text("portal", raw["portal"], problems)
    manager = _manager(raw["manager"], problems)
    date_from = _day("from", raw["from"], problems)
    date_to = _day("to", raw["to"], problems)
    period = _period(raw["period"], problems)
    if date_from and date_to and date_from > date_to:
        problems.append(f"from ({date_from}) is after to ({date_to}); expected from <= to")
    if problems:
        raise FilterError(problems)
    return Filters(
        segment=segment,
        product=product,
        manager=manager,
        date_from=date_from,
        date_to=date_to,
        period=period,
        portal=portal,
    )
