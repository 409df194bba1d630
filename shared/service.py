"""The common life cycle of a b24-nps service process.

`serve()` opens what every service needs (portal config, PostgreSQL pool, RabbitMQ broker),
applies migrations and declares the topology (both idempotent and safe when four services start at
once), lets the service register its handlers (`wire`), runs the outbox relay, and on SIGTERM or
SIGINT stops consuming, lets in-flight messages finish (bounded), and closes everything.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import asyncpg
from faststream.rabbit import RabbitBroker
from faststream.rabbit.subscriber import RabbitSubscriber

from shared.db import create_pool, migrate
from shared.health import health_app, serve_http
from shared.logging import configure_logging, get_logger
from shared.messaging import make_broker
from shared.outbox import OutboxRelay
from shared.portal_config import PortalConfig, load_portal_config
from shared.settings import Settings
from shared.topology import declare

log = get_logger(__name__)


@dataclass
class Runtime:
    """What a service's wiring gets: settings, portal config and the open adapters."""

    name: str
    settings: Settings
    config: PortalConfig
    pool: asyncpg.Pool
    broker: RabbitBroker


Wire = Callable[[Runtime], Awaitable[None]]


async def serve(
    name: str,
    settings: Settings,
    wire: Wire,
    *,
    stop: asyncio.Event | None = None,
    prefetch: int = 32,
) -> None:
    """Run service `name` until `stop` is set (or SIGTERM/SIGINT arrives)."""
    configure_logging(settings.log_level, settings.log_format, service=name)
    config = load_portal_config(settings.nps_config)
    dsn = settings.database_url.get_secret_value()
    amqp_url = settings.rabbitmq_url.get_secret_value()
    await migrate(dsn)
    await declare(amqp_url)
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)
    pool = await create_pool(dsn)
    broker = make_broker(amqp_url, prefetch=prefetch)
    runtime = Runtime(name=name, settings=settings, config=config, pool=pool, broker=broker)
    relay_task: asyncio.Task[None] | None = None
    http_task: asyncio.Task[None] | None = None
    try:
        await wire(runtime)
        await broker.start()
        relay_task = asyncio.create_task(OutboxRelay(pool, broker).run(), name=f"{name}-outbox")
        if settings.health_port is not None:
            queues = [s.queue.name for s in broker.subscribers if isinstance(s, RabbitSubscriber)]
            app = health_app(pool, broker, amqp_url, queues)
            http = serve_http(app, settings.health_host, settings.health_port, stop)
            http_task = asyncio.create_task(http, name=f"{name}-health")
        log.info("service_started", health_port=settings.health_port)
        await stop.wait()
        log.info("service_stopping")
    finally:
        stop.set()
        await broker.stop()
        if relay_task is not None:
            relay_task.cancel()
        for task in (relay_task, http_task):
            if task is not None:
                with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                    await asyncio.wait_for(task, timeout=5)
        await pool.close()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.remove_signal_handler(sig)
        log.info("service_stopped")


def run(name: str, settings: Settings, wire: Wire) -> None:
    """Blocking entry point used by `nps run <name>`."""
    asyncio.run(serve(name, settings, wire))
