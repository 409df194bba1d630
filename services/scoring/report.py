"""NPS reports (docs/scoring.md): grouped by product, segment, responsible manager or period,
filtered by segment, product, manager, portal and date range, optionally split by period (the
trend).

Reports read the smallest table that can answer them (migrations 0200, 0202):
- no manager in the report (neither grouped nor filtered): the rollup `scoring_daily`, one row per
  portal, segment, product and day, whatever the number of answers;
- a manager report split by week: the rollup `scoring_manager_weekly` (per portal, segment,
  product, manager and ISO week) for the whole weeks, the answers for partial weeks at the edges;
- a manager report split by day: the current scored answers through covering indexes;
- any other manager report: the rollup `scoring_manager_monthly` (per portal, segment, product,
  manager and month) for the whole months, the answers for partial months at the edges.
WHERE clauses are assembled from a fixed set of conditions; every value is a `$n` parameter.
Queries run in a read-only transaction with JIT compilation off (it costs more than it saves here).

Rules from the customer: cosmetics get no NPS over several of their products (a different number
of products per answer makes it meaningless); their NPS is per product. So:
- by product (or any report filtered to one product): every product, cosmetics included;
- by segment: a cosmetics segment's row has its counts, but `nps` and `avg_score` are null with a
  `note`;
- by period or manager (aggregates over products): equipment answers only; a row that left
  cosmetics answers out says so, and how many, in its `note`.
Equipment rows carry the average score (sum of scores / number of answers). `render_table` is the
plain-text table of the rows that `nps report` and the demo print.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, model_validator

from services.scoring.answers import NO_MANAGER
from services.scoring.nps import DEFAULT_MIN_ANSWERS, NpsAggregate, too_few_answers
from services.scoring.periods import (
    Granularity,
    Period,
    bucket_end,
    bucket_start,
    buckets,
    label,
    next_bucket,
)
from shared.db import Conn

GroupBy = Literal["product", "segment", "manager", "period"]
GROUPINGS: tuple[GroupBy, ...] = get_args(GroupBy)
COSMETICS_NOTE = "cosmetics: no segment-wide NPS (answers hold several products); see by product"
_COSMETICS_SQL = (
    "EXISTS (SELECT 1 FROM scoring_segments s WHERE s.portal = d.portal"
    " AND s.category_id = d.category_id AND s.kind = 'cosmetics')"
)


def cosmetics_left_out_note(answers: int) -> str:
    """The note of an aggregate row that left `answers` cosmetics product answers out."""
    return (
        f"equipment only: {answers} cosmetics answers left out (no NPS across cosmetics"
        " products); see by product"
    )


@dataclass(frozen=True)
class _Source:
    """Where a report's sums come from (fixed SQL fragments; the table is aliased `d`)."""

    table: str
    day: str
    manager: str
    sums: str
    scope: str | None = None
    grain: Granularity | None = None
    """The unit whose bucket starts `day` already holds (grouped as is, no `date_trunc`)."""


_ROLLUP_SUMS = (
    "sum(d.promoters)::bigint AS promoters, sum(d.passives)::bigint AS passives,"
    " sum(d.detractors)::bigint AS detractors, sum(d.score_sum)::bigint AS score_sum"
)
_DAILY = _Source("scoring_daily", "d.day", "NULL", _ROLLUP_SUMS)
_MANAGER_MONTHLY = _Source("scoring_manager_monthly", "d.month", "d.responsible_id", _ROLLUP_SUMS)
_MANAGER_WEEKLY = _Source(
    "scoring_manager_weekly", "d.week", "d.responsible_id", _ROLLUP_SUMS, grain="week"
)
_ANSWERS = _Source(
    "scoring_answers",
    "d.day",
    f"coalesce(d.responsible_id, {NO_MANAGER})",
    "count(*) FILTER (WHERE d.category = 'promoter') AS promoters,"
    " count(*) FILTER (WHERE d.category = 'passive') AS passives,"
    " count(*) FILTER (WHERE d.category = 'detractor') AS detractors,"
    " sum(d.score)::bigint AS score_sum",
    scope="d.is_current AND d.score IS NOT NULL",
)


