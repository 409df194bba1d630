"""Per-method execution time, tracked the way the portal's operating-time limiter counts it.

Bitrix24 adds up the run time of each method per webhook in ten one-minute buckets (a sliding
ten-minute window) and answers 429 `OPERATION_TIME_LIMIT` once a method is over its limit (480 s
on cloud; docs/bitrix24-client.md, Bitrix24 facts: limits). This tracker mirrors that window from
two sources:

- `time.operating` of a plain call: the portal's own total for the method, authoritative (it also
  covers what other processes spent), so the local estimate is corrected to it;
- `processing` of each batch command (`result_time`): this process's share, added up locally.

When a method's estimate reaches `park_ratio` of the limit, `observe()` says until when to park it,
so the method stops before the portal blocks it. Pure: the caller passes the time.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field


@dataclass
class _Slot:
    start: float
    seconds: float


@dataclass
class _MethodWindow:
    slots: deque[_Slot] = field(default_factory=deque)
    reset_at: float | None = None

    def total(self) -> float:
        return sum(slot.seconds for slot in self.slots)


class OperatingTracker:
    """Estimated operating time per method (lower-case names) in the portal's sliding window."""

    SLOTS = 10

    def __init__(
        self, limit_s: float | None = 480.0, window_s: float = 600.0, park_ratio: float = 0.9
    ) -> None:
        if limit_s is not None and limit_s <= 0:
            raise ValueError("the operating limit must be positive (or None for no limit)")
        if not 0 < park_ratio <= 1:
            raise ValueError("park_ratio must be in (0, 1]")
        self.limit_s = limit_s
        self.window_s = window_s
        self.park_ratio = park_ratio
        self._methods: dict[str, _MethodWindow] = {}

    def estimate(self, method: str, now: float) -> float:
        """Seconds `method` has used in the window ending at `now`."""
        return self._window(method, now).total()

    def observe(
        self,
        method: str,
        now: float,
        *,
        processing: float | None = None,
        operating: float | None = None,
        reset_at: float | None = None,
    ) -> float | None:
        """Record one response's timing; returns until when to park `method`, or None.

        `operating` (the portal's running total, which already includes this call) wins over
        `processing`; `reset_at` is the portal's `operating_reset_at`.
        """
        window = self._window(method, now)
        if reset_at is not None:
            window.reset_at = reset_at
        if operating is not None:
            self._reconcile(window, now, operating)
        elif processing is not None and processing > 0:
            self._add(window, now, processing)
        if self.limit_s is None:
            return None
        threshold = self.limit_s * self.park_ratio
        total = window.total()
        if total < threshold:
            return None
        if window.reset_at is not None and window.reset_at > now:
            return window.reset_at
        for slot in window.slots:
            total -= slot.seconds
            if total < threshold:
                return slot.start + self.window_s
        return now + self.window_s

    def reset_hint(self, method: str, now: float) -> float | None:
        """When `method`'s oldest bucket leaves the window: the portal's word if it gave one."""
        window = self._window(method, now)
        if window.reset_at is not None and window.reset_at > now:
            return window.reset_at
        if window.slots:
            return window.slots[0].start + self.window_s
        return None

    def _window(self, method: str, now: float) -> _MethodWindow:
        window = self._methods.setdefault(method, _MethodWindow())
        while window.slots and window.slots[0].start + self.window_s <= now:
            window.slots.popleft()
        return window

    def _add(self, window: _MethodWindow, now: float, seconds: float) -> None:
        slots = window.slots
        if slots and now < slots[-1].start + self.window_s / self.SLOTS:
            slots[-1].seconds += seconds
        else:
            slots.append(_Slot(now, seconds))

    def _reconcile(self, window: _MethodWindow, now: float, operating: float) -> None:
        """Bring the estimate to the portal's total: time spent elsewhere is added now (it leaves
        the window no earlier than it really does); an overestimate is taken off the oldest
        buckets first, the ones the portal has already let go of."""
        difference = operating - window.total()
        if difference > 0:
            self._add(window, now, difference)
            return
        excess = -difference
        while excess > 0 and window.slots:
            oldest = window.slots[0]
            if oldest.seconds <= excess:
                excess -= oldest.seconds
                window.slots.popleft()
            else:
                oldest.seconds -= excess
                excess = 0
