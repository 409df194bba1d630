"""HTML of the dashboard: view models in, a complete page out (no JavaScript, inline SVG).

Every figure sits in a cell marked `data-col="<api field>"` inside a row marked `data-row="<key>"`,
so the numbers on a page can be checked against `/api/report` by machine as well as by eye.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, replace

from services.reports.filters import Filters
from services.reports.markup import Html, el, join
from services.reports.views import (
    DASH,
    AttentionLine,
    Counts,
    FilterOptions,
    ManagerLine,
    Mix,
    NpsBar,
    OpsView,
    ProductLine,
    Sparkline,
    TrendChart,
    TrendPoint,
    fmt_avg,
    fmt_nps,
    manager_label,
)
from services.scoring.periods import GRANULARITIES


@dataclass(frozen=True)
class NavItem:
    path: str
    title: str
    filters: tuple[str, ...]
    """The filters this view offers; the others are carried along as hidden fields."""


TREND = NavItem("/", "Trend", ("segment", "product", "manager", "from", "to", "period"))
PRODUCTS = NavItem("/products", "Products", TREND.filters)
MANAGERS = NavItem("/managers", "Managers", ("segment", "product", "manager", "from", "to"))
ATTENTION = NavItem("/attention", "Detractors & service", MANAGERS.filters)
OPS = NavItem("/ops", "Ops", ())
NAV: tuple[NavItem, ...] = (TREND, PRODUCTS, MANAGERS, ATTENTION, OPS)
OPEN_TABLE_ROWS = 24
"""The trend's figures table starts unfolded up to this many periods."""

