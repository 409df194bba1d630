"""The dashboard's own queries on the real PostgreSQL (besides the report, which has its own)."""

from __future__ import annotations

import uuid

import asyncpg

from services.reports.filters import Filters
from services.reports.queries import attention
from services.scoring.handlers import score_submission
from shared.outbox import Outbox
from tests.support.scoring import make_submission

AT = "2024-05-03T09:00:00+03:00"
EDITED = "2024-05-03T09:30:00+03:00"


async def test_attention_lists_answers_of_the_same_second_later_item_first(
    pool: asyncpg.Pool,
) -> None:
    member = f"m-tie-{uuid.uuid4().hex[:10]}"
    for item, updated in ((9, AT), (11, AT), (10, AT), (8, EDITED)):
        await score_submission(
            pool,
            Outbox(),
            make_submission(
                ("CREAM", 2), ("SERUM", 1), item_id=item, member_id=member, updated_at=updated
            ),
        )

    async with pool.acquire() as conn:
        rows = await attention(conn, Filters(portal=member))
        first = await attention(conn, Filters(portal=member), limit=1)

    assert [(row["item_id"], row["sku"]) for row in rows] == [
        (8, "CREAM"),
        (8, "SERUM"),
        (11, "CREAM"),
        (11, "SERUM"),
        (10, "CREAM"),
        (10, "SERUM"),
        (9, "CREAM"),
        (9, "SERUM"),
    ]
    assert [row["item_id"] for row in first] == [8]
