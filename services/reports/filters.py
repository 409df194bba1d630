"""The dashboard's filters, read from and written back to the URL query string.

`?segment=12&product=EQ-LASER-A&manager=5&from=2024-01-01&to=2024-06-30&period=week&portal=abc`.
An empty value means "all" (an HTML form submits `segment=` for "all segments"); parameters
that are not filters (the one-time `token`, the frame session `s`) are not read here; the
session, once checked, is carried along in `Filters.session`.

The follow-up page narrows to one followed action with `action=` (`service`, `marketing`,
`task`, `call_task`); the other pages carry it along without applying it.

The all-ratings page has filters of its own: `category=` (promoter, passive, detractor, or
`none`: not scored), `comment=yes` (answers with a comment), `q=` (a text the comment contains,
case-insensitive), `theme=` (a comment theme of the portal YAML) and `page=` (from 1); the other
pages carry them along without applying them.

`dates=` names a preset range that moves with the days (`7d`, `30d`, `90d`: the last 7, 30 or 90
days up to today; `month`, `quarter`: this month or quarter up to today); it takes the place of
`from` and `to`. A range with both ends has a previous period: the same number of days just
before it, which the summary figures are compared with.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, replace
from datetime import date, datetime, time, timedelta, tzinfo
from typing import Any
from urllib.parse import urlencode

from services.dispatch.read import AskedFilter, FollowupFilter
from services.scoring.read import (
    GRANULARITIES,
    Granularity,
    GroupBy,
    Period,
    RatingsQuery,
    ReportQuery,
)
from shared.dispatch_config import FOLLOWUP_ACTIONS

DEFAULT_PERIOD: Granularity = "month"
MAX_TEXT = 200
MAX_PAGE = 1_000_000
MAX_ID = 2**31 - 1
FIELDS: tuple[str, ...] = (
    "segment",
    "product",
    "manager",
    "dates",
    "from",
    "to",
    "period",
    "portal",
    "action",
    "category",
    "comment",
    "q",
    "theme",
    "page",
    "contact",
    "deal",
)
CATEGORIES: dict[str, str] = {
    "promoter": "promoters",
    "passive": "passives",
    "detractor": "detractors",
    "none": "not scored",
}
"""The all-ratings page's `category=` values and how the filter form names them."""
PRESETS: dict[str, str] = {
    "7d": "last 7 days",
    "30d": "last 30 days",
    "90d": "last 90 days",
    "month": "this month",
    "quarter": "this quarter",
}
"""The date presets (`dates=`) and how the filter form names them."""


def preset_range(preset: str, today: date) -> tuple[date, date]:
    """The first and last day of `preset` (a key of `PRESETS`) on `today`."""
    if preset.endswith("d"):
        return today - timedelta(days=int(preset[:-1]) - 1), today
    if preset == "month":
        return today.replace(day=1), today
    if preset == "quarter":
        return today.replace(month=(today.month - 1) // 3 * 3 + 1, day=1), today
    raise ValueError(f"unknown date preset {preset!r}; expected one of {', '.join(PRESETS)}")


REPORT_PARAMS = ("segment", "product", "manager", "from", "to", "portal", "s")
"""The filters `/api/report` takes (and the frame session, which it accepts too)."""


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
    """The portal chosen by `?portal=`; None: the served one (`served`)."""
    preset: str | None = None
    """The date preset `date_from`..`date_to` came from (kept in links, so they move with the
    days), or None for dates given as they are."""
    action: str | None = None
    """The follow-up page's followed action (the other pages ignore it)."""
    category: str | None = None
    has_comment: bool = False
    search: str | None = None
    theme: str | None = None
    page: int = 1
    """The all-ratings page's filters and page number (the other pages ignore them)."""
    contact: int | None = None
    """All ratings only: one contact's answers (the contact card's tab inside a portal)."""
    deal: int | None = None
    """All ratings only: one deal's answers and its surveys' state (the deal card's tab)."""
    served: str | None = None
    """The key of the portal the deployment serves, read for the request (never in links)."""
    session: str | None = None
    """The frame session (`?s=`, the dashboard inside a portal: `frame_session.py`), kept in
    every link and form so that it travels without cookies; not a filter."""

    @property
    def key(self) -> str | None:
        """The portal every view reads: the chosen one, else the served one (None: no portal is
        known yet)."""
        return self.portal if self.portal is not None else self.served

    def ratings(self, themes: Mapping[str, tuple[str, ...]]) -> RatingsQuery:
        """The all-ratings query of these filters; `themes` gives the theme's words."""
        return RatingsQuery(
            portal=self.key,
            segment=self.segment,
            product=self.product,
            manager=self.manager,
            start=self.date_from,
            end=self.date_to,
            category=self.category,
            has_comment=self.has_comment,
            search=self.search,
            words=None if self.theme is None else themes[self.theme],
            contact=self.contact,
        )

    def asked(self, zone: str) -> AskedFilter:
        """The "Asked" page's selection of dispatch's register: the requests first sent on these
        dates (days in `zone`, the portal's), of this survey (`segment`), product and manager."""
        return AskedFilter(
            portal=self.key,
            survey=self.segment,
            sku=self.product,
            responsible_id=self.manager,
            start=self.date_from,
            end=self.date_to,
            zone=zone,
        )

    def followup(self, zone: tzinfo) -> FollowupFilter:
        """The follow-up page's selection of dispatch's follow-ups: the leads and tasks created
        on these dates (days in `zone`, the portal's), of this action and manager (the answer's
        manager; for a call task the request's responsible)."""
        since = until = None
        if self.date_from is not None:
            since = datetime.combine(self.date_from, time(0), zone)
        if self.date_to is not None:
            until = datetime.combine(self.date_to + timedelta(days=1), time(0), zone)
        return FollowupFilter(
            portal=self.key, action=self.action, manager=self.manager, since=since, until=until
        )

    def previous(self) -> Filters | None:
        """The same filters over the period of the same length just before this one; None
        without both ends of a date range."""
        if self.date_from is None or self.date_to is None:
            return None
        days = self.date_to - self.date_from + timedelta(days=1)
        return replace(
            self, date_from=self.date_from - days, date_to=self.date_to - days, preset=None
        )

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
            portal=self.key,
        )

    def params(self) -> dict[str, str]:
        """The filters that are set, as query parameters (the default period left out; a preset
        instead of the dates it stands for)."""
        return {
            k: v for k, v in self._values().items() if k not in ("from", "to") or not self.preset
        }

    def _values(self) -> dict[str, str]:
        values: dict[str, Any] = {
            "segment": self.segment,
            "product": self.product,
            "manager": self.manager,
            "dates": self.preset,
            "from": self.date_from,
            "to": self.date_to,
            "period": None if self.period == DEFAULT_PERIOD else self.period,
            "portal": self.portal,
            "action": self.action,
            "category": self.category,
            "comment": "yes" if self.has_comment else None,
            "q": self.search,
            "theme": self.theme,
            "page": None if self.page == 1 else self.page,
            "contact": self.contact,
            "deal": self.deal,
            "s": self.session,
        }
        return {key: str(value) for key, value in values.items() if value is not None}

    def query_string(self) -> str:
        """`?segment=…&…` for links that keep the filters, or "" when none is set."""
        params = self.params()
        return "?" + urlencode(params) if params else ""

    def api_url(self, by: GroupBy, period: Period | None = None) -> str:
        """The `/api/report` URL that answers the same rows as `report(by, period)` (a preset's
        dates written out: the API takes dates)."""
        given = self._values()
        params = {"by": by, **{k: v for k, v in given.items() if k in REPORT_PARAMS}}
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


