"""The one Bitrix24 portal a deployment serves: `portal.member_id` when the portal YAML pins it,
otherwise the portal ingest learned from the first authenticated event (table `ingest_portal`,
owned and written by ingest; read here by every part that must stay on that portal: the catch-up
sweep, `nps undo`, `nps audit`, `nps conflicts`, `nps config check --portal`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import asyncpg

from shared.db import Conn
from shared.events import PortalRef
from shared.portal_config import PortalConfig, load_portal_config


@dataclass(frozen=True)
class ServedPortal:
    member_id: str
    domain: str | None = None
    learned_at: datetime | None = None
    """When ingest learned it; None when it is pinned by `portal.member_id`."""

    @property
    def ref(self) -> PortalRef:
        return PortalRef(member_id=self.member_id, domain=self.domain)

    @property
    def key(self) -> str:
        """The `portal` key of every row written for this portal."""
        return self.ref.key


async def learned_portal(conn: Conn) -> ServedPortal | None:
    """The portal ingest learned from the first authenticated event; None before it."""
    row = await conn.fetchrow("SELECT member_id, domain, learned_at FROM ingest_portal")
    if row is None:
        return None
    return ServedPortal(row["member_id"], row["domain"], row["learned_at"])


def pinned_portal(config: PortalConfig) -> ServedPortal | None:
    """The portal `portal.member_id` pins, if it is set."""
    member_id = config.portal.member_id
    return None if member_id is None else ServedPortal(member_id)


async def served_portal(conn: Conn, config: PortalConfig) -> ServedPortal | None:
    """The pinned portal, else the learned one; None while neither is known."""
    return pinned_portal(config) or await learned_portal(conn)


async def served_portal_at(dsn: str, config: PortalConfig) -> ServedPortal | None:
    """As `served_portal`, connecting to the database only when the portal is not pinned."""
    pinned = pinned_portal(config)
    if pinned is not None:
        return pinned
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        return await learned_portal(conn)
    finally:
        await conn.close()


def pinned_member_id(config_path: Path) -> str | None:
    """`portal.member_id` of the portal YAML at `config_path`, for a reader that needs no YAML
    otherwise; None without the file or the key (`ConfigError` for a file that does not load)."""
    if not config_path.exists():
        return None
    return load_portal_config(config_path).portal.member_id


async def reading_key(conn: Conn, chosen: str | None, pinned: str | None) -> str | None:
    """The portal a dashboard or CLI read is about: the one `chosen` (`?portal=`, `--portal`),
    else the served one (`pinned` by `portal.member_id`, else learned by ingest); None while no
    portal is known yet (no answer can be stored before then)."""
    if chosen is not None:
        return chosen
    if pinned is not None:
        return pinned
    learned = await learned_portal(conn)
    return None if learned is None else learned.key


def describe(portal: ServedPortal | None, config_path: Path) -> str:
    """What `nps config check --portal` says about the portal the deployment serves."""
    refused = "events from any other portal are refused (403)"
    if portal is None:
        return (
            "served portal: not known yet (portal.member_id is not set and no event has arrived);"
            " the portal of the first authenticated event will be kept. To pin it now, set"
            f" portal.member_id in {config_path} to the member_id of its events"
        )
    if portal.learned_at is None:
        return (
            f"served portal: {portal.member_id}, pinned by portal.member_id in {config_path};"
            f" {refused}"
        )
    domain = f" ({portal.domain})" if portal.domain else ""
    return (
        f"served portal: {portal.member_id}{domain}, learned from its first event on"
        f" {portal.learned_at:%Y-%m-%d %H:%M:%S %Z}; {refused}. To pin it, set"
        f" portal.member_id: {portal.member_id} in {config_path}"
    )
