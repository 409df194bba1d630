"""Micro-batching of messages: jobs collected for a short window into groups handled together.

A group holds at most `max_size` jobs with distinct keys (a key is a contact: one contact is
never in two groups at once), and at most `max_active` groups run at a time, so that a group's
writes and the next group's read can share one request. Each job settles its own future (the
message is acked only once its effect is durable); a job its group hands back (`deferred`) is
queued again after a window.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from shared.logging import get_logger

log = get_logger(__name__)


class Job(Protocol):
    @property
    def key(self) -> Hashable: ...

    def fail(self, error: BaseException) -> None:
        """Settle the job with `error` (a no-op when it is settled already)."""


J = TypeVar("J", bound=Job)
Process = Callable[[list[J]], Awaitable[list[J]]]
"""Handles a group; returns the jobs it could not handle now (to be queued again)."""


@dataclass
class _Queued(Generic[J]):
    job: J
    ready_at: float


class GroupFormer(Generic[J]):
    """See the module docstring. Its loop runs only while there are jobs."""

    def __init__(
        self, process: Process[J], *, max_size: int, window_s: float, max_active: int
    ) -> None:
        if max_size < 1 or max_active < 1:
            raise ValueError("max_size and max_active must be at least 1")
        self._process = process
        self._max_size = max_size
        self._window_s = window_s
        self._max_active = max_active
        self._queue: list[_Queued[J]] = []
        self._busy: set[Hashable] = set()
        self._running: set[asyncio.Task[None]] = set()
        self._changed = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None

    def submit(self, job: J) -> None:
        loop = asyncio.get_running_loop()
        self._queue.append(_Queued(job, loop.time()))
        self._changed.set()
        if self._loop_task is None or self._loop_task.done():
            self._loop_task = asyncio.create_task(self._run(), name="crm-sync-groups")

    async def _wait(self, seconds: float | None) -> None:
        self._changed.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), seconds)

    def _candidates(self, now: float) -> tuple[list[_Queued[J]], float | None]:
        """The next group (distinct free keys, oldest first) and how long to wait for more."""
        chosen: list[_Queued[J]] = []
        keys: set[Hashable] = set()
        next_ready: float | None = None
        for queued in self._queue:
            if queued.ready_at > now:
                next_ready = min(next_ready or queued.ready_at, queued.ready_at)
                continue
            key = queued.job.key
            if key in self._busy or key in keys:
                continue
            chosen.append(queued)
            keys.add(key)
            if len(chosen) == self._max_size:
                break
        return chosen, next_ready

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._queue or self._running:
                if len(self._running) >= self._max_active:
                    await self._wait(None)
                    continue
                now = loop.time()
                chosen, next_ready = self._candidates(now)
                if not chosen:
                    await self._wait(None if next_ready is None else next_ready - now)
                    continue
                window_end = chosen[0].ready_at + self._window_s
                if len(chosen) < self._max_size and window_end > now:
                    await self._wait(window_end - now)
                    continue
                self._start(chosen)
        except Exception as exc:
            log.error("crm_sync_grouping_failed", error=repr(exc))
            for queued in self._queue:
                queued.job.fail(exc)
            self._queue.clear()
            raise

    def _start(self, chosen: list[_Queued[J]]) -> None:
        picked = {id(queued) for queued in chosen}
        self._queue = [queued for queued in self._queue if id(queued) not in picked]
        jobs = [queued.job for queued in chosen]
        self._busy.update(job.key for job in jobs)
        self._running.add(asyncio.create_task(self._handle(jobs), name="crm-sync-group"))

    async def _handle(self, jobs: list[J]) -> None:
        deferred: list[J] = []
        try:
            deferred = await self._process(jobs)
        except Exception as exc:
            log.error("crm_sync_group_failed", error=repr(exc), jobs=len(jobs))
            for job in jobs:
                job.fail(exc)
        finally:
            current = asyncio.current_task()
            if current is not None:
                self._running.discard(current)
            self._busy.difference_update(job.key for job in jobs)
            ready_at = asyncio.get_running_loop().time() + self._window_s
            self._queue[:0] = [_Queued(job, ready_at) for job in deferred]
            self._changed.set()