class ReportQuery(BaseModel):
    """What to report: the grouping, the period split and the filters (all optional)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    by: GroupBy = "product"
    period: Period | None = None
    """Split rows by this period (the trend). For `by=period` it defaults to `range` when a date
    bound is given (one row for the custom range) and to `month` otherwise."""
    date_from: date | None = None
    date_to: date | None = None
    segment: str | None = Field(default=None, min_length=1)
    """A segment's category id (digits) or its name (case-insensitive)."""
    product: str | None = Field(default=None, min_length=1)
    manager: int | None = Field(default=None, ge=1)
    portal: str | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _range_in_order(self) -> ReportQuery:
        if self.date_from and self.date_to and self.date_from > self.date_to:
            raise ValueError(
                f"from ({self.date_from}) is after to ({self.date_to}); expected from <= to"
            )
        return self

    @property
    def equipment_only(self) -> bool:
        """Whether the rows would add up several products' answers, so cosmetics stay out: a
        report by period or manager not narrowed to one product."""
        return self.by in ("period", "manager") and self.product is None

    @property
    def effective_period(self) -> Period | None:
        if self.by != "period" or self.period is not None:
            return self.period
        return "range" if self.date_from or self.date_to else "month"


@dataclass(frozen=True)
class ReportRow:
    """One row: its group keys (in display order), its counts, and a note: why its NPS is withheld
    (`withheld`) or which answers it left out."""

    keys: dict[str, Any]
    stats: NpsAggregate
    note: str | None = None
    withheld: bool = False

    @property
    def nps(self) -> float | None:
        return None if self.withheld else self.stats.nps

    @property
    def avg_score(self) -> float | None:
        return None if self.withheld else self.stats.avg_score

    @property
    def margin(self) -> float | None:
        return None if self.withheld else self.stats.margin

    def as_dict(self, min_answers: int = DEFAULT_MIN_ANSWERS) -> dict[str, Any]:
        """The row as `nps report --json` and `/api/report` answer it: `margin` is the NPS's 95 %
        margin of error (±, in points) and `few_answers` marks a row with answers but fewer than
        `min_answers` of them (too few to rely on)."""
        row: dict[str, Any] = {
            **self.keys,
            "nps": self.nps,
            "margin": self.margin,
            "few_answers": too_few_answers(self.stats.answers, min_answers),
            "promoters": self.stats.promoters,
            "passives": self.stats.passives,
            "detractors": self.stats.detractors,
            "answers": self.stats.answers,
            "avg_score": self.avg_score,
        }
        if "sku" not in self.keys:
            row["note"] = self.note
        return row


def named_managers(
    rows: Iterable[dict[str, Any]], names: Mapping[int, str]
) -> list[dict[str, Any]]:
    """Rows of a report by manager (`as_dict()`) with each manager's name after the id (None
    where the portal's name of the user is not known)."""
    return [
        {"manager_id": row["manager_id"], "manager_name": names.get(row["manager_id"]), **row}
        for row in rows
    ]


@dataclass(frozen=True)
class _Part:
    """One query of a report: a source and the days it covers (None = open)."""

    source: _Source
    start: date | None
    end: date | None


def _parts(query: ReportQuery) -> list[_Part]:
    """The smallest tables that together answer `query`, each over its share of the days.

    A manager report split by week reads the whole weeks from the weekly rollup; one that needs
    no finer grain than months reads the whole months from the monthly rollup. Either reads only
    the partial weeks or months at the ends of its range from the answers.
    """
    start, end = query.date_from, query.date_to
    if query.by != "manager" and query.manager is None:
        return [_Part(_DAILY, start, end)]
    if query.effective_period == "day":
        return [_Part(_ANSWERS, start, end)]
    if query.effective_period == "week":
        return _whole_buckets_and_edges(_MANAGER_WEEKLY, "week", start, end)
    return _whole_buckets_and_edges(_MANAGER_MONTHLY, "month", start, end)


