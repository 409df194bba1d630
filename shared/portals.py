"""The portals a deployment serves, by portal key (`PortalRef.key`, the `portal` column of every
per-portal row): each portal's configuration (`PortalConfigs`), its Bitrix24 client with its own
rate budget (`PortalClients`), and what a service builds once per portal from them (`PerPortal`).

A handler resolves what it needs from the portal of the event it handles (`event.portal.key`,
`action.answer.portal.key`), so nothing it reads, writes or batches together crosses portals.

Today a deployment serves one portal (`PortalConfigs.one`, `PortalClients.one`): the portal YAML
and the client `client_from_settings` builds serve whichever portal is served (pinned by
`portal.member_id` or learned by ingest from the first event; ingest refuses every other
portal's events at the door). A deployment of several portals gives one configuration and one
client per key (`PortalConfigs(...)`, `PortalClients(...)`), and a key it does not serve is
refused (`UnknownPortalError`, a permanent error: the message dead-letters naming the portal).
In application mode (`shared/app_portals.py`) the portals are the installed ones, added with
`put` as they install and taken out with `remove` as they uninstall: a portal taken out is
`PortalGoneError`, whose messages are dropped (`DropMessage`), not dead-lettered.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Generic, TypeVar

from shared.bitrix24 import Bitrix24Client
from shared.messaging import DropMessage, PermanentError
from shared.portal_config import PortalConfig

T = TypeVar("T")


class UnknownPortalError(PermanentError):
    """A portal key the deployment does not serve."""

    def __init__(self, key: str, served: tuple[str, ...]) -> None:
        super().__init__(
            f"portal {key!r} is not served by this deployment (it serves {', '.join(served)})"
        )


class PortalGoneError(DropMessage):
    """A portal that was served and is no more: the application was uninstalled there (or its
    tokens revoked). Its messages are dropped, not dead-lettered."""

    def __init__(self, key: str, status: str) -> None:
        self.key = key
        self.status = status
        super().__init__(f"portal {key!r} is {status}: its work has stopped")


class _ByPortal(Generic[T]):
    """One value per served portal key (`{}`: by name, none yet), or one value for every key
    (the one-portal deployment)."""

    def __init__(self, by_key: Mapping[str, T] | None = None, *, every: T | None = None) -> None:
        if (every is None) == (by_key is None):
            raise ValueError("either one value per portal key or one value for every key")
        self._by_key = dict(by_key or {})
        self._gone: dict[str, str] = {}
        self._every = every

    def get(self, key: str) -> T:
        """The value of portal `key`; `UnknownPortalError` for a portal not served,
        `PortalGoneError` for one taken out (`remove`)."""
        if self._every is not None:
            return self._every
        try:
            return self._by_key[key]
        except KeyError:
            if key in self._gone:
                raise PortalGoneError(key, self._gone[key]) from None
            raise UnknownPortalError(key, tuple(self._by_key)) from None

    def put(self, key: str, value: T) -> None:
        """Serve portal `key` with `value` (an install, a changed configuration)."""
        self._require_named()
        self._by_key[key] = value
        self._gone.pop(key, None)

    def gone(self, key: str) -> bool:
        """Whether portal `key` was served and was taken out (`remove`)."""
        return key in self._gone

    def remove(self, key: str, status: str) -> T | None:
        """Stop serving portal `key` (`status`: why, e.g. uninstalled); its value, if served."""
        self._require_named()
        self._gone[key] = status
        return self._by_key.pop(key, None)

    def _require_named(self) -> None:
        if self._every is not None:
            raise ValueError("one portal is served: portals are not added or removed")

    def only(self) -> T:
        """The one portal's value, for what is not per portal yet (a background job, a page)
        in a one-portal deployment; a deployment of several portals is refused."""
        if self._every is not None:
            return self._every
        if len(self._by_key) == 1:
            return next(iter(self._by_key.values()))
        raise ValueError(f"several portals are served ({', '.join(self._by_key)}), not one")

    def keys(self) -> tuple[str, ...] | None:
        """The keys of the portals served by name; None for the one-portal deployment, whose
        portal is pinned or learned (`shared/served_portal.py`)."""
        return None if self._every is not None else tuple(self._by_key)

    def values(self) -> Iterator[T]:
        if self._every is not None:
            yield self._every
        else:
            yield from self._by_key.values()


class PortalConfigs(_ByPortal[PortalConfig]):
    """Each served portal's configuration (its portal YAML)."""

    @classmethod
    def one(cls, config: PortalConfig) -> PortalConfigs:
        """The one-portal deployment: the portal YAML for the served portal."""
        return cls(every=config)

    def replace(self, config: PortalConfig) -> None:
        """The one portal's reloaded portal YAML (ingest's reloader: SIGHUP or a changed file)."""
        if self._every is None:
            raise ValueError("several portals are served: their configurations are not reloaded")
        self._every = config


class PortalClients(_ByPortal[Bitrix24Client]):
    """Each served portal's Bitrix24 client (its webhook or application auth, its rate budget);
    `aclose` closes them all."""

    @classmethod
    def one(cls, client: Bitrix24Client) -> PortalClients:
        """The one-portal deployment: `client_from_settings`'s client for the served portal."""
        return cls(every=client)

    async def aclose(self) -> None:
        for client in self.values():
            await client.aclose()


class PerPortal(Generic[T]):
    """What a service builds once per portal (a writer with its coalescer, a hydrator with its
    batched reads), from that portal's configuration and client: `get(key)` builds it the first
    time and keeps it. In the one-portal deployment (`configs.keys()` is None) every key gets
    the one built for the first. With portals by name, a portal whose configuration was
    replaced (`PortalConfigs.put`) gets a new one built from it, and a portal no longer served
    raises what `configs.get` raises."""

    def __init__(self, configs: PortalConfigs, build: Callable[[str], T]) -> None:
        self._configs = configs
        self._one = configs.keys() is None
        self._build = build
        self._built: dict[str, tuple[PortalConfig, T]] = {}

    def get(self, key: str) -> T:
        slot = "" if self._one else key
        built = self._built.get(slot)
        if self._one:
            if built is None:
                built = self._built[slot] = (self._configs.get(key), self._build(key))
            return built[1]
        config = self._configs.get(key)
        if built is None or built[0] is not config:
            built = self._built[slot] = (config, self._build(key))
        return built[1]

    def built(self) -> list[T]:
        """Everything built so far (to reconfigure on a reload)."""
        return [value for _config, value in self._built.values()]
