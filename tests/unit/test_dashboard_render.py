"""Dashboard HTML: escaping, the figures a page shows, the filter form and the style sheet.

Pages are read with `figures(html)` of `tests.support.dashboard`, as the integration and browser
tests read them.
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import replace
from datetime import UTC, date, datetime
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from services.ingest.read import UnmappedCategory
from services.reports import pages
from services.reports.asked import AskedView, asked_lines, by_manager, by_period, by_survey, total
from services.reports.filters import Filters
from services.reports.followup import Escalations, FollowupView, Loop, overdue_lines
from services.reports.followup import by_action as followup_by_action
from services.reports.followup import by_manager as followup_by_manager
from services.reports.views import (
    Counts,
    FilterOptions,
    ProductInfo,
    ThemeCount,
    attention_lines,
    change,
    distribution,
    manager_lines,
    ops_view,
    pager,
    product_lines,
    rating_lines,
    trend_chart,
)
from services.scoring.nps import nps_margin, too_few_answers
from shared.dispatch_config import Dispatch, Followup
from tests.support.dashboard import figures, shown, shown_scores

SCRIPT = "<script>alert('x')</script>"


def report_row(
    nps: float | None, p: int, n: int, d: int, avg: float | None, **keys: Any
) -> dict[str, Any]:
    return {
        **keys,
        "nps": nps,
        "margin": None if nps is None else nps_margin(p, d, p + n + d),
        "few_answers": too_few_answers(p + n + d),
        "promoters": p,
        "passives": n,
        "detractors": d,
        "answers": p + n + d,
        "avg_score": avg,
    }


NO_SCORES = distribution({})

OPTIONS = FilterOptions(
    portals=("portal-a",),
    segments=((10, "Cosmetics"), (12, "Laser A")),
    catalogue={"EQ-1": ProductInfo("Laser <A>", ("Laser A",), ("equipment",))},
    managers=(5, 7),
)


class _Markup(HTMLParser):
    """The elements and attributes a browser would build from a page."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: set[str] = set()
        self.attributes: set[str] = set()
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        self.attributes.update(name for name, _ in attrs)

    def handle_data(self, data: str) -> None:
        self.text.append(data)


EVIL = f'{SCRIPT} " onmouseover="evil()" \' onfocus=\'evil()'
"""Customer text trying to close an attribute (either quote) and to open a script."""


