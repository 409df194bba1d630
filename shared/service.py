"""The common life cycle of a b24-nps service process.

`serve()` opens what every service needs (portal config, PostgreSQL pool, RabbitMQ broker),
applies migrations and declares the topology (both idempotent and safe when four services start at
once), lets the service register its handlers (`wire`) and background jobs, runs the outbox relay,
and on SIGTERM or SIGINT stops the jobs and consuming, lets in-flight work finish (bounded), and
closes everything.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import signal
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

import asyncpg
import uvloop
from faststream.rabbit import RabbitBroker
from faststream.rabbit.subscriber import RabbitSubscriber

from shared.app_portals import AppPortals
from shared.bitrix24 import client_from_settings
from shared.bitrix24.tokens import AppCredentials, OAuthServer, TokenBook
from shared.db import create_pool, migrate
from shared.health import health_app, serve_http
from shared.logging import configure_logging, get_logger
from shared.messaging import make_broker
from shared.outbox import Outbox, OutboxRelay
from shared.portal_config import PortalConfig, load_portal_config
from shared.portals import PortalClients, PortalConfigs
from shared.settings import Settings
from shared.topology import declare

log = get_logger(__name__)

Background = Callable[[asyncio.Event], Coroutine[Any, Any, None]]
T = TypeVar("T")


@dataclass
class Runtime:
    """What a service's wiring gets: settings, the portals' configurations and the open
    adapters."""

    name: str
    settings: Settings
    configs: PortalConfigs
    """Each served portal's configuration; a handler takes its event's portal's
    (`shared/portals.py`)."""
    pool: asyncpg.Pool
    broker: RabbitBroker
    outbox: Outbox
    """What queues events goes through it: the process's relay publishes them once they commit."""
    background: list[Background] = field(default_factory=list)
    """Long-running jobs the wiring adds (an HTTP server, a periodic sweep): started once the
    broker runs, each given the stop event and expected to return once it is set. A job that ends
    early stops the service; on shutdown they are awaited (bounded) before the broker stops."""
    clients: PortalClients | None = None
    """The portals' Bitrix24 clients once `portal_clients()` built them (or the wiring set
    them); closed when the service stops."""
    portals: AppPortals | None = None
    """Application mode: the installed portals, kept up to date (`configs` and `clients` are
    theirs); None in webhook mode."""

    def portal_clients(self) -> PortalClients:
        """Each served portal's Bitrix24 client, built on first use: the one portal's from the
        settings (`client_from_settings`), its rate budget shared in PostgreSQL; in application
        mode each installed portal's (`app_client`)."""
        if self.clients is None:
            client = client_from_settings(self.settings, self.pool, self.configs.only())
            self.clients = PortalClients.one(client)
        return self.clients

    async def ensure_portal(self, key: str) -> None:
        """Before a handler takes portal `key`'s configuration or client: in application mode a
        portal not served yet reads the installed portals again (`AppPortals.ensure`), then one
        still not served raises what `configs.get` raises (`PortalGoneError`: the message is
        dropped; `UnknownPortalError`: dead-lettered). A no-op in webhook mode."""
        if self.portals is not None:
            await self.portals.ensure(key)
            self.configs.get(key)

    async def close(self) -> None:
        """Close the portals' clients, then the pool."""
        if self.portals is not None:
            await self.portals.aclose()
        elif self.clients is not None:
            await self.clients.aclose()
        await self.pool.close()


