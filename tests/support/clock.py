"""Time under the test's control."""

from __future__ import annotations

import asyncio

T0 = 1_700_000_000.0
"""A Unix time for tests that drive a `FakeClock`."""


class FakeClock:
    """Time that moves only when the test says so or when code sleeps through `sleep` (each
    sleep recorded, then one turn of the event loop so that other tasks run)."""

    def __init__(self, now: float = T0) -> None:
        self.now = now
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)
