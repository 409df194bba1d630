"""View models of the dashboard: report rows and records in, what a page shows out.

Pure: numbers as they are displayed, bar widths in percent, SVG coordinates and paths. The rows
are the dictionaries `/api/report` answers (`ReportRow.as_dict()`), so a page shows exactly the
API's numbers. NPS charts always span -100..100, so a negative NPS sits visibly below zero.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, tzinfo
from typing import Any, Protocol
from urllib.parse import urlsplit

from shared.events import DEAL_ENTITY_TYPE_ID

NPS_LOW, NPS_HIGH = -100.0, 100.0
DASH = "—"
MAX_VALUE_CHARS = 120


def fmt_nps(value: float | None) -> str:
    return DASH if value is None else f"{value:.1f}"


def fmt_avg(value: float | None) -> str:
    return DASH if value is None else f"{value:.2f}"


def fmt_margin(value: float | None) -> str:
    """An NPS's 95 % margin of error as shown: `±17.1`."""
    return DASH if value is None else f"±{value:.1f}"


@dataclass(frozen=True)
class Counts:
    """The figures of one report row, and its note (cosmetics answers left out of an aggregate,
    or why a cosmetics segment has no NPS); `margin` is the NPS's 95 % margin of error and
    `few_answers` says the row has too few answers to rely on."""

    nps: float | None
    promoters: int
    passives: int
    detractors: int
    answers: int
    avg_score: float | None
    note: str | None = None
    margin: float | None = None
    few_answers: bool = False

    @classmethod
    def of(cls, row: Mapping[str, Any]) -> Counts:
        return cls(
            nps=row["nps"],
            promoters=row["promoters"],
            passives=row["passives"],
            detractors=row["detractors"],
            answers=row["answers"],
            avg_score=row["avg_score"],
            note=row.get("note"),
            margin=row["margin"],
            few_answers=row["few_answers"],
        )

    @property
    def unreliable(self) -> str | None:
        """The mark of an NPS that rests on too few answers; None when there is none to mark."""
        if not self.few_answers or self.nps is None:
            return None
        return f"unreliable: {self.answers} answer{'' if self.answers == 1 else 's'}"


NO_COUNTS = Counts(None, 0, 0, 0, 0, None)
"""The figures of a selection without answers."""


@dataclass(frozen=True)
class Change:
    """The summary figures against the previous period of the same length."""

    since: str
    """The previous period, `first … last` day."""
    days: int
    nps: str
    """The NPS's change in points (`+5.2`), or DASH when either period has no NPS."""
    answers: str
    previous_nps: str
    previous_answers: int
    direction: str
    """`up`, `down` or `same` for the NPS (empty when there is no change to tell)."""


def change(current: Counts, previous: Counts, first: date, last: date) -> Change:
    """How `current` differs from `previous`, the figures of `first`..`last`."""
    delta = None
    if current.nps is not None and previous.nps is not None:
        delta = round(current.nps - previous.nps, 1)
    direction = "" if delta is None else "up" if delta > 0 else "down" if delta < 0 else "same"
    return Change(
        since=f"{first.isoformat()} … {last.isoformat()}",
        days=(last - first).days + 1,
        nps=DASH if delta is None else f"{delta:+.1f}",
        answers=f"{current.answers - previous.answers:+d}",
        previous_nps=fmt_nps(previous.nps),
        previous_answers=previous.answers,
        direction=direction,
    )


@dataclass(frozen=True)
class ScoreBar:
    """One score's column of a distribution: its count, share and category, in SVG units."""

    score: int
    count: int
    share: str
    category: str
    x: float
    y: float
    height: float


@dataclass(frozen=True)
class Distribution:
    """How many answers gave each score 0..10 (every score shown, zeros included)."""

    width: float
    height: float
    bottom: float
    bar_width: float
    bars: tuple[ScoreBar, ...]
    total: int


