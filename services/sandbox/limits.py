"""Bitrix24's two limits: the per-portal leaky bucket and the per-method operating time."""

import math
from collections import deque

from pydantic import BaseModel, ConfigDict, Field

from services.sandbox.timing import OperatingStats


class Limits(BaseModel):
    """Limit settings. ``per_second=None`` turns the bucket off, ``operating_limit_s=None``
    the operating limiter; ``cost_per_call_s`` is the simulated run time of every method call."""

    model_config = ConfigDict(extra="forbid")

    per_second: float | None = Field(default=2.0, gt=0)
    burst: int = Field(default=50, ge=1)
    operating_limit_s: float | None = Field(default=480.0, ge=0)
    operating_window_s: float = Field(default=600.0, gt=0)
    cost_per_call_s: float = Field(default=0.0, ge=0)

    @classmethod
    def off(cls) -> "Limits":
        return cls(per_second=None, operating_limit_s=None)


class LeakyBucket:
    """Counter +1 per accepted request, draining ``per_second``; a request that would take it
    over ``burst`` is refused (and not counted)."""

    def __init__(self) -> None:
        self._level = 0.0
        self._updated: float | None = None

    def level(self, now: float, per_second: float) -> float:
        if self._updated is not None:
            self._level = max(0.0, self._level - (now - self._updated) * per_second)
        self._updated = now
        return self._level

    def try_take(self, now: float, per_second: float, burst: int) -> bool:
        if self.level(now, per_second) + 1 > burst:
            return False
        self._level += 1
        return True

    def reset(self) -> None:
        self._level = 0.0
        self._updated = None


class OperatingTime:
    """Execution time per method in ten sub-windows of ``window/10`` seconds each. A sub-window
    starts with the first call after the previous one ended and drops out ``window`` seconds
    after its start, which is when ``operating_reset_at`` points."""

    SLOTS = 10

    def __init__(self) -> None:
        self._slots: dict[str, deque[list[float]]] = {}

    def stats(self, method: str, now: float, window: float) -> OperatingStats:
        if method not in self._slots:
            return OperatingStats(operating=0.0, reset_at=None)
        slots = self._prune(method, now, window)
        total = sum(seconds for _, seconds in slots)
        reset_at = math.ceil(slots[0][0] + window) if slots and total > 0 else None
        return OperatingStats(operating=total, reset_at=reset_at)

    def add(self, method: str, now: float, window: float, seconds: float) -> None:
        slots = self._prune(method, now, window)
        if slots and now < slots[-1][0] + window / self.SLOTS:
            slots[-1][1] += seconds
        else:
            slots.append([now, seconds])

    def reset(self) -> None:
        self._slots.clear()

    def _prune(self, method: str, now: float, window: float) -> deque[list[float]]:
        slots = self._slots.setdefault(method, deque())
        while slots and slots[0][0] + window <= now:
            slots.popleft()
        return slots
