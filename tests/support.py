"""Helpers shared by the integration and e2e tests (real RabbitMQ, real PostgreSQL)."""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import subprocess
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

import aio_pika
import asyncpg
import uvicorn
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage
from starlette.types import ASGIApp

from shared.topology import CORE_QUEUES, EXCHANGE


def reachable(url: str, default_port: int) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection(
            (parts.hostname or "127.0.0.1", parts.port or default_port), 2
        ):
            return True
    except OSError:
        return False


async def forget_served_portal(pool: asyncpg.Pool) -> None:
    """Let the next authentic event teach ingest its portal again, as in a new deployment: tests
    of the unpinned app share one database but each sends from portals of its own."""
    await pool.execute("DELETE FROM ingest_portal")


def docker_available() -> bool:
    if shutil.which("docker") is None:
        return False
    return subprocess.run(["docker", "info"], capture_output=True, check=False).returncode == 0


async def purge_core_queues(channel: AbstractChannel) -> None:
    for spec in CORE_QUEUES:
        for name in (spec.name, spec.dlq):
            queue = await channel.get_queue(name, ensure=False)
            await queue.purge()


@asynccontextmanager
async def serving(app: ASGIApp) -> AsyncIterator[str]:
    """`app` served by a real uvicorn on a free local port; yields its base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        async with asyncio.timeout(10):
            while not server.started:
                await asyncio.sleep(0.01)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task
        sock.close()


T0 = 1_700_000_000.0
"""A Unix time for tests that drive a `FakeClock`."""


class FakeClock:
    """Time that moves only when the test says so or when code sleeps through `sleep` (each
    sleep recorded, then one turn of the event loop so that other tasks run)."""

    def __init__(self, now: float = T0) -> None:
        self.now = now
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


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
