"""Router's read module: what others read of `router_actions` (docs/architecture.md, "Tables
and their owners")."""

from __future__ import annotations

from shared.db import Conn


async def sent_actions(conn: Conn, portal: str | None) -> int:
    """How many actions the router has sent for `portal` (None: for every portal)."""
    count = await conn.fetchval(
        "SELECT count(*) FROM router_actions WHERE $1::text IS NULL OR portal = $1", portal
    )
    return int(count)
