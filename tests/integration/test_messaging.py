"""The consumer wrapper's retry and dead-letter policy, on the real RabbitMQ."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from aio_pika.abc import AbstractChannel
from faststream.rabbit import RabbitBroker
from prometheus_client import REGISTRY

from shared.events import PortalRef, WebhookReceived
from shared.messaging import (
    REASON_HEADER,
    DropMessage,
    PermanentError,
    make_broker,
    publish,
    publish_json,
    subscribe,
)
from shared.topology import INGEST_HYDRATE
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
