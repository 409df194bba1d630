"""HTML of the dashboard: view models in, a complete page out (no JavaScript, inline SVG).

Each page is a Jinja2 template in `templates/` (autoescaped: every value becomes text, so a
comment holding `<script>` reaches the browser as text) extending `layout.html`; repeated pieces
(figure cells, tiles, charts, the filter form) are macros in `templates/macros/`. The templates
only loop over and print the view models of `views.py` and what this module prepares for them
(navigation, the filter form, links that keep the filters). The style sheet is
`static/dashboard.css`, served by the reports app at `STYLESHEET_PATH`.

Every figure sits in a cell marked `data-col="<api field>"` inside a row marked `data-row="<key>"`,
so the numbers on a page can be checked against `/api/report` by machine as well as by eye.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, replace
from html import escape
from importlib.resources import files
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined
from markupsafe import Markup

from services.reports.asked import AskedView, DealSurveyLine, FunnelLine
from services.reports.filters import CATEGORIES, PRESETS, Filters
from services.reports.followup import FollowupTile, FollowupView, LoopLine, action_label
from services.reports.views import (
    DASH,
    AttentionLine,
    Change,
    Counts,
    Distribution,
    FilterOptions,
    ManagerLine,
    OpsView,
    Pager,
    ProductLine,
    RatingLine,
    ThemeCount,
    TrendChart,
    fmt_avg,
    fmt_margin,
    fmt_nps,
    manager_label,
)
from services.scoring.read import GRANULARITIES
from shared.dispatch_config import FOLLOWUP_ACTIONS


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
RATINGS = NavItem(
    "/ratings",
    "All ratings",
    (*MANAGERS.filters, "category", "comment", "theme", "q"),
)
ASKED = NavItem("/asked", "Asked", TREND.filters)
FOLLOWUP = NavItem("/followup", "Follow-up", ("action", "manager", "from", "to"))
OPS = NavItem("/ops", "Ops", ())
NAV: tuple[NavItem, ...] = (TREND, PRODUCTS, MANAGERS, ATTENTION, RATINGS, ASKED, FOLLOWUP, OPS)
OPEN_TABLE_ROWS = 24
"""The trend's figures table starts unfolded up to this many periods."""

STATIC_PACKAGE = ("services.reports", "static")
"""Where the reports app serves `/static/` from."""
STYLESHEET_PATH = "/static/dashboard.css"
_CSS = files("services.reports").joinpath("static", "dashboard.css").read_bytes()
STYLESHEET = f"{STYLESHEET_PATH}?v={hashlib.sha256(_CSS).hexdigest()[:12]}"
"""The style sheet's address, changing with its content so a browser never keeps an old one."""
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; style-src 'self';"
    " form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SETTINGS_PATH = "/settings"
"""The settings page of the dashboard inside a portal."""


def frame_policy(portal_origin: str) -> str:
    """The pages' policy inside a portal: the same, framed by that portal's pages only."""
    return CONTENT_SECURITY_POLICY.replace(
        "frame-ancestors 'none'", f"frame-ancestors {portal_origin}"
    )


def settings_url(session: str) -> str:
    return SETTINGS_PATH + Filters(session=session).query_string()


def _printed(value: object) -> object:
    """What `{{ value }}` prints: text escaped by `html.escape`, quotes included.

    Autoescaping would escape it too (as `&#39;`, `&#34;`); escaping here keeps the entities the
    pages have always had (`&#x27;`, `&quot;`). Markup (macros' output) passes unchanged.
    """
    if isinstance(value, str) and not isinstance(value, Markup):
        return Markup(escape(value, quote=True))  # noqa: S704 (escaped on this very line)
    return value


