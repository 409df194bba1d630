"""The customer's check of the cosmetics rule: customer A scores four cosmetics products 10,
customer B scores one of them 0. Added up as one NPS that is 60.0 ((4 - 1) / 5), a number that
means nothing: A counts four times. No aggregate may show it; each product has its own NPS."""

from __future__ import annotations

import asyncpg

from services.scoring.handlers import score_submission
from services.scoring.report import cosmetics_left_out_note
from shared.outbox import Outbox
from tests.support.scoring import make_submission

SUBMITTED = "2024-05-02T10:00:00+03:00"
MANAGER = 5
PRODUCTS = ("COS-SERUM", "COS-CREAM", "COS-MASK", "COS-PEEL")
LEFT_OUT = cosmetics_left_out_note(5)
"""The note of an aggregate over the whole check: its five answers are all left out."""
PER_PRODUCT = {"COS-CREAM": 100.0, "COS-MASK": 100.0, "COS-PEEL": 100.0, "COS-SERUM": 0.0}
"""The NPS of each product: A's 10 and B's 0 on the serum make 0.0."""


async def score_the_check(pool: asyncpg.Pool, member_id: str, first_item: int = 1) -> None:
    """Customer A's answer (item `first_item`) and customer B's (the next item), scored."""
    answers = [[(sku, 10) for sku in PRODUCTS], [(PRODUCTS[0], 0)]]
    for offset, scores in enumerate(answers):
        await score_submission(
            pool,
            Outbox(),
            make_submission(
                *scores,
                item_id=first_item + offset,
                member_id=member_id,
                contact_id=601 + offset,
                responsible_id=MANAGER,
                submitted_at=SUBMITTED,
                updated_at=SUBMITTED,
            ),
        )