CSS = """
:root{--p:#1a9850;--n:#bdbdbd;--d:#d73027;--ink:#1f2933;--mute:#6b7785;--line:#e3e7ec}
*{box-sizing:border-box}
body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--ink);
background:#f6f8fa}
header{display:flex;gap:24px;align-items:baseline;padding:12px 24px;background:#fff;
border-bottom:1px solid var(--line)}
header h1{font-size:17px;margin:0}
nav a{margin-right:16px;color:var(--mute);text-decoration:none}
nav a.on{color:var(--ink);font-weight:600;border-bottom:2px solid var(--ink)}
form.filters{display:flex;flex-wrap:wrap;gap:12px;align-items:end;padding:12px 24px;
background:#fff;border-bottom:1px solid var(--line)}
form.filters label{display:flex;flex-direction:column;font-size:12px;color:var(--mute)}
form.filters select,form.filters input{font:inherit;padding:3px 6px}
main{padding:16px 24px}
section{background:#fff;border:1px solid var(--line);border-radius:6px;padding:16px;
margin-bottom:16px}
h2{font-size:15px;margin:0 0 12px}
.notice{margin:16px 24px;padding:12px 16px;border-radius:6px;background:#fff4e5;
border:1px solid #f0c36d}
.tiles{display:flex;flex-wrap:wrap;gap:12px;margin-bottom:16px}
.tile{background:#fff;border:1px solid var(--line);border-radius:6px;padding:10px 16px;
min-width:110px}
.tile b{display:block;font-size:22px}
.tile span{color:var(--mute);font-size:12px}
table{border-collapse:collapse;width:100%}
th,td{padding:5px 8px;border-bottom:1px solid var(--line);text-align:left;vertical-align:top}
th{font-size:12px;color:var(--mute);font-weight:600}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
td.comment{max-width:420px;white-space:pre-wrap;overflow-wrap:anywhere}
.muted{color:var(--mute)}
.badge{display:inline-block;padding:0 6px;border-radius:8px;font-size:12px;background:#fde0dd;
color:#a50f15}
.alert{color:var(--d);font-weight:600}
svg.chart{width:100%;height:auto;max-width:1100px}
svg.mix,svg.npsbar{width:160px;height:12px}
svg.spark{width:120px;height:28px}
.grid{stroke:var(--line)}
.zero{stroke:var(--mute)}
.axis{fill:var(--mute);font-size:11px}
.trend{fill:none;stroke:#2b6cb0;stroke-width:2}
.dot{fill:#2b6cb0}
.bar{fill:#a3bffa}
.spk{fill:none;stroke:#2b6cb0;stroke-width:1.5}
.p{fill:var(--p)}.n{fill:var(--n)}.d{fill:var(--d)}
.track{fill:#eef1f4}
footer{padding:0 24px 24px;color:var(--mute);font-size:12px}
"""
CSS_HASH = base64.b64encode(hashlib.sha256(CSS.encode()).digest()).decode()
CONTENT_SECURITY_POLICY = (
    f"default-src 'none'; style-src 'sha256-{CSS_HASH}';"
    " form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)


def _document(title: str, body: Html) -> Html:
    return join(
        [
            Html("<!doctype html>"),
            el(
                "html",
                {"lang": "en"},
                el(
                    "head",
                    None,
                    el("meta", {"charset": "utf-8"}),
                    el("meta", {"name": "viewport", "content": "width=device-width"}),
                    el("title", None, f"{title} · b24-nps"),
                    el("style", None, Html(CSS)),
                ),
                el("body", None, body),
            ),
        ]
    )


def _option(value: str, label: str, selected: bool) -> Html:
    return el("option", {"value": value, "selected": selected}, label)


def _select(name: str, label: str, current: str | None, choices: Sequence[tuple[str, str]]) -> Html:
    everything = {"segment": "all segments", "product": "all products", "manager": "all managers"}
    options = [_option("", everything.get(name, "all"), current is None)]
    if current is not None and current not in {value for value, _ in choices}:
        options.append(_option(current, current, True))
    options.extend(_option(value, text, value == current) for value, text in choices)
    return el("label", None, label, el("select", {"name": name}, join(options)))


def _filter_form(item: NavItem, filters: Filters, options: FilterOptions) -> Html:
    current = filters.params()
    fields: list[Html] = []
    shown = set(item.filters)
    if "segment" in shown:
        choices = [(str(cid), name) for cid, name in options.segments]
        fields.append(_select("segment", "Segment", filters.segment, choices))
    if "product" in shown:
        choices = [(sku, f"{info.name} ({sku})") for sku, info in options.catalogue.items()]
        fields.append(_select("product", "Product", filters.product, choices))
    if "manager" in shown:
        manager = None if filters.manager is None else str(filters.manager)
        choices = [(str(m), manager_label(m)) for m in options.managers]
        fields.append(_select("manager", "Responsible manager", manager, choices))
    for name, label in (("from", "From"), ("to", "To")):
        if name in shown:
            value = current.get(name, "")
            fields.append(
                el(
                    "label",
                    None,
                    label,
                    el("input", {"type": "date", "name": name, "value": value}),
                )
            )
    if "period" in shown:
        periods = [(p, p) for p in GRANULARITIES]
        fields.append(
            el(
                "label",
                None,
                "Period",
                el(
                    "select",
                    {"name": "period"},
                    join(_option(v, t, v == filters.period) for v, t in periods),
                ),
            )
        )
    if len(options.portals) > 1 or filters.portal is not None:
        fields.append(
            _select("portal", "Portal", filters.portal, [(p, p) for p in options.portals])
        )
        shown.add("portal")
    hidden = [
        el("input", {"type": "hidden", "name": name, "value": value})
        for name, value in current.items()
        if name not in shown
    ]
    return el(
        "form",
        {"class": "filters", "method": "get", "action": item.path},
        join(fields),
        join(hidden),
        el("button", {"type": "submit"}, "Apply"),
        el("a", {"href": item.path}, "clear"),
    )


def layout(
    item: NavItem,
    filters: Filters,
    options: FilterOptions,
    body: Html,
    *,
    notice: Html | str | None = None,
    api_url: str | None = None,
) -> Html:
    """A dashboard page: header, navigation (keeping the filters), filter form, content."""
    query = filters.query_string()
    nav = join(
        el("a", {"href": n.path + query, "class": "on" if n is item else None}, n.title)
        for n in NAV
    )
    footer = (
        el("footer", None, "These numbers as JSON: ", el("a", {"href": api_url}, api_url))
        if api_url
        else Html("")
    )
    return _document(
        item.title,
        join(
            [
                el("header", None, el("h1", None, "b24-nps · NPS"), el("nav", None, nav)),
                _filter_form(item, filters, options),
                el("div", {"class": "notice"}, notice) if notice is not None else None,
                el("main", None, body),
                footer,
            ]
        ),
    )


def problems_notice(problems: Sequence[str]) -> Html:
    return join(
        [
            el("b", None, "These filters cannot be used:"),
            el("ul", None, join(el("li", None, p) for p in problems)),
        ]
    )


def login_page(path: str) -> Html:
    """The answer to a request without valid credentials."""
    return _document(
        "Sign in",
        el(
            "div",
            {"class": "notice"},
            el("h2", None, "This dashboard needs the reports token"),
            el(
                "p",
                None,
                "Open ",
                el("code", None, f"{path}?token=<REPORTS_TOKEN>"),
                " once (it sets a cookie), sign in with any user name and the token as the"
                " password, or send ",
                el("code", None, "Authorization: Bearer <REPORTS_TOKEN>"),
                ". Without REPORTS_TOKEN, ",
                el("code", None, "nps run reports"),
                " prints the token it generated at start-up.",
            ),
        ),
    )


def _num(col: str, value: int | str) -> Html:
    return el("td", {"class": "num", "data-col": col}, value)


def _count_cells(counts: Counts) -> Html:
    return join(
        [
            _num("promoters", counts.promoters),
            _num("passives", counts.passives),
            _num("detractors", counts.detractors),
            _num("answers", counts.answers),
            _num("avg_score", fmt_avg(counts.avg_score)),
        ]
    )


def _count_heads() -> Html:
    return join(
        el("th", {"class": "num"}, h)
        for h in ("promoters", "passives", "detractors", "answers", "avg score")
    )


def _tile(label: str, value: str, col: str) -> Html:
    return el("div", {"class": "tile"}, el("b", {"data-col": col}, value), el("span", None, label))


def summary_tiles(counts: Counts, key: str) -> Html:
    """The figures of a whole selection (a `period=range` row) as tiles."""
    return el(
        "div",
        {"class": "tiles", "data-row": key},
        _tile("NPS", fmt_nps(counts.nps), "nps"),
        _tile("answers", str(counts.answers), "answers"),
        _tile("promoters", str(counts.promoters), "promoters"),
        _tile("passives", str(counts.passives), "passives"),
        _tile("detractors", str(counts.detractors), "detractors"),
        _tile("average score", fmt_avg(counts.avg_score), "avg_score"),
    )


def _mix_svg(shares: Mix | None, counts: Counts) -> Html:
    if shares is None:
        return Html("")
    parts = (
        ("p", shares.promoters, f"promoters {counts.promoters}"),
        ("n", shares.passives, f"passives {counts.passives}"),
        ("d", shares.detractors, f"detractors {counts.detractors}"),
    )
    return el(
        "svg",
        {"class": "mix", "viewBox": "0 0 100 10", "preserveAspectRatio": "none"},
        join(
            el(
                "rect",
                {"class": cls, "x": span.start, "y": 0, "width": span.width, "height": 10},
            )
            for cls, span, _ in parts
            if span.width > 0
        ),
        el("title", None, ", ".join(text for _, _, text in parts)),
    )


def _nps_bar_svg(bar: NpsBar | None, nps: float | None) -> Html:
    if bar is None:
        return Html("")
    return el(
        "svg",
        {"class": "npsbar", "viewBox": "0 0 100 10", "preserveAspectRatio": "none"},
        el("rect", {"class": "track", "x": 0, "y": 0, "width": 100, "height": 10}),
        el(
            "rect",
            {
                "class": "d" if bar.negative else "p",
                "x": bar.x,
                "y": 1,
                "width": bar.width,
                "height": 8,
            },
        ),
        el("line", {"class": "zero", "x1": 50, "x2": 50, "y1": 0, "y2": 10}),
        el("title", None, f"NPS {fmt_nps(nps)}"),
    )


def trend_body(chart: TrendChart, summary: Counts, rows_label: str) -> Html:
    """The trend view: summary tiles, the chart, and the per-period figures."""
    if not chart.has_answers:
        figure: Html = el("p", {"class": "muted"}, "No answers for these filters.")
    else:
        figure = _trend_svg(chart)
    heads = join([el("th", None, "period"), el("th", {"class": "num"}, "NPS"), _count_heads()])
    rows = join(
        el(
            "tr",
            {"data-row": p.period},
            el("td", None, p.period),
            _num("nps", fmt_nps(p.counts.nps)),
            _count_cells(p.counts),
        )
        for p in chart.points
    )
    return join(
        [
            summary_tiles(summary, "summary"),
            el("section", None, el("h2", None, f"NPS by {rows_label}"), figure),
            el(
                "section",
                None,
                el(
                    "details",
                    {"open": len(chart.points) <= OPEN_TABLE_ROWS},
                    el("summary", None, f"Figures per {rows_label} ({len(chart.points)})"),
                    el("table", {"class": "trend"}, el("tr", None, heads), rows),
                ),
            ),
        ]
    )


def _point_label(point: TrendPoint) -> str:
    return f"{point.period}: NPS {fmt_nps(point.counts.nps)}, {point.counts.answers} answers"


def _trend_svg(chart: TrendChart) -> Html:
    parts: list[Html] = []
    for tick in chart.y_ticks:
        parts.append(
            el(
                "line",
                {
                    "class": "zero" if tick.label == "0" else "grid",
                    "x1": chart.left,
                    "x2": chart.right,
                    "y1": round(tick.at, 2),
                    "y2": round(tick.at, 2),
                },
            )
        )
        parts.append(
            el(
                "text",
                {
                    "class": "axis",
                    "x": chart.left - 6,
                    "y": round(tick.at + 4, 2),
                    "text-anchor": "end",
                },
                tick.label,
            )
        )
    parts.append(
        el(
            "text",
            {"class": "axis", "x": chart.left - 6, "y": chart.bars_top + 4, "text-anchor": "end"},
            str(chart.max_answers),
        )
    )
    parts.append(
        el(
            "text",
            {"class": "axis", "x": chart.left, "y": chart.bars_top - 8},
            "answers per period",
        )
    )
    for point in chart.points:
        if point.bar_height > 0:
            parts.append(
                el(
                    "rect",
                    {
                        "class": "bar",
                        "x": point.bar_x,
                        "y": point.bar_y,
                        "width": chart.bar_width,
                        "height": point.bar_height,
                    },
                    el("title", None, _point_label(point)),
                )
            )
    parts.append(el("path", {"class": "trend", "d": chart.line}))
    for point in chart.points if chart.marker_radius else ():
        if point.y is not None:
            parts.append(
                el(
                    "circle",
                    {"class": "dot", "cx": point.x, "cy": point.y, "r": chart.marker_radius},
                    el("title", None, _point_label(point)),
                )
            )
    for tick in chart.x_ticks:
        parts.append(
            el(
                "text",
                {"class": "axis", "x": tick.at, "y": chart.height - 14, "text-anchor": "middle"},
                tick.label,
            )
        )
    return el(
        "svg",
        {
            "class": "chart",
            "viewBox": f"0 0 {chart.width:g} {chart.height:g}",
            "role": "img",
            "aria-label": "NPS per period and answers per period",
        },
        join(parts),
    )


def _product_cell(line: ProductLine, filters: Filters) -> Html:
    link = replace(filters, product=line.sku).query_string()
    return el(
        "td",
        None,
        el("a", {"href": "/" + link, "title": "trend of this product"}, line.name),
        el("div", {"class": "muted"}, line.sku),
    )


def _sparkline_svg(trend: Sparkline, span: str) -> Html:
    if trend.last is None:
        return Html("")
    return el(
        "svg",
        {"class": "spark", "viewBox": f"0 0 {trend.width:g} {trend.height:g}"},
        el(
            "line",
            {"class": "zero", "x1": 0, "x2": trend.width, "y1": trend.zero_y, "y2": trend.zero_y},
        ),
        el("path", {"class": "spk", "d": trend.line}),
        join(el("circle", {"class": "dot", "cx": x, "cy": y, "r": 1.2}) for x, y in trend.dots),
        el("title", None, f"NPS {span}; latest {fmt_nps(trend.last)}"),
    )


def products_body(lines: Sequence[ProductLine], filters: Filters) -> Html:
    """Per product: NPS, the promoter/passive/detractor mix, the average score, the trend."""
    if not lines:
        return el("section", None, el("p", {"class": "muted"}, "No answers for these filters."))
    heads = join(
        [
            el("th", None, "product"),
            el("th", None, "segment"),
            el("th", {"class": "num"}, "NPS"),
            el("th", None, ""),
            el("th", None, "promoters · passives · detractors"),
            _count_heads(),
            el("th", None, f"trend by {filters.period}"),
        ]
    )
    rows = join(
        el(
            "tr",
            {"data-row": line.sku},
            _product_cell(line, filters),
            el("td", None, line.segments, el("div", {"class": "muted"}, line.kind)),
            _num("nps", fmt_nps(line.counts.nps)),
            el("td", None, _nps_bar_svg(line.bar, line.counts.nps)),
            el("td", None, _mix_svg(line.mix, line.counts)),
            _count_cells(line.counts),
            el("td", None, _sparkline_svg(line.trend, line.trend_span)),
        )
        for line in lines
    )
    return el(
        "section",
        None,
        el("h2", None, "NPS per product"),
        el("table", {"class": "products"}, el("tr", None, heads), rows),
    )


def managers_body(lines: Sequence[ManagerLine], filters: Filters) -> Html:
    """Per responsible manager: NPS and counts (the sales team's motivation view)."""
    if not lines:
        return el("section", None, el("p", {"class": "muted"}, "No answers for these filters."))
    heads = join(
        [
            el("th", None, "responsible manager"),
            el("th", {"class": "num"}, "NPS"),
            el("th", None, ""),
            el("th", None, "promoters · passives · detractors"),
            _count_heads(),
        ]
    )
    rows: list[Html] = []
    for line in lines:
        if line.manager_id is None:
            who = el("td", None, line.label)
        else:
            link = replace(filters, manager=line.manager_id).query_string()
            who = el("td", None, el("a", {"href": "/" + link}, line.label))
        rows.append(
            el(
                "tr",
                {"data-row": "none" if line.manager_id is None else str(line.manager_id)},
                who,
                _num("nps", fmt_nps(line.counts.nps)),
                el("td", None, _nps_bar_svg(line.bar, line.counts.nps)),
                el("td", None, _mix_svg(line.mix, line.counts)),
                _count_cells(line.counts),
            )
        )
    return el(
        "section",
        None,
        el("h2", None, "NPS per responsible manager"),
        el("table", {"class": "managers"}, el("tr", None, heads), join(rows)),
    )


def _external(url: str | None, text: str) -> Html | str:
    if url is None:
        return text
    return el("a", {"href": url, "target": "_blank", "rel": "noopener noreferrer"}, text)


def attention_body(lines: Sequence[AttentionLine], summary: Counts, limit: int) -> Html:
    """The latest detractors and service requests, with a way to act on each."""
    heads = join(
        el("th", None, h)
        for h in (
            "submitted",
            "segment",
            "product",
            "score",
            "",
            "manager",
            "contact",
            "comment",
            "Bitrix24",
        )
    )
    rows = join(
        el(
            "tr",
            {"data-row": line.answer_id},
            el("td", None, line.submitted),
            el("td", None, line.segment),
            el("td", None, line.product),
            _num("score", line.score),
            el(
                "td",
                None,
                el("div", None, line.category),
                el("span", {"class": "badge"}, "service request") if line.service_request else None,
            ),
            el("td", None, line.manager),
            el(
                "td",
                {"data-col": "contact_id"},
                DASH
                if line.contact_id is None
                else _external(line.contact_url, str(line.contact_id)),
            ),
            el("td", {"class": "comment", "data-col": "comment"}, line.comment),
            el("td", None, _external(line.item_url, "open item")),
        )
        for line in lines
    )
    table = (
        el("table", {"class": "attention"}, el("tr", None, heads), rows)
        if lines
        else el("p", {"class": "muted"}, "No detractors or service requests for these filters.")
    )
    return join(
        [
            summary_tiles(summary, "summary"),
            el(
                "section",
                None,
                el("h2", None, f"Latest detractors and service requests (up to {limit})"),
                table,
            ),
        ]
    )


def _unmapped_section(view: OpsView) -> Html:
    """Answers ingest holds because no segment maps their category."""
    if view.unmapped is None:
        content: Html = el(
            "p",
            {"class": "muted"},
            "ingest's table of held answers (ingest_unmapped_items) is not in this database.",
        )
    elif not view.unmapped:
        content = el(
            "p", {"class": "muted"}, "None: every category that sent answers has a segment."
        )
    else:
        heads = el(
            "tr",
            None,
            el("th", None, "category"),
            el("th", {"class": "num"}, "answers"),
            el("th", None, "updated from"),
            el("th", None, "to"),
        )
        rows = join(
            el(
                "tr",
                {"data-row": f"category-{u.category_id}"},
                el("td", None, u.category_id),
                el("td", {"class": "num alert", "data-col": "answers"}, u.answers),
                el("td", None, u.oldest),
                el("td", None, u.newest),
            )
            for u in view.unmapped
        )
        content = join(
            [
                el("table", {"class": "unmapped"}, heads, rows),
                el(
                    "p",
                    {"class": "muted"},
                    "Add a segment for each category to the portal YAML: ingest picks the"
                    " change up and scores and routes these answers once (nps unmapped).",
                ),
            ]
        )
    return el("section", None, el("h2", None, "Answers waiting for a segment"), content)


def ops_body(view: OpsView) -> Html:
    """Conflicts crm_sync left alone, dead letters waiting per queue, and the answers held for
    want of a segment."""
    if view.conflicts_total is None:
        conflicts: Html = el(
            "p",
            {"class": "muted"},
            "crm_sync's conflicts table (crm_conflicts) is not in this database.",
        )
    else:
        heads = join(
            el("th", None, h)
            for h in (
                "#",
                "recorded",
                "contact",
                "field",
                "reason",
                "value kept",
                "proposed",
                "answer",
            )
        )
        rows = join(
            el(
                "tr",
                {"data-row": str(c.id)},
                el("td", None, c.id),
                el("td", None, c.created),
                el("td", None, _external(c.contact_url, str(c.contact_id))),
                el("td", None, c.field),
                el("td", None, c.reason),
                el("td", {"class": "comment"}, c.current),
                el("td", {"class": "comment"}, c.proposed),
                el("td", None, c.answer_id),
            )
            for c in view.conflicts
        )
        conflicts = join(
            [
                el(
                    "div",
                    {"class": "tiles", "data-row": "conflicts"},
                    _tile(
                        "conflicts (legacy values left alone)", str(view.conflicts_total), "total"
                    ),
                ),
                el("table", {"class": "conflicts"}, el("tr", None, heads), rows)
                if view.conflicts
                else Html(""),
            ]
        )
    queue_rows = join(
        el(
            "tr",
            {"data-row": q.queue},
            el("td", None, q.queue + ".dlq"),
            el("td", {"class": "num alert" if q.alert else "num", "data-col": "size"}, q.size),
        )
        for q in view.queues
    )
    broker_note = (
        None
        if view.broker_reachable
        else el("p", {"class": "alert"}, "RabbitMQ did not answer: the sizes are unknown.")
    )
    return join(
        [
            el("section", None, el("h2", None, "Conflicts"), conflicts),
            el(
                "section",
                None,
                el("h2", None, "Dead letters"),
                broker_note,
                el(
                    "table",
                    {"class": "dlq"},
                    el("tr", None, el("th", None, "queue"), el("th", {"class": "num"}, "messages")),
                    queue_rows,
                ),
                el(
                    "p",
                    {"class": "muted"},
                    "Inspect and replay them with nps dlq list | show | replay.",
                ),
            ),
            _unmapped_section(view),
        ]
    )