def _whole_buckets_and_edges(
    rollup: _Source, unit: Granularity, start: date | None, end: date | None
) -> list[_Part]:
    """The whole `unit`s of start..end from `rollup`, the partial ones at its ends from the answers
    (only the answers when the range holds no whole `unit`)."""
    whole_from = start
    if start is not None and start != bucket_start(start, unit):
        whole_from = next_bucket(bucket_start(start, unit), unit)
    whole_to = end
    if end is not None and end != bucket_end(bucket_start(end, unit), unit):
        whole_to = bucket_start(end, unit) - timedelta(days=1)
    if whole_from is not None and whole_to is not None and whole_from > whole_to:
        return [_Part(_ANSWERS, start, end)]
    parts = [_Part(rollup, whole_from, whole_to)]
    if start is not None and whole_from is not None and start < whole_from:
        parts.append(_Part(_ANSWERS, start, whole_from - timedelta(days=1)))
    if end is not None and whole_to is not None and end > whole_to:
        parts.append(_Part(_ANSWERS, whole_to + timedelta(days=1), end))
    return parts


def filter_conditions(
    conditions: list[str],
    params: list[Any],
    *,
    portal: str | None,
    segment: str | None,
    product: str | None,
    manager: int | None,
    day: str,
    start: date | None,
    end: date | None,
) -> None:
    """Append the conditions of the given filters on a table aliased `d` (`day` its day column)
    to `conditions`, and their values to `params` (each condition names its value as `$n`)."""

    def add(template: str, value: Any) -> None:
        params.append(value)
        conditions.append(template.format(f"${len(params)}"))

    if portal is not None:
        add("d.portal = {}", portal)
    if segment is not None:
        if segment.isascii() and segment.isdigit():
            add("d.category_id = {}::int", int(segment))
        else:
            add(
                "(d.portal, d.category_id) IN (SELECT s.portal, s.category_id"
                " FROM scoring_segments s WHERE lower(s.name) = lower({}))",
                segment,
            )
    if product is not None:
        add("d.sku = {}", product)
    if manager is not None:
        add("d.responsible_id = {}::bigint", manager)
    if start is not None:
        add(f"{day} >= {{}}::date", start)
    if end is not None:
        add(f"{day} <= {{}}::date", end)


def _sql(query: ReportQuery, part: _Part) -> tuple[str, list[Any]]:
    source = part.source
    conditions = [source.scope] if source.scope else []
    params: list[Any] = []
    filter_conditions(
        conditions,
        params,
        portal=query.portal,
        segment=query.segment,
        product=query.product,
        manager=query.manager,
        day=source.day,
        start=part.start,
        end=part.end,
    )

    group_column = {
        "product": "d.sku",
        "segment": "d.category_id",
        "manager": source.manager,
        "period": None,
    }[query.by]
    select = [
        f"{group_column} AS grp" if group_column else "NULL AS grp",
        f"{_COSMETICS_SQL} AS cosmetics" if query.equipment_only else "false AS cosmetics",
    ]
    group_by = ["grp", "cosmetics"] if group_column else ["cosmetics"]
    unit = query.effective_period
    if unit is not None and unit == source.grain:
        select.append(f"{source.day} AS bucket")
        group_by.append("bucket")
    elif unit is not None and unit != "range":
        params.append(unit)
        select.append(f"date_trunc(${len(params)}, {source.day}::timestamp)::date AS bucket")
        group_by.append("bucket")
    else:
        select.append("NULL::date AS bucket")
    sql = (
        f"SELECT {', '.join(select)}, {source.sums}"  # noqa: S608 - fixed fragments, values are $n
        f" FROM {source.table} d"
    )
    if conditions:
        sql += " WHERE " + " AND ".join(conditions)
    if group_by:
        sql += f" GROUP BY {', '.join(group_by)}"
    return sql, params


