"""The one Bitrix24 portal a deployment serves: `portal.member_id` when the portal YAML pins it,
otherwise the portal ingest learned from the first authenticated event (table `ingest_portal`,
owned and written by ingest; read here by every part that must stay on that portal: the catch-up
sweep, `nps undo`, `nps audit`, `nps conflicts`, `nps config check --portal`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from shared.events import PortalRef
from shared.portal_config import PortalConfig


@dataclass(frozen=True)
class ServedPortal:
    member_id: str
    domain: str | None = None
    learned_at: datetime | None = None
    """When ingest learned it; None when it is pinned by `portal.member_id`."""

    @property
    def pinned(self) -> bool:
        return self.learned_at is None

    @property
    def ref(self) -> PortalRef:
        return PortalRef(member_id=self.member_id, domain=self.domain)

    @property
    def key(self) -> str:
        """The `portal` key of every row written for this portal."""
        return self.ref.key


async def learned_portal(conn: asyncpg.Connection | PoolConnectionProxy) -> ServedPortal | None:
    """The portal ingest learned from the first authenticated event; None before it."""
    row = await conn.fetchrow("SELECT member_id, domain, learned_at FROM ingest_portal")
    if row is None:
        return None
    return ServedPortal(row["member_id"], row["domain"], row["learned_at"])


async def served_portal(
    conn: asyncpg.Connection | PoolConnectionProxy, config: PortalConfig
) -> ServedPortal | None:
    """The pinned portal, else the learned one; None while neither is known."""
    if config.portal.member_id is not None:
        return ServedPortal(config.portal.member_id)
    return await learned_portal(conn)
