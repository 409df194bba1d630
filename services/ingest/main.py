"""The ingest process: the webhook endpoints (uvicorn on INGEST_HOST:INGEST_PORT), health and
metrics on a port of their own (HEALTH_HOST:INGEST_HEALTH_PORT), the hydrator
consuming `ingest.hydrate`, the outbox relay, the periodic catch-up sweep and the portal YAML's
reloader (SIGHUP or a changed file; it releases held items), with `INGEST_OFFLINE` the puller of
the portals' offline queues (`services/ingest/offline.py`), all in one process
and stopped together by SIGTERM/SIGINT (`shared.service.serve` owns the stop event; uvicorn is
run without its own signal handlers)."""

from __future__ import annotations

import asyncio

from services.ingest.api import create_app
from services.ingest.batching import PAGE_SIZE
from services.ingest.contacts import ContactManagers
from services.ingest.hydrator import FieldCatalog, Hydrator, ItemReader
from services.ingest.offline import OfflineIntake, served_portals
from services.ingest.release import ConfigReloader, InstalledReleases
from services.ingest.sweep import Sweeper, run_names, run_sweeps
from services.ingest.users import NAMES_INTERVAL_S
from shared.app_portals import AppPortals
from shared.events import WebhookReceived
from shared.health import serve_http
from shared.messaging import subscribe
from shared.portal_config import PortalConfig
from shared.portals import PerPortal
from shared.service import Background, Runtime, run_loop, serve
from shared.settings import Settings
from shared.topology import INGEST_HYDRATE


def run(settings: Settings) -> None:
    """Blocking entry point of `nps run ingest`."""
    run_loop(serve_ingest(settings))


async def serve_ingest(settings: Settings, stop: asyncio.Event | None = None) -> None:
    """Run ingest until `stop` is set or a signal arrives."""

    async def wire(runtime: Runtime) -> None:
        pool, outbox, configs = runtime.pool, runtime.outbox, runtime.configs
        hydrators = subscribe_hydrator(runtime)
        if settings.ingest_offline:  # the portals served are read each round, in either mode
            runtime.background.append(offline_intake(runtime))
        if runtime.portals is not None:
            wire_installed_portals(runtime, runtime.portals)
            return
        # The webhook endpoints, the sweep and the reloader serve the one portal the YAML is for.
        config = configs.only()
        app = create_app(settings, config, pool, outbox)
        sweeper = Sweeper(pool, outbox, runtime.portal_clients().only(), config)

        def reconfigure_hydrators(config: PortalConfig) -> None:
            for hydrator in hydrators.built():
                hydrator.reconfigure(config)

        reloader = ConfigReloader(
            settings.portal_config_path(),
            config,
            pool,
            outbox,
            (configs.replace, reconfigure_hydrators, sweeper.reconfigure),
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

    # Health and metrics never share the port the internet reaches: HEALTH_PORT is ingest's
    # INGEST_HEALTH_PORT (one .env serves every process).
    health = settings.model_copy(update={"health_port": settings.ingest_health_port})
    await serve("ingest", health, wire, stop=stop, prefetch=PAGE_SIZE)


def wire_installed_portals(runtime: Runtime, portals: AppPortals) -> None:
    """Application mode: the webhook endpoints check each request against its own portal's
    registration; the sweep and the managers' names run for each installed portal in turn. The
    portal YAML is the template of portals without a stored configuration (read at start; the
    stored ones are read again by `AppPortals`), so it has no reloader here: each portal's held
    items go out when its own configuration maps them (`InstalledReleases`)."""
    settings, pool, outbox = runtime.settings, runtime.pool, runtime.outbox
    configs, clients = portals.configs, portals.clients
    app = create_app(settings, portals.template, pool, outbox, portals=portals)

    def sweeper_of(key: str) -> Sweeper:
        return Sweeper(pool, outbox, clients.get(key), configs.get(key), portal=portals.ref(key))

    sweepers = PerPortal(configs, sweeper_of)

    def installed() -> list[Sweeper]:
        return [sweepers.get(key) for key in portals.served()]

    async def http(stop: asyncio.Event) -> None:
        await serve_http(app, settings.ingest_host, settings.ingest_port, stop)

    async def sweep(stop: asyncio.Event) -> None:
        await run_sweeps(installed, settings.sweep_interval_s, stop)

    async def names(stop: asyncio.Event) -> None:
        await run_names(installed, NAMES_INTERVAL_S, stop)

    releases = InstalledReleases(pool, outbox, configs, portals.served)

    async def release(stop: asyncio.Event) -> None:
        await releases.run(settings.app_portals_reload_s, stop)

    runtime.background.extend((http, sweep, names, release))


def subscribe_hydrator(runtime: Runtime) -> PerPortal[Hydrator]:
    """The hydrator on `ingest.hydrate`: one per portal (its reads batched with that portal's
    only), each with its portal's configuration and client, found by the event's portal."""
    pool, outbox, configs = runtime.pool, runtime.outbox, runtime.configs
    clients = runtime.portal_clients()

    def hydrator_of(key: str) -> Hydrator:
        client = clients.get(key)
        return Hydrator(
            pool,
            outbox,
            ItemReader(client),
            FieldCatalog(client),
            configs.get(key),
            contacts=ContactManagers(client),
        )

    hydrators = PerPortal(configs, hydrator_of)

    async def hydrate(event: WebhookReceived) -> None:
        await runtime.ensure_portal(event.portal.key)
        await hydrators.get(event.portal.key).handle(event)

    subscribe(
        runtime.broker,
        INGEST_HYDRATE,
        WebhookReceived,
        hydrate,
        max_attempts=runtime.settings.retry_max_attempts,
    )
    return hydrators


def offline_intake(runtime: Runtime) -> Background:
    """The offline intake's job: every served portal's offline queue pulled, the portals taken
    from the runtime's providers each round."""
    settings = runtime.settings
    intake = OfflineIntake(
        runtime.pool,
        runtime.outbox,
        served_portals(runtime.pool, lambda: runtime.configs, runtime.portal_clients),
        settings.ingest_offline_poll_s,
        settings.ingest_offline_poll_max_s,
    )

    async def offline(stop: asyncio.Event) -> None:
        await intake.run(stop)

    return offline
