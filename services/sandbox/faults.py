"""Injected faults: latency, hanging requests, 500s and outages, deterministic when seeded."""

import random
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from services.sandbox.errors import RestError
from services.sandbox.timing import Clock


class Faults(BaseModel):
    """Fault settings (``PUT /sandbox/faults`` replaces them all).

    Counts hit the next N requests; rates draw from a ``random.Random(seed)``. ``methods``
    restricts latency, hangs and 500s to those methods; an outage hits every request for
    ``outage_s`` seconds from the moment the faults are set. A hung request is counted by the
    leaky bucket when it arrives (as Bitrix24 counts it), sleeps ``hang_s`` and is then
    processed, so the client may time out on a call that did happen.
    """

    model_config = ConfigDict(extra="forbid")

    latency_s: float = Field(default=0.0, ge=0)
    error_count: int = Field(default=0, ge=0)
    error_rate: float = Field(default=0.0, ge=0, le=1)
    hang_count: int = Field(default=0, ge=0)
    hang_rate: float = Field(default=0.0, ge=0, le=1)
    hang_s: float = Field(default=90.0, ge=0)
    outage_s: float = Field(default=0.0, ge=0)
    outage_status: Literal[500, 503] = 503
    methods: list[str] | None = None
    seed: int | None = None


class FaultInjector:
    """Applies the current :class:`Faults` to requests."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self.configure(Faults())

    def configure(self, faults: Faults) -> None:
        self._faults = faults
        self._random = random.Random(faults.seed)  # noqa: S311 - fault injection, not crypto
        self._errors_left = faults.error_count
        self._hangs_left = faults.hang_count
        self._outage_until = self._clock() + faults.outage_s if faults.outage_s else None

    def describe(self) -> dict[str, Any]:
        return {
            **self._faults.model_dump(),
            "errors_left": self._errors_left,
            "hangs_left": self._hangs_left,
            "outage_until": self._outage_until,
        }

    def delay(self, method: str) -> float:
        """Seconds to wait before handling a request: latency plus a possible hang."""
        if not self._applies(method):
            return 0.0
        delay = self._faults.latency_s
        if self._hangs_left > 0:
            self._hangs_left -= 1
            delay += self._faults.hang_s
        elif self._faults.hang_rate and self._random.random() < self._faults.hang_rate:
            delay += self._faults.hang_s
        return delay

    def outage(self, now: float) -> RestError | None:
        if self._outage_until is None or now >= self._outage_until:
            return None
        if self._faults.outage_status == 503:
            return RestError(503, "SERVICE_UNAVAILABLE", "Service temporarily unavailable")
        return RestError(500, "INTERNAL_SERVER_ERROR", "Internal server error")

    def failure(self, method: str) -> RestError | None:
        """An injected 500 for this request, if one is due."""
        if not self._applies(method):
            return None
        if self._errors_left > 0:
            self._errors_left -= 1
        elif not (self._faults.error_rate and self._random.random() < self._faults.error_rate):
            return None
        return RestError(500, "INTERNAL_SERVER_ERROR", "Internal server error")

    def _applies(self, method: str) -> bool:
        methods = self._faults.methods
        return methods is None or method in {name.lower() for name in methods}
