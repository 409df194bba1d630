"""The transactional outbox and its relay on real PostgreSQL and RabbitMQ."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest
from aio_pika.abc import AbstractChannel

from services.harness.scratch import scratch_database, scratch_name
from shared.db import Conn, create_pool
from shared.events import PortalRef, WebhookReceived
from shared.messaging import make_broker
from shared.outbox import (
    Outbox,
    OutboxRelay,
    OutboxUsageError,
    QueuingStatement,
    StatementBuilder,
)
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


async def _left_behind(pool: asyncpg.Pool, event: WebhookReceived) -> None:
    """A row as another process leaves it: committed, but this process's relay not woken."""
    await pool.execute(
        """INSERT INTO outbox (message_id, routing_key, correlation_id, body)
           VALUES ($1, $2, $3, $4::jsonb)""",
        event.event_id,
        event.routing_key(),
        event.correlation_id,
        event.model_dump_json(),
    )


def _queue_if_asked() -> QueuingStatement:
    b = StatementBuilder()
    asked = b.param("asked")
    return b.build(
        f"""WITH cause AS (SELECT 1 WHERE {asked}::boolean), {b.queue(after="cause")}
            SELECT EXISTS (SELECT 1 FROM cause)""",
        queued_if=bool,
    )


QUEUE_IF_ASKED = _queue_if_asked()


async def _queue_and_fail(
    outbox: Outbox, source: asyncpg.Pool | Conn, event: WebhookReceived
) -> None:
    async with outbox.transaction(source) as conn:
        await outbox.enqueue(conn, [event])
        raise RuntimeError("rolled back")


async def test_a_commit_wakes_the_relays_of_its_outbox_a_rollback_wakes_none(
    pool: asyncpg.Pool, outbox: Outbox, amqp_url: str, channel: AbstractChannel
) -> None:
    """The relay polls once a minute here: what it publishes within seconds, it was woken for.
    A row left behind goes out with the next wake-up, so it shows whether one happened."""
    first, behind, rolled_back, elsewhere, not_asked, last = (_event(n) for n in range(20, 26))
    broker = make_broker(amqp_url)
    await broker.connect()
    relay = asyncio.create_task(OutboxRelay(pool, broker, poll_s=60).run(outbox))
    try:
        async with capture(channel, "webhook.received") as captured:
            async with pool.acquire() as conn:
                await outbox.enqueue(conn, [first])  # no transaction: woken at once
            await captured.wait_for(1)
            await _left_behind(pool, behind)

            with pytest.raises(RuntimeError, match="rolled back"):
                await _queue_and_fail(outbox, pool, rolled_back)
            other = Outbox()  # another process's: its commits wake its own relays only
            async with other.transaction(pool) as conn:
                await other.enqueue(conn, [elsewhere])
            async with pool.acquire() as conn:  # queues nothing, so wakes nobody
                assert not await outbox.fetchval(conn, QUEUE_IF_ASKED, [not_asked], asked=False)
            await asyncio.sleep(1.5)
            assert len(captured.bodies) == 1

            async with outbox.transaction(pool) as conn:
                await outbox.enqueue(conn, [last])
                await asyncio.sleep(0.5)
                assert len(captured.bodies) == 1  # not before the commit
            await captured.wait_for(4)
    finally:
        relay.cancel()
        await asyncio.gather(relay, return_exceptions=True)
        await broker.stop()
    assert [b["item_id"] for b in captured.bodies] == [20, 21, 23, 25]
    assert await _pending(pool, [rolled_back.event_id, not_asked.event_id]) == 0


async def test_queuing_in_a_transaction_the_outbox_did_not_open_is_refused(
    pool: asyncpg.Pool, outbox: Outbox
) -> None:
    """Its commit would wake no relay: the events would wait for the next poll."""
    event = _event(30)
    async with pool.acquire() as conn:
        async with conn.transaction():
            with pytest.raises(OutboxUsageError, match=r"Outbox\.transaction"):
                await outbox.enqueue(conn, [event])
            with pytest.raises(OutboxUsageError, match=r"Outbox\.transaction"):
                async with outbox.transaction(conn):
                    pass
        async with Outbox().transaction(conn):
            with pytest.raises(OutboxUsageError, match=r"Outbox\.transaction"):
                await outbox.enqueue(conn, [event])
    assert await _pending(pool, [event.event_id]) == 0


async def test_a_transaction_within_one_of_the_same_outbox_leaves_the_wake_up_to_it(
    pool: asyncpg.Pool, outbox: Outbox
) -> None:
    """A store function opening its own transaction inside the caller's gets a savepoint."""
    kept, undone = _event(40), _event(41)
    async with outbox.transaction(pool) as conn:
        async with outbox.transaction(conn) as inner:
            await outbox.enqueue(inner, [kept])
        with pytest.raises(RuntimeError, match="rolled back"):
            await _queue_and_fail(outbox, conn, undone)
    assert await _pending(pool, [kept.event_id]) == 1
    assert await _pending(pool, [undone.event_id]) == 0
    await pool.execute("DELETE FROM outbox WHERE message_id = $1", kept.event_id)
