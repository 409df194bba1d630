"""Reads from the portal by id, the requests of concurrent messages packed into one call.

`BatchReader` is keyed by what is read (the entity type: items and deals of `crm.item.list`,
contacts of `crm.contact.list`). Per key one sender waits a short window for more ids, then for
a free read slot (at most `max_reads` reads at once) and for room in the portal's budget, and
only then takes up to `max_batch` waiting ids into one request. While the portal is slow or
hangs, or the budget is full, ids keep gathering into the next request instead of queueing as
requests of their own (docs/bitrix24-client.md, "When the portal stalls"). A request that fails
fails every look-up it carried, with its error.
"""

from __future__ import annotations

import asyncio
import contextlib
from abc import ABC, abstractmethod
from collections.abc import Coroutine, Hashable, Mapping, Sequence
from typing import Any, Generic, TypeVar

from shared.bitrix24 import Bitrix24Client
from shared.logging import get_logger

PAGE_SIZE = 50
MIN_SLEEP_S = 0.001

log = get_logger(__name__)

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class BatchReader(ABC, Generic[K, V]):
    """Reads values by key and id; `read` is one request for up to `max_batch` ids of a key."""

    def __init__(
        self,
        client: Bitrix24Client,
        *,
        window_s: float = 0.02,
        max_batch: int = PAGE_SIZE,
        max_reads: int = 4,
    ) -> None:
        self._client = client
        self._window_s = window_s
        self._max_batch = max_batch
        self._reads = asyncio.Semaphore(max_reads)
        self._pending: dict[K, dict[int, list[asyncio.Future[V | None]]]] = {}
        self._full: dict[K, asyncio.Event] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def client(self) -> Bitrix24Client:
        """The portal client the reads go through."""
        return self._client

    @abstractmethod
    async def read(self, key: K, ids: Sequence[int]) -> Mapping[int, V]:
        """One request for `ids` (at most `max_batch`): id → value, an id not found left out."""

    async def get(self, key: K, id_: int) -> V | None:
        """The value read for `id_`, or None when it does not exist (any more)."""
        future: asyncio.Future[V | None] = asyncio.get_running_loop().create_future()
        waiting = self._pending.setdefault(key, {})
        waiting.setdefault(id_, []).append(future)
        if key not in self._full:
            self._full[key] = asyncio.Event()
            self._start(self._send_loop(key))
        if len(waiting) >= self._max_batch:
            self._full[key].set()
        return await future

    def _start(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send_loop(self, key: K) -> None:
        full = self._full[key]
        try:
            while self._pending.get(key):
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(full.wait(), self._window_s)
                await self._reads.acquire()
                try:
                    await self._until_room()
                except BaseException:
                    self._reads.release()
                    raise
                waiting = self._take(key)
                if len(self._pending.get(key, {})) < self._max_batch:
                    full.clear()
                self._start(self._flush(key, waiting))
        except asyncio.CancelledError:
            for futures in self._pending.pop(key, {}).values():
                for future in futures:
                    future.cancel()
            raise
        finally:
            del self._full[key]

    async def _until_room(self) -> None:
        """Wait until the portal's budget has room for a request (the client still counts it).
        When the budget cannot tell (its database is down), the read goes on to the client,
        which fails it with the error."""
        while True:
            try:
                wait = await self._client.budget.room()
            except Exception as exc:
                log.warning("batch_budget_room_unknown", error=str(exc))
                return
            if wait <= 0:
                return
            await asyncio.sleep(max(wait, MIN_SLEEP_S))

    def _take(self, key: K) -> dict[int, list[asyncio.Future[V | None]]]:
        """Up to `max_batch` of the waiting ids, the earliest first; the rest keep waiting."""
        waiting = self._pending.pop(key, {})
        taken = dict(list(waiting.items())[: self._max_batch])
        rest = {id_: futures for id_, futures in waiting.items() if id_ not in taken}
        if rest:
            self._pending[key] = rest
        return taken

    async def _flush(self, key: K, waiting: dict[int, list[asyncio.Future[V | None]]]) -> None:
        try:
            found = await self.read(key, sorted(waiting))
        except asyncio.CancelledError:
            for futures in waiting.values():
                for future in futures:
                    future.cancel()
            raise
        except Exception as exc:
            for futures in waiting.values():
                for future in futures:
                    if not future.done():
                        future.set_exception(exc)
            return
        finally:
            self._reads.release()
        for id_, futures in waiting.items():
            for future in futures:
                if not future.done():
                    future.set_result(found.get(id_))