def _entity_id(name: str, raw: str | None, problems: list[str]) -> int | None:
    """A contact's or a deal's id (`name`)."""
    if raw is None:
        return None
    if raw.isascii() and raw.isdigit() and len(raw) <= 10 and 1 <= int(raw) <= MAX_ID:
        return int(raw)
    problems.append(f"{name}: expected a {name} id (a whole number from 1), got {raw[:MAX_TEXT]!r}")
    return None


def _period(raw: str | None, problems: list[str]) -> Granularity:
    if raw is None:
        return DEFAULT_PERIOD
    if raw in GRANULARITIES:
        return raw
    problems.append(f"period: expected one of {', '.join(GRANULARITIES)}, got {raw!r}")
    return DEFAULT_PERIOD


def _preset(raw: str | None, problems: list[str]) -> str | None:
    if raw is None or raw in PRESETS:
        return raw
    problems.append(f"dates: expected one of {', '.join(PRESETS)}, got {raw!r}")
    return None


def _choice(
    name: str, raw: str | None, allowed: Collection[str], problems: list[str]
) -> str | None:
    if raw is None or raw in allowed:
        return raw
    expected = f"one of {', '.join(allowed)}" if allowed else "none (no themes are configured)"
    problems.append(f"{name}: expected {expected}, got {raw[:MAX_TEXT]!r}")
    return None


def _page_number(raw: str | None, problems: list[str]) -> int:
    if raw is None:
        return 1
    if raw.isascii() and raw.isdigit() and 1 <= int(raw) <= MAX_PAGE:
        return int(raw)
    problems.append(f"page: expected a page number from 1 to {MAX_PAGE}, got {raw[:MAX_TEXT]!r}")
    return 1


def parse_filters(params: Mapping[str, str], today: date, themes: Collection[str] = ()) -> Filters:
    """The filters in `params` (a date preset resolved on `today`, the portal's date; `theme`
    one of `themes`); raises `FilterError` naming every parameter that is wrong."""
    raw = {name: params.get(name, "").strip() or None for name in FIELDS}
    problems: list[str] = []
    segment = _text("segment", raw["segment"], problems)
    product = _text("product", raw["product"], problems)
    portal = _text("portal", raw["portal"], problems)
    manager = _manager(raw["manager"], problems)
    date_from = _day("from", raw["from"], problems)
    date_to = _day("to", raw["to"], problems)
    period = _period(raw["period"], problems)
    preset = _preset(raw["dates"], problems)
    action = _choice("action", raw["action"], FOLLOWUP_ACTIONS, problems)
    category = _choice("category", raw["category"], CATEGORIES, problems)
    comment = _choice("comment", raw["comment"], ("yes",), problems)
    search = _text("q", raw["q"], problems)
    theme = _choice("theme", raw["theme"], themes, problems)
    page = _page_number(raw["page"], problems)
    contact = _entity_id("contact", raw["contact"], problems)
    deal = _entity_id("deal", raw["deal"], problems)
    if preset is not None:
        date_from, date_to = preset_range(preset, today)
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
        preset=preset,
        action=action,
        category=category,
        has_comment=comment is not None,
        search=search,
        theme=theme,
        page=page,
        contact=contact,
        deal=deal,
    )
