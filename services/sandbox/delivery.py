"""Sends outgoing events over HTTP in the background: once, with a short timeout, recording
the outcome on the portal (Bitrix24 never re-sends a failed event). Like a portal's event
queue, it sends a bounded number at a time, so a burst of thousands of events never floods the
sandbox's own event loop (its REST answers stay prompt)."""

import asyncio

import httpx

from services.sandbox.events import Delivery
from services.sandbox.portal import SandboxPortal

FORM = {"Content-Type": "application/x-www-form-urlencoded"}


class EventSender:
    def __init__(
        self,
        portal: SandboxPortal,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout_s: float = 5.0,
        in_flight: int = 16,
    ) -> None:
        self._portal = portal
        self._transport = transport
        self._timeout = timeout_s
        self._tasks: set[asyncio.Task[None]] = set()
        self._slots = asyncio.Semaphore(in_flight)

    def dispatch(self) -> None:
        """Start sending every delivery the portal queued since the last dispatch."""
        for delivery in self._portal.take_outbox():
            task = asyncio.create_task(self._send(delivery))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def drain(self) -> None:
        """Wait for the sends in flight."""
        while self._tasks:
            await asyncio.gather(*self._tasks)

    async def _send(self, delivery: Delivery) -> None:
        async with self._slots:
            await self._post(delivery)

    async def _post(self, delivery: Delivery) -> None:
        try:
            async with httpx.AsyncClient(
                transport=self._transport, timeout=self._timeout
            ) as client:
                response = await client.post(delivery.url, content=delivery.body, headers=FORM)
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"
            self._portal.record_delivery(delivery.id, http_status=None, error=error)
            return
        failed = None if response.is_success else f"HTTP {response.status_code}"
        self._portal.record_delivery(delivery.id, http_status=response.status_code, error=failed)
