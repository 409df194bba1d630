"""The transactional outbox and its relay on real PostgreSQL and RabbitMQ."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest
from aio_pika.abc import AbstractChannel

from services.ops.scratch import scratch_database, scratch_name
from shared.db import create_pool
from shared.events import PortalRef, WebhookReceived
from shared.messaging import make_broker
from shared.outbox import Outbox, OutboxRelay
from tests.support import capture


@pytest.fixture(scope="module")
async def pool(pg_server: str) -> AsyncIterator[asyncpg.Pool]:
    """An outbox of this module's own: rows other tests leave in the session's database would
    fill the relay's batch before the rows these tests look for."""
    async with scratch_database(pg_server, scratch_name("outbox")) as dsn:
        pool = await create_pool(dsn, max_size=4)
        try:
            yield pool
        finally:
            await pool.close()


def _event(item_id: int) -> WebhookReceived:
    return WebhookReceived(
        correlation_id=str(uuid.uuid4()),
        portal=PortalRef(member_id="outbox-test"),
        source="event",
        event="ONCRMDYNAMICITEMADD",
        entity_type_id=1038,
        item_id=item_id,
    )


async def _pending(pool: asyncpg.Pool, ids: list[uuid.UUID]) -> int:
    value = await pool.fetchval(
        "SELECT count(*) FROM outbox WHERE message_id = ANY($1::uuid[])", ids
    )
    return int(value)


async def test_an_unroutable_row_does_not_hold_up_the_rows_behind_it(
    pool: asyncpg.Pool, outbox: Outbox, amqp_url: str, channel: AbstractChannel
) -> None:
    stuck = _event(1)
    behind = [_event(2), _event(3)]
    async with outbox.transaction(pool) as conn:
        await conn.execute(
            """INSERT INTO outbox (message_id, routing_key, correlation_id, body)
               VALUES ($1, 'nobody.listens', 'c', '{}'::jsonb)""",
            stuck.event_id,
        )
        await outbox.enqueue(conn, behind)
    broker = make_broker(amqp_url)
    await broker.start()
    try:
        async with capture(channel, "webhook.received") as captured:
            published, failed = await OutboxRelay(pool, broker).publish_pending()
            await captured.wait_for(published)
    finally:
        await broker.stop()
    assert not failed
    ours = {str(e.event_id) for e in behind}
    assert sorted(b["item_id"] for b in captured.bodies if b["event_id"] in ours) == [2, 3]
    row = await pool.fetchrow(
        "SELECT attempts, last_error, next_attempt_at > now() AS waits FROM outbox"
        " WHERE message_id = $1",
        stuck.event_id,
    )
    assert row is not None
    assert row["attempts"] == 1
    assert "unroutable" in row["last_error"]
    assert row["waits"]
    await pool.execute("DELETE FROM outbox WHERE message_id = $1", stuck.event_id)


async def test_rows_wait_while_the_broker_is_down_and_go_out_once_it_is_back(
    pool: asyncpg.Pool, outbox: Outbox, amqp_url: str, channel: AbstractChannel
) -> None:
    events = [_event(10), _event(11)]
    ids = [e.event_id for e in events]
    async with outbox.transaction(pool) as conn:
        await outbox.enqueue(conn, events)

    down = make_broker("amqp://guest:guest@127.0.0.1:1/")
    published, failed = await OutboxRelay(pool, down).publish_pending()
    assert (published, failed) == (0, True)
    assert await _pending(pool, ids) == 2

    broker = make_broker(amqp_url)
    await broker.start()
    try:
        async with capture(channel, "webhook.received") as captured:
            published, _ = await OutboxRelay(pool, broker).publish_pending()
            await captured.wait_for(published)
    finally:
        await broker.stop()
    ours = {str(i) for i in ids}
    assert sorted(b["item_id"] for b in captured.bodies if b["event_id"] in ours) == [10, 11]
    assert await _pending(pool, ids) == 0
