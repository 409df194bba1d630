"""The raw ceiling: plain aio-pika moving persistent, publisher-confirmed messages through four
hops (queue → consumer → publish → next queue …), the shape of the b24-nps pipeline without any
of its work. The pipeline benchmark reports its throughput as a ratio to this figure.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from collections.abc import Awaitable, Callable

import aio_pika
from aio_pika.abc import AbstractIncomingMessage

HOPS = 4
MESSAGES = int(os.environ.get("BENCH_RAW_MESSAGES", "5000"))
AMQP_URL = os.environ.get("RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/")


async def measure(messages: int = MESSAGES, hops: int = HOPS) -> float:
    """Messages per second through `hops` consecutive queues (each hop consumes and republishes)."""
    prefix = f"bench.raw.{uuid.uuid4().hex[:8]}"
    connection = await aio_pika.connect_robust(AMQP_URL)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        await channel.set_qos(prefetch_count=256)
        exchange = await channel.declare_exchange(
            prefix, aio_pika.ExchangeType.DIRECT, auto_delete=True
        )
        queues = []
        try:
            for hop in range(hops + 1):
                queue = await channel.declare_queue(
                    f"{prefix}.{hop}", durable=True, arguments={"x-queue-type": "quorum"}
                )
                await queue.bind(exchange, routing_key=str(hop))
                queues.append(queue)
            done = asyncio.Event()
            arrived = 0

            def forwarder(hop: int) -> Callable[[AbstractIncomingMessage], Awaitable[None]]:
                async def on_message(message: AbstractIncomingMessage) -> None:
                    await exchange.publish(
                        aio_pika.Message(
                            message.body,
                            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                            message_id=message.message_id,
                        ),
                        routing_key=str(hop + 1),
                    )
                    await message.ack()

                return on_message

            async def sink(message: AbstractIncomingMessage) -> None:
                nonlocal arrived
                await message.ack()
                arrived += 1
                if arrived >= messages:
                    done.set()

            tags = [await queues[hop].consume(forwarder(hop)) for hop in range(hops)]
            tags.append(await queues[hops].consume(sink))
            body = json.dumps({"score": 9, "padding": "x" * 400}).encode()
            started = time.perf_counter()
            await asyncio.gather(
                *(
                    exchange.publish(
                        aio_pika.Message(
                            body,
                            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                            message_id=str(i),
                        ),
                        routing_key="0",
                    )
                    for i in range(messages)
                )
            )
            await asyncio.wait_for(done.wait(), timeout=600)
            elapsed = time.perf_counter() - started
            for queue, tag in zip(queues, tags, strict=True):
                await queue.cancel(tag)
        finally:  # also when interrupted: no queue is left behind
            for queue in queues:
                await queue.delete(if_unused=False, if_empty=False)
    return messages / elapsed


def main() -> None:
    rate = asyncio.run(measure())
    print(
        f"raw aio-pika, {HOPS} hops, persistent + confirmed, {MESSAGES} messages: {rate:,.0f} msg/s"
    )


if __name__ == "__main__":
    main()