Wire = Callable[[Runtime], Awaitable[None]]
GC_THRESHOLDS = (10_000, 10, 10)
"""Python's default (700, 10, 10) runs a full collection every 70,000 allocations, often enough
to stall a busy service for tens of milliseconds (ingest's p99 at 200 webhooks/s doubled); here
one runs every 1,000,000. Far higher thresholds let cyclic garbage pile up: crm_sync's RSS grew
10 MB a minute at (100_000, 50, 100)."""
JOB_STOP_TIMEOUT_S = 15.0


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
    config = load_portal_config(settings.portal_config_path())
    dsn = settings.database_url.get_secret_value()
    amqp_url = settings.rabbitmq_url.get_secret_value()
    await migrate(dsn)
    await declare(amqp_url)
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)
    pool = await create_pool(dsn, max_size=settings.database_pool_max)
    broker = make_broker(amqp_url, prefetch=prefetch)
    outbox = Outbox()
    runtime = Runtime(
        name=name,
        settings=settings,
        configs=PortalConfigs.one(config),
        pool=pool,
        broker=broker,
        outbox=outbox,
    )
    relay_task: asyncio.Task[None] | None = None
    http_task: asyncio.Task[None] | None = None
    jobs: list[asyncio.Task[None]] = []
    failed: list[str] = []
    try:
        await _wire(runtime, config, wire)
        await broker.start()
        relay_task = asyncio.create_task(
            OutboxRelay(pool, broker).run(outbox), name=f"{name}-outbox"
        )
        if settings.health_port is not None:
            queues = [s.queue.name for s in broker.subscribers if isinstance(s, RabbitSubscriber)]
            app = health_app(pool, broker, amqp_url, queues)
            http = serve_http(app, settings.health_host, settings.health_port, stop)
            http_task = asyncio.create_task(http, name=f"{name}-health")
        for job in runtime.background:
            job_task = asyncio.create_task(
                job(stop), name=f"{name}-{getattr(job, '__name__', 'job')}"
            )
            job_task.add_done_callback(lambda _task: stop.set())
            jobs.append(job_task)
        log.info("service_started", health_port=settings.health_port)
        await stop.wait()
        log.info("service_stopping")
    finally:
        stop.set()
        failed = await _finish_jobs(jobs)
        await broker.stop()
        if relay_task is not None:
            relay_task.cancel()
        for task in (relay_task, http_task):
            if task is not None:
                with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                    await asyncio.wait_for(task, timeout=5)
        await runtime.close()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.remove_signal_handler(sig)
        log.info("service_stopped")
    if failed:
        raise RuntimeError(f"{name}: background job(s) failed: {', '.join(failed)}")


async def _wire(runtime: Runtime, template: PortalConfig, wire: Wire) -> None:
    """The service's wiring, given the installed portals first in application mode."""
    if runtime.settings.nps_mode == "app":
        await _application_mode(runtime, template)
    await wire(runtime)


async def _application_mode(runtime: Runtime, template: PortalConfig) -> None:
    """Serve the installed portals (`shared/app_portals.py`), the portal YAML as the template of
    those without a stored configuration, read again every `APP_PORTALS_RELOAD_S`."""
    settings = runtime.settings
    credentials = AppCredentials.from_settings(settings)
    book = TokenBook(runtime.pool, OAuthServer(credentials))
    portals = runtime.portals = AppPortals(
        runtime.pool, book, template, reload_s=settings.app_portals_reload_s
    )
    runtime.configs, runtime.clients = portals.configs, portals.clients
    await portals.reload()

    async def reload_portals(stop: asyncio.Event) -> None:
        await portals.run(settings.app_portals_reload_s, stop)

    runtime.background.append(reload_portals)
    log.info("application_mode", portals=len(portals.served()))


async def _finish_jobs(jobs: list[asyncio.Task[None]]) -> list[str]:
    """Let the jobs return (they saw the stop event), cancel stragglers; the names that failed."""
    if not jobs:
        return []
    _done, pending = await asyncio.wait(jobs, timeout=JOB_STOP_TIMEOUT_S)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    failed = []
    for task in jobs:
        error = None if task.cancelled() else task.exception()
        if error is not None:
            log.error("background_job_failed", job=task.get_name(), error=f"{error!r}")
            failed.append(task.get_name())
    return failed


def run_loop(main: Coroutine[Any, Any, T]) -> T:
    """A service process's `asyncio.run`: on uvloop (libuv's event loop spends less CPU per
    socket operation, which is most of what a service does), with the imported code frozen out
    of garbage collection and collections far less frequent (see `GC_THRESHOLDS`)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    return uvloop.run(main)


def run(name: str, settings: Settings, wire: Wire) -> None:
    """Blocking entry point used by `nps run <name>`."""
    run_loop(serve(name, settings, wire))
