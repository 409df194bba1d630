"""Application mode (`NPS_MODE=app`, docs/app.md): the portals a deployment serves are the
portals the Bitrix24 application is installed on (`bitrix24_app_portals`, status `installed`),
each with its stored configuration (`shared/portal_store.py`) or else the deployment's portal
YAML as its template, and its own client (`app_client`: its tokens from the `TokenBook`, its
rate budget keyed by its member_id).

`AppPortals.reload()` reads the registry again and brings `configs` and `clients` up to date: a
new install is served, a changed configuration (its version) replaces the old one (the services'
per-portal objects are rebuilt from it, `PerPortal`; a changed `portal.plan`, `portal.rate` or
`portal.bulk_min_share` gives the portal a new client with that budget), an uninstalled or
revoked portal is taken out (`PortalGoneError`: its messages are dropped with one log line,
never dead-lettered) and the others go on. It runs every `APP_PORTALS_RELOAD_S` and, at most
once a second, when a message names a portal never served (`ensure`, waiting for that second
rather than refusing the message): an install is served from its first event on. A message of
a portal known gone reads nothing (its portal is dropped at once; a reinstall is served from the
next periodic reload), unless the last read is older than `APP_PORTALS_RELOAD_S`.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Callable

import asyncpg
import httpx
from prometheus_client import Counter, Gauge

from shared import portal_store
from shared.bitrix24 import Bitrix24Client
from shared.bitrix24.client import app_client
from shared.bitrix24.tokens import AppPortal, TokenBook
from shared.events import PortalRef
from shared.logging import get_logger
from shared.portal_config import ConfigError, PortalConfig
from shared.portals import PortalClients, PortalConfigs

log = get_logger(__name__)

ENSURE_MIN_INTERVAL_S = 1.0
"""A message of a portal not served reads the registry again at most this often."""

PORTALS_SERVED = Gauge("nps_app_portals_served", "Installed portals served by this process")
PORTALS_STOPPED = Counter(
    "nps_app_portals_stopped_total",
    "Portals this process stopped serving (the application uninstalled or its tokens revoked)",
    ["status"],
)


class AppPortals:
    """The installed portals' configurations and clients, kept up to date (module docstring)."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        book: TokenBook,
        template: PortalConfig,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], float] = time.monotonic,
        reload_s: float = 10.0,
    ) -> None:
        self._pool = pool
        self.book = book
        self.template = template
        """The configuration of an installed portal without a stored one (the portal YAML)."""
        self._transport = transport
        self._clock = clock
        self._reload_s = reload_s
        """`APP_PORTALS_RELOAD_S`: a portal known gone is not read again sooner (`ensure`)."""
        self.configs = PortalConfigs({})
        self.clients = PortalClients({})
        self._versions: dict[str, int | None] = {}
        """The stored configuration's version each served portal runs on (None: the template)."""
        self._retired: list[Bitrix24Client] = []
        """Clients of portals taken out, closed with the others at the end (a call in flight
        may still hold one)."""
        self._domains: dict[str, str] = {}
        self._lock = asyncio.Lock()
        self._loaded_at = -math.inf

    def served(self) -> tuple[str, ...]:
        return self.configs.keys() or ()

    async def ensure(self, key: str) -> None:
        """Before a message of portal `key` is handled: a portal never served makes the registry
        be read again, so a new install is served; then `configs.get(key)` says what it is
        (served, gone, or unknown). Reads are at most one per `ENSURE_MIN_INTERVAL_S`: a
        message that comes sooner waits for the next one rather than be refused, as its portal
        may have installed just after the last read; messages waiting together share that read.
        A portal known gone returns at once (its messages are dropped without a wait, and
        never hold up the other portals' messages) while the last read is younger than
        `APP_PORTALS_RELOAD_S` (the periodic reload serves it again once reinstalled)."""
        if key in self.served():
            return
        if self.configs.gone(key) and self._clock() - self._loaded_at < self._reload_s:
            return
        asked = self._clock()
        async with self._lock:
            if key in self.served() or self._loaded_at > asked:
                return
            wait = ENSURE_MIN_INTERVAL_S - (self._clock() - self._loaded_at)
            if wait > 0:
                await asyncio.sleep(wait)
            await self._reload()

    async def config_of(self, key: str) -> PortalConfig:
        """The configuration of portal `key`, which the registry says is installed: read again
        first when it is not served yet (its install is newer than the last reload)."""
        if key not in self.served():
            await self.reload()
        return self.configs.get(key)

    def ref(self, key: str) -> PortalRef:
        """The portal served as `key`, as events name it."""
        return PortalRef(member_id=key, domain=self._domains.get(key))

    async def reload(self) -> None:
        """Read the registry and the stored configurations again (module docstring)."""
        async with self._lock:
            await self._reload()

    async def run(self, interval_s: float, stop: asyncio.Event) -> None:
        """Reload every `interval_s` until `stop` is set; a failed reload is logged and the
        portals served stay as they were."""
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=interval_s)
            if stop.is_set():
                return
            try:
                await self.reload()
            except Exception as exc:  # the database restarting (asyncpg's errors vary): next round
                log.warning("app_portals_reload_failed", error=type(exc).__name__)

    async def aclose(self) -> None:
        await self.clients.aclose()
        for client in self._retired:
            await client.aclose()
        await self.book.oauth.aclose()

    async def _reload(self) -> None:
        started = self._clock()
        portals = await self.book.portals()
        for portal in portals:
            if portal.status == "installed":
                await self._serve(portal)
            else:
                self._stop(portal)
        self._loaded_at = started
        PORTALS_SERVED.set(len(self.served()))

    async def _serve(self, portal: AppPortal) -> None:
        key = portal.member_id
        self._domains[key] = portal.domain
        async with self._pool.acquire() as conn:
            try:
                stored = await portal_store.load(conn, key)
            except ConfigError as exc:
                log.error("app_portal_config_invalid", portal=key, error=str(exc))
                if key in self.served():
                    return  # keeps the configuration it runs on
                stored = None
        version = None if stored is None else stored.version
        config = self.template if stored is None else stored.config
        if key in self.served():
            if self._versions[key] != version:
                if _budget_of(self.configs.get(key)) != _budget_of(config):
                    self._replace_client(key, config)
                self.configs.put(key, config)
                self._versions[key] = version
                log.info("app_portal_config_changed", portal=key, version=version)
            return
        self.configs.put(key, config)
        self._versions[key] = version
        self.clients.put(key, app_client(self._pool, self.book, key, config, self._transport))
        self.book.forget(key)  # a reinstall brought new tokens
        log.info("app_portal_served", portal=key, domain=portal.domain, config_version=version)

    def _replace_client(self, key: str, config: PortalConfig) -> None:
        """Portal `key`'s budget changed: a new client limited as `config` says, put before the
        configuration so what is rebuilt from it takes the new one; the old one is retired (a
        call in flight may still hold it)."""
        client = self.clients.remove(key, "replaced")
        if client is not None:
            self._retired.append(client)
        self.clients.put(key, app_client(self._pool, self.book, key, config, self._transport))
        portal = config.portal
        log.info("app_portal_budget_changed", portal=key, plan=portal.plan)

    def _stop(self, portal: AppPortal) -> None:
        key = portal.member_id
        was_served = key in self.served()
        self.configs.remove(key, portal.status)
        client = self.clients.remove(key, portal.status)
        if client is not None:
            self._retired.append(client)
        self._versions.pop(key, None)
        self.book.forget(key)
        if was_served:
            PORTALS_STOPPED.labels(status=portal.status).inc()
            log.warning(
                "app_portal_stopped", portal=key, domain=portal.domain, status=portal.status
            )


def _budget_of(config: PortalConfig) -> tuple[object, ...]:
    """What a portal's client is limited by (`app_client`)."""
    portal = config.portal
    return (portal.plan, portal.effective_rate(), portal.bulk_min_share)