def score_category(score: int) -> str:
    """The class of a score's column: promoter (9-10), passive (7-8) or detractor (0-6)."""
    return "p" if score >= 9 else "n" if score >= 7 else "d"


def distribution(
    counts: Mapping[int, int], *, width: float = 440, height: float = 150
) -> Distribution:
    """The 0-10 score distribution of `counts` (score -> answers) as columns."""
    bottom = height - 20
    top = 16.0
    band = width / 11
    bar_width = round(band * 0.7, 2)
    total = sum(counts.values())
    most = max(counts.values(), default=0)
    bars = []
    for score in range(11):
        count = counts.get(score, 0)
        bar_height = (bottom - top) * count / most if most else 0.0
        bars.append(
            ScoreBar(
                score=score,
                count=count,
                share=f"{100 * count / total:.0f} %" if total else DASH,
                category=score_category(score),
                x=round(band * score + (band - bar_width) / 2, 2),
                y=round(bottom - bar_height, 2),
                height=round(bar_height, 2),
            )
        )
    return Distribution(width, height, bottom, bar_width, tuple(bars), total)


@dataclass(frozen=True)
class Span:
    """A piece of a horizontal bar: where it starts and how wide it is, in percent."""

    start: float
    width: float


@dataclass(frozen=True)
class Mix:
    """Promoters, passives and detractors as one stacked bar (widths add up to 100)."""

    promoters: Span
    passives: Span
    detractors: Span


def mix(counts: Counts) -> Mix | None:
    """The stacked bar of `counts`; None without answers."""
    if counts.answers == 0:
        return None
    widths = [100 * n / counts.answers for n in (counts.promoters, counts.passives)]
    promoters = Span(0.0, round(widths[0], 3))
    passives = Span(promoters.width, round(widths[1], 3))
    start = promoters.width + passives.width
    return Mix(promoters, passives, Span(round(start, 3), round(100 - start, 3)))


@dataclass(frozen=True)
class NpsBar:
    """NPS as a bar from the middle (0) of a -100..100 track; x and width in percent."""

    x: float
    width: float
    negative: bool


def nps_bar(nps: float | None) -> NpsBar | None:
    if nps is None:
        return None
    width = abs(nps) / 2
    return NpsBar(x=50 - width if nps < 0 else 50.0, width=width, negative=nps < 0)


def nps_y(nps: float, top: float, bottom: float) -> float:
    """The y of `nps` on a vertical axis from NPS_HIGH at `top` to NPS_LOW at `bottom`."""
    return top + (NPS_HIGH - nps) * (bottom - top) / (NPS_HIGH - NPS_LOW)


def polyline(points: Sequence[tuple[float, float | None]]) -> str:
    """An SVG path through the points; a point without y breaks the line into pieces."""
    parts: list[str] = []
    pen_down = False
    for x, y in points:
        if y is None:
            pen_down = False
            continue
        parts.append(f"{'L' if pen_down else 'M'}{x:.1f},{y:.1f}")
        pen_down = True
    return "".join(parts)


LABEL_CHAR_WIDTH = 6.6
"""About how wide a character of an axis label (11 px) is, in SVG user units."""


@dataclass(frozen=True)
class Tick:
    label: str
    at: float
    anchor: str = "middle"
    """How the label sits on `at` (SVG `text-anchor`): centred, or ending there at the right
    edge of the chart so that it is not cut off."""


def x_tick(label: str, at: float, width: float) -> Tick:
    """A label centred under `at`, or ending at `at` where a centred one would overflow `width`."""
    overflows = at + len(label) * LABEL_CHAR_WIDTH / 2 > width
    return Tick(label, at, "end" if overflows else "middle")


def _extent(tick: Tick) -> tuple[float, float]:
    """About where a label's text starts and ends."""
    size = len(tick.label) * LABEL_CHAR_WIDTH
    start = tick.at - size if tick.anchor == "end" else tick.at - size / 2
    return start, start + size


