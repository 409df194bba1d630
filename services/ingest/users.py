"""Who a responsible manager is: the names of the portal's users that answers name, read with
`user.get` and kept in `ingest_users` (migration 0117).

The hydrator marks a user as wanted when an answer first names it; every `NAMES_INTERVAL_S` the
sweeper reads the wanted users and those not read for `REFRESH_AFTER`, at most `BATCH_USERS` per
turn, in `batch` requests within the portal's shared request budget (a turn with nothing to read
sends no request). A user the portal no longer knows keeps no
name (the pages say `user <id>`). The dashboard and `nps report` read the names through
ingest's read module (`services.ingest.read.user_names`).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from shared.bitrix24 import Bitrix24Client
from shared.bitrix24.client import Command
from shared.db import Conn
from shared.logging import get_logger

REFRESH_AFTER = timedelta(days=1)
BATCH_USERS = 200
NAMES_INTERVAL_S = 30.0

log = get_logger(__name__)


def user_name(user: Mapping[str, Any] | None) -> str | None:
    """`NAME LAST_NAME` of a `user.get` row (whichever is set); None without either."""
    if user is None:
        return None
    parts = (str(user.get(key) or "").strip() for key in ("NAME", "LAST_NAME"))
    return " ".join(part for part in parts if part) or None


async def want(conn: Conn, portal: str, user_id: int | None) -> None:
    """Remember that answers of `portal` name `user_id` (read at the next refresh if new)."""
    if user_id is None:
        return
    await conn.execute(
        "INSERT INTO ingest_users (portal, user_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        portal,
        user_id,
    )


async def refresh_names(conn: Conn, client: Bitrix24Client, portal: str, now: datetime) -> int:
    """Read the names of the wanted and stale users of `portal`; how many were read."""
    ids = [
        row["user_id"]
        for row in await conn.fetch(
            "SELECT user_id FROM ingest_users WHERE portal = $1"
            " AND (refreshed_at IS NULL OR refreshed_at < $2)"
            " ORDER BY refreshed_at NULLS FIRST, user_id LIMIT $3",
            portal,
            now - REFRESH_AFTER,
            BATCH_USERS,
        )
    ]
    if not ids:
        return 0
    reply = await client.batch(
        [Command(f"u{user_id}", "user.get", {"ID": user_id}) for user_id in ids]
    )
    read = 0
    for user_id in ids:
        name = f"u{user_id}"
        if not reply.ok(name):
            continue  # tried again on the next turn
        rows = reply.results[name]
        user = rows[0] if isinstance(rows, list) and rows and isinstance(rows[0], Mapping) else None
        await conn.execute(
            "UPDATE ingest_users SET name = $3, refreshed_at = $4"
            " WHERE portal = $1 AND user_id = $2",
            portal,
            user_id,
            user_name(user),
            now,
        )
        read += 1
    log.info("user_names_refreshed", users=read, failed=len(ids) - read)
    return read
