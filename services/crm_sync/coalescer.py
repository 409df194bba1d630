"""Packs the commands of concurrent callers into shared `batch` requests of up to 50 commands.

The portal's rate limit counts HTTP requests, not commands, so the writer's throughput is the
number of commands per request. Callers hand over a *unit*: commands that must travel together in
one request, in order (a verify read followed by the writes it guards, say). The coalescer waits a
short window for more units, then until the portal's budget has room for a request, and only then
fills a request up to 50 commands in arrival order (units are never split) and sends it through
the shared client, one request at a time. What arrives while the budget is full joins the request
about to go: a contact group's writes and the next group's read share one request even when the
read is queued a little later than the writes.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from shared.bitrix24 import Bitrix24Client, Bitrix24Error, Command, PortalUnavailable
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
        self._queued = 0
        self._wake = asyncio.Event()
        self._sender: asyncio.Task[None] | None = None
        self._numbers = 0
        self._last_sent = 0.0
        self.requests = 0
        """HTTP requests sent so far (each within the portal's budget)."""

    async def run(self, commands: Sequence[Command]) -> UnitResult:
        """Send `commands` together in one request (at most 50) and return their results."""
        if not commands:
            return UnitResult()
        if len(commands) > self._max:
            raise ValueError(f"a unit holds at most {self._max} commands, got {len(commands)}")
        loop = asyncio.get_running_loop()
        self._numbers += 1
        unit = _Unit(self._numbers, commands, loop.create_future(), loop.time())
        self._pending.append(unit)
        self._queued += len(commands)
        self._wake.set()
        if self._sender is None or self._sender.done():
            self._sender = asyncio.create_task(self._send_loop(), name="crm-sync-coalescer")
        return await unit.future

    async def _send_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while self._pending:
            deadline = max(self._pending[0].queued_at, self._last_sent) + self._window_s
            while self._queued < self._max and (remaining := deadline - loop.time()) > 0:
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
        """Wait until the portal's budget has room for a request (the client still counts it;
        another process may take the room first, and then the client waits a little more).
        When the budget cannot tell (its database is down), the request goes on to the client,
        which settles each unit with the error."""
        while True:
            try:
                wait = await self._client.budget.room()
            except Exception as exc:
                log.warning("crm_sync_budget_room_unknown", error=str(exc))
                return
            if wait <= 0:
                return
            await asyncio.sleep(max(wait, MIN_SLEEP_S))

    def _take(self) -> list[_Unit]:
        units: list[_Unit] = []
        size = 0
        while self._pending and size + len(self._pending[0].commands) <= self._max:
            unit = self._pending.popleft()
            units.append(unit)
            size += len(unit.commands)
        self._queued -= size
        return units

    async def _send(self, units: list[_Unit]) -> None:
        commands = [
            Command(f"u{unit.number}_{command.name}", command.method, command.params)
            for unit in units
            for command in unit.commands
        ]
        self.requests += 1
        try:
            response = await self._client.batch(commands)
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
