"""Request limits of the public page: a fixed window per key (pure: the clock comes in).

Kept in the process's memory: one survey process enforces its own limits (behind a proxy with
several replicas, each counts its own share)."""

from __future__ import annotations

from collections.abc import Callable

WINDOW_S = 60.0
MAX_KEYS = 100_000


class WindowLimiter:
    """At most `limit` hits per key in each window of `window_s` seconds."""

    def __init__(self, limit: int, clock: Callable[[], float], window_s: float = WINDOW_S) -> None:
        self._limit = limit
        self._clock = clock
        self._window_s = window_s
        self._window = -1
        self._counts: dict[str, int] = {}

    def allow(self, key: str) -> bool:
        """Count a hit of `key`: False when it is over its limit in this window."""
        window = int(self._clock() // self._window_s)
        if window != self._window or len(self._counts) >= MAX_KEYS:
            self._window = window
            self._counts = {}
        count = self._counts.get(key, 0) + 1
        self._counts[key] = count
        return count <= self._limit
