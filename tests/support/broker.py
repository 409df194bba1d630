"""RabbitMQ for the tests: what a test captures from the `nps` exchange and what it publishes
raw, bypassing the producers."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage

from shared.topology import CORE_QUEUES, EXCHANGE


async def purge_core_queues(channel: AbstractChannel) -> None:
    for spec in CORE_QUEUES:
        for name in (spec.name, spec.dlq):
            queue = await channel.get_queue(name, ensure=False)
            await queue.purge()


class Captured:
    """Events captured from the `nps` exchange by a temporary queue."""

    def __init__(self) -> None:
        self.messages: list[AbstractIncomingMessage] = []
        self._arrived = asyncio.Condition()

    @property
    def bodies(self) -> list[dict[str, Any]]:
        return [json.loads(m.body) for m in self.messages]

    @property
    def routing_keys(self) -> list[str]:
        return [m.routing_key or "" for m in self.messages]

    async def add(self, message: AbstractIncomingMessage) -> None:
        async with self._arrived:
            self.messages.append(message)
            self._arrived.notify_all()

    async def wait_for(self, count: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        """Wait until at least `count` messages arrived; fails loudly on timeout."""

        async def _wait() -> None:
            async with self._arrived:
                await self._arrived.wait_for(lambda: len(self.messages) >= count)

        try:
            await asyncio.wait_for(_wait(), timeout)
        except TimeoutError:
            raise AssertionError(
                f"expected {count} messages, got {len(self.messages)}: {self.routing_keys}"
            ) from None
        return self.bodies


@asynccontextmanager
async def capture(
    channel: AbstractChannel, *binding_keys: str, exchange: str = EXCHANGE
) -> AsyncIterator[Captured]:
    """Bind a temporary exclusive queue to `exchange` and collect what arrives."""
    captured = Captured()
    queue = await channel.declare_queue(exclusive=True, auto_delete=True)
    for key in binding_keys:
        await queue.bind(exchange, routing_key=key)

    async def on_message(message: AbstractIncomingMessage) -> None:
        await message.ack()
        await captured.add(message)

    tag = await queue.consume(on_message)
    try:
        yield captured
    finally:
        await queue.cancel(tag)
        await queue.delete(if_unused=False, if_empty=False)


async def publish_raw(
    channel: AbstractChannel, routing_key: str, body: dict[str, Any] | bytes
) -> None:
    exchange = await channel.get_exchange(EXCHANGE)
    payload = body if isinstance(body, bytes) else json.dumps(body).encode()
    await exchange.publish(
        aio_pika.Message(
            payload,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            message_id=str(uuid.uuid4()),
            content_type="application/json",
        ),
        routing_key=routing_key,
    )
