"""Packs the commands of concurrent callers into shared `batch` requests of up to 50 commands.

The portal's rate limit counts HTTP requests, not commands, so the writer's throughput is the
number of commands per request. Callers hand over a *unit*: commands that must travel together in
one request, in order (a verify read followed by the writes it guards, say). The coalescer waits a
short window for more units, then until the portal's budget has room for a request, and only then
fills a request up to 50 commands in arrival order (units are never split) and sends it through
the shared client, one request at a time. What arrives while the budget is full joins the request
about to go: a contact group's writes and the next group's read share one request even when the
read is queued a little later than the writes.

Units come in two lanes (docs/crm_sync.md, Lanes): urgent units (a detractor's service lead, the
head of sales' task) go first into the next request, bulk ones fill it up in arrival order; a
request that carries an urgent unit asks the budget in the urgent lane, which gives it the next
slot of the portal's bucket before any process's bulk request. Bulk is slowed, never starved:
each request that leaves waiting bulk units behind credits bulk `share / (1 - share)` of a
request (the budget's `bulk_min_share`), and with a whole credit the next request takes bulk
units first.

A unit that must stop at its first failed command (a survey send: no trigger without its link)
cannot share a request, since `halt` stops a whole request: `run_halting` sends it on its own,
straight to the client, within the same budget.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from shared.bitrix24 import Bitrix24Client, Bitrix24Error, Command, PortalUnavailable
from shared.bitrix24.lanes import BULK, CREDIT_TOLERANCE, URGENT, Lane
from shared.logging import get_logger

MAX_COMMANDS = 50
WINDOW_S = 0.1
MIN_SLEEP_S = 0.001

log = get_logger(__name__)


@dataclass(frozen=True)
class UnitResult:
    """Per-command results of one unit, under the caller's own command names."""

    results: dict[str, Any] = field(default_factory=dict)
    errors: dict[str, Bitrix24Error] = field(default_factory=dict)

    def error(self, name: str) -> Bitrix24Error | None:
        """Why command `name` has no result (None when it has one)."""
        if name in self.errors:
            return self.errors[name]
        if name in self.results:
            return None
        return PortalUnavailable(name, "NO_RESULT", "the batch answered nothing for it", None)

    def result(self, name: str) -> Any:
        """The result of command `name`; raises its error when it failed."""
        error = self.error(name)
        if error is not None:
            raise error
        return self.results[name]


@dataclass
class _Unit:
    number: int
    commands: Sequence[Command]
    future: asyncio.Future[UnitResult]
    queued_at: float
    lane: Lane


