"""Deal-survey answers in the NPS reports on the real PostgreSQL: by survey, manager and period."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg

from services.scoring.handlers import score_submission
from services.scoring.report import ReportQuery, run_report
from shared.outbox import Outbox
from tests.support.scoring import make_submission

DEAL_SURVEY: dict[str, Any] = {
    "kind": "deal",
    "entity_type_id": 2,
    "category_id": 20,
    "segment": "After the sale",
}


async def report(pool: asyncpg.Pool, portal: str, **query: Any) -> list[dict[str, Any]]:
    async with pool.acquire() as conn:
        rows = await run_report(conn, ReportQuery(portal=portal, **query))
    return [row.as_dict() for row in rows]


async def test_deal_answers_are_reported_by_survey_manager_and_period(
    pool: asyncpg.Pool,
) -> None:
    member = f"m-deals-{uuid.uuid4().hex[:10]}"
    answers = [(1, 31, 10), (2, 31, 3), (3, 32, 9), (4, 32, 8)]
    for deal_id, manager, score in answers:
        await score_submission(
            pool,
            Outbox(),
            make_submission(
                ("DEAL-SALES", score),
                item_id=deal_id,
                member_id=member,
                responsible_id=manager,
                submitted_at="2024-05-10T10:00:00+03:00",
                updated_at="2024-05-11T10:00:00+03:00",
                **DEAL_SURVEY,
            ),
        )
    # A smart-process item with the id of a deal: an answer of its own.
    await score_submission(
        pool,
        Outbox(),
        make_submission(
            ("EQ-LASER-A", 0),
            item_id=1,
            member_id=member,
            kind="equipment",
            category_id=12,
            segment="Laser A",
            submitted_at="2024-05-10T10:00:00+03:00",
        ),
    )
    [deals] = [row for row in await report(pool, member, by="segment") if row["category_id"] == 20]
    assert (deals["segment"], deals["kind"], deals["nps"], deals["answers"]) == (
        "After the sale",
        "deal",
        25.0,
        4,
    )
    managers = await report(pool, member, by="manager", segment="20")
    assert [(m["manager_id"], m["nps"], m["answers"]) for m in managers] == [
        (31, 0.0, 2),
        (32, 50.0, 2),
    ]
    [may] = await report(pool, member, by="segment", segment="After the sale", period="month")
    assert (may["period_start"], may["nps"]) == ("2024-05-01", 25.0)
