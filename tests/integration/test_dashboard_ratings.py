"""The all-ratings page and its CSV export on the real PostgreSQL: every current answer, the
filters applied, a page at a time on the page and all pages in the CSV, the comment themes'
counts, and cells a spreadsheet would run as formulas made harmless."""

from __future__ import annotations

import csv
import io
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import httpx
import pytest

from services.reports import app as app_module
from services.reports.app import create_app
from services.reports.dashboard import RATINGS_PAGE_SIZE
from services.reports.views import CSV_HEADER
from services.scoring.handlers import score_submission
from shared.outbox import Outbox
from tests.support.dashboard import figures
from tests.support.scoring import make_submission

TOKEN = "ratings-token-4b2d"
WEBHOOK = "https://acme.bitrix24.ru/rest/1/w3bh00k-s3cret/"
ORIGIN = "https://acme.bitrix24.ru"
BEARER = {"Authorization": f"Bearer {TOKEN}"}
LASER: dict[str, Any] = {"kind": "equipment", "category_id": 12, "segment": "Laser A"}
THEMES = {"delivery": ("доставк", "courier"), "price": ("дорог", "price")}
FORMULAS = ['=HYPERLINK("http://evil")', "+1+2", "-3", "@SUM(A1)"]
FILLERS = RATINGS_PAGE_SIZE + 5
"""Promoters without a comment, enough to need a second page."""


@pytest.fixture(scope="module")
async def portal(pool: asyncpg.Pool) -> str:
    member = f"m-rate-{uuid.uuid4().hex[:10]}"
    special: list[tuple[int, int | None, str, dict[str, Any]]] = [
        (1, 2, "2024-05-01T09:00:00+03:00", {"comment": "ДОСТАВКА опоздала", "contact_id": 601}),
        (2, 8, "2024-05-02T09:00:00+03:00", {"comment": "The courier was late, price is ok"}),
        (3, 5, "2024-05-03T09:00:00+03:00", {"comment": "Слишком дорого", "responsible_id": 7}),
        (4, None, "2024-05-04T09:00:00+03:00", {"comment": "100% _broken_", "contact_id": None}),
        *[
            (5 + i, 0, f"2024-05-0{5 + i}T09:00:00+03:00", {"comment": text})
            for i, text in enumerate(FORMULAS)
        ],
    ]
    for item, score, at, extra in special:
        await score_submission(
            pool,
            Outbox(),
            make_submission(
                ("LASER", score),
                item_id=item,
                member_id=member,
                submitted_at=at,
                updated_at=at,
                **{**LASER, "responsible_id": 5, **extra},
            ),
        )
    for n in range(FILLERS):
        at = f"2024-06-{1 + n % 28:02d}T{8 + n // 28:02d}:00:00+03:00"
        await score_submission(
            pool,
            Outbox(),
            make_submission(
                ("LASER", 10),
                item_id=100 + n,
                member_id=member,
                submitted_at=at,
                updated_at=at,
                **{**LASER, "comment": None},
            ),
        )
    async with pool.acquire() as conn:
        await conn.execute(
            "INSERT INTO ingest_users (portal, user_id, name, refreshed_at)"
            " VALUES ($1, 7, 'Olga Petrova', now())",
            member,
        )
    return member


@asynccontextmanager
async def client(pg_dsn: str) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(pg_dsn, TOKEN, portal_url=WEBHOOK, themes=THEMES)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://reports") as http:
            yield http


async def rows_of(http: httpx.AsyncClient, **params: str) -> dict[str, dict[str, str]]:
    page = await http.get("/ratings", params=params, headers=BEARER)
    assert page.status_code == 200, page.text
    return {key: row for key, row in figures(page.text).items() if ":" in key}


async def csv_of(http: httpx.AsyncClient, **params: str) -> list[list[str]]:
    answer = await http.get("/ratings.csv", params=params, headers=BEARER)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "text/csv; charset=utf-8"
    assert "attachment" in answer.headers["content-disposition"]
    assert answer.content.startswith(b"\xef\xbb\xbf")
    return list(csv.reader(io.StringIO(answer.content.decode("utf-8-sig"))))


async def test_the_page_lists_answers_newest_first_a_page_at_a_time(
    pg_dsn: str, portal: str
) -> None:
    async with client(pg_dsn) as http:
        first = await http.get("/ratings", params={"portal": portal}, headers=BEARER)
        later = await http.get("/ratings", params={"portal": portal, "page": "2"}, headers=BEARER)
    second = {k: v for k, v in figures(later.text).items() if ":" in k}
    shown = {k: v for k, v in figures(first.text).items() if ":" in k}
    total = FILLERS + 4 + len(FORMULAS)
    assert len(shown) == RATINGS_PAGE_SIZE
    assert f"1\N{EN DASH}{RATINGS_PAGE_SIZE} of {total}" in first.text
    assert 'rel="next"' in first.text
    assert 'rel="prev"' not in first.text
    assert len(second) == total - RATINGS_PAGE_SIZE
    assert not set(shown) & set(second)
    oldest = second[next(k for k in second if k.split(":")[-2] == "1")]
    assert oldest == {
        "sent": "—",  # not asked by dispatch
        "survey": "Laser A",
        "item": "item 1",
        "product": "laser (LASER)",
        "score": "2",
        "category": "detractor",
        "comment": "ДОСТАВКА опоздала",
        "manager": "user 5",
        "contact_id": "601",
    }
    assert f'href="{ORIGIN}/crm/type/1038/details/1/"' in later.text
    assert f'href="{ORIGIN}/crm/contact/details/601/"' in later.text
    assert 'rel="prev"' in later.text
    assert 'rel="next"' not in later.text


