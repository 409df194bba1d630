"""Ingest's state as tests reset it."""

from __future__ import annotations

import asyncpg


async def forget_served_portal(pool: asyncpg.Pool) -> None:
    """Let the next authentic event teach ingest its portal again, as in a new deployment: tests
    of the unpinned app share one database but each sends from portals of its own."""
    await pool.execute("DELETE FROM ingest_portal")