def x_ticks(labels: Sequence[tuple[str, float]], width: float) -> tuple[Tick, ...]:
    """The x-axis labels: the last one kept inside `width`, and the one before it left out
    where the two would overlap."""
    ticks = [x_tick(label, at, width) for label, at in labels]
    if len(ticks) > 1 and _extent(ticks[-2])[1] + LABEL_CHAR_WIDTH > _extent(ticks[-1])[0]:
        del ticks[-2]
    return tuple(ticks)


@dataclass(frozen=True)
class TrendPoint:
    """One period of the trend chart: its figures, its NPS marker and its answer-count bar."""

    period: str
    counts: Counts
    x: float
    y: float | None
    bar_x: float
    bar_y: float
    bar_height: float


@dataclass(frozen=True)
class TrendChart:
    """The NPS line over -100..100 above a bar chart of answer counts, in SVG user units."""

    width: float
    height: float
    left: float
    right: float
    nps_top: float
    nps_bottom: float
    zero_y: float
    bars_top: float
    bars_bottom: float
    bar_width: float
    marker_radius: float
    """Radius of the NPS markers; 0 when there are too many periods to mark each one."""
    points: tuple[TrendPoint, ...]
    line: str
    y_ticks: tuple[Tick, ...]
    x_ticks: tuple[Tick, ...]
    max_answers: int

    @property
    def has_answers(self) -> bool:
        return self.max_answers > 0


def trend_chart(
    rows: Sequence[Mapping[str, Any]],
    *,
    width: float = 960,
    height: float = 400,
    max_labels: int = 12,
    max_markers: int = 120,
) -> TrendChart:
    """The chart of a `by=period` trend (one row per period, in order)."""
    left, right = 48.0, width - 16
    nps_top, nps_bottom = 16.0, height * 0.6
    bars_top, bars_bottom = height * 0.68, height - 34
    band = (right - left) / max(len(rows), 1)
    bar_width = min(band * 0.7, 40.0)
    counts = [Counts.of(row) for row in rows]
    max_answers = max((c.answers for c in counts), default=0)
    points: list[TrendPoint] = []
    for i, (row, figures) in enumerate(zip(rows, counts, strict=True)):
        x = left + band * (i + 0.5)
        bar_height = (
            (bars_bottom - bars_top) * figures.answers / max_answers if max_answers else 0.0
        )
        points.append(
            TrendPoint(
                period=str(row["period"]),
                counts=figures,
                x=round(x, 2),
                y=None
                if figures.nps is None
                else round(nps_y(figures.nps, nps_top, nps_bottom), 2),
                bar_x=round(x - bar_width / 2, 2),
                bar_y=round(bars_bottom - bar_height, 2),
                bar_height=round(bar_height, 2),
            )
        )
    step = max(1, math.ceil(len(points) / max_labels))
    return TrendChart(
        width=width,
        height=height,
        left=left,
        right=right,
        nps_top=nps_top,
        nps_bottom=nps_bottom,
        zero_y=nps_y(0, nps_top, nps_bottom),
        bars_top=bars_top,
        bars_bottom=bars_bottom,
        bar_width=round(bar_width, 2),
        marker_radius=round(min(3.5, band / 3), 2) if len(rows) <= max_markers else 0.0,
        points=tuple(points),
        line=polyline([(p.x, p.y) for p in points]),
        y_ticks=tuple(
            Tick(f"{value:+.0f}" if value else "0", nps_y(value, nps_top, nps_bottom))
            for value in (NPS_HIGH, 50.0, 0.0, -50.0, NPS_LOW)
        ),
        x_ticks=x_ticks([(p.period, p.x) for p in points[::step]], width),
        max_answers=max_answers,
    )


@dataclass(frozen=True)
class Sparkline:
    """A small NPS line over -100..100 (a gap where a period has no answers)."""

    width: float
    height: float
    line: str
    zero_y: float
    dots: tuple[tuple[float, float], ...]
    last: float | None


