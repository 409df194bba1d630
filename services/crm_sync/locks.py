"""Cross-process locks on what crm_sync writes: PostgreSQL session advisory locks, so two writer
replicas never work on one contact, action, survey request or dispatch command at once.

Every lock of a process lives on one pooled connection (`LockSession`), whatever the portals and
writers that take them (a namespace per kind of lock keeps them apart): a process holds at most
one connection for its locks, so the pool (`DATABASE_POOL_MAX`) never fills up with lock
connections however many portals it serves. A key this process holds already counts as taken
(session locks are re-entrant in PostgreSQL: a second holder in this process would be let in).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager

import asyncpg
from asyncpg.pool import PoolConnectionProxy

ContactKey = tuple[str, int]
"""(portal key, contact id)"""

_LOCK_NAMESPACE = 0x4E50_5343  # "NPSC": advisory locks on contacts being patched


class LockSession:
    """The session advisory locks this process holds, on one connection taken from the pool
    while any is held (a crashed process releases them with its connection)."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._conn: PoolConnectionProxy | None = None
        self._held: set[tuple[int, str]] = set()
        self._guard = asyncio.Lock()

    async def acquire(self, namespace: int, keys: Sequence[str]) -> set[str]:
        """Lock what is free among `keys` under `namespace`; returns the keys now held by this
        call (a key this process held already is not among them)."""
        wanted = sorted({key for key in keys if (namespace, key) not in self._held})
        if not wanted:
            return set()
        async with self._guard:
            wanted = [key for key in wanted if (namespace, key) not in self._held]
            if not wanted:
                return set()
            if self._conn is None:
                self._conn = await self._pool.acquire()
            try:
                rows = await self._conn.fetch(
                    """SELECT k.key FROM unnest($1::text[]) AS k(key)
                       WHERE pg_try_advisory_lock($2, hashtext(k.key))""",
                    wanted,
                    namespace,
                )
            except Exception:
                await self._drop()
                raise
            got = {row["key"] for row in rows}
            self._held |= {(namespace, key) for key in got}
            if not self._held:
                await self._hand_back()
            return got

    async def release(self, namespace: int, keys: Iterable[str]) -> None:
        mine = sorted({key for key in keys if (namespace, key) in self._held})
        if not mine:
            return
        async with self._guard:
            if self._conn is None:
                return
            try:
                await self._conn.execute(
                    """SELECT pg_advisory_unlock($2, hashtext(k.key))
                       FROM unnest($1::text[]) AS k(key)""",
                    mine,
                    namespace,
                )
            except Exception:
                await self._drop()
                raise
            self._held.difference_update((namespace, key) for key in mine)
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


def _contact(key: ContactKey) -> str:
    portal, contact_id = key
    return f"{portal}:{contact_id}"


class ContactLocks:
    """Locks on the contacts being patched, so two writer replicas never work on one contact at
    once."""

    def __init__(self, session: LockSession, namespace: int = _LOCK_NAMESPACE) -> None:
        self._session = session
        self._namespace = namespace

    async def acquire(self, keys: Sequence[ContactKey]) -> set[ContactKey]:
        """Lock what is free among `keys`; returns the keys now held."""
        got = await self._session.acquire(self._namespace, [_contact(key) for key in keys])
        return {key for key in keys if _contact(key) in got}

    async def release(self, keys: Iterable[ContactKey]) -> None:
        await self._session.release(self._namespace, [_contact(key) for key in keys])


class WriterLocks:
    """One writer at a time per key: in this process (an asyncio lock per key, so a second copy
    of a message waits for the first and then finds its work done) and across replicas (a
    session advisory lock under `namespace`; a key another process holds raises `busy(key)`, a
    retryable error: the copy is tried again later, never dropped, as the other holder may yet
    fail, say stopped mid-call by a deploy after its message went back to the queue)."""

    def __init__(
        self, session: LockSession, namespace: int, busy: Callable[[str], Exception]
    ) -> None:
        self._session = session
        self._namespace = namespace
        self._busy = busy
        self._local: dict[str, tuple[asyncio.Lock, int]] = {}
        """Each key held or awaited here: its lock, and how many messages use it."""

    @asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        lock, users = self._local.get(key, (asyncio.Lock(), 0))
        self._local[key] = (lock, users + 1)
        try:
            async with lock:
                held = f"{key}:0"
                if not await self._session.acquire(self._namespace, [held]):
                    raise self._busy(key)
                try:
                    yield
                finally:
                    await self._session.release(self._namespace, [held])
        finally:
            lock, users = self._local[key]
            if users == 1:
                del self._local[key]
            else:
                self._local[key] = (lock, users - 1)
