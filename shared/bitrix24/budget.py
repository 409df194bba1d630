"""The portal's rate budget: one leaky bucket per portal and the parked methods
(docs/bitrix24-client.md).

Bitrix24 counts every HTTP request (a `batch` of 50 commands is one) in a leaky bucket that drains
`per_second` and refuses requests with 503 `QUERY_LIMIT_EXCEEDED` once it holds more than `burst`.
The budget keeps a copy of that bucket on our side and lets a request go only when the copy has
room, so the portal's bucket never overflows:

- `acquire()` drains the level by the elapsed time times the rate and adds 1 when the result
  stays at or below `capacity` (`burst` minus a small `headroom` for network jitter); otherwise
  it sleeps exactly until there is room and tries again. The client calls it right before a
  request goes out (once the request holds an in-flight slot), since the portal counts a request
  when it arrives; a request that then fails or times out stays counted, as it does there.
- `room()` tells how long until one more request would fit, counting nothing: a caller that
  packs work into requests waits for it first and fills its request up to the moment it can go.
- `penalise()` after a 503 anyway: the portal's bucket is evidently full, so the copy is set full
  too and drains at `slow_factor` of the rate for `slow_s` seconds, for every process.
- Methods blocked by the operating-time limit (429) are parked until the portal's reset; methods
  close to it are parked before the portal blocks them (see `operating.py`). Other methods go on.

`PgRateBudget` keeps the bucket and the parks in PostgreSQL, so every process calling the portal
(ingest's reads, every crm_sync replica) shares them; `MemoryRateBudget` is the single-process
version. A `rate` of None means unlimited (an on-premise portal without limits): no bucket, but
parking still applies.
"""

from __future__ import annotations

import asyncio
import math
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

import asyncpg

from shared.bitrix24.metrics import BUCKET_LEVEL, BUCKET_WAIT, PARKS
from shared.bitrix24.operating import OperatingTracker
from shared.logging import get_logger
from shared.portal_config import Rate

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]

FIT_TOLERANCE = 1e-3
"""Requests a level may exceed the capacity by and still count as fitting: Unix times near 1.7e9
carry about 2e-7 s of float precision, so a level that has drained "exactly" enough may stay a
hair above its target. A thousandth of a request is far inside the headroom."""
MIN_SLEEP_S = 0.001

UNKNOWN_RESET_S = 60.0
"""How long a method is parked after a 429 when nothing says when the portal lets it go again:
one of the portal's one-minute buckets."""

log = get_logger(__name__)


def default_headroom(burst: int) -> int:
    """Requests kept free below the portal's `burst`: 10 %, at least 2 (jitter between the moment
    a request is counted here and the moment it reaches the portal)."""
    return max(2, math.ceil(burst / 10))


def drain(
    level: float,
    updated_at: float,
    now: float,
    *,
    slow_until: float,
    per_second: float,
    slow_factor: float,
) -> float:
    """The bucket level at `now`: drained at `per_second`, at `slow_factor` of it until
    `slow_until`. A clock that went backwards drains nothing."""
    elapsed = max(0.0, now - updated_at)
    slow = max(0.0, min(now, slow_until) - updated_at)
    return max(0.0, level - elapsed * per_second + slow * per_second * (1.0 - slow_factor))


def wait_for(
    excess: float, now: float, *, slow_until: float, per_second: float, slow_factor: float
) -> float:
    """Seconds until `excess` more has drained, given the slow period."""
    if excess <= 0:
        return 0.0
    if now < slow_until:
        slow_rate = per_second * slow_factor
        slow_capacity = (slow_until - now) * slow_rate
        if excess <= slow_capacity:
            return excess / slow_rate
        return (slow_until - now) + (excess - slow_capacity) / per_second
    return excess / per_second


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        return float(value)
    except ValueError:
        return None