def sparkline(values: Sequence[float | None], width: float = 120, height: float = 28) -> Sparkline:
    pad = 3.0
    count = len(values)
    xs = [
        width / 2 if count == 1 else pad + i * (width - 2 * pad) / max(count - 1, 1)
        for i in range(count)
    ]
    ys = [None if v is None else round(nps_y(v, pad, height - pad), 2) for v in values]
    points = [(round(x, 2), y) for x, y in zip(xs, ys, strict=True)]
    return Sparkline(
        width=width,
        height=height,
        line=polyline(points),
        zero_y=nps_y(0, pad, height - pad),
        dots=tuple((x, y) for x, y in points if y is not None),
        last=next((v for v in reversed(values) if v is not None), None),
    )


@dataclass(frozen=True)
class ProductInfo:
    """What the catalogue knows of a product: its name and the segments it is answered in."""

    name: str
    segments: tuple[str, ...]
    kinds: tuple[str, ...]


@dataclass(frozen=True)
class FilterOptions:
    """The choices the filter form offers (from the data of the selected portal)."""

    portals: tuple[str, ...]
    segments: tuple[tuple[int, str], ...]
    catalogue: Mapping[str, ProductInfo]
    managers: tuple[int, ...]
    manager_names: Mapping[int, str] = field(default_factory=dict)
    """Who the managers are (user id -> name, from the portal's `user.get`)."""
    themes: tuple[str, ...] = ()
    """The comment themes of the portal YAML."""


@dataclass(frozen=True)
class ProductLine:
    sku: str
    name: str
    segments: str
    kind: str
    counts: Counts
    mix: Mix | None
    bar: NpsBar | None
    trend: Sparkline
    trend_span: str


def product_lines(
    rows: Sequence[Mapping[str, Any]],
    trend_rows: Sequence[Mapping[str, Any]],
    catalogue: Mapping[str, ProductInfo],
) -> list[ProductLine]:
    """One line per `by=product` row, with the product's trend from `by=product&period=…`."""
    trends: dict[str, list[Mapping[str, Any]]] = {}
    for row in trend_rows:
        trends.setdefault(row["sku"], []).append(row)
    lines: list[ProductLine] = []
    for row in rows:
        info = catalogue.get(row["sku"])
        counts = Counts.of(row)
        trend = trends.get(row["sku"], [])
        span = f"{trend[0]['period']} … {trend[-1]['period']}" if trend else ""
        lines.append(
            ProductLine(
                sku=row["sku"],
                name=row["name"],
                segments=", ".join(info.segments) if info else "",
                kind=", ".join(info.kinds) if info else "",
                counts=counts,
                mix=mix(counts),
                bar=nps_bar(counts.nps),
                trend=sparkline([t["nps"] for t in trend]),
                trend_span=span,
            )
        )
    return lines


@dataclass(frozen=True)
class ManagerLine:
    manager_id: int | None
    label: str
    counts: Counts
    mix: Mix | None
    bar: NpsBar | None


def manager_label(manager_id: int | None, names: Mapping[int, str] | None = None) -> str:
    """A manager by name where the portal told it (`names`), else by user id."""
    if manager_id is None:
        return "no manager"
    return (names or {}).get(manager_id) or f"user {manager_id}"


def manager_lines(
    rows: Sequence[Mapping[str, Any]], names: Mapping[int, str] | None = None
) -> list[ManagerLine]:
    """One line per `by=manager` row, the manager named by `names` where it knows them."""
    lines: list[ManagerLine] = []
    for row in rows:
        counts = Counts.of(row)
        lines.append(
            ManagerLine(
                manager_id=row["manager_id"],
                label=manager_label(row["manager_id"], names),
                counts=counts,
                mix=mix(counts),
                bar=nps_bar(counts.nps),
            )
        )
    return lines


