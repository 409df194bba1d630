"""The reports app over HTTP on the real PostgreSQL: same rows as `run_report`, bearer token."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import httpx
import pytest

from services.reports.app import create_app
from services.reports.settings import ReportsSettings
from services.scoring.handlers import score_submission
from services.scoring.report import ReportQuery, cosmetics_left_out_note, run_report
from shared.outbox import Outbox
from tests.support.cosmetics import LEFT_OUT, PER_PRODUCT, score_the_check
from tests.support.scoring import make_submission

TOKEN = "s3cret-reports-token"


@pytest.fixture(scope="module")
async def portal(pool: asyncpg.Pool) -> str:
    member = f"m-http-{uuid.uuid4().hex[:10]}"
    answers = [
        ("SERUM", 10, "2024-05-02T10:00:00+03:00"),
        ("SERUM", 3, "2024-05-20T10:00:00+03:00"),
        ("CREAM", 8, "2024-06-01T10:00:00+03:00"),
    ]
    for item, (sku, score, at) in enumerate(answers, 1):
        await score_submission(
            pool,
            Outbox(),
            make_submission((sku, score), item_id=item, member_id=member, submitted_at=at),
        )
    return member


@asynccontextmanager
async def client(
    pg_dsn: str, token: str, *, authorized: bool = False
) -> AsyncIterator[httpx.AsyncClient]:
    """The app with its real lifespan (its own pool), called in-process."""
    app = create_app(pg_dsn, token)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        headers = bearer(token) if authorized else {}
        async with httpx.AsyncClient(
            transport=transport, base_url="http://reports", headers=headers
        ) as http:
            yield http


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def expected(pool: asyncpg.Pool, **query: Any) -> list[dict[str, Any]]:
    async with pool.acquire() as conn:
        return [row.as_dict() for row in await run_report(conn, ReportQuery(**query))]


async def test_report_rows_match_the_cli_report(
    pg_dsn: str, pool: asyncpg.Pool, portal: str
) -> None:
    async with client(pg_dsn, TOKEN, authorized=True) as http:
        products = await http.get("/api/report", params={"by": "product", "portal": portal})
        trend = await http.get(
            "/api/report",
            params={"by": "product", "period": "month", "portal": portal, "product": "SERUM"},
        )
        ranged = await http.get(
            "/api/report",
            params={"by": "period", "from": "2024-05-01", "to": "2024-05-31", "portal": portal},
        )
    assert products.status_code == 200
    assert products.json() == [
        {
            "sku": "CREAM",
            "name": "cream",
            "nps": 0.0,
            "margin": 0.0,
            "few_answers": True,
            "promoters": 0,
            "passives": 1,
            "detractors": 0,
            "answers": 1,
            "avg_score": 8.0,
        },
        {
            "sku": "SERUM",
            "name": "serum",
            "nps": 0.0,
            "margin": 138.6,
            "few_answers": True,
            "promoters": 1,
            "passives": 0,
            "detractors": 1,
            "answers": 2,
            "avg_score": 6.5,
        },
    ]
    assert products.json() == await expected(pool, by="product", portal=portal)
    assert [(row["period"], row["answers"], row["nps"]) for row in trend.json()] == [
        ("2024-05", 2, 0.0)
    ]
    assert trend.json() == await expected(
        pool, by="product", period="month", portal=portal, product="SERUM"
    )
    assert [(row["period"], row["nps"], row["note"]) for row in ranged.json()] == [
        ("2024-05-01..2024-05-31", None, cosmetics_left_out_note(2))
    ]


async def test_too_few_answers_follows_the_configured_threshold(pg_dsn: str, portal: str) -> None:
    app = create_app(pg_dsn, TOKEN, min_answers=2)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://reports", headers=bearer(TOKEN)
        ) as http:
            rows = await http.get("/api/report", params={"by": "product", "portal": portal})
    assert [(r["sku"], r["answers"], r["few_answers"]) for r in rows.json()] == [
        ("CREAM", 1, True),
        ("SERUM", 2, False),
    ]


async def test_token_is_required_when_configured(pg_dsn: str, portal: str) -> None:
    params = {"by": "segment", "portal": portal}
    async with client(pg_dsn, TOKEN) as http:
        missing = await http.get("/api/report", params=params)
        wrong = await http.get("/api/report", params=params, headers=bearer("nope"))
        basic = await http.get(
            "/api/report", params=params, headers={"Authorization": f"Basic {TOKEN}"}
        )
        right = await http.get("/api/report", params=params, headers=bearer(TOKEN))
        health = await http.get("/healthz")
    for response in (missing, wrong, basic):
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == "Bearer"
        assert "bearer token" in response.json()["detail"]
    assert right.status_code == 200
    assert [row["segment"] for row in right.json()] == ["Cosmetics"]
    assert right.json()[0]["nps"] is None
    assert health.json() == {"status": "ok"}


async def test_the_api_description_needs_the_token_and_no_page_loads_a_cdn(pg_dsn: str) -> None:
    async with client(pg_dsn, TOKEN) as http:
        missing = await http.get("/openapi.json")
        right = await http.get("/openapi.json", headers=bearer(TOKEN))
        pages = [await http.get(path, headers=bearer(TOKEN)) for path in ("/docs", "/redoc")]
    assert missing.status_code == 401
    assert right.status_code == 200
    assert "/api/report" in right.json()["paths"]
    assert [page.status_code for page in pages] == [404, 404]


@pytest.mark.parametrize(
    ("params", "field", "problem"),
    [
        ({"from": "2024-06-01", "to": "2024-05-01"}, "query", "from (2024-06-01) is after to"),
        ({"by": "colour"}, "by", "product"),
        ({"period": "fortnight"}, "period", "week"),
        ({"from": "yesterday"}, "from", "date"),
        ({"manager": "0"}, "manager", "greater than or equal to 1"),
    ],
)
async def test_bad_parameters_are_named(
    pg_dsn: str, params: dict[str, str], field: str, problem: str
) -> None:
    async with client(pg_dsn, TOKEN, authorized=True) as http:
        response = await http.get("/api/report", params=params)
    assert response.status_code == 422
    details = response.json()["detail"]
    text = str(details)
    assert field in text
    assert problem in text


def test_settings_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REPORTS_HOST", "0.0.0.0")
    monkeypatch.setenv("REPORTS_PORT", "9001")
    monkeypatch.setenv("REPORTS_TOKEN", TOKEN)
    configured = ReportsSettings(_env_file=None)
    assert (configured.host, configured.port) == ("0.0.0.0", 9001)
    assert configured.token is not None
    assert configured.token.get_secret_value() == TOKEN
    assert TOKEN not in repr(configured)
    monkeypatch.setenv("REPORTS_TOKEN", " ")
    monkeypatch.delenv("REPORTS_HOST")
    monkeypatch.delenv("REPORTS_PORT")
    defaults = ReportsSettings(_env_file=None)
    assert (defaults.host, defaults.port, defaults.token) == ("127.0.0.1", 8001, None)


@pytest.fixture(scope="module")
async def check_portal(pool: asyncpg.Pool) -> str:
    member = f"m-http-check-{uuid.uuid4().hex[:10]}"
    await score_the_check(pool, member)
    return member


@pytest.mark.parametrize(
    "params",
    [
        {"by": "period"},
        {"by": "period", "period": "range"},
        {"by": "manager"},
        {"by": "manager", "period": "week"},
    ],
    ids=["period", "range", "manager", "manager-weekly"],
)
async def test_the_cosmetics_check_has_no_aggregate_nps(
    pg_dsn: str, check_portal: str, params: dict[str, str]
) -> None:
    async with client(pg_dsn, TOKEN, authorized=True) as http:
        response = await http.get("/api/report", params={**params, "portal": check_portal})
    assert response.status_code == 200
    rows = response.json()
    assert [row["note"] for row in rows if row["note"]] == [LEFT_OUT]
    assert all(row["nps"] is None and row["answers"] == 0 for row in rows)


async def test_the_cosmetics_check_per_segment_and_product(pg_dsn: str, check_portal: str) -> None:
    async with client(pg_dsn, TOKEN, authorized=True) as http:
        segments = await http.get("/api/report", params={"by": "segment", "portal": check_portal})
        products = await http.get("/api/report", params={"by": "product", "portal": check_portal})
    [segment] = segments.json()
    assert (segment["nps"], segment["answers"]) == (None, 5)
    assert {row["sku"]: row["nps"] for row in products.json()} == PER_PRODUCT