class RateBudget(ABC):
    """What the client needs from a rate budget; see the module docstring."""

    def __init__(
        self,
        portal: str,
        rate: Rate | None,
        *,
        headroom: int | None = None,
        operating_limit_s: float | None = 480.0,
        slow_s: float = 30.0,
        slow_factor: float = 0.5,
        clock: Clock = time.time,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        if not 0 < slow_factor <= 1:
            raise ValueError("slow_factor must be in (0, 1]")
        self.portal = portal
        self.rate = rate
        self.capacity = 0.0
        if rate is not None:
            spare = default_headroom(rate.burst) if headroom is None else headroom
            self.capacity = float(max(1, rate.burst - spare))
        self.operating = OperatingTracker(operating_limit_s)
        self.slow_s = slow_s
        self.slow_factor = slow_factor
        self._clock = clock
        self._sleep = sleep

    async def acquire(self) -> float:
        """Wait until one more request fits in the portal's bucket and count it; returns the
        seconds waited."""
        if self.rate is None:
            return 0.0
        waited = 0.0
        while True:
            level, wait = await self._take(self.rate)
            if wait <= 0:
                break
            wait = max(wait, MIN_SLEEP_S)
            await self._sleep(wait)
            waited += wait
        BUCKET_WAIT.labels(portal=self.portal).observe(waited)
        BUCKET_LEVEL.labels(portal=self.portal).set(level)
        return waited

    async def room(self) -> float:
        """Seconds until one more request would fit in the portal's bucket (0.0: it fits now).
        Counts nothing: `acquire()` still has to be called, and may wait if another process
        took the room meanwhile."""
        if self.rate is None:
            return 0.0
        return await self._room(self.rate)

    async def penalise(self) -> None:
        """The portal answered 503 `QUERY_LIMIT_EXCEEDED` anyway: fill the bucket and slow it
        down for everyone sharing it."""
        if self.rate is None:
            return
        await self._penalise(self.rate)
        BUCKET_LEVEL.labels(portal=self.portal).set(self.rate.burst)
        log.warning("bitrix24_bucket_slowed", slow_s=self.slow_s, slow_factor=self.slow_factor)

    async def parked(self, methods: Iterable[str]) -> dict[str, float]:
        """The methods among `methods` (lower-cased) that are parked, with when they are free."""
        names = sorted({method.lower() for method in methods})
        return await self._parked(names) if names else {}

    async def observe(self, method: str, time_block: Mapping[str, Any]) -> None:
        """Feed a response's `time` block (or a batch command's `result_time`) to the operating
        tracker; parks the method when it comes close to the portal's limit."""
        name = method.lower()
        until = self.operating.observe(
            name,
            self._clock(),
            processing=_number(time_block.get("processing")),
            operating=_number(time_block.get("operating")),
            reset_at=_number(time_block.get("operating_reset_at")),
        )
        if until is None:
            return
        await self._park(name, until)
        PARKS.labels(method=name, reason="near_limit").inc()
        log.warning(
            "bitrix24_method_parked",
            method=name,
            reason="near_limit",
            until=until,
            used_s=round(self.operating.estimate(name, self._clock()), 3),
        )

    async def operation_limit_hit(self, method: str, reset_at: float | None) -> float:
        """The portal blocked `method` (429): park it until `reset_at`, or the best estimate of
        the reset; returns the time the park ends."""
        name = method.lower()
        now = self._clock()
        until = reset_at if reset_at is not None and reset_at > now else None
        if until is None:
            until = self.operating.reset_hint(name, now) or now + UNKNOWN_RESET_S
        await self._park(name, until)
        PARKS.labels(method=name, reason="limit").inc()
        log.warning("bitrix24_method_parked", method=name, reason="limit", until=until)
        return until

    @abstractmethod
    async def _take(self, rate: Rate) -> tuple[float, float]:
        """Count one request if it fits: (level afterwards, 0.0), else (level, seconds to wait)."""

    def _wait_on(self, level: float, now: float, slow_until: float, rate: Rate) -> float:
        """Seconds until one more request fits on top of `level` (0.0 when it fits now)."""
        if level + 1 <= self.capacity + FIT_TOLERANCE:
            return 0.0
        return wait_for(
            level + 1 - self.capacity,
            now,
            slow_until=slow_until,
            per_second=rate.per_second,
            slow_factor=self.slow_factor,
        )

    @abstractmethod
    async def _room(self, rate: Rate) -> float:
        """Seconds until one more request fits, without counting it."""

    @abstractmethod
    async def _penalise(self, rate: Rate) -> None: ...

    @abstractmethod
    async def _park(self, method: str, until: float) -> None: ...

    @abstractmethod
    async def _parked(self, methods: list[str]) -> dict[str, float]: ...


class MemoryRateBudget(RateBudget):
    """A rate budget for one process (tests, the CLI, single-process tools)."""

    def __init__(
        self,
        rate: Rate | None,
        *,
        portal: str = "local",
        headroom: int | None = None,
        operating_limit_s: float | None = 480.0,
        slow_s: float = 30.0,
        slow_factor: float = 0.5,
        clock: Clock = time.time,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        super().__init__(
            portal,
            rate,
            headroom=headroom,
            operating_limit_s=operating_limit_s,
            slow_s=slow_s,
            slow_factor=slow_factor,
            clock=clock,
            sleep=sleep,
        )
        self._level = 0.0
        self._updated_at = clock()
        self._slow_until = 0.0
        self._parks: dict[str, float] = {}

    def _drained(self, now: float, rate: Rate) -> float:
        return drain(
            self._level,
            self._updated_at,
            now,
            slow_until=self._slow_until,
            per_second=rate.per_second,
            slow_factor=self.slow_factor,
        )

    async def _take(self, rate: Rate) -> tuple[float, float]:
        now = self._clock()
        level = self._drained(now, rate)
        self._updated_at = max(self._updated_at, now)
        wait = self._wait_on(level, now, self._slow_until, rate)
        self._level = level if wait else level + 1
        return self._level, wait

    async def _room(self, rate: Rate) -> float:
        now = self._clock()
        return self._wait_on(self._drained(now, rate), now, self._slow_until, rate)

    async def _penalise(self, rate: Rate) -> None:
        now = self._clock()
        self._level = float(rate.burst)
        self._updated_at = max(self._updated_at, now)
        self._slow_until = max(self._slow_until, now + self.slow_s)

    async def _park(self, method: str, until: float) -> None:
        self._parks[method] = max(until, self._parks.get(method, until))

    async def _parked(self, methods: list[str]) -> dict[str, float]:
        now = self._clock()
        return {m: self._parks[m] for m in methods if self._parks.get(m, now) > now}


# In every statement, $1 is the portal and $2 the time to use: NULL means the database's clock,
# so that processes on different hosts agree. _DRAINED is `drain()` in SQL ($3 the rate, $4 the
# slow factor); _TAKE counts a request when it fits ($5 the capacity plus FIT_TOLERANCE).
_DRAINED = """greatest(0.0, b.level
        - greatest(0.0, n.t - b.updated_at) * $3::float8
        + greatest(0.0, least(n.t, b.slow_until) - b.updated_at) * $3::float8 * (1.0 - $4::float8)
    ) AS drained"""
_TAKE = f"""
WITH n AS (SELECT coalesce($2::float8, extract(epoch FROM clock_timestamp())) AS t),
cur AS (
    SELECT b.portal, n.t, b.slow_until, b.updated_at, {_DRAINED}
    FROM rate_buckets b, n
    WHERE b.portal = $1
    FOR UPDATE OF b
)
UPDATE rate_buckets b
SET level = CASE WHEN cur.drained + 1 <= $5::float8 THEN cur.drained + 1 ELSE cur.drained END,
    updated_at = greatest(cur.updated_at, cur.t)
FROM cur
WHERE b.portal = cur.portal
RETURNING cur.drained, cur.t, cur.slow_until, cur.drained + 1 <= $5::float8 AS taken
"""  # noqa: S608 - a constant fragment, no values
_LEVEL = f"""
WITH n AS (SELECT coalesce($2::float8, extract(epoch FROM clock_timestamp())) AS t)
SELECT n.t, b.slow_until, {_DRAINED}
FROM rate_buckets b, n
WHERE b.portal = $1
"""  # noqa: S608 - a constant fragment, no values
_PENALISE = """
WITH n AS (SELECT coalesce($2::float8, extract(epoch FROM clock_timestamp())) AS t)
UPDATE rate_buckets
SET level = greatest(level, $3::float8),
    updated_at = greatest(updated_at, n.t),
    slow_until = greatest(slow_until, n.t + $4::float8)
FROM n
WHERE portal = $1
"""
_ENSURE = """
INSERT INTO rate_buckets (portal, level, updated_at, slow_until)
VALUES ($1, 0, coalesce($2::float8, extract(epoch FROM clock_timestamp())), 0)
ON CONFLICT (portal) DO NOTHING
"""
_PARK = """
INSERT INTO rate_parks (portal, method, until) VALUES ($1, $2, $3)
ON CONFLICT (portal, method) DO UPDATE SET until = greatest(rate_parks.until, EXCLUDED.until)
"""
_PARKED = """
SELECT method, until FROM rate_parks
WHERE portal = $1
  AND until > coalesce($2::float8, extract(epoch FROM clock_timestamp()))
  AND method = ANY($3::text[])
"""


class PgRateBudget(RateBudget):
    """The portal's budget in PostgreSQL (`rate_buckets`, `rate_parks`), shared by every process
    that uses the same database and `portal` key.

    Each request costs one atomic UPDATE: the row lock orders concurrent processes, and the level
    is drained and counted in the same statement. `clock=None` (production) uses the database's
    clock for the bucket and the parks; tests may inject one.
    """

    def __init__(
        self,
        pool: asyncpg.Pool,
        portal: str,
        rate: Rate | None,
        *,
        headroom: int | None = None,
        operating_limit_s: float | None = 480.0,
        slow_s: float = 30.0,
        slow_factor: float = 0.5,
        clock: Clock | None = None,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        super().__init__(
            portal,
            rate,
            headroom=headroom,
            operating_limit_s=operating_limit_s,
            slow_s=slow_s,
            slow_factor=slow_factor,
            clock=clock or time.time,
            sleep=sleep,
        )
        self._pool = pool
        self._db_now: Clock | None = clock
        self._row_ready = False

    def _now(self) -> float | None:
        return None if self._db_now is None else self._db_now()

    async def _ensure_row(self) -> None:
        if not self._row_ready:
            await self._pool.execute(_ENSURE, self.portal, self._now())
            self._row_ready = True

    async def _take(self, rate: Rate) -> tuple[float, float]:
        await self._ensure_row()
        row = await self._pool.fetchrow(
            _TAKE,
            self.portal,
            self._now(),
            rate.per_second,
            self.slow_factor,
            self.capacity + FIT_TOLERANCE,
        )
        if row is None:
            raise RuntimeError(f"rate bucket row for portal {self.portal!r} disappeared")
        drained: float = row["drained"]
        if row["taken"]:
            return drained + 1, 0.0
        excess = drained + 1 - self.capacity
        wait = wait_for(
            excess,
            row["t"],
            slow_until=row["slow_until"],
            per_second=rate.per_second,
            slow_factor=self.slow_factor,
        )
        return drained, wait

    async def _room(self, rate: Rate) -> float:
        await self._ensure_row()
        row = await self._pool.fetchrow(
            _LEVEL, self.portal, self._now(), rate.per_second, self.slow_factor
        )
        if row is None:
            raise RuntimeError(f"rate bucket row for portal {self.portal!r} disappeared")
        return self._wait_on(row["drained"], row["t"], row["slow_until"], rate)

    async def _penalise(self, rate: Rate) -> None:
        await self._ensure_row()
        await self._pool.execute(
            _PENALISE, self.portal, self._now(), float(rate.burst), self.slow_s
        )

    async def _park(self, method: str, until: float) -> None:
        await self._pool.execute(_PARK, self.portal, method, until)

    async def _parked(self, methods: list[str]) -> dict[str, float]:
        rows = await self._pool.fetch(_PARKED, self.portal, self._now(), methods)
        return {row["method"]: row["until"] for row in rows}