def _pages_with_customer_text() -> dict[str, str]:
    """Every page, with `EVIL` in every piece of text that comes from customers or the portal."""
    options = FilterOptions(
        portals=("portal-a", EVIL),
        segments=((10, EVIL),),
        catalogue={"EQ-1": ProductInfo(EVIL, (EVIL,), (EVIL,))},
        managers=(5,),
        manager_names={5: EVIL},
        themes=(EVIL,),
    )
    filters = Filters(segment=EVIL, product=EVIL, portal=EVIL, search=EVIL, theme=EVIL)
    answer = {
        "answer_id": f"p:1:{EVIL}",
        "entity_type_id": 1038,
        "item_id": 1,
        "segment": EVIL,
        "sku": EVIL,
        "product_name": EVIL,
        "score": 2,
        "category": "detractor",
        "comment": EVIL,
        "service_request": True,
        "contact_id": 501,
        "responsible_id": 5,
        "submitted_at": datetime(2024, 5, 2, 7, 0, tzinfo=UTC),
    }
    conflict = {
        "id": 4,
        "contact_id": 501,
        "field": EVIL,
        "reason": EVIL,
        "current_value": json.dumps(EVIL),
        "proposed_value": json.dumps({"v": EVIL}),
        "answer_id": EVIL,
        "created_at": datetime(2024, 6, 1, tzinfo=UTC),
    }
    product = report_row(-60.0, 1, 0, 4, 3.2, sku=EVIL, name=EVIL)
    trend = [report_row(-60.0, 1, 0, 4, 3.2, sku=EVIL, period=EVIL)]
    summary = Counts(-100.0, 0, 0, 1, 1, 2.0)
    return {
        "trend": pages.trend_page(
            filters,
            options,
            trend_chart(trend),
            summary,
            EVIL,
            api_url=f"/api?{EVIL}",
            scores=NO_SCORES,
        ),
        "products": pages.products_page(
            filters,
            options,
            product_lines([product], trend, options.catalogue),
            api_url="/",
            scores=NO_SCORES,
        ),
        "managers": pages.managers_page(
            filters,
            options,
            manager_lines([{**product, "manager_id": 5}]),
            api_url="/",
            scores=NO_SCORES,
        ),
        "attention": pages.attention_page(
            filters, options, attention_lines([answer], EVIL), summary, 50, api_url="/"
        ),
        "ratings": pages.ratings_page(
            filters,
            options,
            rating_lines([answer], EVIL, names={5: EVIL}),
            pager(2, 50, 1, 99, lambda n: f"/ratings?page={n}&q={EVIL}"),
            [ThemeCount(EVIL, 1, f"/ratings?theme={EVIL}", True)],
            csv_url=f"/ratings.csv?q={EVIL}",
        ),
        "asked": pages.asked_page(filters, options, _asked_view(), csv_url=f"/asked.csv?{EVIL}"),
        "followup": pages.followup_page(
            replace(filters, action=EVIL), options, _followup_view(), csv_url=f"/f.csv?{EVIL}"
        ),
        "ops": pages.ops_page(
            filters, options, ops_view(1, [conflict], {EVIL: 1}, [EVIL], "https://a.b")
        ),
        "problems": pages.problems_page(pages.OPS, options, [EVIL]),
        "sign-in": pages.login_page(f"/{EVIL}"),
    }


def _asked_view() -> AskedView:
    """The "Asked" page with `EVIL` in the survey names, products, managers and reasons."""
    funnel = {"sent": 3, "opened": 2, "answered": 1, "awaiting": 1, "unanswered": 1}
    rows = [{"day": date(2026, 12, 7), "survey": EVIL, "responsible_id": 5, **funnel}]
    sent = datetime(2026, 12, 7, 10, 0, tzinfo=UTC)
    request = {
        "request_id": EVIL,
        "portal": EVIL,
        "survey": EVIL,
        "kind": "segment",
        "sku": EVIL,
        "contact_id": 42,
        "responsible_id": 5,
        "sale_deal_id": 500,
        "nps_deal_id": None,
        "channel": "email",
        "state": "unanswered",
        "reason": EVIL,
        "sends": 2,
        "due_at": None,
        "sent_at": sent,
        "last_sent_at": sent,
        "opened_at": None,
        "answered_at": None,
        "closed_at": sent,
        "call_task_id": None,
    }
    lines = tuple(asked_lines([request], EVIL, Dispatch(), names={5: EVIL}))
    return AskedView(
        funnel=total(rows),
        change=None,
        surveys=tuple(by_survey(rows)),
        managers=tuple(by_manager(rows, {5: EVIL})),
        periods=tuple(by_period(rows, lambda day: (day, EVIL))),
        awaiting=lines,
        awaiting_total=1,
        unanswered=lines,
        unanswered_total=1,
        register=EVIL,
    )