async def test_filters_narrow_the_list(pg_dsn: str, portal: str) -> None:
    async with client(pg_dsn) as http:
        detractors = await rows_of(http, portal=portal, category="detractor")
        unscored = await rows_of(http, portal=portal, category="none")
        commented = await rows_of(http, portal=portal, comment="yes")
        searched = await rows_of(http, portal=portal, q="доставка")
        literal = await rows_of(http, portal=portal, q="0%")
        themed = await rows_of(http, portal=portal, theme="price")
        managed = await rows_of(http, portal=portal, manager="7")
        may = await rows_of(http, portal=portal, **{"from": "2024-05-01", "to": "2024-05-31"})
        bad = await http.get("/ratings", params={"theme": "weather", "page": "0"}, headers=BEARER)

    def comments(rows: dict[str, dict[str, str]]) -> set[str]:
        return {row["comment"] for row in rows.values()}

    assert comments(detractors) == {"ДОСТАВКА опоздала", "Слишком дорого", *FORMULAS}
    assert comments(unscored) == {"100% _broken_"}
    assert len(commented) == 4 + len(FORMULAS)
    assert comments(searched) == {"ДОСТАВКА опоздала"}
    assert comments(literal) == {"100% _broken_"}
    assert comments(themed) == {"The courier was late, price is ok", "Слишком дорого"}
    assert [row["manager"] for row in managed.values()] == ["Olga Petrova"]
    assert len(may) == 4 + len(FORMULAS)
    assert bad.status_code == 422
    assert "theme: expected one of delivery, price, got &#x27;weather&#x27;" in bad.text
    assert "page: expected a page number from 1" in bad.text


async def test_theme_counts_follow_the_other_filters(pg_dsn: str, portal: str) -> None:
    async with client(pg_dsn) as http:
        everything = await http.get("/ratings", params={"portal": portal}, headers=BEARER)
        detractors = await http.get(
            "/ratings",
            params={"portal": portal, "category": "detractor", "theme": "price"},
            headers=BEARER,
        )
    counts = figures(everything.text)
    assert counts["theme-delivery"] == {"answers": "2"}
    assert counts["theme-price"] == {"answers": "2"}
    narrowed = figures(detractors.text)
    assert narrowed["theme-delivery"] == {"answers": "1"}
    assert narrowed["theme-price"] == {"answers": "1"}


async def test_the_csv_holds_every_page_of_what_the_filters_show(pg_dsn: str, portal: str) -> None:
    async with client(pg_dsn) as http:
        every = await csv_of(http, portal=portal, page="2")
        page_rows = await rows_of(http, portal=portal) | await rows_of(
            http, portal=portal, page="2"
        )
        themed = await csv_of(http, portal=portal, theme="delivery", category="detractor")
    header, *rows = every
    assert tuple(header) == CSV_HEADER
    assert len(rows) == len(page_rows) == FILLERS + 4 + len(FORMULAS)
    by_item = {row[3]: row for row in rows}
    assert by_item["item 3"] == [
        "",
        "2024-05-03 06:00 UTC",
        "Laser A",
        "item 3",
        f"{ORIGIN}/crm/type/1038/details/3/",
        "laser (LASER)",
        "5",
        "detractor",
        "",
        "Слишком дорого",
        "Olga Petrova",
        "501",
        f"{ORIGIN}/crm/contact/details/501/",
    ]
    assert [row[9] for row in themed[1:]] == ["ДОСТАВКА опоздала"]


async def test_the_csv_cannot_run_formulas(pg_dsn: str, portal: str) -> None:
    async with client(pg_dsn) as http:
        rows = await csv_of(http, portal=portal, category="detractor")
    comments = [row[9] for row in rows[1:]]
    assert sorted(c for c in comments if c.startswith("'")) == sorted("'" + f for f in FORMULAS)
    for row in rows:
        assert not any(cell.startswith(("=", "+", "-", "@")) for cell in row)


async def test_the_csv_needs_the_token(pg_dsn: str, portal: str) -> None:
    async with client(pg_dsn) as http:
        refused = await http.get("/ratings.csv", params={"portal": portal})
        wrong = await http.get("/ratings.csv", params={"category": "angry"}, headers=BEARER)
    assert refused.status_code == 401
    assert "text/csv" not in refused.headers["content-type"]
    assert wrong.status_code == 422
    assert "category: expected one of promoter, passive, detractor, none" in wrong.text


async def test_the_csv_comes_in_chunks_without_losing_or_repeating_a_row(
    pg_dsn: str, portal: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with client(pg_dsn) as http:
        whole = await csv_of(http, portal=portal)
        monkeypatch.setattr(app_module, "CSV_BATCH", 4)
        chunked = await csv_of(http, portal=portal)
    assert chunked == whole
    assert len({tuple(row) for row in chunked[1:]}) == FILLERS + 4 + len(FORMULAS)
