"""What others read of dispatch's register (the CLI, the dashboard, the harness): the requests
with their states, and the counts per state (docs/dispatch.md, The register)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from shared.db import Conn


@dataclass(frozen=True)
class RegisterFilter:
    portal: str | None = None
    state: str | None = None
    survey: str | None = None
    contact_id: int | None = None
    since: datetime | None = None
    limit: int = 50


async def requests(conn: Conn, where: RegisterFilter) -> list[dict[str, Any]]:
    """The register's requests, newest first, as plain values."""
    rows = await conn.fetch(
        """SELECT request_id, portal, source, ref, survey, kind, sku, contact_id,
                  responsible_id, sale_deal_id, nps_deal_id, lang, channel, state, reason,
                  sends, created_at, sent_at, last_sent_at, opened_at, answered_at, closed_at,
                  call_task_id, due_at
           FROM dispatch_requests
           WHERE ($1::text IS NULL OR portal = $1) AND ($2::text IS NULL OR state = $2)
             AND ($3::text IS NULL OR survey = $3) AND ($4::bigint IS NULL OR contact_id = $4)
             AND ($5::timestamptz IS NULL OR created_at >= $5)
           ORDER BY created_at DESC, request_id LIMIT $6""",
        where.portal,
        where.state,
        where.survey,
        where.contact_id,
        where.since,
        where.limit,
    )
    return [dict(row) for row in rows]


async def state_counts(conn: Conn, portal: str | None = None) -> dict[str, int]:
    """How many requests are in each state."""
    rows = await conn.fetch(
        """SELECT state, count(*) AS n FROM dispatch_requests
           WHERE $1::text IS NULL OR portal = $1 GROUP BY state""",
        portal,
    )
    return {row["state"]: row["n"] for row in rows}


async def sends(conn: Conn, request_id: Any) -> list[dict[str, Any]]:
    """A request's sends (0: the first message, n: the n-th reminder)."""
    rows = await conn.fetch(
        """SELECT n, channel, state, reason, started_at, finished_at FROM dispatch_sends
           WHERE request_id = $1 ORDER BY n""",
        request_id,
    )
    return [dict(row) for row in rows]