def _followup_view() -> FollowupView:
    """The "Follow-up" page with `EVIL` in the managers' names, statuses and reasons."""
    loop = {
        "followed": 2,
        "open": 1,
        "in_work": 0,
        "closed": 1,
        "closed_pct": 50.0,
        "median_hours_to_change": 1.0,
        "median_hours_to_close": 1.0,
        "overdue": 1,
        "escalated": 0,
    }
    created = datetime(2026, 12, 7, 10, 0, tzinfo=UTC)
    overdue = {
        "follow_id": EVIL,
        "action": EVIL,
        "entity_type": "task",
        "entity_id": 7,
        "responsible_id": 5,
        "manager_id": 5,
        "contact_id": 42,
        "state": EVIL,
        "status": EVIL,
        "created_at": created,
        "due_at": created,
        "sla_hours": 4.0,
        "sla_working_hours": False,
        "sla_until": EVIL,
        "escalation": "failed",
        "escalated_to": 5,
        "escalation_task_id": None,
        "escalation_reason": EVIL,
        "hours_overdue": 1.0,
    }
    escalations = Escalations(failed=1)
    return FollowupView(
        loop=Loop.of(loop),
        change=None,
        actions=tuple(followup_by_action([{"key": EVIL, **loop}], Followup())),
        managers=tuple(followup_by_manager([{"key": 5, **loop}], {5: EVIL})),
        escalations=escalations,
        overdue=tuple(overdue_lines([overdue], EVIL, names={5: EVIL})),
        overdue_total=1,
        followed_in_all=2,
    )


@pytest.mark.parametrize("name", list(_pages_with_customer_text()))
def test_customer_text_with_script_and_quotes_is_text_on_every_page(name: str) -> None:
    page = _pages_with_customer_text()[name]
    markup = _Markup()
    markup.feed(page)
    markup.close()
    assert "script" not in markup.tags
    assert not {"onmouseover", "onfocus", "evil()"} & markup.attributes
    assert "<script" not in page
    assert any(EVIL in text for text in markup.text)


def test_comments_and_names_with_script_are_shown_as_text() -> None:
    records = [
        {
            "answer_id": "p:1:EQ-1",
            "entity_type_id": 1038,
            "item_id": 1,
            "segment": SCRIPT,
            "sku": "EQ-1",
            "product_name": SCRIPT,
            "score": 2,
            "category": "detractor",
            "comment": f"broken {SCRIPT}\nagain",
            "service_request": True,
            "contact_id": 501,
            "responsible_id": 5,
            "submitted_at": datetime(2024, 5, 2, 7, 0, tzinfo=UTC),
        }
    ]
    lines = attention_lines(records, "https://acme.bitrix24.ru")
    filters = Filters(product=SCRIPT, portal="portal-a")
    summary = Counts(-100.0, 0, 0, 1, 1, 2.0)
    page = pages.attention_page(filters, OPTIONS, lines, summary, 50, api_url="/api/report")
    assert "<script" not in page
    assert "&lt;script&gt;" in page
    assert figures(page)["p:1:EQ-1"]["comment"] == f"broken {SCRIPT}\nagain"
    assert figures(page)["p:1:EQ-1"]["contact_id"] == "501"
    assert 'href="https://acme.bitrix24.ru/crm/type/1038/details/1/"' in page
    assert 'href="https://acme.bitrix24.ru/crm/contact/details/501/"' in page
    assert 'rel="noopener noreferrer"' in page
    assert "service request" in page


def test_trend_page_shows_every_period_and_the_summary() -> None:
    rows = [
        report_row(-33.3, 1, 0, 2, 5.33, period="2024-05"),
        report_row(None, 0, 0, 0, None, period="2024-06"),
        report_row(100.0, 1, 0, 0, 10.0, period="2024-07"),
    ]
    summary = report_row(0.0, 2, 0, 2, 6.5, period="all")
    chart = trend_chart(rows)
    page = pages.trend_page(
        Filters(),
        OPTIONS,
        chart,
        Counts.of(summary),
        "month",
        api_url="/api/report?by=period",
        scores=NO_SCORES,
    )
    shown_rows = figures(page)
    for row in rows:
        assert shown_rows[row["period"]] == shown(row)
    assert shown_rows["summary"] == shown(summary)
    assert page.count("<circle") == 2
    assert page.count('class="bar"') == 2
    assert "<details open>" in page
    assert 'href="/api/report?by=period"' in page


NOTE = "equipment only: 2 cosmetics answers left out (no NPS across cosmetics products)"


