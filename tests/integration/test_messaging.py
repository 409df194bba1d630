"""The consumer wrapper's retry and dead-letter policy, on the real RabbitMQ."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
from aio_pika.abc import AbstractChannel
from faststream.rabbit import RabbitBroker
from faststream.rabbit.annotations import RabbitMessage
from prometheus_client import REGISTRY

from shared.events import PortalRef, WebhookReceived
from shared.messaging import (
    REASON_HEADER,
    DropMessage,
    Handler,
    PermanentError,
    make_broker,
    park,
    publish,
    publish_json,
    subscribe,
)
from shared.topology import DLX, INGEST_HYDRATE
from tests.support import publish_raw


def _event(item_id: int = 7) -> WebhookReceived:
    return WebhookReceived(
        correlation_id="corr-1",
        portal=PortalRef(member_id="m1"),
        source="event",
        event="ONCRMDYNAMICITEMADD",
        entity_type_id=1038,
        item_id=item_id,
    )


@pytest.fixture
async def broker(amqp_url: str, channel: AbstractChannel) -> AsyncIterator[RabbitBroker]:
    broker = make_broker(amqp_url)
    yield broker
    await broker.stop()


async def _dlq_message(
    channel: AbstractChannel, timeout: float = 10.0
) -> tuple[bytes, dict[str, object]]:
    queue = await channel.get_queue(INGEST_HYDRATE.dlq)
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        message = await queue.get(fail=False)
        if message is not None:
            await message.ack()
            return message.body, dict(message.headers)
        await asyncio.sleep(0.1)
    raise AssertionError("nothing reached the DLQ")


async def test_transient_failure_is_retried_then_succeeds(
    broker: RabbitBroker, channel: AbstractChannel
) -> None:
    calls: list[int] = []
    done = asyncio.Event()

    async def handler(event: WebhookReceived) -> None:
        calls.append(event.item_id)
        if len(calls) == 1:
            raise ConnectionError("portal unreachable")
        done.set()

    subscribe(broker, INGEST_HYDRATE, WebhookReceived, handler)
    await broker.start()
    await publish(broker, _event())
    await asyncio.wait_for(done.wait(), 15)
    assert calls == [7, 7]
    queue = await channel.get_queue(INGEST_HYDRATE.dlq)
    assert (await queue.get(fail=False)) is None


async def test_permanent_error_goes_to_dlq_with_reason(
    broker: RabbitBroker, channel: AbstractChannel
) -> None:
    async def handler(event: WebhookReceived) -> None:
        raise PermanentError(f"item {event.item_id}: score field UF_CRM_5_SCORE holds 'abc'")

    subscribe(broker, INGEST_HYDRATE, WebhookReceived, handler)
    await broker.start()
    await publish(broker, _event(9))
    body, headers = await _dlq_message(channel)
    assert b'"item_id":9' in body
    assert "UF_CRM_5_SCORE holds 'abc'" in str(headers[REASON_HEADER])
    assert headers["x-nps-queue"] == INGEST_HYDRATE.name


async def test_a_dropped_message_is_acked_counted_and_neither_retried_nor_dead_lettered(
    broker: RabbitBroker, channel: AbstractChannel
) -> None:
    calls: list[int] = []
    done = asyncio.Event()

    async def handler(event: WebhookReceived) -> None:
        calls.append(event.item_id)
        if event.item_id == 11:
            raise DropMessage("portal 'm1' is uninstalled: its work has stopped")
        done.set()

    def dropped() -> float:
        labels = {"queue": INGEST_HYDRATE.name}
        return REGISTRY.get_sample_value("nps_messages_dropped_total", labels) or 0.0

    before = dropped()
    subscribe(broker, INGEST_HYDRATE, WebhookReceived, handler)
    await broker.start()
    await publish(broker, _event(11))
    await publish(broker, _event(12))
    await asyncio.wait_for(done.wait(), 15)
    await asyncio.sleep(1.5)  # a retry would come back within the first delay tier
    assert calls == [11, 12]
    assert dropped() == before + 1
    queue = await channel.get_queue(INGEST_HYDRATE.dlq)
    assert (await queue.get(fail=False)) is None


async def test_retries_are_bounded(broker: RabbitBroker, channel: AbstractChannel) -> None:
    calls = 0

    async def handler(_event: WebhookReceived) -> None:
        nonlocal calls
        calls += 1
        raise TimeoutError("still down")

    subscribe(broker, INGEST_HYDRATE, WebhookReceived, handler, max_attempts=2)
    await broker.start()
    await publish(broker, _event())
    _body, headers = await _dlq_message(channel, timeout=15)
    assert calls == 2
    assert headers["x-nps-attempts"] == 2
    assert "still down" in str(headers[REASON_HEADER])


async def test_unparsable_body_is_dead_lettered(
    broker: RabbitBroker, channel: AbstractChannel
) -> None:
    async def handler(_event: WebhookReceived) -> None:
        raise AssertionError("must not be called")

    subscribe(broker, INGEST_HYDRATE, WebhookReceived, handler)
    await broker.start()
    await publish_raw(channel, "webhook.received", {"item_id": "not a number"})
    _body, headers = await _dlq_message(channel)
    assert "invalid WebhookReceived" in str(headers[REASON_HEADER])


async def test_unroutable_publish_raises(broker: RabbitBroker) -> None:
    await broker.start()
    with pytest.raises(Exception, match=r"(?i)unroutable|returned|NO_ROUTE|312"):
        await publish_json(
            broker, {"x": 1}, routing_key="nobody.listens", message_id="m", correlation_id="c"
        )


async def test_a_parked_message_is_consumed_on_its_queues_behalf(
    broker: RabbitBroker, channel: AbstractChannel
) -> None:
    """`around` parks the first sight of each message in a side queue (crm_sync's held queues);
    consumed from there with `source`, a transient failure is retried into the message's own
    queue and a permanent one dead-lettered into its own DLQ."""
    side = f"{INGEST_HYDRATE.name}.portal.test-{uuid.uuid4().hex[:8]}"
    await channel.declare_queue(
        side,
        durable=True,
        arguments={
            "x-queue-type": "quorum",
            "x-dead-letter-exchange": DLX,
            "x-dead-letter-routing-key": INGEST_HYDRATE.name,
        },
    )
    seen: set[int] = set()
    home: list[int] = []
    aside: list[int] = []
    done = asyncio.Event()

    async def around(
        event: WebhookReceived, message: RabbitMessage, handle: Handler[WebhookReceived]
    ) -> None:
        if event.item_id in seen:
            await handle(event)
        else:
            seen.add(event.item_id)
            await park(broker, message, side)

    async def at_home(event: WebhookReceived) -> None:
        home.append(event.item_id)
        done.set()

    async def from_side(event: WebhookReceived) -> None:
        aside.append(event.item_id)
        if event.item_id == 8:
            raise PermanentError("item 8: refused for good")
        raise ConnectionError("portal unreachable")

    subscribe(broker, INGEST_HYDRATE, WebhookReceived, at_home, around=around)
    await broker.start()
    try:
        await subscribe(broker, INGEST_HYDRATE, WebhookReceived, from_side, source=side).start()
        await publish(broker, _event(8))
        body, headers = await _dlq_message(channel)
        assert b'"item_id":8' in body
        assert headers["x-nps-queue"] == INGEST_HYDRATE.name
        await publish(broker, _event(7))
        await asyncio.wait_for(done.wait(), 15)
        assert (aside, home) == ([8, 7], [7])
    finally:
        await broker.stop()
        await channel.queue_delete(side)
