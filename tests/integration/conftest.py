"""Every integration test starts from an empty outbox: a service a test starts relays whatever
the table holds, and rows an earlier test left behind would reach that test's queues."""

from __future__ import annotations

import asyncpg
import pytest


@pytest.fixture(autouse=True)
async def empty_outbox(pool: asyncpg.Pool) -> None:
    await pool.execute("DELETE FROM outbox")