def test_trend_and_managers_show_the_notes_of_rows_that_left_cosmetics_out() -> None:
    rows = [
        {**report_row(None, 0, 0, 0, None, period="2024-05"), "note": NOTE},
        {**report_row(100.0, 1, 0, 0, 10.0, period="2024-06"), "note": None},
    ]
    summary = {**report_row(100.0, 1, 0, 0, 10.0, period="all"), "note": NOTE}
    page = pages.trend_page(
        Filters(),
        OPTIONS,
        trend_chart(rows),
        Counts.of(summary),
        "month",
        api_url="/api",
        scores=NO_SCORES,
    )
    assert figures(page) == {
        "2024-05": {**shown(rows[0]), "note": NOTE},
        "2024-06": shown(rows[1]),
        "summary": {**shown(summary), "note": NOTE},
    }
    assert "<th>note</th>" in page

    managers = [{**report_row(None, 0, 0, 0, None), "manager_id": 7, "note": NOTE}]
    page = pages.managers_page(
        Filters(), OPTIONS, manager_lines(managers), api_url="/api", scores=NO_SCORES
    )
    assert figures(page) == {"7": {**shown(managers[0]), "note": NOTE}}
    assert "<th>note</th>" in page


def test_tables_without_notes_have_no_note_column() -> None:
    rows = [{**report_row(100.0, 1, 0, 0, 10.0, period="2024-06"), "note": None}]
    page = pages.trend_page(
        Filters(),
        OPTIONS,
        trend_chart(rows),
        Counts.of(rows[0]),
        "month",
        api_url="/api",
        scores=NO_SCORES,
    )
    assert "<th>note</th>" not in page
    assert 'data-col="note"' not in page


def test_an_empty_trend_says_there_are_no_answers() -> None:
    empty = Counts(None, 0, 0, 0, 0, None)
    body = pages.trend_page(
        Filters(), OPTIONS, trend_chart([]), empty, "week", api_url="/api", scores=NO_SCORES
    )
    assert "No answers for these filters." in body
    assert "<svg" not in body


def test_products_and_managers_pages_show_the_report_rows() -> None:
    products = [
        report_row(-60.0, 1, 0, 4, 3.2, sku="EQ-1", name="Laser <A>"),
        report_row(50.0, 1, 1, 0, 8.5, sku="COS-1", name="Serum"),
    ]
    trend = [report_row(-60.0, 1, 0, 4, 3.2, sku="EQ-1", period="2024-05")]
    lines = product_lines(products, trend, OPTIONS.catalogue)
    page = pages.products_page(
        Filters(period="week", portal="portal-a"), OPTIONS, lines, api_url="/", scores=NO_SCORES
    )
    assert figures(page) == {row["sku"]: shown(row) for row in products}
    assert "Laser &lt;A&gt;" in page
    assert 'href="/?product=EQ-1&amp;period=week&amp;portal=portal-a"' in page
    assert 'class="d"' in page
    assert "trend by week" in page

    managers = [
        {**report_row(20.0, 2, 2, 1, 7.8), "manager_id": 7},
        {**report_row(-100.0, 0, 0, 1, 1.0), "manager_id": None},
    ]
    page = pages.managers_page(
        Filters(), OPTIONS, manager_lines(managers), api_url="/api", scores=NO_SCORES
    )
    assert figures(page) == {"7": shown(managers[0]), "none": shown(managers[1])}
    assert 'href="/?manager=7"' in page


def test_filter_form_keeps_every_filter_in_the_url() -> None:
    filters = Filters(segment="Cosmetics", product="EQ-1", manager=9, period="week", portal="p-x")
    page = pages.managers_page(filters, OPTIONS, [], api_url="/api", scores=NO_SCORES)
    assert '<option value="Cosmetics" selected>Cosmetics</option>' in page
    assert '<option value="EQ-1" selected>Laser &lt;A&gt; (EQ-1)</option>' in page
    assert '<option value="9" selected>9</option>' in page
    assert '<input type="hidden" name="period" value="week">' in page
    assert '<option value="p-x" selected>p-x</option>' in page
    query = "?segment=Cosmetics&amp;product=EQ-1&amp;manager=9&amp;period=week&amp;portal=p-x"
    for item in pages.NAV:
        assert f'href="{item.path}{query}"' in page
    assert 'class="on">Managers</a>' in page