class CommandCoalescer:
    """See the module docstring. Its sender task runs only while there is work."""

    def __init__(
        self,
        client: Bitrix24Client,
        *,
        window_s: float = WINDOW_S,
        max_commands: int = MAX_COMMANDS,
    ) -> None:
        self._client = client
        self._window_s = window_s
        self._max = max_commands
        self._pending: deque[_Unit] = deque()
        self._urgent: deque[_Unit] = deque()
        self._queued = 0
        self._wake = asyncio.Event()
        self._sender: asyncio.Task[None] | None = None
        self._numbers = 0
        self._last_sent = 0.0
        self._credit_per_request = client.budget.lanes.credit_per_urgent
        self._bulk_credit = 0.0
        self.requests = 0
        """HTTP requests sent so far (each within the portal's budget)."""

    async def run(self, commands: Sequence[Command], *, lane: Lane = BULK) -> UnitResult:
        """Send `commands` together in one request (at most 50) and return their results; an
        urgent unit goes in the next request."""
        if not commands:
            return UnitResult()
        if len(commands) > self._max:
            raise ValueError(f"a unit holds at most {self._max} commands, got {len(commands)}")
        loop = asyncio.get_running_loop()
        self._numbers += 1
        unit = _Unit(self._numbers, commands, loop.create_future(), loop.time(), lane)
        (self._urgent if lane == URGENT else self._pending).append(unit)
        self._queued += len(commands)
        self._wake.set()
        if self._sender is None or self._sender.done():
            self._sender = asyncio.create_task(self._send_loop(), name="crm-sync-coalescer")
        return await unit.future

    async def run_halting(self, commands: Sequence[Command], *, lane: Lane = BULK) -> UnitResult:
        """Send `commands` in a request of their own that stops at the first failed command
        (`halt`). A halt stops the whole request, so such a unit cannot share one with other
        callers' units: it goes straight to the client, within the same rate budget. A command
        after a failed one has neither a result nor an error of its own (`UnitResult.error`
        says so); when the request fails as a whole, every command has its error."""
        if not commands:
            return UnitResult()
        if len(commands) > self._max:
            raise ValueError(f"a unit holds at most {self._max} commands, got {len(commands)}")
        self.requests += 1
        response = await self._client.batch(commands, halt=True, lane=lane)
        return UnitResult(results=dict(response.results), errors=dict(response.errors))

    def _lane(self) -> Lane:
        return URGENT if self._urgent else BULK

    async def _send_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while self._pending or self._urgent:
            first = min(queue[0].queued_at for queue in (self._urgent, self._pending) if queue)
            deadline = max(first, self._last_sent) + self._window_s
            # An urgent unit does not wait for company: it goes as soon as the budget lets it.
            while (
                not self._urgent
                and self._queued < self._max
                and (remaining := deadline - loop.time()) > 0
            ):
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), remaining)
            await self._until_room()
            units = self._take()
            try:
                await self._send(units)
            finally:
                self._last_sent = loop.time()

    async def _until_room(self) -> None:
        """Wait until the portal's budget has room for a request in its lane (the client still
        counts it; another process may take the room first, and then the client waits a little
        more). An urgent unit arriving meanwhile asks again at once, in the urgent lane. When the
        budget cannot tell (its database is down), the request goes on to the client, which
        settles each unit with the error."""
        while True:
            lane = self._lane()
            try:
                wait = await self._client.budget.room(lane)
            except Exception as exc:
                log.warning("crm_sync_budget_room_unknown", error=str(exc))
                return
            if wait <= 0:
                return
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._lane_changed(lane), max(wait, MIN_SLEEP_S))

    async def _lane_changed(self, lane: Lane) -> None:
        while self._lane() == lane:
            await self._wake.wait()
            self._wake.clear()

    def _take(self) -> list[_Unit]:
        """Urgent units first (bulk ones first when they are owed a request), never splitting a
        unit. Bulk units go in arrival order; next to urgent ones, the largest that fit first, so
        that a command or two of urgent work does not push a contact group's 49 writes out of a
        request and leave it nearly empty."""
        bulk_waits = bool(self._pending)
        owed = bulk_waits and bool(self._urgent) and self._bulk_credit >= 1.0 - CREDIT_TOLERANCE
        units: list[_Unit] = []
        if owed:
            self._fill(units, self._pending)
            self._fill(units, self._urgent)
            self._bulk_credit -= 1.0
        elif self._urgent:
            self._fill(units, self._urgent, limit=self._urgent_room())
            self._fill(units, self._pending, largest_first=True)
            if bulk_waits and all(unit.lane == URGENT for unit in units):
                self._bulk_credit = min(1.0, self._bulk_credit + self._credit_per_request)
        else:
            self._fill(units, self._pending)
        self._queued -= sum(len(unit.commands) for unit in units)
        return units

    def _urgent_room(self) -> int:
        """Commands the urgent units may take in the next request. A few urgent commands ride
        beside the largest bulk unit (a contact group's 49 writes) rather than push it out and
        leave the request nearly empty: those that do not fit beside it go first in the next
        request, at least one goes now. Much urgent work takes the whole request."""
        largest = max((len(unit.commands) for unit in self._pending), default=0)
        urgent = sum(len(unit.commands) for unit in self._urgent)
        if urgent + largest <= self._max or urgent >= self._max // 2:
            return self._max
        return max(self._max - largest, len(self._urgent[0].commands))

    def _fill(
        self,
        units: list[_Unit],
        queue: deque[_Unit],
        *,
        largest_first: bool = False,
        limit: int | None = None,
    ) -> None:
        """Move units of `queue` into `units` while they fit (the request, and `limit` commands
        from this queue): in order up to the first that does not, or (`largest_first`) every one
        that fits, the largest first."""
        size = sum(len(unit.commands) for unit in units)
        if not largest_first:
            cap = self._max if limit is None else min(self._max, size + limit)
            while queue and size + len(queue[0].commands) <= cap:
                unit = queue.popleft()
                units.append(unit)
                size += len(unit.commands)
            return
        chosen: list[_Unit] = []
        for unit in sorted(queue, key=lambda u: len(u.commands), reverse=True):
            if size + len(unit.commands) <= self._max:
                chosen.append(unit)
                size += len(unit.commands)
        for unit in chosen:
            queue.remove(unit)
        units.extend(sorted(chosen, key=lambda u: u.number))

    async def _send(self, units: list[_Unit]) -> None:
        commands = [
            Command(f"u{unit.number}_{command.name}", command.method, command.params)
            for unit in units
            for command in unit.commands
        ]
        self.requests += 1
        lane = URGENT if any(unit.lane == URGENT for unit in units) else BULK
        try:
            response = await self._client.batch(commands, lane=lane)
        except Exception as exc:
            log.error("bitrix24_batch_failed", error=str(exc), commands=len(commands))
            for unit in units:
                if not unit.future.done():
                    unit.future.set_exception(exc)
            return
        for unit in units:
            prefix = f"u{unit.number}_"
            result = UnitResult(
                results={
                    c.name: response.results[prefix + c.name]
                    for c in unit.commands
                    if prefix + c.name in response.results
                },
                errors={
                    c.name: response.errors[prefix + c.name]
                    for c in unit.commands
                    if prefix + c.name in response.errors
                },
            )
            if not unit.future.done():
                unit.future.set_result(result)
