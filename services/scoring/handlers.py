"""The `form.submitted` handler: one transaction claims, locks the item, stores, enqueues."""

from __future__ import annotations

import asyncpg

from services.scoring import store
from services.scoring.answers import SubmissionError, reconcile
from shared.events import FormSubmitted
from shared.logging import get_logger
from shared.messaging import PermanentError
from shared.outbox import Outbox

CONSUMER = "scoring"

log = get_logger(__name__)


async def score_submission(pool: asyncpg.Pool, outbox: Outbox, submission: FormSubmitted) -> None:
    """Store the answers of `submission` and publish one `nps.scored` per changed scored answer.

    A redelivery (already claimed) or an older version of the item than the stored one changes
    nothing. An off-scale score is a `PermanentError` (dead-lettered), and nothing is stored.
    """
    async with outbox.transaction(pool) as conn:
        item = await store.begin_item(conn, CONSUMER, submission)
        if item is store.Item.DUPLICATE:
            log.info("submission_duplicate", item_id=submission.item_id)
            return
        if item is store.Item.OUTDATED:
            log.info(
                "submission_outdated",
                item_id=submission.item_id,
                updated_at=submission.updated_at.isoformat(),
            )
            return
        # An item seen for the first time has no stored answers: scoring writes them only with
        # the item's row (a bulk load must fill `scoring_items` too).
        previous = (
            await store.load_answers(
                conn, submission.portal.key, submission.entity_type_id, submission.item_id
            )
            if item is store.Item.NEWER
            else {}
        )
        try:
            change = reconcile(submission, previous)
        except SubmissionError as exc:
            raise PermanentError(str(exc)) from None
        await store.write_change(outbox, conn, submission, change)
    log.info(
        "submission_scored",
        item_id=submission.item_id,
        answers=len(submission.answers),
        published=len(change.events),
        superseded=bool(previous),
    )