async def _names(conn: Conn, query: ReportQuery) -> dict[Any, tuple[str, str | None]]:
    """Display names of the grouped products or segments (and each segment's kind)."""
    portal_filter = " WHERE portal = $1" if query.portal is not None else ""
    params = [query.portal] if query.portal is not None else []
    if query.by == "product":
        rows = await conn.fetch(
            "SELECT DISTINCT ON (sku) sku, name FROM scoring_products"  # noqa: S608 - fixed text
            f"{portal_filter} ORDER BY sku, portal",
            *params,
        )
        return {row["sku"]: (row["name"], None) for row in rows}
    if query.by == "segment":
        rows = await conn.fetch(
            "SELECT DISTINCT ON (category_id) category_id, name, kind"  # noqa: S608 - fixed text
            f" FROM scoring_segments{portal_filter} ORDER BY category_id, portal",
            *params,
        )
        return {row["category_id"]: (row["name"], row["kind"]) for row in rows}
    return {}


def _group_keys(
    by: GroupBy, key: Any, names: dict[Any, tuple[str, str | None]]
) -> tuple[dict[str, Any], bool]:
    """The keys of a group, and whether its NPS is withheld (a cosmetics segment's)."""
    if by == "product":
        return {"sku": key, "name": names.get(key, (key, None))[0]}, False
    if by == "segment":
        name, kind = names.get(key, (str(key), None))
        return {"segment": name, "category_id": key, "kind": kind}, kind == "cosmetics"
    if by == "manager":
        return {"manager_id": None if key == NO_MANAGER else key}, False
    return {}, False


def _period_keys(name: str, start: date, end: date) -> dict[str, Any]:
    return {"period": name, "period_start": start.isoformat(), "period_end": end.isoformat()}


def _range_keys(query: ReportQuery) -> dict[str, Any]:
    """The custom range `from..to` (an open side left empty; `all` when both are open)."""
    start, end = query.date_from, query.date_to
    name = f"{start or ''}..{end or ''}" if start or end else "all"
    return {
        "period": name,
        "period_start": start.isoformat() if start else None,
        "period_end": end.isoformat() if end else None,
    }


def _sort_key(by: GroupBy, key: Any) -> tuple[int, Any]:
    if by == "manager":
        return (1, 0) if key == NO_MANAGER else (0, key)
    return (0, key if key is not None else 0)


async def run_report(conn: Conn, query: ReportQuery) -> list[ReportRow]:
    """The rows of `query`, ordered by group key, then period."""
    async with conn.transaction(readonly=True):
        await conn.execute("SET LOCAL jit = off")
        fetched = []
        for part in _parts(query):
            sql, params = _sql(query, part)
            fetched.extend(await conn.fetch(sql, *params))
        names = await _names(conn, query)
    unit = query.effective_period
    cells: dict[tuple[Any, date | None], NpsAggregate] = {}
    left_out: dict[tuple[Any, date | None], int] = {}
    for record in fetched:
        stats = NpsAggregate(
            promoters=record["promoters"] or 0,
            passives=record["passives"] or 0,
            detractors=record["detractors"] or 0,
            score_sum=record["score_sum"] or 0,
        )
        if stats.answers:
            # Cells emptied by superseded or retracted answers hold no answers: left out.
            key = (record["grp"], record["bucket"])
            if record["cosmetics"]:
                left_out[key] = left_out.get(key, 0) + stats.answers
            else:
                cells[key] = cells.get(key, NpsAggregate()) + stats
    seen = cells.keys() | left_out.keys()
    groups = sorted({key for key, _ in seen}, key=lambda k: _sort_key(query.by, k))
    if query.by == "period" and not groups:
        groups = [None]
    periods = _periods(query, unit, seen) if unit is not None and unit != "range" else []

    def row(group: Any, bucket: date | None, keys: dict[str, Any]) -> ReportRow:
        group_keys, withheld = _group_keys(query.by, group, names)
        stats = cells.get((group, bucket), NpsAggregate())
        if withheld:
            return ReportRow({**group_keys, **keys}, stats, COSMETICS_NOTE, withheld=True)
        cosmetics = left_out.get((group, bucket), 0)
        note = cosmetics_left_out_note(cosmetics) if cosmetics else None
        return ReportRow({**group_keys, **keys}, stats, note)

    rows: list[ReportRow] = []
    for group in groups:
        if unit is None:
            if (group, None) in seen:
                rows.append(row(group, None, {}))
            continue
        if unit == "range":
            if seen or query.date_from or query.date_to:
                rows.append(row(group, None, _range_keys(query)))
            continue
        rows.extend(row(group, start, period) for start, period in periods)
    return rows


