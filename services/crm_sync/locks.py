"""Cross-process locks on the contacts crm_sync patches: PostgreSQL session advisory locks, so
two writer replicas never work on one contact at once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager

import asyncpg
from asyncpg.pool import PoolConnectionProxy

ContactKey = tuple[str, int]
"""(portal key, contact id)"""

_LOCK_NAMESPACE = 0x4E50_5343  # "NPSC": advisory locks on contacts being patched


class ContactLocks:
    """Session advisory locks on the contacts being patched, so two writer replicas never work
    on one contact at once. The locks live on one connection taken from the pool while any is
    held (a crashed process releases them with its connection)."""

    def __init__(self, pool: asyncpg.Pool, namespace: int = _LOCK_NAMESPACE) -> None:
        self._pool = pool
        self._namespace = namespace
        self._conn: PoolConnectionProxy | None = None
        self._held: set[ContactKey] = set()
        self._guard = asyncio.Lock()

    async def acquire(self, keys: Sequence[ContactKey]) -> set[ContactKey]:
        """Lock what is free among `keys`; returns the keys now held."""
        if not keys:
            return set()
        async with self._guard:
            if self._conn is None:
                self._conn = await self._pool.acquire()
            try:
                rows = await self._conn.fetch(
                    """SELECT k.portal, k.contact_id
                       FROM unnest($1::text[], $2::bigint[]) AS k(portal, contact_id)
                       WHERE pg_try_advisory_lock($3, hashtext(k.portal || ':' || k.contact_id))""",
                    [portal for portal, _ in keys],
                    [contact for _, contact in keys],
                    self._namespace,
                )
            except Exception:
                await self._drop()
                raise
            got = {(row["portal"], row["contact_id"]) for row in rows}
            self._held |= got
            if not self._held:
                await self._hand_back()
            return got

    async def release(self, keys: Iterable[ContactKey]) -> None:
        mine = [key for key in keys if key in self._held]
        if not mine:
            return
        async with self._guard:
            if self._conn is None:
                return
            try:
                await self._conn.execute(
                    """SELECT pg_advisory_unlock($3, hashtext(k.portal || ':' || k.contact_id))
                       FROM unnest($1::text[], $2::bigint[]) AS k(portal, contact_id)""",
                    [portal for portal, _ in mine],
                    [contact for _, contact in mine],
                    self._namespace,
                )
            except Exception:
                await self._drop()
                raise
            self._held.difference_update(mine)
            if not self._held:
                await self._hand_back()

    async def _hand_back(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            await self._pool.release(conn)

    async def _drop(self) -> None:
        """The lock connection failed: its session, and with it every lock, is gone."""
        self._held.clear()
        if self._conn is not None:
            conn, self._conn = self._conn, None
            conn.terminate()
            await self._pool.release(conn)


class WriterLocks:
    """One writer at a time per key: in this process (an asyncio lock per key, so a second copy
    of a message waits for the first and then finds its work done) and across replicas (a
    session advisory lock under `namespace`; a key another process holds raises `busy(key)`, a
    retryable error: the message is tried again later)."""

    def __init__(
        self, pool: asyncpg.Pool, namespace: int, busy: Callable[[str], Exception]
    ) -> None:
        self._locks = ContactLocks(pool, namespace)
        self._busy = busy
        self._local: dict[str, tuple[asyncio.Lock, int]] = {}
        """Each key held or awaited here: its lock, and how many messages use it."""

    @asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        lock, users = self._local.get(key, (asyncio.Lock(), 0))
        self._local[key] = (lock, users + 1)
        try:
            async with lock:
                held = (key, 0)
                if not await self._locks.acquire([held]):
                    raise self._busy(key)
                try:
                    yield
                finally:
                    await self._locks.release([held])
        finally:
            lock, users = self._local[key]
            if users == 1:
                del self._local[key]
            else:
                self._local[key] = (lock, users - 1)
