"""The ingest process: the webhook endpoints (uvicorn on INGEST_HOST:INGEST_PORT), health and
metrics on a port of their own (HEALTH_HOST:INGEST_HEALTH_PORT), the hydrator
consuming `ingest.hydrate`, the outbox relay, the periodic catch-up sweep and the portal YAML's
reloader (SIGHUP or a changed file; it releases held items), all in one process
and stopped together by SIGTERM/SIGINT (`shared.service.serve` owns the stop event; uvicorn is
run without its own signal handlers)."""

from __future__ import annotations

import asyncio

from services.ingest.api import create_app
from services.ingest.batching import PAGE_SIZE
from services.ingest.contacts import ContactManagers
from services.ingest.hydrator import FieldCatalog, Hydrator, ItemReader
from services.ingest.release import ConfigReloader
from services.ingest.sweep import Sweeper
from services.ingest.users import NAMES_INTERVAL_S
from shared.bitrix24 import Bitrix24Client, client_from_settings
from shared.events import WebhookReceived
from shared.health import serve_http
from shared.messaging import subscribe
from shared.service import Runtime, run_loop, serve
from shared.settings import Settings
from shared.topology import INGEST_HYDRATE


def run(settings: Settings) -> None:
    """Blocking entry point of `nps run ingest`."""
    run_loop(serve_ingest(settings))


async def serve_ingest(settings: Settings, stop: asyncio.Event | None = None) -> None:
    """Run ingest until `stop` is set or a signal arrives."""
    clients: list[Bitrix24Client] = []

    async def wire(runtime: Runtime) -> None:
        config, pool, outbox = runtime.config, runtime.pool, runtime.outbox
        client = client_from_settings(settings, pool, config)
        clients.append(client)
        hydrator = Hydrator(
            pool,
            outbox,
            ItemReader(client),
            FieldCatalog(client),
            config,
            contacts=ContactManagers(client),
        )
        subscribe(
            runtime.broker,
            INGEST_HYDRATE,
            WebhookReceived,
            hydrator.handle,
            max_attempts=settings.retry_max_attempts,
        )
        app = create_app(settings, config, pool, outbox)
        sweeper = Sweeper(pool, outbox, client, config)
        reloader = ConfigReloader(
            settings.portal_config_path(),
            config,
            pool,
            outbox,
            (hydrator.reconfigure, sweeper.reconfigure),
        )

        async def http(stop: asyncio.Event) -> None:
            await serve_http(app, settings.ingest_host, settings.ingest_port, stop)

        async def sweep(stop: asyncio.Event) -> None:
            await sweeper.run(settings.sweep_interval_s, stop)

        async def reload(stop: asyncio.Event) -> None:
            await reloader.run(settings.config_reload_s, stop)

        async def names(stop: asyncio.Event) -> None:
            await sweeper.run_names(NAMES_INTERVAL_S, stop)

        runtime.background.extend((http, sweep, reload, names))

    try:
        # Health and metrics never share the port the internet reaches: HEALTH_PORT is ingest's
        # INGEST_HEALTH_PORT (one .env serves every process).
        health = settings.model_copy(update={"health_port": settings.ingest_health_port})
        await serve("ingest", health, wire, stop=stop, prefetch=PAGE_SIZE)
    finally:
        for client in clients:
            await client.aclose()