def test_ops_page_shows_conflicts_and_unknown_queue_sizes() -> None:
    conflict = {
        "id": 4,
        "contact_id": 501,
        "field": "UF_CRM_NPS",
        "reason": "legacy value kept",
        "current_value": f'"{SCRIPT}"',
        "proposed_value": "9",
        "answer_id": "p:1:EQ-1",
        "created_at": datetime(2024, 6, 1, tzinfo=UTC),
    }
    view = ops_view(1, [conflict], None, ["scoring.submissions"], None)
    page = pages.ops_page(Filters(), OPTIONS, view)
    assert figures(page) == {
        "conflicts": {"total": "1"},
        "4": {},
        "scoring.submissions": {"size": "unknown"},
    }
    assert "<script" not in page
    assert "RabbitMQ did not answer" in page
    assert page.index("<h2>Dead letters</h2>") < page.index("<h2>Conflicts</h2>")
    titled = ops_view(1, [conflict], None, [], None, field_titles={"UF_CRM_NPS": "NPS score"})
    assert '<td title="UF_CRM_NPS">NPS score<div class="muted">UF_CRM_NPS</div></td>' in (
        pages.ops_page(Filters(), OPTIONS, titled)
    )
    missing = pages.ops_page(
        Filters(),
        OPTIONS,
        ops_view(None, [], {"scoring.submissions": 2}, ["scoring.submissions"], None),
    )
    assert "is not in this database" in missing
    assert figures(missing)["scoring.submissions"] == {"size": "2"}
    assert 'class="num alert"' in missing


def test_ops_page_lists_answers_waiting_for_a_segment() -> None:
    at = datetime(2024, 6, 1, tzinfo=UTC)
    held = [UnmappedCategory(16, 3, at, at), UnmappedCategory(18, 1, at, at)]
    page = pages.ops_page(Filters(), OPTIONS, ops_view(None, [], None, [], None, unmapped=held))
    assert figures(page) == {"category-16": {"answers": "3"}, "category-18": {"answers": "1"}}
    assert "Add a segment for each category to the portal YAML" in page
    empty = pages.ops_page(Filters(), OPTIONS, ops_view(None, [], None, [], None))
    assert "None: every category that sent answers has a segment." in empty
    missing = pages.ops_page(Filters(), OPTIONS, ops_view(None, [], None, [], None, unmapped=None))
    assert "(ingest_unmapped_items) is not in this database" in missing


def test_sign_in_page_says_how_to_get_in() -> None:
    page = pages.login_page("/products")
    assert "/products?token=&lt;REPORTS_TOKEN&gt;" in page
    assert "Authorization: Bearer" in page


def test_problems_are_listed_escaped() -> None:
    notice = pages.problems_page(pages.TREND, OPTIONS, [f"product: {SCRIPT}"])
    assert "<li>product: &lt;script&gt;" in notice


def test_pages_take_their_style_sheet_from_the_app_and_the_policy_allows_only_it() -> None:
    page = pages.ops_page(Filters(), OPTIONS, ops_view(None, [], {}, [], None))
    assert f'<link rel="stylesheet" href="{pages.STYLESHEET}">' in page
    assert pages.STYLESHEET.startswith(pages.STYLESHEET_PATH + "?v=")
    assert "<style" not in page
    assert " style=" not in page
    assert "style-src 'self';" in pages.CONTENT_SECURITY_POLICY
    assert "unsafe-inline" not in pages.CONTENT_SECURITY_POLICY
    assert "script-src" not in pages.CONTENT_SECURITY_POLICY
    assert "default-src 'none'" in pages.CONTENT_SECURITY_POLICY