def portal_origin(webhook_url: str) -> str:
    """`scheme://host[:port]` of the portal's webhook URL: no user, no path, no secret."""
    parts = urlsplit(webhook_url)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise ValueError("the portal webhook URL needs http(s)://<host>/…")
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{parts.scheme}://{host}" + (f":{parts.port}" if parts.port else "")


def item_url(origin: str | None, entity_type_id: int, item_id: int) -> str | None:
    """The Bitrix24 page of a smart-process item or of an NPS deal."""
    if origin is None:
        return None
    if entity_type_id == DEAL_ENTITY_TYPE_ID:
        return f"{origin}/crm/deal/details/{item_id}/"
    return f"{origin}/crm/type/{entity_type_id}/details/{item_id}/"


def contact_url(origin: str | None, contact_id: int | None) -> str | None:
    """The Bitrix24 page of a contact."""
    if origin is None or contact_id is None:
        return None
    return f"{origin}/crm/contact/details/{contact_id}/"


def fmt_time(at: datetime, zone: tzinfo = UTC) -> str:
    """A moment as the portal's people read it: in the portal's time zone, which is named."""
    return at.astimezone(zone).strftime("%Y-%m-%d %H:%M %Z")


@dataclass(frozen=True)
class AttentionLine:
    """A detractor or a service request: what it says and where to act on it."""

    answer_id: str
    submitted: str
    segment: str
    product: str
    score: str
    category: str
    service_request: bool
    manager: str
    contact_id: int | None
    contact_url: str | None
    item_url: str | None
    comment: str


def attention_lines(
    records: Sequence[Mapping[str, Any]],
    origin: str | None,
    zone: tzinfo = UTC,
    names: Mapping[int, str] | None = None,
) -> list[AttentionLine]:
    """Lines of the latest detractors and service requests (records of `scoring_answers`),
    their times in `zone`, their managers named by `names`."""
    return [
        AttentionLine(
            answer_id=r["answer_id"],
            submitted=fmt_time(r["submitted_at"], zone),
            segment=r["segment"],
            product=f"{r['product_name']} ({r['sku']})",
            score=DASH if r["score"] is None else str(r["score"]),
            category=r["category"] or "not scored",
            service_request=r["service_request"],
            manager=manager_label(r["responsible_id"], names),
            contact_id=r["contact_id"],
            contact_url=contact_url(origin, r["contact_id"]),
            item_url=item_url(origin, r["entity_type_id"], r["item_id"]),
            comment=r["comment"] or "",
        )
        for r in records
    ]


def fmt_json_value(raw: str | None) -> str:
    """A stored JSON value (jsonb text) as a short readable string."""
    if raw is None:
        return DASH
    value = json.loads(raw)
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    if len(text) > MAX_VALUE_CHARS:
        return text[: MAX_VALUE_CHARS - 1] + "…"
    return text


@dataclass(frozen=True)
class ConflictLine:
    id: int
    created: str
    contact_id: int
    contact_url: str | None
    field: str
    """The field's title where the configuration gives one, else its code."""
    field_code: str
    reason: str
    current: str
    proposed: str
    answer_id: str


@dataclass(frozen=True)
class QueueLine:
    queue: str
    size: str
    alert: bool


class HeldCategory(Protocol):
    """What ingest's read module says of one category no segment maps."""

    @property
    def category_id(self) -> int: ...
    @property
    def items(self) -> int: ...
    @property
    def oldest(self) -> datetime: ...
    @property
    def newest(self) -> datetime: ...


@dataclass(frozen=True)
class UnmappedLine:
    """Answers of a category no segment maps, held by ingest until one does."""

    category_id: int
    answers: int
    oldest: str
    newest: str


@dataclass(frozen=True)
class LaneLine:
    """crm_sync's urgent or bulk lane: what waits in its queue, and its share of the portal's
    requests over the last minutes with their mean wait for the budget."""

    lane: str
    queue: str
    queued: str
    requests: int
    share: str
    mean_wait: str


