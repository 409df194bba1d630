"""The portal an `nps` command is about: `--portal MEMBER_ID_OR_DOMAIN` (docs/app.md, "The CLI
in application mode").

In application mode (`NPS_MODE=app`) a deployment serves every portal the application is
installed on, so a command that reads or writes one portal's rows, or calls one portal, names
it: `--portal` resolves among the installed portals (`bitrix24_app_portals`) by member id or
domain. A command without it, an unknown value, or a portal no longer installed stops with one
line naming the value and the installed portals (`PortalChoiceError`). The portal's
configuration is its stored one (`portal_configs`), else the deployment's portal YAML; its client
is `app_client`'s, with its tokens from the token book.

In webhook mode nothing changes: the portal is the one served (pinned by `portal.member_id`,
else learned by ingest from the first event); a read may name another portal's key with
`--portal` (its old rows), and a command that calls the portal accepts `--portal` only when it
names the served one (the webhook reaches no other).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass

import asyncpg

from shared import portal_store
from shared.bitrix24 import Bitrix24Client, client_from_settings
from shared.bitrix24.client import app_client
from shared.bitrix24.tokens import AppCredentials, AppPortal, OAuthServer, TokenBook, app_portals
from shared.db import Conn
from shared.events import PortalRef
from shared.portal_config import PortalConfig
from shared.served_portal import reading_key, served_portal
from shared.settings import Settings


class PortalChoiceError(Exception):
    """`--portal` missing, unknown or not installed; the message names the value and what was
    expected (the installed portals)."""


@dataclass(frozen=True)
class ChosenPortal:
    """The portal a command works on."""

    key: str | None
    """The `portal` key of its rows (application mode: its member_id); None in webhook mode
    while the served portal is not known yet (no event arrived, `portal.member_id` not set)."""
    config: PortalConfig
    domain: str | None = None
    installed: bool = False
    """Application mode: a portal the application is installed on (its client is `app_client`'s)."""

    @property
    def ref(self) -> PortalRef:
        return PortalRef(member_id=self.key, domain=self.domain)


def _normalized(value: str) -> str:
    """A domain as an operator may type it: any case, with a scheme or a trailing slash."""
    text = value.strip().lower()
    for scheme in ("https://", "http://"):
        text = text.removeprefix(scheme)
    return text.rstrip("/")


def _listed(portals: Sequence[AppPortal]) -> str:
    installed = [p for p in portals if p.status == "installed"]
    if not installed:
        return "no portal has the application installed yet (docs/app.md)"
    return "installed: " + ", ".join(f"{p.member_id} ({p.domain})" for p in installed)


def resolve_installed(chosen: str | None, portals: Sequence[AppPortal]) -> AppPortal:
    """The installed portal `chosen` names, by member id (exactly) or domain (any case, with or
    without `https://`); `PortalChoiceError` naming the installed portals otherwise."""
    if chosen is None or not chosen.strip():
        raise PortalChoiceError(
            "--portal is required in application mode (NPS_MODE=app): expected the member id"
            f" or domain of an installed portal; {_listed(portals)}"
        )
    wanted = _normalized(chosen)
    found = [p for p in portals if p.member_id == chosen.strip()] or [
        p for p in portals if _normalized(p.domain) == wanted
    ]
    if not found:
        raise PortalChoiceError(
            f"--portal {chosen!r}: no portal with that member id or domain; expected the member"
            f" id or domain of an installed portal; {_listed(portals)}"
        )
    portal = found[0]
    if portal.status != "installed":
        raise PortalChoiceError(
            f"--portal {chosen!r}: portal {portal.member_id} ({portal.domain}) is"
            f" {portal.status}, not installed; {_listed(portals)}"
        )
    return portal


async def reading_portal(
    conn: Conn, settings: Settings, chosen: str | None, pinned: str | None
) -> str | None:
    """The key of the portal a read is about: in application mode the installed portal `chosen`
    names (`PortalChoiceError` otherwise); in webhook mode `chosen` as given, else the served
    portal (`pinned`, else learned; None while none is known)."""
    if settings.nps_mode == "app":
        return resolve_installed(chosen, await app_portals(conn)).member_id
    return await reading_key(conn, chosen, pinned)


async def calling_portal(
    conn: Conn, settings: Settings, chosen: str | None, template: PortalConfig
) -> ChosenPortal:
    """The portal a command calls (and writes the rows of), with its configuration: in
    application mode the installed portal `chosen` names, its stored configuration or
    `template`; in webhook mode the served portal with `template` (`chosen`, when given, must
    name it)."""
    if settings.nps_mode == "app":
        portal = resolve_installed(chosen, await app_portals(conn))
        stored = await portal_store.load(conn, portal.member_id)
        config = template if stored is None else stored.config
        return ChosenPortal(portal.member_id, config, portal.domain, installed=True)
    served = await served_portal(conn, template)
    if chosen is not None:
        names = () if served is None else (served.member_id, served.domain)
        if _normalized(chosen) not in {_normalized(n) for n in names if n}:
            serving = "not known yet" if served is None else repr(served.member_id)
            raise PortalChoiceError(
                f"--portal {chosen!r}: this deployment calls one portal through its webhook"
                f" (NPS_MODE=webhook), the portal it serves ({serving}); expected its member id"
                " or domain, or no --portal"
            )
    if served is None:
        return ChosenPortal(None, template)
    return ChosenPortal(served.key, template, served.domain)


@asynccontextmanager
async def portal_client(
    settings: Settings, pool: asyncpg.Pool, portal: ChosenPortal
) -> AsyncIterator[Bitrix24Client]:
    """The chosen portal's client: the installed portal's (`app_client`, the application's
    credentials `ConfigError` when missing), else the webhook's (`client_from_settings`)."""
    if not portal.installed:
        async with client_from_settings(settings, pool, portal.config) as client:
            yield client
        return
    assert portal.key is not None
    book = TokenBook(pool, OAuthServer(AppCredentials.from_settings(settings)))
    try:
        async with app_client(pool, book, portal.key, portal.config) as client:
            yield client
    finally:
        await book.oauth.aclose()
