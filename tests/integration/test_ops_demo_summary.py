"""`make demo`'s NPS summary on the real PostgreSQL: per product and per segment, no NPS over the
cosmetics segment as a whole (the customer's check)."""

from __future__ import annotations

import uuid

import asyncpg

from services.ops.demo import nps_summary, nps_text
from services.scoring.report import COSMETICS_NOTE
from tests.support.cosmetics import PER_PRODUCT, score_the_check


async def test_the_cosmetics_check_in_the_demo_summary(pool: asyncpg.Pool) -> None:
    member = f"m-demo-check-{uuid.uuid4().hex[:10]}"
    await score_the_check(pool, member)
    async with pool.acquire() as conn:
        products, segments = await nps_summary(conn, member)
    assert {row["sku"]: row["nps"] for row in products} == PER_PRODUCT
    assert [(row["kind"], row["nps"], row["answers"], row["note"]) for row in segments] == [
        ("cosmetics", None, 5, COSMETICS_NOTE)
    ]
    text = nps_text(products, segments)
    assert "60.0" not in text
    segment_line = text.splitlines()[-1]
    assert segment_line.startswith("Cosmetics  cosmetics")
    assert segment_line.split()[2:10] == ["-", "-", "4", "0", "1", "5", "-", "cosmetics:"]