def lane_lines(
    queues: Mapping[str, str],
    depths: Mapping[str, int] | None,
    usage: Mapping[str, tuple[int, float]],
) -> tuple[LaneLine, ...]:
    """One line per lane of `queues` ({lane: queue}); `depths` None: the broker did not answer;
    `usage` {lane: (requests, seconds waited)}."""
    total = sum(requests for requests, _ in usage.values())
    lines = []
    for lane, queue in queues.items():
        requests, waited = usage.get(lane, (0, 0.0))
        depth = None if depths is None else depths.get(queue)
        lines.append(
            LaneLine(
                lane=lane,
                queue=queue,
                queued="unknown" if depth is None else str(depth),
                requests=requests,
                share=f"{round(100 * requests / total)} %" if total else "—",
                mean_wait=f"{waited / requests:.2f} s" if requests else "—",
            )
        )
    return tuple(lines)


@dataclass(frozen=True)
class OpsView:
    """Conflicts (None: crm_sync's table is not in this database), dead-letter queue sizes and
    the answers held for want of a segment."""

    conflicts_total: int | None
    conflicts: tuple[ConflictLine, ...]
    queues: tuple[QueueLine, ...]
    broker_reachable: bool
    unmapped: tuple[UnmappedLine, ...] | None = ()
    """None: ingest's table is not in this database."""
    lanes: tuple[LaneLine, ...] = ()


def _queue_line(name: str, dead_letters: Mapping[str, int] | None) -> QueueLine:
    size = None if dead_letters is None else dead_letters.get(name)
    return QueueLine(queue=name, size="unknown" if size is None else str(size), alert=bool(size))


def ops_view(
    conflicts_total: int | None,
    conflict_records: Sequence[Mapping[str, Any]],
    dead_letters: Mapping[str, int] | None,
    queues: Sequence[str],
    origin: str | None,
    *,
    unmapped: Sequence[HeldCategory] | None = (),
    field_titles: Mapping[str, str] | None = None,
    zone: tzinfo = UTC,
    lanes: tuple[LaneLine, ...] = (),
) -> OpsView:
    """The ops view; conflicts name their fields by `field_titles` (code -> title) where it has
    them, and times are in `zone`."""
    titles = field_titles or {}
    return OpsView(
        conflicts_total=conflicts_total,
        conflicts=tuple(
            ConflictLine(
                id=r["id"],
                created=fmt_time(r["created_at"], zone),
                contact_id=r["contact_id"],
                contact_url=contact_url(origin, r["contact_id"]),
                field=titles.get(r["field"], r["field"]),
                field_code=r["field"],
                reason=r["reason"],
                current=fmt_json_value(r["current_value"]),
                proposed=fmt_json_value(r["proposed_value"]),
                answer_id=r["answer_id"],
            )
            for r in conflict_records
        ),
        queues=tuple(_queue_line(name, dead_letters) for name in queues),
        broker_reachable=dead_letters is not None,
        unmapped=None
        if unmapped is None
        else tuple(
            UnmappedLine(
                category_id=u.category_id,
                answers=u.items,
                oldest=fmt_time(u.oldest, zone),
                newest=fmt_time(u.newest, zone),
            )
            for u in unmapped
        ),
        lanes=lanes,
    )


@dataclass(frozen=True)
class RatingLine:
    """One current answer of the all-ratings list (and a row of its CSV export)."""

    answer_id: str
    sent: str
    """When the survey behind the answer was sent (dispatch's register), or DASH: not asked by
    dispatch (a form filled in the portal, a link made by hand)."""
    answered: str
    survey: str
    item: str
    """`item 501` (a smart-process item) or `deal 77` (an NPS deal)."""
    item_url: str | None
    product: str
    score: str
    category: str
    service_request: bool
    comment: str
    manager: str
    contact_id: int | None
    contact_url: str | None