def test_every_template_and_static_file_is_package_data() -> None:
    """A non-editable install (the Docker image) gets only the files pyproject.toml lists."""
    root = Path(__file__).resolve().parents[2]
    package = root / "services" / "reports"
    listed = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"
    ]["services.reports"]
    shipped = {path for pattern in listed for path in package.glob(pattern)}
    needed = {
        path
        for folder in ("templates", "static")
        for path in (package / folder).rglob("*")
        if path.is_file()
    }
    assert needed
    assert needed <= shipped, sorted(str(p.relative_to(package)) for p in needed - shipped)


def test_pages_show_how_sure_each_nps_is_and_the_score_distribution() -> None:
    rows = [report_row(-28.6, 1, 3, 3, 5.71, period="2024-W10")]
    summary = report_row(-28.6, 1, 3, 3, 5.71, period="all")
    scores = distribution({3: 2, 5: 1, 7: 2, 8: 1, 10: 1})
    page = pages.trend_page(
        Filters(),
        OPTIONS,
        trend_chart(rows),
        Counts.of(summary),
        "week",
        api_url="/",
        scores=scores,
    )
    shown_rows = figures(page)
    assert shown_rows["2024-W10"]["margin"] == "±51.8"
    assert shown_rows["2024-W10"]["few_answers"] == "unreliable: 7 answers"
    assert shown_rows["summary"]["few_answers"] == "unreliable: 7 answers"
    assert "too few answers to rely on this NPS" in page
    assert shown_rows["scores"] == shown_scores(
        [
            {"score": 3, "answers": 2},
            {"score": 5, "answers": 1},
            {"score": 7, "answers": 2},
            {"score": 8, "answers": 1},
            {"score": 10, "answers": 1},
        ]
    )
    assert shown_rows["scores"]["4"] == "0"
    assert "Scores given (7 answers)" in page

    many = [{**report_row(20.0, 20, 10, 10, 7.5), "manager_id": 5}]
    page = pages.managers_page(
        Filters(), OPTIONS, manager_lines(many), api_url="/", scores=distribution({9: 20})
    )
    assert figures(page)["5"] == shown(many[0])
    assert figures(page)["scores"]["9"] == "20"
    assert "few_answers" not in figures(page)["5"]
    assert "unreliable" not in page


def test_summary_shows_the_change_and_the_form_offers_date_presets() -> None:
    now = Counts.of(report_row(20.0, 20, 10, 10, 7.5, period="all"))
    before = Counts.of(report_row(-10.0, 10, 10, 20, 6.0, period="all"))
    delta = change(now, before, date(2026, 11, 7), date(2026, 12, 6))
    filters = Filters(date_from=date(2026, 12, 7), date_to=date(2027, 1, 5), preset="30d")
    for page in (
        pages.trend_page(
            filters,
            OPTIONS,
            trend_chart([]),
            now,
            "month",
            api_url="/",
            scores=NO_SCORES,
            delta=delta,
        ),
        pages.attention_page(filters, OPTIONS, [], now, 50, api_url="/", delta=delta),
    ):
        assert figures(page)["change"] == {
            "nps": "+30.0",
            "previous_nps": "-10.0",
            "answers": "+0",
            "previous_answers": "40",
        }
        assert "Against the previous 30 days (2026-11-07 … 2026-12-06)" in page
        assert '<option value="30d" selected>last 30 days</option>' in page
        assert '<option value="">custom dates</option>' in page
        assert '<input type="date" name="from" value="2026-12-07">' in page
        assert 'href="/managers?dates=30d"' in page
    plain = pages.trend_page(
        Filters(), OPTIONS, trend_chart([]), now, "month", api_url="/", scores=NO_SCORES
    )
    assert "change" not in figures(plain)
    assert '<option value="" selected>custom dates</option>' in plain
