"""crm_sync's advisory locks: every lock of a process on one connection, a key the process holds
counts as taken, another process is kept out, and a small pool never fills up with locks."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import pytest

from services.crm_sync.locks import ContactLocks, LockSession, WriterLocks
from shared.db import create_pool

A, B, C = 0x7E57_0001, 0x7E57_0002, 0x7E57_0003  # namespaces of this test only


@pytest.fixture
async def small_pool(pg_dsn: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(pg_dsn, max_size=2)
    yield pool
    pool.terminate()  # a failed test may leave its lock connection taken


class BusyError(RuntimeError):
    pass


def busy(key: str) -> Exception:
    return BusyError(f"{key} is carried out elsewhere")


async def lock_holders(pool: asyncpg.Pool) -> int:
    """How many server processes hold advisory locks of this test's namespaces."""
    held: int = await pool.fetchval(
        """SELECT count(DISTINCT pid) FROM pg_locks
           WHERE locktype = 'advisory' AND classid::bigint = ANY($1::bigint[])""",
        [A, B, C],
    )
    return held


async def test_every_lock_of_a_process_is_on_one_connection_and_work_goes_on(
    small_pool: asyncpg.Pool, pool: asyncpg.Pool
) -> None:
    session = LockSession(small_pool)
    contacts = ContactLocks(session, A)
    actions = WriterLocks(session, B, busy)
    commands = WriterLocks(session, C, busy)

    assert await contacts.acquire([("alpha", 1), ("beta", 1)]) == {("alpha", 1), ("beta", 1)}
    async with actions.hold("action-1"), commands.hold("command-1"), actions.hold("action-2"):
        assert await lock_holders(pool) == 1
        # a pool of two still has a connection for the work itself
        assert await asyncio.wait_for(small_pool.fetchval("SELECT 1"), timeout=5) == 1
    await contacts.release([("alpha", 1), ("beta", 1)])
    assert await lock_holders(pool) == 0


async def test_a_key_this_process_holds_is_taken_and_another_process_is_kept_out(
    small_pool: asyncpg.Pool, pg_dsn: str
) -> None:
    session = LockSession(small_pool)
    assert await session.acquire(A, ["k", "k", "m"]) == {"k", "m"}
    assert await session.acquire(A, ["k"]) == set()  # held here: not handed out twice
    assert await session.acquire(B, ["k"]) == {"k"}  # another namespace, another lock

    other_pool = await create_pool(pg_dsn, max_size=2)
    try:
        other = LockSession(other_pool)
        assert await other.acquire(A, ["k", "n"]) == {"n"}
        async with WriterLocks(session, C, busy).hold("w"):
            with pytest.raises(BusyError, match="w is carried out elsewhere"):
                async with WriterLocks(other, C, busy).hold("w"):
                    pass
        await session.release(A, ["k"])
        assert await other.acquire(A, ["k"]) == {"k"}
        await other.release(A, ["k", "n"])
    finally:
        other_pool.terminate()
    await session.release(A, ["m"])
    await session.release(B, ["k"])
    assert await session.acquire(A, ["k", "m"]) == {"k", "m"}
    await session.release(A, ["k", "m"])
