"""Scoring service wiring: `form.submitted` (queue `scoring.submissions`) → stored answers and
`nps.scored.<kind>.<category>` events through the outbox."""

from __future__ import annotations

from functools import partial

from services.scoring.handlers import score_submission
from shared.events import FormSubmitted
from shared.messaging import subscribe
from shared.service import Runtime
from shared.service import run as run_service
from shared.settings import Settings
from shared.topology import SCORING_SUBMISSIONS


async def wire(runtime: Runtime) -> None:
    score = partial(score_submission, runtime.pool, runtime.outbox)

    async def on_submission(submission: FormSubmitted) -> None:
        # Application mode: an answer of a portal no longer served is dropped, not scored.
        await runtime.ensure_portal(submission.portal.key)
        await score(submission)

    subscribe(
        runtime.broker,
        SCORING_SUBMISSIONS,
        FormSubmitted,
        on_submission,
        max_attempts=runtime.settings.retry_max_attempts,
    )


def run(settings: Settings) -> None:
    """`nps run scoring`."""
    run_service("scoring", settings, wire)
