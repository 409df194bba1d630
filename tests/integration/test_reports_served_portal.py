"""The dashboard and the report API read one portal (issue #22): the one `?portal=` chooses,
else the portal the deployment serves (pinned by `portal.member_id`, else learned by ingest),
never every portal's rows together."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import httpx
import pytest

from services.reports.app import create_app
from services.scoring.handlers import score_submission
from shared.outbox import Outbox
from tests.support import forget_served_portal
from tests.support.scoring import make_submission

TOKEN = "s3cret-served-portal"
BEARER = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
async def portals(pool: asyncpg.Pool) -> AsyncIterator[tuple[str, str]]:
    """Two portals' answers in one database: three serums of the first, one cream of the
    second."""
    first, second = (f"m-served-{uuid.uuid4().hex[:10]}" for _ in range(2))
    answers = [
        (first, "SERUM", 10),
        (first, "SERUM", 3),
        (first, "SERUM", 9),
        (second, "CREAM", 8),
    ]
    for item, (member, sku, score) in enumerate(answers, 1):
        submission = make_submission(
            (sku, score), item_id=item, member_id=member, submitted_at="2024-05-02T10:00:00+03:00"
        )
        await score_submission(pool, Outbox(), submission)
    await forget_served_portal(pool)
    yield first, second
    await forget_served_portal(pool)


@asynccontextmanager
async def reports(pg_dsn: str, **options: Any) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(pg_dsn, TOKEN, **options)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://reports", headers=BEARER
        ) as http:
            yield http


def products(rows: list[dict[str, Any]]) -> dict[str, int]:
    return {row["sku"]: row["answers"] for row in rows}


async def test_the_learned_portal_is_read_unless_another_is_chosen(
    pg_dsn: str, pool: asyncpg.Pool, portals: tuple[str, str]
) -> None:
    first, second = portals
    await pool.execute("INSERT INTO ingest_portal (member_id) VALUES ($1)", first)
    async with reports(pg_dsn) as http:
        served = await http.get("/api/report", params={"by": "product"})
        chosen = await http.get("/api/report", params={"by": "product", "portal": second})
        scores = await http.get("/api/scores", params={"by": "product"})
        page = await http.get("/products")
        other = await http.get("/products", params={"portal": second})
    assert products(served.json()) == {"SERUM": 3}
    assert products(chosen.json()) == {"CREAM": 1}
    assert {row["score"]: row["answers"] for row in scores.json()} == {3: 1, 9: 1, 10: 1}
    assert page.status_code == 200
    assert "SERUM" in page.text
    assert "CREAM" not in page.text
    assert "CREAM" in other.text


async def test_a_pinned_portal_is_read_before_the_learned_one(
    pg_dsn: str, pool: asyncpg.Pool, portals: tuple[str, str]
) -> None:
    first, second = portals
    await pool.execute("INSERT INTO ingest_portal (member_id) VALUES ($1)", first)
    async with reports(pg_dsn, pinned_portal=second) as http:
        served = await http.get("/api/report", params={"by": "product"})
    assert products(served.json()) == {"CREAM": 1}