ENV = Environment(
    loader=PackageLoader("services.reports", "templates"),
    autoescape=True,
    finalize=_printed,
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
ENV.filters["nps"] = fmt_nps
ENV.filters["avg"] = fmt_avg
ENV.filters["margin"] = fmt_margin
ENV.globals.update(stylesheet=STYLESHEET, dash=DASH)


@dataclass(frozen=True)
class NavLink:
    href: str
    title: str
    on: bool


@dataclass(frozen=True)
class Option:
    value: str
    text: str
    selected: bool


@dataclass(frozen=True)
class Field:
    """A filter of the form: a select with `options`, or an `input` (no options)."""

    name: str
    label: str
    value: str = ""
    options: tuple[Option, ...] = ()
    input: str = "date"
    """The input's type: `date`, or `search` for text."""


@dataclass(frozen=True)
class FilterForm:
    action: str
    fields: tuple[Field, ...]
    hidden: tuple[tuple[str, str], ...]
    clear: str
    """The page without filters (keeping the frame session, if any)."""


def _select(
    name: str, label: str, current: str | None, choices: Sequence[tuple[str, str]]
) -> Field:
    everything = {
        "segment": "all segments",
        "product": "all products",
        "manager": "all managers",
        "category": "all categories",
        "comment": "with or without",
        "theme": "all themes",
        "action": "all actions",
    }
    options = [Option("", everything.get(name, "all"), current is None)]
    if current is not None and current not in {value for value, _ in choices}:
        options.append(Option(current, current, True))
    options.extend(Option(value, text, value == current) for value, text in choices)
    return Field(name, label, options=tuple(options))


def _selects(shown: set[str], filters: Filters, options: FilterOptions) -> list[Field]:
    """The action, segment, product and manager selects among `shown`."""
    fields: list[Field] = []
    if "action" in shown:
        actions = [(action, action_label(action)) for action in FOLLOWUP_ACTIONS]
        fields.append(_select("action", "Action", filters.action, actions))
    if "segment" in shown:
        choices = [(str(cid), name) for cid, name in options.segments]
        fields.append(_select("segment", "Segment", filters.segment, choices))
    if "product" in shown:
        choices = [(sku, f"{info.name} ({sku})") for sku, info in options.catalogue.items()]
        fields.append(_select("product", "Product", filters.product, choices))
    if "manager" in shown:
        manager = None if filters.manager is None else str(filters.manager)
        choices = [(str(m), manager_label(m, options.manager_names)) for m in options.managers]
        fields.append(_select("manager", "Responsible manager", manager, choices))
    return fields


def filter_form(item: NavItem, filters: Filters, options: FilterOptions) -> FilterForm:
    """The filters `item` offers, with `filters` selected; the other set ones kept hidden."""
    current = filters.params()
    shown = set(item.filters)
    fields = _selects(shown, filters, options)
    if "from" in shown:
        presets = [Option("", "custom dates", filters.preset is None)]
        presets.extend(Option(k, text, k == filters.preset) for k, text in PRESETS.items())
        fields.append(Field("dates", "Dates", options=tuple(presets)))
        shown.add("dates")
    for name, label, day in (("from", "From", filters.date_from), ("to", "To", filters.date_to)):
        if name in shown:
            fields.append(Field(name, label, value="" if day is None else day.isoformat()))
    if "category" in shown:
        fields.append(_select("category", "Category", filters.category, list(CATEGORIES.items())))
    if "comment" in shown:
        wanted = "yes" if filters.has_comment else None
        fields.append(_select("comment", "Comment", wanted, [("yes", "with a comment")]))
    if "theme" in shown and (options.themes or filters.theme is not None):
        fields.append(_select("theme", "Theme", filters.theme, [(t, t) for t in options.themes]))
    if "q" in shown:
        fields.append(Field("q", "Comment contains", value=filters.search or "", input="search"))
    if "period" in shown:
        periods = tuple(Option(p, p, p == filters.period) for p in GRANULARITIES)
        fields.append(Field("period", "Period", options=periods))
    if len(options.portals) > 1 or filters.portal is not None:
        fields.append(
            _select("portal", "Portal", filters.portal, [(p, p) for p in options.portals])
        )
        shown.add("portal")
    hidden = tuple((name, value) for name, value in current.items() if name not in shown)
    clear = item.path + Filters(session=filters.session).query_string()
    return FilterForm(item.path, tuple(fields), hidden, clear)


def _page(
    template: str,
    item: NavItem,
    filters: Filters,
    options: FilterOptions,
    *,
    api_url: str | None = None,
    problems: Sequence[str] = (),
    **content: Any,
) -> str:
    """`template` (a page extending `layout.html`) with the header, navigation and filters."""
    query = replace(filters, page=1).query_string()
    nav = [NavLink(n.path + query, n.title, n is item) for n in NAV]
    if filters.session is not None:
        nav.append(NavLink(settings_url(filters.session), "Settings", False))
    return ENV.get_template(template).render(
        item=item,
        nav=nav,
        form=filter_form(item, filters, options),
        filters=filters,
        problems=problems,
        api_url=api_url,
        **content,
    )


def trend_page(
    filters: Filters,
    options: FilterOptions,
    chart: TrendChart,
    summary: Counts,
    rows_label: str,
    *,
    api_url: str,
    scores: Distribution,
    delta: Change | None = None,
    followup: FollowupTile | None = None,
) -> str:
    """`/`: summary tiles (and their change against the previous period), the tile of the
    overdue follow-ups (when dispatch follows any), the chart, the score distribution and the
    per-period figures."""
    return _page(
        "trend.html",
        TREND,
        filters,
        options,
        api_url=api_url,
        chart=chart,
        summary=summary,
        rows_label=rows_label,
        open_table=len(chart.points) <= OPEN_TABLE_ROWS,
        scores=scores,
        delta=delta,
        followup=followup,
    )


def products_page(
    filters: Filters,
    options: FilterOptions,
    lines: Sequence[ProductLine],
    *,
    api_url: str,
    scores: Distribution,
) -> str:
    """`/products`: per product NPS, the mix, the average score, the trend; the distribution of
    the scores."""
    links = {line.sku: "/" + replace(filters, product=line.sku).query_string() for line in lines}
    return _page(
        "products.html",
        PRODUCTS,
        filters,
        options,
        api_url=api_url,
        lines=lines,
        links=links,
        scores=scores,
    )


def managers_page(
    filters: Filters,
    options: FilterOptions,
    lines: Sequence[ManagerLine],
    *,
    api_url: str,
    scores: Distribution,
) -> str:
    """`/managers`: per responsible manager NPS and counts (the sales team's motivation view),
    and the distribution of the scores."""
    links = {
        line.manager_id: "/" + replace(filters, manager=line.manager_id).query_string()
        for line in lines
        if line.manager_id is not None
    }
    return _page(
        "managers.html",
        MANAGERS,
        filters,
        options,
        api_url=api_url,
        lines=lines,
        links=links,
        scores=scores,
    )


def attention_page(
    filters: Filters,
    options: FilterOptions,
    lines: Sequence[AttentionLine],
    summary: Counts,
    limit: int,
    *,
    api_url: str,
    delta: Change | None = None,
) -> str:
    """`/attention`: the latest detractors and service requests, with a way to act on each."""
    return _page(
        "attention.html",
        ATTENTION,
        filters,
        options,
        api_url=api_url,
        lines=lines,
        summary=summary,
        limit=limit,
        delta=delta,
    )


def ratings_page(
    filters: Filters,
    options: FilterOptions,
    lines: Sequence[RatingLine],
    pages: Pager,
    themes: Sequence[ThemeCount],
    *,
    csv_url: str,
    deal_surveys: Sequence[DealSurveyLine] | None = None,
) -> str:
    """`/ratings`: every current answer the filters select, a page at a time, the comment
    themes' counts, and the CSV export of them all; narrowed to a deal (`deal=`, the deal
    card's tab), the surveys of that deal and how they stand first."""
    return _page(
        "ratings.html",
        RATINGS,
        filters,
        options,
        lines=lines,
        pager=pages,
        themes=themes,
        csv_url=csv_url,
        deal_surveys=deal_surveys,
    )


def asked_page(filters: Filters, options: FilterOptions, view: AskedView, *, csv_url: str) -> str:
    """`/asked`: the response funnel of the surveys dispatch sent (over the selection, per
    survey, manager and period), who has not answered yet, who never did (and their call
    tasks, with a link to how they stand on the follow-up page), and the CSV export of every
    request."""

    def link(line: FunnelLine, survey: bool) -> str:
        assert line.value is not None
        if survey:
            narrowed = replace(filters, segment=line.value)
        else:
            narrowed = replace(filters, manager=int(line.value))
        return "/asked" + narrowed.query_string()

    links = {
        line.key: link(line, lines is view.surveys)
        for lines in (view.surveys, view.managers)
        for line in lines
        if line.value is not None
    }
    call_tasks = "/followup" + replace(filters, action="call_task", page=1).query_string()
    return _page(
        "asked.html",
        ASKED,
        filters,
        options,
        view=view,
        csv_url=csv_url,
        links=links,
        call_tasks_url=call_tasks,
    )


def followup_page(
    filters: Filters, options: FilterOptions, view: FollowupView, *, csv_url: str
) -> str:
    """`/followup`: of the leads and tasks b24-nps created, the loop closed % and the median
    times to the first change and to the close (over the selection, per action and manager),
    the open overdue ones with their escalation, and the CSV export of them all."""

    def link(line: LoopLine, action: bool) -> str:
        assert line.value is not None
        if action:
            narrowed = replace(filters, action=line.value)
        else:
            narrowed = replace(filters, manager=int(line.value))
        return "/followup" + narrowed.query_string()

    links = {
        line.key: link(line, lines is view.actions)
        for lines in (view.actions, view.managers)
        for line in lines
        if line.value is not None
    }
    return _page(
        "followup.html", FOLLOWUP, filters, options, view=view, csv_url=csv_url, links=links
    )


def ops_page(filters: Filters, options: FilterOptions, view: OpsView) -> str:
    """`/ops`: conflicts crm_sync left alone, dead letters waiting per queue, and crm_sync's
    lanes."""
    return _page("ops.html", OPS, filters, options, view=view)


def problems_page(
    item: NavItem, options: FilterOptions, problems: Sequence[str], session: str | None = None
) -> str:
    """`item`'s page without content, naming the filters that cannot be used (links keep the
    frame `session`)."""
    return _page("layout.html", item, Filters(session=session), options, problems=problems)


def frame_refused_page(message: str) -> str:
    """The answer to a frame entry or session that is refused: what is wrong, and to open the
    application from the portal again."""
    return ENV.get_template("frame_refused.html").render(message=message)


@dataclass(frozen=True)
class SettingsForm:
    """The settings page: the portal's YAML in an editor, and what became of the last save."""

    session: str
    csrf: str
    text: str
    version: int | None
    """The stored version the editor started from; None: nothing stored yet (the template)."""
    source: str
    """Where `text` comes from, as shown: `stored version 3 (…)` or the template."""
    may_save: bool
    problems: tuple[str, ...] = ()
    saved: bool = False
    conflict: str | None = None


def settings_page(form: SettingsForm) -> str:
    """`/settings` inside a portal: its configuration in an editor."""
    query = Filters(session=form.session).query_string()
    nav = [NavLink(n.path + query, n.title, False) for n in NAV]
    nav.append(NavLink(settings_url(form.session), "Settings", True))
    return ENV.get_template("settings.html").render(nav=nav, form=form)


def login_page(path: str) -> str:
    """The answer to a request without valid credentials."""
    return ENV.get_template("sign_in.html").render(path=path)