def _periods(
    query: ReportQuery, unit: Granularity, cells: Iterable[tuple[Any, date | None]]
) -> list[tuple[date, dict[str, Any]]]:
    """The trend's periods, shared by every group: each bucket's start and its keys, from the
    first to the last bucket with answers (the date bounds when given); gaps show as zeros."""
    starts = [bucket for _, bucket in cells if bucket is not None]
    first = query.date_from or min(starts, default=None)
    last = query.date_to or max(starts, default=None)
    if first is None or last is None:
        return []
    periods: list[tuple[date, dict[str, Any]]] = []
    for start in buckets(first, last, unit):
        shown_from = max(start, query.date_from) if query.date_from else start
        end = bucket_end(start, unit)
        shown_to = min(end, query.date_to) if query.date_to else end
        periods.append((start, _period_keys(label(start, unit), shown_from, shown_to)))
    return periods


_METRICS = ("nps", "margin", "promoters", "passives", "detractors", "answers", "avg_score")
FEW_MARK = "*"
_KEY_COLUMNS: dict[str, tuple[str, ...]] = {
    "product": ("sku", "name"),
    "segment": ("segment", "kind"),
    "manager": ("manager_id", "manager_name"),
    "period": (),
}


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.1f}" if value == round(value, 1) else f"{value:.2f}"
    return str(value)


def _row_cells(row: dict[str, Any], columns: list[str]) -> list[str]:
    cells = []
    for column in columns:
        text = _cell(row.get(column))
        if column == "margin" and row.get(column) is not None:
            text = "±" + text
        if column == "nps" and row.get("few_answers") and row.get(column) is not None:
            text += FEW_MARK
        cells.append(text)
    return cells


def render_table(
    rows: list[dict[str, Any]], by: str, min_answers: int = DEFAULT_MIN_ANSWERS
) -> str:
    """A plain-text table of report rows (`-` where there is no value): the NPS with its 95 %
    margin of error, and a mark on an NPS from fewer than `min_answers` answers."""
    if not rows:
        return "no answers match"
    columns = list(_KEY_COLUMNS[by])
    if "period" in rows[0]:
        columns.append("period")
    columns.extend(_METRICS)
    if any(row.get("note") for row in rows):
        columns.append("note")
    table = [columns, *[_row_cells(row, columns) for row in rows]]
    widths = [max(len(line[i]) for line in table) for i in range(len(columns))]
    numeric = set(_METRICS) | {"manager_id"}
    lines = [
        "  ".join(
            text.rjust(width) if columns[i] in numeric else text.ljust(width)
            for i, (text, width) in enumerate(zip(line, widths, strict=True))
        ).rstrip()
        for line in table
    ]
    lines.insert(1, "  ".join("-" * width for width in widths))
    if any(row.get("few_answers") and row.get("nps") is not None for row in rows):
        lines.append(f"{FEW_MARK} fewer than {min_answers} answers: too few to rely on")
    return "\n".join(lines)


async def score_distribution(conn: Conn, query: ReportQuery) -> dict[int, int]:
    """How many current answers gave each score, over the answers `query` selects (its filters;
    equipment only where its rows would add up several products). Its grouping and period split
    do not matter: the distribution is of the whole selection."""
    conditions = ["d.is_current", "d.score IS NOT NULL"]
    if query.equipment_only:
        conditions.append(f"NOT {_COSMETICS_SQL}")
    params: list[Any] = []
    filter_conditions(
        conditions,
        params,
        portal=query.portal,
        segment=query.segment,
        product=query.product,
        manager=query.manager,
        day="d.day",
        start=query.date_from,
        end=query.date_to,
    )
    sql = (
        "SELECT d.score, count(*) AS answers FROM scoring_answers d"  # noqa: S608 - fixed fragments, values are $n
        f" WHERE {' AND '.join(conditions)} GROUP BY d.score"
    )
    async with conn.transaction(readonly=True):
        await conn.execute("SET LOCAL jit = off")
        rows = await conn.fetch(sql, *params)
    return {row["score"]: row["answers"] for row in rows}
