"""The scoring service on the real RabbitMQ and PostgreSQL: form.submitted in, nps.scored out."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from aio_pika.abc import AbstractChannel

from services.scoring.main import wire
from shared.events import FormSubmitted
from shared.messaging import REASON_HEADER
from shared.service import serve
from shared.settings import Settings
from shared.topology import SCORING_SUBMISSIONS
from tests.support import Captured, capture, publish_raw
from tests.support.scoring import make_submission


@pytest.fixture
async def scoring(settings: Settings, channel: AbstractChannel) -> AsyncIterator[None]:
    """The scoring service, consuming one message at a time so arrival order is handling order."""
    stop = asyncio.Event()
    task = asyncio.create_task(serve("scoring", settings, wire, stop=stop, prefetch=1))
    yield
    stop.set()
    await asyncio.wait_for(task, 30)


@pytest.fixture
def member() -> str:
    return f"m-{uuid.uuid4().hex[:12]}"


async def submit(channel: AbstractChannel, submission: FormSubmitted) -> None:
    await publish_raw(channel, "form.submitted", submission.model_dump(mode="json"))


async def scored(
    captured: Captured, member: str, count: int, timeout: float = 15.0
) -> list[tuple[str, dict[str, Any]]]:
    """(routing key, body) of the events about `member`'s answers, once `count` have arrived."""

    def mine() -> list[tuple[str, dict[str, Any]]]:
        return [
            (key, body)
            for key, body in zip(captured.routing_keys, captured.bodies, strict=True)
            if body["answer"]["portal"]["member_id"] == member
        ]

    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout):
            while len(mine()) < count:
                await asyncio.sleep(0.05)
    events = mine()
    assert len(events) >= count, f"expected {count} scored events, got {events}"
    return events


async def test_submission_in_scored_events_out(
    scoring: None, channel: AbstractChannel, pool: asyncpg.Pool, member: str
) -> None:
    async with capture(channel, "nps.scored.#") as captured:
        await submit(
            channel,
            make_submission(
                ("LASER", 2),
                kind="equipment",
                category_id=12,
                segment="Laser A",
                member_id=member,
                item_id=31,
                service_request=True,
            ),
        )
        await submit(
            channel,
            make_submission(
                ("SERUM", 10), ("CREAM", None), ("MASK", 7), member_id=member, item_id=32
            ),
        )
        events = await scored(captured, member, 3)

    assert sorted((key, body["answer"]["sku"]) for key, body in events) == [
        ("nps.scored.cosmetics.passive", "MASK"),
        ("nps.scored.cosmetics.promoter", "SERUM"),
        ("nps.scored.equipment.detractor", "LASER"),
    ]
    laser = next(body for key, body in events if body["answer"]["sku"] == "LASER")
    assert laser["answer"]["service_request"] is True
    assert laser["answer"]["score"] == 2
    assert laser["supersedes"] is False
    stored = await pool.fetch(
        "SELECT sku, score FROM scoring_answers WHERE portal = $1 ORDER BY sku", member
    )
    assert [tuple(row) for row in stored] == [
        ("CREAM", None),
        ("LASER", 2),
        ("MASK", 7),
        ("SERUM", 10),
    ]


async def test_redelivered_submission_publishes_nothing_new(
    scoring: None, channel: AbstractChannel, pool: asyncpg.Pool, member: str
) -> None:
    first = make_submission(("SERUM", 9), ("MASK", 3), member_id=member, item_id=1)
    sentinel = make_submission(("SERUM", 8), member_id=member, item_id=2)
    async with capture(channel, "nps.scored.#") as captured:
        await submit(channel, first)
        await submit(channel, first)
        await submit(channel, sentinel)
        events = await scored(captured, member, 3)
        message_ids = [m.message_id for m in captured.messages]

    assert sorted((body["answer"]["item_id"], body["answer"]["sku"]) for _, body in events) == [
        (1, "MASK"),
        (1, "SERUM"),
        (2, "SERUM"),
    ]
    assert len(set(message_ids)) == len(message_ids)
    revisions = await pool.fetch(
        "SELECT revision FROM scoring_answers WHERE portal = $1 AND item_id = 1", member
    )
    assert [row["revision"] for row in revisions] == [1, 1]


async def test_updated_item_supersedes_and_an_older_version_is_ignored(
    scoring: None, channel: AbstractChannel, member: str
) -> None:
    v1 = make_submission(("SERUM", 9), ("MASK", 3), member_id=member)
    v2 = make_submission(
        ("SERUM", 9), ("MASK", 10), member_id=member, updated_at="2024-03-06T00:00:00Z"
    )
    older = make_submission(("MASK", 0), member_id=member, updated_at="2024-03-05T00:00:00Z")
    sentinel = make_submission(("PEEL", 6), member_id=member, item_id=2)
    async with capture(channel, "nps.scored.#") as captured:
        for submission in (v1, v2, older, sentinel):
            await submit(channel, submission)
        events = await scored(captured, member, 4)

    assert [(key, body["answer"]["sku"]) for key, body in events] == [
        ("nps.scored.cosmetics.promoter", "SERUM"),
        ("nps.scored.cosmetics.detractor", "MASK"),
        ("nps.scored.cosmetics.promoter", "MASK"),
        ("nps.scored.cosmetics.detractor", "PEEL"),
    ]
    superseding = events[2][1]
    assert (superseding["supersedes"], superseding["previous_score"]) == (True, 3)
    assert superseding["previous_category"] == "detractor"


async def test_off_scale_score_is_dead_lettered_with_the_reason(
    scoring: None, channel: AbstractChannel, pool: asyncpg.Pool, member: str
) -> None:
    await submit(channel, make_submission(("SERUM", 9), ("MASK", 11), member_id=member, item_id=5))
    dlq = await channel.get_queue(SCORING_SUBMISSIONS.dlq)
    message = None
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(15):
            while message is None:
                message = await dlq.get(fail=False)
                await asyncio.sleep(0.05)
    assert message is not None, "nothing reached scoring.submissions.dlq"
    await message.ack()
    reason = str(message.headers[REASON_HEADER])
    assert "item 5, product MASK: score 11 rejected" in reason
    assert not await pool.fetchval("SELECT count(*) FROM scoring_answers WHERE portal = $1", member)