def item_label(entity_type_id: int, item_id: int) -> str:
    return f"{'deal' if entity_type_id == DEAL_ENTITY_TYPE_ID else 'item'} {item_id}"


def rating_lines(
    records: Sequence[Mapping[str, Any]],
    origin: str | None,
    zone: tzinfo = UTC,
    names: Mapping[int, str] | None = None,
    sent: Mapping[str, datetime] | None = None,
) -> list[RatingLine]:
    """Lines of current answers (records of `scoring_answers`), their times in `zone`, their
    managers named by `names`, their items and contacts linked to the portal at `origin`, when
    their surveys were sent from `sent` (answer id -> time)."""
    sent_at = sent or {}
    return [
        RatingLine(
            answer_id=r["answer_id"],
            sent=fmt_time(sent_at[r["answer_id"]], zone) if r["answer_id"] in sent_at else DASH,
            answered=fmt_time(r["submitted_at"], zone),
            survey=r["segment"],
            item=item_label(r["entity_type_id"], r["item_id"]),
            item_url=item_url(origin, r["entity_type_id"], r["item_id"]),
            product=f"{r['product_name']} ({r['sku']})",
            score=DASH if r["score"] is None else str(r["score"]),
            category=r["category"] or "not scored",
            service_request=r["service_request"],
            comment=r["comment"] or "",
            manager=manager_label(r["responsible_id"], names),
            contact_id=r["contact_id"],
            contact_url=contact_url(origin, r["contact_id"]),
        )
        for r in records
    ]


CSV_HEADER: tuple[str, ...] = (
    "sent",
    "answered",
    "survey",
    "item",
    "item link",
    "product",
    "score",
    "category",
    "service request",
    "comment",
    "responsible",
    "contact",
    "contact link",
)
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
"""What a spreadsheet may read as the start of a formula in a cell."""


def safe_cell(text: str) -> str:
    """`text` as a spreadsheet shows it as text: a leading `'` where it could start a formula."""
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def csv_row(line: RatingLine) -> list[str]:
    """`line`'s cells in the order of `CSV_HEADER`, each safe to open in a spreadsheet (an empty
    cell where the list shows a dash)."""
    cells = [
        "" if line.sent == DASH else line.sent,
        line.answered,
        line.survey,
        line.item,
        line.item_url or "",
        line.product,
        "" if line.score == DASH else line.score,
        line.category,
        "yes" if line.service_request else "",
        line.comment,
        line.manager,
        "" if line.contact_id is None else str(line.contact_id),
        line.contact_url or "",
    ]
    return [safe_cell(cell) for cell in cells]


def csv_text(rows: Sequence[Sequence[str]]) -> str:
    """`rows` as CSV (RFC 4180: comma, quotes where needed, CRLF line ends)."""
    out = io.StringIO()
    csv.writer(out).writerows(rows)
    return out.getvalue()


@dataclass(frozen=True)
class ThemeCount:
    """A comment theme of the all-ratings page: how many answers it has, a link filtering by
    it (or clearing it, when it is the one selected)."""

    name: str
    answers: int
    href: str
    on: bool


@dataclass(frozen=True)
class Pager:
    """Where the shown answers sit among all those selected, and links to the pages around."""

    first: int
    last: int
    total: int
    previous: str | None
    next: str | None


def pager(page: int, size: int, shown: int, total: int, link: Callable[[int], str]) -> Pager:
    """Page `page` (from 1) of `size` answers, `shown` of them on it, of `total` in all;
    `link(n)` is the address of page n."""
    first = (page - 1) * size + 1 if shown else 0
    return Pager(
        first=first,
        last=first + shown - 1 if shown else 0,
        total=total,
        previous=link(page - 1) if page > 1 else None,
        next=link(page + 1) if page * size < total else None,
    )
